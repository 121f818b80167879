"""Benchmark: profile write rate of ``Store.write_profiles`` (binary COPY, direct or via a temp table).

One "profile row" = one customer written to both tables in one transaction: the history row
(``customer_profile_history``) and the current row (``customer_profiles``: traits and embedding).

Phases, each timed separately on the same schema:

* ``insert``    first write of a date for customers never seen: every row new in both tables (a
                first load or a new cohort; COPY straight into the tables);
* ``rerun``     the same batch again: nothing changes (idempotent re-run; rows compared, not written);
* ``update``    the next date with new values for everyone (the weekly full recompute): history
                inserts + every current row rewritten;
* ``backfill``  an older date: history inserts, current rows left alone (they are newer).

``encode`` is the client-side share (checks + building the COPY payloads of the insert phase) for
reference. The batch is in random customer order, the worst case: pipeline batches arrive sorted,
which spares the client-side sort (about 0.14 s of ``prepare`` at 200K rows).

Usage::

    python bench/bench_store_writes.py --rows 200000            # target: >= 100K profile rows/s
    python bench/bench_store_writes.py --rows 2000 --traits 4   # seconds; the test suite runs this

The database comes from ``--database-url``, else ``TRAITFLOW_DATABASE_URL``, else the embedded
server. A throw-away schema is created and dropped. Results are printed and written as JSON to
``bench/results/`` (gitignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from traitflow.config import PipelineConfig, TraitParams
from traitflow.model import TokenTable, TraitflowModel, TraitModel
from traitflow.profile_batch import COLD_START_VALUES, ProfileBatch
from traitflow.store import Store, copybin, mask_url
from traitflow.store import profiles as store_profiles

RESULTS_DIR = Path(__file__).resolve().parent / "results"
AS_OF = datetime(2024, 6, 1, tzinfo=UTC)


def make_model(n_traits: int, dim: int, n_tokens: int = 1000, seed: int = 0) -> TraitflowModel:
    rng = np.random.default_rng(seed)
    products = np.array([f"p{i}" for i in range(n_tokens)], dtype=object)
    return TraitflowModel(
        trained_through=AS_OF - timedelta(days=1),
        config=PipelineConfig(traits=TraitParams(n_traits=n_traits)),
        tokens=TokenTable(
            tokens=np.array([f"view_{p}" for p in products], dtype=object),
            actions=np.array(["view"] * n_tokens, dtype=object),
            product_ids=products,
            categories=np.array([f"cat{i % 20}" for i in range(n_tokens)], dtype=object),
            counts=rng.integers(1, 1000, n_tokens).astype(np.int64),
            vectors=rng.standard_normal((n_tokens, dim)).astype(np.float32),
        ),
        traits=TraitModel(
            components=rng.random((n_traits, 2 * dim)),
            center=rng.standard_normal(dim),
            trait_ids=np.arange(1, n_traits + 1, dtype=np.int64),
            labels=[f"trait {i}" for i in range(1, n_traits + 1)],
            top_products=[["p1", "p2"] for _ in range(n_traits)],
            top_categories=[["cat1"] for _ in range(n_traits)],
            population_profile=np.full(n_traits, 1.0 / n_traits),
            population_vector=np.zeros(dim, dtype=np.float32),
        ),
    )


def make_batch(
    version: int, ids: np.ndarray, n_traits: int, dim: int, as_of: datetime, seed: int
) -> ProfileBatch:
    rng = np.random.default_rng(seed)
    n = len(ids)
    n_events = rng.integers(1, 300, n).astype(np.int64)
    return ProfileBatch(
        as_of=as_of,
        model_version=version,
        customer_ids=ids,
        embeddings=rng.standard_normal((n, dim)).astype(np.float32),
        profiles=rng.dirichlet(np.ones(n_traits), n),
        trait_ids=np.arange(1, n_traits + 1, dtype=np.int64),
        n_events=n_events,
        cold_start=np.asarray(COLD_START_VALUES, dtype=object)[rng.integers(0, 3, n)],
        n_known_tokens=(n_events * rng.random(n)).astype(np.int64),  # as the pipeline writes it
    )


def _cpu_seconds(pid: int) -> float | None:
    """User+system CPU seconds of a local process (the server backend), None if not readable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _timed(store: Store, batch: ProfileBatch) -> dict[str, Any]:
    """Wall time, plus CPU time of this process and of the server backend (if local).

    CPU seconds do not grow when other jobs compete for the cores, so rows per backend CPU
    second is a contention-independent figure next to the wall-clock rate.
    """
    backend = store.connection.info.backend_pid
    server_before, client_before = _cpu_seconds(backend), time.process_time()
    started = time.perf_counter()
    report = store.write_profiles(batch)
    wall = time.perf_counter() - started
    server_after = _cpu_seconds(backend)
    server = None if server_before is None or server_after is None else server_after - server_before
    return {
        "seconds": round(wall, 4),
        "rows_per_s": round(len(batch) / wall),
        "client_cpu_s": round(time.process_time() - client_before, 3),
        "server_cpu_s": None if server is None else round(server, 3),
        "rows_per_server_cpu_s": None if not server else round(len(batch) / server),
        "report": report.to_dict(),
    }


def run(
    rows: int, n_traits: int, dim: int, database_url: str | None, schema: str | None, keep: bool
) -> dict[str, Any]:
    schema = schema or f"bench_store_{uuid.uuid4().hex[:8]}"
    load_average = [round(x, 2) for x in os.getloadavg()]  # other jobs on the machine skew wall time
    store = Store(database_url, schema)
    try:
        store.upgrade()
        version = store.save_model(make_model(n_traits, dim))
        store.promote(version)
        # Random order: the store sorts before writing (pipeline batches come sorted already).
        order = np.random.default_rng(0).permutation(rows)
        ids = np.array([f"customer_{i:09d}" for i in order], dtype=object)
        batch = make_batch(version, ids, n_traits, dim, AS_OF, seed=1)

        with store.connection.transaction():  # client-side share only (checks + payload), rolled back
            started = time.perf_counter()
            prepared = store_profiles.prepare_batch(store.connection, batch)
            payload_bytes = sum(
                len(part)
                for columns in (prepared.history_columns(), prepared.current_columns())
                for part in copybin.iter_payload(columns)
            )
            encode_seconds = time.perf_counter() - started

        phases: dict[str, dict[str, Any]] = {}
        for name, b in (
            ("insert", batch),
            ("rerun", batch),
            ("update", make_batch(version, ids, n_traits, dim, AS_OF + timedelta(days=1), seed=2)),
            ("backfill", make_batch(version, ids, n_traits, dim, AS_OF - timedelta(days=1), seed=3)),
        ):
            phases[name] = _timed(store, b)
        server = store.connection.execute("SHOW server_version").fetchone()
        counts = store.table_counts()
    finally:
        if not keep:
            store.drop_schema()
        store.close()
    return {
        "benchmark": "store_profile_writes",
        "created_at": datetime.now(UTC).isoformat(),
        "rows": rows,
        "n_traits": n_traits,
        "vector_size": dim,
        "copy_payload_mb": round(payload_bytes / 1e6, 1),
        "encode_seconds": round(encode_seconds, 4),
        "phases": phases,
        "table_counts": {k: counts[k] for k in ("customer_profiles", "customer_profile_history")},
        "database": {"url": mask_url(store.url), "server_version": server[0] if server else None},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "load_average": load_average,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="customers per batch (default 200000)")
    parser.add_argument("--traits", type=int, default=16, help="traits per profile (default 16)")
    parser.add_argument("--dim", type=int, default=64, help="embedding size (default 64)")
    parser.add_argument(
        "--database-url", default=None, help="default: $TRAITFLOW_DATABASE_URL, else embedded"
    )
    parser.add_argument("--schema", default=None, help="schema to use (default: a throw-away bench_store_*)")
    parser.add_argument("--keep", action="store_true", help="keep the schema afterwards")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the JSON result")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.traits < 1 or args.dim < 1:
        parser.error("--rows, --traits and --dim must be >= 1")

    result = run(args.rows, args.traits, args.dim, args.database_url, args.schema, args.keep)
    print(
        f"profile writes: {args.rows} customers x {args.traits} traits x {args.dim}-dim embeddings "
        f"({result['copy_payload_mb']} MB COPY payload) on {result['database']['url']}"
    )
    encode_rate = args.rows / result["encode_seconds"]
    print(f"  {'encode (client)':<10} {result['encode_seconds']:7.2f} s {encode_rate:>10,.0f} rows/s")
    print(f"  load average before: {result['load_average']}")
    for name, phase in result["phases"].items():
        steps = " ".join(f"{k} {v:.2f}" for k, v in phase["report"]["timings"].items())
        cpu = (
            f"server cpu {phase['server_cpu_s']:.2f} s = {phase['rows_per_server_cpu_s']:,} rows/cpu-s"
            if phase["server_cpu_s"]
            else "server cpu n/a"
        )
        print(f"  {name:<10} {phase['seconds']:7.2f} s {phase['rows_per_s']:>10,} rows/s  {cpu}  [{steps}]")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"store_writes_{args.rows}_{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    print(f"  -> {path}")
    result["json_path"] = str(path)
    return result


if __name__ == "__main__":
    main()
