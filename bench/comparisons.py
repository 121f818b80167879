"""Side measurements against references: Traitflow's aggregation + projection (+ persistence)
against the seed-literal code (``baseline``), and single-customer profile latency of the batch
library path against ``traitflow.online.CustomerProfiler``."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import baseline
import numpy as np
import pandas as pd
import workloads
from measure import BASELINE, Bench
from stages import Context, StageHook, run_hooks

from traitflow.aggregate import CustomerEmbeddings, customer_embeddings
from traitflow.item2vec import fallback_vectors
from traitflow.online import CustomerProfiler
from traitflow.pipeline import profiles_from_embeddings
from traitflow.traits import project, project_one

ONLINE_PATH = "online: CustomerProfiler.profile (model prepared once)"


def _baseline_pairs(bench: Bench, ctx: Context, events: pd.DataFrame, repeats: int) -> CustomerEmbeddings:
    """Traitflow's and the seed's aggregation + projection, the four stages back to back per
    repeat (medians reported); fills ``ctx.baseline_rows`` and returns Traitflow's embeddings."""
    assert ctx.model is not None
    config, tokens, traits = ctx.config, ctx.model.tokens, ctx.model.traits

    def tf_aggregation() -> CustomerEmbeddings:
        return customer_embeddings(
            events, tokens, config.aggregation, config.sessions, as_of=ctx.trained_through
        )

    started = time.perf_counter()
    wv = baseline.seed_keyed_vectors(tokens)
    setup_s = time.perf_counter() - started
    components = None
    for _ in range(repeats):
        embeddings = bench.measure(
            "tf_aggregation", BASELINE, tf_aggregation, units="events", n_units=len(events)
        )
        known_vectors = embeddings.vectors[embeddings.has_vector]
        bench.measure(
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
    return embeddings


def _persistence(
    bench: Bench, hooks: Sequence[StageHook], traitflow_s: float, seed_s: float
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(totals with the writes, each write pair): the seed's hook (``compare_with``) against the
    Traitflow hook it names."""
    write_pairs = [
        (h.compare_with, h.name)
        for h in hooks
        if h.after == "baseline" and h.compare_with is not None and h.compare_with in bench.results
    ]
    tf_write_s = sum(bench.wall(ours) for ours, _ in write_pairs)
    seed_write_s = sum(bench.wall(theirs) for _, theirs in write_pairs)
    with_persistence = (
        {
            "traitflow_s": traitflow_s + tf_write_s,
            "seed_s": seed_s + seed_write_s,
            "speedup": (seed_s + seed_write_s) / (traitflow_s + tf_write_s),
            "write_stages": [name for pair in write_pairs for name in pair],
        }
        if write_pairs
        else None
    )
    writes = {
        theirs: {"seed_s": bench.wall(theirs), "traitflow_s": bench.wall(ours), "vs": ours}
        for ours, theirs in write_pairs
    }
    return with_persistence, writes


def baseline_comparison(
    bench: Bench, ctx: Context, n_events: int, repeats: int, hooks: Sequence[StageHook] = ()
) -> dict[str, Any]:
    """Traitflow's aggregation + projection vs the seed-literal code on the same customers."""
    assert ctx.model is not None
    events = workloads.customer_slice(ctx.events, n_events)
    n_customers = int(events["customer_id"].nunique())
    embeddings = _baseline_pairs(bench, ctx, events, repeats)
    ctx.baseline_batch = profiles_from_embeddings(ctx.model, embeddings, ctx.trained_through)
    for _ in range(repeats):  # writes are as noisy as the rest: medians too
        run_hooks(bench, ctx, "baseline", hooks)
    traitflow_s = bench.wall("tf_aggregation", "tf_projection")
    seed_s = bench.wall("seed_aggregation", "seed_projection")
    with_persistence, writes = _persistence(bench, hooks, traitflow_s, seed_s)
    return {
        "events": len(events),
        "customers": n_customers,
        "traitflow_s": traitflow_s,
        "seed_s": seed_s,
        "speedup": seed_s / traitflow_s if traitflow_s > 0 else None,
        "speedup_cpu": bench.cpu("seed_aggregation", "seed_projection")
        / max(bench.cpu("tf_aggregation", "tf_projection"), 1e-12),
        "aggregation_speedup": bench.wall("seed_aggregation") / max(bench.wall("tf_aggregation"), 1e-12),
        "projection_speedup": bench.wall("seed_projection") / max(bench.wall("tf_projection"), 1e-12),
        "writes": writes,
        "with_persistence": with_persistence,
    }


def _customer_frames(events: pd.DataFrame, n_customers: int, seed: int) -> list[pd.DataFrame]:
    """The events of ``n_customers`` customers drawn at random, one frame per customer."""
    ids = pd.unique(events["customer_id"])
    rng = np.random.default_rng(seed)
    chosen = rng.choice(ids, size=min(n_customers, len(ids)), replace=False)
    subset = events[events["customer_id"].isin(chosen)]
    positions = subset.groupby("customer_id", sort=False).indices
    return [subset.iloc[positions[c]] for c in chosen]


def _timed(fn: Callable[[int], Any], n: int) -> tuple[np.ndarray, list[Any]]:
    """(milliseconds per call, outputs) of ``fn(0) .. fn(n - 1)``, after up to 20 warm-up calls."""
    for i in range(min(20, n)):
        fn(i)
    times, outputs = np.empty(n), []
    for i in range(n):
        t0 = time.perf_counter_ns()
        outputs.append(fn(i))
        times[i] = time.perf_counter_ns() - t0
    return times / 1e6, outputs


def _latency_paths(ctx: Context, frames: list[pd.DataFrame], as_of: datetime) -> dict[str, Any]:
    """Each single-customer path timed on every frame: name -> (milliseconds, outputs)."""
    model = ctx.model
    assert model is not None
    config, tokens, traits = model.config, model.tokens, model.traits
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

    def embed(frame: pd.DataFrame, with_fallback: bool = True) -> CustomerEmbeddings:
        fallback = fb if with_fallback else None
        return customer_embeddings(
            frame, tokens, config.aggregation, config.sessions, as_of=as_of, fallback=fallback
        )

    def library(frame: pd.DataFrame, with_fallback: bool = True) -> np.ndarray:
        emb = embed(frame, with_fallback)
        if not emb.has_vector[0]:
            return traits.population_profile.copy()
        return project_one(traits, emb.vectors[0])

    vectors = [embed(f).vectors[0] for f in frames]
    n = len(frames)
    return {
        "library: customer_embeddings(1-customer frame, fallback given) + project_one": _timed(
            lambda i: library(frames[i]), n
        ),
        "  of which customer_embeddings": _timed(lambda i: embed(frames[i]), n),
        "  of which project_one": _timed(lambda i: project_one(traits, vectors[i]), n),
        "library without fallback= (rebuilds fallback_vectors per call)": _timed(
            lambda i: library(frames[i], with_fallback=False), min(n, 50)
        ),
        ONLINE_PATH: _timed(lambda i: profiler.profile(*arrays[i], as_of=as_of).profile, n),
    }


def single_customer_latency(ctx: Context, n_customers: int, as_of: datetime, seed: int = 0) -> dict[str, Any]:
    """p50/p95/p99 of profiling one customer at a time, model loaded, events already in memory."""
    frames = _customer_frames(ctx.events, n_customers, seed)
    paths = _latency_paths(ctx, frames, as_of)
    library_profiles = np.asarray(paths[next(iter(paths))][1])
    online_profiles = np.asarray(paths[ONLINE_PATH][1])
    report: dict[str, Any] = {
        "customers": len(frames),
        "events_per_customer_median": float(np.median([len(f) for f in frames])),
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
