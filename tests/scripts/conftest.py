"""A real ``airflow standalone`` started by scripts/airflow_standalone.sh on a free loopback port.

``start_standalone(**env)`` starts the script with its own data folder under the test's tmp_path
(SQLite metadata in ``<data>/airflow``) plus ``env``, waits for the api-server's health endpoint
and returns a ``Standalone``; everything it started is killed when the test ends. The harness's
own ``AIRFLOW__*`` settings are removed: the script's settings are under test. ``Standalone.cli``
runs an ``airflow`` command the way the README says to next to the script: the same environment
with ``AIRFLOW_HOME`` pointing at the script's metadata folder.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import IO

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "airflow_standalone.sh"
START_TIMEOUT_S = 240


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


@dataclass(frozen=True)
class Standalone:
    """A running ``airflow standalone``: its process (group leader), port, data folder and env."""

    process: subprocess.Popen
    port: int
    data_dir: Path
    env: dict[str, str]
    log_path: Path

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``airflow ARGS`` against the standalone's metadata database; raises on a non-zero exit."""
        env = {**self.env, "AIRFLOW_HOME": str(self.data_dir / "airflow")}
        for _ in range(LOCKED_ATTEMPTS):
            done = subprocess.run(
                ["airflow", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
            )
            # SQLite takes one writer at a time: a command that meets the busy scheduler's write
            # lock fails whole (nothing committed) and is run again, as the README tells users.
            if done.returncode == 0 or "database is locked" not in done.stderr:
                break
            time.sleep(2)
        if done.returncode != 0:
            raise AssertionError(f"airflow {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
        return done

    def log_tail(self, n_chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n_chars:]


StartStandalone = Callable[..., Standalone]
LOCKED_ATTEMPTS = 5


@pytest.fixture
def start_standalone(tmp_path: Path, servers: ModuleType) -> Iterator[StartStandalone]:
    started: list[tuple[subprocess.Popen, IO[bytes]]] = []

    def start(**extra_env: str) -> Standalone:
        port = servers.free_port()
        env = {
            **os.environ,
            # The venv's `airflow` first (the script adds ./.venv/bin, absent in a worktree) and
            # this checkout's library for the tasks.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "include"), os.getenv("PYTHONPATH")])),
            "TRAITFLOW_DATA_DIR": str(tmp_path / "data"),
            "AIRFLOW_PORT": str(port),
            "STOP_GRACE_S": "30",
            **extra_env,
        }
        for key in [k for k in env if k.startswith("AIRFLOW__") or k == "AIRFLOW_HOME"]:
            del env[key]  # the script's own settings, not a test harness's
        log_path = tmp_path / "standalone.log"
        log = log_path.open("wb")
        process = subprocess.Popen(
            ["bash", str(SCRIPT)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        started.append((process, log))
        deadline = time.monotonic() + START_TIMEOUT_S
        while not healthy(port):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-3000:]
                pytest.fail(f"airflow standalone did not come up on port {port}:\n{tail}")
            time.sleep(2)
        return Standalone(process, port, tmp_path / "data", env, log_path)

    try:
        yield start
    finally:
        for process, log in started:
            stop(process)
            log.close()


def stop(process: subprocess.Popen) -> None:
    """TERM the script (it stops its process group), then KILL whatever it started that is left.

    The descendants are listed first: ``airflow standalone`` runs in its own session, and once the
    script is gone its processes are no longer found as our children."""
    try:
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=45)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    for child in descendants:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


@pytest.fixture
def standalone(start_standalone: StartStandalone) -> tuple[subprocess.Popen, int]:
    """The script with its defaults only (no Traitflow database: nothing is triggered)."""
    running = start_standalone()
    return running.process, running.port
