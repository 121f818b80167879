"""The Redis profile cache (``traitflow.profile_cache``) and the plugin's ``/metrics``, against a
``redis-server`` of each test's own on a free loopback port (never the shared one)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from traitflow import profile_cache
from traitflow.profile_cache import (
    FALLBACK,
    HIT,
    MISS,
    UNCACHED,
    CacheSettings,
    CircuitBreaker,
    ProfileCache,
    SimilarQuestion,
)

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

TRAITS = (3, 7, 11)
NEW_TRAITS = (3, 7, 12)
CUSTOMERS = ["c1", "c2", "shop/c:3"]
AS_OF = datetime(2024, 1, 10, tzinfo=UTC)
PROFILE_ROUTE = "/api/customers/{customer_id:path}"
PLUGINS_DIR = Path(__file__).resolve().parents[2] / "plugins"


@pytest.fixture
def cache_env(redis_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The plugin's process-wide cache pointed at this test's server."""
    monkeypatch.setenv(profile_cache.ENV_URL, redis_server.url)
    yield redis_server
    monkeypatch.delenv(profile_cache.ENV_URL)
    assert profile_cache.shared_cache() is None  # closes this test's client


@pytest.fixture
def profiled(empty_db: Any, build_model: Any, build_profile_batch: Any) -> Any:
    """An active model (TRAITS) with current profiles of CUSTOMERS."""
    store = empty_db
    version = store.save_model(build_model(trait_ids=TRAITS))
    store.promote(version, profiles=build_profile_batch(version, CUSTOMERS, trait_ids=TRAITS, as_of=AS_OF))
    return store


def _same_profile(got: dict[str, Any] | None, expected: dict[str, Any] | None) -> None:
    assert got is not None and expected is not None
    assert np.array_equal(got.pop("embedding"), expected.pop("embedding"))
    assert got == expected


# ------------------------------------------------------------------------------ library


def test_read_through_misses_then_hits_with_the_stored_profile(profiled: Any, redis_server: Any) -> None:
    cache = ProfileCache(CacheSettings(redis_server.url))
    try:
        first, second = (
            cache.current_profile(profiled, "shop/c:3"),
            cache.current_profile(profiled, "shop/c:3"),
        )
        assert (first.outcome, second.outcome) == (MISS, HIT)
        _same_profile(second.profile, profiled.current_profile("shop/c:3"))
        _same_profile(first.profile, profiled.current_profile("shop/c:3"))
        # an unknown customer is not cached: every read asks PostgreSQL
        assert [cache.current_profile(profiled, "nobody").outcome for _ in range(2)] == [MISS, MISS]
    finally:
        cache.close()


def test_a_promotion_between_two_reads_is_never_hidden_by_the_cache(
    profiled: Any, cache_env: Any, build_model: Any, build_profile_batch: Any
) -> None:
    # A long active-version TTL: only the promotion's generation bump can make the read see it.
    cache = ProfileCache(CacheSettings(cache_env.url, active_ttl_seconds=3600))
    try:
        old = profiled.active_model_version()
        assert cache.current_profile(profiled, "c1").outcome == MISS
        assert cache.current_profile(profiled, "c1").outcome == HIT
        new = profiled.save_model(
            build_model(trait_ids=NEW_TRAITS, seed=1, trained_through=datetime(2024, 1, 14, tzinfo=UTC))
        )
        profiled.promote(
            new, profiles=build_profile_batch(new, ["c1"], trait_ids=NEW_TRAITS, as_of=AS_OF, seed=2)
        )
        after = cache.current_profile(profiled, "c1")  # promote() bumped the generation
        assert after.outcome == MISS
        assert after.profile is not None and after.profile["model_version"] == new != old
        assert [t["trait_id"] for t in after.profile["traits"]] == list(NEW_TRAITS)
        assert cache.current_profile(profiled, "c1").profile["model_version"] == new  # type: ignore[index]
    finally:
        cache.close()


class _CountingStore:
    """A Store that counts its PostgreSQL reads of the active version and of profiles."""

    def __init__(self, store: Any) -> None:
        self.store, self.calls = store, {"active_model_version": 0, "current_profile": 0}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def active_model_version(self) -> Any:
        self.calls["active_model_version"] += 1
        return self.store.active_model_version()

    def current_profile(self, customer_id: str) -> Any:
        self.calls["current_profile"] += 1
        return self.store.current_profile(customer_id)


def test_warm_reads_do_not_query_postgres(profiled: Any, redis_server: Any) -> None:
    now = [0.0]
    cache = ProfileCache(CacheSettings(redis_server.url, active_ttl_seconds=1.0), clock=lambda: now[0])
    store = _CountingStore(profiled)
    try:
        assert cache.current_profile(store, "c1").outcome == MISS  # type: ignore[arg-type]
        assert store.calls == {"active_model_version": 1, "current_profile": 1}
        hits = [cache.current_profile(store, c).outcome for c in ("c1", "c1", "c1")]  # type: ignore[arg-type]
        assert hits == [HIT] * 3 and store.calls == {"active_model_version": 1, "current_profile": 1}
        now[0] = 1.5  # past the TTL: the active version is read again, the profile still cached
        assert cache.current_profile(store, "c1").outcome == HIT  # type: ignore[arg-type]
        assert store.calls == {"active_model_version": 2, "current_profile": 1}
    finally:
        cache.close()


def test_a_warm_read_is_one_redis_round_trip_until_the_generation_moves(
    profiled: Any, redis_server: Any
) -> None:
    import redis

    commands: list[str] = []

    class CountingRedis(redis.Redis):
        def execute_command(self, *args: Any, **options: Any) -> Any:
            commands.append(str(args[0]))
            return super().execute_command(*args, **options)

    client = CountingRedis(port=redis_server.port)
    cache = ProfileCache(CacheSettings(redis_server.url, active_ttl_seconds=3600), client=client)
    other = ProfileCache(CacheSettings(redis_server.url))  # another process's writes
    try:
        assert cache.current_profile(profiled, "c1").outcome == MISS
        assert commands == ["GET", "GET", "SET"]  # generation, key, fill
        commands.clear()
        assert [cache.current_profile(profiled, c).outcome for c in ("c1", "c1")] == [HIT, HIT]
        assert commands == ["MGET", "MGET"]
        commands.clear()
        assert other.profiles_changed(profiled) == "invalidated"  # the generation moves on
        read = cache.current_profile(profiled, "c1")
        assert read.outcome == MISS  # the new key space: the old generation's value was not used
        _same_profile(read.profile, profiled.current_profile("c1"))
        assert commands == ["MGET", "GET", "SET"]
        commands.clear()
        assert cache.current_profile(profiled, "c1").outcome == HIT
        assert commands == ["MGET"]
    finally:
        cache.close()
        other.close()


def test_a_hit_is_answered_from_redis_alone_or_left_to_the_full_read(
    profiled: Any, redis_server: Any
) -> None:
    """``hit`` (what the async route tries on its event loop) answers only a cached profile under
    the generation and active version the process knows, and never queries PostgreSQL."""
    cache = ProfileCache(CacheSettings(redis_server.url, active_ttl_seconds=3600))
    other = ProfileCache(CacheSettings(redis_server.url))
    try:
        assert cache.hit(profiled.schema, "c1") is None  # no active version known yet
        assert cache.current_profile(profiled, "c1").outcome == MISS  # fills the key
        _same_profile(cache.hit(profiled.schema, "c1"), profiled.current_profile("c1"))
        assert cache.hit(profiled.schema, "c2") is None  # not cached
        assert other.profiles_changed(profiled) == "invalidated"
        assert cache.hit(profiled.schema, "c1") is None  # the generation moved on
        assert cache.current_profile(profiled, "c1").outcome == MISS
        assert cache.hit(profiled.schema, "c1") is not None
        for _ in range(cache.breaker.failures_to_open):
            cache.breaker.failed()
        assert cache.hit(profiled.schema, "c1") is None  # circuit open: not even tried
    finally:
        cache.close()
        other.close()


def test_similar_answers_are_cached_per_question_until_the_generation_moves_or_they_expire(
    profiled: Any, redis_server: Any
) -> None:
    cache = ProfileCache(CacheSettings(redis_server.url, active_ttl_seconds=3600, similar_ttl_seconds=1))
    other = ProfileCache(CacheSettings(redis_server.url))
    asked: list[str] = []

    def answer(text: str) -> Any:
        return lambda: asked.append(text) or text.encode()

    question = SimilarQuestion("shop/c:3", 10, 3)
    try:
        assert cache.similar(profiled, question, answer("first")) == (b"first", MISS)
        assert cache.similar(profiled, question, answer("second")) == (b"first", HIT)
        assert cache.similar_hit(profiled.schema, question) == b"first"
        assert cache.similar_hit(profiled.schema, SimilarQuestion("shop/c:3", 5, 3)) is None  # another n
        assert cache.similar_hit(profiled.schema, SimilarQuestion("shop/c:3", 10, 0)) is None
        assert cache.hit(profiled.schema, "shop/c:3") is None  # the profile key space is apart
        assert other.profiles_changed(profiled) == "invalidated"
        assert cache.similar_hit(profiled.schema, question) is None
        assert cache.similar(profiled, question, answer("third")) == (b"third", MISS)
        time.sleep(1.1)  # similar_ttl_seconds
        assert cache.similar(profiled, question, answer("fourth")) == (b"fourth", MISS)
        assert asked == ["first", "third", "fourth"]
    finally:
        cache.close()
        other.close()
    off = ProfileCache(CacheSettings(redis_server.url, similar_ttl_seconds=0))
    try:
        assert off.similar(profiled, question, answer("fifth")) == (b"fifth", UNCACHED)
        assert off.similar_hit(profiled.schema, question) is None
    finally:
        off.close()


def test_a_promotion_that_did_not_reach_redis_is_seen_within_the_ttl(
    profiled: Any, redis_server: Any, build_model: Any, build_profile_batch: Any
) -> None:
    """TRAITFLOW_REDIS_URL unset for the promoting process: no generation bump; the active
    version read for the generation expires after ``active_ttl_seconds``."""
    now = [0.0]
    cache = ProfileCache(CacheSettings(redis_server.url, active_ttl_seconds=1.0), clock=lambda: now[0])
    try:
        old = profiled.active_model_version()
        assert cache.current_profile(profiled, "c1").outcome == MISS
        new = profiled.save_model(
            build_model(trait_ids=NEW_TRAITS, seed=1, trained_through=datetime(2024, 1, 14, tzinfo=UTC))
        )
        profiled.promote(
            new, profiles=build_profile_batch(new, ["c1"], trait_ids=NEW_TRAITS, as_of=AS_OF, seed=2)
        )
        stale = cache.current_profile(profiled, "c1")
        assert stale.outcome == HIT and stale.profile["model_version"] == old  # type: ignore[index]
        now[0] = 1.0
        fresh = cache.current_profile(profiled, "c1")
        assert fresh.outcome == MISS and fresh.profile["model_version"] == new  # type: ignore[index]
    finally:
        cache.close()


def test_profiles_changed_refreshes_some_customers_and_invalidates_all(
    profiled: Any, redis_server: Any, build_profile_batch: Any
) -> None:
    cache = ProfileCache(CacheSettings(redis_server.url))
    version = profiled.active_model_version()
    later = datetime(2024, 1, 11, tzinfo=UTC)
    try:
        for customer in CUSTOMERS:
            cache.current_profile(profiled, customer)
        profiled.write_profiles(
            build_profile_batch(version, CUSTOMERS, trait_ids=TRAITS, as_of=later, seed=5)
        )
        assert cache.current_profile(profiled, "c1").profile["as_of"] == AS_OF  # type: ignore[index]
        assert cache.profiles_changed(profiled, ["c1", "shop/c:3", "nobody", "c1"]) == "refreshed"
        for customer in ("c1", "shop/c:3"):
            refreshed = cache.current_profile(profiled, customer)
            assert refreshed.outcome == HIT  # rewritten by the refresh, not dropped
            _same_profile(refreshed.profile, profiled.current_profile(customer))
        assert cache.current_profile(profiled, "nobody").outcome == MISS  # absent: not cached
        assert cache.current_profile(profiled, "c2").profile["as_of"] == AS_OF  # type: ignore[index]
        assert cache.profiles_changed(profiled) == "invalidated"
        again = cache.current_profile(profiled, "c2")
        assert again.outcome == MISS and again.profile is not None and again.profile["as_of"] == later
    finally:
        cache.close()


def test_a_refresh_with_the_rows_the_write_read_needs_no_postgres_read(
    profiled: Any, redis_server: Any, build_profile_batch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``write_profiles(read_current=True)`` hands the refresh the current rows it read in its
    transaction: the refresh caches them without reading PostgreSQL again."""
    cache = ProfileCache(CacheSettings(redis_server.url))
    version = profiled.active_model_version()
    later = datetime(2024, 1, 11, tzinfo=UTC)
    try:
        cache.current_profile(profiled, "c1")  # the active version known, c1 cached
        written = profiled.write_profiles(
            build_profile_batch(version, ["c1"], trait_ids=TRAITS, as_of=later, seed=5),
            few_rows=True,
            read_current=True,
        )

        def no_read(*args: Any) -> Any:
            raise AssertionError("read PostgreSQL")

        monkeypatch.setattr(profiled, "current_profiles", no_read)
        assert cache.profiles_changed(profiled, ["c1"], written.current_profiles) == "refreshed"
        monkeypatch.undo()
        refreshed = cache.current_profile(profiled, "c1")
        assert refreshed.outcome == HIT
        _same_profile(refreshed.profile, profiled.current_profile("c1"))
    finally:
        cache.close()


def test_a_refresh_after_the_generation_moved_lands_in_the_current_generation(
    profiled: Any, redis_server: Any, build_profile_batch: Any
) -> None:
    """The refresh writes under the generation the process knows, reading the current one in the
    same round trip; when another process moved it meanwhile, the rows are written again under
    the current one, so the next read hits the refreshed row."""
    cache = ProfileCache(CacheSettings(redis_server.url, active_ttl_seconds=3600))
    other = ProfileCache(CacheSettings(redis_server.url))
    later = datetime(2024, 1, 11, tzinfo=UTC)
    try:
        assert cache.current_profile(profiled, "c1").outcome == MISS  # the process knows generation 0
        assert other.profiles_changed(profiled) == "invalidated"  # generation 1
        profiled.write_profiles(
            build_profile_batch(
                profiled.active_model_version(), ["c1"], trait_ids=TRAITS, as_of=later, seed=5
            )
        )
        assert cache.profiles_changed(profiled, ["c1"]) == "refreshed"
        read = cache.current_profile(profiled, "c1")
        assert read.outcome == HIT and read.profile["as_of"] == later  # type: ignore[index]
    finally:
        cache.close()
        other.close()


class _WriteDuringRead:
    """A Store whose profile read is overtaken by a committed write of every profile: the write's
    generation bump lands between the cache miss and the fill."""

    def __init__(self, store: Any, cache: ProfileCache) -> None:
        self.store, self.cache = store, cache

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def current_profile(self, customer_id: str) -> Any:
        profile = self.store.current_profile(customer_id)  # the row before the write
        assert self.cache.profiles_changed(self.store) == "invalidated"
        return profile


def test_a_fill_racing_a_write_never_lands_in_the_new_generation(profiled: Any, redis_server: Any) -> None:
    cache = ProfileCache(CacheSettings(redis_server.url))
    try:
        assert cache.current_profile(_WriteDuringRead(profiled, cache), "c1").outcome == MISS  # type: ignore[arg-type]
        assert cache.current_profile(profiled, "c1").outcome == MISS  # the raced fill is unreachable
        assert cache.current_profile(profiled, "c1").outcome == HIT
    finally:
        cache.close()


def test_many_changed_customers_bump_the_generation_instead(
    profiled: Any, redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = ProfileCache(CacheSettings(redis_server.url))
    monkeypatch.setattr(profile_cache, "MAX_REFRESHED_CUSTOMERS", 1)
    try:
        cache.current_profile(profiled, "c1")
        assert cache.profiles_changed(profiled, ["c1", "c2"]) == "invalidated"
        assert cache.current_profile(profiled, "c1").outcome == MISS
        assert profile_cache.profiles_changed(profiled, ["c1"]) == "off"  # TRAITFLOW_REDIS_URL unset
    finally:
        cache.close()


def test_killed_redis_falls_back_to_postgres_and_stops_trying(profiled: Any, redis_server: Any) -> None:
    cache = ProfileCache(CacheSettings(redis_server.url, cooldown_seconds=60))
    try:
        assert cache.current_profile(profiled, "c1").outcome == MISS
        redis_server.kill()
        reads = [cache.current_profile(profiled, "c1") for _ in range(3)]
        assert [r.outcome for r in reads] == [FALLBACK] * 3
        _same_profile(reads[0].profile, profiled.current_profile("c1"))
        assert cache.breaker.is_open
        assert cache.profiles_changed(profiled, ["c1"]) == "skipped"  # the circuit is open
    finally:
        cache.close()


def test_a_hung_redis_costs_one_short_timeout(profiled: Any, redis_server: Any) -> None:
    cache = ProfileCache(CacheSettings(redis_server.url, timeout_seconds=0.05))
    try:
        assert cache.current_profile(profiled, "c1").outcome == MISS
        redis_server.process.send_signal(signal.SIGSTOP)  # accepts nothing, answers nothing
        started = time.monotonic()
        read = cache.current_profile(profiled, "c1")
        assert read.outcome == FALLBACK and read.profile is not None
        assert time.monotonic() - started < 0.5  # one 50 ms timeout plus PostgreSQL, no retries
        for _ in range(cache.breaker.failures_to_open - 1):  # the failures that open the circuit
            assert cache.current_profile(profiled, "c2").outcome == FALLBACK
        assert cache.breaker.is_open
        started = time.monotonic()
        assert cache.current_profile(profiled, "c2").outcome == FALLBACK  # circuit open: no wait at all
        assert time.monotonic() - started < 0.2
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
        cache.close()


def test_circuit_breaker_opens_waits_then_lets_one_trial_through() -> None:
    now = [0.0]
    breaker = CircuitBreaker(5.0, clock=lambda: now[0], failures_to_open=2)
    assert breaker.allow() and not breaker.is_open
    breaker.failed()
    assert breaker.allow() and not breaker.is_open  # one failure: a busy host, not a dead Redis
    breaker.succeeded()
    breaker.failed()
    assert breaker.allow()  # a success in between starts the count again
    breaker.failed()
    assert not breaker.allow()
    now[0] = 5.0
    assert breaker.allow()  # the trial
    assert not breaker.allow()  # only one
    breaker.succeeded()
    assert breaker.allow() and not breaker.is_open
    breaker.failed()
    breaker.failed()
    now[0] = 11.0
    assert breaker.allow()  # the trial fails: the circuit reopens at once
    breaker.failed()
    assert not breaker.allow()


def test_settings_from_env() -> None:
    assert CacheSettings.from_env({}) is None
    assert CacheSettings.from_env({profile_cache.ENV_URL: " "}) is None
    settings = CacheSettings.from_env({profile_cache.ENV_URL: "redis://h:1/2", profile_cache.ENV_TTL: "60"})
    assert settings == CacheSettings("redis://h:1/2", ttl_seconds=60)
    with pytest.raises(ValueError):
        CacheSettings.from_env({profile_cache.ENV_URL: "redis://h", profile_cache.ENV_TTL: "0"})


def test_encoding_round_trips_every_field(profiled: Any) -> None:
    stored = profiled.current_profile("c2")
    decoded = profile_cache.decode_profile(profile_cache.encode_profile(stored))
    assert decoded["embedding"].dtype == np.float32
    _same_profile(decoded, stored)


# ------------------------------------------------------------------------------ plugin


def _scrape(client: TestClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    from traitflow_web.metrics import STORE_STATS

    STORE_STATS.clear()  # read this test's schema, not a cached earlier one
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _reads(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], outcome: str) -> float:
    return _counter(metrics, "traitflow_profile_cache_reads", outcome)


def _counter(
    metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], family: str, outcome: str
) -> float:
    return metrics.get((f"{family}_total", frozenset({("outcome", outcome)})), 0.0)


def test_api_reads_through_the_cache_and_survives_redis_dying(
    client: TestClient, profiled: Any, cache_env: Any
) -> None:
    before = _scrape(client)
    bodies = [client.get("/api/customers/shop/c:3") for _ in range(2)]
    assert [b.status_code for b in bodies] == [200, 200] and bodies[0].json() == bodies[1].json()
    middle = _scrape(client)
    assert _reads(middle, MISS) - _reads(before, MISS) == 1
    assert _reads(middle, HIT) - _reads(before, HIT) == 1
    cache_env.kill()
    after_kill = [client.get("/api/customers/shop/c:3") for _ in range(2)]
    assert [r.status_code for r in after_kill] == [200, 200]
    assert after_kill[0].json() == bodies[0].json()
    assert client.get("/api/customers/shop/c:3/similar").status_code == 200
    after = _scrape(client)
    assert _reads(after, FALLBACK) - _reads(middle, FALLBACK) == 3


def test_api_caches_similar_answers_and_counts_them(
    client: TestClient, profiled: Any, cache_env: Any
) -> None:
    before = _scrape(client)
    first, second = (client.get("/api/customers/c1/similar?n=2&min_events=0") for _ in range(2))
    assert first.status_code == second.status_code == 200 and first.json() == second.json()
    assert [s["customer_id"] for s in first.json()["similar"]] == [
        r for r in profiled.similar_customers("c1", n=2, min_events=0)["customer_id"]
    ]
    assert client.get("/api/customers/nobody/similar").status_code == 404  # not cached: asked again
    assert client.get("/api/customers/nobody/similar").status_code == 404
    after = _scrape(client)
    counts = {
        outcome: _counter(after, "traitflow_similar_cache_reads", outcome)
        - _counter(before, "traitflow_similar_cache_reads", outcome)
        for outcome in (HIT, MISS)
    }
    assert counts == {HIT: 1, MISS: 1}


def test_products_rank_the_same_from_a_cached_profile(
    client: TestClient, profiled: Any, cache_env: Any
) -> None:
    """The embedding and traits the ranking needs survive the cache's JSON: a hit ranks as a miss
    and as PostgreSQL after Redis died."""
    before = _scrape(client)
    bodies = [client.get("/api/customers/shop/c:3/products", params={"n": 5}) for _ in range(2)]
    assert [b.status_code for b in bodies] == [200, 200] and bodies[0].json() == bodies[1].json()
    assert len(bodies[0].json()["products"]) == 5
    middle = _scrape(client)
    assert _reads(middle, MISS) - _reads(before, MISS) == 1
    assert _reads(middle, HIT) - _reads(before, HIT) == 1
    cache_env.kill()
    fallback = client.get("/api/customers/shop/c:3/products", params={"n": 5})
    assert fallback.status_code == 200 and fallback.json() == bodies[0].json()
    assert _reads(_scrape(client), FALLBACK) - _reads(middle, FALLBACK) == 1


def test_metrics_expose_pipeline_cache_and_latency_families(
    client: TestClient, profiled: Any, tmp_path: Path, build_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    csv = tmp_path / "events.csv"
    csv.write_text(
        "customer_id,event_time,action,product_id,category,price,session_id\n"
        "c1,2024-01-09T10:00:00Z,view,p1,shoes,1.0,s1\n"
        "c1,2024-01-09T10:01:00Z,purchase,p1,shoes,1.0,s1\n"
        "c2,not a time,view,p2,shoes,1.0,s2\n"
        "c2,2024-01-09T10:02:00Z,teleport,p2,shoes,1.0,s2\n"
    )
    ingest = profiled.ingest_file(csv, "canonical", run_id="metrics-test", max_reject_share=1.0)
    active = profiled.active_model_version()
    profiled.update_model_metadata(
        active, drift={"measured": True, "weighted_mean_drift": 0.12, "reason": None}
    )
    promoted = _scrape(client)
    assert promoted[("traitflow_last_retrain_gate_passed", frozenset({("model_version", str(active))}))] == 1
    drift = {dict(labels)["measure"]: v for (name, labels), v in promoted.items() if name.endswith("_drift")}
    assert drift == {"weighted_mean_drift": 0.12}  # numbers only
    rejected = profiled.save_model(build_model(seed=3, trained_through=datetime(2024, 1, 14, tzinfo=UTC)))
    profiled.reject_model(rejected, "below the gate")
    monkeypatch.delenv(profile_cache.ENV_URL, raising=False)
    assert client.get("/api/customers/c1").status_code == 200
    assert client.get("/api/customers/nobody").status_code == 404
    metrics = _scrape(client)
    value = lambda name, **labels: metrics[(name, frozenset(labels.items()))]  # noqa: E731
    assert value("traitflow_store_up") == 1
    assert value("traitflow_events_ingested") == ingest.n_inserted == 2
    assert sum(v for (name, _), v in metrics.items() if name == "traitflow_events_rejected") == 2
    assert value("traitflow_profiles_current") == len(CUSTOMERS)
    assert value("traitflow_active_model_version") == profiled.active_model_version()
    assert value("traitflow_last_retrain_model_version") == rejected
    assert value("traitflow_last_retrain_gate_passed", model_version=str(rejected)) == 0
    assert _reads(metrics, "uncached") >= 2
    count = value(
        "traitflow_api_request_duration_seconds_count", route=PROFILE_ROUTE, method="GET", status="200"
    )
    assert count >= 1
    assert value(
        "traitflow_api_request_duration_seconds_count", route=PROFILE_ROUTE, method="GET", status="404"
    )
    text = client.get("/metrics").text
    assert "nobody" not in text and '"c1"' not in text  # route templates, never customer ids


def test_metrics_token_when_configured(
    client: TestClient, empty_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRAITFLOW_METRICS_TOKEN", "s3cret")
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_metrics_report_an_unreachable_store_without_failing(client: TestClient, plugin_env: Any) -> None:
    plugin_env("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1", "traitflow")
    metrics = _scrape(client)
    assert metrics[("traitflow_store_up", frozenset())] == 0
    assert not any(name.startswith("traitflow_events") for name, _ in metrics)


def test_multiprocess_mode_sums_the_workers_counts(tmp_path: Path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR, a scrape in one process reports what every process counted."""
    import subprocess
    import sys

    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "PYTHONPATH": os.pathsep.join([str(PLUGINS_DIR), os.environ.get("PYTHONPATH", "")]),
        "TRAITFLOW_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1",
    }
    count = "from traitflow_web.metrics import count_cache_read; count_cache_read('hit')"
    for _ in range(2):  # two "workers", one hit each
        subprocess.run([sys.executable, "-c", count], env=env, check=True, timeout=60)
    scrape = (
        "from prometheus_client import generate_latest\n"
        "from traitflow_web.metrics import exposition_registry\n"
        "import sys; open(sys.argv[1], 'wb').write(generate_latest(exposition_registry()))"
    )
    page = tmp_path.parent / f"{tmp_path.name}.txt"  # not in the metrics folder
    subprocess.run(
        [sys.executable, "-c", scrape, str(page)], env=env, check=True, timeout=60, capture_output=True
    )
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(page.read_text())
        for s in family.samples
    }
    assert samples[("traitflow_profile_cache_reads_total", frozenset({("outcome", "hit")}))] == 2
    assert samples[("traitflow_store_up", frozenset())] == 0
