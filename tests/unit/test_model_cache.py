"""traitflow.model_cache: one database read per model version, bounded, thread-safe."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from traitflow.model_cache import ModelCache
from traitflow.store import Store


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
