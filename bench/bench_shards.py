"""The customer-sharded profile stages with N parallel shard processes, N = 1, 2, 4, ...

For a tier (or any events frame) the candidate is trained once in a schema of its own: ingest,
``build_corpus``, ``train_candidate``, ``refit_traits``, quality gate, drift, for the week before
the last day of the data. Then, for each shard count N, in a fresh throw-away schema with the same
events (so every N starts from the same tables):

* weekly: ``plan_recompute`` -> N ``recompute_profiles`` tasks -> ``promote`` (every customer);
* daily (the last day of the data): ``select_customers`` -> ``plan_update`` -> N
  ``update_profiles`` tasks -> ``commit_update``.

The N shard tasks run as N OS processes at once, started with ``spawn`` (a fresh interpreter that
imports the package and opens its own ``Store``, as an Airflow LocalExecutor or Celery task
process does); the plan and commit tasks run in this process. Per stage: wall time (the shard
stage from the first start to the last exit, interpreter start-up included), CPU time, each shard
process's own job wall and CPU time and peak RSS (``ru_maxrss``), rows staged and committed per
second, and the speed-up over N = 1. N = 1 is the single-task path: one task, every customer.

Every N must leave identical profile tables (current profiles without ``updated_at``, and the
history); ``ShardChecksumError`` is raised otherwise. The schemas are dropped at the end.

    python bench/bench_shards.py --tier S --shards 1,2,4 --database-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import workloads
from pg_stages import INGEST_CHUNK_ROWS, _Loaded

from traitflow import jobs
from traitflow.config import PipelineConfig
from traitflow.runs import DriftResult, FittedCandidate, GateResult, RunContext, ShardPlan
from traitflow.store import Store

WEEK = timedelta(weeks=1)
# The profile tables compared between shard counts, without updated_at (a fresh schema writes
# them at another time).
PROFILE_TABLES = ("customer_profiles", "customer_profile_history")


class ShardChecksumError(AssertionError):
    """Two shard counts left different profile tables."""


@dataclass(frozen=True)
class Trained:
    """The candidate every shard count promotes, and its gate and drift results."""

    fitted: FittedCandidate
    gate: GateResult
    drift: DriftResult
    week: RunContext


def _shard_task(job: str, context: RunContext, plan: ShardPlan, shard: int) -> dict[str, Any]:
    """One shard task in its own process: the job, its wall and CPU time and the process's peak RSS."""
    run = jobs.recompute_profiles if job == "weekly" else jobs.update_profiles
    wall, cpu = time.perf_counter(), time.process_time()
    result = run(context, plan, shard)
    return {
        "shard": shard,
        "rows": result.n_profiles,
        "job_wall_s": time.perf_counter() - wall,
        "job_cpu_s": time.process_time() - cpu,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
    }


def _run_shards(job: str, context: RunContext, plan: ShardPlan) -> dict[str, Any]:
    """The plan's shards as parallel spawned processes, one process per shard."""
    spawn = multiprocessing.get_context("spawn")
    started, children_cpu = time.perf_counter(), _children_cpu()
    with ProcessPoolExecutor(plan.n_shards, mp_context=spawn, max_tasks_per_child=1) as pool:
        futures = [pool.submit(_shard_task, job, context, plan, s) for s in plan.shards()]
        shards = [f.result() for f in futures]
    wall = time.perf_counter() - started
    rows = sum(s["rows"] for s in shards)
    return {
        "wall_s": wall,
        # The slowest shard's own job, interpreter start-up excluded: the stage's critical path
        # once the task processes are warm (a Celery worker process imports the package once).
        "critical_path_s": max(s["job_wall_s"] for s in shards),
        "cpu_s": _children_cpu() - children_cpu,
        "rows": rows,
        "rows_per_s": rows / wall if wall > 0 else None,
        "max_shard_peak_rss_mib": max(s["peak_rss_mib"] for s in shards),
        "shards": shards,
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(fn: Callable[[], Any], rows: Callable[[Any], int]) -> tuple[Any, dict[str, Any]]:
    """``fn()`` in this process: its result and wall, CPU and rows per second."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    wall = time.perf_counter() - wall
    n = rows(result)
    return result, {
        "wall_s": wall,
        "cpu_s": time.process_time() - cpu,
        "rows": n,
        "rows_per_s": n / wall if wall > 0 else None,
    }


class ShardBench:
    """Schemas, the trained candidate and the per-N runs of one measurement."""

    def __init__(self, events: pd.DataFrame, url: str | None, work: Path, config: PipelineConfig) -> None:
        self.events = events
        self.url = url
        self.work = work
        self.config = config
        self.prefix = f"bench_{uuid.uuid4().hex[:8]}_shards"
        self.schemas: list[str] = []
        # The candidate is trained through the start of the last day; the daily run profiles that day.
        _, self.day_start, self.day_end = workloads.data_window(events)

    def _store(self, name: str) -> Store:
        schema = f"{self.prefix}_{name}"
        self.schemas.append(schema)
        store = Store(self.url, schema)
        store.upgrade()
        for first in range(0, len(self.events), INGEST_CHUNK_ROWS):
            chunk = self.events.iloc[first : first + INGEST_CHUNK_ROWS]
            store.ingest_events(_Loaded(chunk), "bench", f"bench-{name}")
        return store

    def _context(self, schema: str, run_id: str, start: datetime, end: datetime) -> RunContext:
        work_dir = self.work / run_id
        work_dir.mkdir(parents=True, exist_ok=True)
        return RunContext(run_id, start, end, str(work_dir), self.url, schema)

    def train(self) -> Trained:
        """The candidate for the week before the last day, trained once (untimed)."""
        with self._store("model") as store:
            week = self._context(store.schema, "weekly", self.day_start - WEEK, self.day_start)
        corpus = jobs.build_corpus(week, self.config)
        candidate = jobs.train_candidate(week, corpus, self.config)
        fitted = jobs.refit_traits(week, candidate)
        return Trained(fitted, jobs.quality_gate(week, candidate), jobs.measure_drift(week, candidate), week)

    def run(self, n_shards: int, trained: Trained) -> dict[str, Any]:
        """Weekly recompute + promote, then the last day's update, with ``n_shards`` shard processes."""
        with self._store(f"n{n_shards}") as store:
            schema = store.schema
            snapshot = store.event_snapshot()
            week = replace(trained.week, schema=schema, run_id=f"weekly-{n_shards}")
            # This schema's events: the plan assigns, and the shards read, what its snapshot holds.
            corpus = replace(trained.fitted.candidate.corpus, event_snapshot=snapshot)
            fitted = replace(trained.fitted, candidate=replace(trained.fitted.candidate, corpus=corpus))
            plan = jobs.plan_recompute(week, fitted, n_shards)
            weekly = _run_shards("weekly", week, plan)
            promoted, promote = _timed(
                lambda: jobs.promote(week, plan, trained.gate, trained.drift), lambda r: r.n_profiles
            )
            day = self._context(schema, f"daily-{n_shards}", self.day_start, self.day_end)
            selection, select = _timed(lambda: jobs.select_customers(day), lambda r: r.n_customers)
            daily_plan = jobs.plan_update(day, selection, n_shards)
            daily = _run_shards("daily", day, daily_plan)
            updated, commit = _timed(lambda: jobs.commit_update(day, daily_plan), lambda r: r.n_profiles)
            if promoted.n_profiles != weekly["rows"] or updated.n_profiles != daily["rows"]:
                raise ShardChecksumError(f"N={n_shards}: committed rows differ from the rows staged")
            checksums = store.table_checksums(PROFILE_TABLES, without=("updated_at",))
            sizes = _table_sizes(store)
        return {
            "n_shards": n_shards,
            "weekly_shards": weekly,
            "promote": promote,
            "daily_select": select,
            "daily_shards": daily,
            "daily_commit": commit,
            "checksums": checksums,
            "table_sizes": sizes,
        }

    def drop(self) -> None:
        for schema in self.schemas:
            with Store(self.url, schema) as store:
                store.drop_schema()


# Bytes on disk (heap, indexes, TOAST) and rows of the profile tables; the history is partitioned
# by month, so its size is the sum over its partitions.
_SIZES = """
SELECT 'customer_profiles', pg_total_relation_size(to_regclass('customer_profiles')),
       (SELECT count(*) FROM customer_profiles)
UNION ALL
SELECT 'customer_profile_history',
       coalesce((SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits
                 WHERE inhparent = to_regclass('customer_profile_history')), 0)
       + pg_total_relation_size(to_regclass('customer_profile_history')),
       (SELECT count(*) FROM customer_profile_history)
"""


def _table_sizes(store: Store) -> dict[str, dict[str, float]]:
    """Rows, bytes and bytes per row of the profile tables."""
    out = {}
    for table, size, rows in store.connection.execute(_SIZES).fetchall():
        out[table] = {"rows": int(rows), "bytes": int(size), "bytes_per_row": int(size) / max(int(rows), 1)}
    return out


def _speedups(runs: list[dict[str, Any]]) -> None:
    """Adds each run's speed-up over the N = 1 run (the single-task path) to its stages."""
    one = next((r for r in runs if r["n_shards"] == 1), None)
    if one is None:
        return
    for run in runs:
        for stage in ("weekly_shards", "daily_shards"):
            run[stage]["speedup_vs_1"] = one[stage]["wall_s"] / run[stage]["wall_s"]
            run[stage]["critical_path_speedup_vs_1"] = (
                one[stage]["critical_path_s"] / run[stage]["critical_path_s"]
            )
        for total, parts in (("weekly_total", ("weekly_shards", "promote")),
                             ("daily_total", ("daily_select", "daily_shards", "daily_commit"))):  # fmt: skip
            run[total] = {"wall_s": sum(run[p]["wall_s"] for p in parts)}
            run[total]["speedup_vs_1"] = sum(one[p]["wall_s"] for p in parts) / run[total]["wall_s"]


def check_checksums(runs: list[dict[str, Any]]) -> None:
    """Raises ``ShardChecksumError`` unless every shard count left the same profile tables."""
    first = runs[0]
    for run in runs[1:]:
        if run["checksums"] != first["checksums"]:
            raise ShardChecksumError(
                f"N={run['n_shards']} left other profile tables than N={first['n_shards']}:"
                f" {run['checksums']} != {first['checksums']}"
            )


def measure_shards(
    events: pd.DataFrame,
    shard_counts: Sequence[int],
    url: str | None,
    config: PipelineConfig | None = None,
    *,
    keep: bool = False,
) -> dict[str, Any]:
    """Trains once, runs every shard count, checks the checksums and drops the schemas."""
    with tempfile.TemporaryDirectory(prefix="traitflow-shards-") as tmp:
        bench = ShardBench(events, url, Path(tmp), config or PipelineConfig())
        try:
            trained = bench.train()
            runs = [bench.run(n, trained) for n in shard_counts]
        finally:
            if not keep:
                bench.drop()
    check_checksums(runs)
    _speedups(runs)
    return {
        "n_events": len(events),
        "n_customers": int(events["customer_id"].nunique()),
        "day": bench.day_start.date().isoformat(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "checksums_equal": True,
        "schema_prefix": bench.prefix,
        "runs": runs,
    }


def render(result: dict[str, Any]) -> str:
    """The Markdown table of a ``measure_shards`` result."""
    lines = [
        f"{result['n_events']:,} events, {result['n_customers']:,} customers; daily run for {result['day']};"
        f" load average at the end {', '.join(f'{x:.1f}' for x in result['load_average'])};"
        " identical profile tables for every N: yes",
        "",
        "| N | stage | wall s | CPU s | rows | rows/s | speed-up vs N=1 | slowest shard job s"
        " | its speed-up vs N=1 | max shard peak RSS MiB |",
        "|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for run in result["runs"]:
        for stage in ("weekly_shards", "promote", "daily_select", "daily_shards", "daily_commit"):
            row = run[stage]
            lines.append(
                f"| {run['n_shards']} | {stage} | {row['wall_s']:.2f} | {row['cpu_s']:.2f} | {row['rows']:,}"
                f" | {row['rows_per_s'] or 0:,.0f} | {_fmt(row.get('speedup_vs_1'))}"
                f" | {_fmt(row.get('critical_path_s'))} | {_fmt(row.get('critical_path_speedup_vs_1'))}"
                f" | {_fmt(row.get('max_shard_peak_rss_mib'), 0)} |"
            )
        for total in ("weekly_total", "daily_total"):
            if total in run:
                lines.append(
                    f"| {run['n_shards']} | **{total}** | {run[total]['wall_s']:.2f} | | | |"
                    f" {_fmt(run[total]['speedup_vs_1'])} | | | |"
                )
    sizes = result["runs"][0]["table_sizes"]
    lines.append("")
    lines.extend(
        f"{table}: {v['rows']:,} rows, {v['bytes'] / 2**20:.1f} MiB, {v['bytes_per_row']:.0f} bytes/row"
        for table, v in sizes.items()
    )
    return "\n".join(lines)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", choices=sorted(workloads.TIERS), default="S")
    parser.add_argument("--shards", default="1,2,4", help="comma-separated shard counts")
    parser.add_argument("--database-url", default=os.environ.get("TRAITFLOW_DATABASE_URL"))
    parser.add_argument("--keep-schemas", action="store_true")
    args = parser.parse_args(argv)
    return run_tier(args.tier, shard_counts(args.shards), args.database_url, keep=args.keep_schemas)


def shard_counts(text: str) -> list[int]:
    """``"1,2,4"`` -> [1, 2, 4]."""
    return [int(x) for x in text.split(",") if x.strip()]


def run_tier(tier: str, counts: Sequence[int], url: str | None, *, keep: bool = False) -> int:
    """Measures the tier's synthetic workload, prints the table and writes
    ``bench/results/shards-<tier>-<UTC timestamp>.json`` and ``.md``."""
    events, _ = workloads.synthetic_events(workloads.TIERS[tier].spec)
    result = measure_shards(events, counts, url, keep=keep)
    result["tier"] = tier
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    workloads.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = workloads.RESULTS_DIR / f"shards-{tier}-{stamp}"
    path.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
    text = render(result)
    path.with_suffix(".md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
