"""What makes sharded profiles equal to unsharded ones, without a database: the projection of a
customer does not depend on the other buckets in its batch, and concatenating shard batches
gives the one-batch arrays and statistics."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from traitflow.model import TraitModel
from traitflow.pipeline import project_by_bucket
from traitflow.profile_batch import ProfileBatch, concat_batches
from traitflow.shards import buckets_of, shards_of

K, D, N = 8, 16, 4000


def _traits(rng: np.random.Generator) -> TraitModel:
    return TraitModel(
        components=np.abs(rng.normal(size=(K, 2 * D))),
        center=rng.normal(size=D) * 0.1,
        trait_ids=np.arange(K, dtype=np.int64),
        labels=[f"t{i}" for i in range(K)],
        top_products=[[] for _ in range(K)],
        top_categories=[[] for _ in range(K)],
        population_profile=np.full(K, 1.0 / K),
        population_vector=np.zeros(D, dtype=np.float32),
        l1_penalty=0.01,
    )


def test_a_customers_projection_is_bit_identical_in_any_shard():
    rng = np.random.default_rng(5)
    traits = _traits(rng)
    ids = np.array(sorted(f"c{i:06d}" for i in range(N)), dtype=object)
    vectors = rng.normal(size=(N, D)).astype(np.float32)
    whole = project_by_bucket(traits, vectors, buckets_of(ids))
    for n_shards in (3, 8):
        shard = shards_of(ids, n_shards)
        parts = np.empty_like(whole)
        for s in range(n_shards):
            rows = shard == s
            parts[rows] = project_by_bucket(traits, vectors[rows], buckets_of(ids[rows]))
        assert np.array_equal(parts, whole), n_shards  # bits, not a tolerance
    np.testing.assert_allclose(whole.sum(axis=1), 1.0)


def test_one_customer_alone_is_projected_as_in_a_batch_of_other_buckets():
    """A batch of one (the event update's) skips the bucketing: the same bits as that customer's
    row of a batch whose other customers are all in other buckets (the general path projects
    it alone there too), whatever bucket it is given."""
    rng = np.random.default_rng(6)
    traits = _traits(rng)
    ids = np.array(sorted(f"c{i:06d}" for i in range(200)), dtype=object)
    vectors = rng.normal(size=(200, D)).astype(np.float32)
    buckets = buckets_of(ids)
    for row in (0, 17, 199):
        others = np.flatnonzero(buckets != buckets[row])[:5]
        rows = np.sort(np.append(others, row))
        whole = project_by_bucket(traits, vectors[rows], buckets[rows])
        expected = whole[np.searchsorted(rows, row)]
        for bucket in (buckets[row : row + 1], np.zeros(1, dtype=np.int64)):
            alone = project_by_bucket(traits, vectors[row : row + 1], bucket)
            assert alone.shape == (1, K) and alone.dtype == np.float64
            assert np.array_equal(alone[0], expected), row  # bits, not a tolerance


def _batch(ids: list[str], seed: int) -> ProfileBatch:
    rng = np.random.default_rng(seed)
    n = len(ids)
    profiles = rng.dirichlet(np.ones(3), size=n)
    n_events = rng.integers(1, 9, size=n)
    known = np.minimum(n_events, rng.integers(0, 9, size=n))
    return ProfileBatch(
        as_of=datetime(2026, 1, 2, tzinfo=UTC),
        model_version=4,
        customer_ids=np.array(ids, dtype=object),
        embeddings=rng.normal(size=(n, 4)).astype(np.float32),
        profiles=profiles,
        trait_ids=np.array([3, 5, 9]),
        n_events=n_events,
        cold_start=np.array(["none"] * n, dtype=object),
        stats={
            "n_events": int(n_events.sum()),
            "lookup_sources": {"token": int(known.sum()), "zero": 0},
            "oov_rate": float(1.0 - known.sum() / n_events.sum()),
            "cold_start": {"none": n},
            "n_customers": n,
        },
        n_known_tokens=known,
    )


def test_concatenated_shards_equal_the_whole_batch_in_any_order():
    whole = _batch(["a", "b", "c", "d", "e", "é"], 1)
    split = [np.array([0, 3]), np.array([1, 5]), np.array([2, 4])]
    parts = []
    for rows in split:
        part = _batch([whole.customer_ids[i] for i in rows], 0)
        for name in ("embeddings", "profiles", "n_events", "cold_start", "n_known_tokens"):
            setattr(part, name, getattr(whole, name)[rows])
        known, events = part.n_known_tokens, part.n_events
        part.stats = {
            "n_events": int(events.sum()),
            "lookup_sources": {"token": int(known.sum()), "zero": 0},
            "oov_rate": float(1.0 - known.sum() / events.sum()),
            "cold_start": {"none": len(rows)},
            "n_customers": len(rows),
        }
        parts.append(part)
    for order in ([0, 1, 2], [2, 0, 1]):
        joined = concat_batches([parts[i] for i in order])
        assert joined.customer_ids.tolist() == whole.customer_ids.tolist()
        for name in ("embeddings", "profiles", "n_events", "n_known_tokens"):
            assert np.array_equal(getattr(joined, name), getattr(whole, name)), name
        assert joined.stats == whole.stats
        assert list(joined.stats) == list(whole.stats)


def test_a_batch_survives_its_staging_bytes():
    batch = _batch(["x", "y"], 2)
    back = ProfileBatch.from_bytes(batch.to_bytes())
    assert back.customer_ids.tolist() == ["x", "y"] and back.stats == batch.stats
    assert np.array_equal(back.embeddings, batch.embeddings) and back.as_of == batch.as_of
