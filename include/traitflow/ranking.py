"""Ranking items (products or categories) for customers, and scoring the rankings per customer.

Everything here is batched over customers: a method is a ``score_batch(start, stop)`` callable
returning the dense scores of customers ``start..stop-1`` over the rankable items, and the
metrics come back as one array per metric with one value per customer, so that confidence
intervals can be drawn by resampling customers (``traitflow.bootstrap``).

Methods (all estimated from events before the split instant only):

* profile (``profile_product_scores``): a mixture, ``P(p | c) = sum_t profile_c[t] P(p | t)``,
  where ``P(p | t)`` is the item distribution of the customers who hold trait ``t`` (each
  customer's own item distribution weighted by their profile weight on ``t``,
  ``trait_item_distribution``), tilted by the cosine of the customer's and the item's Item2Vec
  vectors: ``log P(p | c) + SIMILARITY_WEIGHT cos(x_c, v_p)``; the mixture alone is
  ``mixture_scores``;
* popularity (``popularity_scores``): the same ranking for everyone;
* co-occurrence (``cooccurrence_matrix``): ``score(c, p') = sum_p u_c(p) P(p' | p)``, ``u_c`` the
  customer's item distribution and ``P(p' | p)`` the share of sessions (baskets) holding ``p``
  that also hold ``p'``;
* own history: the customer's own item distribution (a reference ceiling for repeat buying).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from traitflow.config import SessionParams
from traitflow.sessions import sessionize

ScoreBatch = Callable[[int, int], np.ndarray]

HIT_KS: tuple[int, ...] = (5, 10)
RECALL_K = 50
NDCG_K = 10
BATCH = 4096
_MAX_BATCH_CELLS = 16_000_000  # customers x items of one dense score block (128 MB of float64)
_EPS = 1e-12


def item_matrix(
    rows: np.ndarray, items: np.ndarray, index: pd.Index, values: np.ndarray, n_rows: int
) -> sp.csr_matrix:
    """Sparse (n_rows, len(index)) sum of ``values`` at (row, item); items not in ``index`` dropped."""
    cols = index.get_indexer(pd.Index(items))
    known = cols >= 0
    matrix = sp.csr_matrix(
        (np.asarray(values, dtype=np.float64)[known], (rows[known], cols[known])),
        shape=(n_rows, len(index)),
        dtype=np.float64,
    )
    matrix.sum_duplicates()
    return matrix


def row_normalize(matrix: sp.spmatrix) -> sp.csr_matrix:
    """Rows scaled to sum to 1 (all-zero rows stay zero)."""
    totals = np.asarray(matrix.sum(axis=1)).ravel()
    return (sp.diags(1.0 / np.maximum(totals, _EPS)) @ matrix).tocsr()


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` highest scores per row, best first, shape (n, min(k, C))."""
    k = min(k, scores.shape[1])
    if k < scores.shape[1]:
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        top = np.broadcast_to(np.arange(scores.shape[1]), scores.shape).copy()
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def metric_names(
    ks: Sequence[int] = HIT_KS, recall_k: int | None = RECALL_K, ndcg_k: int = NDCG_K
) -> list[str]:
    """Names of the metrics ``per_customer_metrics`` returns, in order."""
    names = [f"hit@{k}" for k in ks]
    if recall_k:
        names.append(f"recall@{recall_k}")
    return [*names, f"ndcg@{ndcg_k}"]


def per_customer_metrics(
    score_batch: ScoreBatch,
    relevant: sp.csr_matrix,
    *,
    exclude: sp.csr_matrix | None = None,
    ks: Sequence[int] = HIT_KS,
    recall_k: int | None = RECALL_K,
    ndcg_k: int = NDCG_K,
    batch_size: int | None = None,
) -> dict[str, np.ndarray]:
    """Hit@K, recall@``recall_k`` and NDCG@``ndcg_k`` (binary relevance) of every customer's ranking.

    Parameters
    ----------
    score_batch : callable (start, stop) -> ndarray (stop - start, C), scores over the C
        rankable items (higher = ranked first)
    relevant : sparse (n, C') with C' >= C, nonzero where the customer did the target action on
        the item; columns >= C are items no method can rank (never hit, but counted in the
        recall denominator and the NDCG ideal)
    exclude : sparse (n, C), optional -- nonzero entries are removed from the ranking (e.g. items
        the customer already had); they must not be relevant
    batch_size : customers scored at once; default ``BATCH``, fewer for large catalogues so one
        dense block of scores stays within ``_MAX_BATCH_CELLS``

    Returns
    -------
    dict metric name -> ndarray of float64, shape (n,)
    """
    relevant = relevant.tocsr()
    n, n_columns = relevant.shape
    if n == 0:
        raise ValueError("no customers to rank items for")
    relevant_counts = np.diff(relevant.indptr)
    rows = np.repeat(np.arange(n, dtype=np.int64), relevant_counts)
    keys = np.sort(rows * n_columns + relevant.indices.astype(np.int64))
    depth = max(*ks, recall_k or 0, ndcg_k)
    discounts = 1.0 / np.log2(np.arange(2, depth + 2))
    ideal = np.cumsum(discounts[:ndcg_k])
    out = {name: np.zeros(n) for name in metric_names(ks, recall_k, ndcg_k)}
    exclude = exclude.tocsr() if exclude is not None else None
    if batch_size is None:
        batch_size = max(1, min(BATCH, _MAX_BATCH_CELLS // max(n_columns, 1)))
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        scores = np.asarray(score_batch(start, stop), dtype=np.float64)
        if scores.ndim != 2 or scores.shape[0] != stop - start or scores.shape[1] > n_columns:
            raise ValueError(
                f"scores of shape {scores.shape} for {stop - start} customers, {n_columns} columns"
            )
        if exclude is not None:
            scores = scores.copy()
            block = exclude[start:stop].tocoo()
            scores[block.row, block.col] = -np.inf
        top = top_k(scores, depth)
        wanted = np.arange(start, stop, dtype=np.int64)[:, None] * n_columns + top
        at = np.searchsorted(keys, wanted).clip(max=max(len(keys) - 1, 0))
        is_relevant = keys[at] == wanted if len(keys) else np.zeros(top.shape, dtype=bool)
        if exclude is not None:  # excluded items sit at -inf; never count them even when ranked
            is_relevant &= np.isfinite(np.take_along_axis(scores, top, axis=1))
        for k in ks:
            out[f"hit@{k}"][start:stop] = is_relevant[:, :k].any(axis=1)
        counts = np.maximum(relevant_counts[start:stop], 1)
        if recall_k:
            out[f"recall@{recall_k}"][start:stop] = is_relevant[:, :recall_k].sum(axis=1) / counts
        width = min(ndcg_k, top.shape[1])
        dcg = (is_relevant[:, :width] * discounts[:width]).sum(axis=1)
        out[f"ndcg@{ndcg_k}"][start:stop] = dcg / ideal[np.clip(counts, 1, ndcg_k) - 1]
    return out


# ------------------------------------------------------------------------------- the methods


# EM steps refining ``trait_item_distribution`` (see there). On the Online Retail II export one
# step raised profile hit@10 on products new to the customer from 1.47x to 1.52x popularity at
# k=16 (1.46x to 1.61x at k=32); further steps added nothing or lost a little
# (docs/method-variants.md).
EM_STEPS = 1
_EM_BLOCK = 1_000_000  # (customer, item) pairs per block of the (pairs, k) product in _em_step


def trait_item_distribution(
    profiles: np.ndarray, usage: sp.spmatrix, *, smoothing: float = 0.0, em_steps: int = EM_STEPS
) -> np.ndarray:
    """``P(item | trait)``: the item distribution of the customers holding each trait.

    Start: each customer's item distribution (a row of ``usage``, normalized) weighted by the
    customer's profile weight on the trait, ``P(p | t) = sum_c w_ct u_c(p) / sum_c w_ct``, where
    every customer counts once whatever their volume. Then ``em_steps`` EM steps of the mixture
    ``P(p | c) = sum_t w_ct P(p | t)`` with the profiles held fixed: each of a customer's items is
    shared among the traits by responsibility ``w_ct P(p | t) / P(p | c)`` rather than by ``w_ct``
    alone, so an item goes to the trait that explains it (the average blurs every trait with the
    other traits of its customers). With ``smoothing`` = s the result is
    ``(1 - s) P(p | t) + s P(p)``, ``P(p)`` the mean customer's distribution.

    Parameters
    ----------
    profiles : ndarray, shape (n, k), non-negative
    usage : sparse (n, P), non-negative weighted item counts of the same customers

    Returns
    -------
    ndarray of float64, shape (k, P): each row sums to 1 (0 for a trait no customer holds)
    """
    if not 0.0 <= smoothing <= 1.0:
        raise ValueError(f"smoothing must be in [0, 1], got {smoothing}")
    if profiles.shape[0] != usage.shape[0]:
        raise ValueError(f"profiles have {profiles.shape[0]} rows, usage {usage.shape[0]}")
    if em_steps < 0:
        raise ValueError(f"em_steps must be >= 0, got {em_steps}")
    shares = row_normalize(sp.csr_matrix(usage, dtype=np.float64))
    held = shares.sum(axis=1).A1 > 0  # customers with no item carry no information
    mass = np.asarray((shares.T @ profiles).T)  # (k, P)
    totals = profiles[held].sum(axis=0)
    distribution = mass / np.maximum(totals, _EPS)[:, None]
    for _ in range(em_steps):
        distribution = _em_step(profiles, shares, distribution)
    if smoothing > 0:
        overall = np.asarray(shares.sum(axis=0)).ravel() / max(int(held.sum()), 1)
        distribution = (1.0 - smoothing) * distribution + smoothing * overall[None, :]
    return distribution


def _em_step(profiles: np.ndarray, shares: sp.csr_matrix, distribution: np.ndarray) -> np.ndarray:
    """One EM step of ``P(item | trait)`` (k, I) for customers' item shares (n, I), profiles (n, k) fixed.

    Customer c's share s_cp of item p goes to trait t by responsibility w_ct D_tp / z_cp, with
    z_cp = sum_t w_ct D_tp; summed over customers, trait t's new mass on p is
    D_tp sum_c w_ct s_cp / z_cp: ``D * (W.T @ R)`` for R the shares divided by z. Only z needs a
    (pairs, k) product, so no per-pair responsibility array is built or scattered.
    """
    by_item = np.ascontiguousarray(distribution.T)  # (I, k): rows gathered per pair
    rows = np.repeat(np.arange(shares.shape[0]), np.diff(shares.indptr))
    explained = np.empty(shares.nnz)  # z at every non-zero of shares
    for start in range(0, shares.nnz, _EM_BLOCK):
        block = slice(start, start + _EM_BLOCK)
        explained[block] = np.einsum(
            "ij,ij->i", profiles[rows[block]], by_item[shares.indices[block]], optimize=False
        )
    ratio = sp.csr_matrix(
        (shares.data / np.maximum(explained, _EPS), shares.indices, shares.indptr), shape=shares.shape
    )
    mass = distribution * np.asarray(ratio.T @ profiles).T  # (k, I)
    return mass / np.maximum(mass.sum(axis=1, keepdims=True), _EPS)


def mixture_scores(profiles: np.ndarray, distribution: np.ndarray) -> ScoreBatch:
    """``score(c, p) = sum_t profiles[c, t] distribution[t, p]`` for customers start..stop-1."""
    return lambda start, stop: profiles[start:stop] @ distribution


def popularity_scores(counts: np.ndarray, tie_break: np.ndarray | None = None) -> ScoreBatch:
    """The same scores for everyone: ``counts`` (P,), ties broken by ``tie_break`` (P,)."""
    scores = np.asarray(counts, dtype=np.float64)
    if tie_break is not None:
        scores = scores + np.asarray(tie_break, dtype=np.float64) / (float(np.sum(tie_break)) + 1.0)
    return lambda start, stop: np.broadcast_to(scores, (stop - start, len(scores)))


def cooccurrence_matrix(
    history: pd.DataFrame, sessions: SessionParams, index: pd.Index, *, column: str = "product_id"
) -> sp.csr_matrix:
    """``P(i' | i)``: the share of sessions holding item ``i`` that also hold ``i'``, shape (I, I).

    Items are the values of ``column`` (``product_id`` or ``category``); sessions come from
    ``sessions.sessionize`` (a basket export's invoice lines share a timestamp, so each invoice
    falls into one session).
    """
    sessionized = sessionize(history, sessions)
    session = sessionized["session"].to_numpy()
    items = sessionized[column].to_numpy(dtype=object)
    present = pd.notna(items)
    n_sessions = int(session.max()) + 1 if len(session) else 0
    holds = item_matrix(session[present], items[present], index, np.ones(int(present.sum())), n_sessions)
    holds.data[:] = 1.0  # a session holds an item or not
    together = (holds.T @ holds).tocsr()  # (I, I) sessions holding both
    return (sp.diags(1.0 / np.maximum(together.diagonal(), 1.0)) @ together).tocsr()


def sparse_scores(matrix: sp.spmatrix, tie_break: np.ndarray | None = None) -> ScoreBatch:
    """Scores from a sparse (n, P) matrix; ``tie_break`` (P,) orders the items a row leaves at zero."""
    matrix = sp.csr_matrix(matrix)
    small = None
    if tie_break is not None:
        # Strictly below the smallest positive score: only orders what the matrix leaves tied.
        positive = matrix.data[matrix.data > 0]
        floor = float(positive.min()) if len(positive) else 1.0
        small = 0.5 * floor * np.asarray(tie_break, dtype=np.float64) / max(float(np.max(tie_break)), _EPS)

    def score(start: int, stop: int) -> np.ndarray:
        block = matrix[start:stop].toarray()
        return block + small if small is not None else block

    return score


@dataclass(frozen=True)
class ItemTargets:
    """Who is scored and against what.

    customer_ids : ndarray (n,) sorted test customers (history before T, target after)
    relevant : sparse (n, I + n_unseen) -- target items after T; columns >= I were unseen before T
    exclude : sparse (n, I) or None -- items removed from the ranking (discovery: already had)
    """

    customer_ids: np.ndarray
    relevant: sp.csr_matrix
    exclude: sp.csr_matrix | None
    n_unseen_items: int


def item_targets(
    history: pd.DataFrame,
    future: pd.DataFrame,
    index: pd.Index,
    actions: Sequence[str],
    *,
    column: str = "product_id",
    new_only: bool = False,
) -> ItemTargets:
    """Test customers (events before T and a target action after it) and their target items.

    With ``new_only`` the items a customer had any event on before T are dropped from their
    targets (and excluded from every ranking), and customers left without targets are dropped.
    """
    history_customers = pd.unique(history["customer_id"].to_numpy(dtype=object))
    wanted = future[future["action"].isin(list(actions)) & future[column].notna()]
    customers = wanted["customer_id"].to_numpy(dtype=object)
    with_history = np.isin(customers, history_customers)
    wanted, customers = wanted[with_history], customers[with_history]
    items = wanted[column].to_numpy(dtype=object)
    test_ids = np.unique(customers).astype(object)
    exclude = None
    if new_only:
        seen_history = history[history["customer_id"].isin(test_ids) & history[column].notna()]
        seen_pairs = pd.MultiIndex.from_arrays(
            [seen_history["customer_id"].to_numpy(dtype=object), seen_history[column].to_numpy(dtype=object)]
        )
        is_new = ~pd.MultiIndex.from_arrays([customers, items]).isin(seen_pairs)
        customers, items = customers[is_new], items[is_new]
        test_ids = np.unique(customers).astype(object)
        seen_history = seen_history[seen_history["customer_id"].isin(test_ids)]
        exclude = item_matrix(
            np.searchsorted(test_ids, seen_history["customer_id"].to_numpy(dtype=object)),
            seen_history[column].to_numpy(dtype=object),
            index,
            np.ones(len(seen_history)),
            len(test_ids),
        )
    rows = np.searchsorted(test_ids, customers)
    unseen = pd.Index(pd.unique(items[index.get_indexer(pd.Index(items)) < 0]))
    relevant = item_matrix(rows, items, index.append(unseen), np.ones(len(rows)), len(test_ids))
    relevant.data[:] = 1.0
    return ItemTargets(customer_ids=test_ids, relevant=relevant, exclude=exclude, n_unseen_items=len(unseen))


def product_vectors(
    token_products: np.ndarray, token_counts: np.ndarray, token_vectors: np.ndarray, index: pd.Index
) -> np.ndarray:
    """Each product's Item2Vec vector: the count-weighted mean of its tokens' vectors, (P, d).

    A product has one token per action it was seen with; products without a token stay zero.
    """
    cols = index.get_indexer(pd.Index(np.asarray(token_products, dtype=object)))
    known = cols >= 0
    membership = sp.csr_matrix(
        (np.asarray(token_counts, dtype=np.float64)[known], (cols[known], np.flatnonzero(known))),
        shape=(len(index), len(token_products)),
    )
    return np.asarray(row_normalize(membership) @ np.asarray(token_vectors, dtype=np.float64))


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, _EPS)


def unit_item_vectors(products: np.ndarray, center: np.ndarray | None = None) -> np.ndarray:
    """Item vectors (P, d) less ``center`` (d,), scaled to unit length: what the customers'
    vectors are compared with (``embedding_similarity``). Items without a vector (zero rows)
    stay zero, so they score 0. Returns float64 (P, d)."""
    products = np.asarray(products, dtype=np.float64)
    has_vector = np.linalg.norm(products, axis=1) > 0
    centred = products if center is None else products - center[None, :]
    return np.where(has_vector[:, None], _unit_rows(centred), 0.0)


def embedding_similarity(
    customer_vectors: np.ndarray, products: np.ndarray, center: np.ndarray
) -> ScoreBatch:
    """``cos(x_c - center, v_p - center)``: how a customer and a product deviate alike from the
    average customer (``center``), for customer vectors (n, d) and product vectors (P, d).

    Centring removes the direction every customer shares, which otherwise makes the most
    frequent products the nearest to everyone. Products without a vector score 0.
    """
    return unit_similarity(customer_vectors, unit_item_vectors(products, center), center)


def unit_similarity(
    customer_vectors: np.ndarray, unit_products: np.ndarray, center: np.ndarray
) -> ScoreBatch:
    """``embedding_similarity`` over products already centred and scaled (``unit_item_vectors``
    with the same ``center``, (P, d)): only the customer vectors (n, d) are normalised here."""
    unit_customers = _unit_rows(np.asarray(customer_vectors, dtype=np.float64) - center[None, :])
    return lambda start, stop: unit_customers[start:stop] @ unit_products.T


def blended_scores(mixture: ScoreBatch, similarity: ScoreBatch, gamma: float) -> ScoreBatch:
    """``log P(p | c) + gamma cos(c, p)``: the profile mixture reweighted by the embedding
    similarity (a product of experts), ``P(p | c)`` floored at a hundredth of uniform so that a
    product the mixture leaves at zero still ranks by similarity among such products."""

    def score(start: int, stop: int) -> np.ndarray:
        mix = mixture(start, stop)
        floor = 0.01 / max(mix.shape[1], 1)
        return np.log(np.maximum(mix, floor)) + gamma * similarity(start, stop)

    return score


# Weight of the Item2Vec similarity in the profile's product ranking (``profile_product_scores``).
# Chosen on a validation split inside the training events of the Online Retail II export (its
# first 80% of events split again at 80%; never the test period), three trainings: weights 2 to
# 8 lifted all-products hit@10 alike (1.157-1.165x popularity against the mixture's 1.13x); 8
# fell below the mixture on products new to the customer, and of the rest 3 scored highest on
# all products. Larger weights also cost more where purchases do not follow a customer's own
# products (the planted synthetic tiers). docs/method-variants.md has the grid.
SIMILARITY_WEIGHT = 3.0


def profile_product_scores(
    profiles: np.ndarray,
    distribution: np.ndarray,
    customer_vectors: np.ndarray | None = None,
    item_vectors: np.ndarray | None = None,
    similarity_weight: float = SIMILARITY_WEIGHT,
) -> ScoreBatch:
    """How a profile ranks items: the trait mixture, tilted towards the customer's own vector.

    ``log P(p | c) + similarity_weight * cos(x_c, v_p)`` (``blended_scores``), where
    ``P(p | c) = sum_t profiles[c, t] distribution[t, p]`` is the mixture of the customer's traits
    (``mixture_scores``) and ``cos(x_c, v_p)`` the cosine of the customer's Item2Vec vector (the
    weighted mean of their tokens that the profile is projected from, stored with it) and the
    item's vector (``product_vectors``). The k trait weights say which groups of products a
    customer shops; they cannot say which products within them, and the vector they are projected
    from can: on real exports the tilt is what lifts the ranking past popularity on all products
    (docs/method-variants.md). With ``similarity_weight`` 0, or without vectors, the mixture alone.
    ``profile_product_scores_prenormalized`` is the same over item vectors scaled beforehand.

    Parameters
    ----------
    profiles : ndarray, shape (n, k), non-negative
    distribution : ndarray, shape (k, P) -- ``P(item | trait)``, rows summing to 1
    customer_vectors : ndarray, shape (n, d), or None
    item_vectors : ndarray, shape (P, d), or None -- zero rows for items without a vector
    similarity_weight : float, >= 0
    """
    unit_items = None
    if similarity_weight != 0 and customer_vectors is not None and item_vectors is not None:
        unit_items = unit_item_vectors(item_vectors)
    return profile_product_scores_prenormalized(
        profiles, distribution, customer_vectors, unit_items, similarity_weight
    )


def profile_product_scores_prenormalized(
    profiles: np.ndarray,
    distribution: np.ndarray,
    customer_vectors: np.ndarray | None = None,
    unit_items: np.ndarray | None = None,
    similarity_weight: float = SIMILARITY_WEIGHT,
) -> ScoreBatch:
    """``profile_product_scores`` with the item vectors already ``unit_item_vectors(item_vectors)``,
    (P, d): a caller ranking many customers one at a time (the served ranking) scales the items
    once instead of per call. Shapes and the other parameters as ``profile_product_scores``."""
    if not similarity_weight >= 0:  # also refuses NaN
        raise ValueError(f"similarity_weight must be >= 0, got {similarity_weight}")
    mixture = mixture_scores(profiles, distribution)
    if similarity_weight == 0 or customer_vectors is None or unit_items is None:
        return mixture
    if customer_vectors.shape[0] != profiles.shape[0]:
        raise ValueError(
            f"profiles have {profiles.shape[0]} rows, customer_vectors {customer_vectors.shape[0]}"
        )
    if unit_items.shape[0] != distribution.shape[1]:
        raise ValueError(
            f"distribution has {distribution.shape[1]} items, item_vectors {unit_items.shape[0]}"
        )
    origin = np.zeros(customer_vectors.shape[1])  # uncentred: ranked better than centred on validation
    similarity = unit_similarity(customer_vectors, unit_items, origin)
    return blended_scores(mixture, similarity, similarity_weight)


def fold_in_profiles(
    profiles: np.ndarray, usage: sp.spmatrix, distribution: np.ndarray, steps: int
) -> np.ndarray:
    """Profiles refined by ``steps`` EM steps towards the customers' own items, traits fixed.

    Each step re-weighs a customer's traits by how much of their items each trait explains,
    ``w_t <- sum_p u(p) w_t P(p | t) / sum_s w_s P(p | s)``, ``u`` the customer's item shares
    (rows of ``usage``, normalized): the mixture's weights move towards the maximum-likelihood
    fit of what the customer bought, starting from (and, with few steps, staying near) the
    profile. Customers without items keep their profile. Shapes: profiles (n, k), usage (n, P),
    distribution (k, P); returns (n, k), rows summing to 1 where the profile did.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    shares = row_normalize(sp.csr_matrix(usage, dtype=np.float64)).tocoo()
    held = np.bincount(shares.row, minlength=profiles.shape[0]) > 0
    weights = np.asarray(profiles, dtype=np.float64).copy()
    for _ in range(steps):
        explained = np.einsum("ik,ki->i", weights[shares.row], distribution[:, shares.col])
        ratios = sp.csr_matrix(
            (shares.data / np.maximum(explained, _EPS), (shares.row, shares.col)), shape=shares.shape
        )
        updated = weights * np.asarray(ratios @ distribution.T)
        weights = np.where(held[:, None], updated, weights)
    return weights
