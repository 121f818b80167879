"""The load test's numbers: latency by route, errors by status, the plugin's own metrics (cache
outcomes, server-side latency), the posted-events check, the targets, and the Markdown/JSON.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import load_cpu
import numpy as np
import pandas as pd
from load_clients import ROUTES, Post, Sample

OK_STATUS = 200  # every request the generator sends expects it (each post holds a valid event)
CACHE_METRIC = "traitflow_profile_cache_reads_total"
LATENCY_METRIC = "traitflow_api_request_duration_seconds"
ROUTE_TEMPLATES = {
    "profile": ("/api/customers/{customer_id:path}", "GET"),
    "similar": ("/api/customers/{customer_id:path}/similar", "GET"),
    "post": ("/api/customers/{customer_id:path}/events", "POST"),
}
# Issue 17's targets: (name, route or None, what, limit)
TARGETS = (
    ("errors", None, "count", 0),
    ("lost events", None, "count", 0),
    ("profile read p50 (ms)", "profile", "p50_ms", 5.0),
    ("profile read p99 (ms)", "profile", "p99_ms", 50.0),
    ("event post p50 (ms)", "post", "p50_ms", 20.0),
    ("cache hit rate", None, "share", 0.90),
    ("reads after Redis killed: errors", None, "count", 0),
)

MetricKey = tuple[str, tuple[tuple[str, str], ...]]


@dataclass(frozen=True)
class RouteStats:
    route: str
    n: int
    per_second: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    errors: int
    statuses: dict[str, int]
    late_p50_ms: float | None = None  # how late the sends were (open loop; 0 in a closed loop)
    late_p99_ms: float | None = None


def route_stats(samples: Sequence[Sample], duration_s: float) -> list[RouteStats]:
    """Per route over the measured phase (``at >= 0``): throughput, percentiles (of
    ``Sample.seconds``: from the scheduled send in an open loop), how late sends were, statuses."""
    out = []
    for route in ROUTES:
        mine = [s for s in samples if s.route == route and s.at >= 0]
        ms = np.array([s.seconds * 1000 for s in mine])
        late = np.array([s.late * 1000 for s in mine])
        p50, p95, p99 = (float(np.percentile(ms, q)) for q in (50, 95, 99)) if len(ms) else (None,) * 3
        late50, late99 = (float(np.percentile(late, q)) for q in (50, 99)) if len(late) else (None, None)
        statuses = Counter(str(s.status) for s in mine)
        errors = sum(n for status, n in statuses.items() if status != str(OK_STATUS))
        out.append(
            RouteStats(
                route,
                len(mine),
                len(mine) / duration_s,
                p50,
                p95,
                p99,
                errors,
                dict(statuses),
                late50,
                late99,
            )
        )
    return out


# ------------------------------------------------------------------------------- metrics


def parse_metrics(text: str) -> dict[MetricKey, float]:
    """Prometheus text exposition -> {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[MetricKey, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return values


def delta(after: Mapping[MetricKey, float], before: Mapping[MetricKey, float]) -> dict[MetricKey, float]:
    return {key: value - before.get(key, 0.0) for key, value in after.items()}


def cache_outcomes(values: Mapping[MetricKey, float]) -> dict[str, int]:
    """Profile reads by outcome (hit, miss, fallback, uncached)."""
    found: dict[str, int] = {}
    for (name, labels), value in values.items():
        if name == CACHE_METRIC:
            found[dict(labels)["outcome"]] = round(value)
    return found


def server_quantiles(values: Mapping[MetricKey, float], route: str) -> dict[str, float | None]:
    """p50/p95/p99 (ms) of the plugin's own latency histogram for ``route`` (all statuses),
    interpolated within buckets as Prometheus' ``histogram_quantile`` does."""
    template, method = ROUTE_TEMPLATES[route]
    buckets: Counter[float] = Counter()
    for (name, labels), value in values.items():
        label = dict(labels)
        if (
            name == f"{LATENCY_METRIC}_bucket"
            and label.get("route") == template
            and label["method"] == method
        ):
            buckets[float(label["le"])] += value
    bounds = sorted(buckets)
    total = buckets[float("inf")] if bounds else 0.0
    out: dict[str, float | None] = {}
    for q in (50, 95, 99):
        out[f"p{q}_ms"] = _bucket_quantile(bounds, buckets, total, q / 100) if total else None
    return out


def _bucket_quantile(bounds: list[float], buckets: Mapping[float, float], total: float, q: float) -> float:
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower * 1000
            share = (rank - below) / (count - below) if count > below else 1.0
            return (lower + (bound - lower) * share) * 1000
        lower, below = bound, count
    return lower * 1000


# --------------------------------------------------------------------------- events check


@dataclass(frozen=True)
class EventCheck:
    """Every posted event must be in the store or among the request's recorded rejects."""

    n_posts: int
    n_sent: int
    n_stored: int
    n_rejected: int
    n_lost: int
    n_posts_without_response: int
    n_responses_disagreeing: int  # n_stored / n_rejected in the response differ from the store


def check_events(store: Any, posts: Sequence[Post], post_day: Any) -> EventCheck:
    customers = sorted({p.customer_id for p in posts})
    stored = store.read_events(start=post_day, end=post_day + timedelta(days=1), customer_ids=customers)
    keys = set(
        zip(stored["customer_id"], stored["event_time"], stored["action"], stored["product_id"], strict=True)
    )
    n_sent = n_stored = n_rejected = disagreeing = 0
    for post in posts:
        found = sum(
            (post.customer_id, pd.Timestamp(e["event_time"]), e["action"], e["product_id"]) in keys
            for e in post.good
        )
        rejected = sum(store.reject_counts(post.source).values()) if post.source else 0
        n_sent += len(post.good) + post.n_bad
        n_stored += found
        n_rejected += rejected
        if post.source and (post.n_stored, post.n_rejected) != (found, rejected):
            disagreeing += 1
    return EventCheck(
        n_posts=len(posts),
        n_sent=n_sent,
        n_stored=n_stored,
        n_rejected=n_rejected,
        n_lost=n_sent - n_stored - n_rejected,
        n_posts_without_response=sum(p.source is None for p in posts),
        n_responses_disagreeing=disagreeing,
    )


# ------------------------------------------------------------------------------- targets


def evaluate_targets(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each target with the measured value and met / MISSED (n/a when the run cannot say)."""
    routes = {r["route"]: r for r in report["routes"]}
    measured: dict[str, Any] = {
        "errors": report["n_errors"],
        "lost events": report["events"]["n_lost"],
        "cache hit rate": None if report["kill_redis_after_s"] is not None else report["cache"]["hit_rate"],
        "reads after Redis killed: errors": report.get("after_kill", {}).get("read_errors"),
    }
    out = []
    for name, route, field_name, limit in TARGETS:
        value = routes[route][field_name] if route else measured[name]
        if value is None:
            verdict = "n/a"
        elif field_name == "share":
            verdict = "met" if value >= limit else "MISSED"
        else:
            verdict = "met" if value <= limit else "MISSED"
        out.append({"target": name, "limit": limit, "value": value, "verdict": verdict})
    return out


# ------------------------------------------------------------------------------ rendering


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render(report: Mapping[str, Any]) -> str:
    cfg = report["config"]
    open_loop = cfg.get("rate") is not None
    mode = (
        f"open loop at {cfg['rate']:g} requests/s (Poisson; latency from the scheduled send)"
        if open_loop
        else "closed loop"
    )
    lines = [
        f"## Load test {report['started']} (commit {report['commit']})",
        "",
        f"`{report['command']}`",
        "",
        f"{cfg['concurrency']} clients, {mode}, {cfg['duration_s']:.0f} s measured after"
        f" {cfg['warmup_s']:.0f} s warm-up (after reading the {cfg['prewarm_customers']} most read"
        f" profiles once: {report.get('prewarm_statuses')}),"
        f" mix {cfg['mix']}, Zipf {cfg['zipf_exponent']} over {cfg['n_customers']} customers,"
        f" {cfg['workers']} api-server worker(s); load average {report['load_average']}.",
        "",
        "| route | requests | req/s | p50 ms | p95 ms | p99 ms | server p50 | server p99 | errors"
        + (" | sent late p50 / p99 ms" if open_loop else "")
        + " | statuses |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if open_loop else "") + "---|",
    ]
    for r in report["routes"]:
        server = report["server_latency"].get(r["route"], {})
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items()))
        late = f" | {_ms(r.get('late_p50_ms'))} / {_ms(r.get('late_p99_ms'))}" if open_loop else ""
        lines.append(
            f"| {r['route']} | {r['n']} | {r['per_second']:.1f} | {_ms(r['p50_ms'])} | {_ms(r['p95_ms'])}"
            f" | {_ms(r['p99_ms'])} | {_ms(server.get('p50_ms'))} | {_ms(server.get('p99_ms'))}"
            f" | {r['errors']}{late} | {statuses} |"
        )
    cache, events = report["cache"], report["events"]
    hit_rate = "-" if cache["hit_rate"] is None else f"{cache['hit_rate']:.1%}"
    redis_rate = "-" if cache["redis_hit_rate"] is None else f"{cache['redis_hit_rate']:.1%}"
    lines += [
        "",
        f"Total {report['n_requests']} requests, {report['per_second']:.1f}/s; transport errors:"
        f" {report['transport_errors'] or 'none'}. Cache: {cache['outcomes']} (hit rate {hit_rate};"
        f" of the reads Redis answered: {redis_rate}).",
        f"Events: {events['n_sent']} posted in {events['n_posts']} requests = {events['n_stored']} stored"
        f" + {events['n_rejected']} rejected; lost {events['n_lost']}; responses disagreeing with the"
        f" store: {events['n_responses_disagreeing']}. Daily updates during the load: {report['daily']}.",
    ]
    if report.get("unloaded_p50_ms"):
        probes = ", ".join(f"{k} {v:.1f} ms" for k, v in report["unloaded_p50_ms"].items())
        lines.append(f"Unloaded, one client, p50: {probes}.")
    if report.get("cpu"):
        lines.append(load_cpu.describe(report["cpu"], int(report["cores"])))
    if "after_kill" in report:
        kill = report["after_kill"]
        lines.append(
            f"Redis killed at {report['kill_redis_after_s']} s: {kill['reads']} reads after it,"
            f" {kill['read_errors']} errors, p99 {_ms(kill['p99_ms'])} ms."
        )
    lines += ["", "| target | limit | measured | verdict |", "|---|---:|---:|---|"]
    for t in report["targets"]:
        value = t["value"]
        shown = "-" if value is None else (f"{value:.3g}" if isinstance(value, float) else str(value))
        lines.append(f"| {t['target']} | {t['limit']} | {shown} | {t['verdict']} |")
    return "\n".join(lines) + "\n"


def write(report: Mapping[str, Any], out_dir: Path, stem: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    md_path.write_text(render(report))
    return json_path, md_path


def as_dicts(items: Sequence[Any]) -> list[dict[str, Any]]:
    return [asdict(item) for item in items]
