"""Measuring a stage: wall time, CPU time (all threads and children), peak RSS while it ran.

``RssSampler`` samples the process RSS in a thread (one peak window per stage); ``Bench`` runs
stages through ``measure`` and keeps a ``StageResult`` per stage name, in run order.
"""

from __future__ import annotations

import cProfile
import gc
import io
import logging
import os
import pstats
import resource
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("traitflow.bench")

MIB = 1024 * 1024

# Stage groups: "weekly" stages add up to the weekly retrain, "daily" ones to the daily run.
LOAD, WEEKLY, DAILY, REFERENCE, BASELINE = "load", "weekly", "daily", "reference", "baseline"
# "refit": the NMF refit a weekly retrain runs when a previous model exists (warm start from its
# components); the "weekly retrain, refit path" total swaps it in for ``nmf_fit``.
REFIT = "refit"
# The incremental weekly retrain (``incremental_stages``) and the full retrain of the week before
# it continues ("parent"), measured apart from the full weekly retrain.
PARENT, INCREMENTAL = "parent", "incremental"


def _rss_reader() -> Callable[[], int]:
    """Current resident set size in bytes (``/proc/self/statm``, else psutil, else ru_maxrss)."""
    statm = Path("/proc/self/statm")
    if statm.exists():
        page = os.sysconf("SC_PAGE_SIZE")

        def from_proc() -> int:
            with statm.open("rb") as handle:
                return int(handle.read().split()[1]) * page

        return from_proc
    try:
        import psutil

        process = psutil.Process()
        return lambda: int(process.memory_info().rss)
    except ImportError:  # pragma: no cover - not Linux and no psutil: only the all-time peak
        return lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class RssSampler:
    """Samples the process RSS every ``interval`` seconds in a daemon thread; ``reset`` starts a
    new peak window (one per stage), ``peak`` closes it."""

    def __init__(self, interval: float = 0.05) -> None:
        self.read = _rss_reader()
        self.interval = interval
        self._peak = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            rss = self.read()
            with self._lock:
                self._peak = max(self._peak, rss)

    def reset(self) -> int:
        rss = self.read()
        with self._lock:
            self._peak = rss
        return rss

    def peak(self) -> int:
        rss = self.read()
        with self._lock:
            self._peak = max(self._peak, rss)
            return self._peak

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class StageResult:
    """One stage: medians over repeats for times, the maximum for memory."""

    name: str
    group: str
    wall_s: float
    cpu_s: float
    rss_start_mib: float
    peak_rss_mib: float
    units: str = ""
    n_units: int = 0
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def throughput(self) -> float | None:
        return self.n_units / self.wall_s if self.n_units and self.wall_s > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "group": self.group,
            "wall_s": self.wall_s,
            "cpu_s": self.cpu_s,
            "cpu_per_wall": self.cpu_s / self.wall_s if self.wall_s > 0 else None,
            "rss_start_mib": self.rss_start_mib,
            "peak_rss_mib": self.peak_rss_mib,
            "rss_growth_mib": self.peak_rss_mib - self.rss_start_mib,
            "units": self.units,
            "n_units": self.n_units,
            "throughput_per_s": self.throughput,
            "repeats": len(self.walls),
            "walls_s": self.walls,
            "cpus_s": self.cpus,
            "extra": self.extra,
        }


class Bench:
    """Runs stages, measures them, keeps the results in run order."""

    def __init__(
        self, sampler: RssSampler, *, profile: Sequence[str] = (), profile_dir: Path | None = None
    ) -> None:
        self.sampler = sampler
        self.results: dict[str, StageResult] = {}
        self.profile = set(profile)
        self.profile_dir = profile_dir
        self.profiles: dict[str, str] = {}
        # Pipeline stages that ran outside ``measure`` (no stage of the report): wall seconds.
        self.unlisted_wall_s: dict[str, float] = {}

    def measure(
        self,
        name: str,
        group: str,
        fn: Callable[[], Any],
        *,
        units: str = "",
        n_units: int | Callable[[Any], int] = 0,
        extra: Callable[[Any], dict[str, Any]] | None = None,
    ) -> Any:
        """Run ``fn()`` once as stage ``name``; a repeated name adds a repeat to that stage."""
        gc.collect()
        rss_start = self.sampler.reset()
        profiler = cProfile.Profile() if name in self.profile else None
        cpu0, children0, wall0 = time.process_time(), _children_cpu(), time.perf_counter()
        if profiler is not None:
            profiler.enable()
        result = fn()
        if profiler is not None:
            profiler.disable()
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0 + _children_cpu() - children0
        peak = self.sampler.peak()
        if profiler is not None:
            self._save_profile(name, profiler)
        count = n_units(result) if callable(n_units) else n_units
        info = extra(result) if extra is not None else {}
        stage = self.results.get(name)
        if stage is None:
            stage = self.results[name] = StageResult(
                name, group, wall, cpu, rss_start / MIB, peak / MIB, units, int(count), extra=info
            )
        else:
            stage.rss_start_mib = min(stage.rss_start_mib, rss_start / MIB)
            stage.peak_rss_mib = max(stage.peak_rss_mib, peak / MIB)
            stage.extra.update(info)
        stage.walls.append(wall)
        stage.cpus.append(cpu)
        stage.wall_s = statistics.median(stage.walls)
        stage.cpu_s = statistics.median(stage.cpus)
        log.info("%-20s %9.3f s wall %9.3f s cpu  peak %8.0f MiB", name, wall, cpu, peak / MIB)
        return result

    def _save_profile(self, name: str, profiler: cProfile.Profile) -> None:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(45)
        self.profiles[name] = text.getvalue()
        if self.profile_dir is not None:
            self.profile_dir.mkdir(parents=True, exist_ok=True)
            (self.profile_dir / f"profile-{name}.txt").write_text(text.getvalue())

    def wall(self, *names: str) -> float:
        return sum(self.results[n].wall_s for n in names if n in self.results)

    def group_total(self, group: str) -> dict[str, Any]:
        stages = [s for s in self.results.values() if s.group == group]
        if not stages:
            return {}
        return {
            "stages": [s.name for s in stages],
            "wall_s": sum(s.wall_s for s in stages),
            "cpu_s": sum(s.cpu_s for s in stages),
            "peak_rss_mib": max(s.peak_rss_mib for s in stages),
        }

    def cpu(self, *names: str) -> float:
        return sum(self.results[n].cpu_s for n in names if n in self.results)
