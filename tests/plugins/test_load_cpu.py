"""bench/load_cpu.py: the load test's CPU accounting, on process tables and times whose answer
is known, and one real snapshot of this machine."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from load_cpu import GROUPS, CpuSnapshot, Proc, describe, groups_of, snapshot, usage

OWN = 100
PROCESSES = [
    Proc(1, 0, "init", ("init",)),
    Proc(OWN, 1, "python", ("python", "bench/load_test.py")),
    Proc(101, OWN, "airflow", ("airflow", "api_server", "--", "host:127.0.0.1")),
    Proc(102, 101, "python", ("python", "-c", "from multiprocessing.spawn import spawn_main")),
    Proc(103, 101, "python", ("python", "-c", "from multiprocessing.spawn import spawn_main")),
    Proc(104, OWN, "redis-server", ("redis-server", "--port", "4242")),
    Proc(105, OWN, "python", ("python", "-c", "from multiprocessing.spawn import spawn_main")),  # daily
    Proc(200, 1, "postgres", ("postgres", "-D", "/var/lib/postgresql")),
    Proc(201, 200, "postgres", ("postgres: 15/main: postgres test 127.0.0.1(4242) idle",)),
    Proc(300, 1, "redis-server", ("redis-server", "127.0.0.1:6379")),
    Proc(400, 1, "beam.smp", ("beam.smp",)),
]


def test_processes_are_grouped_by_what_they_run() -> None:
    assert groups_of(PROCESSES, OWN) == {
        OWN: "load generator",
        101: "api-server",
        102: "api-server",
        103: "api-server",
        104: "redis",
        105: "daily update",
        200: "postgres",
        201: "postgres",
        300: "redis",
    }


def test_usage_splits_the_machine_and_leaves_the_rest_to_other() -> None:
    machine = {
        "user": 10.0,
        "nice": 0.0,
        "system": 2.0,
        "irq": 0.0,
        "softirq": 0.0,
        "idle": 5.0,
        "iowait": 1.0,
        "steal": 0.5,
    }
    before = CpuSnapshot(
        0.0, machine, {102: ("api-server", 1.0), 201: ("postgres", 4.0), 999: ("redis", 1.0)}
    )
    later = {**machine, "user": 30.0, "system": 6.0, "idle": 9.0, "steal": 2.5}
    after = CpuSnapshot(
        10.0, later, {102: ("api-server", 9.0), 201: ("postgres", 10.0), 500: ("daily update", 3.0)}
    )
    cpu = usage(before, after)
    assert cpu == {
        "wall": 10.0,
        "busy": 24.0,  # user 20 + system 4
        "idle": 4.0,
        "steal": 2.0,
        "api-server": 8.0,
        "postgres": 6.0,
        "redis": 0.0,  # pid 999 ended: its time is not a group's
        "load generator": 0.0,
        "daily update": 0.0,  # pid 500 started within the phase
        "other": 10.0,
    }
    text = describe(cpu, cores=2)
    assert text.startswith("CPU over the measured 10 s (2 cores, 20 core-s): api-server 8.0 s (40%)")
    assert "steal 2.0 s (10%)" in text and "idle 4.0 s (20%)" in text


def test_a_real_snapshot_finds_this_process() -> None:
    first = snapshot()
    sum(i * i for i in range(200_000))  # some CPU of this process between the two
    cpu = usage(first, snapshot())
    assert set(GROUPS) <= set(cpu) and cpu["load generator"] > 0
    assert cpu["busy"] >= 0 and cpu["idle"] >= 0 and cpu["wall"] > 0
    assert cpu["load generator"] <= 2 * cpu["wall"] + 0.05  # at most both cores for the whole time
