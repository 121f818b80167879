"""CPU cost of validating a posted body of 1 and of 10 events, in-process (no database).

Times what ``online_update.update_from_events`` does before the store: ``event_columns`` of
the JSON rows, ``request_source`` and ``validate_columns`` (canonical preset), on bodies of one
valid event and of ten events (one of them invalid). Prints the median CPU time per call
(``time.process_time``) over ``--calls`` calls; ``--profile`` prints cProfile's top entries.
``--against REV`` runs this script on REV's library (``git archive``, the repository untouched)
and on this checkout's, in alternating child processes, ``--rounds`` times each:

    .venv/bin/python bench/validate_cost.py --calls 2000 --against eb843b7
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from one_client import export
from servers import REPO


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


def alternate(rev: str, calls: int, rounds: int) -> None:
    """This script on ``rev``'s library and on this checkout's, alternating, ``rounds`` times."""
    with tempfile.TemporaryDirectory() as tmp:
        trees = {rev: export(rev, Path(tmp) / "tree"), "this checkout": REPO}
        for round_number in range(1, rounds + 1):
            for name, tree in trees.items():
                path = os.pathsep.join(str(tree / d) for d in ("include", "plugins", "dags"))
                out = subprocess.run(
                    [sys.executable, __file__, "--calls", str(calls)],
                    env={**os.environ, "PYTHONPATH": path},
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                print(f"round {round_number}, {name}:", " | ".join(out.strip().splitlines()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--profile", action="store_true", help="cProfile the 1-event calls")
    parser.add_argument("--against", metavar="REV", help="alternate with REV's library")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.against:
        alternate(args.against, args.calls, args.rounds)
        return
    for n in (1, 10):
        print(f"{n:>2} rows: p50 {p50_ms(validate_call(body(n)), args.calls):.3f} ms CPU per call")
    if args.profile:
        call = validate_call(body(1))
        profiler = cProfile.Profile()
        profiler.runcall(lambda: [call() for _ in range(args.calls)])
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
