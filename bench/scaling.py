"""Scaling: the full weekly retrain and the daily run on customer slices of several sizes, and
the fitted log-log exponent of their time against the number of events (``limits`` extrapolates
each stage from these points)."""

from __future__ import annotations

import gc
from collections.abc import Sequence
from typing import Any

import numpy as np
import workloads
from measure import DAILY, WEEKLY, Bench, RssSampler
from stages import Context, StageHook, daily_run, retrain


def fit_exponent(sizes: Sequence[float], seconds: Sequence[float]) -> float | None:
    """Slope of log(seconds) vs log(sizes) by least squares (None with fewer than two points)."""
    if len(sizes) < 2 or min(seconds) <= 0:
        return None
    slope, _ = np.polyfit(np.log(np.asarray(sizes, float)), np.log(np.asarray(seconds, float)), 1)
    return float(slope)


def _point(bench: Bench, n_events: int, n_customers: int, target: int, reused: bool) -> dict[str, Any]:
    weekly, daily = bench.group_total(WEEKLY), bench.group_total(DAILY)
    measured = [s for s in bench.results.values() if s.group in (WEEKLY, DAILY)]
    return {
        "target_events": target,
        "events": n_events,
        "customers": n_customers,
        "retrain_wall_s": weekly["wall_s"],
        "retrain_cpu_s": weekly["cpu_s"],
        "peak_rss_mib": weekly["peak_rss_mib"],
        "stages_wall_s": {s.name: s.wall_s for s in bench.results.values() if s.group == WEEKLY},
        "stages_cpu_s": {s.name: s.cpu_s for s in bench.results.values() if s.group == WEEKLY},
        "daily_wall_s": daily.get("wall_s"),
        "daily_stages_wall_s": {s.name: s.wall_s for s in bench.results.values() if s.group == DAILY},
        # Per stage (weekly and daily): the process's peak RSS and what the stage added to it.
        "stages_peak_rss_mib": {s.name: s.peak_rss_mib for s in measured},
        "stages_rss_growth_mib": {s.name: s.peak_rss_mib - s.rss_start_mib for s in measured},
        "nmf_n_iter": bench.results["nmf_fit"].extra.get("n_iter"),
        "reused_main_run": reused,
    }


def scaling_run(
    sampler: RssSampler,
    ctx: Context,
    sizes: Sequence[int],
    main: Bench | None,
    hooks: Sequence[StageHook] = (),
) -> dict[str, Any]:
    """Full retrain, then the daily run of the workload's last day, on customer slices of
    ``ctx.events`` of about each size (whole histories); the weekly and daily hooks run too (each
    slice gets its own schema, ingested untimed)."""
    hooks = [h for h in hooks if h.after in ("weekly_start", "weekly", "daily_start", "daily")]
    _, day_start, day_end = workloads.data_window(ctx.events)
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
            sub.embeddings = sub.weekly_batch = None
            daily_run(bench, sub, day_start, day_end, hooks)
            del sub
        points.append(_point(bench, len(events), int(events["customer_id"].nunique()), size, reused))
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
