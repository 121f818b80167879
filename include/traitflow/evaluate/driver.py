"""The evaluation runs: ``evaluate`` from raw events (train, then score), ``evaluate_model`` for an
already trained model on a history/future pair."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from traitflow.bootstrap import DEFAULT_RESAMPLES
from traitflow.config import PipelineConfig
from traitflow.evaluate.categories import _category_index, _targets, category_ranking
from traitflow.evaluate.metrics import (
    PURITY_TOP_N,
    _mean_purity,
    next_item_report,
    segment_report,
    trait_purity,
)
from traitflow.evaluate.profiles import _profile_all, _Profiled
from traitflow.evaluate.split import (
    MIN_CUSTOMERS,
    TARGET_ACTIONS,
    EvaluationError,
    Split,
    choose_target,
    split_events,
)
from traitflow.evaluate.stability import stability_report
from traitflow.evaluate.sweep import DEFAULT_K_RANGE, k_selection
from traitflow.model import TraitflowModel
from traitflow.product_eval import ProfileVectors, product_ranking
from traitflow.ranking import SIMILARITY_WEIGHT


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
    similarity_weight: float = SIMILARITY_WEIGHT,
    n_resamples: int = DEFAULT_RESAMPLES,
    random_state: int = 0,
) -> dict[str, Any]:
    """Score a trained model on a history/future pair (see the package docstring).

    ``history`` are the events before ``split_at`` (the model must not have seen later ones),
    ``future`` those at or after it. ``target`` (a key of ``TARGET_ACTIONS``; default: purchases,
    carts too when too few customers purchase) is what is predicted; ``similarity_weight`` is the
    weight of the Item2Vec tilt in the profile's product ranking (0: the traits' mixture alone).
    Returns a JSON-able dict
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
        **product_sections(model, history, future, similarity_weight=similarity_weight, **options),
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
    similarity_weight: float = SIMILARITY_WEIGHT,
    n_resamples: int = DEFAULT_RESAMPLES,
    random_state: int = 0,
) -> dict[str, Any]:
    """``product_ranking`` and ``product_ranking_new`` (``traitflow.product_eval``): the profile
    ranks products through the model's stored trait product distributions (estimated from
    ``history`` when the model has none), tilted by the Item2Vec similarity of each customer's
    vector and the products' (``similarity_weight``; ``ranking.profile_product_scores``)."""
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
        vectors=ProfileVectors(profiled.embeddings, model.tokens),
        similarity_weight=similarity_weight,
        n_resamples=n_resamples,
        random_state=random_state,
    )
    for section in sections.values():
        section["target"] = chosen
    return sections


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
    similarity_weight: float = SIMILARITY_WEIGHT,
    product_names: Mapping[str, str] | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    random_state: int = 0,
) -> dict[str, Any]:
    """Time-split hold-out evaluation of the full pipeline on canonical ``events``.

    Trains on events before the split (``split_at``, or where ``split_fraction`` of the events
    have happened), then runs ``evaluate_model``, ``stability_report`` (unless ``stability`` is
    False) and ``k_selection`` over ``k_range`` (None or empty: skipped). Returns a JSON-able
    report; ``format_report`` renders it as text. Corpora and models go to ``work_dir`` (the
    model is kept there, for ``traitflow inspect``), or to a temporary folder. ``product_names``
    (product_id -> name) lets the trait labels name products.

    Raises ``EvaluationError`` when the split leaves a side empty or too few customers buy after
    it (the message says what is missing and how to fix it).
    """
    from traitflow.pipeline import train

    if not 0 <= similarity_weight < float("inf"):
        raise ValueError(f"similarity_weight must be a finite number >= 0, got {similarity_weight}")
    config = config or PipelineConfig()
    split = split_events(events, at=split_at, fraction=split_fraction)
    _check_before_training(split, config, min_customers, target)
    with _work_folder(work_dir) as (folder, keep_model):
        model = train(split.history, config, split.at, folder / "model" / "work", product_names=product_names)
        if keep_model:
            model.save(folder / "model")
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
            similarity_weight=similarity_weight,
            n_resamples=n_resamples,
            random_state=random_state,
        )
        report["split"] = _split_summary(split)
        report["model"] = _model_summary(model)
        report["stability"] = (
            stability_report(model, events, split.at, folder / "stability", profiled=profiled)
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
                similarity_weight=similarity_weight,
            )
            if k_range
            else None
        )
    return report


def _check_before_training(
    split: Split, config: PipelineConfig, min_customers: int, target: str | None
) -> None:
    """Raise ``EvaluationError`` for what would fail only after training: too few customers
    before the split for k traits, or too few test customers for the category or product target."""
    history_customers = split.history["customer_id"].nunique()
    if history_customers < config.traits.n_traits:
        raise EvaluationError(
            f"only {history_customers} customers have events before the split {split.at.isoformat()}; "
            f"fitting k={config.traits.n_traits} traits needs at least that many: "
            "use a later split, more events or a smaller --k"
        )
    if split.history["category"].notna().any():
        _targets(split, _category_index(split.history), min_customers, target)
    choose_target(split.history, split.future, target, min_customers, column="product_id")


@contextmanager
def _work_folder(work_dir: Path | None) -> Iterator[tuple[Path, bool]]:
    """``work_dir`` and True (keep the model), or a temporary folder, removed on exit, and False."""
    if work_dir is not None:
        yield work_dir, True
        return
    with tempfile.TemporaryDirectory(prefix="traitflow-evaluate-") as temporary:
        yield Path(temporary), False


def _split_summary(split: Split) -> dict[str, Any]:
    return {
        "at": pd.Timestamp(split.at).isoformat(),
        "method": split.method,
        "n_history_events": len(split.history),
        "n_future_events": len(split.future),
        "n_history_customers": int(split.history["customer_id"].nunique()),
        "n_future_customers": int(split.future["customer_id"].nunique()),
    }


def _model_summary(model: TraitflowModel) -> dict[str, Any]:
    return {
        "k": model.traits.n_traits,
        "n_tokens": len(model.tokens),
        "vector_size": model.tokens.vector_size,
        "n_training_customers": model.metrics.get("n_training_customers"),
        "reconstruction_error": model.metrics.get("traits", {}).get("reconstruction_error"),
        "traits": [
            {"trait_id": int(trait_id), "label": label}
            for trait_id, label in zip(model.traits.trait_ids, model.traits.labels, strict=True)
        ],
        "params": model.config.to_flat(),
    }
