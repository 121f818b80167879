"""Retrain triggers: the new-vocabulary ratio, and drift between two Item2Vec spaces after
alignment (``traitflow.alignment``).

The drift of a token is ``1 - cos`` between its aligned candidate vector and its active vector; the
report averages it over the shared tokens three ways. ``weighted_mean_drift`` weights each token by
its count in the active model's window. ``recent_weighted_drift`` weights it by its count in the
sessions the candidate was last trained on (an incremental update's corpus): a changed behaviour
moves the tokens those sessions use, and a product that became popular only in them has a small
count in the active window, so with the active counts its movement is averaged away with the
weight of a rarely used token (docs/method-variants.md).

``refit_figure`` names the figure a refit decision compares with its threshold, for the weekly
retrain's decision and for everything that shows it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from traitflow.model import TokenTable


def new_vocab_ratio(candidate_tokens: np.ndarray, active_tokens: np.ndarray | None) -> float:
    """Share of the candidate vocabulary the active model has never seen (1.0 with no active model)."""
    candidate = np.unique(np.asarray(candidate_tokens, dtype=object))
    if len(candidate) == 0:
        return 0.0
    if active_tokens is None:
        return 1.0
    known = np.isin(candidate, np.asarray(active_tokens, dtype=object))
    return float(1.0 - known.mean())


# The figures a refit decision can compare with its threshold, as they read in its reason.
FIGURE_NAMES = {
    "weighted_mean_drift": "weighted mean drift",
    "recent_weighted_drift": "recent-weighted drift",
}


def refit_figure(
    weighted_mean_drift: float | None, recent_weighted_drift: float | None, *, incremental: bool
) -> str | None:
    """The key (in ``FIGURE_NAMES``) of the drift figure a refit decision compares with its
    threshold: an incremental candidate's recent-weighted drift when it has one, else the weighted
    mean drift; None when no drift was measured (the traits are then refitted regardless)."""
    if weighted_mean_drift is None:
        return None
    if incremental and recent_weighted_drift is not None:
        return "recent_weighted_drift"
    return "weighted_mean_drift"


@dataclass(frozen=True)
class DriftReport:
    """Cosine drift per shared token after alignment: 0 = same direction, 2 = opposite."""

    mean_drift: float
    weighted_mean_drift: float  # weighted by the active model's token counts
    p95_drift: float
    max_drift: float
    n_shared_tokens: int
    n_candidate_tokens: int
    n_active_tokens: int
    min_count: int
    recent_weighted_drift: float | None = None  # weighted by ``recent_counts``; None without them

    def to_dict(self) -> dict:
        return asdict(self)


def measure_drift(
    candidate: TokenTable, active: TokenTable, *, min_count: int = 5, recent_counts: pd.Series | None = None
) -> DriftReport:
    """Drift of ``candidate`` from ``active`` after Procrustes alignment on their shared vocabulary.

    recent_counts : int, indexed by token -- occurrences in the sessions ``candidate`` was last
        trained on (tokens missing count 0); gives ``recent_weighted_drift`` over the same shared
        tokens (None when none of them occurs there)
    """
    # Imported here, not at the top: the store reads ``refit_figure`` and needs no scipy for it.
    from traitflow.alignment import fit_alignment, shared_rows, unit_rows

    alignment = fit_alignment(candidate, active, min_count)
    source_rows, target_rows = shared_rows(candidate, active, min_count)
    if len(source_rows) == 0:
        source_rows, target_rows = shared_rows(candidate, active, 1)
    aligned = unit_rows(alignment.apply(candidate.vectors[source_rows]) - alignment.target_mean)
    reference = unit_rows(active.vectors[target_rows] - alignment.target_mean)
    drift = 1.0 - np.sum(aligned * reference, axis=1)
    weights = active.counts[target_rows].astype(np.float64)
    recent_weighted = None
    if recent_counts is not None:
        recent = recent_counts.reindex(pd.Index(active.tokens[target_rows]), fill_value=0)
        recent_weights = recent.to_numpy(dtype=np.float64)
        if recent_weights.sum() > 0:
            recent_weighted = float(np.average(drift, weights=recent_weights))
    return DriftReport(
        mean_drift=float(drift.mean()),
        weighted_mean_drift=float(np.average(drift, weights=weights)),
        p95_drift=float(np.quantile(drift, 0.95)),
        max_drift=float(drift.max()),
        n_shared_tokens=len(drift),
        n_candidate_tokens=len(candidate),
        n_active_tokens=len(active),
        min_count=min_count,
        recent_weighted_drift=recent_weighted,
    )
