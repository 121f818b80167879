"""Category ranking: the profile mixture ``sum_j profile_j * P(c | trait j)`` against the
popularity and co-occurrence baselines, scored on the categories each test customer bought after
the split."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from traitflow.bootstrap import DEFAULT_RESAMPLES, compare
from traitflow.evaluate.baselines import _category_matrix, category_popularity, customer_cooccurrence
from traitflow.evaluate.metrics import EPS, NDCG_K, RANK_KS, ranking_metrics
from traitflow.evaluate.profiles import _profile_all, _Profiled, _project_profiles
from traitflow.evaluate.split import MIN_CUSTOMERS, TARGET_ACTIONS, Split, choose_target
from traitflow.model import TokenTable, TraitflowModel, TraitModel
from traitflow.ranking import per_customer_metrics


def category_shares(traits: TraitModel, tokens: TokenTable) -> tuple[np.ndarray, np.ndarray]:
    """How each trait spreads over categories: ``P(c | trait j)``.

    Every token is projected on the traits as if it were a customer; a category's mass on trait
    ``j`` is the count-weighted sum of its tokens' loadings; each trait's column is normalized.

    Returns
    -------
    categories : ndarray of object (str), shape (C,) -- sorted
    shares : ndarray of float64, shape (C, k) -- non-negative, each column sums to 1 (or is 0)
    """
    from traitflow.traits import project

    has_category = tokens.categories != ""
    codes, categories = pd.factorize(tokens.categories[has_category], sort=True)
    if len(categories) == 0:
        return np.zeros(0, dtype=object), np.zeros((0, traits.n_traits))
    loadings = project(traits, tokens.vectors[has_category])  # (n_tokens, k)
    weights = tokens.counts[has_category].astype(np.float64)
    membership = sp.csr_matrix((weights, (codes, np.arange(len(codes)))), shape=(len(categories), len(codes)))
    mass = np.asarray(membership @ loadings)  # (C, k)
    shares = mass / np.maximum(mass.sum(axis=0, keepdims=True), EPS)
    return np.asarray(categories, dtype=object), shares


def _aligned_shares(traits: TraitModel, tokens: TokenTable, index: pd.Index) -> np.ndarray:
    """``category_shares`` over the categories of ``index``, shape (C, k): the tokens know only
    categories seen in training, the others get no share."""
    categories, shares = category_shares(traits, tokens)
    align = pd.Index(categories).get_indexer(index)
    aligned = np.zeros((len(index), traits.n_traits))
    aligned[align >= 0] = shares[align[align >= 0]]
    return aligned


@dataclass(frozen=True)
class _Targets:
    customer_ids: np.ndarray  # (n,) sorted test customers (history before T, target after)
    relevant: sp.csr_matrix  # (n, C + n_unseen) bought categories after T
    target: str
    n_future_customers: int  # with a target event after T, with or without history
    n_unseen_categories: int


def _targets(split: Split, index: pd.Index, min_customers: int, target: str | None = None) -> _Targets:
    """The test customers and the categories of their target actions after T (see ``choose_target``)."""
    target = choose_target(split.history, split.future, target, min_customers)
    history_customers = pd.unique(split.history["customer_id"].to_numpy(dtype=object))
    future = split.future[split.future["category"].notna()]
    wanted = future[future["action"].isin(TARGET_ACTIONS[target])]
    customers = wanted["customer_id"].to_numpy(dtype=object)
    with_history = np.isin(customers, history_customers)
    test_ids = np.unique(customers[with_history]).astype(object)
    wanted = wanted[with_history]
    rows = np.searchsorted(test_ids, wanted["customer_id"].to_numpy(dtype=object))
    categories = wanted["category"].to_numpy(dtype=object)
    # Categories unseen before T get columns after the known ones: no ranking can reach them.
    unseen = pd.Index(pd.unique(categories[index.get_indexer(pd.Index(categories)) < 0]))
    extended = index.append(unseen)
    relevant = _category_matrix(rows, categories, extended, np.ones(len(rows)), len(test_ids))
    relevant.data[:] = 1.0
    return _Targets(
        customer_ids=test_ids,
        relevant=relevant,
        target=target,
        n_future_customers=int(
            future[future["action"].isin(TARGET_ACTIONS[target])]["customer_id"].nunique()
        ),
        n_unseen_categories=len(unseen),
    )


def _category_index(history: pd.DataFrame) -> pd.Index:
    """The categories known before the split, sorted: the columns every ranking ranks."""
    return pd.Index(np.sort(pd.unique(history["category"].dropna().to_numpy(dtype=object))))


def _profile_scores(profiles: np.ndarray, shares: np.ndarray) -> Callable[[int, int], np.ndarray]:
    return lambda start, stop: profiles[start:stop] @ shares.T


def category_ranking(
    model: TraitflowModel,
    history: pd.DataFrame,
    future: pd.DataFrame,
    *,
    split_at: datetime,
    profiled: _Profiled | None = None,
    min_customers: int = MIN_CUSTOMERS,
    traits: Sequence[TraitModel] = (),
    target: str | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    random_state: int = 0,
) -> dict[str, Any]:
    """Profile vs popularity vs co-occurrence category rankings of the test customers.

    ``traits`` (optional) are further trait models over the same tokens (the k sweep); their
    profile rankings are returned under ``"by_traits"`` in the same order.
    """
    if history["category"].notna().sum() == 0:
        return {"skipped": "the events carry no categories; map a category column to rank categories"}
    profiled = profiled or _profile_all(model, history, split_at)
    index = _category_index(history)
    targets = _targets(Split(split_at, history, future, ""), index, min_customers, target)
    rows = np.searchsorted(profiled.customer_ids, targets.customer_ids)  # test customers' profiles
    actions = TARGET_ACTIONS[targets.target]
    popularity = category_popularity(history, index, actions)
    cooccurrence = customer_cooccurrence(history, targets.customer_ids, index, model.config, split_at)
    shares = _aligned_shares(model.traits, model.tokens, index)
    scorers = {
        "profile": _profile_scores(profiled.profiles[rows], shares),
        "popularity": lambda start, stop: np.tile(popularity, (stop - start, 1)),
        "cooccurrence": lambda start, stop: cooccurrence[start:stop].toarray(),
    }
    summary = compare(
        {
            method: per_customer_metrics(score, targets.relevant, ks=RANK_KS, recall_k=None, ndcg_k=NDCG_K)
            for method, score in scorers.items()
        },
        n_resamples=n_resamples,
        random_state=random_state,
    )
    out: dict[str, Any] = {
        "target": targets.target,
        "target_actions": list(actions),
        "n_customers": len(targets.customer_ids),
        "n_target_customers_after_split": targets.n_future_customers,
        "n_categories": len(index),
        "n_unseen_categories": targets.n_unseen_categories,
        "mean_relevant_categories": float(np.diff(targets.relevant.indptr).mean()),
        "methods": summary.means,
        "methods_ci95": summary.intervals,
        "profile_lift_vs_popularity": summary.lift,
        "profile_lift_vs_popularity_ci95": summary.lift_intervals,
        "n_resamples": n_resamples,
    }
    if traits:
        out["by_traits"] = [
            _ranking_under(other, model.tokens, profiled, rows, index, targets.relevant) for other in traits
        ]
    return out


def _ranking_under(
    traits: TraitModel,
    tokens: TokenTable,
    profiled: _Profiled,
    rows: np.ndarray,
    index: pd.Index,
    relevant: sp.csr_matrix,
) -> dict[str, float]:
    """Metrics of the profile ranking under other ``traits`` over the same ``tokens``: profiles
    re-projected (``rows`` of ``profiled`` are the test customers) and shares recomputed."""
    profiles = _project_profiles(traits, profiled)[rows]
    return ranking_metrics(_profile_scores(profiles, _aligned_shares(traits, tokens, index)), relevant)
