"""Traitflow benchmark harness: every pipeline stage on a reference workload, plus the references.

Usage (from the repository root, with the project's virtualenv)::

    .venv/bin/python bench/run.py --tier smoke          # seconds; what tests/test_bench_smoke.py runs
    .venv/bin/python bench/run.py --tier S              # ~1 minute: stages + baseline + gensim + latency
    .venv/bin/python bench/run.py --tier M              # 10M events: ~15+ minutes, several GiB
    .venv/bin/python bench/run.py --tier M --scaling    # + full retrain at 1M and 3M events (10M reused)
    .venv/bin/python bench/run.py --tier S --events FILE.csv --mapping rees46 --max-events 2000000

What is measured (see bench/README.md for the definitions):

* stages: ``load`` (read_events + validation of a cached canonical CSV slice, or of ``--events``),
  the weekly retrain ``corpus`` -> ``item2vec`` -> ``aggregation`` -> ``nmf_fit`` -> ``labels`` ->
  ``projection`` and the daily run ``daily_select`` -> ``daily_profile`` (customers with events
  on the last day, with their whole history); wall time, CPU time (all threads and children),
  per-stage peak RSS (sampled every 50 ms) and throughput;
* ``gensim_standalone``: the same Word2Vec call on the same corpus file outside the pipeline;
* the seed-literal baseline of aggregation + projection on the same customers (``--tier M``:
  a 1M-event customer slice), side by side with Traitflow's;
* single-customer profile latency (p50/p95/p99) of the batch library path and of
  ``traitflow.online.CustomerProfiler``;
* ``--scaling``: the full retrain at several sizes and the fitted log-log exponent.
* the Postgres stages (``pg_stages``): ingest, the weekly read/save/promote, the daily read/write
  and the persistence of the baseline slice against the seed's one INSERT per row
  (``--database-url``, else ``TRAITFLOW_DATABASE_URL``, else the embedded server).

Results go to ``bench/results/<tier>-<UTC timestamp>.json`` and ``.md`` (gitignored); the
Markdown table is also printed. Synthetic workloads are cached under ``bench/cache/``.

More stages plug in through ``STAGE_HOOKS`` (see below) without touching the rest.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import inspect
import io
import json
import logging
import os
import platform
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import baseline
import numpy as np
import pandas as pd
import pg_stages
import workloads

from traitflow.aggregate import CustomerEmbeddings, customer_embeddings
from traitflow.config import PipelineConfig
from traitflow.events import read_events
from traitflow.item2vec import fallback_vectors
from traitflow.model import TokenTable, TraitflowModel, TraitModel
from traitflow.online import CustomerProfiler
from traitflow.pipeline import Corpus, build_corpus, profile_customers, train_tokens
from traitflow.profile_batch import COLD_START_NONE, ProfileBatch
from traitflow.traits import fit_traits, label_traits, project, project_one

log = logging.getLogger("traitflow.bench")

MIB = 1024 * 1024

# Stage groups: "weekly" stages add up to the weekly retrain, "daily" ones to the daily run.
LOAD, WEEKLY, DAILY, REFERENCE, BASELINE = "load", "weekly", "daily", "reference", "baseline"
# "refit": the NMF refit a weekly retrain runs when a previous model exists (warm start from its
# components); the "weekly retrain, refit path" total swaps it in for ``nmf_fit``.
REFIT = "refit"


# --------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Postgres write hook
# --------------------------------------------------------------------------------------------


@dataclass
class StageHook:
    """An extra timed stage (the Postgres stages of ``pg_stages`` are hooks).

    ``after`` is where it runs and what it counts towards:

    * "load": after ``load`` (``ctx.events`` is the whole workload);
    * "weekly_start": before ``corpus``, counts towards the weekly retrain (also in scaling runs);
    * "weekly": after ``projection``, counts towards the weekly retrain; ``ctx.model`` is the
      trained model and ``ctx.weekly_batch`` every customer's profile;
    * "daily_start" / "daily": before ``daily_select`` / after ``daily_profile``, count towards the
      daily run; ``ctx.daily_window`` is (day_start, day_end), ``ctx.daily_batch`` the profiles;
    * "baseline": after the seed-literal aggregation + projection; ``ctx.baseline_rows`` holds
      the seed's profiles, ``ctx.baseline_batch`` Traitflow's for the same customers. A hook with
      ``compare_with`` is the seed's side of the Traitflow hook it names (persistence ratio).

    ``fn`` returns the number of ``units`` it handled; ``setup`` (untimed) runs just before it.
    """

    name: str
    after: str
    fn: Callable[[Context], int]
    units: str = "rows"
    compare_with: str | None = None
    setup: Callable[[Context], None] | None = None


HOOK_GROUPS = {
    "load": "load",
    "weekly_start": "weekly",
    "weekly": "weekly",
    "daily_start": "daily",
    "daily": "daily",
    "baseline": "baseline",
}

# Extra stages registered by other modules (``Options.hooks`` replaces them); ``run_bench`` adds
# the Postgres stages after them unless ``Options.postgres`` is False.
STAGE_HOOKS: list[StageHook] = []


# --------------------------------------------------------------------------------------------
# Pipeline stages
# --------------------------------------------------------------------------------------------


@dataclass
class Context:
    """What the stages produce and hand on (and what hooks may read)."""

    config: PipelineConfig
    events: pd.DataFrame
    work_dir: Path
    trained_through: datetime
    options: dict[str, Any] = field(default_factory=dict)
    corpus: Corpus | None = None
    tokens: TokenTable | None = None
    embeddings: CustomerEmbeddings | None = None
    traits: TraitModel | None = None
    profiles: np.ndarray | None = None
    model: TraitflowModel | None = None
    weekly_batch: ProfileBatch | None = None
    daily_window: tuple[datetime, datetime] | None = None
    daily_batch: ProfileBatch | None = None
    baseline_rows: dict[str, Any] | None = None
    baseline_batch: ProfileBatch | None = None


def _run_hooks(bench: Bench, ctx: Context, after: str, hooks: Sequence[StageHook]) -> None:
    group = HOOK_GROUPS[after]
    for hook in hooks:
        if hook.after == after:
            if hook.setup is not None:
                hook.setup(ctx)
            bench.measure(hook.name, group, lambda h=hook: h.fn(ctx), units=hook.units, n_units=lambda n: n)


def retrain(
    bench: Bench,
    ctx: Context,
    *,
    gensim_repeats: int = 0,
    hooks: Sequence[StageHook] = (),
    refit: bool = True,
) -> None:
    """corpus -> item2vec (+ standalone gensim) -> aggregation -> nmf_fit -> labels -> projection."""
    config, events = ctx.config, ctx.events
    _run_hooks(bench, ctx, "weekly_start", hooks)
    ctx.corpus = bench.measure(
        "corpus",
        WEEKLY,
        lambda: build_corpus(events, config.sessions, ctx.work_dir),
        units="events",
        n_units=len(events),
        extra=lambda c: {"corpus": dict(c.stats.__dict__)},
    )
    corpus = ctx.corpus
    tokens_written = corpus.stats.n_tokens_written
    if gensim_repeats > 1:  # untimed warm-up: page cache, gensim's first-call set-up, CPU clocks
        baseline.gensim_standalone(corpus.corpus_path, config.item2vec)
    for repeat in range(max(1, gensim_repeats)):
        order = ("pipeline", "gensim") if repeat % 2 == 0 else ("gensim", "pipeline")
        for which in order:
            if which == "pipeline":
                ctx.tokens = bench.measure(
                    "item2vec",
                    WEEKLY,
                    lambda: train_tokens(corpus, config),
                    units="corpus tokens",
                    n_units=tokens_written,
                    extra=lambda t: {"vocabulary": len(t), "epochs": config.item2vec.epochs},
                )
            elif gensim_repeats:
                bench.measure(
                    "gensim_standalone",
                    REFERENCE,
                    lambda: baseline.gensim_standalone(corpus.corpus_path, config.item2vec),
                    units="corpus tokens",
                    n_units=tokens_written,
                    extra=lambda n: {"vocabulary": n},
                )
    tokens = ctx.tokens
    assert tokens is not None
    ctx.embeddings = bench.measure(
        "aggregation",
        WEEKLY,
        lambda: customer_embeddings(
            events, tokens, config.aggregation, config.sessions, as_of=ctx.trained_through
        ),
        units="events",
        n_units=len(events),
        extra=lambda e: {"customers": len(e.customer_ids), "oov_rate": e.stats["oov_rate"]},
    )
    embeddings = ctx.embeddings
    train_rows = embeddings.cold_start == COLD_START_NONE
    training_vectors = embeddings.vectors[train_rows]
    fit = bench.measure(
        "nmf_fit",
        WEEKLY,
        lambda: fit_traits(training_vectors, config.traits),
        units="customers",
        n_units=len(training_vectors),
        extra=lambda f: {"n_iter": int(f.n_iter), "reconstruction_error": f.reconstruction_error},
    )
    ctx.traits = traits = fit.traits
    if refit and "previous_components" in inspect.signature(fit_traits).parameters:
        # Steady state of the weekly DAG: refit starting from the previous model's components
        # (here the ones just fitted: unchanged behaviour, the cheapest case).
        previous = traits.components.copy()
        bench.measure(
            "nmf_refit",
            REFIT,
            lambda: fit_traits(training_vectors, config.traits, previous_components=previous),
            units="customers",
            n_units=len(training_vectors),
            extra=lambda f: {"n_iter": int(f.n_iter), "reconstruction_error": f.reconstruction_error},
        )
    bench.measure("labels", WEEKLY, lambda: label_traits(traits, tokens), units="tokens", n_units=len(tokens))
    known = embeddings.has_vector
    ctx.profiles = bench.measure(
        "projection",
        WEEKLY,
        lambda: project(traits, embeddings.vectors[known]),
        units="customers",
        n_units=int(known.sum()),
    )
    ctx.model = TraitflowModel(
        trained_through=ctx.trained_through, config=config, tokens=tokens, traits=traits
    )
    if any(h.after == "weekly" for h in hooks):
        ctx.weekly_batch = _batch(ctx.model, embeddings, ctx.profiles, ctx.trained_through)
        _run_hooks(bench, ctx, "weekly", hooks)


def _batch(
    model: TraitflowModel, embeddings: CustomerEmbeddings, known_profiles: np.ndarray, as_of: datetime
) -> ProfileBatch:
    """Every customer's profile as ``profile_customers`` would return it (for write hooks)."""
    traits = model.traits
    profiles = np.empty((len(embeddings.customer_ids), traits.n_traits))
    profiles[embeddings.has_vector] = known_profiles
    profiles[~embeddings.has_vector] = traits.population_profile
    vectors = embeddings.vectors.copy()
    vectors[~embeddings.has_vector] = traits.population_vector
    return ProfileBatch(
        as_of=as_of,
        model_version=model.version,
        customer_ids=embeddings.customer_ids,
        embeddings=vectors,
        profiles=profiles,
        trait_ids=traits.trait_ids.copy(),
        n_events=embeddings.n_events,
        cold_start=embeddings.cold_start,
        stats=dict(embeddings.stats),
    )


def daily_run(bench: Bench, ctx: Context, day_start: datetime, day_end: datetime, hooks=()) -> None:
    """Customers with events in [day_start, day_end), profiled from their whole history."""
    events, model = ctx.events, ctx.model
    assert model is not None
    ctx.daily_window = (day_start, day_end)
    _run_hooks(bench, ctx, "daily_start", hooks)

    def select() -> pd.DataFrame:
        times = events["event_time"]
        in_day = (times >= pd.Timestamp(day_start)) & (times < pd.Timestamp(day_end))
        touched = pd.unique(events["customer_id"][in_day])
        return events[events["customer_id"].isin(touched) & (times < pd.Timestamp(day_end))]

    history = bench.measure(
        "daily_select",
        DAILY,
        select,
        units="events",
        n_units=len,
        extra=lambda h: {"day": day_start.date().isoformat(), "history_events": len(h)},
    )
    ctx.daily_batch = bench.measure(
        "daily_profile",
        DAILY,
        lambda: profile_customers(history, model, day_end),
        units="customers",
        n_units=lambda b: len(b.customer_ids),
        extra=lambda b: {"customers": len(b.customer_ids), "history_events": len(history)},
    )
    _run_hooks(bench, ctx, "daily", hooks)


# --------------------------------------------------------------------------------------------
# Seed-literal baseline (aggregation + projection)
# --------------------------------------------------------------------------------------------


def _cpu(bench: Bench, *names: str) -> float:
    return sum(bench.results[n].cpu_s for n in names if n in bench.results)


def baseline_comparison(
    bench: Bench, ctx: Context, n_events: int, repeats: int, hooks: Sequence[StageHook] = ()
) -> dict[str, Any]:
    """Traitflow's aggregation + projection vs the seed-literal code on the same customers."""
    assert ctx.tokens is not None and ctx.traits is not None
    config, tokens, traits = ctx.config, ctx.tokens, ctx.traits
    events = workloads.customer_slice(ctx.events, n_events)
    n_customers = int(events["customer_id"].nunique())
    holder: dict[str, Any] = {}

    def tf_aggregation() -> CustomerEmbeddings:
        return customer_embeddings(
            events, tokens, config.aggregation, config.sessions, as_of=ctx.trained_through
        )

    started = time.perf_counter()
    wv = baseline.seed_keyed_vectors(tokens)
    setup_s = time.perf_counter() - started
    components = None
    for _ in range(repeats):  # the four stages back to back per repeat; medians reported
        holder["emb"] = bench.measure(
            "tf_aggregation", BASELINE, tf_aggregation, units="events", n_units=len(events)
        )
        known_vectors = holder["emb"].vectors[holder["emb"].has_vector]
        holder["profiles"] = bench.measure(
            "tf_projection",
            BASELINE,
            lambda v=known_vectors: project(traits, v),
            units="customers",
            n_units=len(known_vectors),
        )
        ids, seed_embeddings = bench.measure(
            "seed_aggregation",
            BASELINE,
            lambda: baseline.seed_aggregation(events, wv),
            units="events",
            n_units=len(events),
            extra=lambda _: {"keyed_vectors_setup_s": setup_s},
        )
        if components is None:
            started = time.perf_counter()
            components = baseline.seed_components(seed_embeddings, traits.n_traits)
            nmf_s = time.perf_counter() - started
            bench.results["seed_aggregation"].extra["seed_nmf_fit_s_untimed"] = nmf_s
        seed_profiles = bench.measure(
            "seed_projection",
            BASELINE,
            lambda c=components, e=seed_embeddings: baseline.seed_projection(c, e),
            units="customers",
            n_units=len(seed_embeddings),
        )
    ctx.baseline_rows = {"customer_ids": ids, "profiles": seed_profiles, "embeddings": seed_embeddings}
    assert ctx.model is not None
    ctx.baseline_batch = _batch(ctx.model, holder["emb"], holder["profiles"], ctx.trained_through)
    for _ in range(repeats):  # writes are as noisy as the rest: medians too
        _run_hooks(bench, ctx, "baseline", hooks)
    traitflow_s = bench.wall("tf_aggregation", "tf_projection")
    seed_s = bench.wall("seed_aggregation", "seed_projection")
    # Persistence: the seed's hook (compare_with) against the Traitflow hook it names.
    write_pairs = [
        (h.compare_with, h.name) for h in hooks if h.after == "baseline" and h.compare_with in bench.results
    ]
    tf_write_s = sum(bench.wall(ours) for ours, _ in write_pairs)
    seed_write_s = sum(bench.wall(theirs) for _, theirs in write_pairs)
    result: dict[str, Any] = {
        "events": len(events),
        "customers": n_customers,
        "traitflow_s": traitflow_s,
        "seed_s": seed_s,
        "speedup": seed_s / traitflow_s if traitflow_s > 0 else None,
        "speedup_cpu": _cpu(bench, "seed_aggregation", "seed_projection")
        / max(_cpu(bench, "tf_aggregation", "tf_projection"), 1e-12),
        "aggregation_speedup": bench.wall("seed_aggregation") / max(bench.wall("tf_aggregation"), 1e-12),
        "projection_speedup": bench.wall("seed_projection") / max(bench.wall("tf_projection"), 1e-12),
        "writes": {},
        "with_persistence": (
            {
                "traitflow_s": traitflow_s + tf_write_s,
                "seed_s": seed_s + seed_write_s,
                "speedup": (seed_s + seed_write_s) / (traitflow_s + tf_write_s),
                "write_stages": [name for pair in write_pairs for name in pair],
            }
            if write_pairs
            else None
        ),
    }
    for hook in hooks:
        if hook.after == "baseline" and hook.compare_with in bench.results:
            result["writes"][hook.name] = {
                "seed_s": bench.wall(hook.name),
                "traitflow_s": bench.wall(hook.compare_with),
                "vs": hook.compare_with,
            }
    return result


# --------------------------------------------------------------------------------------------
# Single-customer latency
# --------------------------------------------------------------------------------------------


def single_customer_latency(ctx: Context, n_customers: int, as_of: datetime, seed: int = 0) -> dict[str, Any]:
    """p50/p95/p99 of profiling one customer at a time, model loaded, events already in memory."""
    model = ctx.model
    assert model is not None
    config, tokens, traits = model.config, model.tokens, model.traits
    events = ctx.events
    ids = pd.unique(events["customer_id"])
    rng = np.random.default_rng(seed)
    chosen = rng.choice(ids, size=min(n_customers, len(ids)), replace=False)
    subset = events[events["customer_id"].isin(chosen)]
    positions = subset.groupby("customer_id", sort=False).indices
    frames = [subset.iloc[positions[c]] for c in chosen]
    arrays = [
        (
            f["action"].tolist(),
            f["product_id"].tolist(),
            f["category"].tolist(),
            f["event_time"].to_numpy(dtype="datetime64[us]"),
        )
        for f in frames
    ]
    fb = fallback_vectors(tokens)
    profiler = CustomerProfiler(model)

    def library(frame: pd.DataFrame, with_fallback: bool = True) -> np.ndarray:
        emb = customer_embeddings(
            frame,
            tokens,
            config.aggregation,
            config.sessions,
            as_of=as_of,
            fallback=fb if with_fallback else None,
        )
        if not emb.has_vector[0]:
            return traits.population_profile.copy()
        return project_one(traits, emb.vectors[0])

    def embed_only(frame: pd.DataFrame) -> np.ndarray:
        return customer_embeddings(
            frame, tokens, config.aggregation, config.sessions, as_of=as_of, fallback=fb
        )

    vectors = [embed_only(f).vectors[0] for f in frames]

    def timed(fn: Callable[[int], Any], n: int) -> tuple[np.ndarray, list[Any]]:
        for i in range(min(20, n)):  # warm-up
            fn(i)
        times, outputs = np.empty(n), []
        for i in range(n):
            t0 = time.perf_counter_ns()
            outputs.append(fn(i))
            times[i] = time.perf_counter_ns() - t0
        return times / 1e6, outputs

    n = len(frames)
    paths: dict[str, tuple[np.ndarray, list[Any]]] = {
        "library: customer_embeddings(1-customer frame, fallback given) + project_one": timed(
            lambda i: library(frames[i]), n
        ),
        "  of which customer_embeddings": timed(lambda i: embed_only(frames[i]), n),
        "  of which project_one": timed(lambda i: project_one(traits, vectors[i]), n),
        "library without fallback= (rebuilds fallback_vectors per call)": timed(
            lambda i: library(frames[i], with_fallback=False), min(n, 50)
        ),
        "online: CustomerProfiler.profile (model prepared once)": timed(
            lambda i: profiler.profile(*arrays[i], as_of=as_of).profile, n
        ),
    }
    library_profiles = np.asarray(paths[next(iter(paths))][1])
    online_profiles = np.asarray(paths["online: CustomerProfiler.profile (model prepared once)"][1])
    report: dict[str, Any] = {
        "customers": n,
        "events_per_customer_median": float(np.median([len(a[0]) for a in arrays])),
        "online_vs_library_max_abs_diff": float(np.max(np.abs(library_profiles - online_profiles))),
        "paths": {},
    }
    for name, (ms, _) in paths.items():
        report["paths"][name] = {
            "n": len(ms),
            "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()),
        }
    return report


# --------------------------------------------------------------------------------------------
# Scaling
# --------------------------------------------------------------------------------------------


def fit_exponent(sizes: Sequence[float], seconds: Sequence[float]) -> float | None:
    """Slope of log(seconds) vs log(sizes) by least squares (None with fewer than two points)."""
    if len(sizes) < 2 or min(seconds) <= 0:
        return None
    slope, _ = np.polyfit(np.log(np.asarray(sizes, float)), np.log(np.asarray(seconds, float)), 1)
    return float(slope)


def scaling_run(
    sampler: RssSampler,
    ctx: Context,
    sizes: Sequence[int],
    main: Bench | None,
    hooks: Sequence[StageHook] = (),
) -> dict[str, Any]:
    """Full retrain on customer slices of ``ctx.events`` of about each size (whole histories);
    the weekly hooks run too (each slice gets its own schema, ingested untimed)."""
    hooks = [h for h in hooks if h.after in ("weekly_start", "weekly")]
    points = []
    for size in sizes:
        # The largest size is usually the whole workload: reuse the main run's measurement.
        if size >= 0.98 * len(ctx.events) and main is not None and "projection" in main.results:
            bench, events, reused = main, ctx.events, True
        else:
            events = workloads.customer_slice(ctx.events, size)
            bench, reused = Bench(sampler), False
            sub = Context(ctx.config, events, ctx.work_dir / f"scaling-{size}", ctx.trained_through)
            retrain(bench, sub, refit=False, hooks=hooks)
            del sub
        weekly = bench.group_total(WEEKLY)
        points.append(
            {
                "target_events": size,
                "events": len(events),
                "customers": int(events["customer_id"].nunique()),
                "retrain_wall_s": weekly["wall_s"],
                "retrain_cpu_s": weekly["cpu_s"],
                "peak_rss_mib": weekly["peak_rss_mib"],
                "stages_wall_s": {s.name: s.wall_s for s in bench.results.values() if s.group == WEEKLY},
                "stages_cpu_s": {s.name: s.cpu_s for s in bench.results.values() if s.group == WEEKLY},
                "nmf_n_iter": bench.results["nmf_fit"].extra.get("n_iter"),
                "reused_main_run": reused,
            }
        )
        del events
        gc.collect()
    n = [p["events"] for p in points]
    stage_names = points[0]["stages_wall_s"].keys() if points else []
    return {
        "points": points,
        "exponent": fit_exponent(n, [p["retrain_wall_s"] for p in points]),
        # CPU time is far less disturbed by other processes on a shared machine than wall time.
        "exponent_cpu": fit_exponent(n, [p["retrain_cpu_s"] for p in points]),
        "stage_exponents": {
            s: fit_exponent(n, [p["stages_wall_s"].get(s, 0.0) for p in points]) for s in stage_names
        },
    }


# --------------------------------------------------------------------------------------------
# Targets and report
# --------------------------------------------------------------------------------------------

# key, description, comparison, limit, tier the target is defined for
TARGETS: tuple[tuple[str, str, str, Any, str], ...] = (
    ("weekly_retrain_wall_s", "weekly retrain wall (s)", "<=", 900.0, "M"),
    ("weekly_retrain_refit_wall_s", "  same, refit path (nmf_refit for nmf_fit)", "<=", 900.0, "M"),
    ("weekly_retrain_peak_rss_gib", "weekly retrain peak RSS (GiB)", "<=", 8.0, "M"),
    ("daily_run_wall_s", "daily run wall (s)", "<=", 60.0, "M"),
    ("single_customer_p50_ms", "single-customer profile p50 (ms), traitflow.online", "<=", 1.0, "M"),
    (
        "agg_proj_persist_speedup",
        "aggregation+projection+persistence speedup vs seed-literal (x)",
        ">=",
        30.0,
        "S",
    ),
    ("item2vec_overhead", "Item2Vec pipeline / standalone gensim (x)", "<=", 1.15, "any"),
    ("item2vec_overhead_cpu", "  same, in CPU time (robust to machine load)", "<=", 1.15, "any"),
    ("scaling_exponent", "retrain time ~ events^b, exponent b", "between", (0.9, 1.1), "any"),
    ("scaling_exponent_cpu", "  same, in CPU time (robust to machine load)", "between", (0.9, 1.1), "any"),
)


def evaluate_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    summary = report["summary"]
    out = []
    for key, description, op, limit, tier in TARGETS:
        value = summary.get(key)
        if value is None:
            status = "not measured"
        else:
            ok = {
                "<=": lambda v, lim: v <= lim,
                ">=": lambda v, lim: v >= lim,
                "between": lambda v, lim: lim[0] <= v <= lim[1],
            }[op](value, limit)
            status = "met" if ok else "MISSED"
            if tier not in ("any", report["tier"]):
                status += f" (indicative: target is for {tier})"
        out.append(
            {"key": key, "target": description, "op": op, "limit": limit, "value": value, "status": status}
        )
    return out


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0:
            return "0"
        magnitude = abs(value)
        if magnitude >= 1000:
            return f"{value:,.0f}"
        if magnitude >= 100:
            return f"{value:.1f}"
        return f"{value:.{digits}g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _limit(target: dict[str, Any]) -> str:
    if target["op"] == "between":
        return f"{target['limit'][0]} to {target['limit'][1]}"
    return f"{target['op']} {target['limit']}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables (works on the JSON written by ``run_bench``)."""
    w = report["workload"]
    lines = [
        f"# Traitflow benchmark: tier {report['tier']}",
        "",
        f"{w['events']:,} events, {w['customers']:,} customers, {w['products']:,} products "
        f"({w['source']}); {report['started_at']}; commit {report['host']['commit']}; "
        f"{report['host']['cpus']} CPUs; load average at start/end "
        f"{report['host']['loadavg_start']} / {report['host'].get('loadavg_end')}.",
        "",
        "## Stages",
        "",
    ]
    rows = []
    for s in report["stages"]:
        throughput = s["throughput_per_s"]
        rate = f"{_fmt(throughput)} {s['units']}/s" if throughput else "-"
        wall = _fmt(s["wall_s"]) + (f" (median of {s['repeats']})" if s["repeats"] > 1 else "")
        rows.append(
            [
                s["name"],
                s["group"],
                wall,
                s["cpu_s"],
                s["cpu_per_wall"],
                s["peak_rss_mib"],
                s["rss_growth_mib"],
                rate,
            ]
        )
    for label, key in (
        ("**weekly retrain (sum)**", "weekly_retrain"),
        ("**weekly retrain, refit path (sum)**", "weekly_retrain_refit"),
        ("**daily run (sum)**", "daily_run"),
    ):
        total = report["totals"].get(key)
        if total:
            rows.append(
                [
                    label,
                    "",
                    total["wall_s"],
                    total["cpu_s"],
                    total["cpu_s"] / total["wall_s"],
                    total["peak_rss_mib"],
                    "",
                    "",
                ]
            )
    lines += _table(
        ["stage", "group", "wall s", "CPU s", "CPU/wall", "peak RSS MiB", "RSS growth MiB", "throughput"],
        rows,
    )
    lines += ["", f"Process peak RSS (ru_maxrss): {_fmt(report['process_peak_rss_mib'])} MiB.", ""]

    comparisons = []
    summary = report["summary"]
    if summary.get("item2vec_overhead") is not None:
        comparisons.append(
            [
                "Item2Vec: pipeline vs standalone gensim",
                summary["item2vec_s"],
                summary["gensim_s"],
                f"{summary['item2vec_overhead']:.3f}x (pipeline / gensim, median of paired runs; "
                f"CPU time {summary['item2vec_overhead_cpu']:.3f}x)",
            ]
        )
    base = report.get("baseline")
    if base:
        comparisons.append(
            [
                f"aggregation + projection vs seed-literal ({base['events']:,} events, "
                f"{base['customers']:,} customers)",
                base["traitflow_s"],
                base["seed_s"],
                f"{base['speedup']:.1f}x faster (CPU time {base['speedup_cpu']:.1f}x)",
            ]
        )
        comparisons.append(
            [
                "  aggregation only",
                report["stage_walls"].get("tf_aggregation"),
                report["stage_walls"].get("seed_aggregation"),
                f"{base['aggregation_speedup']:.1f}x faster",
            ]
        )
        comparisons.append(
            [
                "  projection only",
                report["stage_walls"].get("tf_projection"),
                report["stage_walls"].get("seed_projection"),
                f"{base['projection_speedup']:.1f}x faster",
            ]
        )
        persist = base.get("with_persistence")
        if persist:
            comparisons.append(
                [
                    "aggregation + projection + persistence vs seed-literal",
                    persist["traitflow_s"],
                    persist["seed_s"],
                    f"{persist['speedup']:.1f}x faster",
                ]
            )
        for name, write in base.get("writes", {}).items():
            comparisons.append(
                [
                    f"writes: {write['vs']} vs {name}",
                    write["traitflow_s"],
                    write["seed_s"],
                    f"{write['seed_s'] / write['traitflow_s']:.1f}x faster",
                ]
            )
    if comparisons:
        lines += ["## Comparisons", ""]
        lines += _table(["comparison", "Traitflow s", "reference s", "ratio"], comparisons)
        lines.append("")

    latency = report.get("latency")
    if latency:
        lines += [
            f"## Single-customer profile latency ({latency['customers']:,} customers, median "
            f"{_fmt(latency['events_per_customer_median'])} events each; online vs library max abs "
            f"diff {latency['online_vs_library_max_abs_diff']:.1e})",
            "",
        ]
        lines += _table(
            ["path", "n", "p50 ms", "p95 ms", "p99 ms", "mean ms"],
            [
                [name, p["n"], p["p50_ms"], p["p95_ms"], p["p99_ms"], p["mean_ms"]]
                for name, p in latency["paths"].items()
            ],
        )
        lines.append("")

    scaling = report.get("scaling")
    if scaling:
        lines += ["## Scaling (full retrain on customer slices)", ""]
        stage_names = list(scaling["stage_exponents"])
        lines += _table(
            ["events", "customers", "retrain wall s", "CPU s", "peak RSS MiB"]
            + [f"{s} s" for s in stage_names]
            + ["NMF iterations"],
            [
                [
                    p["events"],
                    p["customers"],
                    p["retrain_wall_s"],
                    p["retrain_cpu_s"],
                    p["peak_rss_mib"],
                    *[p["stages_wall_s"].get(s) for s in stage_names],
                    p.get("nmf_n_iter"),
                ]
                for p in scaling["points"]
            ],
        )
        lines.append("")
        lines.append(
            f"Fitted exponent (log-log least squares): retrain wall {_fmt(scaling['exponent'])}, "
            f"CPU {_fmt(scaling.get('exponent_cpu'))}; per stage (wall): "
            + ", ".join(f"{s} {_fmt(b)}" for s, b in scaling["stage_exponents"].items())
            + "."
        )
        lines.append("")

    lines += ["## Targets", ""]
    lines += _table(
        ["target", "limit", "measured", "status"],
        [[t["target"], _limit(t), t["value"], t["status"]] for t in report["targets"]],
    )
    lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


@dataclass
class Options:
    tier: str = "S"
    events_file: Path | None = None
    mapping: str = "canonical"
    max_events: int | None = None
    baseline: bool = True
    gensim: bool = True
    latency: bool = True
    latency_customers: int | None = None
    repeats: int | None = None
    scaling: bool = False
    scaling_sizes: tuple[int, ...] | None = None
    profile: tuple[str, ...] = ()
    results_dir: Path | None = workloads.RESULTS_DIR
    cache_dir: Path = workloads.CACHE_DIR
    config: PipelineConfig = field(default_factory=PipelineConfig)
    hooks: Sequence[StageHook] | None = None  # None: STAGE_HOOKS
    hook_options: dict[str, Any] = field(default_factory=dict)
    postgres: bool = True  # add the Postgres stages (pg_stages) after ``hooks``
    database_url: str | None = None  # None: the embedded server
    keep_schemas: bool = False
    save_model: Path | None = None  # save the trained model here (TraitflowModel.save), for profiling


def _warm_imports() -> None:
    """Import the heavy libraries up front: the library imports gensim and scikit-learn lazily,
    inside the stage functions, and a one-off import second must not count as stage time (the
    standalone gensim reference would otherwise start with an unfair advantage)."""
    import gensim.models  # noqa: F401
    import sklearn.decomposition  # noqa: F401


def _git_commit() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_bench(options: Options) -> dict[str, Any]:
    """Run the benchmark; returns the report (also written to ``results_dir`` unless None)."""
    tier = workloads.TIERS[options.tier]
    hooks = list(STAGE_HOOKS if options.hooks is None else options.hooks)
    postgres = None
    if options.postgres:
        postgres = pg_stages.PostgresStages(options.database_url, keep=options.keep_schemas)
        hooks += postgres.hooks(StageHook)
    repeats = options.repeats or tier.repeats
    started_at = datetime.now(UTC)
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    label = options.tier if options.events_file is None else f"{options.tier}-file"
    profile_dir = (options.results_dir / f"{label}-{stamp}-profiles") if options.results_dir else None
    sampler = RssSampler()
    bench = Bench(sampler, profile=options.profile, profile_dir=profile_dir)
    work_dir = Path(tempfile.mkdtemp(prefix="traitflow-bench-"))
    started = time.perf_counter()
    _warm_imports()
    imports_s = time.perf_counter() - started
    host = {
        "imports_s": imports_s,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "commit": _git_commit(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        # Workload + load/validate stage.
        if options.events_file is not None:
            events, _ = bench.measure(
                "load",
                LOAD,
                lambda: workloads.read_file(options.events_file, options.mapping, options.max_events),
                units="rows",
                n_units=lambda r: len(r[0]) + r[1],
                extra=lambda r: {
                    "rejected": r[1],
                    "file": str(options.events_file),
                    "mapping": options.mapping,
                },
            )
            source = f"file {options.events_file.name} via mapping {options.mapping}"
            generate_s, cache_hit = None, None
        else:
            started = time.perf_counter()
            events, cache_hit = workloads.synthetic_events(tier.spec, options.cache_dir)
            generate_s = time.perf_counter() - started
            csv_path = workloads.csv_slice(events, tier.spec, tier.load_rows, options.cache_dir)
            bench.measure(
                "load",
                LOAD,
                lambda: read_events(csv_path, "canonical"),
                units="rows",
                n_units=lambda r: r.n_read,
                extra=lambda r: {"rejected": len(r.rejects), "csv_rows": r.n_read, "file": csv_path.name},
            )
            source = "synthetic, cached" if cache_hit else "synthetic, generated"
        trained_through, day_start, day_end = workloads.data_window(events)
        ctx = Context(options.config, events, work_dir, trained_through, options=dict(options.hook_options))
        _run_hooks(bench, ctx, "load", hooks)
        retrain(bench, ctx, gensim_repeats=repeats if options.gensim else 0, hooks=hooks)
        assert ctx.embeddings is not None and ctx.model is not None
        n_customers = len(ctx.embeddings.customer_ids)
        if options.save_model is not None:
            ctx.model.save(options.save_model)
        ctx.embeddings = ctx.weekly_batch = None  # free before the next stages
        ctx.profiles = None
        gc.collect()
        daily_run(bench, ctx, day_start, day_end, hooks)
        ctx.daily_batch = None
        latency = (
            single_customer_latency(ctx, options.latency_customers or tier.latency_customers, day_end)
            if options.latency
            else None
        )
        base = (
            baseline_comparison(bench, ctx, tier.baseline_events, repeats, hooks)
            if options.baseline
            else None
        )
        ctx.baseline_rows = None
        scaling = None
        if options.scaling:
            sizes = options.scaling_sizes or tier.scaling_sizes
            scaling = scaling_run(sampler, ctx, sizes, bench, hooks)
        if postgres is not None:
            host["database"] = postgres.describe()
    finally:
        sampler.close()
        if postgres is not None:
            postgres.close()
        shutil.rmtree(work_dir, ignore_errors=True)
    host["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]

    stage_walls = {name: s.wall_s for name, s in bench.results.items()}
    weekly, daily = bench.group_total(WEEKLY), bench.group_total(DAILY)
    weekly_refit = _refit_total(bench, weekly)
    summary: dict[str, Any] = {
        "weekly_retrain_wall_s": weekly.get("wall_s"),
        "weekly_retrain_peak_rss_gib": weekly["peak_rss_mib"] / 1024 if weekly else None,
        "weekly_retrain_refit_wall_s": weekly_refit.get("wall_s"),
        "daily_run_wall_s": daily.get("wall_s"),
        "single_customer_p50_ms_batch_path": (
            next(iter(latency["paths"].values()))["p50_ms"] if latency else None
        ),
        "single_customer_p50_ms": (
            latency["paths"]["online: CustomerProfiler.profile (model prepared once)"]["p50_ms"]
            if latency
            else None
        ),
        "agg_proj_speedup": base["speedup"] if base else None,
        "agg_proj_persist_speedup": (
            base["with_persistence"]["speedup"] if base and base.get("with_persistence") else None
        ),
        "item2vec_s": stage_walls.get("item2vec"),
        "gensim_s": stage_walls.get("gensim_standalone"),
        "item2vec_overhead": _paired_ratio(bench, "item2vec", "gensim_standalone", "walls"),
        "item2vec_overhead_cpu": _paired_ratio(bench, "item2vec", "gensim_standalone", "cpus"),
        "scaling_exponent": scaling["exponent"] if scaling else None,
        "scaling_exponent_cpu": scaling["exponent_cpu"] if scaling else None,
    }
    spec = tier.spec
    report: dict[str, Any] = {
        "tier": options.tier,
        "started_at": started_at.isoformat(timespec="seconds"),
        "command": " ".join(sys.argv) if __name__ == "__main__" else None,
        "host": host,
        "workload": {
            "source": source,
            "events": len(events),
            "customers": n_customers,
            "products": int(events["product_id"].nunique()),
            "spec": None if options.events_file else {"key": workloads.spec_key(spec), **_spec_dict(spec)},
            "generate_or_cache_read_s": generate_s,
            "cache_hit": cache_hit,
            "trained_through": trained_through.isoformat(),
            "daily_day": day_start.date().isoformat(),
        },
        "config": options.config.to_dict(),
        "stages": [s.to_dict() for s in bench.results.values()],
        "stage_walls": stage_walls,
        "totals": {"weekly_retrain": weekly, "weekly_retrain_refit": weekly_refit, "daily_run": daily},
        "summary": summary,
        "baseline": base,
        "latency": latency,
        "scaling": scaling,
        "process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "profiles": sorted(bench.profiles),
        "hooks": [h.name for h in hooks],
        "postgres_run_id": postgres.run_id if postgres is not None else None,
    }
    report["targets"] = evaluate_targets(report)
    if options.results_dir is not None:
        options.results_dir.mkdir(parents=True, exist_ok=True)
        base_path = options.results_dir / f"{label}-{stamp}"
        base_path.with_suffix(".json").write_text(json.dumps(report, indent=2, default=_json_default))
        base_path.with_suffix(".md").write_text(render_markdown(report))
        report["paths"] = {
            "json": str(base_path.with_suffix(".json")),
            "markdown": str(base_path.with_suffix(".md")),
        }
    return report


def rerender(path: Path) -> str:
    """Re-render a saved JSON report (targets re-evaluated, CPU scaling exponent filled in for
    reports written before it existed); writes the .md next to it and returns the text."""
    report = json.loads(path.read_text())
    scaling = report.get("scaling")
    if scaling and scaling.get("exponent_cpu") is None:
        points = scaling["points"]
        scaling["exponent_cpu"] = fit_exponent(
            [p["events"] for p in points], [p["retrain_cpu_s"] for p in points]
        )
    report["summary"]["scaling_exponent_cpu"] = scaling["exponent_cpu"] if scaling else None
    report["targets"] = evaluate_targets(report)
    path.write_text(json.dumps(report, indent=2, default=_json_default))
    text = render_markdown(report)
    path.with_suffix(".md").write_text(text)
    return text


def _refit_total(bench: Bench, weekly: dict[str, Any]) -> dict[str, Any]:
    """The weekly total with ``nmf_refit`` in place of ``nmf_fit`` (empty without a refit stage)."""
    if not weekly or "nmf_refit" not in bench.results or "nmf_fit" not in bench.results:
        return {}
    fit, refit = bench.results["nmf_fit"], bench.results["nmf_refit"]
    others = [bench.results[n] for n in weekly["stages"] if n != "nmf_fit"]
    return {
        "stages": [s.name for s in others] + ["nmf_refit"],
        "wall_s": weekly["wall_s"] - fit.wall_s + refit.wall_s,
        "cpu_s": weekly["cpu_s"] - fit.cpu_s + refit.cpu_s,
        "peak_rss_mib": max([refit.peak_rss_mib] + [s.peak_rss_mib for s in others]),
    }


def _paired_ratio(bench: Bench, name: str, reference: str, kind: str) -> float | None:
    """Median over repeats of ``name`` / ``reference``, each pair measured back to back (robust
    against the background load drifting between repeats)."""
    if name not in bench.results or reference not in bench.results:
        return None
    ours, theirs = getattr(bench.results[name], kind), getattr(bench.results[reference], kind)
    return float(statistics.median(a / b for a, b in zip(ours, theirs, strict=False) if b > 0))


def _spec_dict(spec: Any) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in spec.__dict__.items()}


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, datetime | Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _sizes(text: str) -> tuple[int, ...]:
    multipliers = {"k": 1_000, "m": 1_000_000}
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        scale = multipliers.get(part[-1:], 1)
        out.append(int(float(part[:-1] if scale > 1 else part) * scale))
    return tuple(out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Traitflow benchmark harness (see bench/README.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--tier", choices=sorted(workloads.TIERS), default="S", help="workload size")
    parser.add_argument("--events", type=Path, help="benchmark a real export instead of synthetic data")
    parser.add_argument("--mapping", default="canonical", help="column-mapping preset or file for --events")
    parser.add_argument("--max-events", type=int, help="read at most this many rows of --events")
    parser.add_argument("--no-baseline", action="store_true", help="skip the seed-literal baseline")
    parser.add_argument("--no-gensim", action="store_true", help="skip the standalone gensim reference")
    parser.add_argument("--no-latency", action="store_true", help="skip single-customer latency")
    parser.add_argument("--latency-customers", type=int, help="customers timed one at a time")
    parser.add_argument("--repeats", type=int, help="repeats of item2vec/gensim and of the baseline pair")
    parser.add_argument("--scaling", action="store_true", help="full retrain at the tier's scaling sizes")
    parser.add_argument("--scaling-sizes", type=_sizes, help="e.g. 1M,3M,10M (overrides the tier's)")
    parser.add_argument(
        "--profile", default="", help="comma-separated stage names to run under cProfile (text dump)"
    )
    parser.add_argument("--save-model", type=Path, help="save the trained model to this folder")
    parser.add_argument(
        "--database-url",
        help="PostgreSQL for the pg_* stages (default: $TRAITFLOW_DATABASE_URL, else the embedded server)",
    )
    parser.add_argument("--no-postgres", action="store_true", help="skip the Postgres stages")
    parser.add_argument("--keep-schemas", action="store_true", help="keep the bench_* schemas afterwards")
    parser.add_argument("--results-dir", type=Path, default=workloads.RESULTS_DIR)
    parser.add_argument("--cache-dir", type=Path, default=workloads.CACHE_DIR)
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-stage log lines")
    parser.add_argument("--render", type=Path, metavar="JSON", help="only re-render a saved report")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.render is not None:
        print(rerender(args.render))
        return 0
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
    )
    logging.getLogger("gensim").setLevel(logging.WARNING)
    report = run_bench(
        Options(
            tier=args.tier,
            events_file=args.events,
            mapping=args.mapping,
            max_events=args.max_events,
            baseline=not args.no_baseline,
            gensim=not args.no_gensim,
            latency=not args.no_latency,
            latency_customers=args.latency_customers,
            repeats=args.repeats,
            scaling=args.scaling,
            scaling_sizes=args.scaling_sizes,
            profile=tuple(p for p in args.profile.split(",") if p),
            results_dir=args.results_dir,
            cache_dir=args.cache_dir,
            save_model=args.save_model,
            postgres=not args.no_postgres,
            database_url=args.database_url,
            keep_schemas=args.keep_schemas,
        )
    )
    print(render_markdown(report))
    if "paths" in report:
        print(f"results: {report['paths']['json']}\n         {report['paths']['markdown']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
