"""What the load test runs against: Traitflow data in its own schema, its own redis-server, its
own ``airflow api-server`` with this repo's plugin, and the daily update writing meanwhile.

The data is built through the library as production builds it: synthetic events ingested, one
weekly chain (``chains.run_weekly_chain``) that trains and promotes a model and writes every
customer's profile. Events are posted for the day after the last synthetic one (``post_day``),
and the background daily update covers that day, so it rewrites the very profiles the posts
write.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
START = datetime(2026, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)
ADMIN = "admin"
REDIS_SERVER = "/usr/bin/redis-server"
SERVER_START_TIMEOUT_S = 240


@dataclass(frozen=True)
class Workload:
    """The synthetic data behind the load test and the weekly chain's parameters."""

    n_customers: int = 3000
    n_products: int = 400
    n_events: int = 60_000
    days: int = 28
    seed: int = 0
    k: int = 8
    vector_size: int = 16

    def chain_params(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "vector_size": self.vector_size,
            "epochs": 3,
            "workers": 1,
            "training_window_days": self.days,
        }


@dataclass(frozen=True)
class Product:
    product_id: str
    category: str
    price: float


@dataclass(frozen=True)
class BuiltData:
    """The schema's model, its profiled customers (a stable pseudo-random order: the Zipf ranks)
    and the products events are posted for."""

    schema: str
    model_version: int
    customer_ids: tuple[str, ...]
    products: tuple[Product, ...]
    post_day: datetime


def build_data(url: str, schema: str, workload: Workload, work_dir: Path) -> BuiltData:
    """Ingest synthetic events into ``schema`` and run one weekly chain (train, gate, promote)."""
    from traitflow import event_schema
    from traitflow.chains import run_weekly_chain
    from traitflow.events import LoadResult
    from traitflow.store import Store
    from traitflow.synthetic import SyntheticSpec, generate

    spec = SyntheticSpec(
        n_customers=workload.n_customers,
        n_products=workload.n_products,
        n_events=workload.n_events,
        start=START,
        days=workload.days,
        seed=workload.seed,
    )
    events = generate(spec).events
    with Store(url, schema) as store:
        store.upgrade()
        store.ingest_events(LoadResult(events, event_schema.empty_rejects()), "synthetic", "load-test")
        end = START + workload.days * DAY
        outcome = run_weekly_chain(
            url, end, work_dir / "weekly", workload.chain_params(), True, run_id="load-weekly", schema=schema
        )
        if outcome.status != "promoted" or outcome.model_version is None:
            raise RuntimeError(f"the weekly chain did not promote a model: {outcome.decisions}")
        customers = store.profile_sample(limit=workload.n_customers * 2).customer_ids
    catalogue = events.drop_duplicates("product_id")
    products = tuple(
        Product(str(p), str(c), float(x))
        for p, c, x in zip(catalogue["product_id"], catalogue["category"], catalogue["price"], strict=True)
    )
    return BuiltData(schema, outcome.model_version, tuple(customers), products, end)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ----------------------------------------------------------------------------------- redis


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of the load test's own on a free loopback port, without persistence."""
    import redis

    port = free_port()
    args = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    server = RedisServer(port, subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        client = redis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or server.process.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield server
    finally:
        server.kill()


# ------------------------------------------------------------------------------ api-server


@dataclass(frozen=True)
class ServerSettings:
    database_url: str
    schema: str
    redis_url: str
    workers: int
    keep_log: Path | None = None  # where to copy the api-server's log when it stops
    redis_timeout_s: float | None = None  # TRAITFLOW_REDIS_TIMEOUT_SECONDS (None: the plugin's default)


@contextmanager
def api_server(settings: ServerSettings, home: Path) -> Iterator[tuple[str, str]]:
    """``(base URL, admin password)`` of an ``airflow api-server`` on a free loopback port: its own
    AIRFLOW_HOME and SQLite metadata DB, this repo's plugins, SimpleAuthManager, the plugin's
    metrics summed over workers (``PROMETHEUS_MULTIPROC_DIR``)."""
    home.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(12)
    (home / "passwords.json").write_text(json.dumps({ADMIN: password}))
    multiproc = Path(tempfile.mkdtemp(prefix="prom-", dir=home))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__", "_TRAITFLOW"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH": str(home / "bundles"),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(64),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "TRAITFLOW_DATABASE_URL": settings.database_url,
            "TRAITFLOW_DB_SCHEMA": settings.schema,
            "TRAITFLOW_DATA_DIR": str(home / "data"),
            "TRAITFLOW_REDIS_URL": settings.redis_url,
            "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
        }
    )
    if settings.redis_timeout_s is not None:
        env["TRAITFLOW_REDIS_TIMEOUT_SECONDS"] = str(settings.redis_timeout_s)
    airflow = [sys.executable, "-m", "airflow"]
    subprocess.run([*airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)
    log = home / "api-server.log"
    command = [*airflow, "api-server", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "--workers", str(settings.workers)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped with its workers
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(process, f"{base}/api/v2/monitor/health", log)
        yield base, password
    finally:
        _stop(process)
        if settings.keep_log is not None:
            settings.keep_log.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(log, settings.keep_log)


def _wait_until_up(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"api-server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"api-server not up after {SERVER_START_TIMEOUT_S}s:\n{log.read_text()[-4000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def log_in(client: Any, base: str, password: str) -> str:
    """A JWT for the admin (``POST /auth/token``) through an ``httpx.Client``."""
    response = client.post(f"{base}/auth/token", json={"username": ADMIN, "password": password})
    response.raise_for_status()
    return str(response.json()["access_token"])


# ---------------------------------------------------------------------------- daily update


@dataclass(frozen=True)
class DailyJob:
    """The daily update of ``[day, day + 1)`` repeated every ``interval_s`` while the load runs."""

    database_url: str
    schema: str
    day: datetime
    work_dir: str
    interval_s: float
    redis_url: str | None


def daily_loop(job: DailyJob, stop: Any, results: Any) -> None:
    """Run ``chains.run_daily_update`` until ``stop`` is set; put (seconds, n_profiles) per run
    (or an error text) on ``results``. With ``redis_url`` the runs refresh the profile cache."""
    from traitflow.chains import run_daily_update

    if job.redis_url:
        os.environ["TRAITFLOW_REDIS_URL"] = job.redis_url
    n = 0
    while not stop.is_set():
        started = time.perf_counter()
        try:
            outcome = run_daily_update(
                job.database_url, job.day, job.day + DAY, Path(job.work_dir) / f"daily-{n}",
                run_id=f"load-daily-{n}", schema=job.schema,
            )  # fmt: skip
            results.put((time.perf_counter() - started, outcome.n_profiles))
        except Exception as exc:  # reported, not fatal: the load goes on
            results.put(f"{type(exc).__name__}: {exc}")
        n += 1
        stop.wait(job.interval_s)


class DailyRunner:
    """``daily_loop`` in a separate process (``process=True``: it does not compete with the load
    generator for the GIL) or in a thread."""

    def __init__(self, job: DailyJob, *, process: bool = True) -> None:
        if process:
            context = multiprocessing.get_context("spawn")
            self._stop: Any = context.Event()
            self._results: Any = context.Queue()
            self._worker: Any = context.Process(target=daily_loop, args=(job, self._stop, self._results))
        else:
            import queue

            self._stop, self._results = threading.Event(), queue.Queue()
            self._worker = threading.Thread(target=daily_loop, args=(job, self._stop, self._results))

    def start(self) -> None:
        self._worker.start()

    def stop(self) -> list[Any]:
        """Stop after the current run; every run's (seconds, n_profiles) or error text."""
        self._stop.set()
        self._worker.join(600)
        results = []
        while not self._results.empty():
            results.append(self._results.get())
        return results
