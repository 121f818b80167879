"""Traitflow benchmark harness: every pipeline stage on a reference workload, plus the references.

Usage (from the repository root, with the project's virtualenv)::

    .venv/bin/python bench/run.py --tier smoke          # seconds; what tests/test_bench_smoke.py runs
    .venv/bin/python bench/run.py --tier S              # ~1 minute: stages + baseline + gensim + latency
    .venv/bin/python bench/run.py --tier M              # 10M events: ~15+ minutes, several GiB
    .venv/bin/python bench/run.py --tier M --scaling    # + retrain and daily run at 1M, 3M (10M reused)
    .venv/bin/python bench/run.py --tier M --incremental --database-url postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/run.py --tier L --incremental --scaling   # 30M events: the L targets
    .venv/bin/python bench/run.py --tier S --events FILE.csv --mapping rees46 --max-events 2000000

What is measured (see bench/README.md for the definitions):

* stages: ``load`` (read_events + validation of a cached canonical CSV slice, or of ``--events``),
  the weekly retrain ``corpus`` -> ``item2vec`` -> ``aggregation`` -> ``nmf_fit`` -> ``labels`` ->
  ``trait_products`` -> ``projection`` and the daily run ``daily_select`` -> ``daily_profile``
  (customers with events on the last day, with their whole history); wall time, CPU time (all
  threads and children), per-stage peak RSS (sampled every 50 ms) and throughput;
* ``gensim_standalone``: the same Word2Vec call on the same corpus file outside the pipeline;
* the seed-literal baseline of aggregation + projection on the same customers (``--tier M``:
  a 1M-event customer slice), side by side with Traitflow's;
* single-customer profile latency (p50/p95/p99) of the batch library path and of
  ``traitflow.online.CustomerProfiler``;
* ``--scaling``: the full retrain and the daily run at several sizes, the fitted log-log
  exponents, and which stage would hit its budget first beyond the largest size (``limits``);
* ``--incremental``: the incremental weekly retrain (``incremental_stages``: its parent, then
  the update from it on the last week, end to end with the Postgres stages) beside the full
  one, compared on the same week (next-item hit rate, profile lift, trait ids kept, drift).
* the Postgres stages (``pg_stages``): ingest, the weekly read/save/promote, the daily read/write
  and the persistence of the baseline slice against the seed's one INSERT per row
  (``--database-url``, else ``TRAITFLOW_DATABASE_URL``, else the embedded server).

Results go to ``bench/results/<tier>-<UTC timestamp>.json`` and ``.md`` (gitignored); the
Markdown table is also printed. Synthetic workloads are cached under ``bench/cache/``.

More stages plug in through ``stages.STAGE_HOOKS`` without touching the rest.

The modules: ``measure`` (timing and RSS sampling), ``stages`` (the weekly retrain and daily
run, composed of the pipeline's stages; ``StageHook``), ``comparisons`` (seed-literal baseline,
single-customer latency), ``incremental_stages``, ``scaling``, ``limits``, ``targets``,
``report`` (summary and files), ``render`` (Markdown); this one loads the workload, runs them in
order and holds the CLI.
"""

from __future__ import annotations

import argparse
import gc
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pg_stages
import report as reports
import workloads
from comparisons import baseline_comparison, single_customer_latency
from incremental_stages import incremental_run
from measure import LOAD, MIB, Bench, RssSampler
from render import render_markdown
from scaling import scaling_run
from stages import STAGE_HOOKS, Context, StageHook, daily_run, retrain, run_hooks

from traitflow.config import PipelineConfig
from traitflow.events import read_events


@dataclass
class Options:
    """What a run measures and where it writes (``main`` fills it from the command line)."""

    tier: str = "S"
    events_file: Path | None = None
    mapping: str = "canonical"
    max_events: int | None = None
    baseline: bool = True
    gensim: bool = True
    latency: bool = True
    latency_customers: int | None = None
    repeats: int | None = None
    scaling: bool = False
    incremental: bool = False  # the incremental weekly retrain beside the full one (incremental_stages)
    scaling_sizes: tuple[int, ...] | None = None
    profile: tuple[str, ...] = ()
    results_dir: Path | None = workloads.RESULTS_DIR
    cache_dir: Path = workloads.CACHE_DIR
    config: PipelineConfig = field(default_factory=PipelineConfig)
    hooks: Sequence[StageHook] | None = None  # None: STAGE_HOOKS
    hook_options: dict[str, Any] = field(default_factory=dict)
    postgres: bool = True  # add the Postgres stages (pg_stages) after ``hooks``
    database_url: str | None = None  # None: the embedded server
    keep_schemas: bool = False
    save_model: Path | None = None  # save the trained model here (TraitflowModel.save), for profiling


def _warm_imports() -> None:
    """Import the heavy libraries up front: the library imports gensim and scikit-learn lazily,
    inside the stage functions, and a one-off import second must not count as stage time (the
    standalone gensim reference would otherwise start with an unfair advantage)."""
    import gensim.models  # noqa: F401
    import sklearn.decomposition  # noqa: F401


@dataclass(frozen=True)
class Workload:
    """The events a run measures and where they came from."""

    events: pd.DataFrame
    source: str
    generate_s: float | None  # synthetic: generating or reading the cache
    cache_hit: bool | None


def _load_workload(bench: Bench, options: Options, tier: workloads.Tier) -> Workload:
    """The events (``--events`` or the tier's synthetic workload) and the measured ``load`` stage."""
    if options.events_file is not None:
        events_file = options.events_file
        events, _ = bench.measure(
            "load",
            LOAD,
            lambda: workloads.read_file(events_file, options.mapping, options.max_events),
            units="rows",
            n_units=lambda r: len(r[0]) + r[1],
            extra=lambda r: {"rejected": r[1], "file": str(events_file), "mapping": options.mapping},
        )
        return Workload(events, f"file {events_file.name} via mapping {options.mapping}", None, None)
    started = time.perf_counter()
    events, cache_hit = workloads.synthetic_events(tier.spec, options.cache_dir)
    generate_s = time.perf_counter() - started
    csv_path = workloads.csv_slice(events, tier.spec, tier.load_rows, options.cache_dir)
    bench.measure(
        "load",
        LOAD,
        lambda: read_events(csv_path, "canonical"),
        units="rows",
        n_units=lambda r: r.n_read,
        extra=lambda r: {"rejected": len(r.rejects), "csv_rows": r.n_read, "file": csv_path.name},
    )
    return Workload(
        events, "synthetic, cached" if cache_hit else "synthetic, generated", generate_s, cache_hit
    )


@dataclass(frozen=True)
class SideResults:
    """What a run measured besides the stages (None: not run)."""

    n_customers: int
    latency: dict[str, Any] | None
    baseline: dict[str, Any] | None
    scaling: dict[str, Any] | None
    incremental: dict[str, Any] | None


def _run_stages(
    bench: Bench, sampler: RssSampler, ctx: Context, options: Options, hooks: Sequence[StageHook]
) -> SideResults:
    """The weekly retrain, the daily run, the incremental weekly retrain, then latency, the
    baseline and scaling, in that order."""
    tier = workloads.TIERS[options.tier]
    repeats = options.repeats or tier.repeats
    _, day_start, day_end = workloads.data_window(ctx.events)
    run_hooks(bench, ctx, "load", hooks)
    retrain(bench, ctx, gensim_repeats=repeats if options.gensim else 0, hooks=hooks)
    assert ctx.embeddings is not None and ctx.model is not None
    n_customers = len(ctx.embeddings.customer_ids)
    if options.save_model is not None:
        ctx.model.save(options.save_model)
    ctx.embeddings = ctx.weekly_batch = None  # free before the next stages
    gc.collect()
    daily_run(bench, ctx, day_start, day_end, hooks)
    ctx.daily_batch = None
    incremental = incremental_run(bench, ctx, hooks) if options.incremental else None
    gc.collect()
    latency = (
        single_customer_latency(ctx, options.latency_customers or tier.latency_customers, day_end)
        if options.latency
        else None
    )
    base = baseline_comparison(bench, ctx, tier.baseline_events, repeats, hooks) if options.baseline else None
    ctx.baseline_rows = None
    scaling = None
    if options.scaling:
        sizes = options.scaling_sizes or tier.scaling_sizes
        scaling = scaling_run(sampler, ctx, sizes, bench, hooks)
    return SideResults(n_customers, latency, base, scaling, incremental)


def _workload_info(options: Options, workload: Workload, n_customers: int) -> dict[str, Any]:
    events, spec = workload.events, workloads.TIERS[options.tier].spec
    trained_through, day_start, _ = workloads.data_window(events)
    return {
        "source": workload.source,
        "events": len(events),
        "customers": n_customers,
        "products": int(events["product_id"].nunique()),
        "spec": None if options.events_file else {"key": workloads.spec_key(spec), **reports.spec_dict(spec)},
        "generate_or_cache_read_s": workload.generate_s,
        "cache_hit": workload.cache_hit,
        "trained_through": trained_through.isoformat(),
        "daily_day": day_start.date().isoformat(),
    }


def run_bench(options: Options) -> dict[str, Any]:
    """Run the benchmark; returns the report (also written to ``results_dir`` unless None)."""
    hooks = list(STAGE_HOOKS if options.hooks is None else options.hooks)
    postgres = None
    if options.postgres:
        postgres = pg_stages.PostgresStages(options.database_url, keep=options.keep_schemas)
        hooks += postgres.hooks()
    started_at = datetime.now(UTC)
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    label = options.tier if options.events_file is None else f"{options.tier}-file"
    profile_dir = (options.results_dir / f"{label}-{stamp}-profiles") if options.results_dir else None
    sampler = RssSampler()
    bench = Bench(sampler, profile=options.profile, profile_dir=profile_dir)
    work_dir = Path(tempfile.mkdtemp(prefix="traitflow-bench-"))
    started = time.perf_counter()
    _warm_imports()
    host = reports.host_info(imports_s=time.perf_counter() - started)
    # The process before any workload: the part of every stage's RSS that does not grow with size.
    host["rss_after_imports_mib"] = sampler.read() / MIB
    try:
        workload = _load_workload(bench, options, workloads.TIERS[options.tier])
        trained_through, _, _ = workloads.data_window(workload.events)
        ctx = Context(options.config, workload.events, work_dir, trained_through, dict(options.hook_options))
        side = _run_stages(bench, sampler, ctx, options, hooks)
        if postgres is not None:
            host["database"] = postgres.describe()
    finally:
        sampler.close()
        if postgres is not None:
            postgres.close()
        shutil.rmtree(work_dir, ignore_errors=True)
    host["loadavg_end"] = reports.loadavg()
    head = {
        "tier": options.tier,
        "started_at": started_at.isoformat(timespec="seconds"),
        "command": " ".join(sys.argv) if __name__ == "__main__" else None,
        "host": host,
        "workload": _workload_info(options, workload, side.n_customers),
        "config": options.config.to_dict(),
    }
    tail = {
        "hooks": [h.name for h in hooks],
        "postgres_run_id": postgres.run_id if postgres is not None else None,
    }
    report = reports.build_report(
        bench,
        head=head,
        latency=side.latency,
        base=side.baseline,
        scaling=side.scaling,
        tail=tail,
        incremental=side.incremental,
    )
    if options.results_dir is not None:
        options.results_dir.mkdir(parents=True, exist_ok=True)
        report["paths"] = reports.write_report(report, options.results_dir / f"{label}-{stamp}")
    return report


def _sizes(text: str) -> tuple[int, ...]:
    multipliers = {"k": 1_000, "m": 1_000_000}
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        scale = multipliers.get(part[-1:], 1)
        out.append(int(float(part[:-1] if scale > 1 else part) * scale))
    return tuple(out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Traitflow benchmark harness (see bench/README.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--tier", choices=sorted(workloads.TIERS), default="S", help="workload size")
    parser.add_argument("--events", type=Path, help="benchmark a real export instead of synthetic data")
    parser.add_argument("--mapping", default="canonical", help="column-mapping preset or file for --events")
    parser.add_argument("--max-events", type=int, help="read at most this many rows of --events")
    parser.add_argument("--no-baseline", action="store_true", help="skip the seed-literal baseline")
    parser.add_argument("--no-gensim", action="store_true", help="skip the standalone gensim reference")
    parser.add_argument("--no-latency", action="store_true", help="skip single-customer latency")
    parser.add_argument("--latency-customers", type=int, help="customers timed one at a time")
    parser.add_argument("--repeats", type=int, help="repeats of item2vec/gensim and of the baseline pair")
    parser.add_argument("--scaling", action="store_true", help="full retrain at the tier's scaling sizes")
    parser.add_argument(
        "--incremental",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="the incremental weekly retrain (parent on the window minus the last week, then the "
        "update) beside the full one, compared on the same week",
    )
    parser.add_argument("--scaling-sizes", type=_sizes, help="e.g. 1M,3M,10M (overrides the tier's)")
    parser.add_argument(
        "--profile", default="", help="comma-separated stage names to run under cProfile (text dump)"
    )
    parser.add_argument("--save-model", type=Path, help="save the trained model to this folder")
    parser.add_argument(
        "--database-url",
        help="PostgreSQL for the pg_* stages (default: $TRAITFLOW_DATABASE_URL, else the embedded server)",
    )
    parser.add_argument("--no-postgres", action="store_true", help="skip the Postgres stages")
    parser.add_argument("--keep-schemas", action="store_true", help="keep the bench_* schemas afterwards")
    parser.add_argument("--results-dir", type=Path, default=workloads.RESULTS_DIR)
    parser.add_argument("--cache-dir", type=Path, default=workloads.CACHE_DIR)
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-stage log lines")
    parser.add_argument("--render", type=Path, metavar="JSON", help="only re-render a saved report")
    parser.add_argument(
        "--shards",
        metavar="N,N,...",
        help="only the customer-sharded profile stages with these shard counts (bench/bench_shards.py)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.render is not None:
        print(reports.rerender(args.render))
        return 0
    if args.shards:
        import bench_shards

        return bench_shards.run_tier(args.tier, bench_shards.shard_counts(args.shards), args.database_url)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
    )
    logging.getLogger("gensim").setLevel(logging.WARNING)
    report = run_bench(
        Options(
            tier=args.tier,
            events_file=args.events,
            mapping=args.mapping,
            max_events=args.max_events,
            baseline=not args.no_baseline,
            gensim=not args.no_gensim,
            latency=not args.no_latency,
            latency_customers=args.latency_customers,
            repeats=args.repeats,
            scaling=args.scaling,
            incremental=args.incremental,
            scaling_sizes=args.scaling_sizes,
            profile=tuple(p for p in args.profile.split(",") if p),
            results_dir=args.results_dir,
            cache_dir=args.cache_dir,
            save_model=args.save_model,
            postgres=not args.no_postgres,
            database_url=args.database_url,
            keep_schemas=args.keep_schemas,
        )
    )
    print(render_markdown(report))
    if "paths" in report:
        print(f"results: {report['paths']['json']}\n         {report['paths']['markdown']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
