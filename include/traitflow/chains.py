"""The weekly retrain and the daily update as plain function calls, for the CLI.

``run_weekly_chain`` walks the weekly DAG (dags/traitflow_weekly_retrain.py) step by step: the
same ``traitflow.jobs`` functions with the same typed arguments (``traitflow.runs``; the DAG
passes them through XCom), and the same branch deciders
(``jobs.should_retrain``, the quality gate's ``passed``, ``jobs.should_refit``), so a retrain
from the command line decides exactly what the DAG would for the same ``trained_through``. Its
report is stored with ``jobs.weekly_report`` under the DAG's task ids (``WEEKLY_STEPS``;
tests/dags checks they match the DAG). ``run_daily_update`` does the same for the daily DAG's
select -> plan -> shards -> commit -> monitor tasks (ingestion is ``traitflow ingest``).

No Airflow imports.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from traitflow import jobs
from traitflow.config import PipelineConfig, data_dir
from traitflow.runs import Candidate, GateResult, PromotionResult, RunContext, TuningRequest
from traitflow.store import Store

log = logging.getLogger(__name__)

WEEK = timedelta(weeks=1)  # the weekly DAG's interval: the chain's run covers the week before its end

# The weekly DAG's task ids other than ``report``, in DAG order.
WEEKLY_STEPS: tuple[str, ...] = (
    "build_corpus",
    "check_new_vocab",
    "skip_retrain",
    "train_candidate",
    "quality_gate",
    "reject_candidate",
    "measure_drift",
    "check_drift",
    "refit_traits",
    "keep_traits",
    "plan_recompute",
    "shard_ids",
    "recompute_profiles",
    "promote",
)


@dataclass(frozen=True)
class Decision:
    """One branch of the weekly chain: which way it went and why.

    step : the DAG's branch task ("check_new_vocab", "quality_gate", "check_drift")
    branch : the task it chose (e.g. "skip_retrain", "measure_drift", "keep_traits")
    reason : the decider's sentence, with its numbers
    """

    step: str
    branch: str
    reason: str


@dataclass(frozen=True)
class WeeklyOutcome:
    """What one weekly chain did.

    status : "skipped" (no retrain needed), "rejected" (quality gate) or "promoted"
    decisions : the branches taken, in order (1 to 3 of them)
    model_version : the promoted version (None unless promoted)
    active_version : the model active before the run (None on a first run)
    n_profiles : profiles written with the promotion (0 otherwise)
    report : the stored run report (``jobs.weekly_report``), keyed by DAG task id
    """

    run_id: str
    trained_through: datetime
    work_dir: str
    status: str
    decisions: tuple[Decision, ...]
    model_version: int | None
    active_version: int | None
    n_profiles: int
    seconds: float
    report: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True)
class DailyOutcome:
    """What one daily update did for the customers with events in [start, end).

    model_version : the model used (None: no model trained through ``end`` yet; see ``reason``)
    report : the stored monitoring report (``jobs.monitor_daily``: OOV rate, cold-start share,
        profile shift)
    """

    run_id: str
    start: datetime
    end: datetime
    n_customers: int
    n_profiles: int
    model_version: int | None
    reason: str | None
    report: Mapping[str, Any] = field(repr=False)


def run_work_dir(kind: str, run_id: str) -> Path:
    """``$TRAITFLOW_DATA_DIR/runs/<kind>/<run_id>``, the layout the DAGs use (``<dag_id>/<run_id>``)."""
    path = data_dir() / "runs" / kind / run_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def newest_event_time(database_url: str | None) -> datetime | None:
    """Time of the newest stored event (UTC), or None when the events table is empty."""
    with Store(database_url) as store:
        store.upgrade()
        value = store.newest_event_time()
    return None if value is None else pd.Timestamp(value).tz_convert("UTC").to_pydatetime()


def just_after(instant: datetime) -> datetime:
    """``instant`` + 1 microsecond: an exclusive end that includes ``instant``'s events."""
    return instant + timedelta(microseconds=1)


def run_weekly_chain(
    database_url: str | None,
    trained_through: datetime,
    work_dir: str | Path,
    params: Mapping[str, Any] | None = None,
    force: bool = False,
    *,
    run_id: str,
    schema: str | None = None,
    tuning: TuningRequest | None = None,
    on_decision: Callable[[Decision], None] | None = None,
    n_shards: int = 1,
) -> WeeklyOutcome:
    """Run the weekly retrain for the window ending at ``trained_through``, as the DAG does.

    corpus -> new-vocabulary check -> (skip | candidate -> quality gate -> (reject | aligned drift
    -> refit or keep -> profiles -> promotion)) -> report. ``params`` are flat
    ``PipelineConfig`` keys (thresholds included); ``tuning`` searches Item2Vec parameters before
    training; ``on_decision`` is called at each branch as it is taken; ``n_shards`` customer
    shards compute the profiles one after the other (the DAG runs them in parallel). A window without events
    skips (``jobs.should_retrain``) and is reported; raises what the jobs raise otherwise (e.g.
    too few customers: ``ThinDataError``).
    """
    started = time.perf_counter()
    config = PipelineConfig.from_mapping(dict(params or {}))
    context = RunContext(
        run_id=run_id,
        start=trained_through - WEEK,
        end=trained_through,
        work_dir=str(work_dir),
        database_url=database_url,
        schema=schema,
    )
    steps: dict[str, Any] = {}
    decisions: list[Decision] = []

    def decide(step: str, branch: str, reason: str, **details: Any) -> None:
        decision = Decision(step, branch, reason)
        decisions.append(decision)
        # Stored as the DAG's record_decision pushes it: {"branch", **details}.
        steps[step] = {"branch": branch, "reason": reason, **details}
        if on_decision is not None:
            on_decision(decision)

    corpus = jobs.build_corpus(context, config)
    steps["build_corpus"] = corpus.to_xcom()
    retrain, reason = jobs.should_retrain(corpus, force, config.triggers.new_vocab_threshold)
    decide("check_new_vocab", "train_candidate" if retrain else "skip_retrain", reason)
    status, version, n_profiles = "skipped", None, 0
    if not retrain:
        steps["skip_retrain"] = {"retrained": False}
    else:
        candidate = jobs.train_candidate(context, corpus, config, tuning)
        steps["train_candidate"] = candidate.to_xcom()
        gate = jobs.quality_gate(context, candidate)
        details = {k: v for k, v in gate.to_xcom().items() if k != "reason"}
        decide("quality_gate", "measure_drift" if gate.passed else "reject_candidate", gate.reason, **details)
        if not gate.passed:
            steps["reject_candidate"] = jobs.reject_candidate(context, candidate, gate).to_xcom()
            status = "rejected"
        else:
            threshold = config.triggers.drift_threshold
            promoted = _promote_candidate(context, candidate, gate, threshold, decide, steps, n_shards)
            status, version, n_profiles = "promoted", promoted.model_version, promoted.n_profiles
    report = jobs.weekly_report(context, steps, runner="cli")
    return WeeklyOutcome(
        run_id=run_id,
        trained_through=trained_through,
        work_dir=context.work_dir,
        status=status,
        decisions=tuple(decisions),
        model_version=version,
        active_version=corpus.active_version,
        n_profiles=n_profiles,
        seconds=time.perf_counter() - started,
        report=report.to_xcom(),
    )


def _promote_candidate(
    context: RunContext,
    candidate: Candidate,
    gate: GateResult,
    drift_threshold: float,
    decide: Callable[..., None],
    steps: dict[str, Any],
    n_shards: int,
) -> PromotionResult:
    """The weekly chain after a passed gate: drift -> refit or keep -> profiles -> promotion."""
    drift = jobs.measure_drift(context, candidate)
    steps["measure_drift"] = drift.to_xcom()
    refit, reason = jobs.should_refit(drift, drift_threshold)
    decide("check_drift", "refit_traits" if refit else "keep_traits", reason)
    if refit:
        fitted = jobs.refit_traits(context, candidate)
        steps["refit_traits"] = fitted.to_xcom()
    else:
        fitted = jobs.keep_traits(context, candidate)
        steps["keep_traits"] = fitted.to_xcom()
    plan = jobs.plan_recompute(context, fitted, n_shards)
    steps["plan_recompute"] = plan.to_xcom()
    steps["shard_ids"] = plan.shards()
    # The DAG's mapped task, one shard after the other (its XCom: the list of shard results).
    steps["recompute_profiles"] = [
        jobs.recompute_profiles(context, plan, shard).to_xcom() for shard in plan.shards()
    ]
    promoted = jobs.promote(context, plan, gate, drift)
    steps["promote"] = promoted.to_xcom()
    return promoted


def run_daily_update(
    database_url: str | None,
    start: datetime,
    end: datetime,
    work_dir: str | Path,
    *,
    run_id: str,
    schema: str | None = None,
    n_shards: int = 1,
) -> DailyOutcome:
    """The daily DAG's select -> update -> monitor for customers with events in [start, end):
    their profiles as of ``end`` from their whole history, with the model selected for ``end``
    (the profiles use the stored model's own parameters), in ``n_shards`` customer shards run one
    after the other."""
    if start >= end:
        raise ValueError(f"the update interval is empty: start {start.isoformat()} >= end {end.isoformat()}")
    context = RunContext(
        run_id=run_id, start=start, end=end, work_dir=str(work_dir), database_url=database_url, schema=schema
    )
    selection = jobs.select_customers(context)
    plan = jobs.plan_update(context, selection, n_shards)
    for shard in plan.shards():  # the DAG's mapped task, one shard after the other
        jobs.update_profiles(context, plan, shard)
    updated = jobs.commit_update(context, plan)
    report = jobs.monitor_daily(context, updated)
    return DailyOutcome(
        run_id=run_id,
        start=start,
        end=end,
        n_customers=selection.n_customers,
        n_profiles=updated.n_profiles,
        model_version=updated.model_version,
        reason=updated.reason,
        report=report.to_xcom(),
    )
