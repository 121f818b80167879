"""Where the CPU went during a load test's measured phase, so a latency figure comes with the
state of the machine that produced it.

The machine's time (``psutil.cpu_times``: /proc/stat) is split into busy, idle and **stolen**: on a
virtual machine the hypervisor can take cores away (steal), and then latency grows with no cause
on this side. The busy time is split by process group: the api-server and its workers, PostgreSQL,
Redis, the load generator (this process) and the daily update (this process's other children);
what is left is ``other`` (the rest of the machine, and processes that started or ended within
the phase). Process times are those of processes alive at both snapshots.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import psutil

GROUPS = ("api-server", "postgres", "redis", "load generator", "daily update")
_BUSY = ("user", "nice", "system", "irq", "softirq")
_IDLE = ("idle", "iowait")


@dataclass(frozen=True)
class Proc:
    """What a process is, for grouping: its pid, parent, name and command line."""

    pid: int
    ppid: int
    name: str
    cmdline: tuple[str, ...]


@dataclass(frozen=True)
class CpuSnapshot:
    at: float  # time.perf_counter()
    machine: dict[str, float]  # psutil.cpu_times() fields, seconds summed over the cores
    processes: dict[int, tuple[str, float]]  # pid -> (group, user + system seconds)


def groups_of(processes: Iterable[Proc], own_pid: int) -> dict[int, str]:
    """The group (``GROUPS``) of each process that belongs to one; others are left out.

    The api-server is the process whose command line names ``api_server`` / ``api-server`` and
    its descendants (the workers); the daily update is any other descendant of ``own_pid``."""
    procs = {p.pid: p for p in processes}
    children: dict[int, list[int]] = {}
    for p in procs.values():
        children.setdefault(p.ppid, []).append(p.pid)

    def tree(root: int) -> set[int]:
        found, todo = set(), [root]
        while todo:
            pid = todo.pop()
            if pid not in found:
                found.add(pid)
                todo.extend(children.get(pid, ()))
        return found

    api: set[int] = set()
    for p in procs.values():
        if any("api_server" in part or "api-server" in part for part in p.cmdline):
            api |= tree(p.pid)
    out: dict[int, str] = {}
    for pid in tree(own_pid):
        out[pid] = "load generator" if pid == own_pid else "daily update"
    for p in procs.values():
        if p.name == "postgres":
            out[p.pid] = "postgres"
        elif p.name.startswith("redis-server"):
            out[p.pid] = "redis"
    for pid in api:
        out[pid] = "api-server"
    return out


def snapshot() -> CpuSnapshot:
    """The machine's CPU times and those of every grouped process, now."""
    procs, times = [], {}
    for p in psutil.process_iter(["pid", "ppid", "name", "cmdline", "cpu_times"]):
        info = p.info
        if info["cpu_times"] is None:  # gone, or not ours to read
            continue
        procs.append(Proc(info["pid"], info["ppid"] or 0, info["name"] or "", tuple(info["cmdline"] or ())))
        times[info["pid"]] = info["cpu_times"].user + info["cpu_times"].system
    groups = groups_of(procs, os.getpid())
    return CpuSnapshot(
        at=time.perf_counter(),
        machine=psutil.cpu_times()._asdict(),
        processes={pid: (group, times[pid]) for pid, group in groups.items()},
    )


def usage(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """Seconds of CPU between two snapshots: ``wall``, the machine's ``busy``, ``idle`` and
    ``steal`` (summed over the cores), each of ``GROUPS`` and ``other`` (busy minus the groups)."""
    machine = {k: after.machine.get(k, 0.0) - before.machine.get(k, 0.0) for k in after.machine}
    out = {
        "wall": after.at - before.at,
        "busy": sum(machine.get(k, 0.0) for k in _BUSY),
        "idle": sum(machine.get(k, 0.0) for k in _IDLE),
        "steal": machine.get("steal", 0.0),
    }
    groups = dict.fromkeys(GROUPS, 0.0)
    for pid, (group, seconds) in after.processes.items():
        earlier = before.processes.get(pid)
        if earlier is not None and earlier[0] == group:
            groups[group] += seconds - earlier[1]
    out |= groups
    out["other"] = out["busy"] - sum(groups.values())
    return out


def describe(cpu: Mapping[str, float], cores: int) -> str:
    """One sentence: each part's CPU seconds and its share of the cores over the phase."""
    capacity = cpu["wall"] * cores
    parts = [*GROUPS, "other", "steal", "idle"]
    shares = ", ".join(f"{name} {cpu[name]:.1f} s ({cpu[name] / capacity:.0%})" for name in parts)
    return f"CPU over the measured {cpu['wall']:.0f} s ({cores} cores, {capacity:.0f} core-s): {shares}."
