"""What the evaluation measures on one model: the mean ranking metrics, trait purity, Item2Vec
next-item hit rate and how profiles group planted segments."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from traitflow.config import PipelineConfig
from traitflow.evaluate.split import EvaluationError
from traitflow.model import TokenTable, TraitModel
from traitflow.quality import known_pairs, next_item_hits, next_item_pairs, profile_coherence
from traitflow.ranking import per_customer_metrics
from traitflow.sessions import sessionize

RANK_KS: tuple[int, ...] = (5, 10)
NDCG_K = 10
PURITY_TOP_N = 10
EPS = 1e-12  # floor of a divisor that may be 0 (a trait, customer or profile without mass)
_BATCH = 4096


def ranking_metrics(
    score_batch: Callable[[int, int], np.ndarray],
    relevant: sp.csr_matrix,
    *,
    ks: Sequence[int] = RANK_KS,
    ndcg_k: int = NDCG_K,
    batch_size: int | None = _BATCH,
) -> dict[str, float]:
    """Hit rate@K and NDCG@``ndcg_k`` of per-customer rankings: the means of
    ``ranking.per_customer_metrics`` (see there for the arguments)."""
    try:
        per_customer = per_customer_metrics(
            score_batch, relevant, ks=ks, recall_k=None, ndcg_k=ndcg_k, batch_size=batch_size
        )
    except ValueError as error:
        if relevant.shape[0] == 0:
            raise EvaluationError("no customers to rank categories for") from error
        raise
    return {name: float(values.mean()) for name, values in per_customer.items()}


def trait_purity(
    traits: TraitModel, tokens: TokenTable, *, top_n: int = PURITY_TOP_N
) -> list[dict[str, Any]]:
    """Per trait: the share of its ``top_n`` products (by log-popularity-weighted loading, as in
    ``traits.label_traits``) that belong to their most common category."""
    from traitflow.traits import project

    has_category = tokens.categories != ""
    loadings = project(traits, tokens.vectors[has_category])
    scores = loadings * np.log1p(tokens.counts[has_category].astype(np.float64))[:, None]
    products = tokens.product_ids[has_category]
    categories = tokens.categories[has_category]
    out = []
    for j in range(traits.n_traits):  # k iterations, each vectorized over tokens
        order = np.argsort(-scores[:, j], kind="stable")
        _, first = np.unique(products[order], return_index=True)
        top = order[np.sort(first)[:top_n]]  # best-scoring token of each of the top products
        values, counts = np.unique(categories[top], return_counts=True)
        out.append(
            {
                "trait_id": int(traits.trait_ids[j]),
                "label": traits.labels[j],
                "purity": float(counts.max() / len(top)) if len(top) else float("nan"),
                "top_category": str(values[counts.argmax()]) if len(top) else "",
            }
        )
    return out


def _mean_purity(purity: list[dict[str, Any]]) -> float:
    values = np.array([t["purity"] for t in purity], dtype=np.float64)
    return float(values[~np.isnan(values)].mean()) if (~np.isnan(values)).any() else float("nan")


def next_item_report(
    tokens: TokenTable, future: pd.DataFrame, config: PipelineConfig, *, top_n: int = 10
) -> dict[str, Any]:
    """Item2Vec next-item hit rate@``top_n`` on post-T sessions, with a popularity baseline
    (the ``top_n`` most frequent training tokens, whatever the current token)."""
    sessionized = sessionize(future, config.sessions)
    sessions = sessionized["session"].to_numpy()
    session_tokens = sessionized["token"].to_numpy(dtype=object)
    try:
        current, following = next_item_pairs(sessions, session_tokens)
    except ValueError as error:
        return {"skipped": f"post-split sessions: {error}"}
    hits = next_item_hits(tokens, current, following, top_n=top_n)
    popular = tokens.tokens[np.argsort(-tokens.counts, kind="stable")[:top_n]]
    known = known_pairs(tokens, current, following)
    return {
        f"hit_rate@{top_n}": float(hits.mean()),
        f"popular_tokens_hit_rate@{top_n}": float(np.isin(following, popular).mean()),
        "n_pairs": len(current),
        "coverage": float(known.mean()),
    }


def segment_report(customer_ids: np.ndarray, profiles: np.ndarray, segments: pd.DataFrame) -> dict[str, Any]:
    """Silhouette (cosine) of profiles grouped by planted segment, and ARI of the dominant trait.

    ``segments`` has columns ``customer_id`` and ``segment``; customers missing from it are left out.
    """
    from sklearn.metrics import adjusted_rand_score

    missing = {"customer_id", "segment"} - set(segments.columns)
    if missing:
        raise EvaluationError(
            f"segments file needs columns customer_id and segment; missing {sorted(missing)}"
        )
    lookup = pd.Series(segments["segment"].to_numpy(), index=segments["customer_id"].astype(str).to_numpy())
    rows = lookup.index.get_indexer(pd.Index(np.asarray(customer_ids, dtype=object)))
    known = rows >= 0
    if known.sum() < 2:
        raise EvaluationError(
            f"only {int(known.sum())} profiled customers appear in the segments file: "
            "is it the segments file of these events?"
        )
    labels = lookup.to_numpy()[rows[known]]
    return {
        "silhouette": profile_coherence(profiles[known], labels),
        "ari_dominant_trait": float(adjusted_rand_score(labels, profiles[known].argmax(axis=1))),
        "n_customers": int(known.sum()),
        "n_segments": len(np.unique(labels)),
    }
