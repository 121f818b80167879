"""The CeleryExecutor for real, as docker-compose's celery profile runs it, on this machine.

An Airflow scheduler, dag-processor and api-server and two ``airflow celery worker`` processes
(``--celery-hostname`` worker-a / worker-b, concurrency 1 each) share a PostgreSQL metadata
database of the test's own (``traitflow_celery_<random>``, dropped at the end) and use the Redis
on 127.0.0.1:6379 as broker, on database 5 and under a key prefix of the test's own (only those
keys are deleted at the end). The daily DAG processes one synthetic day in 4 customer shards
(a backfill run: its dates need no start date before them, so the scheduler creates no run of
its own meanwhile).

Asserted: the run succeeds; its task instances ran on the workers (the ``hostname`` each
records, tests/scripts/worker_hostname.py) and the 4 shards, sent to the profiles queue, on both
(a worker running a task takes no other, so parallel shards must spread); the profiles it wrote
equal, row for row, those of an unsharded ``airflow dags test`` (tasks in-process, no executor)
of the same day on a second schema holding the same events and model. Every process started is
stopped by process group, also on failure. Which worker ran which task and the wall times are
printed and written to tests/artifacts/celery_executor.txt.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import psutil
import psycopg
import pytest
import redis
from psycopg import sql
from sqlalchemy.engine import make_url

from traitflow import pipeline
from traitflow.config import PipelineConfig
from traitflow.store import Store
from traitflow.synthetic import SyntheticSpec, generate

REPO = Path(__file__).resolve().parents[2]
ARTIFACT = REPO / "tests" / "artifacts" / "celery_executor.txt"
DAG_ID = "traitflow_daily"
WORKERS = ("worker-a", "worker-b")
REDIS_HOST, REDIS_PORT, BROKER_DB = "127.0.0.1", 6379, 5

START = datetime(2026, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)
DAYS = 7
PROCESSED = START + (DAYS - 1) * DAY  # the daily run's day; the model is trained on the days before
EVENTS = SyntheticSpec(
    n_customers=150,
    n_products=80,
    n_categories=6,
    n_segments=3,
    n_events=3_000,
    start=START,
    days=DAYS,
    seed=11,
)
MODEL = {"k": 4, "vector_size": 16, "epochs": 10, "workers": 1}  # workers=1: a reproducible model
DAILY_CONF: dict[str, Any] = {"mapping": "canonical"}
N_SHARDS = 4
SHARD_TASK = "update_profiles"

START_TIMEOUT_S = 240
RUN_TIMEOUT_S = 420
STOP_GRACE_S = 30
# Tables the daily run writes profiles to; updated_at is the write's clock time.
PROFILE_TABLES = ("customer_profiles", "customer_profile_history")
VOLATILE_COLUMNS = {"updated_at"}


# ------------------------------------------------------------------------------------ data


def _write_day_files(folder: Path) -> list[Path]:
    """One canonical CSV per day, ``events_<date>.csv``, as the daily DAG's input folder has."""
    folder.mkdir(parents=True)
    events = generate(EVENTS).events
    events["event_time"] = events["event_time"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    paths = []
    for day, frame in events.groupby(events["event_time"].str.slice(0, 10)):
        path = folder / f"events_{day}.csv"
        frame.to_csv(path, index=False)
        paths.append(path)
    return paths


def _prepare(stores: list[Store], days: list[Path], work_dir: Path) -> None:
    """The same events before the processed day and the same active model (with profiles of every
    customer as of the processed day's start) in every store: one model trained once, published
    into each."""
    earlier = [path for path in days if path.stem.removeprefix("events_") < PROCESSED.date().isoformat()]
    for store in stores:
        for path in earlier:
            store.ingest_file(path, "canonical", run_id="setup")
    events = stores[0].read_events(end=PROCESSED)
    model = pipeline.train(events, PipelineConfig.from_mapping(MODEL), PROCESSED, work_dir)
    profiles = pipeline.profile_customers(events, model, PROCESSED)
    for store in stores:
        store.publish(copy.deepcopy(model), copy.deepcopy(profiles))


def _profile_checksums(database_url: str, schema: str) -> dict[str, tuple[int, str]]:
    """(rows, md5 over the rows in a canonical order) of each profile table, clock columns left out."""
    out = {}
    with psycopg.connect(database_url, autocommit=True) as conn:
        for table in PROFILE_TABLES:
            columns = [
                name
                for (name,) in conn.execute(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
                    (schema, table),
                ).fetchall()
                if name not in VOLATILE_COLUMNS
            ]
            row = sql.SQL("ROW({})::text").format(sql.SQL(", ").join(map(sql.Identifier, columns)))
            query = sql.SQL(
                "SELECT count(*), md5(coalesce(string_agg(r, E'\\n' ORDER BY r COLLATE \"C\"), ''))"
                " FROM (SELECT {} AS r FROM {}.{}) t"
            ).format(row, sql.Identifier(schema), sql.Identifier(table))
            count, digest = conn.execute(query).fetchone() or (0, "")
            out[table] = (int(count), str(digest))
    return out


# ------------------------------------------------------------------------- Airflow services


@dataclass
class Metadata:
    """The test's own Airflow metadata database: a libpq URL for queries, a SQLAlchemy one for Airflow."""

    name: str
    url: str
    sqlalchemy_url: str

    def rows(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()


@pytest.fixture
def metadata(database_url: str) -> Iterator[Metadata]:
    name = f"traitflow_celery_{secrets.token_hex(6)}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_url(database_url).set(database=name)
    try:
        yield Metadata(
            name,
            url.render_as_string(hide_password=False),
            url.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False),
        )
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@dataclass(frozen=True)
class Broker:
    url: str
    prefix: str  # every key the broker's clients write starts with it (kombu's global_keyprefix)


@pytest.fixture
def broker() -> Iterator[Broker]:
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=BROKER_DB, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"the Celery test needs the Redis on {REDIS_HOST}:{REDIS_PORT} as broker: {exc}")
    prefix = f"traitflow-celery-{secrets.token_hex(6)}:"
    try:
        yield Broker(f"redis://{REDIS_HOST}:{REDIS_PORT}/{BROKER_DB}", prefix)
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@dataclass
class Stack:
    """Airflow processes of the test's own, each the leader of its own process group."""

    home: Path
    env: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *args: str, **extra_env: str) -> None:
        with (self.home / f"{name}.log").open("wb") as log:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "airflow", *args],
                env={**self.env, **extra_env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self, name: str, n_chars: int = 3000) -> str:
        return (self.home / f"{name}.log").read_text(errors="replace")[-n_chars:]

    def logs(self) -> str:
        return "\n".join(f"--- {name}.log:\n{self.log(name)}" for name in self.processes)

    def check_running(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                pytest.fail(f"airflow {name} exited with {process.returncode}:\n{self.log(name)}")

    def cli(self, *args: str, timeout: float = 180) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "airflow", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise AssertionError(f"airflow {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
        return done.stdout

    def stop(self) -> None:
        """TERM every process group (Celery finishes its running task: a warm shutdown), KILL what
        is left after STOP_GRACE_S, and any descendant that left its group."""
        descendants: list[psutil.Process] = []
        for process in self.processes.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                descendants += psutil.Process(process.pid).children(recursive=True)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the leader's group, leader gone or not
            process.wait(timeout=10)
        for child in descendants:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        psutil.wait_procs(descendants, timeout=10)


def _airflow_env(
    home: Path, metadata: Metadata, broker: Broker, api_port: int, traitflow: dict[str, str]
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            # This checkout's library first (the venv may hold another checkout's, editable), and
            # the workers' hostname callable.
            "PYTHONPATH": os.pathsep.join([str(REPO / "include"), str(REPO / "tests" / "scripts")]),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata.sqlalchemy_url,
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": broker.url,
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{metadata.sqlalchemy_url}",
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": broker.prefix,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH": str(home / "bundles"),
            # One secret for all: the scheduler signs each task's token, the api-server checks it.
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(32),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            **traitflow,
        }
    )
    return env


def _wait(what: str, ready: Callable[[], bool], stack: Stack, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        stack.check_running()
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not within {timeout_s}s:\n{stack.logs()}")
        time.sleep(1)


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


def _run_state(metadata: Metadata, run_id: str) -> str | None:
    rows = metadata.rows("SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s", (DAG_ID, run_id))
    return rows[0][0] if rows else None


# ------------------------------------------------------------------------------------ test


@pytest.mark.slow
def test_celery_workers_run_the_daily_dag_like_dag_test(
    tmp_path: Path,
    servers: ModuleType,
    database_url: str,
    metadata: Metadata,
    broker: Broker,
    store: Store,
    store_schema: str,
    make_store: Callable[..., Store],
) -> None:
    began = time.monotonic()
    reference = make_store(fresh=True)
    reference.upgrade()
    input_dir = tmp_path / "input"
    _prepare([store, reference], _write_day_files(input_dir), tmp_path / "train")
    conf = {**DAILY_CONF, "input_dir": str(input_dir), "n_shards": N_SHARDS}
    traitflow = {
        "AIRFLOW_CONN_TRAITFLOW_DB": database_url,
        "TRAITFLOW_DATABASE_URL": database_url,
        "TRAITFLOW_DB_SCHEMA": store_schema,
        "TRAITFLOW_DATA_DIR": str(tmp_path / "data"),
        "TRAITFLOW_INPUT_ROOT": str(input_dir),
        "TRAITFLOW_PROFILES_QUEUE": "profiles",  # read when the dag-processor parses the DAG
        # After today: the scheduler creates no run of its own; the backfill's run needs none.
        "TRAITFLOW_START_DATE": (datetime.now(UTC) + DAY).date().isoformat(),
    }
    home = tmp_path / "airflow"
    home.mkdir()
    api_port = servers.free_port()
    stack = Stack(home, _airflow_env(home, metadata, broker, api_port, traitflow))
    stack.cli("db", "migrate", timeout=600)

    try:
        stack.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(api_port))
        stack.start("scheduler", "scheduler")
        stack.start("dag-processor", "dag-processor")
        for name in WORKERS:
            stack.start(
                name,
                *("celery", "worker", "--celery-hostname", name, "--concurrency", "1"),
                *("--queues", "default,profiles", "--skip-serve-logs"),
                AIRFLOW__CORE__HOSTNAME_CALLABLE="worker_hostname.hostname",
                TRAITFLOW_TEST_WORKER=name,
            )
        _wait("the api-server's health check", lambda: _healthy(api_port), stack)
        for name in WORKERS:  # both take tasks before the first is sent
            _wait(f"{name} ready", lambda name=name: f"celery@{name} ready" in stack.log(name, 10**6), stack)
        _wait(
            "the dag-processor's parse",
            lambda: bool(metadata.rows("SELECT 1 FROM serialized_dag WHERE dag_id = %s", (DAG_ID,))),
            stack,
        )
        up = time.monotonic()

        day = PROCESSED.date().isoformat()
        stack.cli(
            *("backfill", "create", "--dag-id", DAG_ID, "--from-date", day, "--to-date", day),
            *("--max-active-runs", "1", "--dag-run-conf", json.dumps(conf)),
        )
        (run_id,) = [
            row[0] for row in metadata.rows("SELECT run_id FROM dag_run WHERE dag_id = %s", (DAG_ID,))
        ]
        _wait(
            f"run {run_id} finished",
            lambda: _run_state(metadata, run_id) in ("success", "failed"),
            stack,
            RUN_TIMEOUT_S,
        )
        ran = time.monotonic()
    finally:
        stack.stop()
    leftovers = [name for name, process in stack.processes.items() if process.poll() is None]
    assert leftovers == []

    tasks = metadata.rows(
        "SELECT task_id, map_index, state, hostname, start_date, end_date, queue FROM task_instance"
        " WHERE dag_id = %s AND run_id = %s ORDER BY start_date",
        (DAG_ID, run_id),
    )
    (interval,) = metadata.rows(
        "SELECT data_interval_start, data_interval_end, state FROM dag_run WHERE run_id = %s", (run_id,)
    )
    summary = _summary(tasks, setup_s=up - began, run_s=ran - up, total_s=time.monotonic() - began)
    print(summary)
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(summary + "\n")

    assert interval == (PROCESSED, PROCESSED + DAY, "success"), f"{interval}\n{_task_logs(home)}"
    assert {state for _, _, state, *_ in tasks} == {"success"}, tasks
    assert {hostname for _, _, _, hostname, *_ in tasks} <= set(WORKERS), summary
    # Which worker takes a task of the sequential part is the broker's choice; the shards run at
    # once, and a worker running one (concurrency 1, acknowledged at the end) takes no other.
    shards = [
        (index, hostname, queue) for task_id, index, _, hostname, *_, queue in tasks if task_id == SHARD_TASK
    ]
    assert sorted(index for index, _, _ in shards) == list(range(N_SHARDS)), summary
    assert {queue for _, _, queue in shards} == {"profiles"}
    assert {hostname for _, hostname, _ in shards} == set(WORKERS), summary

    # The same day through `airflow dags test` (no executor: every task in that one process) in
    # one shard on the reference schema: the profiles must be the same rows.
    reference_env = {
        "TRAITFLOW_DB_SCHEMA": reference.schema,
        "TRAITFLOW_START_DATE": day,  # a manual run gets no task before the start date
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "airflow",
            "dags",
            "test",
            "-c",
            json.dumps({**conf, "n_shards": 1}),
            DAG_ID,
            (PROCESSED + DAY).isoformat(),
        ],
        env={**stack.env, **reference_env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    celery_profiles = _profile_checksums(database_url, store_schema)
    assert celery_profiles == _profile_checksums(database_url, reference.schema)
    history = store.connection.execute(
        "SELECT count(*) FROM customer_profile_history WHERE as_of = %s", (PROCESSED + DAY,)
    ).fetchone()
    assert history is not None and history[0] > 0  # the day's customers were profiled


def _task_logs(home: Path, n_chars: int = 2000) -> str:
    return "\n".join(
        f"--- {path.relative_to(home)}:\n{path.read_text(errors='replace')[-n_chars:]}"
        for path in sorted((home / "logs").rglob("*.log"))
    )


def _summary(tasks: list[tuple[Any, ...]], *, setup_s: float, run_s: float, total_s: float) -> str:
    columns = ["task_id", "map_index", "state", "worker", "start", "end", "queue"]
    frame = pd.DataFrame(tasks, columns=columns)
    frame["seconds"] = (frame["end"] - frame["start"]).dt.total_seconds().round(1)
    table = frame[["task_id", "map_index", "queue", "worker", "state", "seconds"]].to_string(index=False)
    return (
        f"CeleryExecutor, {len(WORKERS)} workers x concurrency 1, daily run of {PROCESSED.date()}:\n"
        f"{table}\n"
        f"wall time: {setup_s:.0f}s to start everything, {run_s:.0f}s from backfill to the run's end, "
        f"{total_s:.0f}s in all before the reference run"
    )
