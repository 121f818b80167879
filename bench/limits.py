"""Which stage would hit a limit first beyond the measured sizes, and at what size.

From the scaling points (``scaling.scaling_run``: the full weekly retrain and the daily run on
customer slices), each stage's wall time is extrapolated as a power law through its time at the
largest point with the exponent fitted over all points; a stage's budget is that of its group
(weekly retrain, daily run). The group totals are the sums of their stages' laws. Peak RSS is
extrapolated as the process before any workload (interpreter and libraries, fixed), plus the
rest of the largest point's resident memory at a stage's start scaled linearly with the events
(the workload and what the earlier stages keep), plus the stage's own growth scaled with its
fitted exponent, at most 1: no stage holds more than arrays proportional to the events, and a
steeper fit comes from small sizes, where a stage reuses memory freed before it and barely
grows. The size at which each crosses its budget is found by bisection in log space; the report
lists them from the first to be hit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scaling import fit_exponent

WEEKLY_BUDGET_S = 15 * 60.0
DAILY_BUDGET_S = 2 * 60.0
RSS_BUDGET_MIB = 16 * 1024.0
# Sizes beyond this are reported as "not within range" (no crossing).
MAX_EVENTS = 1e13


@dataclass(frozen=True)
class Law:
    """``value(n) = at_largest * (n / largest) ** exponent`` (exponent clamped at 0: a stage
    measured as shrinking with size is taken as constant, never as vanishing)."""

    at_largest: float
    largest: float
    exponent: float

    def __call__(self, n: float) -> float:
        return self.at_largest * (n / self.largest) ** max(self.exponent, 0.0)


def crossing(predict: Callable[[float], float], budget: float, start: float) -> float | None:
    """The smallest size >= ``start`` at which ``predict`` (non-decreasing) reaches ``budget``,
    ``start`` itself when it already does, None when it stays below up to ``MAX_EVENTS``."""
    if predict(start) >= budget:
        return start
    low, high = start, start
    while predict(high) < budget:
        if high >= MAX_EVENTS:
            return None
        low, high = high, high * 2.0
    for _ in range(60):
        middle = math.sqrt(low * high)
        low, high = (middle, high) if predict(middle) < budget else (low, middle)
    return high


def _law(sizes: list[float], values: list[float]) -> Law:
    exponent = fit_exponent(sizes, values) if min(values) > 0 else None
    return Law(values[-1], sizes[-1], 1.0 if exponent is None else exponent)


def _row(what: str, budget: str, limit: float, law: Law, predict: Callable[[float], float]) -> dict[str, Any]:
    return {
        "what": what,
        "budget": budget,
        "exponent": law.exponent,
        "at_largest": law.at_largest,
        "limit_events": crossing(predict, limit, law.largest),
    }


def extrapolate_limits(scaling: dict[str, Any], fixed_rss_mib: float = 0.0) -> dict[str, Any]:
    """The crossing size of every stage, group total and stage peak RSS (see the module doc);
    ``fixed_rss_mib``: the process's RSS before the workload was loaded."""
    points = sorted(scaling["points"], key=lambda p: p["events"])
    sizes = [float(p["events"]) for p in points]
    largest = points[-1]
    rows = []
    for key, group, budget in (
        ("stages_wall_s", "weekly retrain", WEEKLY_BUDGET_S),
        ("daily_stages_wall_s", "daily run", DAILY_BUDGET_S),
    ):
        names = list(largest.get(key) or {})
        laws = {name: _law(sizes, [p[key].get(name, 0.0) for p in points]) for name in names}
        label = f"{group} wall {budget:.0f} s"
        rows += [_row(name, label, budget, law, law) for name, law in laws.items()]
        if laws:
            total = Law(sum(law.at_largest for law in laws.values()), sizes[-1], 1.0)
            summed = _row(
                f"{group} (sum)", label, budget, total, lambda n, ls=laws: sum(law(n) for law in ls.values())
            )
            rows.append({**summed, "exponent": None})  # a sum of power laws has no single exponent
    for name, growth_mib in largest.get("stages_rss_growth_mib", {}).items():
        start_mib = largest["stages_peak_rss_mib"][name] - growth_mib
        scaled_mib = max(start_mib - fixed_rss_mib, 0.0)
        fitted = _law(sizes, [p["stages_rss_growth_mib"].get(name, 0.0) for p in points])
        growth = Law(growth_mib, sizes[-1], min(fitted.exponent, 1.0))
        rows.append(
            _row(
                f"{name} peak RSS",
                f"peak RSS {RSS_BUDGET_MIB / 1024:.0f} GiB",
                RSS_BUDGET_MIB,
                Law(largest["stages_peak_rss_mib"][name], sizes[-1], growth.exponent),
                lambda n, s=scaled_mib, g=growth: fixed_rss_mib + s * n / g.largest + g(n),
            )
        )
    reached = [r for r in rows if r["limit_events"] is not None]
    reached.sort(key=lambda r: r["limit_events"])
    return {
        "largest_events": int(sizes[-1]),
        "budgets": {"weekly_s": WEEKLY_BUDGET_S, "daily_s": DAILY_BUDGET_S, "peak_rss_mib": RSS_BUDGET_MIB},
        "fixed_rss_mib": fixed_rss_mib,
        "rows": reached + [r for r in rows if r["limit_events"] is None],
        "first": reached[0] if reached else None,
    }
