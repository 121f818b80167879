"""Item2Vec: gensim Word2Vec over session corpora, and vectorized token lookup with fallbacks."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from traitflow.config import Item2VecParams
from traitflow.model import TokenTable
from traitflow.sessions import Vocabulary

log = logging.getLogger(__name__)

# Which source served a looked-up token (values of ``TokenLookup.source``).
SOURCE_TOKEN, SOURCE_CATEGORY, SOURCE_ACTION, SOURCE_ZERO = 0, 1, 2, 3
SOURCE_NAMES = ("token", "category_average", "action_average", "zero")

# Working memory of one batch of ``most_similar`` (float32 scores + int64 partition indices): the
# quality gate scores 20K held-out pairs against the whole vocabulary, which at 200K tokens in one
# 4096-row batch took about 14 GiB.
SIMILARITY_BATCH_BYTES = 256 * 2**20


def word2vec_arguments(params: Item2VecParams) -> dict[str, float | int]:
    """Keyword arguments of ``gensim.models.Word2Vec`` for ``params`` (besides the corpus)."""
    return {
        "vector_size": params.vector_size,
        "window": params.window,
        "negative": params.negative,
        "ns_exponent": params.ns_exponent,
        "sample": params.sample,
        "min_count": params.min_count,
        "epochs": params.epochs,
        "sg": params.sg,
        "workers": params.workers,
        "seed": params.seed,
        "alpha": params.alpha,
        "min_alpha": params.min_alpha,
    }


def train_item2vec(corpus_path: Path, vocabulary: Vocabulary, params: Item2VecParams) -> TokenTable:
    """Train Word2Vec on ``corpus_path`` (written by ``sessions.write_corpus``) in corpus_file mode.

    Returns the learned tokens only (those gensim kept after ``min_count``), in vocabulary order,
    with their metadata from ``vocabulary``.
    """
    from gensim.models import Word2Vec  # heavy import, only where training happens
    from gensim.models.callbacks import CallbackAny2Vec

    class EpochProgress(CallbackAny2Vec):
        """One INFO line per finished epoch with the elapsed time: a progress signal that does
        not need gensim's own chatty log (the CLI shows gensim's lines only with -v)."""

        def __init__(self) -> None:
            self.epoch = 0

        def on_epoch_end(self, model: Word2Vec) -> None:
            self.epoch += 1
            elapsed = time.perf_counter() - started
            log.info("item2vec: epoch %d/%d done (%.1fs)", self.epoch, model.epochs, elapsed)

    if not Path(corpus_path).is_file() or Path(corpus_path).stat().st_size == 0:
        raise ValueError(f"corpus file {corpus_path} is missing or empty: no session has 2+ events")
    started = time.perf_counter()
    log.info("item2vec: training %d epochs on %s", params.epochs, corpus_path)
    model = Word2Vec(corpus_file=str(corpus_path), **word2vec_arguments(params), callbacks=[EpochProgress()])
    codes = np.asarray(model.wv.index_to_key, dtype=np.int64)
    order = np.argsort(codes, kind="stable")
    codes = codes[order]
    vectors = np.ascontiguousarray(model.wv.vectors[order], dtype=np.float32)
    log.info(
        "item2vec: %d tokens x %d dims from %s (%.1fs)",
        len(codes),
        vectors.shape[1],
        corpus_path,
        time.perf_counter() - started,
    )
    return TokenTable(
        tokens=vocabulary.tokens[codes],
        actions=vocabulary.actions[codes],
        product_ids=vocabulary.product_ids[codes],
        categories=vocabulary.categories[codes],
        counts=vocabulary.counts[codes],
        vectors=vectors,
    )


@dataclass
class FallbackVectors:
    """Count-weighted mean token vectors per category and per action, for unseen tokens.

    ``matrix`` stacks [token vectors; category means; action means; a zero row] so one gather (or
    one sparse product) serves every lookup. Row offsets are given by the attributes.
    """

    matrix: np.ndarray  # float32, shape (n_tokens + n_categories + n_actions + 1, d)
    category_index: pd.Index
    action_index: pd.Index
    n_tokens: int

    @property
    def category_offset(self) -> int:
        return self.n_tokens

    @property
    def action_offset(self) -> int:
        return self.n_tokens + len(self.category_index)

    @property
    def zero_row(self) -> int:
        return self.matrix.shape[0] - 1


def _group_means(keys: np.ndarray, weights: np.ndarray, vectors: np.ndarray) -> tuple[pd.Index, np.ndarray]:
    codes, uniques = pd.factorize(keys)
    groups = sp.csr_matrix(
        (weights.astype(np.float64), (codes, np.arange(len(codes)))), shape=(len(uniques), len(codes))
    )
    totals = np.asarray(groups.sum(axis=1)).ravel()
    means = (groups @ vectors.astype(np.float64)) / np.maximum(totals, 1e-12)[:, None]
    return pd.Index(uniques), means.astype(np.float32)


def fallback_vectors(tokens: TokenTable) -> FallbackVectors:
    """Build the stacked lookup matrix of ``tokens`` (category averages skip unknown categories)."""
    has_category = tokens.categories != ""
    category_index, category_means = _group_means(
        tokens.categories[has_category], tokens.counts[has_category], tokens.vectors[has_category]
    )
    action_index, action_means = _group_means(tokens.actions, tokens.counts, tokens.vectors)
    zero = np.zeros((1, tokens.vector_size), dtype=np.float32)
    matrix = np.vstack([tokens.vectors, category_means, action_means, zero]).astype(np.float32)
    return FallbackVectors(matrix, category_index, action_index, len(tokens))


@dataclass(frozen=True)
class TokenLookup:
    """Where each looked-up token's vector comes from.

    rows : ndarray of int64, shape (n,) -- row of ``FallbackVectors.matrix``
    source : ndarray of int8, shape (n,) -- SOURCE_TOKEN / SOURCE_CATEGORY / SOURCE_ACTION / SOURCE_ZERO
    """

    rows: np.ndarray
    source: np.ndarray
    in_vocabulary: np.ndarray  # bool, shape (n,) -- the token itself is known (even if not used)

    def counts(self) -> dict[str, int]:
        per_source = np.bincount(self.source, minlength=len(SOURCE_NAMES))
        return {name: int(n) for name, n in zip(SOURCE_NAMES, per_source, strict=True)}


_Strings: TypeAlias = np.ndarray | pa.Array


def _subset(values: _Strings, mask: np.ndarray) -> np.ndarray:
    """The rows of ``values`` where ``mask`` is True, as an object array (only these are converted)."""
    if isinstance(values, pa.Array):
        return np.asarray(values.filter(pa.array(mask)).to_numpy(zero_copy_only=False), dtype=object)
    return values[mask]


def lookup(
    tokens: TokenTable,
    fallback: FallbackVectors,
    token_values: _Strings,
    categories: _Strings,
    actions: _Strings,
    *,
    force_category: np.ndarray | None = None,
) -> TokenLookup:
    """Resolve tokens to rows: the token itself, else its category average, else its action average,
    else the zero row. Vectorized hash lookups (``pc.index_in`` on Arrow strings, else
    ``Index.get_indexer``); categories and actions are only converted for the rows that need them.

    Parameters
    ----------
    token_values, categories, actions : ndarray of str or pyarrow string array, shape (n,);
        missing categories are NaN, None or ""
    force_category : ndarray of bool, shape (n,), optional -- skip the token level for these rows
        (cold-start customers are embedded from category averages)
    """
    if isinstance(token_values, pa.Array) and len(token_values) * 4 < len(tokens):
        # pc.index_in hashes the whole vocabulary on every call; for a few events (one customer,
        # a small daily batch) the vocabulary's cached pandas hash index is far cheaper.
        token_values = np.asarray(token_values.to_numpy(zero_copy_only=False), dtype=object)
    if isinstance(token_values, pa.Array):
        value_set = tokens.arrow_tokens.cast(token_values.type)
        positions = pc.index_in(token_values, value_set=value_set).fill_null(-1)
        rows = positions.to_numpy(zero_copy_only=False).astype(np.int64)
    else:
        rows = tokens.index.get_indexer(pd.Index(token_values)).astype(np.int64)
    source = np.full(len(rows), SOURCE_TOKEN, dtype=np.int8)
    in_vocabulary = rows >= 0
    if force_category is not None:
        rows[force_category] = -1
    missing = rows < 0
    if missing.any():
        category_rows = fallback.category_index.get_indexer(pd.Index(_subset(categories, missing)))
        rows[missing] = np.where(category_rows >= 0, category_rows + fallback.category_offset, -1)
        source[missing] = SOURCE_CATEGORY
        missing = rows < 0
    if missing.any():
        action_rows = fallback.action_index.get_indexer(pd.Index(_subset(actions, missing)))
        rows[missing] = np.where(action_rows >= 0, action_rows + fallback.action_offset, -1)
        source[missing] = SOURCE_ACTION
        missing = rows < 0
    rows[missing] = fallback.zero_row
    source[missing] = SOURCE_ZERO
    return TokenLookup(rows=rows, source=source, in_vocabulary=in_vocabulary)


def most_similar(
    tokens: TokenTable, query_rows: np.ndarray, top_n: int, batch_size: int | None = None
) -> np.ndarray:
    """Top-``top_n`` most cosine-similar tokens (excluding itself) for each query token row.

    The query rows are scored ``batch_size`` at a time against every token; by default as many as
    keep one batch's scores and partition indices within ``SIMILARITY_BATCH_BYTES`` (12 bytes per
    query x token), so memory stays bounded whatever the vocabulary.

    Returns
    -------
    ndarray of int64, shape (len(query_rows), top_n) -- token rows, most similar first
    """
    unit = tokens.vectors / np.maximum(np.linalg.norm(tokens.vectors, axis=1, keepdims=True), 1e-12)
    top_n = min(top_n, len(tokens) - 1)
    if batch_size is None:
        batch_size = max(1, SIMILARITY_BATCH_BYTES // (12 * len(tokens)))
    out = np.empty((len(query_rows), top_n), dtype=np.int64)
    for start in range(0, len(query_rows), batch_size):
        batch = query_rows[start : start + batch_size]
        scores = unit[batch] @ unit.T
        scores[np.arange(len(batch)), batch] = -np.inf
        # The top_n largest in the last columns, without a negated copy of the scores.
        top = np.argpartition(scores, scores.shape[1] - top_n, axis=1)[:, -top_n:]
        top_scores = np.take_along_axis(scores, top, axis=1)
        out[start : start + len(batch)] = np.take_along_axis(top, np.argsort(-top_scores, axis=1), axis=1)
    return out
