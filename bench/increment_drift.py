"""Aligned drift of an incremental update under planted behaviour shifts of several strengths.

For every seed a synthetic workload is drawn (``traitflow.synthetic``, the seed also seeds
Word2Vec); a parent is trained from scratch on the weeks before the last one. The last week is
then shifted with each strength in turn and the model for the whole window is trained
incrementally (the product's ``train_increment`` with the default ``IncrementParams``) and, for
comparison, from scratch. Each row records the drift report of the increment from the parent
(``traitflow.drift.measure_drift`` with the increment corpus's token counts:
``recent_weighted_drift`` is what ``should_refit`` compares with ``increment_drift_threshold``; the
weighted mean by the parent's counts, the plain mean and the 95th percentile beside it), the full
retrain's weighted mean drift, and next-item hit@10 of the increment, the full retrain and the
parent on the held-out sessions of the new week.

Shift kinds (``--shift``), applied to the last week only:

- ``products``: a share of the products (the strength) is permuted among itself, so each picked
  product appears where another one did (its own category and price kept): the relations between
  products change, which is what the token vectors and so the trait components are made of;
- ``customers``: a share of the customers (the strength) buys in another segment's categories (each
  event's product replaced by the product of the same popularity rank in the category a fixed
  category permutation maps its category to): sessions stay within one category, so relations
  between products do not change, only who buys what.

    python bench/increment_drift.py --seeds 1,2,3,4,5 --shift products

Prints one JSON line per (seed, strength) and then a summary per strength: mean, min and max of
each signal and the gap between the smallest shifted value and the largest unshifted one.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from incremental import holdout_hit_rate

from traitflow.config import IncrementParams, Item2VecParams, SessionParams
from traitflow.drift import measure_drift
from traitflow.item2vec import train_item2vec
from traitflow.item2vec_incremental import increment_token_counts, train_increment
from traitflow.pipeline import Corpus, IncrementSelection, build_corpus
from traitflow.sessions import sessionize
from traitflow.synthetic import SyntheticData, SyntheticSpec, generate

STRENGTHS = {"none": 0.0, "weak": 0.1, "medium": 0.3, "strong": 1.0}
HOLDOUT_SALT = 7
SIGNALS = ("weighted_mean_drift", "mean_drift", "p95_drift", "recent_weighted_drift", "full_drift")


@dataclass(frozen=True)
class Workload:
    """One seed's events with the cut between the parent's weeks and the new week."""

    data: SyntheticData
    cut: pd.Timestamp
    seed: int


def shift_products(workload: Workload, share: float) -> pd.DataFrame:
    """The events with a ``share`` of the products permuted among themselves in the new week."""
    events = workload.data.events.copy()
    products = workload.data.products.set_index("product_id")
    rng = np.random.default_rng(workload.seed + 1000)
    ids = products.index.to_numpy(dtype=object)
    picked = rng.choice(ids, size=round(share * len(ids)), replace=False)
    if len(picked) < 2:
        return events
    mapping = dict(zip(picked, np.roll(picked, 1), strict=True))  # a cycle: no product keeps its place
    return _replace_products(events, events["event_time"] >= workload.cut, mapping, products)


def shift_customers(workload: Workload, share: float) -> pd.DataFrame:
    """The events with a ``share`` of the customers buying, in the new week, the product of the same
    popularity rank in another category (a category permutation without fixed points)."""
    events = workload.data.events.copy()
    products = workload.data.products
    rng = np.random.default_rng(workload.seed + 2000)
    categories = np.sort(products["category"].unique())
    target_of = dict(zip(categories, np.roll(rng.permutation(categories), 1), strict=True))
    by_rank = products.sort_values(["category", "popularity_rank"]).groupby("category")["product_id"]
    ranked = {category: group.to_numpy(dtype=object) for category, group in by_rank}
    mapping = {}
    for row in products.itertuples():
        target = ranked[target_of[row.category]]
        mapping[row.product_id] = target[min(int(row.popularity_rank), len(target)) - 1]
    customers = workload.data.segments["customer_id"].to_numpy(dtype=object)
    movers = rng.choice(customers, size=round(share * len(customers)), replace=False)
    rows = (events["event_time"] >= workload.cut) & events["customer_id"].isin(movers)
    return _replace_products(events, rows, mapping, products.set_index("product_id"))


def _replace_products(
    events: pd.DataFrame, rows: pd.Series, mapping: dict[str, str], products: pd.DataFrame
) -> pd.DataFrame:
    """``events`` with the product of ``rows`` mapped (unmapped products kept), and the category
    and price of the product each row now names."""
    replaced = events.loc[rows, "product_id"].map(lambda product: mapping.get(product, product))
    events.loc[rows, "product_id"] = replaced
    events.loc[rows, "category"] = products.loc[replaced.to_numpy(), "category"].to_numpy()
    events.loc[rows, "price"] = products.loc[replaced.to_numpy(), "price"].to_numpy()
    return events


SHIFTS = {"products": shift_products, "customers": shift_customers}


def new_week_holdout(
    events: pd.DataFrame, corpus: Corpus, sessions: SessionParams, cut: pd.Timestamp
) -> pd.DataFrame:
    """The held-out sessions (``holdout.parquet`` rows) whose first event is in the new week."""
    assert corpus.holdout_path is not None
    first = sessionize(events, sessions).groupby("session", sort=False)["event_time"].min()
    new = first.index[first >= cut].to_numpy()
    holdout = pd.read_parquet(corpus.holdout_path)
    return holdout[np.isin(holdout["session"].to_numpy(), new)]


def run_seed(seed: int, args: argparse.Namespace, work: Path) -> list[dict[str, object]]:
    spec = SyntheticSpec(
        n_customers=args.customers,
        n_products=args.products,
        n_categories=args.categories,
        n_segments=args.segments,
        n_events=args.events,
        days=7 * args.weeks,
        seed=seed,
    )
    workload = Workload(generate(spec), pd.Timestamp(spec.start + timedelta(weeks=args.weeks - 1)), seed)
    params = Item2VecParams(
        vector_size=args.vector_size, epochs=args.epochs, negative=args.negative, workers=1, seed=seed
    )
    increment = IncrementParams()
    sessions = SessionParams()
    earlier = workload.data.events[workload.data.events["event_time"] < workload.cut]
    before = build_corpus(earlier, sessions, work / "parent", holdout_fraction=0.1, random_state=HOLDOUT_SALT)
    parent = train_item2vec(before.corpus_path, before.vocabulary(), params)
    rows = []
    for name, share in STRENGTHS.items():
        events = SHIFTS[args.shift](workload, share)
        selection = IncrementSelection(workload.cut.to_pydatetime(), increment.replay_fraction, seed)
        corpus = build_corpus(
            events,
            sessions,
            work / name,
            holdout_fraction=0.1,
            random_state=HOLDOUT_SALT,
            increment=selection,
        )
        assert corpus.increment_path is not None
        tokens, _ = train_increment(
            corpus.increment_path, corpus.corpus_path, corpus.vocabulary(), parent, params, increment
        )
        full = train_item2vec(corpus.corpus_path, corpus.vocabulary(), params)
        recent = increment_token_counts(corpus.increment_path, corpus.vocabulary())
        report = measure_drift(tokens, parent, recent_counts=recent)
        holdout = new_week_holdout(events, corpus, sessions, workload.cut)
        row = {
            "seed": seed,
            "shift": args.shift,
            "strength": name,
            "share": share,
            "weighted_mean_drift": report.weighted_mean_drift,
            "mean_drift": report.mean_drift,
            "p95_drift": report.p95_drift,
            "recent_weighted_drift": report.recent_weighted_drift,
            "full_drift": measure_drift(full, parent).weighted_mean_drift,
            "hit_increment": holdout_hit_rate(tokens, holdout),
            "hit_full": holdout_hit_rate(full, holdout),
            "hit_parent": holdout_hit_rate(parent, holdout),
        }
        print(
            json.dumps({key: round(v, 4) if isinstance(v, float) else v for key, v in row.items()}),
            flush=True,
        )
        rows.append(row)
    return rows


def summary(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Mean, min and max of every signal per strength, and for each shifted strength the gap
    between its smallest value and the largest unshifted one (positive: separated on every seed)."""
    frame = pd.DataFrame(rows)
    out = []
    for name in STRENGTHS:
        group = frame[frame["strength"] == name]
        entry: dict[str, object] = {"strength": name, "n": len(group)}
        for signal in (*SIGNALS, "hit_increment", "hit_full", "hit_parent"):
            values = group[signal].astype(float)
            entry[signal] = [round(values.mean(), 4), round(values.min(), 4), round(values.max(), 4)]
        if name != "none":
            unshifted = frame[frame["strength"] == "none"]
            for signal in SIGNALS:
                entry[f"gap_{signal}"] = round(float(group[signal].min() - unshifted[signal].max()), 4)
        out.append(entry)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3,4,5", help="comma-separated synthetic/Word2Vec seeds")
    parser.add_argument("--shift", choices=sorted(SHIFTS), default="products")
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--products", type=int, default=300)
    parser.add_argument("--categories", type=int, default=12)
    parser.add_argument("--segments", type=int, default=4)
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--weeks", type=int, default=5)
    parser.add_argument("--vector-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=Item2VecParams().epochs, help="of the full trainings")
    parser.add_argument("--negative", type=int, default=Item2VecParams().negative, help="negative samples")
    args = parser.parse_args()
    rows = []
    for seed in (int(part) for part in args.seeds.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            rows += run_seed(seed, args, Path(tmp))
    for entry in summary(rows):
        print(json.dumps(entry), flush=True)


if __name__ == "__main__":
    main()
