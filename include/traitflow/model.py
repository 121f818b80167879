"""The trained model bundle: token vectors + trait components + everything needed to project later.

One ``TraitflowModel`` is what a weekly retrain produces and what every daily run loads. It holds
arrays only (no gensim object), so it round-trips bit-identically through a directory (``save`` /
``load``) and through Postgres (``traitflow.store``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from traitflow import formatting
from traitflow.config import (
    AggregationParams,
    IncrementParams,
    Item2VecParams,
    PipelineConfig,
    SessionParams,
    TraitParams,
    TriggerParams,
)

MODEL_FORMAT_VERSION = 1


@dataclass
class TokenTable:
    """The Item2Vec vocabulary with per-token metadata.

    Attributes
    ----------
    tokens : ndarray of str, shape (n_tokens,)
    actions, product_ids, categories : ndarray of str, shape (n_tokens,); a missing category is ""
    counts : ndarray of int64, shape (n_tokens,) -- occurrences in the training window's events
        (including one-event sessions left out of the corpus); weights the fallback means
    vectors : ndarray of float32, shape (n_tokens, vector_size)
    """

    tokens: np.ndarray
    actions: np.ndarray
    product_ids: np.ndarray
    categories: np.ndarray
    counts: np.ndarray
    vectors: np.ndarray
    _index: pd.Index | None = field(default=None, repr=False, compare=False)
    _arrow_tokens: pa.Array | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.tokens)
        for name in ("actions", "product_ids", "categories", "counts"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"TokenTable.{name} has {len(getattr(self, name))} rows, tokens has {n}")
        if self.vectors.ndim != 2 or self.vectors.shape[0] != n:
            raise ValueError(f"TokenTable.vectors must have shape ({n}, d), got {self.vectors.shape}")

    @property
    def vector_size(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def index(self) -> pd.Index:
        """Hash index token -> row, built once (vectorized lookups use ``get_indexer``)."""
        if self._index is None:
            self._index = pd.Index(self.tokens)
        return self._index

    @property
    def arrow_tokens(self) -> pa.Array:
        """The tokens as a pyarrow ``large_string`` array, built once (``pc.index_in`` lookups)."""
        if self._arrow_tokens is None:
            self._arrow_tokens = pa.array(np.asarray(self.tokens, dtype=object), pa.large_string())
        return self._arrow_tokens


@dataclass
class TraitProducts:
    """Each trait's product distribution ``P(product | trait)``, estimated at fit time from the
    training events of the customers holding the trait (``traitflow.trait_products``).

    Attributes
    ----------
    product_ids : ndarray of object (str), shape (P,), sorted -- the union of the traits' top products
    weights : ndarray of float64, shape (n_traits, P) -- ``P(product | trait)`` for each trait's
        top products, 0 elsewhere (a row sums to at most 1: the tail beyond the top is dropped)
    """

    product_ids: np.ndarray
    weights: np.ndarray

    def __post_init__(self) -> None:
        if self.weights.ndim != 2 or self.weights.shape[1] != len(self.product_ids):
            raise ValueError(
                f"TraitProducts.weights must have shape (k, {len(self.product_ids)}), "
                f"got {self.weights.shape}"
            )


@dataclass
class TraitModel:
    """NMF traits fitted on transformed customer vectors (see ``traitflow.traits``).

    Attributes
    ----------
    components : ndarray of float64, shape (n_traits, 2 * vector_size) -- H, non-negative
    center : ndarray of float64, shape (vector_size,) -- the training mean; the NMF input of a
        customer vector x is ``[max(x - center, 0), max(center - x, 0)]``, the same transform at
        fit and at every later projection, so daily and weekly profiles agree
    trait_ids : ndarray of int64, shape (n_traits,) -- stable ids, kept across retrains when matched
    labels : list of str, length n_traits
    top_products, top_categories : list of list of str -- what loads most on each trait
    population_profile : ndarray of float64, shape (n_traits,) -- mean training profile (cold start)
    population_vector : ndarray of float32, shape (vector_size,) -- mean training customer vector
    l1_penalty : float -- the L1 weight on loadings used in the fit; projection uses the same
    products : TraitProducts or None -- the traits' product distributions (None in models saved
        without them); ranks products for a profile as a mixture
    """

    components: np.ndarray
    center: np.ndarray
    trait_ids: np.ndarray
    labels: list[str]
    top_products: list[list[str]]
    top_categories: list[list[str]]
    population_profile: np.ndarray
    population_vector: np.ndarray
    l1_penalty: float = 0.0
    products: TraitProducts | None = None

    @property
    def n_traits(self) -> int:
        return int(self.components.shape[0])


@dataclass(frozen=True)
class Lineage:
    """How a model's token vectors were trained.

    training_mode : "full" (from scratch) or "incremental" (continued from ``parent_version``)
    parent_version : the model whose vectors it started from (None for a full retrain)
    trained_since : the parent's ``trained_through``: the increment trained on the sessions with
        events from then on (plus a replayed sample of older ones); None for a full retrain
    """

    training_mode: str
    parent_version: int | None = None
    trained_since: datetime | None = None

    def __post_init__(self) -> None:
        if self.training_mode not in ("full", "incremental"):
            raise ValueError(f"training_mode must be 'full' or 'incremental', got {self.training_mode!r}")
        if (self.training_mode == "incremental") != (self.parent_version is not None):
            raise ValueError("an incremental model needs a parent_version, a full one has none")

    def to_dict(self) -> dict[str, Any]:
        since = None if self.trained_since is None else self.trained_since.isoformat()
        return {
            "training_mode": self.training_mode,
            "parent_version": self.parent_version,
            "trained_since": since,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Lineage:
        since = data.get("trained_since")
        return cls(
            data["training_mode"],
            data.get("parent_version"),
            datetime.fromisoformat(since) if isinstance(since, str) else since,
        )


@dataclass
class TraitflowModel:
    """Everything a retrain produces. ``version`` is assigned by the store on save.

    lineage : how its token vectors were trained (None: not recorded, e.g. a model built
        outside the weekly retrain)
    """

    trained_through: datetime
    config: PipelineConfig
    tokens: TokenTable
    traits: TraitModel
    metrics: dict[str, Any] = field(default_factory=dict)
    trait_match: dict[str, Any] | None = None
    version: int | None = None
    lineage: Lineage | None = None

    def save(self, directory: str | Path) -> Path:
        """Write ``arrays.npz`` + ``meta.json`` into ``directory`` (created); returns the directory."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {
            **_token_arrays(self.tokens),
            "components": self.traits.components,
            "center": self.traits.center,
            "trait_ids": self.traits.trait_ids,
            "population_profile": self.traits.population_profile,
            "population_vector": self.traits.population_vector,
        }
        if self.traits.products is not None:
            arrays["trait_product_ids"] = self.traits.products.product_ids.astype(str)
            arrays["trait_product_weights"] = self.traits.products.weights
        np.savez(directory / "arrays.npz", allow_pickle=False, **arrays)
        meta = {
            "format_version": MODEL_FORMAT_VERSION,
            "trained_through": self.trained_through.isoformat(),
            "config": self.config.to_dict(),
            "labels": self.traits.labels,
            "top_products": self.traits.top_products,
            "top_categories": self.traits.top_categories,
            "metrics": self.metrics,
            "trait_match": self.trait_match,
            "version": self.version,
            "l1_penalty": self.traits.l1_penalty,
            "lineage": None if self.lineage is None else self.lineage.to_dict(),
        }
        (directory / "meta.json").write_text(formatting.dumps(meta, indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> TraitflowModel:
        directory = Path(directory)
        meta_path, arrays_path = directory / "meta.json", directory / "arrays.npz"
        if not meta_path.is_file() or not arrays_path.is_file():
            raise FileNotFoundError(
                f"{directory} is not a saved Traitflow model (needs meta.json, arrays.npz)"
            )
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != MODEL_FORMAT_VERSION:
            raise ValueError(f"unsupported model format {meta.get('format_version')!r} in {directory}")
        with np.load(arrays_path, allow_pickle=False) as npz:
            a = {key: npz[key] for key in npz.files}
        tokens = _tokens_from_arrays(a)
        traits = TraitModel(
            components=a["components"],
            center=a["center"],
            trait_ids=a["trait_ids"],
            labels=list(meta["labels"]),
            top_products=[list(x) for x in meta["top_products"]],
            top_categories=[list(x) for x in meta["top_categories"]],
            population_profile=a["population_profile"],
            population_vector=a["population_vector"],
            l1_penalty=float(meta["l1_penalty"]),
            products=(
                TraitProducts(a["trait_product_ids"].astype(object), a["trait_product_weights"])
                if "trait_product_ids" in a
                else None
            ),
        )
        return cls(
            trained_through=datetime.fromisoformat(meta["trained_through"]),
            config=config_from_dict(meta["config"]),
            tokens=tokens,
            traits=traits,
            metrics=meta.get("metrics") or {},
            trait_match=meta.get("trait_match"),
            version=meta.get("version"),
            lineage=Lineage.from_dict(meta["lineage"]) if meta.get("lineage") else None,
        )


def _token_arrays(tokens: TokenTable) -> dict[str, np.ndarray]:
    # Fixed-width unicode arrays: saved and loaded without pickle.
    return {
        "tokens": tokens.tokens.astype(str),
        "actions": tokens.actions.astype(str),
        "product_ids": tokens.product_ids.astype(str),
        "categories": tokens.categories.astype(str),
        "counts": tokens.counts,
        "vectors": tokens.vectors,
    }


def _tokens_from_arrays(arrays: dict[str, np.ndarray]) -> TokenTable:
    return TokenTable(
        tokens=arrays["tokens"].astype(object),
        actions=arrays["actions"].astype(object),
        product_ids=arrays["product_ids"].astype(object),
        categories=arrays["categories"].astype(object),
        counts=arrays["counts"],
        vectors=arrays["vectors"],
    )


def save_tokens(tokens: TokenTable, path: str | Path) -> Path:
    """Write a TokenTable alone (a candidate between weekly tasks) to an ``.npz`` file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, allow_pickle=False, **_token_arrays(tokens))
    return path


def load_tokens(path: str | Path) -> TokenTable:
    with np.load(path, allow_pickle=False) as npz:
        return _tokens_from_arrays({key: npz[key] for key in npz.files})


def config_from_dict(nested: dict[str, Any]) -> PipelineConfig:
    """Inverse of ``PipelineConfig.to_dict``."""
    return PipelineConfig(
        sessions=SessionParams(**nested["sessions"]),
        item2vec=Item2VecParams(**nested["item2vec"]),
        aggregation=AggregationParams(**nested["aggregation"]),
        traits=TraitParams(**nested["traits"]),
        triggers=TriggerParams(**nested["triggers"]),
        # Models stored before the section existed were trained with its defaults' meaning: full.
        increment=IncrementParams(**nested.get("increment", {})),
    )
