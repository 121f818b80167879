"""Incremental Item2Vec (traitflow.item2vec_incremental): the merged vocabulary, the new tokens'
starting vectors, the increment corpus, and updates with no new token and with only new tokens.

Known answers on small hand-made inputs; the updates run gensim with ``workers=1`` on a small
synthetic corpus (a second or two each).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from traitflow.config import IncrementParams, Item2VecParams, SessionParams
from traitflow.drift import measure_drift
from traitflow.item2vec import train_item2vec
from traitflow.item2vec_incremental import (
    INIT_CATEGORY,
    INIT_CO_SESSION,
    INIT_PARENT,
    INIT_RANDOM,
    co_session_means,
    corpus_tokens,
    fresh_word2vec,
    increment_token_counts,
    merge_vocabulary,
    train_increment,
)
from traitflow.model import TokenTable
from traitflow.pipeline import IncrementSelection, build_corpus, increment_sessions
from traitflow.sessions import Vocabulary
from traitflow.synthetic import SyntheticSpec, generate

SPEC = SyntheticSpec(
    n_customers=200, n_products=80, n_categories=4, n_segments=2, n_events=8_000, days=28, seed=5
)
PARAMS = Item2VecParams(vector_size=16, epochs=5, workers=1, seed=7)
INCREMENT = IncrementParams(increment_epochs=3, increment_alpha=0.01, replay_fraction=0.2)
CUT = SPEC.start + timedelta(days=21)


def _strings(*values: str) -> np.ndarray:
    return np.array(values, dtype=object)


def test_corpus_tokens_gives_each_token_its_line(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("0 1 2\n3 4\n5 5 6\n")
    lines, codes = corpus_tokens(path)
    assert lines.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    assert codes.tolist() == [0, 1, 2, 3, 4, 5, 5, 6]


def test_increment_token_counts_counts_each_vocabulary_token_in_the_corpus(tmp_path: Path) -> None:
    path = tmp_path / "increment.txt"
    path.write_text("0 2 2\n2 3\n")
    tokens = _strings("a", "b", "c", "d", "e")
    vocabulary = Vocabulary(tokens, tokens, tokens, tokens, np.ones(5, dtype=np.int64))
    counts = increment_token_counts(path, vocabulary)
    assert counts.to_dict() == {"a": 1, "b": 0, "c": 3, "d": 1, "e": 0}


def test_merged_vocabulary_keeps_every_parent_token_and_takes_the_window_counts() -> None:
    parent = TokenTable(
        tokens=_strings("view_a", "view_b", "view_c"),
        actions=_strings("view", "view", "view"),
        product_ids=_strings("a", "b", "c"),
        categories=_strings("old", "old", "old"),
        counts=np.array([5, 6, 7]),
        vectors=np.zeros((3, 2), dtype=np.float32),
    )
    window = Vocabulary(
        tokens=_strings("view_b", "view_d", "view_a", "view_e"),
        actions=_strings("view", "view", "view", "view"),
        product_ids=_strings("b", "d", "a", "e"),
        categories=_strings("new", "new", "new", "new"),
        counts=np.array([10, 3, 20, 1]),
    )
    # view_e is new and below min_count: left out, as a full retrain would.
    merged = merge_vocabulary(parent, window, corpus_counts=np.array([10, 3, 20, 1]), min_count=2)
    assert merged.table.tokens.tolist() == ["view_a", "view_b", "view_c", "view_d"]
    # Window counts where the window has the token; view_c left the window and keeps its count.
    assert merged.table.counts.tolist() == [20, 10, 7, 3]
    assert merged.table.categories.tolist() == ["new", "new", "old", "new"]
    assert merged.parent_rows.tolist() == [0, 1, 2, -1]
    # Corpus codes: the window's; view_c, absent from the window, gets the first code after them.
    assert merged.codes.tolist() == [2, 0, 4, 1]
    assert merged.n_new == 1


def test_co_session_means_average_the_known_tokens_a_token_shares_sessions_with() -> None:
    vectors = np.array([[1, 0], [0, 1], [9, 9], [9, 9]], dtype=np.float32)
    known = np.array([True, True, False, False])
    # Sessions: {0, 2}, {1, 2, 2}, {3}: token 2 meets 0 and 1; token 3 meets no known token.
    lines = np.array([0, 0, 1, 1, 1, 2])
    rows = np.array([0, 2, 1, 2, 2, 3])
    means, found = co_session_means(lines, rows, known, vectors, n_tokens=4)
    assert found.tolist() == [True, True, True, False]
    np.testing.assert_allclose(means[2], [0.5, 0.5])
    np.testing.assert_allclose(means[3], [0, 0])


def test_increment_sessions_are_the_new_ones_plus_the_replayed_sample() -> None:
    start = SPEC.start
    sessionized = pd.DataFrame(
        {
            "session": [0, 0, 2, 2, 3],  # session 1 is missing (held out)
            "event_time": [start, start + timedelta(hours=1), start, start + timedelta(days=3), start],
        }
    )
    since = start + timedelta(days=2)
    chosen, new = increment_sessions(sessionized, IncrementSelection(since, 0.0, 0))
    assert new.tolist() == [False, False, True, False]  # session 2 ends after ``since``
    assert chosen.tolist() == new.tolist()
    chosen, _ = increment_sessions(sessionized, IncrementSelection(since, 1.0, 0))
    assert chosen.tolist() == [True, False, True, True]  # every present session, never a missing one


@pytest.fixture(scope="module")
def parent_and_window(tmp_path_factory: pytest.TempPathFactory):
    """A parent trained on the first three weeks, and the four-week window's events."""
    work = tmp_path_factory.mktemp("increment")
    events = generate(SPEC).events
    before = build_corpus(events[events["event_time"] < CUT], SessionParams(), work / "before")
    parent = train_item2vec(before.corpus_path, before.vocabulary(), PARAMS)
    return parent, events, work


def test_an_update_with_no_new_token_moves_the_vectors_only_slightly(parent_and_window) -> None:
    parent, events, work = parent_and_window
    # The parent's own window again: every token is known, the update has nothing new to add.
    earlier = events[events["event_time"] < CUT]
    selection = IncrementSelection(CUT - timedelta(days=7), 0.2, 0)
    corpus = build_corpus(earlier, SessionParams(), work / "same", increment=selection)
    assert corpus.increment_path is not None and corpus.n_increment_new_sessions
    vocabulary = corpus.vocabulary()
    tokens, stats = train_increment(
        corpus.increment_path, corpus.corpus_path, vocabulary, parent, PARAMS, INCREMENT
    )
    assert stats.n_new_tokens == 0 and stats.initialised[INIT_PARENT] == len(parent) == len(tokens)
    assert tokens.tokens.tolist() == parent.tokens.tolist()
    # The counts are the window's (merged), not reset to what the increment corpus holds.
    window_counts = pd.Series(vocabulary.counts, index=vocabulary.tokens)
    assert tokens.counts.tolist() == window_counts.loc[tokens.tokens].tolist()
    cosine = (tokens.vectors * parent.vectors).sum(axis=1) / (
        np.linalg.norm(tokens.vectors, axis=1) * np.linalg.norm(parent.vectors, axis=1)
    )
    assert np.median(cosine) > 0.98 and not np.array_equal(tokens.vectors, parent.vectors)
    assert measure_drift(tokens, parent).weighted_mean_drift < 0.02


def test_an_update_with_only_new_tokens_leaves_the_parent_vectors_as_they_were(parent_and_window) -> None:
    parent, events, work = parent_and_window
    # The last week's products renamed: every token of the new sessions is new to the parent (the
    # hour before the cut left out, so that no session has events on both sides).
    times = events["event_time"]
    renamed = events[(times < CUT - timedelta(hours=1)) | (times >= CUT)].copy()
    later = renamed["event_time"] >= CUT
    renamed["product_id"] = renamed["product_id"].astype(object)
    renamed.loc[later, "product_id"] = "new_" + renamed.loc[later, "product_id"].astype(str)
    selection = IncrementSelection(CUT, 0.0, 0)
    corpus = build_corpus(renamed, SessionParams(), work / "renamed", increment=selection)
    assert corpus.increment_path is not None
    tokens, stats = train_increment(
        corpus.increment_path, corpus.corpus_path, corpus.vocabulary(), parent, PARAMS, INCREMENT
    )
    new = np.char.startswith(tokens.product_ids.astype(str), "new_")
    assert stats.n_new_tokens == new.sum() > 20 and not new[: len(parent)].any()
    # No session shares a token with the parent: the new tokens start from their category's mean.
    assert stats.initialised == {
        INIT_PARENT: len(parent),
        INIT_CO_SESSION: 0,
        INIT_CATEGORY: int(new.sum()),
        INIT_RANDOM: 0,
    }
    # Only the input vectors of tokens in the increment corpus are trained: the parent's stay put.
    np.testing.assert_array_equal(tokens.vectors[: len(parent)], parent.vectors)
    assert np.isfinite(tokens.vectors).all() and np.linalg.norm(tokens.vectors[new], axis=1).min() > 0


def test_a_fresh_vocabulary_samples_negatives_over_every_token_by_its_merged_count(parent_and_window) -> None:
    parent, events, work = parent_and_window
    corpus = build_corpus(events, SessionParams(), work / "window")
    vocabulary = corpus.vocabulary()
    codes = np.fromfile(corpus.corpus_path, dtype=np.int64, sep=" ")
    counts = np.bincount(codes, minlength=len(vocabulary.tokens))
    merged = merge_vocabulary(parent, vocabulary, counts, PARAMS.min_count)
    assert merged.n_new > 0  # the last week brings tokens the parent lacks
    model = fresh_word2vec(merged, PARAMS, INCREMENT, n_sessions=10)
    assert len(model.wv) == len(model.cum_table) == len(merged.codes)
    # gensim's cumulative table: each word's share is count ** ns_exponent over the whole vocabulary.
    count_of_word = dict(zip(merged.codes.astype(str), np.maximum(merged.table.counts, 1), strict=True))
    in_order = np.array([count_of_word[word] for word in model.wv.index_to_key], dtype=np.float64)
    expected = np.cumsum(in_order**PARAMS.ns_exponent) / (in_order**PARAMS.ns_exponent).sum()
    np.testing.assert_allclose(model.cum_table / model.cum_table[-1], expected, atol=1e-6)


def test_an_update_refuses_another_vector_size(parent_and_window, tmp_path: Path) -> None:
    parent, events, _ = parent_and_window
    corpus = build_corpus(events, SessionParams(), tmp_path, increment=IncrementSelection(CUT, 0.0, 0))
    assert corpus.increment_path is not None
    other = Item2VecParams(vector_size=8, workers=1)
    with pytest.raises(ValueError, match="vector_size 16 with vector_size 8"):
        train_increment(
            corpus.increment_path, corpus.corpus_path, corpus.vocabulary(), parent, other, INCREMENT
        )
