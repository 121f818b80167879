"""The api-server's CPU per request outside the library: the plugin's HTTP layer (parsing and
validating the body, auth, its middlewares, the thread-pool hop, the response model and its JSON)
and Airflow's root app around it, in-process.

The library calls behind the routes are stubs returning fixed answers: ``update_from_events`` (an
``EventUpdate`` with one profile of ``--traits`` traits, as a load-test post gets), the profile
cache's ``cached_hit`` and ``cached_similar_hit``; the Store pool holds placeholder objects. Each
request is one ASGI call (no socket, no uvicorn HTTP parsing) with a Bearer token whose granted
decision is cached, as in the load test. Two targets per route: the plugin's FastAPI app alone
and Airflow's api-server app (``create_app(apps="core")``) with the plugin mounted, so the
difference is what Airflow's root app and middlewares add. Prints the CPU (the whole
process, thread-pool threads included) and wall microseconds per request (medians of batch means):

    .venv/bin/python bench/http_overhead.py [--requests 3000] [--profile post --target plugin] >out.txt

Airflow is configured in a temporary ``AIRFLOW_HOME`` (SQLite metadata, migrated at start).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CUSTOMER = "customer-000042"
EVENT = {
    "event_time": "2026-03-29T10:11:12.345Z",
    "action": "view",
    "product_id": "product-0007",
    "category": "category-3",
    "price": 12.5,
    "session_id": "load-1774779072.345",
}


@dataclass(frozen=True)
class Route:
    """One request of the load test's mix."""

    name: str
    method: str
    path: str  # below the plugin's prefix
    body: bytes = b""


ROUTES = (
    Route("post", "POST", f"/api/customers/{CUSTOMER}/events", json.dumps({"events": [EVENT]}).encode()),
    Route("read", "GET", f"/api/customers/{CUSTOMER}"),
    Route("similar", "GET", f"/api/customers/{CUSTOMER}/similar"),
)


def configure_airflow(home: Path) -> None:
    """The api-server's settings of ``servers.py``, set before anything imports Airflow."""
    (home / "dags").mkdir()
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH": str(home / "bundles"),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(64),
            "TRAITFLOW_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",  # never connected to
            "TRAITFLOW_DATA_DIR": str(home / "data"),
        }
    )
    os.environ.pop("TRAITFLOW_REDIS_URL", None)
    for folder in (REPO / "include", REPO / "plugins"):
        if str(folder) not in sys.path:
            sys.path.append(str(folder))


def fixed_update(n_traits: int) -> Any:
    """What ``update_from_events`` returns for one stored event of a profiled customer."""
    from traitflow.online_update import EventUpdate, UpdatedProfile

    ids = tuple(range(n_traits))
    profile = UpdatedProfile(
        customer_id=CUSTOMER,
        as_of=datetime(2026, 3, 29, 23, 59, 59, 999999, tzinfo=UTC),
        model_version=3,
        trait_ids=ids,
        labels=tuple(f"trait {i}: category-{i} / product-{i:04d}" for i in ids),
        scores=tuple(1 / (i + 2) for i in ids),
        dominant_trait_id=0,
        n_events=21,
        n_known_tokens=20,
        confidence=20 / 23,
        cold_start="none",
    )
    return EventUpdate(
        source="api:admin:2026-03-29T10:11:12.345678+00:00",
        n_received=1,
        n_inserted=1,
        n_already_present=0,
        n_rejected=0,
        rejects=(),
        profiles=(profile,),
        unprofiled=(),
    )


def fixed_profile(n_traits: int, vector_size: int) -> dict[str, Any]:
    """A cached profile as ``profile_cache.decode_profile`` returns it."""
    import numpy as np

    return {
        "customer_id": CUSTOMER,
        "as_of": datetime(2026, 3, 28, 23, 59, 59, 999999, tzinfo=UTC),
        "updated_at": datetime(2026, 3, 29, 2, 0, tzinfo=UTC),
        "model_version": 3,
        "dominant_trait_id": 0,
        "dominant_label": "trait 0",
        "n_events": 20,
        "cold_start": "none",
        "n_known_tokens": 19,
        "confidence": 19 / 22,
        "traits": [{"trait_id": i, "label": f"trait {i}", "score": 1 / (i + 2)} for i in range(n_traits)],
        "embedding": np.linspace(-1, 1, vector_size, dtype=np.float32),
    }


def stub_library(n_traits: int, vector_size: int) -> None:
    """Fixed answers for the library calls behind the routes, and placeholder Stores in the pool."""
    from traitflow_web.pool import POOL

    import traitflow.online_update as online_update
    import traitflow.profile_cache as profile_cache

    update = fixed_update(n_traits)
    profile = fixed_profile(n_traits, vector_size)
    similar = json.dumps(
        {
            "customer_id": CUSTOMER,
            "model_version": 3,
            "min_events": 3,
            "similar": [
                {"rank": r, "customer_id": f"customer-{r:06d}", "similarity": 0.9, "dominant_trait_id": 0}
                for r in range(1, 11)
            ],
        }
    ).encode()
    online_update.update_from_events = lambda store, rows, run_id: update  # type: ignore[assignment]  # noqa: ARG005
    profile_cache.cached_hit = lambda store, customer_id: dict(profile)  # type: ignore[assignment]  # noqa: ARG005
    profile_cache.cached_similar_hit = lambda store, question: similar  # type: ignore[assignment]  # noqa: ARG005

    class PlaceholderStore:
        schema = "traitflow"

    key = POOL.settings()
    for _ in range(POOL.max_idle):
        POOL.keep(PlaceholderStore(), key, reusable=True)


async def call(app: Any, route: Route, prefix: str, headers: list[tuple[bytes, bytes]]) -> int:
    """One request through ``app``'s ASGI interface; its status code."""
    path = prefix + route.path
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": route.method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [*headers, (b"content-length", str(len(route.body)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
        "state": {},
    }
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)  # the client stays connected
        sent = True
        return {"type": "http.request", "body": route.body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def per_request(
    app: Any, route: Route, prefix: str, headers: list[tuple[bytes, bytes]], n: int
) -> tuple[float, float]:
    """Mean CPU and wall microseconds of ``n`` sequential requests (after a warm-up)."""
    for _ in range(20):
        status = await call(app, route, prefix, headers)
        if status != 200:
            raise RuntimeError(f"{route.method} {prefix}{route.path}: status {status}")
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        await call(app, route, prefix, headers)
    return (time.process_time() - cpu) / n * 1e6, (time.perf_counter() - wall) / n * 1e6


def build_targets() -> dict[str, tuple[Any, str]]:
    """``{name: (ASGI app, path prefix of the plugin)}``: the plugin app and Airflow's app."""
    from airflow.api_fastapi.app import create_app
    from airflow.utils import db

    db.upgradedb()
    airflow_app = create_app(apps="core")
    plugin_app = sys.modules["traitflow_web.app"].app  # the instance Airflow mounted
    return {"plugin": (plugin_app, ""), "airflow": (airflow_app, "/traitflow")}


def bearer_headers() -> list[tuple[bytes, bytes]]:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
    return [
        (b"host", b"127.0.0.1:8080"),
        (b"authorization", f"Bearer {token}".encode()),
        (b"content-type", b"application/json"),
        (b"accept-encoding", b"identity"),
    ]


def profiled(run: Callable[[], Any], top: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    run()
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(top)


def measured(
    targets: dict[str, tuple[Any, str]], headers: list[tuple[bytes, bytes]], n: int, batches: int
) -> list[tuple[str, str, float, float]]:
    """``(route, target, cpu_us, wall_us)``: medians over ``batches`` batches of ``n / batches``
    requests, the targets interleaved so that a busy moment of the machine hits them alike."""
    loop = asyncio.new_event_loop()
    rows = []
    for route in ROUTES:
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in targets}
        for _ in range(batches):
            for name, (app, prefix) in targets.items():
                samples[name].append(
                    loop.run_until_complete(per_request(app, route, prefix, headers, n // batches))
                )
        for name, pairs in samples.items():
            rows.append(
                (
                    route.name,
                    name,
                    statistics.median(c for c, _ in pairs),
                    statistics.median(w for _, w in pairs),
                )
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=3000, help="per route and target")
    parser.add_argument("--batches", type=int, default=6, help="the medians are over this many batches")
    parser.add_argument("--traits", type=int, default=8, help="traits per profile (the load test's k)")
    parser.add_argument("--vector-size", type=int, default=16)
    parser.add_argument("--profile", choices=[r.name for r in ROUTES], help="cProfile this route instead")
    parser.add_argument(
        "--target", choices=["plugin", "airflow"], default="plugin", help="the app --profile calls"
    )
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="http-overhead-"))
    try:
        configure_airflow(home)
        targets = build_targets()
        stub_library(args.traits, args.vector_size)
        headers = bearer_headers()
        if args.profile:
            route = next(r for r in ROUTES if r.name == args.profile)
            app, prefix = targets[args.target]
            loop = asyncio.new_event_loop()
            profiled(
                lambda: loop.run_until_complete(per_request(app, route, prefix, headers, args.requests)), 40
            )
            return
        rows = measured(targets, headers, args.requests, args.batches)
        print(f"{'route':8} {'target':8} {'cpu_us':>8} {'wall_us':>8}")
        for route_name, target, cpu, wall in rows:
            print(f"{route_name:8} {target:8} {cpu:8.0f} {wall:8.0f}")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
