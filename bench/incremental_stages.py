"""The incremental weekly retrain, measured beside the full one on the same week.

The parent (group ``parent``) is the full retrain of the week before: ``jobs.weekly.weekly_corpus`` (the
weekly job's holdout), ``train_tokens`` and ``fit_model`` on the events before ``trained_through``
minus ``INCREMENT_DAYS``, read from and saved to the store by the weekly Postgres hooks (it is
not promoted: the store already holds the full retrain's later profiles). Its time is reported
apart from the incremental group.

The incremental retrain (group ``incremental``) then continues the parent on the last week as
the weekly job does (``traitflow.jobs.weekly``): ``plan_training`` decides (it must say
"incremental" with the config's ``IncrementParams``), ``weekly_corpus`` with an
``IncrementSelection`` (new sessions + replayed sample), ``train_increment``, the drift after
alignment and ``should_refit``, ``align_tokens``, ``fit_model`` (traits kept or refitted and
matched, as ``should_refit`` said), every customer's profile, and the weekly Postgres hooks
(read events, save_model, promote). Every pipeline stage is a bench stage named ``inc_<stage>``.

The comparison with the full retrain of the same week (untimed):

* next-item hit@10 on the window's held-out sessions (the same sessions are held out of both
  corpora), paired, with the 95% interval of the ratio incremental / full;
* the profile's lift over popularity (``traitflow.product_eval``, 95% bootstrap interval) and
  the paired ratio incremental / full with its 95% bootstrap interval, on a customer slice:
  profiles as of the week's start from the events before it, the week's target actions to
  predict. Both models were trained through the week's end, so this compares the two
  like for like rather than estimating either out of time; the parent, trained through the
  week's start, is scored beside them as the out-of-time reference;
* the share of the parent's trait ids the incremental model kept, and its drift from the parent
  after alignment against ``increment_drift_threshold``.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import workloads
from measure import INCREMENTAL, PARENT, Bench
from stages import Context, StageHook, run_hooks

from traitflow.alignment import align_tokens
from traitflow.bootstrap import compare
from traitflow.drift import measure_drift
from traitflow.evaluate.split import MIN_CUSTOMERS, TARGET_ACTIONS, EvaluationError, choose_target
from traitflow.item2vec_incremental import train_increment
from traitflow.jobs.weekly import increment_drift, plan_training, should_refit, weekly_corpus
from traitflow.model import Lineage, TokenTable, TraitflowModel
from traitflow.pipeline import (
    IncrementSelection,
    events_before,
    fit_model,
    profile_customers,
    profiles_from_embeddings,
    train_tokens,
)
from traitflow.product_eval import product_index, product_ranking, stored_weights
from traitflow.quality import compare_hit_rates
from traitflow.ranking import item_targets, mixture_scores, per_customer_metrics
from traitflow.runs import DriftResult, TrainingPlan

log = logging.getLogger("traitflow.bench")

INCREMENT_DAYS = 7
# The weekly Postgres hooks the parent runs: read its window, save it (its version becomes the
# increment's parent_version). Promoting it would move no current row (the full retrain's
# profiles are newer), so it is not.
PARENT_HOOKS = ("pg_read_events", "pg_save_model")
# Customer slice of the profile-lift comparison (whole histories): bounded cost at every tier.
LIFT_EVENTS = 1_000_000
LIFT_RESAMPLES = 1000
Z95 = 1.96

_Result = TypeVar("_Result")


class GroupTimer:
    """A ``pipeline.StageRunner`` measuring every pipeline stage as bench stage
    ``prefix + name`` in ``group``, keeping each stage's result (``results``)."""

    def __init__(self, bench: Bench, prefix: str, group: str) -> None:
        self.bench, self.prefix, self.group = bench, prefix, group
        self.results: dict[str, Any] = {}

    def __call__(self, name: str, stage: Callable[[], _Result]) -> _Result:
        result = self.bench.measure(self.prefix + name, self.group, stage)
        self.results[name] = result
        return result


@dataclass(frozen=True)
class Increment:
    """What the incremental retrain produced, for the comparison."""

    parent: TraitflowModel
    model: TraitflowModel
    plan: TrainingPlan
    drift: DriftResult
    refit: bool
    refit_reason: str
    holdout_path: str


def _before(events: pd.DataFrame, cut: datetime) -> pd.DataFrame:
    """The events before ``cut``: a row slice (no copy of the workload) when they are in time
    order, as the harness's workloads are."""
    times = events["event_time"]
    if not times.is_monotonic_increasing:
        return events_before(events, cut)
    return events.iloc[: int(times.searchsorted(pd.Timestamp(cut), side="left"))]


def train_parent(bench: Bench, ctx: Context, cut: datetime, hooks: Sequence[StageHook]) -> TraitflowModel:
    """The full retrain on the events before ``cut`` (stages ``parent_*``)."""
    config = ctx.config
    sub = Context(config, _before(ctx.events, cut), ctx.work_dir / "parent", cut, ctx.options)
    parent_hooks = [h for h in hooks if h.name in PARENT_HOOKS]
    timer = GroupTimer(bench, "parent_", PARENT)
    run_hooks(bench, sub, "weekly_start", parent_hooks, prefix="parent_", group=PARENT)
    corpus = timer("corpus", lambda: weekly_corpus(sub.events, config, sub.work_dir))
    tokens = timer("item2vec", lambda: train_tokens(corpus, config))
    sub.model = fit_model(sub.events, tokens, config, cut, run_stage=timer)
    sub.model.lineage = Lineage("full", None, None)
    run_hooks(bench, sub, "weekly", parent_hooks, prefix="parent_", group=PARENT)
    if sub.model.version is None:  # no store: a version for plan_training's lineage check
        sub.model.version = 0
    return sub.model


def _lineage(parent: TraitflowModel) -> pd.DataFrame:
    """``Store.model_versions``'s columns ``plan_training`` reads, for the parent alone."""
    return pd.DataFrame(
        {
            "model_version": [parent.version],
            "status": ["active"],
            "training_mode": ["full"],
            "parent_version": [None],
            "trained_through": [pd.Timestamp(parent.trained_through)],
        }
    )


def train_incremental(
    bench: Bench, ctx: Context, parent: TraitflowModel, hooks: Sequence[StageHook]
) -> Increment:
    """The weekly job's incremental path from ``parent`` through ``ctx.trained_through``
    (stages ``inc_*``); ``ctx`` is a context of its own (its model and batch are the increment's)."""
    config, end = ctx.config, ctx.trained_through
    timer = GroupTimer(bench, "inc_", INCREMENTAL)
    run_hooks(bench, ctx, "weekly_start", hooks, prefix="inc_", group=INCREMENTAL)
    window_start = end - timedelta(days=config.triggers.training_window_days)
    plan = plan_training(parent, _lineage(parent), config, window_start, end)
    if plan.mode != "incremental" or plan.trained_since is None:
        raise RuntimeError(f"the weekly job would not train incrementally here: {plan.reason}")
    selection = IncrementSelection(plan.trained_since, config.increment.replay_fraction, config.item2vec.seed)
    corpus = timer("corpus", lambda: weekly_corpus(ctx.events, config, ctx.work_dir, selection))
    assert corpus.increment_path is not None and corpus.holdout_path is not None
    increment_path = corpus.increment_path
    tokens, stats = timer(
        "item2vec",
        lambda: train_increment(
            increment_path,
            corpus.corpus_path,
            corpus.vocabulary(),
            parent.tokens,
            config.item2vec,
            config.increment,
        ),
    )
    drift = timer(
        "drift",
        lambda: increment_drift(
            tokens,
            parent.tokens,
            increment_path,
            corpus.vocabulary(),
            config.increment.increment_drift_threshold,
        ),
    )
    refit, refit_reason = should_refit(drift, config.triggers.drift_threshold)
    aligned = timer("align", lambda: align_tokens(tokens, parent.tokens))
    model = fit_model(ctx.events, aligned, config, end, previous=parent, refit_traits=refit, run_stage=timer)
    model.lineage = Lineage("incremental", parent.version, plan.trained_since)
    model.metrics["training"] = {"mode": plan.mode, "increment": stats.to_dict(), "refit": refit}
    embeddings = timer.results["aggregate"]
    ctx.model = model
    ctx.weekly_batch = profiles_from_embeddings(model, embeddings, end, run_stage=timer)
    run_hooks(bench, ctx, "weekly", hooks, prefix="inc_", group=INCREMENTAL)
    ctx.weekly_batch = None
    return Increment(parent, model, plan, drift, refit, refit_reason, str(corpus.holdout_path))


def _hit_rates(incremental: TokenTable, full: TokenTable, holdout_path: str) -> dict[str, Any]:
    """Paired next-item hit@10 on the held-out sessions; ratio incremental / full with its 95%
    interval (the paired difference's, divided by the full model's rate)."""
    holdout = pd.read_parquet(holdout_path)
    paired = compare_hit_rates(
        incremental, full, holdout["session"].to_numpy(), holdout["token"].to_numpy(dtype=object)
    )
    full_rate, difference = paired["active_hit_rate"], paired["difference"]
    half_width = Z95 * paired["standard_error"]
    ratio, interval = None, None
    if full_rate > 0:
        ratio = 1.0 + difference / full_rate
        interval = [1.0 + (difference - half_width) / full_rate, 1.0 + (difference + half_width) / full_rate]
    return {
        "incremental": paired["candidate_hit_rate"],
        "full": full_rate,
        "difference": difference,
        "difference_ci95": [difference - half_width, difference + half_width],
        "ratio": ratio,
        "ratio_ci95": interval,
        "n_pairs": paired["n_pairs"],
    }


def _profile_lift(
    events: pd.DataFrame, split_at: datetime, models: dict[str, TraitflowModel]
) -> dict[str, Any]:
    """Each model's hit@10 lift of the profile over popularity (95% bootstrap interval) on a
    customer slice: profiles as of ``split_at``, the target actions after it as targets."""
    sample = workloads.customer_slice(events, LIFT_EVENTS)
    history = events_before(sample, split_at)
    future = sample[sample["event_time"] >= pd.Timestamp(split_at)]
    try:
        target = choose_target(history, future, None, MIN_CUSTOMERS, column="product_id")
    except EvaluationError as error:
        return {"skipped": str(error)}
    lifts: dict[str, dict[str, Any]] = {}
    out: dict[str, Any] = {"target": target, "split_at": split_at.isoformat(), "lift_hit@10": lifts}
    profiled: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, model in models.items():
        batch = profile_customers(history, model, split_at)
        order = np.argsort(batch.customer_ids)
        profiled[name] = batch.customer_ids[order], batch.profiles[order]
        products = model.traits.products
        ranking = product_ranking(
            history,
            future,
            customer_ids=profiled[name][0],
            profiles=profiled[name][1],
            config=model.config,
            split_at=split_at,
            actions=TARGET_ACTIONS[target],
            distribution=None if products is None else (products.product_ids, products.weights),
            n_resamples=LIFT_RESAMPLES,
        )["product_ranking"]
        if "skipped" in ranking:
            return {"skipped": ranking["skipped"]}
        out["n_customers"] = ranking["n_customers"]
        lifts[name] = {
            "lift": ranking["profile_lift_vs_popularity"]["hit@10"],
            "ci95": list(ranking["profile_lift_vs_popularity_ci95"]["hit@10"]),
        }
    out["ratio"], out["ratio_ci95"] = _paired_ratio(history, future, TARGET_ACTIONS[target], models, profiled)
    return out


def _paired_ratio(
    history: pd.DataFrame,
    future: pd.DataFrame,
    actions: Sequence[str],
    models: dict[str, TraitflowModel],
    profiled: dict[str, tuple[np.ndarray, np.ndarray]],
) -> tuple[float, list[float]]:
    """Lift of the incremental model's profiles over the full one's, hit@10, with the 95%
    bootstrap interval of the paired ratio (same customers, same resamples). Both lifts are over
    the same popularity, so the ratio of their lifts is the ratio of their profiles' hit rates."""
    index = product_index(history)
    targets = item_targets(history, future, index, actions)
    per_customer = {}
    for name in ("incremental", "full"):
        customer_ids, profiles = profiled[name]
        products = models[name].traits.products
        assert products is not None  # fit_model always fits the trait product distributions
        weights = stored_weights((products.product_ids, products.weights), profiles.shape[1], index)
        rows = np.searchsorted(customer_ids, targets.customer_ids)
        scores = mixture_scores(profiles[rows], weights)
        per_customer[name] = per_customer_metrics(scores, targets.relevant, exclude=targets.exclude)
    paired = compare(per_customer, focus="incremental", baseline="full", n_resamples=LIFT_RESAMPLES)
    return paired.lift["hit@10"], paired.lift_intervals["hit@10"]


def compare_with_full(events: pd.DataFrame, full: TraitflowModel, increment: Increment) -> dict[str, Any]:
    """The incremental model against the full retrain of the same week (see the module doc)."""
    parent_ids = set(increment.parent.traits.trait_ids.tolist())
    kept = parent_ids & set(increment.model.traits.trait_ids.tolist())
    threshold = increment.drift.increment_threshold
    drift = increment.drift.weighted_mean_drift
    recent = increment.drift.recent_weighted_drift  # what should_refit judges an increment by
    assert drift is not None and recent is not None and threshold is not None
    return {
        "trained_since": increment.plan.trained_since.isoformat() if increment.plan.trained_since else None,
        "plan": increment.plan.reason,
        "refit": increment.refit,
        "refit_reason": increment.refit_reason,
        "increment": increment.model.metrics["training"]["increment"],
        "next_item_hit@10": _hit_rates(increment.model.tokens, full.tokens, increment.holdout_path),
        "profile_lift": _profile_lift(
            events,
            increment.parent.trained_through,
            {"full": full, "incremental": increment.model, "parent": increment.parent},
        ),
        "trait_ids_kept": len(kept) / len(parent_ids),
        "n_parent_traits": len(parent_ids),
        "drift": {
            "weighted_mean": drift,
            "recent_weighted": recent,
            "threshold": threshold,
            "vs_threshold": recent / threshold,
            "full_retrain_weighted_mean": measure_drift(
                full.tokens, increment.parent.tokens
            ).weighted_mean_drift,
        },
    }


def incremental_run(bench: Bench, ctx: Context, hooks: Sequence[StageHook]) -> dict[str, Any]:
    """Parent, incremental retrain and comparison with ``ctx.model`` (the full retrain)."""
    assert ctx.model is not None
    cut = ctx.trained_through - timedelta(days=INCREMENT_DAYS)
    parent = train_parent(bench, ctx, cut, hooks)
    gc.collect()
    sub = Context(ctx.config, ctx.events, ctx.work_dir / "incremental", ctx.trained_through, ctx.options)
    increment = train_incremental(bench, sub, parent, hooks)
    del sub
    gc.collect()
    comparison = compare_with_full(ctx.events, ctx.model, increment)
    log.info(
        "incremental vs full: hit@10 ratio %s, trait ids kept %.2f, recent-weighted drift %.3f"
        " (threshold %.3f)",
        comparison["next_item_hit@10"]["ratio"],
        comparison["trait_ids_kept"],
        comparison["drift"]["recent_weighted"],
        comparison["drift"]["threshold"],
    )
    return comparison
