"""One client's cost of an event post and of a cached profile read, in-process (no HTTP).

Posts go through ``online_update.update_from_events`` (validate, store, profile, write) for a
random profiled customer, one valid event each and every fifth post one invalid event more;
reads go through ``profile_cache.ProfileCache`` against a redis-server of its own, every
customer read once before (all hits). Prints the medians of wall time and of this process's
CPU time. Builds the load test's data in a schema of its own (``--schema`` reuses one built by
an earlier run with ``--keep-schema``):

    .venv/bin/python bench/post_cost.py --database-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from load_server import BuiltData, Workload, build_data
from servers import redis_server


def timed(call: Callable[[], Any], n: int) -> tuple[float, float]:
    """Median wall and CPU milliseconds of ``n`` calls."""
    wall, cpu = [], []
    for _ in range(n):
        started, cpu_started = time.perf_counter(), time.process_time()
        call()
        cpu.append((time.process_time() - cpu_started) * 1000)
        wall.append((time.perf_counter() - started) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def poster(store: Any, data: BuiltData, seed: int = 0) -> Callable[[], None]:
    """One post per call: a random profiled customer, one valid event at a time not posted
    before (seeds 7,000 s apart), every fifth post one invalid event more."""
    from traitflow.online_update import update_from_events

    rng = np.random.default_rng(seed)
    first = int(time.time() * 1000) % 80_000_000 + seed * 7_000_000
    offsets = iter(range(first, 10**9))  # unique event times

    def post() -> None:
        customer = data.customer_ids[int(rng.integers(len(data.customer_ids)))]
        product = data.products[int(rng.integers(len(data.products)))]
        offset = next(offsets)
        when = data.post_day + timedelta(milliseconds=offset)
        event = {
            "customer_id": customer,
            "event_time": when.isoformat().replace("+00:00", "Z"),
            "action": "view",
            "product_id": product.product_id,
            "category": product.category,
            "price": product.price,
            "session_id": f"cost-{offset}",
        }
        rows = [event, {**event, "action": "teleport"}] if offset % 5 == 0 else [event]
        if not update_from_events(store, rows, run_id="post-cost").profiles:
            raise RuntimeError("a post profiled nobody")

    return post


def measure(store: Any, data: BuiltData, redis_url: str, n_posts: int, n_reads: int) -> dict[str, float]:
    from traitflow.profile_cache import CacheSettings, ProfileCache

    post = poster(store, data)
    timed(post, 3)  # the model cache and connections warm
    post_wall, post_cpu = timed(post, n_posts)
    cache = ProfileCache(CacheSettings(redis_url))
    try:
        customers = list(data.customer_ids[:200])
        for customer in customers:
            cache.current_profile(store, customer)
        reads = iter(customers * (n_reads // len(customers) + 1))
        read_wall, read_cpu = timed(lambda: cache.current_profile(store, next(reads)), n_reads)
    finally:
        cache.close()
    return {
        "post_wall_ms": post_wall,
        "post_cpu_ms": post_cpu,
        "read_wall_ms": read_wall,
        "read_cpu_ms": read_cpu,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database-url", default=os.environ.get("TRAITFLOW_DATABASE_URL"), required=False)
    p.add_argument("--schema", help="a schema built by an earlier run (--keep-schema)")
    p.add_argument("--keep-schema", action="store_true")
    p.add_argument("--posts", type=int, default=30)
    p.add_argument("--reads", type=int, default=1000)
    args = p.parse_args()
    if not args.database_url:
        raise SystemExit("--database-url (or TRAITFLOW_DATABASE_URL) is required")
    from traitflow.store import Store

    schema = args.schema or f"cost_{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory() as work:
        if args.schema is None:
            data = build_data(args.database_url, schema, Workload(), Path(work))
        else:
            from load_test import existing_data

            with Store(args.database_url, schema) as store:
                data = existing_data(store)
        try:
            with Store(args.database_url, schema) as store, redis_server() as redis:
                result = measure(store, data, redis.url, args.posts, args.reads)
        finally:
            if args.schema is None and not args.keep_schema:
                with Store(args.database_url, schema) as store:
                    store.drop_schema()
    print(
        f"post: wall p50 {result['post_wall_ms']:.1f} ms, CPU p50 {result['post_cpu_ms']:.1f} ms"
        f" ({args.posts});"
        f" cached read: wall p50 {result['read_wall_ms']:.2f} ms, CPU p50 {result['read_cpu_ms']:.2f} ms"
        f" ({args.reads}); load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
