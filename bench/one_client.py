"""One client's latency through the api-server: cached profile reads, Airflow's own health route
and event posts, sequential, from one keep-alive connection; optionally this checkout against
another revision, the two servers side by side and measured in alternating blocks (on a busy
machine, load drifts between runs; alternating shares it fairly).

Each variant gets its own ``airflow api-server`` (one worker, the load test's settings: see
``servers.api_server``) with its revision's plugin and library, both reading one schema (the
load test's data, built here unless ``--schema`` names one kept with ``bench/load_test.py
--keep-schema``) through one redis-server of its own. The profiles read are warmed first, so
every measured read is a cache hit. Prints p50 / p90 / p99 per variant and route:

    .venv/bin/python bench/one_client.py --database-url postgresql://postgres@127.0.0.1:5432/test \\
        --against 555a0ed --blocks 12 --reads 50 --posts 5
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote

import numpy as np
from load_server import BuiltData, Workload, build_data, log_in
from servers import REPO, redis_server

READ_CUSTOMERS = 200  # the most read customers, read in turn (all cached after the warm-up)
HEALTH = "/api/v2/monitor/health"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database-url", default=os.environ.get("TRAITFLOW_DATABASE_URL"))
    p.add_argument("--schema", help="a schema built by the load test (--keep-schema); default: build one")
    p.add_argument(
        "--against", metavar="REV", help="also a server of this git revision, measured alternately"
    )
    p.add_argument("--blocks", type=int, default=12, help="blocks per variant (the order alternates)")
    p.add_argument("--reads", type=int, default=50, help="profile reads per block")
    p.add_argument("--health", type=int, default=10, help="health requests per block")
    p.add_argument("--posts", type=int, default=0, help="event posts per block (one event each)")
    return p.parse_args(argv)


def export(rev: str, into: Path) -> Path:
    """The tree of ``rev`` (``git archive``) under ``into``; the repository is not touched."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def _servers_of(tree: Path) -> ModuleType:
    """``bench/servers.py`` of ``tree``: its ``api_server`` mounts that tree's plugins."""
    name = f"servers_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, tree / "bench" / "servers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def server_of(tree: Path, url: str, schema: str, redis_url: str, home: Path) -> Iterator[Any]:
    """A logged-in ``httpx.Client`` (one connection) to an api-server running ``tree``'s code."""
    import httpx

    module = _servers_of(tree)
    settings = module.ServerSettings(url, schema, workers=1, redis_url=redis_url, multiprocess_metrics=True)
    before = os.environ.get("PYTHONPATH")
    # the server imports traitflow and the plugin package from this tree
    os.environ["PYTHONPATH"] = os.pathsep.join(str(tree / d) for d in ("include", "plugins", "dags"))
    try:
        context = module.api_server(settings, home)
        base, password = context.__enter__()
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = before
    try:
        with httpx.Client(timeout=30.0) as login:
            token = log_in(login, base, password)
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, headers=headers, timeout=30.0, limits=limits) as client:
            yield client
    finally:
        context.__exit__(None, None, None)


class Poster:
    """Bodies of one valid event each, for the data's profiled customers, at unique times."""

    def __init__(self, data: BuiltData) -> None:
        self.data = data
        self.next = int(time.time() * 1000) % 80_000_000  # milliseconds into post_day: unique per run

    def __call__(self) -> tuple[str, dict[str, Any]]:
        self.next += 1
        product = self.data.products[self.next % len(self.data.products)]
        when = self.data.post_day + timedelta(milliseconds=self.next)
        event = {
            "event_time": when.isoformat().replace("+00:00", "Z"),
            "action": "view",
            "product_id": product.product_id,
            "category": product.category,
            "price": product.price,
            "session_id": f"one-client-{self.next}",
        }
        path = (
            f"/traitflow/api/customers/{quote(self.data.customer_ids[self.next % READ_CUSTOMERS], safe='')}"
        )
        return f"{path}/events", {"events": [event]}


def _timed(send: Any, *args: Any, **kwargs: Any) -> float:
    """Milliseconds of ``send(*args, **kwargs)`` (an ``httpx.Client`` method); raises unless 2xx."""
    started = time.perf_counter()
    response = send(*args, **kwargs)
    elapsed = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    return elapsed


def measure(
    clients: Sequence[Any], data: BuiltData, args: argparse.Namespace
) -> list[dict[str, list[float]]]:
    """Milliseconds per variant and route, ``args.blocks`` blocks each, the order alternating."""
    paths = [f"/traitflow/api/customers/{quote(c, safe='')}" for c in data.customer_ids[:READ_CUSTOMERS]]
    for client in clients:  # every profile read below is a cache hit
        for path in paths:
            client.get(path).raise_for_status()
    poster = Poster(data)
    times: list[dict[str, list[float]]] = [{"read": [], "health": [], "post": []} for _ in clients]
    n = 0
    for block in range(args.blocks):
        order = range(len(clients)) if block % 2 == 0 else reversed(range(len(clients)))
        for i in order:
            client = clients[i]
            for _ in range(args.reads):
                n += 1
                times[i]["read"].append(_timed(client.get, paths[n % len(paths)]))
            for _ in range(args.health):
                times[i]["health"].append(_timed(client.get, HEALTH))
            for _ in range(args.posts):
                path, body = poster()
                times[i]["post"].append(_timed(client.post, path, json=body))
    return times


def render(names: Sequence[str], times: Sequence[dict[str, list[float]]]) -> str:
    lines = ["| variant | route | n | p50 ms | p90 ms | p99 ms |", "|---|---|---:|---:|---:|---:|"]
    for name, routes in zip(names, times, strict=True):
        for route, ms in routes.items():
            if ms:
                p50, p90, p99 = np.percentile(ms, [50, 90, 99])
                lines.append(f"| {name} | {route} | {len(ms)} | {p50:.2f} | {p90:.2f} | {p99:.2f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.database_url:
        raise SystemExit("--database-url (or TRAITFLOW_DATABASE_URL) is required")
    from load_test import existing_data

    from traitflow.store import Store

    with tempfile.TemporaryDirectory(prefix="traitflow-one-client-") as tmp:
        work = Path(tmp)
        schema = args.schema or f"load_{uuid.uuid4().hex[:10]}"
        try:
            if args.schema is None:
                build_data(args.database_url, schema, Workload(), work / "build")
            with Store(args.database_url, schema) as store:
                data = existing_data(store)
            trees = [REPO] + ([export(args.against, work / "against")] if args.against else [])
            names = ["this checkout"] + ([args.against] if args.against else [])
            with redis_server() as redis, contextlib.ExitStack() as stack:
                clients = [
                    stack.enter_context(
                        server_of(tree, args.database_url, schema, redis.url, work / f"home{i}")
                    )
                    for i, tree in enumerate(trees)
                ]
                times = measure(clients, data, args)
        finally:
            if args.schema is None:
                with Store(args.database_url, schema) as store:
                    store.drop_schema()
    print(render(names, times))
    print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
