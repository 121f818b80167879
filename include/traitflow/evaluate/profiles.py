"""The profiles every part of the evaluation scores: each history customer's as of the split."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from traitflow.model import TraitflowModel, TraitModel
from traitflow.profile_batch import COLD_START_NO_HISTORY


@dataclass(frozen=True)
class _Profiled:
    """Profiles of every history customer as of T under one model (rows sorted by id)."""

    customer_ids: np.ndarray
    embeddings: np.ndarray
    profiles: np.ndarray
    cold_start: np.ndarray


def _profile_all(model: TraitflowModel, history: pd.DataFrame, as_of: datetime) -> _Profiled:
    from traitflow.pipeline import profile_customers

    batch = profile_customers(history, model, as_of)
    return _Profiled(batch.customer_ids, batch.embeddings, batch.profiles, batch.cold_start)


def _project_profiles(traits: TraitModel, profiled: _Profiled) -> np.ndarray:
    """Profiles of ``profiled``'s customers under other traits (no-history rows: population)."""
    from traitflow.traits import project

    has_history = profiled.cold_start != COLD_START_NO_HISTORY
    out = np.tile(traits.population_profile, (len(profiled.customer_ids), 1))
    out[has_history] = project(traits, profiled.embeddings[has_history])
    return out
