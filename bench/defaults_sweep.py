"""Item2Vec defaults: training time against quality for settings around ``Item2VecParams``.

Each setting changes one Item2Vec parameter from the current defaults (or a few together, the
combinations); each is trained on the planted synthetic events of a bench tier (default k), on
the pipeline tests' planted workload (one trait per segment: long histories, where the dominant
trait should recover the segment) and on the Online Retail II export, each split at 80% of its
events (``evaluate.split_events``), with 10% of the training sessions held out of the corpus.
Per setting and dataset:

* ``train_s``: gensim training time with the product's default ``workers``, timed once;
* with ``workers=1`` (reproducible vectors), seed 42 (``--seed``): next-item hit@10 on the held-out sessions
  (``quality.next_item_hit_rate``); the traits fitted on those tokens (``pipeline.fit_model``);
  the planted-segment ARI of the customers' dominant traits (synthetic only); the profile's
  hit@10 lift over popularity with its bootstrap 95% interval, on all products and on products
  new to the customer (``evaluate.product_sections``, the product's evaluation path);
* trait-id stability: the tokens retrained with the next seed, aligned to the first model
  (``alignment.align_tokens``) and the traits refitted with ``previous=`` as the weekly retrain
  does -- the share of trait ids kept (matched at profile similarity >= 0.5, ``match_traits``)
  and of customers whose dominant trait id is unchanged; the same against the model of the
  default setting (what switching to the setting would cost in trait ids).

``--incremental`` adds the incremental sweep (``bench/incremental.py``'s comparison): one
parameter of ``IncrementParams`` at a time around its defaults, time and next-item hit@10 next
to the full retrain, on synthetic events whose last week arrives as the increment.

    PYTHONPATH=include:bench .venv/bin/python bench/defaults_sweep.py --tier S --incremental

Prints one JSON line per run, then the Markdown tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from traitflow.alignment import align_tokens
from traitflow.config import IncrementParams, Item2VecParams, PipelineConfig, TraitParams
from traitflow.evaluate import _profile_all, product_sections, segment_report, split_events
from traitflow.evaluate.stability import profile_change
from traitflow.item2vec import train_item2vec
from traitflow.model import TokenTable, TraitflowModel
from traitflow.pipeline import Corpus, build_corpus, fit_model
from traitflow.synthetic import SyntheticSpec, generate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from incremental import compare_incremental, holdout_hit_rate
from retail_events import retail_events
from workloads import TIERS

DEFAULT_SETTING = "default"
# One parameter at a time around Item2VecParams' defaults, then combinations that the single
# changes suggest for short sessions (fewer epochs with more negatives, no down-sampling).
SETTINGS: dict[str, dict[str, Any]] = {
    DEFAULT_SETTING: {},
    "epochs=3": {"epochs": 3},
    "epochs=5": {"epochs": 5},
    "epochs=20": {"epochs": 20},
    "sample=0": {"sample": 0.0},
    "sample=1e-4": {"sample": 1e-4},
    "negative=5": {"negative": 5},
    "negative=20": {"negative": 20},
    "min_count=2": {"min_count": 2},
    "min_count=5": {"min_count": 5},
    "window=2": {"window": 2},
    "window=10": {"window": 10},
    "epochs=5+negative=20": {"epochs": 5, "negative": 20},
    "epochs=5+sample=0": {"epochs": 5, "sample": 0.0},
    "epochs=5+window=10+negative=20": {"epochs": 5, "window": 10, "negative": 20},
}
INCREMENT_SETTINGS: tuple[IncrementParams, ...] = tuple(
    IncrementParams(increment_alpha=alpha, increment_epochs=epochs, replay_fraction=replay)
    for alpha, epochs, replay in (
        (0.01, 5, 0.2),  # the defaults
        (0.01, 2, 0.2),
        (0.01, 10, 0.2),
        (0.005, 5, 0.2),
        (0.025, 5, 0.2),
        (0.01, 5, 0.0),
        (0.01, 5, 0.5),
    )
)
DATASETS = ("synthetic", "planted", "retail")
HOLDOUT_FRACTION = 0.1
RETRAIN_SEED_OFFSET = 1
N_RESAMPLES = 500


# The planted-segment workload of the pipeline tests (tests/unit/test_pipeline.py): long
# histories, one trait per segment, so the dominant trait's ARI is the recovery measure.
PLANTED_SPEC = SyntheticSpec(
    n_customers=800, n_products=400, n_categories=18, n_segments=6, n_events=40_000, seed=1
)


@dataclass(frozen=True)
class Dataset:
    """Events split at 80%, the corpus of the history (held-out sessions apart), the number of
    traits to fit and, for planted synthetic data, the customers' segments."""

    name: str
    history: pd.DataFrame
    future: pd.DataFrame
    split_at: Any
    corpus: Corpus
    holdout: pd.DataFrame
    segments: pd.DataFrame | None
    n_traits: int


def load_dataset(
    name: str,
    events: pd.DataFrame,
    segments: pd.DataFrame | None,
    work: Path,
    n_traits: int = TraitParams().n_traits,
) -> Dataset:
    split = split_events(events, fraction=0.8)
    corpus = build_corpus(
        split.history, PipelineConfig().sessions, work / name, holdout_fraction=HOLDOUT_FRACTION
    )
    assert corpus.holdout_path is not None
    holdout = pd.read_parquet(corpus.holdout_path)
    return Dataset(name, split.history, split.future, split.at, corpus, holdout, segments, n_traits)


def named_dataset(name: str, tier: str, work: Path) -> Dataset:
    """``synthetic``: the tier's planted events at the default k; ``planted``: the tests' planted
    workload with one trait per segment; ``retail``: the Online Retail II export."""
    if name == "retail":
        return load_dataset("online_retail_ii", retail_events(), None, work)
    spec = TIERS[tier].spec if name == "synthetic" else PLANTED_SPEC
    data = generate(spec)
    label = f"synthetic-{tier}" if name == "synthetic" else f"planted-k{spec.n_segments}"
    n_traits = TraitParams().n_traits if name == "synthetic" else spec.n_segments
    return load_dataset(label, data.events, data.segments, work, n_traits)


def trait_ids_kept(model: TraitflowModel, other_tokens: TokenTable, data: Dataset) -> dict[str, float]:
    """Align ``other_tokens`` to ``model``'s, refit the traits with ``previous=model`` (as the weekly
    retrain does) and compare: share of trait ids kept, of customers keeping their dominant trait."""
    config = model.config
    aligned = align_tokens(other_tokens, model.tokens)
    refit = fit_model(data.history, aligned, config, data.split_at, previous=model)
    match = refit.trait_match or {}
    profiled = _profile_all(model, data.history, data.split_at)
    after = _profile_all(refit, data.history, data.split_at)
    change = profile_change(profiled.profiles, model.traits.trait_ids, after.profiles, refit.traits.trait_ids)
    return {
        "ids_kept": int(match.get("n_matched", 0)) / model.traits.n_traits,
        "same_dominant": change["same_dominant_trait"],
    }


def _lift(section: dict[str, Any]) -> dict[str, Any]:
    """The profile's hit@10 lift over popularity and its bootstrap 95% interval."""
    low, high = section["profile_lift_vs_popularity_ci95"]["hit@10"]
    return {
        "lift": round(section["profile_lift_vs_popularity"]["hit@10"], 3),
        "ci95": [round(low, 3), round(high, 3)],
        "n_customers": section["n_customers"],
    }


def measure(
    data: Dataset, name: str, params: Item2VecParams, reference: TraitflowModel | None
) -> tuple[dict[str, Any], TraitflowModel]:
    """The row of one setting on one dataset, and its (workers=1) model."""
    vocabulary = data.corpus.vocabulary()
    started = time.perf_counter()
    train_item2vec(data.corpus.corpus_path, vocabulary, params)
    train_s = time.perf_counter() - started
    serial = dataclasses.replace(params, workers=1)
    started = time.perf_counter()
    tokens = train_item2vec(data.corpus.corpus_path, vocabulary, serial)
    train_s_serial = time.perf_counter() - started
    config = PipelineConfig(item2vec=serial, traits=TraitParams(n_traits=data.n_traits))
    model = fit_model(data.history, tokens, config, data.split_at)
    profiled = _profile_all(model, data.history, data.split_at)
    sections = product_sections(
        model, data.history, data.future, split_at=data.split_at, profiled=profiled, n_resamples=N_RESAMPLES
    )
    reseeded = dataclasses.replace(serial, seed=serial.seed + RETRAIN_SEED_OFFSET)
    retrained = train_item2vec(data.corpus.corpus_path, vocabulary, reseeded)
    row: dict[str, Any] = {
        "data": data.name,
        "setting": name,
        "seed": params.seed,
        "train_s": round(train_s, 2),
        "train_s_workers1": round(train_s_serial, 2),
        "n_tokens": len(tokens),
        "hit_at_10": round(holdout_hit_rate(tokens, data.holdout), 4),
        "hit_at_10_reseed": round(holdout_hit_rate(retrained, data.holdout), 4),
        "product_lift": _lift(sections["product_ranking"]),
        "product_lift_new": _lift(sections["product_ranking_new"]),
        "ari": None,
        "reseed": trait_ids_kept(model, retrained, data),
        "vs_default": None if reference is None else trait_ids_kept(reference, tokens, data),
    }
    if data.segments is not None:
        row["ari"] = round(
            segment_report(profiled.customer_ids, profiled.profiles, data.segments)["ari_dominant_trait"], 4
        )
    return row, model


def sweep(
    data: Dataset, names: Sequence[str], workers: int, seed: int = Item2VecParams().seed
) -> Iterator[dict[str, Any]]:
    """The rows of ``names`` on ``data``; ``seed`` is the Word2Vec seed of the measured models (their
    reseeded retrain takes the next one)."""
    reference = None
    for name in names:
        params = Item2VecParams(**{"workers": workers, "seed": seed, **SETTINGS[name]})
        row, model = measure(data, name, params, reference)
        if name == DEFAULT_SETTING:
            reference = model
        yield row


def incremental_events(spec: SyntheticSpec) -> tuple[pd.DataFrame, Any]:
    """Events of ``spec`` and the start of their last week (the increment)."""
    events = generate(spec).events
    return events, spec.start + timedelta(days=spec.days - 7)


def _interval(value: dict[str, Any]) -> str:
    low, high = value["ci95"]
    return f"{value['lift']:.2f} [{low:.2f}, {high:.2f}]"


def _kept(value: dict[str, float] | None) -> str:
    return "" if value is None else f"{value['ids_kept']:.2f} / {value['same_dominant']:.2f}"


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The settings table: one line per (dataset, setting)."""
    lines = [
        "| data | setting | train s (default workers) | train s (workers=1) | "
        "next-item hit@10 (seed / next seed) | ARI | lift hit@10 [95% CI] | lift new [95% CI] | "
        "reseed ids kept / same dominant | "
        "vs default ids kept / same dominant |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        ari = "" if row["ari"] is None else f"{row['ari']:.3f}"
        lines.append(
            f"| {row['data']} | {row['setting']} | {row['train_s']:.1f} | {row['train_s_workers1']:.1f} | "
            f"{row['hit_at_10']:.3f} / {row['hit_at_10_reseed']:.3f} | {ari} | "
            f"{_interval(row['product_lift'])} | {_interval(row['product_lift_new'])} | "
            f"{_kept(row['reseed'])} | {_kept(row['vs_default'])} |"
        )
    return "\n".join(lines)


def incremental_markdown(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| model | seconds | next-item hit@10 | hit@10 new week | drift from parent |",
        "|---|--:|--:|--:|--:|",
    ]
    lines += [
        f"| {row['model']} | {row['seconds']:.1f} | {row['hit_at_10']:.3f} | "
        f"{row['hit_at_10_new_week']:.3f} | {row['drift_from_parent']:.3f} |"
        for row in rows
    ]
    return "\n".join(lines)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tier", choices=sorted(TIERS), default="S", help="synthetic tier (planted)")
    parser.add_argument(
        "--data", choices=DATASETS, action="append", help=f"datasets (default: all): {named_dataset.__doc__}"
    )
    parser.add_argument(
        "--settings", help=f"comma-separated setting names (default: all): {', '.join(SETTINGS)}"
    )
    parser.add_argument("--workers", type=int, default=Item2VecParams().workers, help="for train_s")
    parser.add_argument(
        "--seed", type=int, default=Item2VecParams().seed, help="Word2Vec seed (the reseeded retrain: +1)"
    )
    parser.add_argument("--incremental", action="store_true", help="also the incremental sweep")
    parser.add_argument("--only-incremental", action="store_true", help="the incremental sweep only")
    return parser.parse_args()


def main() -> None:
    args = parse_arguments()
    names = args.settings.split(",") if args.settings else list(SETTINGS)
    unknown = sorted(set(names) - set(SETTINGS))
    if unknown:
        raise SystemExit(f"unknown settings {unknown}; known: {', '.join(SETTINGS)}")
    if DEFAULT_SETTING in names:  # the reference of "vs default" comes first
        names = [DEFAULT_SETTING] + [name for name in names if name != DEFAULT_SETTING]
    spec = TIERS[args.tier].spec
    rows: list[dict[str, Any]] = []
    incremental_rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not args.only_incremental:
            for data_name in args.data or DATASETS:
                data = named_dataset(data_name, args.tier, work)
                for row in sweep(data, names, args.workers, args.seed):
                    print(json.dumps(row), flush=True)
                    rows.append(row)
        if args.incremental or args.only_incremental:
            events, cut = incremental_events(spec)
            serial = Item2VecParams(workers=1)
            for row in compare_incremental(events, cut, serial, INCREMENT_SETTINGS, work / "incremental"):
                print(json.dumps({"data": f"synthetic-{args.tier}", **row}), flush=True)
                incremental_rows.append(row)
    if rows:
        print("\n" + markdown(rows))
    if incremental_rows:
        print("\n" + incremental_markdown(incremental_rows))


if __name__ == "__main__":
    main()
