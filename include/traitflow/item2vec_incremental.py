"""Incremental Item2Vec: continue a model's token vectors on the sessions that arrived since it.

gensim's own update path (``build_vocab(update=True)``) keeps the old sort order and counts and
rebuilds the negative-sampling table from the update's words only; a call without new words
trips over its own bookkeeping. This module never uses it: every update builds a fresh gensim
vocabulary from the merged counts (``MergedVocabulary``), so the down-sampling thresholds and the
negative-sampling table (``cum_table``) cover the whole vocabulary with current counts, and then
copies the parent's vectors in by token.

The stored model keeps the input vectors only, not gensim's output (negative-sampling) weights.
An update therefore first trains the output layer alone for one epoch with every input vector
locked (gensim's ``vectors_lockf`` = 0), so that the parent's vectors are not pushed around by an
output layer that starts from zero; without it they drift further from the parent for the same
next-item quality (docs/results.md). The cost is one extra epoch over the increment corpus.

New tokens start in the direction of the mean vector of the known tokens they share sessions
with in the increment corpus (one sparse session x token product), else of their category's mean
in the parent, else at gensim's small random initialisation; always at the length of gensim's
random initial vectors. At full length a mean vector is close in cosine to every token it
averages, so a new token seen in a few sessions, which the update barely moves, would sit among
the nearest neighbours of a whole category and push true neighbours out of next-item
recommendations; at the random vectors' length the training signal decides where it ends up.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from traitflow.config import IncrementParams, Item2VecParams
from traitflow.item2vec import fallback_vectors, word2vec_arguments
from traitflow.model import TokenTable
from traitflow.sessions import Vocabulary

log = logging.getLogger(__name__)

# How a token's starting vector was chosen (``IncrementStats.initialised``).
INIT_PARENT, INIT_CO_SESSION, INIT_CATEGORY, INIT_RANDOM = "parent", "co_session", "category", "random"


def corpus_tokens(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every token of a corpus file written by ``sessions.write_corpus``, with its line.

    Returns
    -------
    lines : ndarray of int64, shape (n,) -- 0-based line (session) of each token
    codes : ndarray of int64, shape (n,) -- the token codes, in file order
    """
    data = np.fromfile(path, dtype=np.uint8)
    separators = data[(data == ord(" ")) | (data == ord("\n"))]
    newline = (separators == ord("\n")).astype(np.int64)
    lines = np.cumsum(newline) - newline  # newlines strictly before each token's separator
    codes = np.fromfile(path, dtype=np.int64, sep=" ")
    if len(codes) != len(lines):
        raise ValueError(f"{path}: {len(codes)} tokens but {len(lines)} separators: not a corpus file")
    return lines, codes


def increment_token_counts(increment_path: Path, vocabulary: Vocabulary) -> pd.Series:
    """Occurrences of every vocabulary token in an increment corpus (int64, indexed by token; the
    corpus's codes index ``vocabulary.tokens``), for ``drift.measure_drift``'s ``recent_counts``."""
    codes = np.fromfile(increment_path, dtype=np.int64, sep=" ")
    counts = np.bincount(codes, minlength=len(vocabulary.tokens)).astype(np.int64)
    return pd.Series(counts, index=pd.Index(vocabulary.tokens))


@dataclass(frozen=True)
class MergedVocabulary:
    """The updated model's vocabulary: every parent token (in parent order), then the window's new
    learnable tokens (in vocabulary order).

    table : TokenTable with zero vectors -- metadata from the window's vocabulary where the token
        is in it, else the parent's; counts the window's where the token is in it, else the
        parent's (a token that left the window keeps its last count rather than dropping to 0)
    parent_rows : ndarray of int64, shape (n,) -- row in the parent table, -1 for new tokens
    codes : ndarray of int64, shape (n,) -- corpus code of each token (the gensim word is its
        decimal string); tokens absent from the window get codes after the window's
    """

    table: TokenTable
    parent_rows: np.ndarray
    codes: np.ndarray

    @property
    def n_new(self) -> int:
        return int((self.parent_rows < 0).sum())


def merge_vocabulary(
    parent: TokenTable, vocabulary: Vocabulary, corpus_counts: np.ndarray, min_count: int
) -> MergedVocabulary:
    """Parent tokens plus the window's tokens with at least ``min_count`` occurrences in the
    training corpus (``corpus_counts``: int64, shape (len(vocabulary.tokens),)), as gensim would
    keep them in a full retrain."""
    n_window = len(vocabulary.tokens)
    parent_of_window = parent.index.get_indexer(pd.Index(vocabulary.tokens))  # (n_window,), -1: new
    new_codes = np.flatnonzero((parent_of_window < 0) & (corpus_counts >= min_count))
    window_of_parent = np.full(len(parent), -1, dtype=np.int64)
    in_window = parent_of_window >= 0
    window_of_parent[parent_of_window[in_window]] = np.flatnonzero(in_window)
    absent = window_of_parent < 0
    parent_codes = np.where(absent, n_window + np.cumsum(absent) - 1, window_of_parent)
    codes = np.concatenate([parent_codes, new_codes]).astype(np.int64)
    parent_rows = np.concatenate([np.arange(len(parent)), np.full(len(new_codes), -1)]).astype(np.int64)

    def column(window_values: np.ndarray, parent_values: np.ndarray) -> np.ndarray:
        from_parent = np.concatenate([absent, np.zeros(len(new_codes), dtype=bool)])
        merged = window_values[np.minimum(codes, n_window - 1)].copy()
        merged[from_parent] = parent_values[absent]
        return merged

    table = TokenTable(
        tokens=column(vocabulary.tokens, parent.tokens),
        actions=column(vocabulary.actions, parent.actions),
        product_ids=column(vocabulary.product_ids, parent.product_ids),
        categories=column(vocabulary.categories, parent.categories),
        counts=column(vocabulary.counts, parent.counts).astype(np.int64),
        vectors=np.zeros((len(codes), parent.vector_size), dtype=np.float32),
    )
    return MergedVocabulary(table, parent_rows, codes)


def co_session_means(
    lines: np.ndarray, rows: np.ndarray, known: np.ndarray, vectors: np.ndarray, n_tokens: int
) -> tuple[np.ndarray, np.ndarray]:
    """For every token: the mean vector of the known tokens in the sessions it occurs in.

    Parameters
    ----------
    lines, rows : int64, shape (n,) -- session and token row of each occurrence (rows < n_tokens)
    known : bool, shape (n_tokens,) -- tokens whose ``vectors`` row is meaningful
    vectors : float32, shape (n_tokens, d)

    Returns
    -------
    means : float32, shape (n_tokens, d) -- 0 where there is no known co-session token
    found : bool, shape (n_tokens,) -- a mean exists (some session shares a known token)
    """
    n_sessions = int(lines.max()) + 1 if len(lines) else 0
    presence = sp.csr_matrix(
        (np.ones(len(lines), dtype=np.float64), (lines, rows)), shape=(n_sessions, n_tokens)
    )
    presence.data[:] = 1.0  # a token repeated in a session counts once
    known_presence = presence @ sp.diags(known.astype(np.float64))
    session_sums = known_presence @ vectors.astype(np.float64)  # (n_sessions, d)
    session_known = np.asarray(known_presence.sum(axis=1)).ravel()  # (n_sessions,)
    totals = presence.T @ session_sums  # (n_tokens, d): sums over each token's sessions
    counts = presence.T @ session_known  # (n_tokens,)
    # A known token's own vector is part of its sessions' sums; only unknown tokens use this.
    found = counts > 0
    means = np.zeros((n_tokens, vectors.shape[1]), dtype=np.float32)
    means[found] = (totals[found] / counts[found, None]).astype(np.float32)
    return means, found


@dataclass(frozen=True)
class IncrementStats:
    """What one incremental update did (stored with the candidate's training plan)."""

    n_parent_tokens: int
    n_new_tokens: int
    n_tokens: int
    initialised: dict[str, int]  # INIT_* -> tokens
    n_sessions: int
    n_words: int
    epochs: int
    alpha: float
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return {
            "n_parent_tokens": self.n_parent_tokens,
            "n_new_tokens": self.n_new_tokens,
            "n_tokens": self.n_tokens,
            "initialised": dict(self.initialised),
            "n_sessions": self.n_sessions,
            "n_words": self.n_words,
            "epochs": self.epochs,
            "alpha": self.alpha,
            "seconds": round(self.seconds, 3),
        }


def _starting_vectors(
    merged: MergedVocabulary, parent: TokenTable, lines: np.ndarray, rows: np.ndarray, random: np.ndarray
) -> tuple[np.ndarray, dict[str, int]]:
    """float32 (n, d): parent vectors; for new tokens the direction of their co-session mean, else
    of their category's mean, else ``random``'s, at the length of their ``random`` row (gensim's
    initial vectors, shape (n, d))."""
    vectors = random.copy()
    is_parent = merged.parent_rows >= 0
    vectors[is_parent] = parent.vectors[merged.parent_rows[is_parent]]
    means, found = co_session_means(lines, rows, is_parent, vectors, len(merged.codes))
    by_session = ~is_parent & found
    vectors[by_session] = means[by_session]
    rest = np.flatnonzero(~is_parent & ~found)
    fallback = fallback_vectors(parent)
    category_rows = fallback.category_index.get_indexer(pd.Index(merged.table.categories[rest]))
    by_category = rest[category_rows >= 0]
    vectors[by_category] = fallback.matrix[fallback.category_offset + category_rows[category_rows >= 0]]
    lengths = np.linalg.norm(vectors, axis=1)
    new = np.flatnonzero(~is_parent)
    vectors[new] *= (np.linalg.norm(random[new], axis=1) / np.maximum(lengths[new], 1e-12))[:, None]
    initialised = {
        INIT_PARENT: int(is_parent.sum()),
        INIT_CO_SESSION: int(by_session.sum()),
        INIT_CATEGORY: len(by_category),
        INIT_RANDOM: len(rest) - len(by_category),
    }
    return vectors, initialised


def fresh_word2vec(
    merged: MergedVocabulary, params: Item2VecParams, increment: IncrementParams, n_sessions: int
) -> Any:
    """An untrained gensim ``Word2Vec`` whose vocabulary is ``merged`` (words: the decimal
    corpus codes) with its merged counts: sorted, down-sampling thresholds and negative-sampling
    table (``cum_table``) computed from scratch over every token."""
    from gensim.models import Word2Vec  # heavy import, only where training happens

    arguments = {**word2vec_arguments(params), "min_count": 1}
    arguments.update(alpha=increment.increment_alpha, epochs=increment.increment_epochs)
    model = Word2Vec(**arguments)
    counts = np.maximum(merged.table.counts, 1)  # gensim drops a word counted 0
    model.build_vocab_from_freq(
        dict(zip(merged.codes.astype(str).tolist(), counts.tolist(), strict=True)), corpus_count=n_sessions
    )
    return model


def train_increment(
    increment_path: Path,
    corpus_path: Path,
    vocabulary: Vocabulary,
    parent: TokenTable,
    params: Item2VecParams,
    increment: IncrementParams,
) -> tuple[TokenTable, IncrementStats]:
    """Continue ``parent``'s vectors on the increment corpus (``pipeline.build_corpus`` with an
    ``IncrementSelection``) for ``increment.increment_epochs`` epochs from learning rate
    ``increment.increment_alpha``.

    ``corpus_path`` is the window's whole training corpus: it decides which window tokens are
    learnable (``min_count``), as in a full retrain. The result has the parent's tokens (in its
    order) then the new ones; ``vector_size`` must be the parent's.
    """
    if params.vector_size != parent.vector_size:
        raise ValueError(
            f"cannot continue a model of vector_size {parent.vector_size}"
            f" with vector_size {params.vector_size}"
        )
    if not increment_path.is_file() or increment_path.stat().st_size == 0:
        raise ValueError(f"increment corpus {increment_path} is missing or empty: no session to train on")
    started = time.perf_counter()
    window_codes = np.fromfile(corpus_path, dtype=np.int64, sep=" ")
    corpus_counts = np.bincount(window_codes, minlength=len(vocabulary.tokens))
    merged = merge_vocabulary(parent, vocabulary, corpus_counts, params.min_count)
    lines, codes = corpus_tokens(increment_path)

    model = fresh_word2vec(merged, params, increment, n_sessions=int(lines.max()) + 1)
    gensim_keys = np.asarray(model.wv.index_to_key, dtype=np.int64)
    order = np.argsort(gensim_keys)
    position = order[np.searchsorted(gensim_keys, merged.codes, sorter=order)]  # merged row -> gensim row
    code_to_row = np.full(int(max(merged.codes.max(), codes.max())) + 1, -1, dtype=np.int64)
    code_to_row[merged.codes] = np.arange(len(merged.codes))
    occurrence_rows = code_to_row[codes]
    kept = occurrence_rows >= 0  # tokens below min_count and new to the model are not trained
    start, initialised = _starting_vectors(
        merged, parent, lines[kept], occurrence_rows[kept], model.wv.vectors[position]
    )
    model.wv.vectors[position] = start

    n_words = len(codes)
    model.wv.vectors_lockf = np.zeros(len(gensim_keys), dtype=np.float32)  # output layer only
    model.train(
        corpus_file=str(increment_path),
        total_words=n_words,
        epochs=1,
        start_alpha=increment.increment_alpha,
        end_alpha=increment.increment_alpha,
    )
    model.wv.vectors_lockf = np.ones(1, dtype=np.float32)
    model.train(
        corpus_file=str(increment_path),
        total_words=n_words,
        epochs=increment.increment_epochs,
        start_alpha=increment.increment_alpha,
        end_alpha=params.min_alpha,
    )
    table = merged.table
    table.vectors = np.ascontiguousarray(model.wv.vectors[position], dtype=np.float32)
    stats = IncrementStats(
        n_parent_tokens=len(parent),
        n_new_tokens=merged.n_new,
        n_tokens=len(table),
        initialised=initialised,
        n_sessions=int(lines.max()) + 1,
        n_words=n_words,
        epochs=increment.increment_epochs,
        alpha=increment.increment_alpha,
        seconds=time.perf_counter() - started,
    )
    log.info(
        "item2vec increment: %d parent + %d new tokens, %d sessions, %d epochs (%.1fs)",
        stats.n_parent_tokens,
        stats.n_new_tokens,
        stats.n_sessions,
        stats.epochs,
        stats.seconds,
    )
    return table, stats
