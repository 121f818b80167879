"""Product ranking on the Online Retail II export: one method variant per run, one JSON line out.

Trains on the first 80% of the events (``evaluate.split_events``), profiles every customer at the
split and scores product rankings of purchases after it (``traitflow.product_eval``), on all
products and on products new to the customer, with bootstrap 95% intervals. The profile ranks as
served (``ranking.profile_product_scores``: the traits' mixture tilted by the Item2Vec similarity,
``--similarity-weight``) and the mixture alone is ``profile_traits``. Besides them it scores the
token-loading ranking (each trait's products by their tokens' projected
loadings, the design before the mixture) as ``profile_loadings``, and by the scores
``label_traits`` picks a trait's top products with as ``profile_label_scores``; with
``--variants`` also the Item2Vec similarity of customer and product, alone and blended with the
mixture (``similarity_variants``). ``--validation`` splits the training events again and scores
inside them, so blend weights are chosen without the test period; ``--tier`` runs on a bench
tier's synthetic events instead of the export. The row names the model's trait labels.

    PYTHONPATH=include:bench .venv/bin/python bench/retail_ranking.py --set k=16 --smoothing 0
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from traitflow.config import PipelineConfig
from traitflow.evaluate import _profile_all, split_events
from traitflow.model import TraitflowModel
from traitflow.pipeline import train
from traitflow.product_eval import ProfileVectors, customer_usage, product_index, product_ranking
from traitflow.ranking import (
    SIMILARITY_WEIGHT,
    ScoreBatch,
    blended_scores,
    embedding_similarity,
    fold_in_profiles,
    mixture_scores,
    product_vectors,
    trait_item_distribution,
)
from traitflow.traits import project

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retail_events import RETAIL_PATH, retail_events
from workloads import TIERS, synthetic_events


def loading_distribution(model: TraitflowModel, index: pd.Index) -> np.ndarray:
    """(k, P): each product's count-weighted token loadings per trait, columns normalized per trait."""
    tokens = model.tokens
    loadings = project(model.traits, tokens.vectors)
    cols = index.get_indexer(np.asarray(tokens.product_ids, dtype=object))
    known = cols >= 0
    membership = sp.csr_matrix(
        (tokens.counts[known].astype(np.float64), (cols[known], np.flatnonzero(known))),
        shape=(len(index), len(tokens)),
    )
    mass = np.asarray(membership @ loadings).T  # (k, P)
    return mass / np.maximum(mass.sum(axis=1, keepdims=True), 1e-12)


def label_score_distribution(model: TraitflowModel, index: pd.Index) -> np.ndarray:
    """(k, P): the scores ``traits.label_traits`` ranks a trait's top products by (projected token
    loading x log(1 + count)), a product's best token, not normalized."""
    tokens = model.tokens
    scores = project(model.traits, tokens.vectors) * np.log1p(tokens.counts.astype(np.float64))[:, None]
    cols = index.get_indexer(np.asarray(tokens.product_ids, dtype=object))
    out = np.zeros((model.traits.n_traits, len(index)))
    for j in range(model.traits.n_traits):  # k iterations, each vectorized over tokens
        np.maximum.at(out[j], cols[cols >= 0], scores[cols >= 0, j])
    return out


def retail_product_names(path: Path = RETAIL_PATH) -> dict[str, str]:
    """StockCode -> its most frequent Description in the export (labels name products)."""
    raw = pd.read_parquet(path, columns=["StockCode", "Description"]).dropna()
    raw = raw.assign(StockCode=raw["StockCode"].astype(str), Description=raw["Description"].str.strip())
    counts = raw.groupby(["StockCode", "Description"]).size().reset_index(name="n")
    best = counts.sort_values("n", ascending=False, kind="stable").drop_duplicates("StockCode")
    return dict(zip(best["StockCode"], best["Description"], strict=True))


GAMMAS: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0)


def similarity_variants(
    model: TraitflowModel,
    index: pd.Index,
    embeddings: np.ndarray,
    profiles: np.ndarray,
    weights: np.ndarray,
) -> list[tuple[str, Callable[[np.ndarray], ScoreBatch]]]:
    """Scorers of the customers at given rows: the Item2Vec similarity of customer and product
    (``embedding``: the customer's own vector, about the training centre; ``embedding_raw``: the
    same without centring; ``reconstruction``: the vector the profile stands for,
    ``profile @ (H+ - H-)`` about the centre), alone and blended with the profile mixture."""
    tokens, traits = model.tokens, model.traits
    vectors = product_vectors(tokens.product_ids, tokens.counts, tokens.vectors, index)
    d = tokens.vector_size
    center = traits.center
    reconstructed = center[None, :] + profiles @ (traits.components[:, :d] - traits.components[:, d:])

    def build(
        customers: np.ndarray, origin: np.ndarray, gamma: float | None
    ) -> Callable[[np.ndarray], ScoreBatch]:
        def scorer(rows: np.ndarray) -> ScoreBatch:
            similarity = embedding_similarity(customers[rows], vectors, origin)
            if gamma is None:
                return similarity
            return blended_scores(mixture_scores(profiles[rows], weights), similarity, gamma)

        return scorer

    out: list[tuple[str, Callable[[np.ndarray], ScoreBatch]]] = []
    for name, customers, origin in (
        ("embedding", embeddings, center),
        ("embedding_raw", embeddings, np.zeros_like(center)),
        ("reconstruction", reconstructed, center),
    ):
        out.append((name, build(customers, origin, None)))
        out.extend((f"profile_x_{name}_g{gamma:g}", build(customers, origin, gamma)) for gamma in GAMMAS)
    return out


FOLD_IN_STEPS: tuple[int, ...] = (1, 3, 10)


def fold_in_variants(
    model: TraitflowModel,
    index: pd.Index,
    embeddings: np.ndarray,
    profiles: np.ndarray,
    usage: sp.csr_matrix,
    weights: np.ndarray,
) -> list[tuple[str, Callable[[np.ndarray], ScoreBatch]]]:
    """Scorers of the mixture with profiles refined towards each customer's own purchases
    (``ranking.fold_in_profiles``), alone and blended with the centred embedding similarity."""
    vectors = product_vectors(model.tokens.product_ids, model.tokens.counts, model.tokens.vectors, index)
    center = model.traits.center
    out: list[tuple[str, Callable[[np.ndarray], ScoreBatch]]] = []
    for steps in FOLD_IN_STEPS:
        refined = fold_in_profiles(profiles, usage, weights, steps)

        def plain(rows: np.ndarray, refined: np.ndarray = refined) -> ScoreBatch:
            return mixture_scores(refined[rows], weights)

        def blend(rows: np.ndarray, refined: np.ndarray = refined, gamma: float = 1.0) -> ScoreBatch:
            similarity = embedding_similarity(embeddings[rows], vectors, center)
            return blended_scores(mixture_scores(refined[rows], weights), similarity, gamma)

        out.append((f"profile_foldin_s{steps}", plain))
        out.extend(
            (f"profile_foldin_s{steps}_x_embedding_g{gamma:g}", partial(blend, gamma=gamma))
            for gamma in (1.0, 2.0)
        )
    return out


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--set", action="append", default=[], help="flat config key=value (repeatable)")
    parser.add_argument("--smoothing", type=float, default=0.0)
    parser.add_argument("--em-steps", type=int, default=1)
    parser.add_argument(
        "--similarity-weight",
        type=float,
        default=SIMILARITY_WEIGHT,
        help="the profile's Item2Vec tilt (0: the traits' mixture alone, as profile_traits is)",
    )
    parser.add_argument("--fraction", type=float, default=0.8)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--name", default="")
    parser.add_argument(
        "--tier", choices=("smoke", "S"), help="a bench tier's synthetic events instead of the export"
    )
    parser.add_argument(
        "--variants", action="store_true", help="also score the Item2Vec similarity and fold-in variants"
    )
    parser.add_argument(
        "--validation",
        action="store_true",
        help="split the training events again at --fraction and score inside them (never the test period)",
    )
    parser.add_argument(
        "--stored", action="store_true", help="rank with the model's stored (top-N) distributions"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_arguments()
    overrides: dict = {"workers": 2}
    for item in args.set:
        key, value = item.split("=", 1)
        overrides[key] = json.loads(value)
    config = PipelineConfig.from_mapping(overrides)
    events = synthetic_events(TIERS[args.tier].spec)[0] if args.tier else retail_events()
    split = split_events(events, fraction=args.fraction)
    if args.validation:
        split = split_events(split.history, fraction=args.fraction)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        names = None if args.tier else retail_product_names()
        model = train(split.history, config, split.at, Path(work), product_names=names)
    train_seconds = time.perf_counter() - started
    profiled = _profile_all(model, split.history, split.at)
    index = product_index(split.history)
    stored = (
        (model.traits.products.product_ids, model.traits.products.weights)
        if args.stored and model.traits.products is not None
        else None
    )
    variants = []
    if args.variants:
        usage = customer_usage(split.history, profiled.customer_ids, index, config, split.at)
        weights = trait_item_distribution(
            profiled.profiles, usage, smoothing=args.smoothing, em_steps=args.em_steps
        )
        variants = similarity_variants(model, index, profiled.embeddings, profiled.profiles, weights)
        variants += fold_in_variants(model, index, profiled.embeddings, profiled.profiles, usage, weights)
    report = product_ranking(
        split.history,
        split.future,
        customer_ids=profiled.customer_ids,
        profiles=profiled.profiles,
        config=config,
        split_at=split.at,
        actions=("purchase",),
        extra_profiles=[
            ("profile_loadings", profiled.profiles, loading_distribution(model, index)),
            ("profile_label_scores", profiled.profiles, label_score_distribution(model, index)),
        ],
        extra_scorers=variants,
        distribution=stored,
        vectors=ProfileVectors(profiled.embeddings, model.tokens),
        similarity_weight=args.similarity_weight,
        smoothing=args.smoothing,
        em_steps=args.em_steps,
        n_resamples=args.resamples,
    )
    row = {
        "name": args.name,
        "overrides": overrides,
        "smoothing": args.smoothing,
        "em_steps": args.em_steps,
        "similarity_weight": args.similarity_weight,
        "stored": args.stored,
        "validation": args.validation,
        "data": args.tier or "online_retail_ii",
        "train_s": train_seconds,
        "labels": list(model.traits.labels),
    }
    for view in ("product_ranking", "product_ranking_new"):
        section = report[view]
        row[view] = {
            "n_customers": section["n_customers"],
            "methods": section["methods"],
            "methods_ci95": section["methods_ci95"],
            "lift": section["profile_lift_vs_popularity"],
            "lift_ci95": section["profile_lift_vs_popularity_ci95"],
            "lift_with_history": section["profile_with_history_lift_vs_popularity"],
            "lift_with_history_ci95": section["profile_with_history_lift_vs_popularity_ci95"],
            "lift_vs_recent_popularity": section.get("profile_lift_vs_recent_popularity"),
            "lift_vs_recent_popularity_ci95": section.get("profile_lift_vs_recent_popularity_ci95"),
            "lifts": section.get("lifts_vs_popularity", {}),
            "lifts_ci95": section.get("lifts_vs_popularity_ci95", {}),
        }
    print(json.dumps(row))


if __name__ == "__main__":
    main()
