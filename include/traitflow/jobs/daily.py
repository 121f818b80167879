"""The daily DAG's jobs: ingest the day's files, select its customers, update and monitor their
profiles, maintain the profile history's monthly partitions.

Time semantics (backfill safety): a run for the interval [start, end) reads only events before
``end`` and profiles ``as_of=end`` with the newest promoted model trained through ``end`` or
earlier (``Store.model_version_for``), so re-running the interval writes the same rows. Files are
delivered per day: the run treats the files dated ``start``'s day as what arrived in its interval
and files dated ``end``'s day or later as not delivered yet, whatever order the days run in.

Races: a daily write checks, under the writers' locks, that its model is still the one selected
for its date (``StaleModelError`` otherwise) and recomputes once with the newer model
(``commit_update``): it never replaces a newer promoted model's rows.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from traitflow.config import MISSING_INPUT_FAIL, MISSING_INPUT_IGNORE, confine, input_root, mapping_root
from traitflow.jobs._common import open_store
from traitflow.jobs.input_files import EventFiles, MissingInputError, event_files
from traitflow.pipeline import profile_customers
from traitflow.profile_batch import COLD_START_NONE, ProfileBatch
from traitflow.profile_cache import profiles_changed
from traitflow.runs import (
    CustomerSelection,
    DailyReport,
    EventInput,
    HistoryResult,
    IngestResult,
    RunContext,
    RunSkipped,
    ShardPlan,
    ShardResult,
    UpdateResult,
    iso,
    utc,
)
from traitflow.shards import check_n_shards
from traitflow.store import ShardRef, StaleModelError, Store
from traitflow.store.partitions import DEFAULT_MONTHS_AHEAD

log = logging.getLogger(__name__)

# The counts of ``Store.ingest_file``'s report that an ingest task sums over its files.
_INGEST_COUNTS = (
    "n_read",
    "n_inserted",
    "n_already_present",
    "n_rejected",
    "n_conflicting",
    "n_rejects_recorded",
    "n_product_names",
)


def _day(instant: datetime) -> str:
    """The ``YYYY-MM-DD`` of ``instant`` in UTC: the delivery day its event files carry."""
    return iso(instant)[:10]


def confined_mapping(mapping: str) -> str:
    """A preset name as it is; a mapping file path only inside ``mapping_root()`` (resolved)."""
    from traitflow.events import PRESETS

    if mapping in PRESETS:
        return mapping
    return str(confine(mapping, mapping_root(), "mapping file", "TRAITFLOW_MAPPING_ROOT"))


def ingest_interval(context: RunContext, source: EventInput) -> IngestResult:
    """Ingest the event files of the interval's day and any earlier-dated file not ingested yet.

    Catching up earlier files makes the day's result independent of the order days are run in
    (a backfill may run newest first). Ingestion is idempotent: a file already recorded under its
    path is not read again, and re-reading one adds no rows. Files are treated as immutable once
    delivered: a corrected file needs a new name (or ``traitflow ingest --force``).

    A file with more than ``source.max_reject_share`` of its rows rejected (default
    ``events.DEFAULT_MAX_REJECT_SHARE``) raises ``events.MostlyRejectedError`` with nothing of it
    stored: the task fails, and files before it stay ingested (one transaction per file).

    ``input_dir`` and a mapping file come from run parameters, so both must lie inside their
    configured roots (``TRAITFLOW_INPUT_ROOT``, ``TRAITFLOW_MAPPING_ROOT``; see
    ``traitflow.config.confine``); a mapping preset name needs no file.

    No file dated the interval's day: ``source.on_missing`` decides (``stop_without_day_file``);
    with "ignore" the run goes on with what the table holds.
    """
    if not source.input_dir:
        return IngestResult(skipped=True, reason="no input_dir configured; events are expected in the table")
    listing = event_files(source.input_dir)
    mapping = confined_mapping(source.mapping)
    day = _day(context.start)
    if not listing.on(day):
        stop_without_day_file(context, source, listing)
    files = listing.through(day)
    for path in files:  # a file may be a symlink that leads out of the root
        confine(path, input_root(), "event file", "TRAITFLOW_INPUT_ROOT")
    if listing.undated:
        names = [p.name for p in listing.undated]
        log.warning("ignoring event files without a YYYY-MM-DD date in the name: %s", names)
    totals: dict[str, Any] = dict.fromkeys(_INGEST_COUNTS, 0)  # int counts, by IngestResult field
    with open_store(context) as store:
        already = store.ingested_sources([str(path) for path in files])
        pending = [path for path in files if str(path) not in already]
        for path in pending:
            report = store.ingest_file(
                path, mapping, context.run_id, max_reject_share=source.max_reject_share
            )
            for name in totals:
                totals[name] += getattr(report, name)
    return IngestResult(
        skipped=False,
        **totals,
        n_files_seen=len(files),
        ignored_undated=len(listing.undated),
        files=[str(path) for path in pending],
        n_files=len(pending),
    )


def stop_without_day_file(context: RunContext, source: EventInput, listing: EventFiles) -> None:
    """The interval's day has no event file in ``source.input_dir``: store the reason as the day's
    run report and raise ``RunSkipped`` ("skip") or ``MissingInputError`` ("fail"); nothing is
    ingested either way (the next run catches up earlier files). "ignore" logs a warning and returns.
    """
    day = _day(context.start)
    newest = listing.dated[-1][0] if listing.dated else None
    reason = (
        f"no event file dated {day} in {source.input_dir} (newest dated file: {newest or 'none'};"
        f" missing_input={source.on_missing})"
    )
    if source.on_missing == MISSING_INPUT_IGNORE:
        log.warning("%s: updating from the events table as it is", reason)
        return
    outcome = "failed" if source.on_missing == MISSING_INPUT_FAIL else "skipped"
    update = UpdateResult(as_of=iso(context.end), model_version=None, n_profiles=0, reason=reason)
    report = DailyReport(context.run_id, update, outcome=outcome)
    with open_store(context) as store:
        store.write_run_report("daily", update.as_of, report.to_xcom())
    if source.on_missing == MISSING_INPUT_FAIL:
        raise MissingInputError(reason)
    raise RunSkipped(reason)


def select_customers(context: RunContext, input_dir: str | None = None) -> CustomerSelection:
    """Customers with events in [start, end), written to ``customers.parquet`` in the run's folder
    (read by ``plan_update``), and the files not delivered yet for the interval (dated its end's
    day or later, ``CustomerSelection.exclude_sources``), which every read of the run leaves out.

    With ``input_dir``: also the customers with events in the files dated ``start``'s day, whatever
    their event times (late events: a Jan-8 event in the Jan-9 file updates its customer on
    Jan 9), and nothing from files dated after the interval, so forward, reverse and shuffled
    backfills select the same customers.
    """
    on_day: list[str] = []
    later: list[str] = []
    if input_dir:
        listing = event_files(input_dir)
        on_day, later = listing.on(_day(context.start)), listing.from_day(_day(context.end))
    with open_store(context) as store:
        customer_ids = store.customers_with_events(
            context.start, context.end, delivered_in=on_day, exclude_sources=later
        )
    path = Path(context.work_dir) / "customers.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"customer_id": pd.Series(customer_ids, dtype="str")}).to_parquet(path, index=False)
    return CustomerSelection(customers_path=str(path), n_customers=len(customer_ids), exclude_sources=later)


def plan_update(context: RunContext, selection: CustomerSelection, n_shards: int = 1) -> ShardPlan:
    """The daily update's shard plan: the model selected for the interval end and the selected
    customers assigned to ``n_shards`` shards (``traitflow.shards``), once for the run, in the
    database (``Store.plan_shards``: a retry replaces the run's plan); ``reason`` says why there
    is nothing to compute (no promoted model trained through the end yet, no customers with
    events)."""
    as_of = context.end
    run_key = f"daily:{context.run_id}"
    n_shards = check_n_shards(n_shards)
    with open_store(context) as store:
        version = store.model_version_for(as_of)
        reason = None
        if version is None:
            reason = f"no promoted model trained before {iso(as_of)}: run the weekly retrain first"
        elif selection.n_customers == 0:
            reason = "no customers with events"
        if reason is not None:
            return ShardPlan(run_key, n_shards, iso(as_of), model_version=version, reason=reason)
        customer_ids = pd.read_parquet(selection.customers_path)["customer_id"].to_numpy(dtype=object)
        membership = store.plan_shards(run_key, n_shards, customer_ids)
    return ShardPlan(
        run_key=run_key,
        n_shards=n_shards,
        as_of=iso(as_of),
        plan_id=membership.plan_id,
        shard_sizes=list(membership.shard_sizes),
        model_version=version,
        exclude_sources=list(selection.exclude_sources),
    )


def update_profiles(context: RunContext, plan: ShardPlan, shard: int) -> ShardResult:
    """Compute the profiles of shard ``shard``'s customers (its members in the plan's
    ``shard_members``, and only theirs) from their whole history before the interval end with
    the plan's model, and stage them (``Store.stage_profiles``: a retry replaces the shard's
    batch). The profile tables are written by ``commit_update``.

    Events from files not delivered yet for the interval (``plan.exclude_sources``) are left out
    (see ``select_customers``). Reads the database only: no file of the run's folder.
    """
    if plan.reason is not None or plan.model_version is None:
        return ShardResult(shard=shard, n_profiles=0, skipped=True)
    if plan.plan_id is None:
        raise ValueError("a daily shard plan needs its plan_id")
    as_of = utc(plan.as_of)
    members = ShardRef(plan.plan_id, shard)
    with open_store(context) as store:
        customer_ids = store.shard_customers(plan.plan_id, shard)
        events = store.read_events(end=as_of, shard=members, exclude_sources=plan.exclude_sources)
        batch = _daily_batch(store, customer_ids, events, as_of, plan.model_version)
        store.stage_profiles(plan.run_key, shard, plan.n_shards, batch, plan_id=plan.plan_id)
    return ShardResult(shard=shard, n_profiles=len(batch))


def _daily_batch(
    store: Store, customer_ids: np.ndarray, events: pd.DataFrame, as_of: datetime, version: int
) -> ProfileBatch:
    """Profiles of ``customer_ids`` as of ``as_of`` from their ``events`` with model ``version``."""
    batch = profile_customers(events, store.load_model(version), as_of, customer_ids=customer_ids)
    batch.model_version = version
    return batch


def commit_update(context: RunContext, plan: ShardPlan) -> UpdateResult:
    """Write every staged shard of the plan in one transaction (``Store.write_staged_profiles``,
    which also deletes the run's staged batches and shard plan), checking under the writers'
    locks that the plan's model is still the one selected for the date.

    A missing shard raises ``ShardsNotReadyError`` and writes nothing. If a newer model was
    promoted for the date meanwhile (a weekly run finishing), the write is refused
    (``StaleModelError``) and every customer of the plan is recomputed here, once, with the newer
    model, then the run's staged batches and plan are deleted; should that happen again, the run
    skips with the reason (the promotion's own recompute and the refresh DAG cover these
    customers).
    """
    as_of = utc(plan.as_of)
    if plan.reason is not None or plan.model_version is None:
        return UpdateResult(
            as_of=iso(as_of), model_version=plan.model_version, n_profiles=0, reason=plan.reason
        )
    with open_store(context) as store:
        try:
            batch, _report = store.write_staged_profiles(
                plan.run_key, plan.n_shards, as_of, plan.model_version, require_selected_model=True
            )
            stale_versions: list[int] = []
        except StaleModelError as stale:
            if stale.selected is None:
                store.discard_staged(plan.run_key)
                return _stale_skip(as_of, [plan.model_version], stale)
            log.warning("%s; recomputing with model %s", stale, stale.selected)
            batch = _recomputed(store, plan, stale.selected)
            stale_versions = [plan.model_version]
            try:
                store.write_profiles(batch, require_selected_model=True)
            except StaleModelError as again:
                store.discard_staged(plan.run_key)
                return _stale_skip(as_of, [plan.model_version, stale.selected], again)
            # After the write: a retry of this task before it finds the staged shards again.
            store.discard_staged(plan.run_key)
        profiles_changed(store, list(batch.customer_ids))  # the API's profile cache, when configured
    recomputed = None
    if stale_versions:
        recomputed = (
            f"model {stale_versions[0]} was replaced by {batch.model_version} for this date meanwhile"
        )
    return UpdateResult(
        as_of=iso(as_of),
        model_version=batch.model_version,
        n_profiles=len(batch),
        stats=batch.stats,
        mean_profile=batch.profiles.mean(axis=0).tolist(),
        trait_ids=batch.trait_ids.tolist(),
        stale_versions=stale_versions,
        recomputed=recomputed,
    )


def _recomputed(store: Store, plan: ShardPlan, version: int) -> ProfileBatch:
    """Every customer of the plan (all its shards) profiled with model ``version`` instead."""
    assert plan.plan_id is not None  # a plan with a model and customers has its membership
    customer_ids = store.shard_customers(plan.plan_id)
    as_of = utc(plan.as_of)
    events = store.read_events(end=as_of, customer_ids=customer_ids, exclude_sources=plan.exclude_sources)
    return _daily_batch(store, customer_ids, events, as_of, version)


def _stale_skip(as_of: datetime, stale_versions: list[int], stale: StaleModelError) -> UpdateResult:
    return UpdateResult(
        as_of=iso(as_of),
        model_version=None,
        n_profiles=0,
        stale_versions=stale_versions,
        reason=f"skipped: {stale}",
    )


def _js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) between two distributions."""
    p = np.asarray(p, dtype=np.float64) / max(float(np.sum(p)), 1e-12)
    q = np.asarray(q, dtype=np.float64) / max(float(np.sum(q)), 1e-12)
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nonzero = a > 0
        return float(np.sum(a[nonzero] * np.log2(a[nonzero] / m[nonzero])))

    return 0.5 * kl(p) + 0.5 * kl(q)


def monitor_daily(context: RunContext, update: UpdateResult) -> DailyReport:
    """OOV rate, cold-start share and profile-distribution shift of the day, stored as a run report.

    An update that wrote no profiles (no promoted model yet, no customers with events, a race lost
    twice) is reported with outcome "skipped" and its reason: the DAG ends the run skipped.
    """
    outcome = "updated" if update.n_profiles else "skipped"
    report = DailyReport(run_id=context.run_id, update=update, outcome=outcome)
    with open_store(context) as store:
        if update.model_version is not None and update.n_profiles:
            stats = update.stats or {}
            cold = stats.get("cold_start", {})
            population = store.load_model(update.model_version).traits.population_profile
            report = DailyReport(
                run_id=context.run_id,
                update=update,
                oov_rate=stats.get("oov_rate"),
                cold_start_share=1.0 - cold.get(COLD_START_NONE, 0) / update.n_profiles,
                # Today's customers against the population the model was fitted on: a rising
                # value means behaviour is moving away from what the traits describe.
                profile_shift_js=_js_divergence(np.array(update.mean_profile), population),
            )
        store.write_run_report("daily", update.as_of, report.to_xcom())
    return report


def maintain_history(context: RunContext, retention_months: int) -> HistoryResult:
    """Create the profile history's monthly partitions for the interval end's month and the
    months after it (``partitions.DEFAULT_MONTHS_AHEAD``), and drop the months older than
    ``retention_months`` months before it (0: keep everything), in one transaction that also
    records the outcome as the ``history`` key of the day's run report (``DailyReport.history``).

    Runs after the monitor, also when the update skipped. Idempotent: a re-run creates and
    drops nothing more.
    """
    with open_store(context) as store:
        done = store.maintain_history(
            context.end, retention_months, DEFAULT_MONTHS_AHEAD, report=("daily", iso(context.end))
        )
    if done.dropped:
        names = [d.name for d in done.dropped]
        log.info("history retention dropped %s (%d rows)", names, sum(d.rows for d in done.dropped))
    return HistoryResult.from_xcom(done.to_dict())
