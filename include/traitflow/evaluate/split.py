"""The time split of an evaluation, and what is predicted after it (the target actions)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from traitflow.event_schema import ACTIONS

MIN_CUSTOMERS = 20
TARGET_ACTIONS: dict[str, tuple[str, ...]] = {
    "purchase": ("purchase",),
    "cart_or_purchase": ("cart", "purchase"),
    "cart": ("cart",),
    "any": ACTIONS,
}
# Without an explicit target: purchases, or carts and purchases when too few customers purchase.
AUTO_TARGETS: tuple[str, ...] = ("purchase", "cart_or_purchase")


class EvaluationError(ValueError):
    """The events cannot support the evaluation (empty split, too few test customers, ...)."""


@dataclass(frozen=True)
class Split:
    """Events before ``at`` (history: training and profiling) and at or after it (future)."""

    at: datetime
    history: pd.DataFrame
    future: pd.DataFrame
    method: str  # "date" or "fraction=<f>"


def split_events(events: pd.DataFrame, *, at: datetime | None = None, fraction: float = 0.8) -> Split:
    """Split ``events`` in time at ``at``, or where ``fraction`` of the events have happened.

    Raises ``EvaluationError`` when either side is empty, saying how to move the split.
    """
    if events.empty:
        raise EvaluationError("no events to evaluate on")
    times = events["event_time"]
    first, last = times.min(), times.max()
    if at is None:
        if not 0.0 < fraction < 1.0:
            raise EvaluationError(f"split fraction must be in (0, 1), got {fraction}")
        ordered = np.sort(times.to_numpy(dtype="datetime64[us]"))
        split_at = pd.Timestamp(ordered[min(int(len(ordered) * fraction), len(ordered) - 1)], tz="UTC")
        method = f"fraction={fraction:g}"
    else:
        split_at = pd.Timestamp(at)
        split_at = split_at.tz_localize("UTC") if split_at.tzinfo is None else split_at.tz_convert("UTC")
        method = "date"
    history = events[times < split_at]
    future = events[times >= split_at]
    span = f"the events span {first.isoformat()} .. {last.isoformat()}"
    if history.empty:
        raise EvaluationError(
            f"no events before the split {split_at.isoformat()} ({span}): "
            "choose a later --split-date or a larger --split-fraction"
        )
    if future.empty:
        raise EvaluationError(
            f"no events at or after the split {split_at.isoformat()} ({span}): "
            "choose an earlier --split-date or a smaller --split-fraction"
        )
    return Split(at=split_at.to_pydatetime(), history=history, future=future, method=method)


def choose_target(
    history: pd.DataFrame,
    future: pd.DataFrame,
    target: str | None,
    min_customers: int,
    *,
    column: str = "category",
) -> str:
    """The target (a key of ``TARGET_ACTIONS``): ``target`` if given, else the first of
    ``AUTO_TARGETS`` with at least ``min_customers`` customers who have events before the split
    and a target action (on a non-missing ``column``) after it.

    Raises ``EvaluationError`` when no candidate has enough customers, saying how to fix it.
    """
    if target is not None and target not in TARGET_ACTIONS:
        raise EvaluationError(f"unknown target {target!r}; choose one of {sorted(TARGET_ACTIONS)}")
    history_customers = pd.unique(history["customer_id"].to_numpy(dtype=object))
    future = future[future[column].notna()]
    counts: dict[str, int] = {}
    for candidate in (target,) if target else AUTO_TARGETS:
        customers = future.loc[future["action"].isin(TARGET_ACTIONS[candidate]), "customer_id"].to_numpy(
            dtype=object
        )
        counts[candidate] = len(np.unique(customers[np.isin(customers, history_customers)]))
        if counts[candidate] >= min_customers:
            return candidate
    found = "; ".join(
        f"{n} customers {'/'.join(TARGET_ACTIONS[name])} after the split" for name, n in counts.items()
    )
    raise EvaluationError(
        f"too few customers to evaluate (with events before the split): {found} "
        f"(need >= {min_customers}"
        f"{', in categorized events' if column == 'category' else ''}); use an earlier --split-date or "
        "a smaller --split-fraction, more events, another --target or a lower --min-customers"
    )
