"""Customer embeddings: the weighted mean of a customer's token vectors, as one sparse product.

``A`` (customers x lookup rows) holds each event's weight at the row its token resolved to;
``A @ M`` summed per customer and divided by the weight total is the weighted mean for every
customer at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from traitflow.config import AggregationParams, SessionParams
from traitflow.item2vec import SOURCE_ZERO, FallbackVectors, fallback_vectors, lookup
from traitflow.model import TokenTable
from traitflow.profile_batch import COLD_START_FEW_TOKENS, COLD_START_NO_HISTORY, COLD_START_NONE
from traitflow.sessions import arrow_strings, factorize_sorted, tokenize_arrow

_MICROS_PER_DAY = 86_400 * 1_000_000
# Smallest event weight cast to float32 as it is (float32 normals end at 1.2e-38; margin for sums).
_FLOAT32_SAFE_WEIGHT = 1e-30


@dataclass
class CustomerEmbeddings:
    """Embeddings of ``n`` customers.

    customer_ids : ndarray of object (str), shape (n,), sorted
    vectors : ndarray of float32, shape (n, d); rows with ``has_vector`` False are zeros
    n_events : ndarray of int64, shape (n,)
    cold_start : ndarray of object (str), shape (n,) -- see ``traitflow.profile_batch``
    has_vector : ndarray of bool, shape (n,) -- False when no event had any usable vector
    stats : dict -- lookup source counts and OOV rate
    n_known_tokens : ndarray of int64, shape (n,) -- events whose token is in the vocabulary
        (counted even for few_tokens customers, whose vectors come from category averages)
    """

    customer_ids: np.ndarray
    vectors: np.ndarray
    n_events: np.ndarray
    cold_start: np.ndarray
    has_vector: np.ndarray
    stats: dict[str, Any] = field(default_factory=dict)
    n_known_tokens: np.ndarray | None = None


def event_weights(events: pd.DataFrame, params: AggregationParams, as_of: datetime | None) -> np.ndarray:
    """Per-event weight: action weight times an optional recency decay (half-life in days).

    Returns ndarray of float64, shape (n_events,); unknown actions weigh 0.
    """
    known = dict(params.action_weights)
    actions = arrow_strings(events["action"])
    positions = pc.index_in(actions, value_set=pa.array(list(known), actions.type)).fill_null(len(known))
    per_action = np.append(np.fromiter(known.values(), dtype=np.float64, count=len(known)), 0.0)
    weights = per_action[positions.to_numpy(zero_copy_only=False)]
    if params.recency_half_life_days is not None:
        if as_of is None:
            raise ValueError("recency weighting needs as_of")
        reference = pd.Timestamp(as_of).tz_convert("UTC").value // 1_000  # .value is ns in any unit
        times = events["event_time"].to_numpy(dtype="datetime64[us]").astype(np.int64)
        age_days = np.maximum(reference - times, 0) / _MICROS_PER_DAY
        weights = weights * np.exp2(-age_days / params.recency_half_life_days)
    return weights


def _float32_safe(weights: np.ndarray, codes: np.ndarray, n_customers: int) -> np.ndarray:
    """``weights`` (n_events,), rescaled to a largest weight of 1 for each customer with a positive
    weight that would underflow float32 (recency decay over many half-lives: 2^-126 is ~10 years
    at 30 days). A customer's mean vector does not change with a factor common to their events;
    without the rescale a customer whose events are all that old would get a zero vector. Whether
    a customer is rescaled depends on their own events only, so their vector is the same whichever
    customers share the batch."""
    tiny = (weights > 0) & (weights < _FLOAT32_SAFE_WEIGHT)
    if not tiny.any():
        return weights
    rescaled = np.zeros(n_customers, dtype=bool)
    rescaled[codes[tiny]] = True
    of_rescaled = rescaled[codes]
    largest = np.zeros(n_customers)
    np.maximum.at(largest, codes[of_rescaled], weights[of_rescaled])
    # A rescaled customer has a positive weight, so their largest is > 0; the others keep theirs.
    return np.where(of_rescaled, weights / np.where(rescaled, largest, 1.0)[codes], weights)


def assignment_matrix(
    codes: np.ndarray, rows: np.ndarray, values: np.ndarray, shape: tuple[int, int]
) -> sp.csr_matrix:
    """``sp.csr_matrix((values, (codes, rows)), shape=shape)``, the same matrix to the bit, built
    without scipy's COO constructor: its checks and conversion cost ~0.1 ms whatever the size,
    ten times the product for the one or few customers of a post.

    The layout is the one scipy's COO to CSR conversion produces (each row's entries in input
    order: a stable sort by row); then scipy's own ``sum_duplicates`` puts each row's columns in
    order and adds up repeated ones, as that conversion does.

    codes, rows : ndarray of int, shape (n,) -- row and column of each value; values : shape (n,)
    """
    # 32-bit indices where they fit, as scipy picks them (64-bit ones it would convert first)
    index = np.int32 if max(*shape, len(codes)) <= np.iinfo(np.int32).max else np.int64
    order = np.argsort(codes, kind="stable")
    indptr = np.zeros(shape[0] + 1, dtype=index)
    np.cumsum(np.bincount(codes, minlength=shape[0]), out=indptr[1:])
    assignment = sp.csr_matrix((values[order], rows[order].astype(index), indptr), shape=shape)
    assignment.sum_duplicates()
    return assignment


def weighted_means(
    codes: np.ndarray, rows: np.ndarray, weights: np.ndarray, n_customers: int, matrix: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each customer's weighted mean of lookup-matrix rows: the arithmetic every profile rests on.

    The batch path (``customer_embeddings``) and the event update path
    (``online.CustomerProfiler.resolve``) both end here, so a customer's vector is bit-identical
    whichever path computed it, given the customer's events in the same order.

    Parameters
    ----------
    codes : ndarray of int, shape (n_events,) -- each event's customer, in [0, n_customers)
    rows : ndarray of int, shape (n_events,) -- each event's row of ``matrix``
    weights : ndarray of float64, shape (n_events,) -- zero for events that say nothing
    matrix : ndarray of float32, shape (n_rows, d) -- the lookup matrix (``fallback_vectors``)

    Returns
    -------
    vectors : ndarray of float32, shape (n_customers, d) -- zeros where ``has_vector`` is False
    has_vector : ndarray of bool, shape (n_customers,) -- some event weighs more than zero
    """
    # float32 like the lookup matrix: a float64 sparse factor would make scipy copy the whole
    # (vocabulary x d) matrix to float64 on every call (20 ms per call at 218K tokens).
    weights = _float32_safe(weights, codes, n_customers)
    assignment = assignment_matrix(codes, rows, weights.astype(np.float32), (n_customers, matrix.shape[0]))
    totals = np.bincount(codes, weights=weights, minlength=n_customers)
    has_vector = totals > 0
    vectors = np.asarray(assignment @ matrix, dtype=np.float64)
    vectors[has_vector] /= totals[has_vector, None]
    return vectors.astype(np.float32), has_vector


def _cold_start_counts(few_tokens: np.ndarray, has_vector: np.ndarray) -> dict[str, int]:
    """Customers per cold-start flag (flags that occur, sorted by name), from the two masks."""
    counts = {
        COLD_START_FEW_TOKENS: int(np.count_nonzero(few_tokens & has_vector)),
        COLD_START_NO_HISTORY: int(np.count_nonzero(~has_vector)),
        COLD_START_NONE: int(np.count_nonzero(~few_tokens & has_vector)),
    }
    return {name: counts[name] for name in sorted(counts) if counts[name]}


def customer_embeddings(
    events: pd.DataFrame,
    tokens: TokenTable,
    aggregation: AggregationParams,
    sessions: SessionParams,
    *,
    as_of: datetime | None = None,
    customer_ids: np.ndarray | None = None,
    fallback: FallbackVectors | None = None,
) -> CustomerEmbeddings:
    """Embed every customer in ``events`` (plus ``customer_ids`` with no events, flagged no_history).

    Customers with fewer than ``aggregation.min_tokens`` events are embedded from the category
    averages of their events (flagged few_tokens): a handful of token vectors is too noisy.
    """
    fallback = fallback if fallback is not None else fallback_vectors(tokens)
    codes, uniques = factorize_sorted(arrow_strings(events["customer_id"]))
    all_ids = uniques
    if customer_ids is not None:
        all_ids = np.union1d(all_ids, np.asarray(customer_ids, dtype=object)).astype(object)
        codes = np.searchsorted(all_ids, np.asarray(uniques, dtype=object))[codes] if len(codes) else codes
    n_customers = len(all_ids)
    n_events = np.bincount(codes, minlength=n_customers).astype(np.int64)

    few_tokens = (n_events > 0) & (n_events < aggregation.min_tokens)
    actions = arrow_strings(events["action"])
    resolved = lookup(
        tokens,
        fallback,
        tokenize_arrow(actions, events["product_id"], sessions.token_scheme),
        arrow_strings(events["category"]),
        actions,
        force_category=few_tokens[codes],
    )
    weights = event_weights(events, aggregation, as_of)
    weights[resolved.source == SOURCE_ZERO] = 0.0  # a zero vector says nothing: don't dilute the mean
    vectors, has_vector = weighted_means(codes, resolved.rows, weights, n_customers, fallback.matrix)

    cold_start = np.full(n_customers, COLD_START_NONE, dtype=object)
    cold_start[few_tokens] = COLD_START_FEW_TOKENS
    cold_start[~has_vector] = COLD_START_NO_HISTORY
    source_counts = resolved.counts()
    stats = {
        "n_events": len(events),
        "lookup_sources": source_counts,
        "oov_rate": float(1.0 - resolved.in_vocabulary.mean()) if len(events) else 0.0,
        "cold_start": _cold_start_counts(few_tokens, has_vector),
    }
    return CustomerEmbeddings(
        customer_ids=all_ids,
        vectors=vectors,
        n_events=n_events,
        cold_start=cold_start,
        has_vector=has_vector,
        stats=stats,
        n_known_tokens=np.bincount(codes[resolved.in_vocabulary], minlength=n_customers).astype(np.int64),
    )
