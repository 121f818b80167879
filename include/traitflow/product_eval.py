"""Product-level ranking evaluation: the profile vs popularity, co-occurrence and own history.

For each test customer (events before the split ``T``, a target action after it) every method
ranks the products known before ``T`` (``traitflow.ranking``). The profile ranks them the way a
served profile does (``ranking.profile_product_scores``): the mixture of the customer's traits,
tilted by the similarity of the customer's Item2Vec vector to each product's. Given those
vectors, the traits' mixture alone is reported next to it as ``profile_traits``, with its own
lift over popularity, so what the tilt adds is visible on every export. hit@5, hit@10, recall@50 and
NDCG@10 are computed per customer and summarized with bootstrap 95% intervals over customers
(``traitflow.bootstrap``), for every method and for the profile's lift over popularity.

Two views: all products, and products new to the customer (discovery: products the customer had
any event on before ``T`` are removed from every ranking and from the targets; customers left
without targets are not scored).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from traitflow.aggregate import event_weights
from traitflow.bootstrap import DEFAULT_RESAMPLES, compare
from traitflow.config import AggregationParams, PipelineConfig
from traitflow.model import TokenTable
from traitflow.ranking import (
    EM_STEPS,
    SIMILARITY_WEIGHT,
    ItemTargets,
    ScoreBatch,
    cooccurrence_matrix,
    item_matrix,
    item_targets,
    mixture_scores,
    per_customer_metrics,
    popularity_scores,
    product_vectors,
    profile_product_scores,
    row_normalize,
    sparse_scores,
    trait_item_distribution,
)

PRODUCT_METHODS: tuple[str, ...] = ("profile", "popularity", "cooccurrence", "own_history")
# The profile's trait mixture without the Item2Vec tilt, reported when the vectors are given.
PROFILE_TRAITS = "profile_traits"
# Weight of the customer's own product distribution added to the traits' mixture in the
# ``profile_with_history`` method (repeat buying, which a k-trait profile cannot carry); on new
# products that method is the mixture itself (``profile_traits``).
HISTORY_WEIGHT = 0.5
# A reference method reported when the profiles are recency-weighted: popularity with the same
# decay (``recent_product_popularity``), with the profile's lift over it.
RECENT_POPULARITY = "recent_popularity"


@dataclass(frozen=True)
class ProfileVectors:
    """What the profile's Item2Vec tilt needs besides the profiles.

    customers : ndarray, shape (n, d) -- the customers' vectors (the weighted means the profiles
        are projected from), in the order of the profiles
    tokens : the model's token table (each product's vector is the count-weighted mean of its
        tokens' vectors)
    """

    customers: np.ndarray
    tokens: TokenTable

    def product_vectors(self, index: pd.Index) -> np.ndarray:
        """The products of ``index`` as vectors, (len(index), d); zero rows for unknown products."""
        return product_vectors(self.tokens.product_ids, self.tokens.counts, self.tokens.vectors, index)


def customer_usage(
    events: pd.DataFrame, customer_ids: np.ndarray, index: pd.Index, config: PipelineConfig, as_of: datetime
) -> sp.csr_matrix:
    """Action-weighted product counts of ``customer_ids`` (sorted) over ``index``: sparse (n, P)."""
    mine = events[events["customer_id"].isin(customer_ids)]
    weights = event_weights(mine, config.aggregation, as_of)
    return item_matrix(
        np.searchsorted(customer_ids, mine["customer_id"].to_numpy(dtype=object)),
        mine["product_id"].to_numpy(dtype=object),
        index,
        weights,
        len(customer_ids),
    )


def product_index(history: pd.DataFrame) -> pd.Index:
    """The products seen before the split, sorted: the columns every product ranking ranks."""
    return pd.Index(np.sort(pd.unique(history["product_id"].to_numpy(dtype=object))))


def product_popularity(history: pd.DataFrame, index: pd.Index, actions: Sequence[str]) -> ScoreBatch:
    """Target-action events per product before ``T``, ties broken by all events."""
    is_target = history["action"].isin(list(actions)).to_numpy()
    return _weighted_popularity(history, index, is_target.astype(np.float64))


def recent_product_popularity(
    history: pd.DataFrame, index: pd.Index, actions: Sequence[str], half_life_days: float, as_of: datetime
) -> ScoreBatch:
    """Target-action events per product before ``as_of``, each weighted by the profile's recency
    decay (``half_life_days``): the popularity a recency-weighted profile has to beat to show that
    its lift is more than following the trend. Ties broken by all events."""
    decay = AggregationParams(
        action_weights=dict.fromkeys(actions, 1.0), recency_half_life_days=half_life_days
    )
    return _weighted_popularity(history, index, event_weights(history, decay, as_of))


def _weighted_popularity(history: pd.DataFrame, index: pd.Index, target_weights: np.ndarray) -> ScoreBatch:
    """Scores from the per-event ``target_weights`` (n_events,) summed per product over ``index``,
    ties broken by all events per product."""
    zeros = np.zeros(len(history), dtype=np.int64)
    products = history["product_id"].to_numpy(dtype=object)
    all_counts = item_matrix(zeros, products, index, np.ones(len(history)), 1).toarray()[0]
    target = item_matrix(zeros, products, index, target_weights, 1).toarray()[0]
    return popularity_scores(target, all_counts)


def product_ranking(
    history: pd.DataFrame,
    future: pd.DataFrame,
    *,
    customer_ids: np.ndarray,
    profiles: np.ndarray,
    config: PipelineConfig,
    split_at: datetime,
    actions: Sequence[str],
    distribution: tuple[np.ndarray, np.ndarray] | None = None,
    vectors: ProfileVectors | None = None,
    similarity_weight: float = SIMILARITY_WEIGHT,
    extra_profiles: Sequence[tuple[str, np.ndarray, np.ndarray]] = (),
    extra_scorers: Sequence[tuple[str, Callable[[np.ndarray], ScoreBatch]]] = (),
    smoothing: float = 0.0,
    em_steps: int = EM_STEPS,
    n_resamples: int = DEFAULT_RESAMPLES,
    random_state: int = 0,
) -> dict[str, Any]:
    """Product rankings of the test customers, on all products and on products new to them.

    Parameters
    ----------
    customer_ids, profiles : the profiled history customers (sorted ids, shape (n,)) and their
        profiles (n, k) as of ``split_at``
    actions : the target actions (what is predicted after ``T``)
    distribution : (product_ids (P',), weights (k, P')) -- the model's stored ``P(product | trait)``;
        estimated here from ``history`` and ``profiles`` (``trait_item_distribution``) when None
    vectors : the customers' Item2Vec vectors and the model's token vectors: the profile is then
        the mixture tilted by their similarity (``ranking.profile_product_scores``, weight
        ``similarity_weight``) and the mixture alone is reported as ``profile_traits``; without
        them the profile is the mixture
    extra_profiles : (name, profiles (n, k'), distribution (k', P)) further profile methods over
        ``product_index(history)`` (the k sweep, variants), reported next to the others
    extra_scorers : (name, build) further methods: ``build(rows)`` returns the scores over
        ``product_index(history)`` of the customers at ``rows`` of ``customer_ids``; with
        ``extra_profiles`` they get their own lifts over popularity (``lifts_vs_popularity``)

    Returns ``{"product_ranking": ..., "product_ranking_new": ...}``, each with ``methods``,
    ``methods_ci95``, ``profile_lift_vs_popularity`` and ``profile_lift_vs_popularity_ci95`` (and
    the same for ``profile_with_history``: the mixture plus ``HISTORY_WEIGHT`` times the
    customer's own product distribution), and ``profile_method`` (how the profile ranked). With
    a recency half-life in ``config``, also the
    ``recent_popularity`` method and ``profile_lift_vs_recent_popularity`` (with ``_ci95``).
    """
    index = product_index(history)
    usage_all = customer_usage(history, customer_ids, index, config, split_at)
    if distribution is None:
        weights = trait_item_distribution(profiles, usage_all, smoothing=smoothing, em_steps=em_steps)
    else:
        weights = stored_weights(distribution, profiles.shape[1], index)
    popularity = product_popularity(history, index, actions)
    transition = cooccurrence_matrix(history, config.sessions, index)
    tilted = vectors is not None and similarity_weight > 0
    item_vectors = vectors.product_vectors(index) if vectors is not None else None
    out: dict[str, Any] = {}
    for name, new_only in (("product_ranking", False), ("product_ranking_new", True)):
        targets = item_targets(history, future, index, actions, new_only=new_only)
        if len(targets.customer_ids) == 0:
            out[name] = {"skipped": "no customer with history has a target product after the split"}
            continue
        rows = np.searchsorted(customer_ids, targets.customer_ids)
        usage = row_normalize(usage_all[rows])
        mixture = mixture_scores(profiles[rows], weights)
        scorers: dict[str, ScoreBatch] = {
            "profile": profile_product_scores(
                profiles[rows],
                weights,
                None if vectors is None else vectors.customers[rows],
                item_vectors,
                similarity_weight,
            ),
            "popularity": popularity,
            "cooccurrence": sparse_scores(usage @ transition, popularity(0, 1)[0]),
            "own_history": sparse_scores(usage, popularity(0, 1)[0]),
            "profile_with_history": _with_history(mixture, usage),
        }
        half_life = config.aggregation.recency_half_life_days
        if half_life is not None:
            recent = recent_product_popularity(history, index, actions, half_life, split_at)
            scorers[RECENT_POPULARITY] = recent
        if tilted:
            scorers[PROFILE_TRAITS] = mixture
        for extra_name, extra, extra_weights in extra_profiles:
            scorers[extra_name] = mixture_scores(extra[rows], extra_weights)
        for extra_name, build in extra_scorers:
            scorers[extra_name] = build(rows)
        extras = [PROFILE_TRAITS] if tilted else []
        extras += [name for name, *_ in extra_profiles] + [name for name, _ in extra_scorers]
        out[name] = {
            "target_actions": list(actions),
            "n_customers": len(targets.customer_ids),
            "n_products": len(index),
            "n_unseen_products": targets.n_unseen_items,
            "mean_relevant_products": float(np.diff(targets.relevant.indptr).mean()),
            "profile_method": {
                "name": "traits_x_similarity" if tilted else "traits",
                "similarity_weight": similarity_weight if tilted else 0.0,
            },
            **_scored(scorers, targets, extras, n_resamples, random_state),
        }
    return out


def stored_weights(distribution: tuple[np.ndarray, np.ndarray], n_traits: int, index: pd.Index) -> np.ndarray:
    """The model's stored ``P(product | trait)`` (product ids (P',), weights (k, P')) laid out over
    ``index`` (k, P); products the model does not list get 0 (the ranking's mixture floor then
    orders them by similarity alone, ``ranking.blended_scores``). Served rankings lay the stored
    distribution out the same way (``traitflow.recommend``)."""
    stored_ids, stored = distribution
    weights = np.zeros((n_traits, len(index)))
    cols = index.get_indexer(pd.Index(np.asarray(stored_ids, dtype=object)))
    weights[:, cols[cols >= 0]] = stored[:, cols >= 0]
    return weights


def _scored(
    scorers: dict[str, ScoreBatch],
    targets: ItemTargets,
    extras: list[str],
    n_resamples: int,
    random_state: int,
) -> dict[str, Any]:
    """Every method's metrics with 95% intervals, and the profile's (and extras') lifts."""
    per_customer = {
        method: per_customer_metrics(score, targets.relevant, exclude=targets.exclude)
        for method, score in scorers.items()
    }
    summary = compare(per_customer, n_resamples=n_resamples, random_state=random_state)
    # The same seed and customers draw the same resamples: lifts on the same footing.
    with_history = compare(
        per_customer, focus="profile_with_history", n_resamples=n_resamples, random_state=random_state
    )
    scored = {
        "methods": summary.means,
        "methods_ci95": summary.intervals,
        "profile_lift_vs_popularity": summary.lift,
        "profile_lift_vs_popularity_ci95": summary.lift_intervals,
        "profile_with_history_lift_vs_popularity": with_history.lift,
        "profile_with_history_lift_vs_popularity_ci95": with_history.lift_intervals,
        "n_resamples": n_resamples,
    }
    if RECENT_POPULARITY in scorers:
        recent = compare(
            per_customer, baseline=RECENT_POPULARITY, n_resamples=n_resamples, random_state=random_state
        )
        scored["profile_lift_vs_recent_popularity"] = recent.lift
        scored["profile_lift_vs_recent_popularity_ci95"] = recent.lift_intervals
    if extras:
        scored.update(_extra_lifts(per_customer, extras, n_resamples, random_state))
    return scored


def _extra_lifts(
    per_customer: dict[str, dict[str, np.ndarray]], names: Sequence[str], n_resamples: int, random_state: int
) -> dict[str, dict[str, Any]]:
    """Lifts over popularity, with intervals, of the further methods ``names``."""
    lifts: dict[str, Any] = {}
    intervals: dict[str, Any] = {}
    for name in names:
        summary = compare(
            {name: per_customer[name], "popularity": per_customer["popularity"]},
            focus=name,
            n_resamples=n_resamples,
            random_state=random_state,
        )
        lifts[name], intervals[name] = summary.lift, summary.lift_intervals
    return {"lifts_vs_popularity": lifts, "lifts_vs_popularity_ci95": intervals}


def _with_history(mixture: ScoreBatch, usage: sp.csr_matrix) -> ScoreBatch:
    """The mixture scores plus ``HISTORY_WEIGHT`` times each customer's own (row-normalized) usage."""
    return lambda start, stop: mixture(start, stop) + HISTORY_WEIGHT * usage[start:stop].toarray()


def profile_metrics_per_set(
    history: pd.DataFrame,
    future: pd.DataFrame,
    *,
    customer_ids: np.ndarray,
    profile_sets: Sequence[np.ndarray],
    config: PipelineConfig,
    split_at: datetime,
    actions: Sequence[str],
    vectors: ProfileVectors | None = None,
    similarity_weight: float = SIMILARITY_WEIGHT,
) -> list[dict[str, float]]:
    """Mean product-ranking metrics (all products) of the profile ranking for each profile matrix
    in ``profile_sets`` (each (n, k_i) over ``customer_ids``), every one with its own trait
    product distribution estimated from ``history``: the k sweep re-ranks with each k's traits
    (tilted by the same customer vectors as ``product_ranking`` when ``vectors`` are given)."""
    index = product_index(history)
    usage_all = customer_usage(history, customer_ids, index, config, split_at)
    targets = item_targets(history, future, index, actions)
    if len(targets.customer_ids) == 0:
        return [{} for _ in profile_sets]
    rows = np.searchsorted(customer_ids, targets.customer_ids)
    item_vectors = None if vectors is None else vectors.product_vectors(index)
    customer_vectors = None if vectors is None else vectors.customers[rows]
    out = []
    for profiles in profile_sets:
        distribution = trait_item_distribution(profiles, usage_all)
        scores = profile_product_scores(
            profiles[rows], distribution, customer_vectors, item_vectors, similarity_weight
        )
        metrics = per_customer_metrics(scores, targets.relevant)
        out.append({name: float(values.mean()) for name, values in metrics.items()})
    return out
