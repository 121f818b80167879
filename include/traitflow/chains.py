"""The weekly retrain and the daily update as plain function calls, for the CLI.

``run_weekly_chain`` walks the weekly DAG (dags/traitflow_weekly_retrain.py) step by step: the
same ``traitflow.jobs`` functions with the same arguments, and the same branch deciders
(``jobs.should_retrain``, the quality gate's ``passed``, ``jobs.should_refit``), so a retrain
from the command line decides exactly what the DAG would for the same ``trained_through``. Its
report is stored with ``jobs.weekly_report`` under the DAG's task ids (``WEEKLY_STEPS``;
tests/dags checks they match the DAG). ``run_daily_update`` does the same for the daily DAG's
select -> update -> monitor tasks (ingestion is ``traitflow ingest``).

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
from traitflow.store import Store

log = logging.getLogger(__name__)

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
        value = store.connection.execute("SELECT max(event_time) FROM events").fetchone()[0]
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
    tune: bool = False,
    tune_sample_fraction: float = 0.1,
    tune_trials: int = 8,
    on_decision: Callable[[Decision], None] | None = None,
) -> WeeklyOutcome:
    """Run the weekly retrain for the window ending at ``trained_through``, as the DAG does.

    corpus -> new-vocabulary check -> (skip | candidate -> quality gate -> (reject | aligned drift
    -> refit or keep -> profiles -> promotion)) -> report. ``params`` are flat
    ``PipelineConfig`` keys (thresholds included); ``on_decision`` is called at each branch as
    it is taken. A window without events skips (``jobs.should_retrain``) and is reported; raises
    what the jobs raise otherwise (e.g. too few customers: ``ThinDataError``).
    """
    started = time.perf_counter()
    work_dir = str(work_dir)
    params = dict(params or {})
    triggers = PipelineConfig.from_mapping(params).triggers
    results: dict[str, Any] = {}
    decisions: list[Decision] = []

    def decide(step: str, branch: str, reason: str, **details: Any) -> None:
        decision = Decision(step, branch, reason)
        decisions.append(decision)
        # Stored as the DAG's record_decision pushes it: {"branch", **details}.
        results[step] = {"branch": branch, "reason": reason, **details}
        if on_decision is not None:
            on_decision(decision)

    corpus = jobs.build_corpus(
        database_url, trained_through=trained_through, work_dir=work_dir, params=params
    )
    results["build_corpus"] = corpus
    retrain, reason = jobs.should_retrain(corpus, force, triggers.new_vocab_threshold)
    decide("check_new_vocab", "train_candidate" if retrain else "skip_retrain", reason)
    status, version, n_profiles = "skipped", None, 0
    if not retrain:
        results["skip_retrain"] = {"retrained": False}
    else:
        candidate = jobs.train_candidate(
            database_url,
            corpus,
            work_dir,
            params,
            tune=tune,
            tune_sample_fraction=tune_sample_fraction,
            tune_trials=tune_trials,
        )
        results["train_candidate"] = candidate
        gate = jobs.quality_gate(database_url, candidate, params)
        branch = "measure_drift" if gate["passed"] else "reject_candidate"
        decide("quality_gate", branch, gate["reason"], **{k: v for k, v in gate.items() if k != "reason"})
        if not gate["passed"]:
            # The DAG hands the gate's recorded decision ({"branch", **gate}) to reject_candidate.
            decision = results["quality_gate"]
            results["reject_candidate"] = jobs.reject_candidate(database_url, candidate, decision)
            status = "rejected"
        else:
            drift = jobs.measure_drift(database_url, candidate)
            results["measure_drift"] = drift
            refit, reason = jobs.should_refit(drift, triggers.drift_threshold)
            decide("check_drift", "refit_traits" if refit else "keep_traits", reason)
            if refit:
                fitted = results["refit_traits"] = jobs.refit_traits(database_url, candidate, params)
            else:
                fitted = results["keep_traits"] = jobs.keep_traits(database_url, candidate)
            profiles = jobs.recompute_profiles(database_url, fitted, as_of=trained_through, work_dir=work_dir)
            results["recompute_profiles"] = {"candidate_info": fitted, "profiles_info": profiles}
            promoted = results["promote"] = jobs.promote(database_url, fitted, profiles)
            status, version, n_profiles = "promoted", promoted["model_version"], promoted["n_profiles"]
    results["trained_through"] = trained_through.isoformat()  # the report's key, as the DAG writes it
    results["runner"] = "cli"
    report = jobs.weekly_report(database_url, run_id, results)
    return WeeklyOutcome(
        run_id=run_id,
        trained_through=trained_through,
        work_dir=work_dir,
        status=status,
        decisions=tuple(decisions),
        model_version=version,
        active_version=corpus.get("active_version"),
        n_profiles=n_profiles,
        seconds=time.perf_counter() - started,
        report=report,
    )


def run_daily_update(
    database_url: str | None,
    start: datetime,
    end: datetime,
    work_dir: str | Path,
    params: Mapping[str, Any] | None = None,
    *,
    run_id: str,
) -> DailyOutcome:
    """The daily DAG's select -> update -> monitor for customers with events in [start, end):
    their profiles as of ``end`` from their whole history, with the model selected for ``end``."""
    if start >= end:
        raise ValueError(f"the update interval is empty: start {start.isoformat()} >= end {end.isoformat()}")
    selection = jobs.select_customers(database_url, start, end, str(work_dir))
    updated = jobs.update_profiles(
        database_url, as_of=end, customers_path=selection["customers_path"], run_id=run_id, params=params
    )
    report = jobs.monitor_daily(database_url, as_of=end, run_id=run_id, update_result=updated)
    return DailyOutcome(
        run_id=run_id,
        start=start,
        end=end,
        n_customers=int(selection["n_customers"]),
        n_profiles=int(updated.get("n_profiles") or 0),
        model_version=updated.get("model_version"),
        reason=updated.get("reason"),
        report=report,
    )
