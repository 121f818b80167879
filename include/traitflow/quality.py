"""Quality metrics: embedding quality, profile coherence, next-item hit rate."""

from __future__ import annotations

from typing import TypedDict

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from traitflow.item2vec import most_similar
from traitflow.model import TokenTable


class _Comparison(TypedDict):
    """A paired comparison of next-item hit rates on the same held-out pairs: the candidate's
    rate, the mean per-pair difference (candidate - baseline) and its standard error."""

    candidate_hit_rate: float
    difference: float
    standard_error: float
    n_pairs: int


class ActiveComparison(_Comparison):
    """``compare_hit_rates``: a candidate against the active model."""

    active_hit_rate: float


class PopularityComparison(_Comparison):
    """``compare_with_popularity``: a candidate against the popularity baseline, with the 95%
    interval ``lower`` / ``upper`` of the difference."""

    popularity_hit_rate: float
    lower: float
    upper: float


def embedding_quality(tokens: TokenTable, expected_similarity: pd.DataFrame) -> float:
    """Spearman correlation between cosine similarities and expected similarities of token pairs.

    Parameters
    ----------
    expected_similarity : DataFrame with columns ``token_a``, ``token_b``, ``expected`` (float);
        pairs with an unknown token are ignored. At least 3 usable pairs are needed.
    """
    rows_a = tokens.index.get_indexer(pd.Index(expected_similarity["token_a"].to_numpy(dtype=object)))
    rows_b = tokens.index.get_indexer(pd.Index(expected_similarity["token_b"].to_numpy(dtype=object)))
    usable = (rows_a >= 0) & (rows_b >= 0)
    if usable.sum() < 3:
        raise ValueError(f"need >= 3 pairs of known tokens, got {int(usable.sum())}")
    unit = tokens.vectors / np.maximum(np.linalg.norm(tokens.vectors, axis=1, keepdims=True), 1e-12)
    cosine = np.sum(unit[rows_a[usable]] * unit[rows_b[usable]], axis=1)
    expected = expected_similarity["expected"].to_numpy(dtype=np.float64)[usable]
    return float(spearmanr(cosine, expected).statistic)


def same_category_pairs(tokens: TokenTable, n_pairs: int = 5000, *, random_state: int = 0) -> pd.DataFrame:
    """Random token pairs with expected similarity 1 when they share a category, else 0."""
    rng = np.random.default_rng(random_state)
    known = np.flatnonzero(tokens.categories != "")
    if len(known) < 2:
        raise ValueError("need at least 2 tokens with a category")
    a = rng.choice(known, n_pairs)
    b = rng.choice(known, n_pairs)
    distinct = a != b
    a, b = a[distinct], b[distinct]
    return pd.DataFrame(
        {
            "token_a": tokens.tokens[a],
            "token_b": tokens.tokens[b],
            "expected": (tokens.categories[a] == tokens.categories[b]).astype(np.float64),
        }
    )


def profile_coherence(
    profiles: np.ndarray, segments: np.ndarray, *, sample_size: int = 10_000, random_state: int = 0
) -> float:
    """Silhouette of trait profiles grouped by known segment (cosine distance), in [-1, 1]."""
    from sklearn.metrics import silhouette_score

    if len(np.unique(segments)) < 2:
        raise ValueError("profile coherence needs at least 2 distinct segments")
    return float(
        silhouette_score(
            profiles,
            segments,
            metric="cosine",
            sample_size=min(sample_size, len(profiles)),
            random_state=random_state,
        )
    )


def next_item_pairs(
    sessions: np.ndarray, session_tokens: np.ndarray, *, max_pairs: int = 20_000, random_state: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive (current, next) token pairs of held-out sessions, at most ``max_pairs`` (sampled).

    Parameters
    ----------
    sessions : ndarray of int, shape (n,) -- session index of each event, events in session order
    session_tokens : ndarray of str, shape (n,) -- token of each event

    Returns two ndarrays of str, shape (n_pairs,). Repeats of the same token are left out: a
    repeated view of one product is trivially predictable.
    """
    same_session = sessions[1:] == sessions[:-1]
    current, following = session_tokens[:-1][same_session], session_tokens[1:][same_session]
    distinct = current != following
    current, following = current[distinct], following[distinct]
    if len(current) == 0:
        raise ValueError("no consecutive pairs of distinct tokens in the held-out sessions")
    if len(current) > max_pairs:
        pick = np.random.default_rng(random_state).choice(len(current), max_pairs, replace=False)
        current, following = current[pick], following[pick]
    return current, following


def next_item_hits(
    tokens: TokenTable, current: np.ndarray, following: np.ndarray, *, top_n: int = 10
) -> np.ndarray:
    """Whether each ``following`` token is among the ``top_n`` neighbours of its ``current`` token.

    Returns ndarray of bool, shape (n_pairs,). Pairs with a token unknown to the model are misses
    (a model that knows fewer tokens is not rewarded for it).
    """
    current_rows = tokens.index.get_indexer(pd.Index(current))
    following_rows = tokens.index.get_indexer(pd.Index(following))
    scorable = (current_rows >= 0) & (following_rows >= 0)
    hits = np.zeros(len(current), dtype=bool)
    if scorable.any() and len(tokens) > 1:
        neighbours = most_similar(tokens, current_rows[scorable], top_n)
        hits[scorable] = (neighbours == following_rows[scorable, None]).any(axis=1)
    return hits


def next_item_hit_rate(
    tokens: TokenTable,
    sessions: np.ndarray,
    session_tokens: np.ndarray,
    *,
    top_n: int = 10,
    max_pairs: int = 20_000,
    random_state: int = 0,
) -> dict[str, float]:
    """How often the next token of a held-out session is among the ``top_n`` neighbours of the current
    (see ``next_item_pairs`` and ``next_item_hits``)."""
    current, following = next_item_pairs(
        sessions, session_tokens, max_pairs=max_pairs, random_state=random_state
    )
    hits = next_item_hits(tokens, current, following, top_n=top_n)
    coverage = known_pairs(tokens, current, following)
    return {"hit_rate": float(hits.mean()), "n_pairs": len(current), "coverage": float(coverage.mean())}


def known_pairs(tokens: TokenTable, current: np.ndarray, following: np.ndarray) -> np.ndarray:
    """Whether the model knows both tokens of each pair: ndarray of bool, shape (n_pairs,)."""
    return (tokens.index.get_indexer(pd.Index(current)) >= 0) & (
        tokens.index.get_indexer(pd.Index(following)) >= 0
    )


def compare_hit_rates(
    candidate: TokenTable,
    active: TokenTable,
    sessions: np.ndarray,
    session_tokens: np.ndarray,
    *,
    top_n: int = 10,
    max_pairs: int = 20_000,
) -> ActiveComparison:
    """Paired comparison of two models' next-item hit rates on the same held-out pairs.

    Returns the two hit rates, their difference (candidate - active) and its standard error from
    the per-pair differences, so a gate can tell "worse" from "sampling noise".
    """
    current, following = next_item_pairs(sessions, session_tokens, max_pairs=max_pairs)
    candidate_hits = next_item_hits(candidate, current, following, top_n=top_n).astype(np.float64)
    active_hits = next_item_hits(active, current, following, top_n=top_n).astype(np.float64)
    mean, standard_error, n = _paired_difference(candidate_hits, active_hits)
    return {
        "candidate_hit_rate": float(candidate_hits.mean()),
        "active_hit_rate": float(active_hits.mean()),
        "difference": mean,
        "standard_error": standard_error,
        "n_pairs": n,
    }


def _paired_difference(first: np.ndarray, second: np.ndarray) -> tuple[float, float, int]:
    """Mean of the per-pair differences ``first - second``, its standard error, and the number of
    pairs (float 0/1 hits, shape (n_pairs,)); one pair or none has an infinite standard error."""
    difference = first - second
    n = len(difference)
    standard_error = float(difference.std(ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
    return float(difference.mean()), standard_error, n


def popularity_hits(
    training_counts: np.ndarray,
    tokens: np.ndarray,
    current: np.ndarray,
    following: np.ndarray,
    *,
    top_n: int = 10,
) -> np.ndarray:
    """The popularity baseline's hits: whether ``following`` is among the ``top_n`` most frequent
    training tokens other than ``current`` (the baseline recommends the same list after every
    token; the current token is left out of it, as ``most_similar`` leaves out the query).

    Parameters
    ----------
    training_counts : ndarray of int, shape (n_tokens,) -- occurrences in the training data
    tokens : ndarray of str, shape (n_tokens,)
    current, following : ndarray of str, shape (n_pairs,)

    Returns ndarray of bool, shape (n_pairs,). Ties in count go to the earlier token.
    """
    order = np.argsort(-np.asarray(training_counts), kind="stable")[: top_n + 1]
    popular = pd.Index(np.asarray(tokens, dtype=object)[order])
    current_rank = popular.get_indexer(current)
    following_rank = popular.get_indexer(following)
    current_rank = np.where(current_rank < 0, top_n + 1, current_rank)
    # Without the current token the list is the first top_n + 1 minus it: a token ranked top_n
    # (0-based) gets in only when the current one was among the first top_n.
    limit = np.where(current_rank < top_n, top_n + 1, top_n)
    return (following_rank >= 0) & (following_rank < limit)


def compare_with_popularity(
    candidate: TokenTable,
    sessions: np.ndarray,
    session_tokens: np.ndarray,
    *,
    top_n: int = 10,
    max_pairs: int = 20_000,
) -> PopularityComparison:
    """Paired comparison of a model's next-item hit rate with the popularity baseline's.

    Both predict the same held-out pairs (``next_item_pairs``): the model by the ``top_n``
    neighbours of the current token, the baseline by the ``top_n`` most frequent tokens of the
    training data (``candidate.counts`` counts the whole window, held-out sessions included, so
    their tokens are subtracted first: the baseline does not see the answers). Returns both hit
    rates, the difference (candidate - popularity), its standard error from the per-pair
    differences and the 95% interval ``lower`` / ``upper``.
    """
    current, following = next_item_pairs(sessions, session_tokens, max_pairs=max_pairs)
    held_out = _token_counts(candidate, session_tokens)
    training_counts = np.maximum(np.asarray(candidate.counts, dtype=np.int64) - held_out, 0)
    candidate_hits = next_item_hits(candidate, current, following, top_n=top_n).astype(np.float64)
    baseline_hits = popularity_hits(
        training_counts, candidate.tokens, current, following, top_n=top_n
    ).astype(np.float64)
    mean, standard_error, n = _paired_difference(candidate_hits, baseline_hits)
    return {
        "candidate_hit_rate": float(candidate_hits.mean()),
        "popularity_hit_rate": float(baseline_hits.mean()),
        "difference": mean,
        "standard_error": standard_error,
        "lower": mean - 1.96 * standard_error,
        "upper": mean + 1.96 * standard_error,
        "n_pairs": n,
    }


def _token_counts(tokens: TokenTable, values: np.ndarray) -> np.ndarray:
    """Occurrences of each vocabulary token among ``values`` (unknown values ignored), shape (n_tokens,)."""
    rows = tokens.index.get_indexer(pd.Index(np.asarray(values, dtype=object)))
    return np.bincount(rows[rows >= 0], minlength=len(tokens)).astype(np.int64)
