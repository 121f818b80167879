"""The result of profiling a set of customers as of a date: what the store writes."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Values of ``ProfileBatch.cold_start``.
COLD_START_NONE = "none"
COLD_START_FEW_TOKENS = "few_tokens"  # fewer than min_tokens tokens: category-based embedding
COLD_START_NO_HISTORY = "no_history"  # no usable event (none, or none with a vector): population avg
COLD_START_VALUES = (COLD_START_NONE, COLD_START_FEW_TOKENS, COLD_START_NO_HISTORY)

# Trust in a profile. A profile is the projection of the mean of a customer's token vectors; with
# n known tokens behind it, ``confidence = n / (n + CONFIDENCE_PRIOR_TOKENS)`` is the weight the
# customer's own evidence would get against CONFIDENCE_PRIOR_TOKENS pseudo-tokens of the average
# customer in a shrinkage estimate: 0.25 at one known token, 0.5 at three, 0.95 at 62. The prior
# was chosen by measurement: profiles from n random events of customers with many, compared with
# the same customers' full profiles (cosine, rescaled so that two random customers score 0 and
# an identical profile 1), follow n / (n + 3) closely on a real purchase export, and lie above it
# on the planted synthetic data. A reading aid, not a probability.
CONFIDENCE_PRIOR_TOKENS = 3.0
# Consumers (similar customers, top customers of a trait, the API and the Traits page) leave out
# customers with fewer events than this unless asked: below it a profile is the projection of one
# or two token vectors (or of category averages: the few_tokens cold start), a guess that reaches
# extreme cosines with anything of the same one or two items.
MIN_EVIDENCE_EVENTS = 3


def profile_confidence(
    n_known_tokens: np.ndarray, prior_tokens: float = CONFIDENCE_PRIOR_TOKENS
) -> np.ndarray:
    """``n / (n + prior_tokens)`` per customer (see ``CONFIDENCE_PRIOR_TOKENS``), float64 in [0, 1)."""
    if prior_tokens <= 0:
        raise ValueError(f"prior_tokens must be > 0, got {prior_tokens}")
    known = np.asarray(n_known_tokens, dtype=np.float64)
    return known / (known + prior_tokens)


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
    n_known_tokens : ndarray of int64, shape (n,), or None -- events whose token the model knows
        (the evidence behind the profile; <= n_events); None when not recorded
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
    n_known_tokens: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.customer_ids)
        names = ("embeddings", "profiles", "n_events", "cold_start")
        for name in names + (("n_known_tokens",) if self.n_known_tokens is not None else ()):
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
        self._write_npz(path)
        return path

    def to_bytes(self) -> bytes:
        """The ``.npz`` form of ``save`` as bytes (a customer shard's batch in the staging table)."""
        buffer = io.BytesIO()
        self._write_npz(buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ProfileBatch:
        return cls.load(io.BytesIO(data))

    def _write_npz(self, target: Path | BinaryIO) -> None:
        np.savez(
            target,
            allow_pickle=False,
            customer_ids=self.customer_ids.astype(str),
            embeddings=self.embeddings,
            profiles=self.profiles,
            trait_ids=self.trait_ids,
            n_events=self.n_events,
            cold_start=self.cold_start.astype(str),
            **({} if self.n_known_tokens is None else {"n_known_tokens": self.n_known_tokens}),
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

    @classmethod
    def load(cls, path: str | Path | BinaryIO) -> ProfileBatch:
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
                n_known_tokens=npz["n_known_tokens"] if "n_known_tokens" in npz.files else None,
            )


def _merged_stats(parts: list[dict[str, Any]], n_known: int | None) -> dict[str, Any]:
    """The statistics ``profile_customers`` gives for the union of disjoint customer sets.

    Counts add up; ``oov_rate`` is recomputed from the known-token count (``n_known``, the sum of
    ``n_known_tokens``) exactly as the one-batch computation does (``1 - known / events``), so it
    is the same float. A key this function does not know raises: a new statistic must say how it
    combines rather than be silently taken from one part.
    """
    counted = ("n_events", "n_customers")
    per_key = ("lookup_sources", "cold_start")
    unknown = {key for part in parts for key in part} - {*counted, *per_key, "oov_rate"}
    if unknown:
        raise ValueError(f"cannot merge profile statistics {sorted(unknown)}")
    merged: dict[str, Any] = {key: sum(int(part.get(key, 0)) for part in parts) for key in counted}
    for key in per_key:
        totals: dict[str, int] = {}
        for part in parts:
            for name, count in part.get(key, {}).items():
                totals[name] = totals.get(name, 0) + int(count)
        # cold_start lists its flags sorted by name (``aggregate``), lookup_sources in source order
        names = sorted(totals) if key == "cold_start" else list(totals)
        merged[key] = {name: totals[name] for name in names}
    if n_known is not None:
        n_events = merged["n_events"]
        merged["oov_rate"] = float(1.0 - n_known / n_events) if n_events else 0.0
    ordered = [key for key in parts[0] if key in merged] if parts else []
    return {key: merged[key] for key in ordered}


def concat_batches(batches: list[ProfileBatch]) -> ProfileBatch:
    """One batch of the customers of disjoint ``batches`` (same as_of, model and traits), rows in
    customer id byte order: the same arrays and statistics whatever order the parts come in.

    Shapes: each part (n_i, ...) -> (sum n_i, ...).
    """
    if not batches:
        raise ValueError("concat_batches needs at least one batch")
    first = batches[0]
    for batch in batches[1:]:
        if batch.as_of != first.as_of or batch.model_version != first.model_version:
            raise ValueError("batches differ in as_of or model_version")
        if not np.array_equal(batch.trait_ids, first.trait_ids):
            raise ValueError("batches differ in trait ids")
    ids = np.concatenate([np.asarray(b.customer_ids, dtype=object) for b in batches])
    order = pc.sort_indices(pa.array(ids, pa.large_string())).to_numpy()  # byte order = COLLATE "C"
    if len(ids) > 1 and (ids[order][1:] == ids[order][:-1]).any():
        raise ValueError("a customer appears in two batches")
    known = [b.n_known_tokens for b in batches]
    has_known = all(k is not None for k in known)

    def joined(name: str) -> np.ndarray:
        return np.concatenate([getattr(b, name) for b in batches])[order]

    return ProfileBatch(
        as_of=first.as_of,
        model_version=first.model_version,
        customer_ids=ids[order],
        embeddings=joined("embeddings"),
        profiles=joined("profiles"),
        trait_ids=first.trait_ids.copy(),
        n_events=joined("n_events"),
        cold_start=joined("cold_start"),
        stats=_merged_stats(
            [b.stats for b in batches],
            int(sum(int(np.sum(k)) for k in known if k is not None)) if has_known else None,
        ),
        n_known_tokens=joined("n_known_tokens") if has_known else None,
    )
