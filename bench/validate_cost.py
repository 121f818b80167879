"""CPU cost of validating a posted body of 1 and of 10 events, in-process (no database).

Times what ``online_update.update_from_events`` does before the store: ``event_columns`` of
the JSON rows, ``request_source`` and ``validate_columns`` (canonical preset), on bodies of one
valid event and of ten events (one of them invalid). Prints the median CPU time per call
(``time.process_time``) over ``--calls`` calls; ``--profile`` prints cProfile's top entries:

    .venv/bin/python bench/validate_cost.py --calls 2000
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any


def body(n: int) -> list[dict[str, Any]]:
    """``n`` posted events of one customer, the last one of ten with an unknown action."""
    start = datetime.now(UTC) - timedelta(days=3)
    rows: list[dict[str, Any]] = [
        {
            "customer_id": "c-1",
            "event_time": (start + timedelta(minutes=i)).isoformat().replace("+00:00", "Z"),
            "action": "view",
            "product_id": f"p-{i}",
            "category": "shoes",
            "price": 19.5 + i,
            "session_id": "s-1",
        }
        for i in range(n)
    ]
    if n >= 10:
        rows[-1]["action"] = "teleport"
    return rows


def validate_call(rows: list[dict[str, Any]]) -> Callable[[], Any]:
    """What a post runs before the store, as one call."""
    from traitflow.events import PRESETS, validate_columns
    from traitflow.online_update import event_columns, request_source

    def call() -> Any:
        return validate_columns(event_columns(rows), PRESETS["canonical"], source=request_source(rows))

    return call


def p50_ms(call: Callable[[], Any], n: int) -> float:
    """Median CPU milliseconds of ``n`` calls (after 20 warm-up calls)."""
    for _ in range(20):
        call()
    cpu = []
    for _ in range(n):
        started = time.process_time()
        call()
        cpu.append((time.process_time() - started) * 1000)
    return statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--profile", action="store_true", help="cProfile the 1-event calls")
    args = parser.parse_args()
    for n in (1, 10):
        print(f"{n:>2} rows: p50 {p50_ms(validate_call(body(n)), args.calls):.3f} ms CPU per call")
    if args.profile:
        call = validate_call(body(1))
        profiler = cProfile.Profile()
        profiler.runcall(lambda: [call() for _ in range(args.calls)])
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
