"""The result of profiling a set of customers as of a date: what the store writes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

# Values of ``ProfileBatch.cold_start``.
COLD_START_NONE = "none"
COLD_START_FEW_TOKENS = "few_tokens"  # fewer than min_tokens tokens: category-based embedding
COLD_START_NO_HISTORY = "no_history"  # no usable event (none, or none with a vector): population avg
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

    def save(self, path: str | Path) -> Path:
        """Write the batch to one ``.npz`` file (a task hands it to the next through a path)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            path,
            customer_ids=self.customer_ids.astype(str),
            embeddings=self.embeddings,
            profiles=self.profiles,
            trait_ids=self.trait_ids,
            n_events=self.n_events,
            cold_start=self.cold_start.astype(str),
            meta=np.array(
                json.dumps(
                    {
                        "as_of": self.as_of.isoformat(),
                        "model_version": self.model_version,
                        "stats": self.stats,
                    }
                )
            ),
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> ProfileBatch:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            return cls(
                as_of=datetime.fromisoformat(meta["as_of"]),
                model_version=meta["model_version"],
                customer_ids=npz["customer_ids"].astype(object),
                embeddings=npz["embeddings"],
                profiles=npz["profiles"],
                trait_ids=npz["trait_ids"],
                n_events=npz["n_events"],
                cold_start=npz["cold_start"].astype(object),
                stats=meta["stats"],
            )
