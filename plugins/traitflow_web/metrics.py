"""Prometheus metrics at ``/traitflow/metrics`` (text exposition, ``prometheus-client``).

Two kinds of families:

* Counted in this process: ``traitflow_profile_cache_reads_total{outcome}`` (hit, miss, fallback,
  uncached: see ``traitflow.profile_cache``), ``traitflow_similar_cache_reads_total{outcome}``
  (the same outcomes for similar-customers answers) and ``traitflow_api_request_duration_seconds{route,
  method,status}``, a histogram by route *template* (``/api/customers/{customer_id:path}``), so
  no customer id ever becomes a label.
* Read from the Store at scrape time (``Store.pipeline_stats``, cached ``STATS_TTL_SECONDS`` per
  process): stored events, rejects by reason, current profiles, the active model version, the
  newest retrain's version, gate outcome and drift. They come from the tables, so every process
  reports the same values and they survive restarts. ``traitflow_store_up`` is 0 when the database
  cannot be read (the scrape still succeeds).

Several api-server workers: each process counts its own requests. Without further setup a scrape
reaches one worker and sees its counts only (per-worker series that reset with the worker).
For totals over all workers set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory writable by
the api-server (cleared at its start), before it starts: prometheus-client then keeps the counts
in shared files there and this route aggregates them (``MultiProcessCollector``).

Access: no Airflow login, because Prometheus scrapers cannot follow Airflow's token flow; the
page holds aggregates only (no customer ids or profile data). Set ``TRAITFLOW_METRICS_TOKEN`` to
require ``Authorization: Bearer <token>`` (Prometheus: ``authorization: {credentials: ...}``), or
keep the route reachable only from the scraper's network.
"""

from __future__ import annotations

import functools
import hmac
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from fastapi import HTTPException, Request, status
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .pool import borrow_store

log = logging.getLogger(__name__)

STATS_TTL_SECONDS = 15.0
TOKEN_ENV = "TRAITFLOW_METRICS_TOKEN"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REGISTRY = CollectorRegistry()
CACHE_READS = Counter(
    "traitflow_profile_cache_reads",
    "Profile reads by the path that served them: hit (Redis), miss (PostgreSQL, then cached), "
    "fallback (Redis failed or its circuit is open), uncached (cache off or no active model)",
    ["outcome"],
    registry=REGISTRY,
)
SIMILAR_READS = Counter(
    "traitflow_similar_cache_reads",
    "Similar-customers answers by the path that served them (the profile reads' outcomes)",
    ["outcome"],
    registry=REGISTRY,
)
REQUEST_SECONDS = Histogram(
    "traitflow_api_request_duration_seconds",
    "Plugin request latency by route template, method and status code",
    ["route", "method", "status"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)


def count_cache_read(outcome: str) -> None:
    CACHE_READS.labels(outcome=outcome).inc()


def count_similar_read(outcome: str) -> None:
    SIMILAR_READS.labels(outcome=outcome).inc()


class TimeRequests:
    """ASGI middleware: observe every HTTP request's latency under its route template (a plain
    ASGI class, not ``BaseHTTPMiddleware``, which would run the app in a task of its own and
    stream its body: a cost on every request)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        code = 500

        async def record_status(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            # the router put the matched route into the (shared) scope
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            REQUEST_SECONDS.labels(route=route, method=scope["method"], status=str(code)).observe(
                time.perf_counter() - started
            )


class StoreStatsCollector(Collector):
    """Gauges from ``Store.pipeline_stats``, read at most every ``ttl_seconds``."""

    def __init__(self, ttl_seconds: float = STATS_TTL_SECONDS) -> None:
        self.ttl_seconds = ttl_seconds
        self._lock = threading.Lock()
        self._families: list[Metric] = []
        self._read_at: float | None = None

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = time.monotonic()
            if self._read_at is None or now - self._read_at > self.ttl_seconds:
                self._families, self._read_at = self._read(), now
            return iter(list(self._families))

    def clear(self) -> None:
        with self._lock:
            self._read_at = None

    def _read(self) -> list[Metric]:
        up = GaugeMetricFamily("traitflow_store_up", "1 when the Traitflow database could be read")
        try:
            with borrow_store() as store:
                stats = store.pipeline_stats()
        except Exception as exc:  # the scrape reports the outage instead of failing
            log.warning("Traitflow metrics cannot read the store: %s", exc)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        return [up, *stats_families(stats)]


def stats_families(stats: Any) -> list[Metric]:
    """The gauges of a ``traitflow.store.pipeline_stats.PipelineStats``."""
    rejects = GaugeMetricFamily(
        "traitflow_events_rejected", "Rejected input rows stored, by reject reason", labels=["reason"]
    )
    for reason, n in stats.rejects_by_reason.items():
        rejects.add_metric([reason], n)
    families: list[Metric] = [
        GaugeMetricFamily("traitflow_events_ingested", "Events stored", value=stats.events_stored),
        rejects,
        GaugeMetricFamily(
            "traitflow_profiles_current", "Customers with a current profile", value=stats.profiles_current
        ),
    ]
    if stats.latest_profile_as_of is not None:
        families.append(
            GaugeMetricFamily(
                "traitflow_profiles_latest_as_of_timestamp_seconds",
                "Newest as_of among current profiles (Unix time)",
                value=stats.latest_profile_as_of.timestamp(),
            )
        )
    if stats.active_model_version is not None:
        families.append(
            GaugeMetricFamily(
                "traitflow_active_model_version", "The active model version", value=stats.active_model_version
            )
        )
    if stats.last_retrain is not None:
        families.extend(_retrain_families(stats.last_retrain))
    return families


def _retrain_families(last: Any) -> list[Metric]:
    version = GaugeMetricFamily(
        "traitflow_last_retrain_model_version", "Version of the newest retrained model (promoted or rejected)"
    )
    version.add_metric([], last.model_version)
    gate = GaugeMetricFamily(
        "traitflow_last_retrain_gate_passed",
        "1 when the newest retrained model passed the quality gate, 0 when the gate rejected it",
        labels=["model_version"],
    )
    gate.add_metric([str(last.model_version)], 1 if last.gate_passed else 0)
    drift = GaugeMetricFamily(
        "traitflow_last_retrain_drift",
        "Drift of the newest retrained model from the model active before it, by measure",
        labels=["measure"],
    )
    for measure, value in sorted(last.drift.items()):
        drift.add_metric([measure], value)
    return [version, gate, drift]


STORE_STATS = StoreStatsCollector()


@functools.cache
def exposition_registry() -> CollectorRegistry:
    """What the route exposes: this process's registry, or in multiprocess mode one that sums every
    worker's files; either way with the Store's gauges."""
    if not os.environ.get(MULTIPROC_ENV):
        REGISTRY.register(STORE_STATS)
        return REGISTRY
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(STORE_STATS)
    return registry


def check_token(request: Request) -> None:
    """401 unless the request carries ``TRAITFLOW_METRICS_TOKEN`` as a Bearer token (when set)."""
    expected = os.environ.get(TOKEN_ENV, "")
    if not expected:
        return
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {expected}".encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "metrics need the bearer token", {"WWW-Authenticate": "Bearer"}
        )


def metrics(request: Request) -> Response:
    """``GET /metrics``: the Prometheus text exposition (sync: the Store read runs in a thread)."""
    check_token(request)
    return Response(generate_latest(exposition_registry()), media_type=CONTENT_TYPE_LATEST)
