"""An in-process cache of loaded models, keyed by database, schema and model version.

A saved model version never changes (``Store.save_model`` writes it once; later steps only
change its status), so once loaded its arrays can serve every later request of the process:
the online update path (``traitflow.online_update``) profiles a customer in milliseconds, and
reading the token table and components back from PostgreSQL would otherwise dominate each post.
The cached model also keeps what it builds lazily (the token table's hash index), and the cache
keeps each model's token lookup matrix (``item2vec.fallback_vectors``: the token vectors stacked
with the category and action means), built on the first ``fallback`` call: rebuilding it per
post copied the whole vocabulary's vectors every time (128 MB at 500K tokens of 64 floats), and
its ``online.CustomerProfiler`` (the row dictionaries of the tokens, categories and actions),
built on the first ``profiler`` call. Likewise each model's product catalog
(``recommend.ProductCatalog``: the product index, the trait product distribution and the unit
product vectors the served ranking reads), built on the first ``catalog`` call. Likewise what
projecting onto its trait components needs beyond the customer vectors
(``traits.ProjectionSetup``: the Gram matrix, its pseudo-inverse and coordinate steps), built on
the first ``projection`` call: a post projects its customers one bucket at a time, mostly one
customer per bucket, where that set-up is about a sixth of the projection's time.

Bounded (``MAX_MODELS`` versions, least recently used dropped first) and thread-safe: the
api-server serves requests from a thread pool. Two threads missing the same version at once
both load it and one result is kept; the lock is not held while loading. Callers share the
cached object: they must not modify it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from traitflow.item2vec import FallbackVectors, fallback_vectors

if TYPE_CHECKING:
    from traitflow.model import TraitflowModel
    from traitflow.online import CustomerProfiler
    from traitflow.recommend import ProductCatalog
    from traitflow.store import Store
    from traitflow.traits import ProjectionSetup

MAX_MODELS: Final = 4  # the active model, the one it replaced, and room for a rollback or two

# (database URL, schema, model version): version numbers are per schema
ModelKey = tuple[str, str, int]


@dataclass
class _Entry:
    model: TraitflowModel
    fallback: FallbackVectors | None = None  # built by the first ``ModelCache.fallback`` call
    profiler: CustomerProfiler | None = None  # built by the first ``ModelCache.profiler`` call
    catalog: ProductCatalog | None = None  # built by the first ``ModelCache.catalog`` call
    projection: ProjectionSetup | None = None  # built by the first ``ModelCache.projection`` call


class ModelCache:
    """Loaded models by ``ModelKey``, at most ``max_models`` of them (least recently used evicted)."""

    def __init__(self, max_models: int = MAX_MODELS) -> None:
        if max_models < 1:
            raise ValueError(f"max_models must be >= 1, got {max_models}")
        self.max_models = max_models
        self._lock = threading.Lock()
        self._models: OrderedDict[ModelKey, _Entry] = OrderedDict()
        self.hits = 0
        self.loads = 0
        self.fallbacks_built = 0
        self.profilers_built = 0
        self.catalogs_built = 0
        self.projections_built = 0

    def load(self, store: Store, version: int) -> TraitflowModel:
        """``store.load_model(version)``, read from the database only the first time."""
        return self._entry(store, version).model

    def fallback(self, store: Store, version: int) -> FallbackVectors:
        """``item2vec.fallback_vectors`` of the cached model's tokens, built only the first time.

        Once built, the cached model's float32 ``tokens.vectors`` is rebound to the matrix's first
        rows (``fallback_vectors`` stacks the token vectors first, as float32): the same values,
        one copy in memory instead of two. Two threads building it at once both build, one result is kept.
        """
        entry = self._entry(store, version)
        if entry.fallback is not None:
            return entry.fallback
        tokens = entry.model.tokens
        built = fallback_vectors(tokens)
        with self._lock:
            if entry.fallback is None:
                self.fallbacks_built += 1
                entry.fallback = built
                if tokens.vectors.dtype == built.matrix.dtype:
                    tokens.vectors = built.matrix[: built.n_tokens]
            return entry.fallback

    def profiler(self, store: Store, version: int) -> CustomerProfiler:
        """``online.CustomerProfiler`` of the cached model over its cached lookup matrix, built
        only the first time. Two threads building it at once both build, one result is kept."""
        from traitflow.online import CustomerProfiler  # scipy and pandas: only where profiles are made

        entry = self._entry(store, version)
        if entry.profiler is not None:
            return entry.profiler
        built = CustomerProfiler(entry.model, self.fallback(store, version))
        with self._lock:
            if entry.profiler is None:
                self.profilers_built += 1
                entry.profiler = built
            return entry.profiler

    def catalog(self, store: Store, version: int) -> ProductCatalog:
        """``recommend.build_catalog`` of the cached model, built only the first time (raises
        ``recommend.NoProductRankingError``, every time, for a model without trait product
        distributions). Two threads building it at once both build, one result is kept."""
        # Imported here: recommend imports this module, and the online update path that imports
        # this module never ranks products.
        from traitflow.recommend import build_catalog

        entry = self._entry(store, version)
        if entry.catalog is not None:
            return entry.catalog
        built = build_catalog(entry.model)
        with self._lock:
            if entry.catalog is None:
                self.catalogs_built += 1
                entry.catalog = built
            return entry.catalog

    def projection(self, store: Store, version: int) -> ProjectionSetup:
        """``traits.ProjectionSetup`` of the cached model's trait components, built only the first
        time. Two threads building it at once both build, one result is kept."""
        from traitflow.traits import ProjectionSetup  # scipy: only where profiles are made

        entry = self._entry(store, version)
        if entry.projection is not None:
            return entry.projection
        built = ProjectionSetup.of(entry.model.traits.components)
        with self._lock:
            if entry.projection is None:
                self.projections_built += 1
                entry.projection = built
            return entry.projection

    def _entry(self, store: Store, version: int) -> _Entry:
        key: ModelKey = (str(store.url), store.schema, int(version))
        with self._lock:
            entry = self._models.get(key)
            if entry is not None:
                self._models.move_to_end(key)
                self.hits += 1
                return entry
        model = store.load_model(int(version))
        with self._lock:
            self.loads += 1
            # a concurrent load of the same key may have won
            kept = self._models.setdefault(key, _Entry(model))
            self._models.move_to_end(key)
            while len(self._models) > self.max_models:
                self._models.popitem(last=False)
            return kept

    def __len__(self) -> int:
        with self._lock:
            return len(self._models)

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


MODELS = ModelCache()


def load_model(store: Store, version: int) -> TraitflowModel:
    """``store.load_model(version)`` through the process's model cache."""
    return MODELS.load(store, version)


def load_profiler(store: Store, version: int) -> CustomerProfiler:
    """The ``online.CustomerProfiler`` of model ``version`` (``ModelCache.profiler``) through the
    process's model cache."""
    return MODELS.profiler(store, version)


def load_fallback(store: Store, version: int) -> FallbackVectors:
    """The token lookup matrix of model ``version`` (``ModelCache.fallback``) through the
    process's model cache."""
    return MODELS.fallback(store, version)


def load_catalog(store: Store, version: int) -> ProductCatalog:
    """The product catalog of model ``version`` (``ModelCache.catalog``) through the process's
    model cache."""
    return MODELS.catalog(store, version)


def load_projection(store: Store, version: int) -> ProjectionSetup:
    """The ``traits.ProjectionSetup`` of model ``version``'s traits (``ModelCache.projection``)
    through the process's model cache."""
    return MODELS.projection(store, version)
