"""Alignment of two Item2Vec spaces: orthogonal Procrustes on the tokens both know.

Two independently trained Word2Vec spaces differ by an arbitrary rotation, so comparing raw
vectors always reports drift. The candidate is first aligned to the active model with orthogonal
Procrustes on the tokens both know; only what is left after the best rotation is drift
(``traitflow.drift``).

Both spaces are centred (on the mean of their shared tokens) before aligning and before taking
cosines: Word2Vec vectors share a large common direction, strongest when training data are
small, and that direction makes every pair of tokens look alike. Without centring a model
trained on different behaviour scores far below the drift threshold on a small workload;
centred, it scores clearly above it while retrains on the same behaviour stay well below it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.linalg import orthogonal_procrustes

from traitflow.model import TokenTable

_EPS = 1e-12


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    matrix = matrix.astype(np.float64)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), _EPS)


@dataclass(frozen=True)
class Alignment:
    """``aligned = scale * (source - source_mean) @ rotation + target_mean``: source onto target."""

    rotation: np.ndarray  # float64, shape (d, d), orthogonal
    scale: float
    source_mean: np.ndarray  # float64, shape (d,)
    target_mean: np.ndarray  # float64, shape (d,)

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        centred = vectors.astype(np.float64) - self.source_mean
        return (self.scale * (centred @ self.rotation) + self.target_mean).astype(np.float32)


def shared_rows(source: TokenTable, target: TokenTable, min_count: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (into source, into target) of tokens both tables know with >= min_count in both."""
    target_rows = target.index.get_indexer(pd.Index(source.tokens))
    source_rows = np.flatnonzero(target_rows >= 0)
    target_rows = target_rows[source_rows]
    frequent = (source.counts[source_rows] >= min_count) & (target.counts[target_rows] >= min_count)
    return source_rows[frequent], target_rows[frequent]


def fit_alignment(source: TokenTable, target: TokenTable, min_count: int = 5) -> Alignment:
    """Orthogonal Procrustes (plus a global scale) from ``source`` onto ``target``.

    Fitted on the shared tokens seen at least ``min_count`` times in both models (rare tokens have
    noisy vectors); falls back to all shared tokens when fewer than ``d`` are frequent.
    """
    source_rows, target_rows = shared_rows(source, target, min_count)
    if len(source_rows) < source.vector_size:
        source_rows, target_rows = shared_rows(source, target, 1)
    if len(source_rows) < 2:
        raise ValueError(f"cannot align models sharing only {len(source_rows)} tokens")
    if source.vector_size != target.vector_size:
        raise ValueError(f"cannot align vector sizes {source.vector_size} and {target.vector_size}")
    a = source.vectors[source_rows].astype(np.float64)
    b = target.vectors[target_rows].astype(np.float64)
    source_mean, target_mean = a.mean(axis=0), b.mean(axis=0)
    a, b = a - source_mean, b - target_mean
    rotation, singular_sum = orthogonal_procrustes(a, b)
    scale = singular_sum / max(float(np.sum(a * a)), _EPS)
    return Alignment(rotation=rotation, scale=float(scale), source_mean=source_mean, target_mean=target_mean)


def align_tokens(candidate: TokenTable, active: TokenTable, min_count: int = 5) -> TokenTable:
    """A copy of ``candidate`` with every vector mapped into ``active``'s space."""
    alignment = fit_alignment(candidate, active, min_count)
    return TokenTable(
        tokens=candidate.tokens,
        actions=candidate.actions,
        product_ids=candidate.product_ids,
        categories=candidate.categories,
        counts=candidate.counts,
        vectors=alignment.apply(candidate.vectors),
    )
