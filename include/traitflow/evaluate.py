"""Offline evaluation: do trait profiles predict what customers do next, and do they stay put?

A time-split hold-out. The model is trained (``pipeline.train``) on events before the split
instant ``T``; customers with history before ``T`` who buy after it are the test set. Each
method ranks the categories known before ``T`` for each test customer, and the ranking is scored
against the categories the customer actually bought after ``T``:

* profile: ``score_c = sum_j profile_j * share_j(c)``, where ``share_j(c)`` is trait ``j``'s
  share of category ``c`` -- every token is projected on the traits like a customer, and
  ``share_j(c)`` is the count-weighted loading mass of ``c``'s tokens on ``j`` divided by ``j``'s
  total (``category_shares``). Read as a mixture: ``P(c | customer) = sum_j P(j | customer) P(c | j)``;
* popularity: global category popularity before ``T`` (target-action events, ties broken by all
  events) -- the same ranking for everyone;
* co-occurrence: ``score_c' = sum_c u_c P(c' | c)``, ``u`` the customer's action-weighted
  category distribution before ``T`` and ``P(c' | c)`` the share of pre-``T`` sessions holding
  ``c`` that also hold ``c'`` (``P(c | c) = 1``: own categories count fully).

Metrics: hit rate@K (share of customers with at least one bought category in the top K) and
NDCG@10 (binary relevance). Categories first seen after ``T`` cannot be ranked by any method and
count as misses for all. The target is purchases; when fewer than ``min_customers`` customers
purchase after ``T`` (sparse exports), carts and purchases together are the target, and the
report says so. ``target`` ("purchase", "cart", "any") picks it explicitly.

Products are ranked the same way (``traitflow.product_eval``; no categories needed): the
profile mixture through the model's stored ``P(product | trait)`` (``traitflow.trait_products``)
against popularity, product co-occurrence in sessions and the customer's own history (a ceiling
for repeat buying), on all products and on products new to the customer, with hit@5, hit@10,
recall@50 and NDCG@10. Every ranking metric and the profile's lift over popularity come with a
bootstrap 95% interval over customers (``traitflow.bootstrap``).

Also reported: Item2Vec next-item hit rate@10 on post-``T`` sessions (``quality``) next to a
"10 most frequent tokens" baseline; silhouette and ARI of profiles on planted segments (when a
segments file is given); category purity of each trait's top products; profile stability for
customers without new events across a retrain (another Word2Vec seed, a slightly longer window,
trait ids matched through ``pipeline.fit_model(previous=...)``); and, for the choice of k,
reconstruction error, purity, silhouette and hit@10 over a range of k (each k's traits refitted
and its rankings re-made with its own profiles).

``evaluate`` runs everything from raw events (the CLI's ``traitflow evaluate``);
``evaluate_model`` scores an already trained model on a history/future pair (what a quality
gate would call). Every per-customer computation is a sparse or dense matrix product, batched
over customers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from traitflow.aggregate import event_weights
from traitflow.bootstrap import DEFAULT_RESAMPLES, compare
from traitflow.config import PipelineConfig
from traitflow.event_schema import ACTIONS
from traitflow.model import TokenTable, TraitflowModel, TraitModel
from traitflow.product_eval import mixture_metrics, product_ranking
from traitflow.profile_batch import COLD_START_NO_HISTORY, COLD_START_NONE
from traitflow.quality import next_item_pairs, profile_coherence
from traitflow.ranking import cooccurrence_matrix as ranking_cooccurrence
from traitflow.ranking import item_matrix, per_customer_metrics
from traitflow.sessions import sessionize

log = logging.getLogger(__name__)

MIN_CUSTOMERS = 20
TARGET_ACTIONS: dict[str, tuple[str, ...]] = {
    "purchase": ("purchase",),
    "cart_or_purchase": ("cart", "purchase"),
    "cart": ("cart",),
    "any": ACTIONS,
}
# Without an explicit target: purchases, or carts and purchases when too few customers purchase.
AUTO_TARGETS: tuple[str, ...] = ("purchase", "cart_or_purchase")
RANK_KS: tuple[int, ...] = (5, 10)
NDCG_K = 10
DEFAULT_K_RANGE: tuple[int, ...] = (4, 8, 16, 24)
PURITY_TOP_N = 10
STABILITY_EXTENSION = 0.25  # the retrain's window ends this share of the future span after T
_BATCH = 4096
_EPS = 1e-12


class EvaluationError(ValueError):
    """The events cannot support the evaluation (empty split, too few test customers, ...)."""


# ------------------------------------------------------------------------------------- split


@dataclass(frozen=True)
class Split:
    """Events before ``at`` (history: training and profiling) and at or after it (future)."""

    at: datetime
    history: pd.DataFrame
    future: pd.DataFrame
    method: str  # "date" or "fraction=<f>"


def split_events(events: pd.DataFrame, *, at: datetime | None = None, fraction: float = 0.8) -> Split:
    """Split ``events`` in time at ``at``, or where ``fraction`` of the events have happened.

    Raises ``EvaluationError`` when either side is empty, saying how to move the split.
    """
    if events.empty:
        raise EvaluationError("no events to evaluate on")
    times = events["event_time"]
    first, last = times.min(), times.max()
    if at is None:
        if not 0.0 < fraction < 1.0:
            raise EvaluationError(f"split fraction must be in (0, 1), got {fraction}")
        ordered = np.sort(times.to_numpy(dtype="datetime64[us]"))
        split_at = pd.Timestamp(ordered[min(int(len(ordered) * fraction), len(ordered) - 1)], tz="UTC")
        method = f"fraction={fraction:g}"
    else:
        split_at = pd.Timestamp(at)
        split_at = split_at.tz_localize("UTC") if split_at.tzinfo is None else split_at.tz_convert("UTC")
        method = "date"
    history = events[times < split_at]
    future = events[times >= split_at]
    span = f"the events span {first.isoformat()} .. {last.isoformat()}"
    if history.empty:
        raise EvaluationError(
            f"no events before the split {split_at.isoformat()} ({span}): "
            "choose a later --split-date or a larger --split-fraction"
        )
    if future.empty:
        raise EvaluationError(
            f"no events at or after the split {split_at.isoformat()} ({span}): "
            "choose an earlier --split-date or a smaller --split-fraction"
        )
    return Split(at=split_at.to_pydatetime(), history=history, future=future, method=method)


# ---------------------------------------------------------------------------- category ranking


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
    shares = mass / np.maximum(mass.sum(axis=0, keepdims=True), _EPS)
    return np.asarray(categories, dtype=object), shares


# Categories are items like products: the same sparse builder and session co-occurrence.
_category_matrix = item_matrix


def cooccurrence_matrix(history: pd.DataFrame, config: PipelineConfig, index: pd.Index) -> sp.csr_matrix:
    """``P(c' | c)``: share of sessions holding category ``c`` that also hold ``c'``, shape (C, C).

    Sessions come from ``sessions.sessionize`` with the model's session parameters.
    """
    return ranking_cooccurrence(history, config.sessions, index, column="category")


def ranking_metrics(
    score_batch: Callable[[int, int], np.ndarray],
    relevant: sp.csr_matrix,
    *,
    ks: Sequence[int] = RANK_KS,
    ndcg_k: int = NDCG_K,
    batch_size: int | None = _BATCH,
) -> dict[str, float]:
    """Hit rate@K and NDCG@``ndcg_k`` of per-customer rankings: the means of
    ``ranking.per_customer_metrics`` (see there for the arguments)."""
    try:
        per_customer = per_customer_metrics(
            score_batch, relevant, ks=ks, recall_k=None, ndcg_k=ndcg_k, batch_size=batch_size
        )
    except ValueError as error:
        if relevant.shape[0] == 0:
            raise EvaluationError("no customers to rank categories for") from error
        raise
    return {name: float(values.mean()) for name, values in per_customer.items()}


@dataclass
class _Targets:
    customer_ids: np.ndarray  # (n,) sorted test customers (history before T, target after)
    relevant: sp.csr_matrix  # (n, C + n_unseen) bought categories after T
    target: str
    n_future_customers: int  # with a target event after T, with or without history
    n_unseen_categories: int


def choose_target(
    history: pd.DataFrame,
    future: pd.DataFrame,
    target: str | None,
    min_customers: int,
    *,
    column: str = "category",
) -> str:
    """The target (a key of ``TARGET_ACTIONS``): ``target`` if given, else the first of
    ``AUTO_TARGETS`` with at least ``min_customers`` customers who have events before the split
    and a target action (on a non-missing ``column``) after it.

    Raises ``EvaluationError`` when no candidate has enough customers, saying how to fix it.
    """
    if target is not None and target not in TARGET_ACTIONS:
        raise EvaluationError(f"unknown target {target!r}; choose one of {sorted(TARGET_ACTIONS)}")
    history_customers = pd.unique(history["customer_id"].to_numpy(dtype=object))
    future = future[future[column].notna()]
    counts: dict[str, int] = {}
    for candidate in (target,) if target else AUTO_TARGETS:
        customers = future.loc[future["action"].isin(TARGET_ACTIONS[candidate]), "customer_id"]
        customers = customers.to_numpy(dtype=object)
        counts[candidate] = len(np.unique(customers[np.isin(customers, history_customers)]))
        if counts[candidate] >= min_customers:
            return candidate
    found = "; ".join(
        f"{n} customers {'/'.join(TARGET_ACTIONS[name])} after the split" for name, n in counts.items()
    )
    raise EvaluationError(
        f"too few customers to evaluate (with events before the split): {found} "
        f"(need >= {min_customers}"
        f"{', in categorized events' if column == 'category' else ''}); use an earlier --split-date or "
        "a smaller --split-fraction, more events, another --target or a lower --min-customers"
    )


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
    unseen = pd.Index(pd.unique(categories[index.get_indexer(categories) < 0]))
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


# ------------------------------------------------------------------------------- other metrics


def trait_purity(
    traits: TraitModel, tokens: TokenTable, *, top_n: int = PURITY_TOP_N
) -> list[dict[str, Any]]:
    """Per trait: the share of its ``top_n`` products (by log-popularity-weighted loading, as in
    ``traits.label_traits``) that belong to their most common category."""
    from traitflow.traits import project

    has_category = tokens.categories != ""
    loadings = project(traits, tokens.vectors[has_category])
    scores = loadings * np.log1p(tokens.counts[has_category].astype(np.float64))[:, None]
    products = tokens.product_ids[has_category]
    categories = tokens.categories[has_category]
    out = []
    for j in range(traits.n_traits):  # k iterations, each vectorized over tokens
        order = np.argsort(-scores[:, j], kind="stable")
        _, first = np.unique(products[order], return_index=True)
        top = order[np.sort(first)[:top_n]]  # best-scoring token of each of the top products
        values, counts = np.unique(categories[top], return_counts=True)
        out.append(
            {
                "trait_id": int(traits.trait_ids[j]),
                "label": traits.labels[j],
                "purity": float(counts.max() / len(top)) if len(top) else float("nan"),
                "top_category": str(values[counts.argmax()]) if len(top) else "",
            }
        )
    return out


def _mean_purity(purity: list[dict[str, Any]]) -> float:
    values = np.array([t["purity"] for t in purity], dtype=np.float64)
    return float(values[~np.isnan(values)].mean()) if (~np.isnan(values)).any() else float("nan")


def next_item_report(
    tokens: TokenTable, future: pd.DataFrame, config: PipelineConfig, *, top_n: int = 10
) -> dict[str, Any]:
    """Item2Vec next-item hit rate@``top_n`` on post-T sessions, with a popularity baseline
    (the ``top_n`` most frequent training tokens, whatever the current token)."""
    from traitflow.quality import next_item_hits

    sessionized = sessionize(future, config.sessions)
    sessions = sessionized["session"].to_numpy()
    session_tokens = sessionized["token"].to_numpy(dtype=object)
    try:
        current, following = next_item_pairs(sessions, session_tokens)
    except ValueError as error:
        return {"skipped": f"post-split sessions: {error}"}
    hits = next_item_hits(tokens, current, following, top_n=top_n)
    popular = tokens.tokens[np.argsort(-tokens.counts, kind="stable")[:top_n]]
    known = (tokens.index.get_indexer(current) >= 0) & (tokens.index.get_indexer(following) >= 0)
    return {
        f"hit_rate@{top_n}": float(hits.mean()),
        f"popular_tokens_hit_rate@{top_n}": float(np.isin(following, popular).mean()),
        "n_pairs": len(current),
        "coverage": float(known.mean()),
    }


def segment_report(customer_ids: np.ndarray, profiles: np.ndarray, segments: pd.DataFrame) -> dict[str, Any]:
    """Silhouette (cosine) of profiles grouped by planted segment, and ARI of the dominant trait.

    ``segments`` has columns ``customer_id`` and ``segment``; customers missing from it are left out.
    """
    from sklearn.metrics import adjusted_rand_score

    missing = {"customer_id", "segment"} - set(segments.columns)
    if missing:
        raise EvaluationError(
            f"segments file needs columns customer_id and segment; missing {sorted(missing)}"
        )
    lookup = pd.Series(segments["segment"].to_numpy(), index=segments["customer_id"].astype(str).to_numpy())
    rows = lookup.index.get_indexer(np.asarray(customer_ids, dtype=object))
    known = rows >= 0
    if known.sum() < 2:
        raise EvaluationError(
            f"only {int(known.sum())} profiled customers appear in the segments file: "
            "is it the segments file of these events?"
        )
    labels = lookup.to_numpy()[rows[known]]
    return {
        "silhouette": profile_coherence(profiles[known], labels),
        "ari_dominant_trait": float(adjusted_rand_score(labels, profiles[known].argmax(axis=1))),
        "n_customers": int(known.sum()),
        "n_segments": len(np.unique(labels)),
    }


def profile_change(
    before: np.ndarray, before_ids: np.ndarray, after: np.ndarray, after_ids: np.ndarray
) -> dict[str, float]:
    """Change between two profile matrices of the same customers, columns matched by trait id.

    A trait id present on one side only counts as 0 on the other (its mass is all change).

    Parameters
    ----------
    before : ndarray, shape (n, k1), columns labelled ``before_ids`` (k1,)
    after : ndarray, shape (n, k2), columns labelled ``after_ids`` (k2,)

    Returns mean / p90 L1 distance (0..2), mean cosine similarity, and the share of customers
    whose dominant trait id is unchanged.
    """
    ids = np.union1d(before_ids, after_ids)
    a = np.zeros((len(before), len(ids)))
    b = np.zeros((len(after), len(ids)))
    a[:, np.searchsorted(ids, before_ids)] = before
    b[:, np.searchsorted(ids, after_ids)] = after
    l1 = np.abs(a - b).sum(axis=1)
    cosine = (a * b).sum(axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), _EPS)
    return {
        "mean_l1": float(l1.mean()),
        "p90_l1": float(np.quantile(l1, 0.9)),
        "mean_cosine": float(cosine.mean()),
        "same_dominant_trait": float((ids[a.argmax(axis=1)] == ids[b.argmax(axis=1)]).mean()),
    }


# ------------------------------------------------------------------------------------- driver


@dataclass
class _Profiled:
    """Profiles of every history customer as of T under one model (rows sorted by id)."""

    customer_ids: np.ndarray
    embeddings: np.ndarray
    profiles: np.ndarray
    cold_start: np.ndarray


def _profile_all(model: TraitflowModel, history: pd.DataFrame, as_of: datetime) -> _Profiled:
    from traitflow.pipeline import profile_customers

    batch = profile_customers(history, model, as_of)
    return _Profiled(batch.customer_ids, batch.embeddings, batch.profiles, batch.cold_start)


def _project_profiles(traits: TraitModel, profiled: _Profiled) -> np.ndarray:
    """Profiles of ``profiled``'s customers under other traits (no-history rows: population)."""
    from traitflow.traits import project

    has_history = profiled.cold_start != COLD_START_NO_HISTORY
    out = np.tile(traits.population_profile, (len(profiled.customer_ids), 1))
    out[has_history] = project(traits, profiled.embeddings[has_history])
    return out


def evaluate_model(
    model: TraitflowModel,
    history: pd.DataFrame,
    future: pd.DataFrame,
    *,
    split_at: datetime,
    segments: pd.DataFrame | None = None,
    min_customers: int = MIN_CUSTOMERS,
    profiled: _Profiled | None = None,
    target: str | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    random_state: int = 0,
) -> dict[str, Any]:
    """Score a trained model on a history/future pair (see the module docstring).

    ``history`` are the events before ``split_at`` (the model must not have seen later ones),
    ``future`` those at or after it. ``target`` (a key of ``TARGET_ACTIONS``; default: purchases,
    carts too when too few customers purchase) is what is predicted. Returns a JSON-able dict
    with sections ``category_ranking``, ``product_ranking``, ``product_ranking_new``,
    ``next_item``, ``segments`` (None without ``segments``) and ``purity``; every ranking metric
    and lift comes with a bootstrap 95% interval over customers (``n_resamples``, ``random_state``).
    """
    profiled = profiled or _profile_all(model, history, split_at)
    options: dict[str, Any] = {
        "split_at": split_at,
        "profiled": profiled,
        "min_customers": min_customers,
        "target": target,
        "n_resamples": n_resamples,
        "random_state": random_state,
    }
    report: dict[str, Any] = {
        "split": {"at": pd.Timestamp(split_at).isoformat()},
        "category_ranking": category_ranking(model, history, future, **options),
        **product_sections(model, history, future, **options),
        "next_item": next_item_report(model.tokens, future, model.config),
        "segments": None,
        "purity": None,
    }
    if (model.tokens.categories != "").any():
        purity = trait_purity(model.traits, model.tokens)
        report["purity"] = {"mean": _mean_purity(purity), "top_n": PURITY_TOP_N, "traits": purity}
    else:
        report["purity"] = {"skipped": "the events carry no categories"}
    if segments is not None:
        report["segments"] = segment_report(profiled.customer_ids, profiled.profiles, segments)
    return report


def product_sections(
    model: TraitflowModel,
    history: pd.DataFrame,
    future: pd.DataFrame,
    *,
    split_at: datetime,
    profiled: _Profiled,
    min_customers: int = MIN_CUSTOMERS,
    target: str | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    random_state: int = 0,
) -> dict[str, Any]:
    """``product_ranking`` and ``product_ranking_new`` (``traitflow.product_eval``): the profile
    ranks products through the model's stored trait product distributions (estimated from
    ``history`` when the model has none)."""
    chosen = choose_target(history, future, target, min_customers, column="product_id")
    products = model.traits.products
    sections = product_ranking(
        history,
        future,
        customer_ids=profiled.customer_ids,
        profiles=profiled.profiles,
        config=model.config,
        split_at=split_at,
        actions=TARGET_ACTIONS[chosen],
        distribution=None if products is None else (products.product_ids, products.weights),
        n_resamples=n_resamples,
        random_state=random_state,
    )
    for section in sections.values():
        section["target"] = chosen
    return sections


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

    # Profiles of the test customers, rows in targets.customer_ids order.
    rows = np.searchsorted(profiled.customer_ids, targets.customer_ids)
    profiles = profiled.profiles[rows]

    # Shares over the history's categories (tokens know only categories seen in training).
    categories, shares = category_shares(model.traits, model.tokens)
    align = pd.Index(categories).get_indexer(index)
    aligned_shares = np.zeros((len(index), model.traits.n_traits))
    aligned_shares[align >= 0] = shares[align[align >= 0]]

    # Popularity: target-action events per category, ties broken by all events.
    actions = TARGET_ACTIONS[targets.target]
    all_counts = _category_matrix(
        np.zeros(len(history), dtype=np.int64),
        history["category"].to_numpy(dtype=object),
        index,
        np.ones(len(history)),
        1,
    ).toarray()[0]
    is_target = history["action"].isin(actions).to_numpy()
    target_counts = _category_matrix(
        np.zeros(int(is_target.sum()), dtype=np.int64),
        history["category"].to_numpy(dtype=object)[is_target],
        index,
        np.ones(int(is_target.sum())),
        1,
    ).toarray()[0]
    popularity = target_counts + all_counts / (all_counts.sum() + 1.0)

    # Co-occurrence: the customer's weighted category distribution times P(c' | c).
    test_history = history[history["customer_id"].isin(targets.customer_ids)]
    weights = event_weights(test_history, model.config.aggregation, split_at)
    usage = _category_matrix(
        np.searchsorted(targets.customer_ids, test_history["customer_id"].to_numpy(dtype=object)),
        test_history["category"].to_numpy(dtype=object),
        index,
        weights,
        len(targets.customer_ids),
    )
    usage = sp.diags(1.0 / np.maximum(np.asarray(usage.sum(axis=1)).ravel(), _EPS)) @ usage
    transition = cooccurrence_matrix(history, model.config, index)
    cooccurrence = (usage @ transition).tocsr()

    scorers = {
        "profile": _profile_scores(profiles, aligned_shares),
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
    methods = summary.means
    by_traits = []
    for other in traits:
        other_categories, other_shares = category_shares(other, model.tokens)
        other_align = pd.Index(other_categories).get_indexer(index)
        padded_shares = np.zeros((len(index), other.n_traits))
        padded_shares[other_align >= 0] = other_shares[other_align[other_align >= 0]]
        other_profiles = _project_profiles(other, profiled)[rows]
        by_traits.append(ranking_metrics(_profile_scores(other_profiles, padded_shares), targets.relevant))
    out: dict[str, Any] = {
        "target": targets.target,
        "target_actions": list(actions),
        "n_customers": len(targets.customer_ids),
        "n_target_customers_after_split": targets.n_future_customers,
        "n_categories": len(index),
        "n_unseen_categories": targets.n_unseen_categories,
        "mean_relevant_categories": float(np.diff(targets.relevant.indptr).mean()),
        "methods": methods,
        "methods_ci95": summary.intervals,
        "profile_lift_vs_popularity": summary.lift,
        "profile_lift_vs_popularity_ci95": summary.lift_intervals,
        "n_resamples": n_resamples,
    }
    if traits:
        out["by_traits"] = by_traits
    return out


def stability_report(
    model: TraitflowModel,
    events: pd.DataFrame,
    split_at: datetime,
    work_dir: Path,
    *,
    extension: float = STABILITY_EXTENSION,
    profiled: _Profiled | None = None,
) -> dict[str, Any]:
    """Retrain on a slightly longer window with another Word2Vec seed and compare the profiles of
    customers without new events, trait by trait id.

    The window ends ``extension`` of the post-split span after ``split_at``; the new tokens are
    aligned to ``model``'s (``alignment.align_tokens``) and the traits refitted with
    ``fit_model(previous=model)``, as the weekly retrain does.
    """
    from traitflow.alignment import align_tokens
    from traitflow.pipeline import build_corpus, events_before, fit_model, profile_customers, train_tokens

    times = events["event_time"]
    start = pd.Timestamp(split_at)
    end = start + (times.max() - start) * extension
    if not (times >= start).any() or end <= start:
        return {"skipped": "no events after the split to extend the window with"}
    later = events_before(events, end.to_pydatetime())
    new_events = later[later["event_time"] >= start]
    config = dataclasses.replace(
        model.config, item2vec=dataclasses.replace(model.config.item2vec, seed=model.config.item2vec.seed + 1)
    )
    corpus = build_corpus(later, config.sessions, work_dir / "corpus")
    tokens = align_tokens(train_tokens(corpus, config), model.tokens)
    retrained = fit_model(later, tokens, config, end.to_pydatetime(), previous=model)

    profiled = profiled or _profile_all(model, events_before(events, split_at), split_at)
    quiet = (profiled.cold_start == COLD_START_NONE) & ~np.isin(
        profiled.customer_ids, pd.unique(new_events["customer_id"].to_numpy(dtype=object))
    )
    if quiet.sum() == 0:
        return {"skipped": "every customer has new events in the extended window"}
    quiet_ids = profiled.customer_ids[quiet]
    batch = profile_customers(later[later["customer_id"].isin(quiet_ids)], retrained, end.to_pydatetime())
    after = batch.profiles[np.searchsorted(batch.customer_ids, quiet_ids)]
    match = retrained.trait_match or {}
    similarities = [pair["similarity"] for pair in match.get("matched", [])]
    return {
        "retrained_through": end.isoformat(),
        "n_new_events": len(new_events),
        "n_customers_without_new_events": int(quiet.sum()),
        "seed": config.item2vec.seed,
        "n_traits": model.traits.n_traits,
        "n_matched": int(match.get("n_matched", 0)),
        "n_matched_at_0.9": int(sum(s >= 0.9 for s in similarities)),
        "min_similarity": float(min(similarities)) if similarities else float("nan"),
        "refit": retrained.metrics.get("traits", {}),
        **profile_change(profiled.profiles[quiet], model.traits.trait_ids, after, retrained.traits.trait_ids),
    }


def k_selection(
    model: TraitflowModel,
    history: pd.DataFrame,
    future: pd.DataFrame,
    split_at: datetime,
    k_range: Sequence[int],
    *,
    profiled: _Profiled,
    segments: pd.DataFrame | None = None,
    min_customers: int = MIN_CUSTOMERS,
    target: str | None = None,
) -> list[dict[str, Any]]:
    """Refit the traits with each k on the model's own training vectors (same tokens) and report
    reconstruction error, mean purity, silhouette (with segments), and the hit@10 and NDCG@10 of
    rankings re-made with each k's profiles: products (``product_hit@10``, each k with its own
    trait product distributions) and, with categories, categories (``hit@10``)."""
    from traitflow.traits import fit_traits, label_traits

    training = profiled.embeddings[profiled.cold_start == COLD_START_NONE]
    rows: list[dict[str, Any]] = []
    fitted: list[TraitModel] = []
    fitted_profiles: list[np.ndarray] = []
    for k in k_range:
        if k > len(training) or k > 2 * model.tokens.vector_size:
            rows.append({"k": int(k), "skipped": f"k={k} needs more customers or a larger vector_size"})
            continue
        fit = fit_traits(training, dataclasses.replace(model.config.traits, n_traits=int(k)))
        label_traits(fit.traits, model.tokens)
        row: dict[str, Any] = {"k": int(k), "reconstruction_error": fit.reconstruction_error}
        if (model.tokens.categories != "").any():
            row["purity"] = _mean_purity(trait_purity(fit.traits, model.tokens))
        profiles = _project_profiles(fit.traits, profiled)
        if segments is not None:
            row["silhouette"] = segment_report(profiled.customer_ids, profiles, segments)["silhouette"]
        rows.append(row)
        fitted.append(fit.traits)
        fitted_profiles.append(profiles)
    if not fitted:
        return rows
    chosen = choose_target(history, future, target, min_customers, column="product_id")
    product_scored = iter(
        mixture_metrics(
            history,
            future,
            customer_ids=profiled.customer_ids,
            profile_sets=fitted_profiles,
            config=model.config,
            split_at=split_at,
            actions=TARGET_ACTIONS[chosen],
        )
    )
    ranking = category_ranking(
        model,
        history,
        future,
        split_at=split_at,
        profiled=profiled,
        min_customers=min_customers,
        traits=fitted,
        target=target,
        n_resamples=1,  # only the per-k point estimates are read
    )
    category_scored = iter(ranking.get("by_traits", []))
    for row in rows:
        if "skipped" in row:
            continue
        products = next(product_scored)
        row[f"product_hit@{NDCG_K}"] = products.get(f"hit@{NDCG_K}")
        row[f"product_ndcg@{NDCG_K}"] = products.get(f"ndcg@{NDCG_K}")
        if "by_traits" in ranking:
            row[f"hit@{NDCG_K}"] = next(category_scored)[f"hit@{NDCG_K}"]
    return rows


def evaluate(
    events: pd.DataFrame,
    config: PipelineConfig | None = None,
    *,
    split_at: datetime | None = None,
    split_fraction: float = 0.8,
    segments: pd.DataFrame | None = None,
    k_range: Sequence[int] | None = DEFAULT_K_RANGE,
    stability: bool = True,
    min_customers: int = MIN_CUSTOMERS,
    work_dir: Path | None = None,
    target: str | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    random_state: int = 0,
) -> dict[str, Any]:
    """Time-split hold-out evaluation of the full pipeline on canonical ``events``.

    Trains on events before the split (``split_at``, or where ``split_fraction`` of the events
    have happened), then runs ``evaluate_model``, ``stability_report`` (unless ``stability`` is
    False) and ``k_selection`` over ``k_range`` (None or empty: skipped). Returns a JSON-able
    report; ``format_report`` renders it as text.

    Raises ``EvaluationError`` when the split leaves a side empty or too few customers buy after
    it (the message says what is missing and how to fix it).
    """
    from traitflow.pipeline import train

    config = config or PipelineConfig()
    split = split_events(events, at=split_at, fraction=split_fraction)
    history_customers = split.history["customer_id"].nunique()
    if history_customers < config.traits.n_traits:
        raise EvaluationError(
            f"only {history_customers} customers have events before the split {split.at.isoformat()}; "
            f"fitting k={config.traits.n_traits} traits needs at least that many: "
            "use a later split, more events or a smaller --k"
        )
    if split.history["category"].notna().any():
        _targets(split, _category_index(split.history), min_customers, target)  # fail before training
    choose_target(split.history, split.future, target, min_customers, column="product_id")
    temporary = None
    if work_dir is None:
        temporary = tempfile.TemporaryDirectory(prefix="traitflow-evaluate-")
        work_dir = Path(temporary.name)
    try:
        model = train(split.history, config, split.at, work_dir / "model" / "work")
        if temporary is None:
            model.save(work_dir / "model")  # kept for inspection (``traitflow inspect``)
        profiled = _profile_all(model, split.history, split.at)
        report = evaluate_model(
            model,
            split.history,
            split.future,
            split_at=split.at,
            segments=segments,
            min_customers=min_customers,
            profiled=profiled,
            target=target,
            n_resamples=n_resamples,
            random_state=random_state,
        )
        report["split"] = {
            "at": pd.Timestamp(split.at).isoformat(),
            "method": split.method,
            "n_history_events": len(split.history),
            "n_future_events": len(split.future),
            "n_history_customers": int(history_customers),
            "n_future_customers": int(split.future["customer_id"].nunique()),
        }
        report["model"] = {
            "k": model.traits.n_traits,
            "n_tokens": len(model.tokens),
            "vector_size": model.tokens.vector_size,
            "n_training_customers": model.metrics.get("n_training_customers"),
            "reconstruction_error": model.metrics.get("traits", {}).get("reconstruction_error"),
            "params": model.config.to_flat(),
        }
        report["stability"] = (
            stability_report(model, events, split.at, work_dir / "stability", profiled=profiled)
            if stability
            else None
        )
        report["k_selection"] = (
            k_selection(
                model,
                split.history,
                split.future,
                split.at,
                k_range,
                profiled=profiled,
                segments=segments,
                min_customers=min_customers,
                target=target,
            )
            if k_range
            else None
        )
    finally:
        if temporary is not None:
            temporary.cleanup()
    return report


# ------------------------------------------------------------------------------------- output


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    cells = [[str(h) for h in header]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  "
        + "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    ]
    lines.insert(1, "  " + "  ".join("-" * w for w in widths))
    return lines


def _ranking_lines(section: dict[str, Any]) -> list[str]:
    """Methods x metrics with 95% intervals, then the profile's lifts over popularity."""
    metrics = list(next(iter(section["methods"].values())))
    intervals = section.get("methods_ci95", {})

    def cell(method: str, metric: str) -> str:
        value = _fmt(section["methods"][method][metric])
        low_high = intervals.get(method, {}).get(metric)
        return f"{value} [{_fmt(low_high[0])}, {_fmt(low_high[1])}]" if low_high else value

    lines = _table(["method", *metrics], [[m, *(cell(m, k) for k in metrics)] for m in section["methods"]])
    lift, lift_ci = section["profile_lift_vs_popularity"], section.get("profile_lift_vs_popularity_ci95", {})
    lines.append(
        "  profile vs popularity: "
        + ", ".join(
            f"{m} x{_fmt(v, 2)}"
            + (f" [{_fmt(lift_ci[m][0], 2)}, {_fmt(lift_ci[m][1], 2)}]" if m in lift_ci else "")
            for m, v in lift.items()
        )
    )
    return lines


def format_report(report: dict[str, Any]) -> str:
    """A readable text rendering of an ``evaluate`` / ``evaluate_model`` report."""
    lines: list[str] = []
    split = report.get("split", {})
    lines.append(f"Traitflow evaluation -- split at {split.get('at')} ({split.get('method', 'given')})")
    if "n_history_events" in split:
        lines.append(
            f"  history: {split['n_history_events']} events, {split['n_history_customers']} customers; "
            f"after the split: {split['n_future_events']} events, {split['n_future_customers']} customers"
        )
    model = report.get("model")
    if model:
        lines.append(
            f"  model: k={model['k']}, {model['n_tokens']} tokens x {model['vector_size']} dims, "
            f"{model['n_training_customers']} training customers, "
            f"NMF reconstruction error {_fmt(model['reconstruction_error'])}"
        )
    ranking = report.get("category_ranking") or {}
    lines.append("")
    if "skipped" in ranking:
        lines.append(f"Category ranking: skipped ({ranking['skipped']})")
    elif ranking:
        target = "purchases" if ranking["target"] == "purchase" else "carts + purchases (too few purchases)"
        lines.append(
            f"Category ranking: {ranking['n_customers']} customers with history and {target} after the "
            f"split; {ranking['n_categories']} categories, "
            f"{_fmt(ranking['mean_relevant_categories'], 2)} bought per customer"
        )
        lines += _ranking_lines(ranking)
    for key, title in (
        ("product_ranking", "Product ranking (all products)"),
        ("product_ranking_new", "Product ranking (products new to the customer)"),
    ):
        section = report.get(key)
        if not section:
            continue
        lines.append("")
        if "skipped" in section:
            lines.append(f"{title}: skipped ({section['skipped']})")
            continue
        lines.append(
            f"{title}: {section['n_customers']} customers with history and "
            f"{'/'.join(section['target_actions'])} after the split; {section['n_products']} products, "
            f"{_fmt(section['mean_relevant_products'], 2)} targets per customer"
        )
        lines += _ranking_lines(section)
    next_item = report.get("next_item") or {}
    lines.append("")
    if "skipped" in next_item:
        lines.append(f"Item2Vec next-item: skipped ({next_item['skipped']})")
    elif next_item:
        lines.append(
            f"Item2Vec next-item hit rate@10 on post-split sessions: {_fmt(next_item['hit_rate@10'])} "
            f"(10 most frequent tokens: {_fmt(next_item['popular_tokens_hit_rate@10'])}; "
            f"{next_item['n_pairs']} pairs, coverage {_fmt(next_item['coverage'])})"
        )
    segments = report.get("segments")
    if segments:
        lines.append(
            f"Planted segments: silhouette {_fmt(segments['silhouette'])}, dominant-trait ARI "
            f"{_fmt(segments['ari_dominant_trait'])} ({segments['n_customers']} customers, "
            f"{segments['n_segments']} segments)"
        )
    purity = report.get("purity")
    if purity and "skipped" in purity:
        lines.append(f"Trait purity: skipped ({purity['skipped']})")
    elif purity:
        lines.append("")
        lines.append(
            f"Trait purity (top {purity['top_n']} products in one category): mean {_fmt(purity['mean'])}"
        )
        lines += _table(
            ["trait", "purity", "top category", "label"],
            [[t["trait_id"], t["purity"], t["top_category"], t["label"]] for t in purity["traits"]],
        )
    stab = report.get("stability")
    if stab:
        lines.append("")
        if "skipped" in stab:
            lines.append(f"Stability: skipped ({stab['skipped']})")
        else:
            lines.append(
                f"Stability across a retrain (seed {stab['seed']}, window through "
                f"{stab['retrained_through']}, {stab['n_new_events']} new events): "
                f"{stab['n_matched']}/{stab['n_traits']} trait ids kept, {stab['n_matched_at_0.9']} with "
                f"similarity >= 0.9 (lowest {_fmt(stab['min_similarity'])})"
            )
            lines.append(
                f"  {stab['n_customers_without_new_events']} customers without new events: mean L1 change "
                f"{_fmt(stab['mean_l1'])} (p90 {_fmt(stab['p90_l1'])}), "
                f"mean cosine {_fmt(stab['mean_cosine'])}, "
                f"same dominant trait {_fmt(stab['same_dominant_trait'])}"
            )
    selection = report.get("k_selection")
    if selection:
        lines.append("")
        lines.append("Choice of k (same tokens, NMF refitted per k):")
        columns = ["k", "reconstruction_error", "purity", "silhouette", "hit@10"]
        columns += ["product_hit@10", "product_ndcg@10"]
        present = [c for c in columns if any(c in row for row in selection)]
        lines += _table(present, [[row.get(c) for c in present] for row in selection])
    return "\n".join(lines)


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    """Write ``report`` as JSON (NaN as null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_json_safe(report), indent=2))
    return path


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
