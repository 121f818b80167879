"""The shard plan's cost: hashing a run's customers once and writing them to ``shard_members``.

``Store.plan_shards`` (what ``plan_update`` / ``plan_recompute`` call) on ``--customers``
synthetic ids in a throw-away schema, then one shard's read of its members
(``Store.shard_customers``) and the table's size per row. The hash alone (``shards_of``) is timed
apart: it is what every shard repeated over every customer before membership was planned once.

    python bench/bench_shard_plan.py --customers 1000000 --shards 16 \\
        --database-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import json
import time
import uuid

import numpy as np

from traitflow.shards import shards_of
from traitflow.store import Store


def measure(database_url: str, n_customers: int, n_shards: int) -> dict[str, float | int]:
    ids = np.array([f"customer-{i:09d}" for i in range(n_customers)], dtype=object)
    started = time.perf_counter()
    shards_of(ids, n_shards)
    hash_s = time.perf_counter() - started
    store = Store(database_url, f"bench_plan_{uuid.uuid4().hex[:8]}")
    try:
        store.upgrade()
        started = time.perf_counter()
        plan = store.plan_shards("bench:plan", n_shards, ids)
        plan_s = time.perf_counter() - started
        started = time.perf_counter()
        members = store.shard_customers(plan.plan_id, 0)
        read_s = time.perf_counter() - started
        row = store.connection.execute("SELECT pg_total_relation_size('shard_members')").fetchone()
        size = int(row[0]) if row else 0
    finally:
        store.drop_schema()
        store.close()
    return {
        "customers": n_customers,
        "shards": n_shards,
        "hash_s": round(hash_s, 2),
        "plan_shards_s": round(plan_s, 2),
        "shard0_customers": len(members),
        "shard0_read_s": round(read_s, 3),
        "shard_members_bytes_per_row": round(size / n_customers),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--database-url", required=True)
    args = parser.parse_args()
    print(json.dumps(measure(args.database_url, args.customers, args.shards)))


if __name__ == "__main__":
    main()
