"""Traits' product distributions: ``P(product | trait)`` through the customers who hold each trait.

A trait found by NMF on customer vectors is a direction in the token space; what its customers
actually buy is measured directly: every training customer's action-weighted product
distribution, weighted by the customer's profile weight on the trait
(``ranking.trait_item_distribution``). A customer's products are then ranked as the mixture
``score(p) = sum_t profile[t] P(p | t)``. On the Online Retail II export this ranked later
purchases better than ranking products by their tokens' projected loadings (the method variants
are compared in docs/method-variants.md).
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from traitflow.aggregate import event_weights
from traitflow.config import AggregationParams
from traitflow.model import TraitProducts
from traitflow.ranking import trait_item_distribution
from traitflow.sessions import arrow_strings, factorize_sorted

# Products kept per trait: the rest of a distribution's mass is a long tail that ranks below
# every kept product anyway (one trait's tail could still matter in a mixture; 500 per trait
# keeps what a top-50 ranking draws on).
TOP_N = 500
_EPS = 1e-12


def fit_trait_products(
    events: pd.DataFrame,
    customer_ids: np.ndarray,
    profiles: np.ndarray,
    aggregation: AggregationParams,
    as_of: datetime,
    *,
    top_n: int = TOP_N,
) -> TraitProducts:
    """``P(product | trait)`` from the events of ``customer_ids`` (unique str, shape (n,)) and their
    profiles (n, k); events of other customers are ignored. Each trait keeps its ``top_n`` products.

    Returns ``TraitProducts``: the products some trait keeps, sorted (object (P,)), and their
    weights (k, P).
    """
    if profiles.shape[0] != len(customer_ids):
        raise ValueError(f"profiles have {profiles.shape[0]} rows for {len(customer_ids)} customers")
    # Customers and products become integer codes inside Arrow (a hash look-up, a dictionary
    # encoding): no Python string per event, which is what object-array look-ups cost.
    found = pc.index_in(arrow_strings(events["customer_id"]), value_set=arrow_strings(customer_ids))
    rows = found.fill_null(-1).to_numpy(zero_copy_only=False)
    mine = rows >= 0
    cols, product_ids = factorize_sorted(arrow_strings(events["product_id"]).filter(pa.array(mine)))
    usage = sp.csr_matrix(
        (event_weights(events, aggregation, as_of)[mine], (rows[mine], cols)),
        shape=(len(customer_ids), len(product_ids)),
    )
    usage.sum_duplicates()
    distribution = trait_item_distribution(profiles, usage)  # (k, P)
    keep = min(top_n, distribution.shape[1])
    if keep < distribution.shape[1]:
        top = np.argpartition(-distribution, keep - 1, axis=1)[:, :keep]
        mask = np.zeros(distribution.shape, dtype=bool)
        np.put_along_axis(mask, top, True, axis=1)
        distribution = np.where(mask & (distribution > 0), distribution, 0.0)
    used = distribution.any(axis=0)
    return TraitProducts(product_ids[used], distribution[:, used])


def characteristic_products(products: TraitProducts, top_n: int = 5) -> list[list[str]]:
    """Each trait's ``top_n`` most characteristic products: ranked by ``P(p | t) log(P(p | t) / P(p))``
    (their contribution to the divergence from the average trait), so products every trait buys
    do not head every list. ``P(p)`` is the mean of the traits' distributions."""
    weights = products.weights
    overall = weights.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = np.where(weights > 0, weights * np.log(weights / np.maximum(overall, _EPS)), -np.inf)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :top_n]
    return [
        [str(products.product_ids[i]) for i in row if np.isfinite(scores[t, i]) and scores[t, i] > 0]
        for t, row in enumerate(order)
    ]


def product_scores(profiles: np.ndarray, products: TraitProducts) -> np.ndarray:
    """Mixture scores of ``products.product_ids`` for profiles (n, k): shape (n, P)."""
    return profiles @ products.weights
