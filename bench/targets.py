"""The targets a benchmark report is judged against, and their evaluation on a report."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Target:
    """``summary[key] op limit``; ``tier`` is the tier the limit is defined for ("any": every tier)."""

    key: str
    description: str
    op: str  # "<=", ">=" or "between" (limit: (low, high), inclusive)
    limit: Any
    tier: str


_CHECKS: dict[str, Callable[[Any, Any], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "between": lambda value, limit: limit[0] <= value <= limit[1],
}

TARGETS: tuple[Target, ...] = tuple(
    Target(*fields)
    for fields in (
        ("weekly_retrain_wall_s", "weekly retrain wall (s)", "<=", 900.0, "M"),
        (
            "weekly_retrain_reference_stages_wall_s",
            "  same without trait_products, no slower than the recorded M reference (s)",
            "<=",
            682.0,
            "M",
        ),
        ("weekly_retrain_refit_wall_s", "  same, refit path (nmf_refit for nmf_fit)", "<=", 900.0, "M"),
        ("weekly_retrain_peak_rss_gib", "weekly retrain peak RSS (GiB)", "<=", 8.0, "M"),
        ("weekly_retrain_peak_rss_gib", "  same, the bound the incremental retrain shares", "<=", 6.0, "M"),
        ("daily_run_wall_s", "daily run wall (s)", "<=", 60.0, "M"),
        ("weekly_incremental_wall_s", "weekly retrain, incremental, wall (s)", "<=", 300.0, "M"),
        ("weekly_incremental_peak_rss_gib", "weekly retrain, incremental, peak RSS (GiB)", "<=", 6.0, "M"),
        ("weekly_incremental_wall_s", "weekly retrain, incremental, wall (s)", "<=", 900.0, "L"),
        ("weekly_incremental_peak_rss_gib", "weekly retrain, incremental, peak RSS (GiB)", "<=", 16.0, "L"),
        ("weekly_retrain_peak_rss_gib", "weekly retrain (full) peak RSS (GiB)", "<=", 16.0, "L"),
        ("daily_run_wall_s", "daily run wall (s)", "<=", 120.0, "L"),
        ("incremental_hit_rate_ratio", "next-item hit@10, incremental / full (x)", ">=", 0.95, "any"),
        (
            "incremental_profile_lift_ratio",
            "profile lift over popularity, incremental / full (x), paired",
            ">=",
            0.95,
            "any",
        ),
        (
            "incremental_trait_ids_kept",
            "share of the parent's trait ids the increment kept",
            ">=",
            0.9,
            "any",
        ),
        (
            "incremental_drift_vs_threshold",
            "increment drift after alignment / its threshold",
            "<=",
            1.0,
            "any",
        ),
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
        (
            "scaling_exponent_cpu",
            "  same, in CPU time (robust to machine load)",
            "between",
            (0.9, 1.1),
            "any",
        ),
    )
)


def evaluate_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target's measured value (from ``report["summary"]``) and status."""
    summary = report["summary"]
    out = []
    for target in TARGETS:
        value = summary.get(target.key)
        if value is None:
            status = "not measured"
        else:
            status = "met" if _CHECKS[target.op](value, target.limit) else "MISSED"
            if target.tier not in ("any", report["tier"]):
                status += f" (indicative: target is for {target.tier})"
        out.append(
            {
                "key": target.key,
                "target": target.description,
                "op": target.op,
                "limit": target.limit,
                "value": value,
                "status": status,
            }
        )
    return out
