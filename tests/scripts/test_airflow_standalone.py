"""scripts/airflow_standalone.sh: loopback only, executor sized to the machine, nothing left
running after TERM. Starts a real ``airflow standalone`` on a free loopback port with its own
data folder (SQLite metadata, no Traitflow database needed: nothing is triggered)."""

from __future__ import annotations

import re
import signal
import subprocess

import psutil
import pytest


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
