"""Model versions: exact save/load, lifecycle, atomic promotion, model selection for a date."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest

from traitflow.model import TokenTable, TraitflowModel, TraitModel
from traitflow.profile_batch import ProfileBatch
from traitflow.store import (
    ModelRejectedError,
    ModelStateError,
    NotFoundError,
    Store,
    StoreInputError,
    model_io,
)
from traitflow.store import models as store_models

Build = Callable[..., TraitflowModel]
WEEK1 = datetime(2024, 1, 7, tzinfo=UTC)


def assert_same_array(a: np.ndarray, b: np.ndarray) -> None:
    """Equal values, dtype and shape, and identical bits (catches -0.0 vs 0.0, NaN payloads)."""
    assert a.dtype == b.dtype and a.shape == b.shape
    if a.dtype.kind in "fiu":
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
        assert a.tobytes() == b.tobytes()
    else:
        assert np.array_equal(a, b)


def assert_same_model(saved: TraitflowModel, loaded: TraitflowModel) -> None:
    for name in ("tokens", "actions", "product_ids", "categories", "counts", "vectors"):
        assert_same_array(getattr(saved.tokens, name), getattr(loaded.tokens, name))
    for name in ("components", "center", "trait_ids", "population_profile", "population_vector"):
        assert_same_array(getattr(saved.traits, name), getattr(loaded.traits, name))
    assert loaded.traits.labels == saved.traits.labels
    assert loaded.traits.top_products == saved.traits.top_products
    assert loaded.traits.top_categories == saved.traits.top_categories
    assert loaded.traits.l1_penalty == saved.traits.l1_penalty
    assert (loaded.traits.products is None) == (saved.traits.products is None)
    if saved.traits.products is not None:
        assert loaded.traits.products.product_ids.tolist() == saved.traits.products.product_ids.tolist()
        assert_same_array(saved.traits.products.weights, loaded.traits.products.weights)
    assert loaded.config == saved.config
    assert loaded.metrics == saved.metrics
    assert loaded.trait_match == saved.trait_match
    assert loaded.trained_through == saved.trained_through
    assert loaded.version == saved.version


def test_the_store_persists_every_field_of_the_model_bundle() -> None:
    # Fails when someone adds a field to the model dataclasses without teaching the store about it.
    for cls in (TraitflowModel, TokenTable, TraitModel):
        assert {f.name for f in dataclasses.fields(cls)} == model_io.PERSISTED_FIELDS[cls.__name__]


def test_save_then_load_is_bit_identical(store: Store, build_model: Build) -> None:
    model = build_model(n_tokens=50, dim=16, trait_ids=(3, 7, 11, 40))
    version = store.save_model(model)
    assert model.version == version
    loaded = store.load_model(version)
    assert_same_model(model, loaded)
    assert loaded.tokens.categories[3] == ""  # a missing category stays the empty string


def test_special_float_bit_patterns_survive(store: Store, build_model: Build) -> None:
    model = build_model(n_tokens=4, dim=3)
    vectors = model.tokens.vectors
    vectors[2] = np.array([np.nan, np.inf, -np.inf], dtype=np.float32)
    vectors[3] = np.frombuffer(
        np.array([0x7FC00001, 0xFFFFFFFF, 0x00000001], dtype=np.uint32).tobytes(), np.float32
    )
    model.traits.center[:] = [-0.0, 5e-324, np.finfo(np.float64).max]
    loaded = store.load_model(store.save_model(model))
    assert loaded.tokens.vectors.tobytes() == vectors.tobytes()
    assert loaded.traits.center.tobytes() == model.traits.center.tobytes()


def test_a_model_without_tokens_round_trips(store: Store, build_model: Build) -> None:
    model = build_model(n_tokens=0, dim=4)
    assert_same_model(model, store.load_model(store.save_model(model)))


def test_save_refuses_lossy_or_inconsistent_arrays(store: Store, build_model: Build) -> None:
    model = build_model()
    model.tokens.vectors = model.tokens.vectors.astype(np.float64)
    with pytest.raises(StoreInputError, match=r"tokens\.vectors must be a 2-D float32"):
        store.save_model(model)
    model = build_model()
    model.traits.trait_ids = np.array([1, 1, 2], dtype=np.int64)
    with pytest.raises(StoreInputError, match="unique"):
        store.save_model(model)
    assert store.table_counts()["model_versions"] == 0


def test_load_unknown_version(store: Store) -> None:
    with pytest.raises(NotFoundError, match="model version 42 does not exist"):
        store.load_model(42)


def test_lifecycle_and_single_active_model(store: Store, build_model: Build) -> None:
    v1, v2, v3 = (store.save_model(build_model(seed=i)) for i in range(3))
    assert store.active_model_version() is None
    store.promote(v1)
    assert store.active_model_version() == v1
    store.promote(v2)
    status = dict(store.connection.execute("SELECT model_version, status FROM model_versions").fetchall())
    assert status == {v1: "retired", v2: "active", v3: "staging"}
    store.reject_model(v3, "hit rate 0.1 < 0.2")
    with pytest.raises(ModelStateError, match="rejected"):
        store.promote(v3)
    with pytest.raises(ModelStateError, match="only a staging model"):
        store.reject_model(v2, "no")
    store.reject_model(v3, "again")  # already rejected: no-op
    store.promote(v1)  # roll back to a retired model
    assert store.active_model_version() == v1
    frame = store.model_versions()
    assert frame.set_index("model_version").loc[v3, "status_reason"] == "hit rate 0.1 < 0.2"
    with pytest.raises(psycopg.errors.UniqueViolation):  # the database itself forbids two actives
        store.connection.execute(
            "UPDATE model_versions SET status = 'active' WHERE model_version = %s", (v2,)
        )


def test_promoting_the_active_model_again_changes_nothing(store: Store, build_model: Build) -> None:
    version = store.save_model(build_model())
    store.promote(version)
    before = store.table_checksums()
    store.promote(version)
    assert store.table_checksums() == before


def test_a_failure_halfway_through_promotion_changes_nothing(
    store: Store, build_model: Build, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1, v2 = store.save_model(build_model(seed=1)), store.save_model(build_model(seed=2))
    store.promote(v1)
    before = store.table_checksums()

    def fail(conn: psycopg.Connection, version: int) -> None:
        raise RuntimeError("injected after the previous model was retired")

    monkeypatch.setattr(store_models, "_activate", fail)
    with pytest.raises(RuntimeError, match="injected"):
        store.promote(v2)
    assert store.table_checksums() == before
    assert store.active_model_version() == v1


def test_concurrent_promotions_leave_exactly_one_active(
    store: Store, build_model: Build, make_store: Callable[..., Store]
) -> None:
    versions = [store.save_model(build_model(seed=i)) for i in range(4)]
    stores = [make_store() for _ in versions]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(stores))

    def run(s: Store, v: int) -> None:
        try:
            barrier.wait()
            s.promote(v)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s, v)) for s, v in zip(stores, versions, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    statuses = [r[0] for r in store.connection.execute("SELECT status FROM model_versions").fetchall()]
    assert sorted(statuses) == ["active", "retired", "retired", "retired"]


def test_model_version_for_picks_the_newest_promoted_model_trained_through_the_date(
    store: Store, build_model: Build
) -> None:
    week = timedelta(days=7)
    v1 = store.save_model(build_model(trained_through=WEEK1))
    v2 = store.save_model(build_model(trained_through=WEEK1 + week))
    v3 = store.save_model(build_model(trained_through=WEEK1 + 2 * week))  # stays staging
    v4 = store.save_model(build_model(trained_through=WEEK1 + 3 * week))  # rejected
    assert store.model_version_for(WEEK1 + 10 * week) is None  # nothing promoted yet
    store.promote(v1)
    store.promote(v2)
    store.reject_model(v4, "bad")
    assert store.model_version_for(WEEK1 - timedelta(microseconds=1)) is None
    assert store.model_version_for(WEEK1) == v1  # trained_through <= as_of, inclusive
    assert store.model_version_for(WEEK1 + week - timedelta(seconds=1)) == v1
    assert store.model_version_for(WEEK1 + week) == v2
    assert store.model_version_for(WEEK1 + 5 * week) == v2  # v3 staging and v4 rejected are ignored
    store.promote(v1)  # rolling back does not change history: v2 (retired) still covers later dates
    assert store.model_version_for(WEEK1 + 5 * week) == v2
    store.promote(v3)
    assert store.model_version_for(WEEK1 + 5 * week) == v3
    naive = (WEEK1 + week).replace(tzinfo=None)
    assert store.model_version_for(naive) == v2


def test_update_model_metadata_replaces_only_given_fields(store: Store, build_model: Build) -> None:
    model = build_model()
    version = store.save_model(model)
    store.update_model_metadata(version, drift={"aligned_cosine": np.float64(0.93), "fired": np.bool_(False)})
    store.update_model_metadata(version, metrics={"hit_rate": float("nan"), "n": np.int64(5)})
    loaded = store.load_model(version)
    assert loaded.metrics == {"hit_rate": None, "n": 5}  # jsonb has no NaN
    assert loaded.trait_match == model.trait_match
    drift = store.connection.execute("SELECT drift FROM model_versions").fetchone()
    assert drift == ({"aligned_cosine": 0.93, "fired": False},)
    with pytest.raises(NotFoundError):
        store.update_model_metadata(999, metrics={})
    with pytest.raises(StoreInputError, match="NUL"):
        store.update_model_metadata(version, metrics={"bad": "a\x00b"})


def test_ten_kilobyte_hostile_labels_and_top_products_round_trip(store: Store, build_model: Build) -> None:
    model = build_model()
    big = ('o\'brien; DROP TABLE x;--\\ "q" {a,b} NULL 🧑‍🚀 ' * 300)[:10_240]
    model.traits.labels[1] = big
    model.traits.top_products[2] = [big, "", "NULL", "{}", big[::-1]]
    model.tokens.categories[0] = big
    loaded = store.load_model(store.save_model(model))
    assert loaded.traits.labels[1] == big and len(big) == 10_240
    assert loaded.traits.top_products[2] == [big, "", "NULL", "{}", big[::-1]]
    assert loaded.tokens.categories[0] == big


def test_a_model_without_trait_products_round_trips(store: Store, build_model: Build) -> None:
    model = build_model()
    model.traits.products = None
    loaded = store.load_model(store.save_model(model))
    assert loaded.traits.products is None
    assert_same_model(model, loaded)


def test_a_saved_candidate_is_staging_until_publish_candidate_promotes_it_once(
    store: Store, build_model: Build, build_profile_batch: Callable[..., ProfileBatch]
) -> None:
    model = build_model()
    model.metrics = {"event_snapshot": "9:12:", "training": {"mode": "full"}}
    version = store.save_candidate(model, run_key="candidate-1")
    assert store.save_candidate(build_model(), run_key="candidate-1") == version  # a retried plan
    assert store.model_versions()["status"].tolist() == ["staging"]
    assert store.model_version_for(WEEK1 + timedelta(days=1)) is None  # never selected for profiles
    as_of = WEEK1 + timedelta(days=1)
    batch = build_profile_batch(version, ["a", "b", "c"], as_of=as_of)
    store.stage_profiles("weekly:r", 0, 1, batch)
    gate = {"passed": True, "candidate_hit_rate": 0.3}
    drift = {"measured": True, "weighted_mean_drift": 0.05}
    assert (
        store.publish_candidate(version, "weekly:r", 1, as_of, metrics={"quality_gate": gate}, drift=drift)
        == 3
    )
    assert store.active_model_version() == version
    loaded = store.load_model(version)
    assert loaded.metrics == {**model.metrics, "quality_gate": gate}  # merged, the plan's keys kept
    assert store.model_versions()["drift"].item() == drift
    # A retry after the commit: nothing written again, what a re-run shard staged is deleted.
    store.stage_profiles("weekly:r", 0, 1, batch)
    before = store.table_checksums(without=("updated_at",))
    assert store.publish_candidate(version, "weekly:r", 1, as_of, metrics={"quality_gate": {}}) == 3
    assert store.staged_shards("weekly:r") == []
    after = store.table_checksums(without=("updated_at",))
    assert {t for t in before if before[t] != after[t]} == {"profile_shards"}


def lifecycle(store: Store) -> list[tuple]:
    """(version, status, status_reason, promoted_at, retired_at) of every version, ascending."""
    return store.connection.execute(
        "SELECT model_version, status, status_reason, promoted_at, retired_at FROM model_versions"
        " ORDER BY model_version"
    ).fetchall()


def stage_candidate(
    store: Store, build_model: Build, build_profile_batch: Callable[..., ProfileBatch], name: str
) -> int:
    """A weekly candidate saved as staging under ``candidate-<name>`` with its one shard staged
    under ``weekly:<name>`` (as of WEEK1 + 1 day); returns its version."""
    version = store.save_candidate(build_model(), run_key=f"candidate-{name}")
    batch = build_profile_batch(version, ["a", "b", "c"], as_of=WEEK1 + timedelta(days=1))
    store.stage_profiles(f"weekly:{name}", 0, 1, batch)
    return version


@pytest.fixture
def history(store: Store, build_model: Build) -> list[int]:
    """Versions 1 retired, 2 active, 3 rejected by the gate: [1, 2, 3]."""
    retired, active = store.save_model(build_model()), store.save_model(build_model())
    store.promote(retired)
    store.promote(active)
    rejected = store.record_rejected(build_model(), "hit rate below the gate")
    assert [retired, active, rejected] == [1, 2, 3]
    return [retired, active, rejected]


def test_publishing_a_candidate_rejects_the_older_staging_ones_and_then_refuses_them(
    store: Store, history: list[int], build_model: Build, build_profile_batch: Callable[..., ProfileBatch]
) -> None:
    retired, active, rejected = history
    older = stage_candidate(store, build_model, build_profile_batch, "old")  # its run never promoted it
    newer = stage_candidate(store, build_model, build_profile_batch, "new")
    later = store.save_candidate(build_model(), run_key="candidate-later")  # saved after the newer one
    before = lifecycle(store)
    as_of = WEEK1 + timedelta(days=1)

    assert store.publish_candidate(newer, "weekly:new", 1, as_of) == 3
    after = lifecycle(store)
    reason = f"superseded by version {newer} before its run promoted it"
    assert [(r[0], r[1], r[2]) for r in after] == [
        (retired, "retired", None),
        (active, "retired", None),
        (rejected, "rejected", "hit rate below the gate"),
        (older, "rejected", reason),
        (newer, "active", None),
        (later, "staging", None),  # newer than the published version: its run may still promote it
    ]
    assert after[0] == before[0] and after[2] == before[2]  # the retired and rejected rows untouched
    assert after[1][3] == before[1][3] and after[1][4] is not None  # promoted_at kept; retired now
    assert after[3][3] is None and after[3][4] is None
    assert store.superseded_by(newer) == [older]
    assert store.superseded_by(older) == []

    # The older run retried: refused before anything is read or written, its shard left in place.
    checksums = store.table_checksums()
    with pytest.raises(ModelRejectedError, match=f"model {older} was rejected \\({reason}\\)"):
        store.publish_candidate(older, "weekly:old", 1, as_of, metrics={"quality_gate": {}})
    assert store.table_checksums() == checksums
    assert store.staged_shards("weekly:old") == [0]
    with pytest.raises(ModelRejectedError):
        store.promote(older)
    assert store.table_checksums() == checksums


@pytest.mark.usefixtures("history")
def test_a_candidate_rejected_by_the_gate_supersedes_the_older_staging_ones(
    store: Store, build_model: Build, build_profile_batch: Callable[..., ProfileBatch]
) -> None:
    older = stage_candidate(store, build_model, build_profile_batch, "old")
    before = lifecycle(store)
    refused = store.record_rejected(build_model(), "drifted too far", run_key="rejected-sha256:ab")
    after = lifecycle(store)
    assert after[:3] == before[:3]  # retired, active and rejected rows untouched
    reason = f"superseded by version {refused} before its run promoted it"
    assert after[3] == (older, "rejected", reason, None, None)
    assert after[4][:3] == (refused, "rejected", "drifted too far")
    assert store.superseded_by(refused) == [older]
    # The gate task retried: nothing written, the same version and the same superseded list.
    checksums = store.table_checksums()
    assert store.record_rejected(build_model(), "drifted too far", run_key="rejected-sha256:ab") == refused
    assert store.table_checksums() == checksums
    assert store.superseded_by(refused) == [older]


@pytest.mark.usefixtures("history")
def test_publishing_without_stale_staging_versions_rejects_nothing(
    store: Store, build_model: Build, build_profile_batch: Callable[..., ProfileBatch]
) -> None:
    candidate = stage_candidate(store, build_model, build_profile_batch, "only")
    before = lifecycle(store)
    assert store.publish_candidate(candidate, "weekly:only", 1, WEEK1 + timedelta(days=1)) == 3
    after = lifecycle(store)
    assert after[0] == before[0] and after[2] == before[2]
    assert [r[1] for r in after] == ["retired", "retired", "rejected", "active"]
    assert store.superseded_by(candidate) == []
    # Nothing left to supersede: the set-based update changes no row.
    checksums = store.table_checksums()
    conn = store.connection
    with conn.transaction():
        assert store_models.supersede_staging(conn, candidate + 1) == 0
    assert store.table_checksums() == checksums


@pytest.mark.usefixtures("history")
def test_superseded_by_reads_the_column_whatever_the_reason_says(
    store: Store, build_model: Build, build_profile_batch: Callable[..., ProfileBatch]
) -> None:
    older = stage_candidate(store, build_model, build_profile_batch, "old")
    newer = stage_candidate(store, build_model, build_profile_batch, "new")
    assert store.publish_candidate(newer, "weekly:new", 1, WEEK1 + timedelta(days=1)) == 3
    conn = store.connection
    conn.execute(
        "UPDATE model_versions SET status_reason = 'replaced by a newer weekly candidate'"
        " WHERE model_version = %s",
        (older,),
    )
    assert store.superseded_by(newer) == [older]
    # The old wording on a version rejected by hand records no supersession: it is only text.
    by_hand = store.save_candidate(build_model(), run_key="candidate-by-hand")
    store.reject_model(by_hand, store_models.superseded_reason(by_hand + 1))
    later = store.record_rejected(build_model(), "drifted too far")
    assert later == by_hand + 1
    assert store.superseded_by(later) == []
    rows = conn.execute(
        "SELECT model_version, superseded_by FROM model_versions WHERE status = 'rejected' ORDER BY 1"
    ).fetchall()
    assert rows == [(3, None), (older, newer), (by_hand, None), (later, None)]


@pytest.mark.usefixtures("history")
def test_superseded_by_is_set_only_on_rejected_rows_and_points_to_a_newer_version(
    store: Store, build_model: Build
) -> None:
    staging = store.save_candidate(build_model(), run_key="candidate-a")
    newer = store.save_candidate(build_model(), run_key="candidate-b")
    conn = store.connection
    point = "UPDATE model_versions SET superseded_by = %s WHERE model_version = %s"
    with pytest.raises(psycopg.errors.CheckViolation, match="model_versions_superseded_by_check"):
        conn.execute(point, (newer, staging))  # a staging row
    conn.execute("UPDATE model_versions SET status = 'rejected' WHERE model_version = %s", (newer,))
    with pytest.raises(psycopg.errors.CheckViolation, match="model_versions_superseded_by_check"):
        conn.execute(point, (staging, newer))  # an older version
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        conn.execute(point, (newer + 9, newer))  # no such version
