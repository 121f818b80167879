"""Two code trees' CPU per event post, in lockstep: an A/B that the machine's drifting speed
does not decide.

One worker process per tree (its ``include``, ``plugins`` and ``dags`` on ``PYTHONPATH``),
both posting through ``online_update.update_from_events`` to the same schema (``post_cost``'s
posts: one event, every fifth post one invalid event more). They take turns, one post each,
the order alternating, so both see the same machine within milliseconds; each reports its
own CPU time per post. Prints the medians and the median of the per-pair ratios. Needs a
schema built by ``post_cost.py --keep-schema`` (or the load test's ``--keep-schema``):

    .venv/bin/python bench/post_lockstep.py --base /tmp/base --new . --schema cost_0123456789 \\
        --database-url postgresql://postgres@127.0.0.1:5432/test --posts 800
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def worker(url: str, schema: str, seed: int) -> None:
    """Post once per line read from stdin; print this process's CPU milliseconds for it."""
    from load_test import existing_data
    from post_cost import poster

    from traitflow.store import Store

    with Store(url, schema) as store:
        post = poster(store, existing_data(store), seed)
        for _ in range(3):  # the model cache and connections warm
            post()
        print("ready", flush=True)
        for _line in sys.stdin:
            started = time.process_time()
            post()
            print(f"{(time.process_time() - started) * 1000:.4f}", flush=True)


def start(tree: Path, url: str, schema: str, seed: int) -> subprocess.Popen[str]:
    paths = os.pathsep.join(str(tree / part) for part in ("include", "plugins", "dags"))
    command = [sys.executable, __file__, "--worker", "--database-url", url, "--schema", schema]
    process = subprocess.Popen(
        [*command, "--seed", str(seed)],
        env={**os.environ, "PYTHONPATH": paths},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        raise SystemExit(f"the worker of {tree} did not start (its error is above)")
    return process


def step(process: subprocess.Popen[str]) -> float:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write("go\n")
    process.stdin.flush()
    return float(process.stdout.readline())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", type=Path, help="the tree measured as A (a git worktree, say)")
    p.add_argument("--new", type=Path, default=BENCH.parent, help="the tree measured as B (default: this)")
    p.add_argument("--database-url", default=os.environ.get("TRAITFLOW_DATABASE_URL"))
    p.add_argument("--schema", required=True, help="a schema built by post_cost.py --keep-schema")
    p.add_argument("--posts", type=int, default=800, help="posts per tree")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if not args.database_url:
        raise SystemExit("--database-url (or TRAITFLOW_DATABASE_URL) is required")
    if args.worker:
        worker(args.database_url, args.schema, args.seed)
        return
    if args.base is None:
        raise SystemExit("--base TREE is required")
    base = start(args.base.resolve(), args.database_url, args.schema, seed=1)
    new = start(args.new.resolve(), args.database_url, args.schema, seed=2)
    a, b = [], []
    try:
        for i in range(args.posts):
            if i % 2 == 0:
                a.append(step(base))
                b.append(step(new))
            else:
                b.append(step(new))
                a.append(step(base))
    finally:
        for process in (base, new):
            assert process.stdin is not None
            process.stdin.close()
            process.wait()
    ratio = statistics.median(y / x for x, y in zip(a, b, strict=True))
    print(
        f"post CPU p50: base {statistics.median(a):.2f} ms, new {statistics.median(b):.2f} ms;"
        f" median of the per-pair ratios new/base {ratio:.3f} ({args.posts} posts each)"
    )


if __name__ == "__main__":
    main()
