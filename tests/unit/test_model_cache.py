"""traitflow.model_cache: one database read per model version, bounded, thread-safe; each
model's token lookup matrix and product catalog built once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from traitflow.item2vec import fallback_vectors
from traitflow.model import TokenTable
from traitflow.model_cache import ModelCache
from traitflow.recommend import NoProductRankingError, build_catalog
from traitflow.store import Store
from traitflow.traits import ProjectionSetup


@dataclass
class CountingStore:
    """Stands in for a Store: ``load_model`` returns a fresh object per call and counts the calls."""

    url: str = "postgresql://db/x"
    schema: str = "tf"
    calls: list[int] = field(default_factory=list)
    delay: threading.Event | None = None

    def load_model(self, version: int) -> Any:
        self.calls.append(version)
        if self.delay is not None:
            self.delay.wait(5)
        return {"version": version, "call": len(self.calls)}


def test_a_version_is_read_once_and_the_same_object_is_served() -> None:
    cache, store = ModelCache(), CountingStore()
    first = cache.load(store, 3)  # type: ignore[arg-type]
    assert cache.load(store, 3) is first  # type: ignore[arg-type]
    assert store.calls == [3]
    assert (cache.loads, cache.hits) == (1, 1)


def test_versions_are_per_database_and_schema() -> None:
    cache = ModelCache()
    a, b, c = CountingStore(), CountingStore(schema="other"), CountingStore(url="postgresql://db2/x")
    for store in (a, b, c):
        cache.load(store, 1)  # type: ignore[arg-type]
    assert a.calls == b.calls == c.calls == [1]
    assert len(cache) == 3


def test_least_recently_used_version_is_dropped_beyond_the_bound() -> None:
    cache, store = ModelCache(max_models=2), CountingStore()
    cache.load(store, 1)  # type: ignore[arg-type]
    cache.load(store, 2)  # type: ignore[arg-type]
    cache.load(store, 1)  # type: ignore[arg-type]  # 1 is now the most recently used
    cache.load(store, 3)  # type: ignore[arg-type]  # evicts 2
    assert len(cache) == 2
    cache.load(store, 1)  # type: ignore[arg-type]
    cache.load(store, 2)  # type: ignore[arg-type]
    assert store.calls == [1, 2, 3, 2]
    with pytest.raises(ValueError, match="max_models"):
        ModelCache(max_models=0)


def test_concurrent_misses_all_get_one_shared_model() -> None:
    release = threading.Event()
    cache, store = ModelCache(), CountingStore(delay=release)
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(cache.load(store, 5))) for _ in range(8)]  # type: ignore[arg-type]
    for thread in threads:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(10)
    assert len(results) == 8
    assert all(r is results[0] for r in results)  # whichever load won, everyone got that one
    assert len(cache) == 1
    assert cache.load(store, 5) is results[0]  # type: ignore[arg-type]


@dataclass
class TokensModel:
    """Stands in for a loaded model: only its token table is read by ``ModelCache.fallback``."""

    tokens: TokenTable


@dataclass
class TokensStore(CountingStore):
    """``load_model`` returns a fresh model whose token vectors depend on the version."""

    def load_model(self, version: int) -> Any:
        self.calls.append(version)
        return TokensModel(
            TokenTable(
                tokens=np.array(["view_a", "view_b", "cart_a"], dtype=object),
                actions=np.array(["view", "view", "cart"], dtype=object),
                product_ids=np.array(["a", "b", "a"], dtype=object),
                categories=np.array(["X", "", "X"], dtype=object),
                counts=np.array([1, 3, 2], dtype=np.int64),
                vectors=np.arange(6, dtype=np.float32).reshape(3, 2) * version,
            )
        )


def test_a_fallback_matrix_is_built_once_per_model_and_shares_the_token_vectors() -> None:
    cache, store = ModelCache(), TokensStore()
    saved = store.load_model(2).tokens.vectors.copy()
    store.calls.clear()
    first = cache.fallback(store, 2)  # type: ignore[arg-type]
    assert cache.fallback(store, 2) is first  # type: ignore[arg-type]
    assert cache.fallbacks_built == 1 and store.calls == [2]
    model = cache.load(store, 2)  # type: ignore[arg-type]
    expected = fallback_vectors(store.load_model(2).tokens)
    np.testing.assert_array_equal(first.matrix, expected.matrix)
    assert list(first.category_index) == list(expected.category_index)
    assert list(first.action_index) == list(expected.action_index)
    # The model's token vectors are now the matrix's first rows: equal values, one copy.
    np.testing.assert_array_equal(model.tokens.vectors, saved)
    assert np.shares_memory(model.tokens.vectors, first.matrix)


def test_another_model_gets_its_own_fallback_matrix() -> None:
    cache, store = ModelCache(), TokensStore()
    two = cache.fallback(store, 2)  # type: ignore[arg-type]
    three = cache.fallback(store, 3)  # type: ignore[arg-type]
    other_schema = cache.fallback(TokensStore(schema="other"), 2)  # type: ignore[arg-type]
    assert cache.fallbacks_built == 3
    assert two is not three and two is not other_schema
    np.testing.assert_array_equal(three.matrix[:3], np.arange(6, dtype=np.float32).reshape(3, 2) * 3)
    np.testing.assert_array_equal(two.matrix[:3], np.arange(6, dtype=np.float32).reshape(3, 2) * 2)


def test_an_evicted_model_takes_its_fallback_matrix_with_it() -> None:
    cache, store = ModelCache(max_models=1), TokensStore()
    first = cache.fallback(store, 1)  # type: ignore[arg-type]
    cache.fallback(store, 2)  # type: ignore[arg-type]  # evicts 1
    again = cache.fallback(store, 1)  # type: ignore[arg-type]
    assert again is not first and cache.fallbacks_built == 3
    np.testing.assert_array_equal(again.matrix, first.matrix)


@dataclass
class ModelStore(CountingStore):
    """``load_model`` returns a fresh ``build_model(seed=version)`` per call; with ``bare`` the
    model has no trait product distributions (it cannot rank products)."""

    build: Callable[..., Any] = field(kw_only=True)
    bare: bool = False

    def load_model(self, version: int) -> Any:
        self.calls.append(version)
        model = self.build(seed=version)
        if self.bare:
            model.traits.products = None
        return model


def test_a_catalog_is_built_once_per_version_beside_the_fallback_matrix(
    build_model: Callable[..., Any],
) -> None:
    cache, store = ModelCache(max_models=1), ModelStore(build=build_model)
    fallback = cache.fallback(store, 1)  # type: ignore[arg-type]
    first = cache.catalog(store, 1)  # type: ignore[arg-type]
    assert cache.catalog(store, 1) is first  # type: ignore[arg-type]
    assert cache.fallback(store, 1) is fallback  # type: ignore[arg-type]  # one entry holds both
    assert (cache.catalogs_built, cache.fallbacks_built) == (1, 1) and store.calls == [1]
    expected = build_catalog(store.load_model(1))
    assert first.product_ids.equals(expected.product_ids)
    np.testing.assert_array_equal(first.distribution, expected.distribution)
    np.testing.assert_array_equal(first.unit_vectors, expected.unit_vectors)
    cache.catalog(store, 2)  # type: ignore[arg-type]  # evicts 1 with its catalog
    again = cache.catalog(store, 1)  # type: ignore[arg-type]
    assert again is not first and cache.catalogs_built == 3
    np.testing.assert_array_equal(again.unit_vectors, first.unit_vectors)


def test_a_projection_setup_is_built_once_per_version_from_its_trait_components(
    build_model: Callable[..., Any],
) -> None:
    cache, store = ModelCache(max_models=1), ModelStore(build=build_model)
    first = cache.projection(store, 1)  # type: ignore[arg-type]
    assert cache.projection(store, 1) is first  # type: ignore[arg-type]
    assert cache.projections_built == 1 and store.calls == [1]
    expected = ProjectionSetup.of(store.load_model(1).traits.components)
    for name in ("transposed", "gram", "pseudo_inverse"):
        np.testing.assert_array_equal(getattr(first, name), getattr(expected, name))
    np.testing.assert_array_equal(first.steps.directions, expected.steps.directions)
    np.testing.assert_array_equal(first.steps.diag, expected.steps.diag)
    cache.projection(store, 2)  # type: ignore[arg-type]  # evicts 1 with its setup
    assert cache.projection(store, 1) is not first and cache.projections_built == 3  # type: ignore[arg-type]


def test_a_model_without_product_distributions_has_no_catalog(build_model: Callable[..., Any]) -> None:
    cache, store = ModelCache(), ModelStore(build=build_model, bare=True)
    for _ in range(2):
        with pytest.raises(NoProductRankingError, match="without trait product distributions"):
            cache.catalog(store, 1)  # type: ignore[arg-type]
    assert cache.catalogs_built == 0 and store.calls == [
        1
    ]  # the model stays cached, the error is raised again


def test_a_cached_model_is_the_saved_one(store: Store, build_model: Callable[..., Any]) -> None:
    model = build_model()
    version = store.save_model(model)
    cache = ModelCache()
    loaded = cache.load(store, version)
    assert cache.load(store, version) is loaded
    assert cache.loads == 1
    assert loaded.version == version
    np.testing.assert_array_equal(loaded.traits.components, model.traits.components)
    np.testing.assert_array_equal(loaded.tokens.vectors, model.tokens.vectors)
