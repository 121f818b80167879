"""The choice of k: the traits refitted with each k on the model's own training vectors, and each
k's profiles scored like the model's."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from traitflow.evaluate.categories import category_ranking
from traitflow.evaluate.metrics import NDCG_K, _mean_purity, segment_report, trait_purity
from traitflow.evaluate.profiles import _Profiled, _project_profiles
from traitflow.evaluate.split import MIN_CUSTOMERS, TARGET_ACTIONS, choose_target
from traitflow.model import TraitflowModel, TraitModel
from traitflow.product_eval import ProfileVectors, profile_metrics_per_set
from traitflow.profile_batch import COLD_START_NONE
from traitflow.ranking import SIMILARITY_WEIGHT

DEFAULT_K_RANGE: tuple[int, ...] = (4, 8, 16, 24)


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
    similarity_weight: float = SIMILARITY_WEIGHT,
) -> list[dict[str, Any]]:
    """Refit the traits with each k on the model's own training vectors (same tokens) and report
    reconstruction error, mean purity, silhouette (with segments), and the hit@10 and NDCG@10 of
    rankings re-made with each k's profiles: products (``product_hit@10``, each k with its own
    trait product distributions) and, with categories, categories (``hit@10``)."""
    rows, fitted, fitted_profiles = _fit_each_k(model, k_range, profiled, segments)
    if not fitted:
        return rows
    chosen = choose_target(history, future, target, min_customers, column="product_id")
    products = profile_metrics_per_set(
        history,
        future,
        customer_ids=profiled.customer_ids,
        profile_sets=fitted_profiles,
        config=model.config,
        split_at=split_at,
        actions=TARGET_ACTIONS[chosen],
        vectors=ProfileVectors(profiled.embeddings, model.tokens),
        similarity_weight=similarity_weight,
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
    categories = ranking.get("by_traits")  # None when the events carry no categories
    scored = [row for row in rows if "skipped" not in row]
    for number, (row, product_metrics) in enumerate(zip(scored, products, strict=True)):
        row[f"product_hit@{NDCG_K}"] = product_metrics.get(f"hit@{NDCG_K}")
        row[f"product_ndcg@{NDCG_K}"] = product_metrics.get(f"ndcg@{NDCG_K}")
        if categories is not None:
            row[f"hit@{NDCG_K}"] = categories[number][f"hit@{NDCG_K}"]
    return rows


def _fit_each_k(
    model: TraitflowModel,
    k_range: Sequence[int],
    profiled: _Profiled,
    segments: pd.DataFrame | None,
) -> tuple[list[dict[str, Any]], list[TraitModel], list[np.ndarray]]:
    """One row per k (reconstruction error, purity, silhouette; or why the k was skipped), and
    the traits and profiles of each k that could be fitted, in ``k_range`` order."""
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
    return rows, fitted, fitted_profiles
