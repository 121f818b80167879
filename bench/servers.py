"""Local servers of one's own on free loopback ports: a redis-server without persistence and an
``airflow api-server`` with this repo's plugin. Used by the load test and by the tests (which load
this file by path, see tests/conftest.py), so both start them the same way.

Standard library only at import (``redis`` is imported when a server is started).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ADMIN = "admin"
REDIS_SERVER = "/usr/bin/redis-server"


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
            self.process.send_signal(signal.SIGCONT)  # a stopped process cannot die before it resumes
            self.process.kill()
            self.process.wait(timeout=10)


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A redis-server on a free loopback port, without persistence; killed (even when paused with
    SIGSTOP) when the block ends."""
    import redis

    port = free_port()
    args = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    server = RedisServer(port, subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        client = redis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            if server.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {server.process.returncode}")
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not answer within 10 s") from None
                time.sleep(0.05)
        yield server
    finally:
        server.kill()


# ------------------------------------------------------------------------------ api-server


@dataclass(frozen=True)
class ServerSettings:
    """What the api-server's plugin is pointed at.

    redis_url : TRAITFLOW_REDIS_URL (None: no profile cache)
    multiprocess_metrics : sum the plugin's metrics over workers (PROMETHEUS_MULTIPROC_DIR)
    redis_timeout_s : TRAITFLOW_REDIS_TIMEOUT_SECONDS (None: the plugin's default)
    keep_log : where to copy the api-server's log when it stops
    start_timeout_s : how long it may take to answer its health check
    """

    database_url: str
    schema: str
    workers: int = 1
    redis_url: str | None = None
    multiprocess_metrics: bool = False
    redis_timeout_s: float | None = None
    keep_log: Path | None = None
    start_timeout_s: float = 240.0


def _environment(settings: ServerSettings, home: Path, port: int, password: str) -> dict[str, str]:
    (home / "passwords.json").write_text(json.dumps({ADMIN: password}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__", "_TRAITFLOW"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),  # the api-server parses no DAGs
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH": str(home / "bundles"),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(64),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "TRAITFLOW_DATABASE_URL": settings.database_url,
            "TRAITFLOW_DB_SCHEMA": settings.schema,
            "TRAITFLOW_DATA_DIR": str(home / "data"),
        }
    )
    if settings.redis_url is not None:
        env["TRAITFLOW_REDIS_URL"] = settings.redis_url
    if settings.redis_timeout_s is not None:
        env["TRAITFLOW_REDIS_TIMEOUT_SECONDS"] = str(settings.redis_timeout_s)
    if settings.multiprocess_metrics:
        env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="prom-", dir=home)
    return env


@contextmanager
def api_server(settings: ServerSettings, home: Path) -> Iterator[tuple[str, str]]:
    """``(base URL, admin password)`` of an ``airflow api-server`` on a free loopback port: its own
    AIRFLOW_HOME and migrated SQLite metadata DB, this repo's plugins, SimpleAuthManager with a
    fresh admin password. Stopped with its workers when the block ends."""
    home.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(12)
    port = free_port()
    env = _environment(settings, home, port, password)
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
        _wait_until_up(process, f"{base}/api/v2/monitor/health", log, settings.start_timeout_s)
        yield base, password
    finally:
        _stop(process)
        if settings.keep_log is not None:
            settings.keep_log.parent.mkdir(parents=True, exist_ok=True)
            settings.keep_log.write_bytes(log.read_bytes())


def _wait_until_up(process: subprocess.Popen[bytes], url: str, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"api-server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"api-server not up after {timeout_s}s:\n{log.read_text()[-4000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """TERM the server's process group (it runs workers), KILL what is left after 20 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
