"""Profile stability across a retrain: do customers without new events keep their profiles when
the model is retrained on a slightly longer window with another Word2Vec seed?"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from traitflow.evaluate.metrics import EPS
from traitflow.evaluate.profiles import _profile_all, _Profiled
from traitflow.model import TraitflowModel
from traitflow.profile_batch import COLD_START_NONE

STABILITY_EXTENSION = 0.25  # the retrain's window ends this share of the future span after T


def profile_change(
    before: np.ndarray, before_ids: np.ndarray, after: np.ndarray, after_ids: np.ndarray
) -> dict[str, float]:
    """Change between two profile matrices of the same customers, columns matched by trait id.

    A trait id present on one side only counts as 0 on the other (its mass is all change).

    Parameters
    ----------
    before : ndarray, shape (n, k1), columns labelled ``before_ids`` (k1,)
    after : ndarray, shape (n, k2), columns labelled ``after_ids`` (k2,)

    Returns mean / p90 L1 distance (0..2), mean cosine similarity, and the share of customers
    whose dominant trait id is unchanged.
    """
    ids = np.union1d(before_ids, after_ids)
    a = np.zeros((len(before), len(ids)))
    b = np.zeros((len(after), len(ids)))
    a[:, np.searchsorted(ids, before_ids)] = before
    b[:, np.searchsorted(ids, after_ids)] = after
    l1 = np.abs(a - b).sum(axis=1)
    cosine = (a * b).sum(axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), EPS)
    return {
        "mean_l1": float(l1.mean()),
        "p90_l1": float(np.quantile(l1, 0.9)),
        "mean_cosine": float(cosine.mean()),
        "same_dominant_trait": float((ids[a.argmax(axis=1)] == ids[b.argmax(axis=1)]).mean()),
    }


def stability_report(
    model: TraitflowModel,
    events: pd.DataFrame,
    split_at: datetime,
    work_dir: Path,
    *,
    extension: float = STABILITY_EXTENSION,
    profiled: _Profiled | None = None,
) -> dict[str, Any]:
    """Retrain on a slightly longer window with another Word2Vec seed and compare the profiles of
    customers without new events, trait by trait id.

    The window ends ``extension`` of the post-split span after ``split_at``; the new tokens are
    aligned to ``model``'s (``alignment.align_tokens``) and the traits refitted with
    ``fit_model(previous=model)``, as the weekly retrain does.
    """
    from traitflow.alignment import align_tokens
    from traitflow.pipeline import build_corpus, events_before, fit_model, profile_customers, train_tokens

    times = events["event_time"]
    start = pd.Timestamp(split_at)
    end = start + (times.max() - start) * extension
    if not (times >= start).any() or end <= start:
        return {"skipped": "no events after the split to extend the window with"}
    later = events_before(events, end.to_pydatetime())
    new_events = later[later["event_time"] >= start]
    config = dataclasses.replace(
        model.config, item2vec=dataclasses.replace(model.config.item2vec, seed=model.config.item2vec.seed + 1)
    )
    corpus = build_corpus(later, config.sessions, work_dir / "corpus")
    tokens = align_tokens(train_tokens(corpus, config), model.tokens)
    retrained = fit_model(later, tokens, config, end.to_pydatetime(), previous=model)

    profiled = profiled or _profile_all(model, events_before(events, split_at), split_at)
    quiet = (profiled.cold_start == COLD_START_NONE) & ~np.isin(
        profiled.customer_ids, pd.unique(new_events["customer_id"].to_numpy(dtype=object))
    )
    if quiet.sum() == 0:
        return {"skipped": "every customer has new events in the extended window"}
    quiet_ids = profiled.customer_ids[quiet]
    batch = profile_customers(later[later["customer_id"].isin(quiet_ids)], retrained, end.to_pydatetime())
    after = batch.profiles[np.searchsorted(batch.customer_ids, quiet_ids)]
    match = retrained.trait_match or {}
    similarities = [pair["similarity"] for pair in match.get("matched", [])]
    return {
        "retrained_through": end.isoformat(),
        "n_new_events": len(new_events),
        "n_customers_without_new_events": int(quiet.sum()),
        "seed": config.item2vec.seed,
        "n_traits": model.traits.n_traits,
        "n_matched": int(match.get("n_matched", 0)),
        "n_matched_at_0.9": int(sum(s >= 0.9 for s in similarities)),
        "min_similarity": float(min(similarities)) if similarities else float("nan"),
        "refit": retrained.metrics.get("traits", {}),
        **profile_change(profiled.profiles[quiet], model.traits.trait_ids, after, retrained.traits.trait_ids),
    }
