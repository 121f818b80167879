"""``trait_products.fit_trait_products`` of two source trees, timed in turn on the same workload,
and their results compared.

Usage (from the repository root, with the project's virtualenv)::

    git archive COMMIT include | tar -x -C /tmp/before
    .venv/bin/python bench/trait_products_pair.py --before /tmp/before/include --events 1000000 3000000

The workload of each size is synthetic events of the M tier's shape (``workloads.TIERS["M"]``:
10 events per customer, its products, categories, segments and days), cached as the tiers' are.
The training customers are a random 90% of the customers, sorted, with random non-negative
profiles of the default config's k: the stage's cost depends on the events and customers, not
on what the profiles say. Every measurement is a fresh process that loads the workload and
times one ``fit_trait_products`` call (wall and CPU time). The two trees alternate, ``--before``
first in odd pairs and this checkout's ``include`` first in even ones; each pair gives the ratio
before / after, and the median of the pairs' ratios is reported (the machine's speed drifts
between pairs, not within one). The last pair's results must agree: the same products, weights
equal to within ``RTOL``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
AFTER = BENCH_DIR.parent / "include"
TRAINING_SHARE = 0.9
RTOL = 1e-9  # the trees may sum in another order


def _child(tree: str, n_events: int, cache_dir: Path, out: Path) -> dict[str, Any]:
    """One timed call with ``tree`` first on the import path; the result saved to ``out`` (npz)."""
    sys.path.insert(0, tree)
    sys.path.insert(1, str(BENCH_DIR))
    import workloads

    from traitflow.config import PipelineConfig
    from traitflow.trait_products import fit_trait_products

    m = workloads.TIERS["M"].spec
    spec = dataclasses.replace(m, n_events=n_events, n_customers=n_events // 10)
    events, _ = workloads.synthetic_events(spec, cache_dir)
    trained_through, _, _ = workloads.data_window(events)
    rng = np.random.default_rng(0)
    customers = np.sort(events["customer_id"].unique().astype(object))
    customer_ids = customers[rng.random(len(customers)) < TRAINING_SHARE]
    config = PipelineConfig()
    profiles = rng.gamma(0.3, size=(len(customer_ids), config.traits.n_traits))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    products = fit_trait_products(events, customer_ids, profiles, config.aggregation, trained_through)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    np.savez(out, product_ids=products.product_ids.astype(str), weights=products.weights)
    return {
        "events": len(events),
        "customers": len(customer_ids),
        "wall_s": wall,
        "cpu_s": cpu,
        "process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "products_kept": len(products.product_ids),
    }


def _measure(tree: Path, n_events: int, cache_dir: Path, out: Path) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", str(tree), str(n_events), str(cache_dir), str(out)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.splitlines()[-1])


def _agree(before: Path, after: Path) -> float:
    """The largest relative weight difference of the two results (they must keep the same products)."""
    a, b = np.load(before), np.load(after)
    if not np.array_equal(a["product_ids"], b["product_ids"]):
        raise AssertionError("the two trees keep different products")
    np.testing.assert_allclose(b["weights"], a["weights"], rtol=RTOL, atol=0)
    return float(np.max(np.abs(b["weights"] - a["weights"]) / np.maximum(np.abs(a["weights"]), 1e-300)))


def pair(before: Path, sizes: list[int], repeats: int, cache_dir: Path) -> list[dict[str, Any]]:
    """Per size: both trees' runs and the pairs' ratios before / after (wall and CPU)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n_events in sizes:
            runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
            outs = {name: Path(tmp) / f"{name}-{n_events}.npz" for name in runs}
            for repeat in range(repeats):
                order = ("before", "after") if repeat % 2 == 0 else ("after", "before")
                for name in order:
                    tree = before if name == "before" else AFTER
                    runs[name].append(_measure(tree, n_events, cache_dir, outs[name]))
                    print(name, n_events, json.dumps(runs[name][-1]), file=sys.stderr, flush=True)
            ratios = [b["wall_s"] / a["wall_s"] for b, a in zip(runs["before"], runs["after"], strict=True)]
            cpu = [b["cpu_s"] / a["cpu_s"] for b, a in zip(runs["before"], runs["after"], strict=True)]
            rows.append(
                {
                    "events": runs["after"][0]["events"],
                    "customers": runs["after"][0]["customers"],
                    "before_wall_s": [r["wall_s"] for r in runs["before"]],
                    "after_wall_s": [r["wall_s"] for r in runs["after"]],
                    "ratio_wall": ratios,
                    "ratio_wall_median": statistics.median(ratios),
                    "ratio_cpu_median": statistics.median(cpu),
                    "peak_rss_mib": {k: max(r["process_peak_rss_mib"] for r in v) for k, v in runs.items()},
                    "max_rel_weight_diff": _agree(outs["before"], outs["after"]),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, help="the include/ directory of the other source tree")
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000, 3_000_000])
    parser.add_argument("--repeats", type=int, default=3, help="pairs per size")
    parser.add_argument("--cache-dir", type=Path, default=BENCH_DIR / "cache")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        tree, n_events, cache_dir, out = args.child
        print(json.dumps(_child(tree, int(n_events), Path(cache_dir), Path(out))))
        return
    if args.before is None:
        parser.error("--before is required")
    print(json.dumps(pair(args.before, args.events, args.repeats, args.cache_dir), indent=1))


if __name__ == "__main__":
    main()
