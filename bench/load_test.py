"""Loopback load test of the Traitflow API (the Airflow plugin): profile reads, similar-customer
reads and event posts from N concurrent clients while a daily update writes.

By default it builds everything it needs and removes it afterwards: Traitflow data in a schema
of its own (synthetic events + one weekly chain), its own redis-server, its own
``airflow api-server`` with this repo's plugin on a free loopback port (SimpleAuthManager, admin
with a random password). ``--base-url`` targets a running api-server instead (see bench/README.md).

It logs in (``POST /auth/token``), warms up, scrapes ``/traitflow/metrics``, runs the measured
phase, scrapes again, and checks that every posted event is stored or rejected (through the
Store). Output: a Markdown table and JSON in ``bench/results/load-<UTC timestamp>.{md,json}``.

    .venv/bin/python bench/load_test.py --concurrency 32 --duration 60 \\
        --database-url postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/load_test.py --concurrency 32 --rate 100 ...   # open loop, 100 requests/s
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import load_cpu
import load_report
import numpy as np
from load_clients import ClientResults, LoadPlan, Mix, prewarm, run_clients
from load_http import KeepAliveClient
from load_server import BuiltData, DailyJob, DailyRunner, Product, Workload, build_data, log_in
from servers import ServerSettings, api_server, redis_server

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_MIX = "profile=80,similar=10,post=10"
PROBE_REQUESTS = 50
AIRFLOW_FLOOR = {"airflow /api/v2/monitor/health": "/api/v2/monitor/health"}


@dataclass(frozen=True)
class LoadOptions:
    concurrency: int = 32
    duration_s: float = 60.0
    warmup_s: float = 10.0
    mix: str = DEFAULT_MIX
    zipf_exponent: float = 1.1
    reject_share: float = 0.05
    kill_redis_after_s: float | None = None
    workers: int = 2
    daily_interval_s: float = 10.0
    prewarm_customers: int = 3000
    seed: int = 0
    rate: float | None = None  # open loop: requests/s over all clients (None: closed loop)
    drain_s: float = 10.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--concurrency", type=int, default=32, help="concurrent clients (threads)")
    p.add_argument("--duration", type=float, default=60.0, help="measured seconds")
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        metavar="R",
        help="open loop: R requests/s in total, Poisson arrivals spread over the clients, latency from"
        " the scheduled send (default: closed loop)",
    )
    p.add_argument(
        "--drain", type=float, default=10.0, help="open loop: seconds after the end to send what is late"
    )
    p.add_argument("--warmup", type=float, default=10.0, help="seconds of the same load before measuring")
    p.add_argument("--mix", default=DEFAULT_MIX, help=f"route shares (default {DEFAULT_MIX})")
    p.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent of the customers read (0: uniform)")
    p.add_argument("--reject-share", type=float, default=0.05, help="share of posts with an invalid event")
    p.add_argument("--kill-redis-after", type=float, default=None, metavar="S", help="kill Redis S s in")
    p.add_argument("--workers", type=int, default=2, help="api-server workers (own server only)")
    p.add_argument("--daily-interval", type=float, default=10.0, help="pause between daily updates (s)")
    p.add_argument(
        "--prewarm", type=int, default=3000, help="read the N most read customers once before the warm-up"
    )
    p.add_argument("--no-daily", action="store_true", help="no daily update during the load")
    p.add_argument("--customers", type=int, default=3000, help="synthetic customers (own data only)")
    p.add_argument("--events", type=int, default=60_000, help="synthetic events (own data only)")
    p.add_argument("--database-url", default=os.environ.get("TRAITFLOW_DATABASE_URL"))
    p.add_argument("--base-url", help="a running api-server with the plugin (needs --schema, --password)")
    p.add_argument("--schema", help="the Traitflow schema that server uses (--base-url)")
    p.add_argument("--password", default=os.environ.get("TRAITFLOW_LOAD_PASSWORD"), help="admin's")
    p.add_argument(
        "--redis-timeout", type=float, help="the server's TRAITFLOW_REDIS_TIMEOUT_SECONDS (own server only)"
    )
    p.add_argument("--server-log", type=Path, help="copy the api-server's log here (own server only)")
    p.add_argument("--keep-schema", action="store_true", help="keep the built schema")
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def existing_data(store: Any) -> BuiltData:
    """What the load needs from a schema built elsewhere: its profiled customers, the active
    model's products, and the day after the newest stored event."""
    import pandas as pd

    version = store.active_model_version()
    if version is None:
        raise SystemExit(f"schema {store.schema} has no active model: nothing to read")
    tokens = store.load_model(version).tokens
    seen = dict.fromkeys(zip(tokens.product_ids, tokens.categories, strict=True))
    products = tuple(Product(str(p), str(c), 1.0) for p, c in seen)
    newest = pd.Timestamp(store.newest_event_time()).tz_convert("UTC").normalize()
    post_day = (newest + pd.Timedelta(days=1)).to_pydatetime()
    return BuiltData(
        store.schema, version, store.profile_sample(limit=10**6).customer_ids, products, post_day
    )


def measure(
    options: LoadOptions,
    data: BuiltData,
    make_http: Callable[[], Any],
    store: Any,
    *,
    api_prefix: str = "/traitflow",
    kill_redis: Callable[[], None] | None = None,
    daily: DailyRunner | None = None,
    probes: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run the load against whatever ``make_http()`` clients reach and return the report dict.

    First ``probes`` (name -> path, e.g. Airflow's own health route: the server's floor) and one
    profile read are timed from a single client with nothing else running."""
    probes = probes or {}
    plan = LoadPlan(
        concurrency=options.concurrency,
        duration_s=options.duration_s,
        warmup_s=options.warmup_s,
        mix=Mix.parse(options.mix),
        zipf_exponent=options.zipf_exponent,
        customer_ids=data.customer_ids,
        products=data.products,
        post_day=data.post_day,
        reject_share=options.reject_share,
        seed=options.seed,
        api_prefix=api_prefix,
        rate=options.rate,
        drain_s=options.drain_s,
    )
    scraper = make_http()
    top = quote(data.customer_ids[0], safe="")
    unloaded = _probe(scraper, {**probes, "profile read": f"{api_prefix}/api/customers/{top}"})
    warmed = prewarm(plan, make_http, options.prewarm_customers)

    def scrape() -> dict[load_report.MetricKey, float]:
        return load_report.parse_metrics(scraper.get(f"{api_prefix}/metrics").text)

    before: dict[load_report.MetricKey, float] = {}
    cpu_before: list[load_cpu.CpuSnapshot] = []

    def at_start() -> None:
        before.update(scrape())
        cpu_before.append(load_cpu.snapshot())

    timers = []
    if options.kill_redis_after_s is not None and kill_redis is not None:
        timers.append((options.kill_redis_after_s, kill_redis))
    if daily is not None:
        daily.start()
    try:
        results = run_clients(plan, make_http, at_start=at_start, timers=timers)
        cpu_after = load_cpu.snapshot()
    finally:
        daily_runs = daily.stop() if daily is not None else []
    after = load_report.delta(scrape(), before)
    scraper.close()
    report = _report(options, data, results, after, daily_runs, store)
    report["unloaded_p50_ms"] = unloaded
    report["cpu"] = load_cpu.usage(cpu_before[0], cpu_after)
    report["cores"] = os.cpu_count()
    report["prewarm_statuses"] = warmed
    return report


def _probe(http: Any, paths: Mapping[str, str], n: int = PROBE_REQUESTS) -> dict[str, float]:
    """p50 (ms) of ``n`` sequential GETs of each path, after one untimed request."""
    out = {}
    for name, path in paths.items():
        http.get(path)
        times = []
        for _ in range(n):
            started = time.perf_counter()
            http.get(path).raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
        out[name] = float(np.median(times))
    return out


def _report(
    options: LoadOptions,
    data: BuiltData,
    results: ClientResults,
    metrics: dict[load_report.MetricKey, float],
    daily_runs: list[Any],
    store: Any,
) -> dict[str, Any]:
    routes = load_report.route_stats(results.samples, options.duration_s)
    outcomes = load_report.cache_outcomes(metrics)
    n_reads = sum(outcomes.values())
    n_answered = outcomes.get("hit", 0) + outcomes.get("miss", 0)
    report: dict[str, Any] = {
        "config": {**asdict(options), "n_customers": len(data.customer_ids), "schema": data.schema},
        "routes": load_report.as_dicts(routes),
        "n_requests": sum(r.n for r in routes),
        "per_second": sum(r.n for r in routes) / options.duration_s,
        "n_errors": sum(r.errors for r in routes),
        "transport_errors": results.errors,
        "server_latency": {
            route: load_report.server_quantiles(metrics, route) for route in ("profile", "similar", "post")
        },
        "cache": {
            "outcomes": outcomes,
            "hit_rate": outcomes.get("hit", 0) / n_reads if n_reads else None,
            "redis_hit_rate": outcomes.get("hit", 0) / n_answered if n_answered else None,
        },
        "events": asdict(load_report.check_events(store, results.posts, data.post_day)),
        "daily": _daily_summary(daily_runs),
        "kill_redis_after_s": options.kill_redis_after_s,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    if options.kill_redis_after_s is not None:
        reads = [s for s in results.samples if s.route != "post" and s.at >= options.kill_redis_after_s]
        ms = np.array([s.seconds * 1000 for s in reads])
        report["after_kill"] = {
            "reads": len(reads),
            "read_errors": sum(s.status != load_report.OK_STATUS for s in reads),
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
        }
    report["targets"] = load_report.evaluate_targets(report)
    return report


def _daily_summary(runs: list[Any]) -> str:
    done = [r for r in runs if isinstance(r, tuple)]
    failed = [r for r in runs if not isinstance(r, tuple)]
    text = f"{len(done)} runs"
    if done:
        text += f" ({sum(n for _, n in done)} profiles written, {max(s for s, _ in done):.1f} s the longest)"
    return text + (f", {len(failed)} failed: {failed[0]}" if failed else "")


def _http_factory(base: str, token: str) -> Callable[[], Any]:
    """One keep-alive client per thread (``load_http``: the generator's own cost kept low)."""

    def make() -> KeepAliveClient:
        return KeepAliveClient(base, {"Authorization": f"Bearer {token}"})

    return make


def _options(args: argparse.Namespace) -> LoadOptions:
    return LoadOptions(
        concurrency=args.concurrency,
        duration_s=args.duration,
        warmup_s=args.warmup,
        mix=args.mix,
        zipf_exponent=args.zipf,
        reject_share=args.reject_share,
        kill_redis_after_s=args.kill_redis_after,
        workers=args.workers,
        daily_interval_s=args.daily_interval,
        prewarm_customers=args.prewarm,
        seed=args.seed,
        rate=args.rate,
        drain_s=args.drain,
    )


def _run_own(args: argparse.Namespace, options: LoadOptions, url: str, work: Path) -> dict[str, Any]:
    """Build data, start Redis and the api-server, load, check; the schema is dropped afterwards."""
    from traitflow.store import Store

    schema = f"load_{uuid.uuid4().hex[:10]}"
    workload = Workload(n_customers=args.customers, n_events=args.events, seed=args.seed)
    store = Store(url, schema)
    try:
        print(f"building {workload} in schema {schema} ...", flush=True)
        data = build_data(store.url, schema, workload, work)
        with redis_server() as redis:
            settings = ServerSettings(
                store.url,
                schema,
                workers=options.workers,
                redis_url=redis.url,
                multiprocess_metrics=True,
                redis_timeout_s=args.redis_timeout,
                keep_log=args.server_log,
            )
            print("starting redis-server and airflow api-server ...", flush=True)
            with api_server(settings, work / "airflow") as (base, password):
                daily = None
                if not args.no_daily:
                    job = DailyJob(
                        store.url,
                        schema,
                        data.post_day,
                        str(work / "daily"),
                        options.daily_interval_s,
                        redis.url,
                    )
                    daily = DailyRunner(job)
                make_http = _http_factory(base, _token(base, password))
                return measure(
                    options, data, make_http, store, kill_redis=redis.kill, daily=daily, probes=AIRFLOW_FLOOR
                )
    finally:
        if not args.keep_schema:
            store.drop_schema()
        store.close()


def _run_against(args: argparse.Namespace, options: LoadOptions, url: str) -> dict[str, Any]:
    from traitflow.store import Store

    if not (args.schema and args.password):
        raise SystemExit("--base-url needs --schema and --password (or TRAITFLOW_LOAD_PASSWORD)")
    with Store(url, args.schema) as store:
        data = existing_data(store)
        make_http = _http_factory(args.base_url.rstrip("/"), _token(args.base_url.rstrip("/"), args.password))
        return measure(options, data, make_http, store, probes=AIRFLOW_FLOOR)


def _token(base: str, password: str) -> str:
    import httpx

    with httpx.Client(timeout=30.0) as client:
        return log_in(client, base, password)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    options = _options(args)
    started = datetime.now(UTC)
    url = args.database_url
    with tempfile.TemporaryDirectory(prefix="traitflow-load-") as tmp:
        if args.base_url:
            report = _run_against(args, options, url)
        else:
            report = _run_own(args, options, url, Path(tmp))
    report["started"] = started.strftime("%Y-%m-%d %H:%M UTC")
    report["commit"] = _commit()
    report["command"] = shlex.join(["bench/load_test.py", *(sys.argv[1:] if argv is None else argv)])
    json_path, md_path = load_report.write(report, args.out, f"load-{started:%Y%m%dT%H%M%SZ}")
    print(load_report.render(report))
    print(f"written: {json_path} and {md_path}")
    return 0 if all(t["verdict"] != "MISSED" for t in report["targets"][:2]) else 1


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
