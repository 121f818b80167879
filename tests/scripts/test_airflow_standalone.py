"""scripts/airflow_standalone.sh: loopback only, executor sized to the machine, nothing left
running after TERM. Starts a real ``airflow standalone`` on a free loopback port with its own
data folder (SQLite metadata, no Traitflow database needed: nothing is triggered)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "airflow_standalone.sh"
START_TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


def _listening_addresses(port: int) -> set[str]:
    return {
        conn.laddr.ip
        for conn in psutil.net_connections(kind="tcp")
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port
    }


def _command(process: psutil.Process) -> str:
    """The command line of a live process; empty for one that has exited (or is a zombie)."""
    try:
        return " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return ""


@pytest.fixture
def standalone(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, int]]:
    port = _free_port()
    env = {
        **os.environ,
        "TRAITFLOW_DATA_DIR": str(tmp_path / "data"),
        "AIRFLOW_PORT": str(port),
        "STOP_GRACE_S": "30",
    }
    for key in [k for k in env if k.startswith("AIRFLOW__") or k == "AIRFLOW_HOME"]:
        del env[key]  # the script's own settings, not a test harness's
    log = (tmp_path / "standalone.log").open("wb")
    process = subprocess.Popen(
        ["bash", str(SCRIPT)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(port):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = (tmp_path / "standalone.log").read_text(errors="replace")[-3000:]
                pytest.fail(f"airflow standalone did not come up on port {port}:\n{tail}")
            time.sleep(2)
        yield process, port
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        for child in psutil.Process().children(recursive=True):
            child.kill()
        log.close()


@pytest.mark.slow
def test_standalone_listens_on_loopback_sizes_the_executor_and_stops_everything_on_term(
    standalone: tuple[subprocess.Popen, int],
) -> None:
    process, port = standalone
    assert _listening_addresses(port) == {"127.0.0.1"}
    started = [p for p in psutil.Process(process.pid).children(recursive=True) if _command(p)]
    commands = [_command(p) for p in started]
    assert any("scheduler" in c for c in commands), commands
    assert any(re.search(r"api[-_]server", c) for c in commands), commands
    # The executor's parallelism reaches every component through the environment.
    scheduler = next(p for p in started if "airflow scheduler" in _command(p))
    cores = subprocess.check_output(["nproc"], text=True).strip()
    assert scheduler.environ().get("AIRFLOW__CORE__PARALLELISM") == cores

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    _, alive = psutil.wait_procs(started, timeout=10)
    assert alive == [], f"still running after TERM: {[p.pid for p in alive]}"
    assert _listening_addresses(port) == set()
