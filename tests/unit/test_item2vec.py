"""Item2Vec training (gensim corpus_file mode), fallback lookups and nearest neighbours.

Determinism (measured with gensim 4.4): with ``workers=1`` and a fixed seed, corpus_file training
is bit-identical between runs, also across interpreters with different ``PYTHONHASHSEED`` (gensim 4
seeds the initial vectors from ``numpy.random.default_rng(seed)``, not from ``hash(word)``). With
``workers >= 2`` the worker threads update the shared weights Hogwild-style and the vectors differ
from run to run, so only ``workers=1`` is asserted to be reproducible.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from traitflow.config import Item2VecParams, SessionParams
from traitflow.event_schema import as_canonical
from traitflow.item2vec import (
    SOURCE_ACTION,
    SOURCE_CATEGORY,
    SOURCE_NAMES,
    SOURCE_TOKEN,
    SOURCE_ZERO,
    fallback_vectors,
    lookup,
    most_similar,
    train_item2vec,
)
from traitflow.model import TokenTable
from traitflow.sessions import Vocabulary, build_vocabulary, sessionize, write_corpus
from traitflow.synthetic import SyntheticSpec, generate

SPEC = SyntheticSpec(n_customers=60, n_products=40, n_categories=4, n_segments=2, n_events=1_500, seed=3)
PARAMS = Item2VecParams(vector_size=8, epochs=3, workers=1, seed=11)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Vocabulary]:
    events = generate(SPEC).events
    # A customer whose only session has one event: its token is in the vocabulary, not the corpus.
    lonely = as_canonical(
        pd.DataFrame(
            {
                "customer_id": ["zz_lonely"],
                "event_time": [SPEC.start],
                "action": ["purchase"],
                "product_id": ["p_lonely"],
                "category": ["cat_0"],
            }
        )
    )
    events = pd.concat([events, lonely], ignore_index=True)
    sessionized = sessionize(events, SessionParams())
    vocabulary, codes = build_vocabulary(sessionized)
    path = tmp_path_factory.mktemp("item2vec") / "corpus.txt"
    write_corpus(sessionized, codes, path, SessionParams())
    return path, vocabulary


@pytest.fixture(scope="module")
def table(corpus: tuple[Path, Vocabulary]) -> TokenTable:
    path, vocabulary = corpus
    return train_item2vec(path, vocabulary, PARAMS)


def _corpus_counts(path: Path) -> Counter:
    return Counter(int(code) for line in path.read_text().splitlines() for code in line.split())


# ----------------------------------------------------------------------------------- training


@pytest.mark.parametrize("min_count", [1, 3])
def test_token_table_rows_align_with_vocabulary_metadata(corpus, min_count):
    from gensim.models import Word2Vec

    path, vocabulary = corpus
    params = Item2VecParams(vector_size=8, epochs=2, workers=1, seed=5, min_count=min_count)
    table = train_item2vec(path, vocabulary, params)

    # Exactly the tokens written to the corpus at least min_count times, in vocabulary order.
    counts = _corpus_counts(path)
    expected_codes = np.array(sorted(code for code, n in counts.items() if n >= min_count))
    assert "purchase_p_lonely" in set(vocabulary.tokens) and "purchase_p_lonely" not in set(table.tokens)
    np.testing.assert_array_equal(table.tokens, vocabulary.tokens[expected_codes])
    np.testing.assert_array_equal(table.actions, vocabulary.actions[expected_codes])
    np.testing.assert_array_equal(table.product_ids, vocabulary.product_ids[expected_codes])
    np.testing.assert_array_equal(table.categories, vocabulary.categories[expected_codes])
    np.testing.assert_array_equal(table.counts, vocabulary.counts[expected_codes])
    assert table.vectors.dtype == np.float32 and table.vectors.shape == (len(expected_codes), 8)
    assert all(
        t == f"{a}_{p}" for t, a, p in zip(table.tokens, table.actions, table.product_ids, strict=True)
    )

    # Each row holds gensim's vector for that token's code (the reordering is not off by a row).
    reference = Word2Vec(
        corpus_file=str(path),
        vector_size=8,
        window=params.window,
        negative=params.negative,
        ns_exponent=params.ns_exponent,
        sample=params.sample,
        min_count=min_count,
        epochs=2,
        sg=params.sg,
        workers=1,
        seed=5,
        alpha=params.alpha,
        min_alpha=params.min_alpha,
    )
    np.testing.assert_array_equal(table.vectors, reference.wv[[str(c) for c in expected_codes]])


def test_training_with_one_worker_is_bit_identical(corpus, table):
    path, vocabulary = corpus
    again = train_item2vec(path, vocabulary, PARAMS)
    np.testing.assert_array_equal(again.tokens, table.tokens)
    assert again.vectors.tobytes() == table.vectors.tobytes()
    other_seed = train_item2vec(path, vocabulary, Item2VecParams(vector_size=8, epochs=3, workers=1, seed=12))
    assert not np.allclose(other_seed.vectors, table.vectors)


def test_training_with_one_worker_is_identical_across_interpreters(corpus, table, tmp_path):
    """Backfills re-run in another process: the result must not depend on PYTHONHASHSEED."""
    path, vocabulary = corpus
    vocabulary.to_frame().to_parquet(tmp_path / "vocabulary.parquet")
    script = textwrap.dedent(
        f"""
        import numpy as np, pandas as pd
        from pathlib import Path
        from traitflow.config import Item2VecParams
        from traitflow.item2vec import train_item2vec
        from traitflow.sessions import Vocabulary
        vocabulary = Vocabulary.from_frame(pd.read_parquet({str(tmp_path / "vocabulary.parquet")!r}))
        params = Item2VecParams(vector_size=8, epochs=3, workers=1, seed=11)
        table = train_item2vec(Path({str(path)!r}), vocabulary, params)
        np.save({str(tmp_path / "vectors.npy")!r}, table.vectors)
        """
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=120)
    assert np.load(tmp_path / "vectors.npy").tobytes() == table.vectors.tobytes()


def test_training_rejects_an_empty_corpus(tmp_path, corpus):
    _, vocabulary = corpus
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="missing or empty"):
        train_item2vec(tmp_path / "empty.txt", vocabulary, PARAMS)
    with pytest.raises(ValueError, match="missing or empty"):
        train_item2vec(tmp_path / "absent.txt", vocabulary, PARAMS)


# ----------------------------------------------------------------------------------- fallbacks


def _weighted_mean(table: TokenTable, mask: np.ndarray) -> np.ndarray:
    weights = table.counts[mask].astype(np.float64)
    return (weights[:, None] * table.vectors[mask].astype(np.float64)).sum(axis=0) / weights.sum()


def test_fallback_means_are_count_weighted(table):
    fallback = fallback_vectors(table)
    assert fallback.matrix.shape == (len(table) + 4 + len(np.unique(table.actions)) + 1, 8)
    np.testing.assert_array_equal(fallback.matrix[: len(table)], table.vectors)
    for i, category in enumerate(fallback.category_index):
        expected = _weighted_mean(table, table.categories == category)
        np.testing.assert_allclose(
            fallback.matrix[fallback.category_offset + i], expected, rtol=1e-5, atol=1e-7
        )
    for i, action in enumerate(fallback.action_index):
        expected = _weighted_mean(table, table.actions == action)
        np.testing.assert_allclose(
            fallback.matrix[fallback.action_offset + i], expected, rtol=1e-5, atol=1e-7
        )
    assert not fallback.matrix[fallback.zero_row].any()


def test_lookup_falls_back_token_then_category_then_action_then_zero(table):
    fallback = fallback_vectors(table)
    known = 0
    category, action = table.categories[known], table.actions[known]
    token_values = np.array(
        [
            table.tokens[known],  # hit
            "view_never_seen",  # unseen product, known category
            "cart_never_seen",  # unseen product, unknown category
            "view_never_seen_2",  # unseen product, missing category (NaN)
            "teleport_never_seen",  # unknown action and category
            "view_never_seen_3",  # missing category given as ""
        ],
        dtype=object,
    )
    categories = np.array([category, category, "no_such_category", np.nan, "nope", ""], dtype=object)
    actions = np.array([action, "view", "cart", "view", "teleport", "view"], dtype=object)
    result = lookup(table, fallback, token_values, categories, actions)

    np.testing.assert_array_equal(
        result.source,
        [SOURCE_TOKEN, SOURCE_CATEGORY, SOURCE_ACTION, SOURCE_ACTION, SOURCE_ZERO, SOURCE_ACTION],
    )
    np.testing.assert_array_equal(result.in_vocabulary, [True, False, False, False, False, False])
    vectors = fallback.matrix[result.rows]
    np.testing.assert_array_equal(vectors[0], table.vectors[known])
    np.testing.assert_allclose(vectors[1], _weighted_mean(table, table.categories == category), rtol=1e-5)
    np.testing.assert_allclose(vectors[2], _weighted_mean(table, table.actions == "cart"), rtol=1e-5)
    np.testing.assert_allclose(vectors[3], _weighted_mean(table, table.actions == "view"), rtol=1e-5)
    np.testing.assert_array_equal(vectors[4], np.zeros(8, dtype=np.float32))
    np.testing.assert_array_equal(vectors[5], vectors[3])
    assert result.counts() == {"token": 1, "category_average": 1, "action_average": 3, "zero": 1}
    assert list(result.counts()) == list(SOURCE_NAMES)


def test_lookup_force_category_skips_the_token_but_keeps_in_vocabulary(table):
    fallback = fallback_vectors(table)
    rows = np.array([0, 1])
    result = lookup(
        table,
        fallback,
        table.tokens[rows],
        table.categories[rows],
        table.actions[rows],
        force_category=np.array([True, False]),
    )
    np.testing.assert_array_equal(result.source, [SOURCE_CATEGORY, SOURCE_TOKEN])
    np.testing.assert_array_equal(result.in_vocabulary, [True, True])
    assert result.rows[0] == fallback.category_offset + fallback.category_index.get_loc(table.categories[0])
    assert result.rows[1] == 1


def test_lookup_of_nothing():
    table = TokenTable(
        tokens=np.array(["view_a"], dtype=object),
        actions=np.array(["view"], dtype=object),
        product_ids=np.array(["a"], dtype=object),
        categories=np.array([""], dtype=object),  # no category anywhere: no category rows
        counts=np.array([1]),
        vectors=np.ones((1, 3), dtype=np.float32),
    )
    fallback = fallback_vectors(table)
    assert len(fallback.category_index) == 0
    empty = np.array([], dtype=object)
    result = lookup(table, fallback, empty, empty, empty)
    assert result.rows.shape == (0,) and result.counts() == dict.fromkeys(SOURCE_NAMES, 0)


# ----------------------------------------------------------------------------------- neighbours


def _random_table(n: int = 40, d: int = 6, seed: int = 0) -> TokenTable:
    rng = np.random.default_rng(seed)
    ids = np.array([f"p{i}" for i in range(n)], dtype=object)
    return TokenTable(
        tokens=np.array([f"view_{p}" for p in ids], dtype=object),
        actions=np.full(n, "view", dtype=object),
        product_ids=ids,
        categories=np.full(n, "c", dtype=object),
        counts=np.ones(n, dtype=np.int64),
        vectors=(rng.normal(size=(n, d)) * rng.uniform(0.1, 10, size=(n, 1))).astype(np.float32),
    )


@pytest.mark.parametrize(("top_n", "batch_size"), [(1, 4096), (5, 7), (39, 3)])
def test_most_similar_matches_brute_force_cosine(top_n, batch_size):
    table = _random_table()
    queries = np.array([0, 5, 17, 39, 5])
    got = most_similar(table, queries, top_n, batch_size=batch_size)
    assert got.shape == (len(queries), top_n)

    v = table.vectors.astype(np.float64)
    cosine = (v @ v.T) / np.outer(np.linalg.norm(v, axis=1), np.linalg.norm(v, axis=1))
    np.fill_diagonal(cosine, -np.inf)
    expected = np.argsort(-cosine[queries], axis=1, kind="stable")[:, :top_n]
    np.testing.assert_array_equal(got, expected)
    assert not (got == queries[:, None]).any()  # never itself
    scores = np.take_along_axis(cosine[queries], got, axis=1)
    assert np.all(np.diff(scores, axis=1) <= 0)  # most similar first


def test_most_similar_caps_top_n_at_the_other_tokens():
    table = _random_table(n=4)
    got = most_similar(table, np.arange(4), top_n=10)
    assert got.shape == (4, 3)
    for q in range(4):
        assert sorted(got[q]) == sorted(set(range(4)) - {q})


def test_most_similar_is_scale_invariant():
    table = _random_table()
    scaled = TokenTable(
        tokens=table.tokens,
        actions=table.actions,
        product_ids=table.product_ids,
        categories=table.categories,
        counts=table.counts,
        vectors=table.vectors * np.float32(3.0),
    )
    queries = np.arange(10)
    np.testing.assert_array_equal(most_similar(table, queries, 5), most_similar(scaled, queries, 5))


def test_fallback_matrix_serves_pandas_string_categories(table):
    """Canonical events carry pandas string columns with <NA>; lookups must accept them."""
    fallback = fallback_vectors(table)
    categories = pd.Series([table.categories[0], None], dtype="str").to_numpy(dtype=object)
    result = lookup(
        table,
        fallback,
        np.array(["view_x", "view_y"], dtype=object),
        categories,
        np.array(["view", "view"], dtype=object),
    )
    np.testing.assert_array_equal(result.source, [SOURCE_CATEGORY, SOURCE_ACTION])


def test_most_similar_default_batches_stay_within_the_memory_budget(monkeypatch):
    import traitflow.item2vec as item2vec

    table = _random_table(n=40)
    queries = np.arange(40)
    expected = most_similar(table, queries, 5, batch_size=40)
    seen: list[int] = []
    real_partition = np.argpartition

    def recording_partition(scores, kth, axis):
        seen.append(scores.nbytes + scores.size * 8)  # the scores and the partition's indices
        return real_partition(scores, kth, axis=axis)

    monkeypatch.setattr(item2vec, "SIMILARITY_BATCH_BYTES", 12 * 40 * 7)  # 7 queries per batch
    monkeypatch.setattr(item2vec.np, "argpartition", recording_partition)
    got = most_similar(table, queries, 5)
    np.testing.assert_array_equal(got, expected)
    assert len(seen) == 6 and max(seen) <= 12 * 40 * 7  # ceil(40 / 7) batches, each within budget
