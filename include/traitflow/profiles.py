"""The result of profiling a set of customers as of a date: what the store writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

# Values of ``ProfileBatch.cold_start``.
COLD_START_NONE = "none"
COLD_START_FEW_TOKENS = "few_tokens"  # fewer than min_tokens tokens: category-based embedding
COLD_START_NO_HISTORY = "no_history"  # no events at all: population-average profile
COLD_START_VALUES = (COLD_START_NONE, COLD_START_FEW_TOKENS, COLD_START_NO_HISTORY)


@dataclass
class ProfileBatch:
    """Embeddings and trait profiles of ``n`` customers as of one instant, under one model.

    Attributes
    ----------
    as_of : datetime (UTC) -- events strictly before this instant were used
    model_version : int or None -- the store's id of the model used (None before it is saved)
    customer_ids : ndarray of str, shape (n,)
    embeddings : ndarray of float32, shape (n, vector_size)
    profiles : ndarray of float64, shape (n, n_traits) -- non-negative, each row sums to 1
    trait_ids : ndarray of int64, shape (n_traits,) -- stable ids of the profile columns
    n_events : ndarray of int64, shape (n,)
    cold_start : ndarray of str, shape (n,) -- one of ``COLD_START_VALUES``
    stats : dict -- fallback counts, OOV rate and other monitoring figures
    """

    as_of: datetime
    model_version: int | None
    customer_ids: np.ndarray
    embeddings: np.ndarray
    profiles: np.ndarray
    trait_ids: np.ndarray
    n_events: np.ndarray
    cold_start: np.ndarray
    stats: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.customer_ids)
        for name in ("embeddings", "profiles", "n_events", "cold_start"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"ProfileBatch.{name} has {len(getattr(self, name))} rows, expected {n}")
        if self.profiles.ndim != 2 or self.profiles.shape[1] != len(self.trait_ids):
            raise ValueError(
                f"profiles must have shape ({n}, {len(self.trait_ids)}), got {self.profiles.shape}"
            )

    def __len__(self) -> int:
        return len(self.customer_ids)
