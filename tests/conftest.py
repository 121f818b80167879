"""Shared fixtures: a real PostgreSQL for every database test, one throw-away schema per test.

* ``database_url`` (session): ``TRAITFLOW_TEST_DATABASE_URL`` if set (e.g.
  ``postgresql://postgres@127.0.0.1:5432/test``), else an embedded server (pgserver) started in
  a ``mkdtemp`` dir for this session (about a second; stopped and deleted at the end; not under
  pytest's tmp_path, whose parent pytest makes private again when any session starts, see
  ``traitflow.store.db``). Database tests never skip and never mock the database.
* ``store``: a ``Store`` on a fresh schema ``tf_test_<random>``, migrated, dropped afterwards.
* ``make_store``: more ``Store`` objects, by default on the ``store`` fixture's schema (a second
  connection, e.g. for concurrency tests), or on another fresh schema (``fresh=True``).
* ``build_model`` / ``build_profile_batch``: small hand-made ``TraitflowModel`` / ``ProfileBatch``
  with awkward values (bit patterns, quotes, emoji), as plain functions and as fixtures.
* ``hostile_events``: a headerless taobao-format CSV with 42 good rows and 9 bad ones of every
  kind (malformed, undecodable, invalid values), with the expected rejects.

Nothing here imports Airflow (tests/dags/conftest.py must configure it first).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql

from traitflow.config import IncrementParams, PipelineConfig, TraitParams, TriggerParams
from traitflow.model import Lineage, TokenTable, TraitflowModel, TraitModel, TraitProducts
from traitflow.profile_batch import COLD_START_VALUES, ProfileBatch
from traitflow.store import Store, embedded_url, normalize_url, stop_embedded


def _new_schema() -> str:
    return f"tf_test_{uuid.uuid4().hex[:12]}"


def _drop_schema(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """URL of the PostgreSQL the tests use (external via env var, else embedded)."""
    url = os.environ.get("TRAITFLOW_TEST_DATABASE_URL", "").strip()
    if url:
        yield normalize_url(url)
        return
    pgdata = Path(tempfile.mkdtemp(prefix="traitflow-test-pg-")) / "pgdata"
    try:
        url = embedded_url(pgdata, delete_on_exit=True)
        # A throw-away server: durability settings only cost time (commits, shutdown checkpoint).
        with psycopg.connect(url, autocommit=True) as conn:
            for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                conn.execute(sql.SQL("ALTER SYSTEM SET {} = off").format(sql.Identifier(setting)))
            conn.execute("SELECT pg_reload_conf()")
        yield url
    finally:
        stop_embedded(pgdata)
        shutil.rmtree(pgdata.parent, ignore_errors=True)


@pytest.fixture
def store_schema() -> str:
    """Name of the schema the ``store`` fixture uses (unique per test)."""
    return _new_schema()


@pytest.fixture
def store(database_url: str, store_schema: str) -> Iterator[Store]:
    """A migrated ``Store`` on its own schema; the schema is dropped after the test."""
    s = Store(database_url, store_schema)
    try:
        s.upgrade()
        yield s
    finally:
        s.close()
        _drop_schema(database_url, store_schema)


@pytest.fixture
def make_store(database_url: str, store_schema: str) -> Iterator[Callable[..., Store]]:
    """Factory: ``make_store()`` -> another Store on the ``store`` schema; ``fresh=True`` -> a new schema.

    Fresh schemas are *not* migrated (tests of migrations want them empty); all are dropped after.
    """
    opened: list[Store] = []
    schemas: set[str] = set()

    def _make(*, fresh: bool = False) -> Store:
        schema = _new_schema() if fresh else store_schema
        schemas.add(schema)
        s = Store(database_url, schema)
        opened.append(s)
        return s

    try:
        yield _make
    finally:
        for s in opened:
            s.close()
        for schema in schemas:
            _drop_schema(database_url, schema)


# ---------------------------------------------------------------------------- data factories


def build_model(
    *,
    n_tokens: int = 8,
    dim: int = 5,
    trait_ids: Sequence[int] = (3, 7, 11),
    trained_through: datetime = datetime(2024, 1, 7, tzinfo=UTC),
    seed: int = 0,
) -> TraitflowModel:
    """A small model whose arrays include awkward bit patterns (-0.0, subnormals, extremes)."""
    rng = np.random.default_rng(seed)
    k = len(trait_ids)
    actions = np.array(
        [["view", "cart", "purchase", "wishlist"][i % 4] for i in range(n_tokens)], dtype=object
    )
    products = np.array([f"p{i}" if i % 3 else f"p'{i};\\x" for i in range(n_tokens)], dtype=object)
    vectors = rng.standard_normal((n_tokens, dim)).astype(np.float32)
    if n_tokens >= 2 and dim >= 2:
        vectors[0, 0] = np.float32(-0.0)
        vectors[0, 1] = np.float32(1e-45)  # smallest float32 subnormal
        vectors[1, 0] = np.finfo(np.float32).max
        vectors[1, 1] = np.float32(1 / 3)
    components = rng.random((k, 2 * dim))  # H acts on [max(x - center, 0), max(center - x, 0)]
    components[0, 0] = 5e-324  # smallest float64 subnormal
    components[0, 1] = 0.1 + 0.2
    labels = [f'trait {t} ✨ "quoted", {{braces}}' for t in trait_ids]
    return TraitflowModel(
        trained_through=trained_through,
        config=PipelineConfig(traits=TraitParams(n_traits=k)),
        tokens=TokenTable(
            tokens=np.array([f"{a}_{p}" for a, p in zip(actions, products, strict=True)], dtype=object),
            actions=actions,
            product_ids=products,
            categories=np.array(
                ["" if i % 4 == 3 else f"cat {i % 3} 🛒" for i in range(n_tokens)], dtype=object
            ),
            counts=rng.integers(1, 10**12, n_tokens).astype(np.int64),
            vectors=vectors,
        ),
        traits=TraitModel(
            components=components,
            center=rng.standard_normal(dim),
            trait_ids=np.asarray(trait_ids, dtype=np.int64),
            labels=labels,
            top_products=[["p1", "a,b", "{x}", '"q"', "NULL", "back\\slash"][: 2 + i % 4] for i in range(k)],
            top_categories=[[f"cat {i}", ""] for i in range(k)],
            population_profile=np.full(k, 1.0 / k),
            population_vector=rng.standard_normal(dim).astype(np.float32),
            l1_penalty=0.0123,
            products=TraitProducts(
                np.array(["a,b", "p'1;\\x", "{x}", "🛒"], dtype=object),
                np.array([[0.5, 5e-324, -0.0, 0.1 + 0.2]] * k) * (1 + np.arange(k))[:, None],
            ),
        ),
        metrics={"hit_rate": 0.25, "nested": {"n": 3, "list": [1, 2.5, "x"]}},
        trait_match={"matched": [[3, 3]], "new": []},
    )


def build_profile_batch(
    model_version: int | None,
    customer_ids: Sequence[str],
    *,
    trait_ids: Sequence[int] = (3, 7, 11),
    dim: int = 5,
    as_of: datetime = datetime(2024, 1, 10, tzinfo=UTC),
    seed: int = 0,
    profiles: np.ndarray | None = None,
    known_tokens: bool = True,
) -> ProfileBatch:
    """Random but valid profiles (rows sum to 1) for ``customer_ids`` under ``trait_ids``; with
    ``known_tokens`` each customer's n_known_tokens is a random share of its n_events."""
    rng = np.random.default_rng(seed)
    n, k = len(customer_ids), len(trait_ids)
    embeddings = rng.standard_normal((n, dim)).astype(np.float32)
    profiles = rng.dirichlet(np.ones(k), n) if profiles is None else profiles
    n_events = rng.integers(0, 500, n).astype(np.int64)
    return ProfileBatch(
        as_of=as_of,
        model_version=model_version,
        customer_ids=np.asarray(customer_ids, dtype=object),
        embeddings=embeddings,
        profiles=profiles,
        trait_ids=np.asarray(trait_ids, dtype=np.int64),
        n_events=n_events,
        cold_start=np.asarray([COLD_START_VALUES[i % 3] for i in range(n)], dtype=object),
        n_known_tokens=(n_events * rng.random(n)).astype(np.int64) if known_tokens else None,
    )


@pytest.fixture(name="build_model")
def _build_model_fixture() -> Callable[..., TraitflowModel]:
    return build_model


@pytest.fixture(name="save_drifted_versions")
def _save_drifted_versions_fixture() -> Callable[[Store], DriftedVersions]:
    return save_drifted_versions


@pytest.fixture(name="build_profile_batch")
def _build_profile_batch_fixture() -> Callable[..., ProfileBatch]:
    return build_profile_batch


@dataclass(frozen=True)
class DriftedVersions:
    """``save_drifted_versions``'s two versions and what each must show: a full retrain (weighted
    mean drift 0.15 against its ``drift_threshold`` 0.2) and an increment of it (weighted mean
    0.01, recent-weighted 0.04, against its ``increment_drift_threshold`` 0.03)."""

    full: int
    incremental: int
    # model version -> (drift, recent_weighted_drift, drift_threshold, refit_on)
    expected: dict[int, tuple[float, float | None, float, str]]


def save_drifted_versions(store: Store) -> DriftedVersions:
    """Save a full and an incremental version with known drift and thresholds (the incremental
    one's config threshold differs from the one its drift recorded: the recorded one applies)."""
    config = PipelineConfig(
        traits=TraitParams(n_traits=3),
        triggers=TriggerParams(drift_threshold=0.2),
        increment=IncrementParams(increment_drift_threshold=0.5),
    )
    full = build_model(trained_through=datetime(2024, 1, 7, tzinfo=UTC))
    full.config, full.lineage = config, Lineage("full")
    full_version = store.save_model(full)
    store.update_model_metadata(full_version, drift={"measured": True, "weighted_mean_drift": 0.15})
    increment = build_model(trained_through=datetime(2024, 1, 14, tzinfo=UTC), seed=1)
    increment.config = config
    increment.lineage = Lineage("incremental", full_version, datetime(2024, 1, 7, tzinfo=UTC))
    increment_version = store.save_model(increment)
    drift = {
        "measured": True,
        "weighted_mean_drift": 0.01,
        "recent_weighted_drift": 0.04,
        "increment_threshold": 0.03,
    }
    store.update_model_metadata(increment_version, drift=drift)
    return DriftedVersions(
        full_version,
        increment_version,
        {
            full_version: (0.15, None, 0.2, "weighted_mean_drift"),
            increment_version: (0.01, 0.04, 0.03, "recent_weighted_drift"),
        },
    )


@dataclass(frozen=True)
class HostileEvents:
    """``lines``: the file's lines (bytes, no line end); ``rejects``: (line number, reason) of
    the bad ones, in file order; ``good_ids``: customer ids of the good rows."""

    lines: list[bytes]
    rejects: list[tuple[int, str]]
    good_ids: list[str]

    def write(self, path: Path) -> Path:
        path.write_bytes(b"\n".join(self.lines) + b"\n")
        return path

    def raw_bytes(self, raw: str) -> bytes:
        """The source line a reject's ``raw`` stands for: a JSON string of the line for line-level
        rejects, a JSON object of the fields (in column order) for value-level ones."""
        value = json.loads(raw)
        text = ",".join(value.values()) if isinstance(value, dict) else value
        return text.encode("utf-8", "surrogateescape")


# 2026-03-01T00:00:00Z: the rows fall on the day of the file name used by the DAG test.
HOSTILE_DAY_START = 1772323200
HOSTILE_BAD_LINES: list[tuple[bytes, str]] = [
    (b"u900,i1,c1,pv,1772323200,extra", "malformed_row"),
    (b"u901,i1,c1,pv", "malformed_row"),
    (b"u9\xff02,i1,c1,pv,1772323200", "invalid_encoding"),
    (b",i1,c1,pv,1772323200", "missing_customer_id"),
    (b"u904,i1,c1,teleport,1772323200", "unknown_action"),
    (b"u905,i1,c1,pv,-1772323200", "event_time_out_of_range"),
    (b"u906,i1,c1,pv,yesterday", "unparseable_event_time"),
    (b"u" + b"x" * 4999 + b",i1,c1,pv,1772323200", "oversized_field"),
    (b"u9\x0008,i1,c1,pv,1772323200", "control_characters_in_field"),
]
HOSTILE_GOOD_IDS = [f"u{i}" for i in range(40)] + ["x'); DROP TABLE events;--", "🛒 emoji 😀"]


@pytest.fixture
def hostile_events() -> HostileEvents:
    """42 good rows (two with an injection-looking and an emoji id), a bad one after every 4th."""
    actions = ("pv", "cart", "fav", "buy")
    good = [
        f"{cid},i{i % 7},c{i % 3},{actions[i % 4]},{HOSTILE_DAY_START + 60 * i}".encode()
        for i, cid in enumerate(HOSTILE_GOOD_IDS)
    ]
    lines: list[bytes] = []
    rejects: list[tuple[int, str]] = []
    bad = iter(HOSTILE_BAD_LINES)
    for i, line in enumerate(good):
        lines.append(line)
        if i % 4 == 3 and (item := next(bad, None)) is not None:
            lines.append(item[0])
            rejects.append((len(lines), item[1]))  # headerless: row_number = file line number
    assert len(rejects) == len(HOSTILE_BAD_LINES)
    return HostileEvents(lines, rejects, HOSTILE_GOOD_IDS)


# ------------------------------------------------------------------------------ redis

BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"


def _load_bench_servers() -> ModuleType:
    """``bench/servers.py`` (a redis-server and an ``airflow api-server`` of one's own, as the load
    test starts them), loaded by path: bench's folder is not put on the tests' ``sys.path``,
    where its module names (``report``, ``run``, ...) could shadow others."""
    spec = importlib.util.spec_from_file_location("traitflow_bench_servers", BENCH_DIR / "servers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


_SERVERS = _load_bench_servers()


@pytest.fixture(scope="session")
def servers() -> ModuleType:
    """The ``bench/servers.py`` module: ``free_port``, ``redis_server``, ``api_server``."""
    return _SERVERS


@pytest.fixture
def redis_server(servers: ModuleType) -> Iterator[Any]:
    """A redis-server of this test's own on a free loopback port (never the shared one), without
    persistence; stopped (even when paused with SIGSTOP) when the test ends."""
    with servers.redis_server() as server:
        yield server


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """pgserver logs from its own atexit hook, after pytest has closed the captured stream that
    Airflow's logging setup (tests/dags) attached handlers to; that only prints a spurious
    "--- Logging error ---" traceback at exit, so the logger is silenced once the tests are done."""
    import logging

    logging.getLogger("pgserver").disabled = True
