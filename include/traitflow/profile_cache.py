"""A Redis read-through cache of current customer profiles (``Store.current_profile``).

Off unless ``TRAITFLOW_REDIS_URL`` is set. Keys hold the Store's schema, a generation number and
the **active model version**::

    traitflow:p1:<schema>:g<generation>:v<active model version>:<customer id>

A read asks Redis for the generation and the customer's key, in one MGET while the process
knows a fresh active version for the generation it saw last (else two GETs): no PostgreSQL
query when the profile is cached. The active version comes from PostgreSQL once per generation and at most
``CacheSettings.active_ttl_seconds`` old (kept in the process). Every promotion bumps the
generation after its commit (``Store.promote`` and ``Store.publish`` call ``profiles_changed``),
so the next read re-reads the active version and looks in a key space no earlier read filled: a
promotion between two reads is never hidden by the cache. A promotion that could not reach Redis
(Redis down, or a promoting process without ``TRAITFLOW_REDIS_URL``) is seen within
``active_ttl_seconds``. Writes refresh the cache through ``profiles_changed``: a few customers
are re-read from the Store in one query and rewritten (plain SET, while reads fill with SET NX,
so a read that raced the write cannot put the older row back) under the generation and active
version the process knows, as reads use them, with a GET of the generation in the same round
trip (moved meanwhile: written again under the current one); many customers, or all of them,
bump the generation (one INCR, the old keys expire by their TTL). Every key carries the TTL
(``TRAITFLOW_REDIS_TTL_SECONDS``, default 300 s), which also bounds staleness after a write that
could not reach Redis, and after a rollback that could not (an earlier version active again
within the TTL of what was cached under it).

Similar-customers answers (``similar``: the JSON body of ``GET .../similar``) are cached too, in
a key space of their own (``traitflow:s1:<schema>:g<generation>:v<version>:<n>:<min_events>:<id>``).
An answer compares the customer with every profile, so no single write can refresh it: it is
kept ``TRAITFLOW_REDIS_SIMILAR_TTL_SECONDS`` (default 30 s; 0: not cached) and may be that much
older than the profiles it compares, unless a promotion or a bulk write moves the generation.

Redis is an optimisation, never a dependency: every Redis call has a short socket timeout, a
few failures in a row open a circuit breaker for a cooldown (no Redis call at all meanwhile), and the read
falls back to PostgreSQL. ``ProfileRead.outcome`` says which path served a read, for metrics.

Values are JSON (never pickle: whoever can write to Redis must not be able to run code here);
the embedding travels as base64 float32 bytes. Absent customers are not cached. Keys name the
schema, not the database: give each Traitflow database its own Redis database (``/<n>`` in the URL).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import numpy as np

if TYPE_CHECKING:
    import redis

    from traitflow.store import Store

log = logging.getLogger(__name__)

ENV_URL: Final = "TRAITFLOW_REDIS_URL"
ENV_TTL: Final = "TRAITFLOW_REDIS_TTL_SECONDS"
ENV_TIMEOUT: Final = "TRAITFLOW_REDIS_TIMEOUT_SECONDS"
ENV_SIMILAR_TTL: Final = "TRAITFLOW_REDIS_SIMILAR_TTL_SECONDS"
DEFAULT_TTL_SECONDS: Final = 300
DEFAULT_TIMEOUT_SECONDS: Final = 0.1
# A similar-customers answer compares the customer with everyone, so no single write can refresh
# it: it is kept this long (0: not cached), and dropped with its generation.
DEFAULT_SIMILAR_TTL_SECONDS: Final = 30
# How long a process trusts the active model version it read for a generation (bounds a
# promotion whose generation bump did not reach Redis).
DEFAULT_ACTIVE_TTL_SECONDS: Final = 1.0
BREAKER_COOLDOWN_SECONDS: Final = 5.0
# Above this many changed customers one generation bump is cheaper than re-reading each profile.
MAX_REFRESHED_CUSTOMERS: Final = 1000
KEY_FORMAT: Final = "p1"  # changes when the value encoding changes
SIMILAR_KEY_FORMAT: Final = "s1"  # similar-customers answers: a key space of their own

# ProfileRead.outcome values
HIT: Final = "hit"  # served from Redis
MISS: Final = "miss"  # read from PostgreSQL, then cached
FALLBACK: Final = "fallback"  # Redis failed or its circuit is open: read from PostgreSQL
UNCACHED: Final = "uncached"  # no active model (nothing to key on): read from PostgreSQL
OUTCOMES: Final = (HIT, MISS, FALLBACK, UNCACHED)

_DATETIME_FIELDS: Final = ("as_of", "updated_at")


@dataclass(frozen=True)
class CacheSettings:
    """Where Redis is and how long to trust it."""

    url: str
    ttl_seconds: int = DEFAULT_TTL_SECONDS
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    cooldown_seconds: float = BREAKER_COOLDOWN_SECONDS
    active_ttl_seconds: float = DEFAULT_ACTIVE_TTL_SECONDS
    similar_ttl_seconds: int = DEFAULT_SIMILAR_TTL_SECONDS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CacheSettings | None:
        """The settings from ``TRAITFLOW_REDIS_*``; None when ``TRAITFLOW_REDIS_URL`` is unset or empty."""
        env = os.environ if env is None else env
        url = env.get(ENV_URL, "").strip()
        if not url:
            return None
        ttl = int(env.get(ENV_TTL) or DEFAULT_TTL_SECONDS)
        timeout = float(env.get(ENV_TIMEOUT) or DEFAULT_TIMEOUT_SECONDS)
        similar_ttl = int(env.get(ENV_SIMILAR_TTL) or DEFAULT_SIMILAR_TTL_SECONDS)
        if ttl < 1 or timeout <= 0 or similar_ttl < 0:
            raise ValueError(
                f"{ENV_TTL} must be >= 1, {ENV_TIMEOUT} > 0 and {ENV_SIMILAR_TTL} >= 0"
                f" (got {ttl}, {timeout}, {similar_ttl})"
            )
        return cls(url=url, ttl_seconds=ttl, timeout_seconds=timeout, similar_ttl_seconds=similar_ttl)


@dataclass(frozen=True)
class SimilarQuestion:
    """A similar-customers request: the customer, how many, and the evidence floor."""

    customer_id: str
    n: int
    min_events: int


@dataclass(frozen=True)
class ProfileRead:
    """A current profile (None: the customer has none) and the path that served it (``OUTCOMES``)."""

    profile: dict[str, Any] | None
    outcome: str


class CircuitBreaker:
    """Closed until ``failures_to_open`` calls in a row failed; then open (calls refused) for
    ``cooldown_seconds``; then one trial call at a time is let through, and its result closes or
    reopens the circuit. More than one failure opens it because a busy host (every CPU taken)
    makes single calls miss a short timeout now and then while Redis itself is fine."""

    def __init__(
        self,
        cooldown_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        failures_to_open: int = 3,
    ) -> None:
        if failures_to_open < 1:
            raise ValueError(f"failures_to_open must be >= 1, got {failures_to_open}")
        self.cooldown_seconds = cooldown_seconds
        self.failures_to_open = failures_to_open
        self._clock = clock
        self._lock = threading.Lock()
        self._open_until: float | None = None
        self._failures = 0

    def allow(self) -> bool:
        with self._lock:
            if self._open_until is None:
                return True
            now = self._clock()
            if now < self._open_until:
                return False
            self._open_until = now + self.cooldown_seconds  # this caller is the trial; others wait
            return True

    def succeeded(self) -> None:
        with self._lock:
            self._open_until = None
            self._failures = 0

    def failed(self) -> None:
        with self._lock:
            self._failures += 1
            # A failed trial (circuit already open) reopens it at once.
            if self._open_until is not None or self._failures >= self.failures_to_open:
                self._open_until = self._clock() + self.cooldown_seconds

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._open_until is not None


def encode_profile(profile: Mapping[str, Any]) -> str:
    """``Store.current_profile``'s dict as JSON (datetimes as ISO 8601, the embedding as base64)."""
    out = dict(profile)
    for field in _DATETIME_FIELDS:
        if isinstance(out.get(field), datetime):
            out[field] = out[field].isoformat()
    embedding = out.get("embedding")
    if embedding is not None:
        out["embedding"] = base64.b64encode(np.asarray(embedding, dtype="<f4").tobytes()).decode("ascii")
    return json.dumps(out, separators=(",", ":"), default=_plain)


def decode_profile(text: str | bytes) -> dict[str, Any]:
    """The inverse of ``encode_profile``."""
    profile: dict[str, Any] = json.loads(text)
    for field in _DATETIME_FIELDS:
        if isinstance(profile.get(field), str):
            profile[field] = datetime.fromisoformat(profile[field])
    if profile.get("embedding") is not None:
        raw = base64.b64decode(profile["embedding"])
        profile["embedding"] = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    return profile


def _plain(value: Any) -> Any:
    """numpy scalars as Python numbers (the JSON encoder's fallback)."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot cache a {type(value).__name__}")


class ProfileCache:
    """Read-through cache of ``Store.current_profile`` in Redis (thread-safe: one per process)."""

    def __init__(
        self,
        settings: CacheSettings,
        client: redis.Redis | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.breaker = CircuitBreaker(settings.cooldown_seconds)
        self._client = client if client is not None else _client_for(settings)
        self._clock = clock
        # schema -> (generation, active version, when it was read): see the module docstring
        self._active: dict[str, tuple[int, int | None, float]] = {}

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------------------- reads

    def current_profile(self, store: Store, customer_id: str) -> ProfileRead:
        """The customer's current profile, from Redis when cached under the active model.

        One round trip when this process knows a fresh active version: the generation and the
        key it would lead to are read together (MGET), and the value is used only if the
        generation is still the one the key was built from; else the generation is read first."""
        known = self._fresh_active(store.schema)
        if known is not None:
            key = _version_prefix(store.schema, *known) + customer_id
            both = self._redis(lambda r: r.mget([_generation_key(store.schema), key]))
            if both is _FAILED:
                return ProfileRead(store.current_profile(customer_id), FALLBACK)
            generation = int(both[0] or 0)
            if generation == known[0]:
                return self._served(store, customer_id, key, both[1])
        else:
            read = self._redis(lambda r: _generation(r, store.schema))
            if read is _FAILED:
                return ProfileRead(store.current_profile(customer_id), FALLBACK)
            generation = read
        version = self._active_version(store, generation)
        if version is None:
            return ProfileRead(store.current_profile(customer_id), UNCACHED)
        key = _version_prefix(store.schema, generation, version) + customer_id
        cached = self._redis(lambda r: r.get(key))
        if cached is _FAILED:
            return ProfileRead(store.current_profile(customer_id), FALLBACK)
        return self._served(store, customer_id, key, cached)

    def hit(self, schema: str, customer_id: str) -> dict[str, Any] | None:
        """The customer's cached profile when one Redis round trip settles it, else None.

        It settles it when this process knows a fresh active version for ``schema``, the circuit
        is closed, the generation has not moved and the key holds a value this code wrote. None
        means "ask ``current_profile``", which may read PostgreSQL; this never does, so an async
        caller can try it on its event loop and leave only the rest to a thread. A Redis failure
        counts towards the circuit breaker as in ``current_profile``."""
        cached = self._known_value(
            schema, lambda generation, version: _version_prefix(schema, generation, version) + customer_id
        )
        if cached is None:
            return None
        try:
            return decode_profile(cached)
        except (ValueError, TypeError, AttributeError):
            return None  # current_profile replaces it

    def _known_value(self, schema: str, key_of: Callable[[int, int], str]) -> bytes | None:
        """The value under ``key_of(generation, active version)`` for the pair this process knows,
        read with the generation in one MGET; None when no fresh pair is known, the circuit is
        open, Redis fails, the generation has moved or the key holds nothing."""
        known = self._fresh_active(schema)
        if known is None or self.breaker.is_open:
            return None
        both = self._redis(lambda r: r.mget([_generation_key(schema), key_of(*known)]))
        if both is _FAILED or int(both[0] or 0) != known[0] or both[1] is None:
            return None
        return bytes(both[1])

    def _served(self, store: Store, customer_id: str, key: str, cached: bytes | None) -> ProfileRead:
        """The profile Redis held under ``key`` (``cached``), else read from the Store and cached."""
        if cached is not None:
            try:
                return ProfileRead(decode_profile(cached), HIT)
            except (ValueError, TypeError, AttributeError) as exc:  # not written by this code: replaced
                log.warning("Ignoring an undecodable cached profile: %s", exc)
        profile = store.current_profile(customer_id)
        if profile is not None:
            # Under the key looked up before the read: a generation bump meanwhile leaves this
            # (possibly older) row in the abandoned key space; NX keeps a refresh's newer value.
            value, ttl = encode_profile(profile), self.settings.ttl_seconds
            self._redis(lambda r: r.set(key, value, ex=ttl, nx=True))
        return ProfileRead(profile, MISS)

    def _fresh_active(self, schema: str) -> tuple[int, int] | None:
        """(generation, active version) as this process last read them, unless older than
        ``active_ttl_seconds`` or without an active model."""
        known = self._active.get(schema)
        if known is None or known[1] is None or self._clock() - known[2] >= self.settings.active_ttl_seconds:
            return None
        return known[0], known[1]

    def _active_version(self, store: Store, generation: int) -> int | None:
        """The active model version: the one read for this generation unless older than
        ``active_ttl_seconds``, else from PostgreSQL."""
        now = self._clock()
        known = self._active.get(store.schema)
        if known is not None and known[0] == generation and now - known[2] < self.settings.active_ttl_seconds:
            return known[1]
        version = store.active_model_version()
        self._active[store.schema] = (generation, version, now)
        return version

    # --------------------------------------------------------------- similar-customers answers

    def similar_hit(self, schema: str, question: SimilarQuestion) -> bytes | None:
        """The cached answer to ``question`` when one Redis round trip settles it, else None:
        ``hit``'s rules (a fresh known active version, a closed circuit, an unmoved generation),
        and never a PostgreSQL query."""
        if not self.settings.similar_ttl_seconds:
            return None
        return self._known_value(
            schema, lambda generation, version: _similar_key(schema, generation, version, question)
        )

    def similar(
        self, store: Store, question: SimilarQuestion, answer: Callable[[], bytes]
    ) -> tuple[bytes, str]:
        """The answer to ``question`` (JSON bytes) and the path that served it (``OUTCOMES``):
        from Redis under the generation and active model, else ``answer()``, cached for
        ``similar_ttl_seconds`` (SET NX: an answer cached meanwhile is kept)."""
        if not self.settings.similar_ttl_seconds:
            return answer(), UNCACHED
        generation = self._redis(lambda r: _generation(r, store.schema))
        if generation is _FAILED:
            return answer(), FALLBACK
        version = self._active_version(store, generation)
        if version is None:
            return answer(), UNCACHED
        key = _similar_key(store.schema, generation, version, question)
        cached = self._redis(lambda r: r.get(key))
        if cached is _FAILED:
            return answer(), FALLBACK
        if cached is not None:
            return bytes(cached), HIT
        body, ttl = answer(), self.settings.similar_ttl_seconds
        self._redis(lambda r: r.set(key, body, ex=ttl, nx=True))
        return body, MISS

    # ------------------------------------------------------------------------------ writes

    def profiles_changed(
        self,
        store: Store,
        customer_ids: Sequence[str] | None = None,
        current: Mapping[str, dict[str, Any] | None] | None = None,
    ) -> str:
        """Make the cache agree with the Store after a committed write of these customers' profiles
        (None: any or all customers). ``current``: their ``Store.current_profiles`` as of that
        commit when the writer read them (``write_profiles(read_current=True)``), else read here.
        Never raises for Redis problems; returns what it did: ``refreshed``, ``invalidated``
        (generation bumped), ``skipped`` (circuit open) or ``failed``.
        """
        if not self.breaker.allow():
            return "skipped"  # the TTL bounds what Redis may still hold
        if customer_ids is None or len(customer_ids) > MAX_REFRESHED_CUSTOMERS:
            done = self._redis(lambda r: r.incr(_generation_key(store.schema)), check_breaker=False)
            return "failed" if done is _FAILED else "invalidated"
        known = self._fresh_active(store.schema)
        if known is None:
            generation = self._redis(lambda r: _generation(r, store.schema), check_breaker=False)
            if generation is _FAILED:
                return "failed"
            version = self._active_version(store, generation)
        else:
            generation, version = known
        if version is None:
            return "refreshed"  # nothing is cached without an active model
        if current is None:
            current = store.current_profiles(list(dict.fromkeys(customer_ids)))
        written = self._write(store.schema, generation, version, current)
        if written is not _FAILED and written != generation:
            # A promotion or a bulk write moved the generation: write under the current one.
            version = self._active_version(store, written)
            if version is None:
                return "refreshed"
            written = self._write(store.schema, written, version, current)
        return "failed" if written is _FAILED else "refreshed"

    def _write(
        self, schema: str, generation: int, version: int, profiles: Mapping[str, dict[str, Any] | None]
    ) -> Any:
        """``_write_profiles`` through ``_redis``: the current generation, or ``_FAILED``."""
        return self._redis(
            lambda r: self._write_profiles(r, schema, generation, version, profiles), check_breaker=False
        )

    def _write_profiles(
        self,
        r: redis.Redis,
        schema: str,
        generation: int,
        version: int,
        profiles: Mapping[str, dict[str, Any] | None],
    ) -> int:
        """Write ``profiles`` under (``generation``, ``version``) and read the current generation in
        the same round trip; returns it. Keys written under a generation that had moved meanwhile
        are never read, and expire by their TTL."""
        prefix = _version_prefix(schema, generation, version)
        pipe = r.pipeline(transaction=False)
        pipe.get(_generation_key(schema))
        for customer_id, profile in profiles.items():
            if profile is None:
                pipe.delete(prefix + customer_id)
            else:
                pipe.set(prefix + customer_id, encode_profile(profile), ex=self.settings.ttl_seconds)
        return int(pipe.execute()[0] or 0)

    # ---------------------------------------------------------------------------- plumbing

    def _redis(self, call: Callable[[redis.Redis], Any], *, check_breaker: bool = True) -> Any:
        """``call(client)``, or ``_FAILED`` when the circuit is open or Redis fails (which opens it)."""
        import redis

        if check_breaker and not self.breaker.allow():
            return _FAILED
        try:
            result = call(self._client)
        except redis.RedisError as exc:
            if not self.breaker.is_open:
                log.warning("Redis profile cache unavailable, reading PostgreSQL: %s", exc)
            self.breaker.failed()
            return _FAILED
        self.breaker.succeeded()
        return result


_FAILED: Final = object()


def _generation_key(schema: str) -> str:
    return f"traitflow:{KEY_FORMAT}:{schema}:generation"


def _generation(r: redis.Redis, schema: str) -> int:
    return int(r.get(_generation_key(schema)) or 0)


def _version_prefix(schema: str, generation: int, version: int) -> str:
    return f"traitflow:{KEY_FORMAT}:{schema}:g{generation}:v{int(version)}:"


def _similar_key(schema: str, generation: int, version: int, question: SimilarQuestion) -> str:
    return (
        f"traitflow:{SIMILAR_KEY_FORMAT}:{schema}:g{generation}:v{int(version)}:"
        f"{int(question.n)}:{int(question.min_events)}:{question.customer_id}"
    )


def _client_for(settings: CacheSettings) -> redis.Redis:
    """A client that gives up after one short timeout: no retries, no long connects."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        settings.url,
        socket_timeout=settings.timeout_seconds,
        socket_connect_timeout=settings.timeout_seconds,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
    )


_shared_lock = threading.Lock()
_shared: ProfileCache | None = None


def shared_cache() -> ProfileCache | None:
    """The process's cache for the current ``TRAITFLOW_REDIS_*`` settings (None: caching is off).
    Rebuilt when the settings change."""
    global _shared
    try:
        settings = CacheSettings.from_env()
    except ValueError as exc:  # a bad setting disables the cache; reads must not fail over it
        log.error("Redis profile cache disabled: %s", exc)
        settings = None
    with _shared_lock:
        if _shared is not None and _shared.settings != settings:
            _shared.close()
            _shared = None
        if settings is not None and _shared is None:
            _shared = ProfileCache(settings)
        return _shared


def cached_current_profile(store: Store, customer_id: str) -> ProfileRead:
    """``Store.current_profile`` through the process's cache (straight to the Store when it is off)."""
    cache = shared_cache()
    if cache is None:
        return ProfileRead(store.current_profile(customer_id), UNCACHED)
    return cache.current_profile(store, customer_id)


def cached_hit(store: Store, customer_id: str) -> dict[str, Any] | None:
    """``ProfileCache.hit`` through the process's cache (None when caching is off): a cached
    profile from one Redis round trip, never a PostgreSQL query."""
    cache = shared_cache()
    return None if cache is None else cache.hit(store.schema, customer_id)


def cached_similar_hit(store: Store, question: SimilarQuestion) -> bytes | None:
    """``ProfileCache.similar_hit`` through the process's cache (None when caching is off)."""
    cache = shared_cache()
    return None if cache is None else cache.similar_hit(store.schema, question)


def cached_similar(store: Store, question: SimilarQuestion, answer: Callable[[], bytes]) -> tuple[bytes, str]:
    """``ProfileCache.similar`` through the process's cache (``answer()``, uncached, when it is off)."""
    cache = shared_cache()
    if cache is None:
        return answer(), UNCACHED
    return cache.similar(store, question, answer)


def refreshes_rows(n_customers: int) -> bool:
    """Whether ``profiles_changed`` for ``n_customers`` customers caches their current rows
    (caching on, at most ``MAX_REFRESHED_CUSTOMERS``): only then does a writer read them for it
    (``write_profiles(read_current=True)``)."""
    return n_customers <= MAX_REFRESHED_CUSTOMERS and shared_cache() is not None


def profiles_changed(
    store: Store,
    customer_ids: Sequence[str] | None = None,
    current: Mapping[str, dict[str, Any] | None] | None = None,
) -> str:
    """Call after committing profile writes for ``customer_ids`` (None: any or all customers), so
    reads through the cache see them (``current``: see ``ProfileCache.profiles_changed``). A
    no-op (``off``) when caching is off; never raises for Redis."""
    cache = shared_cache()
    if cache is None:
        return "off"
    return cache.profiles_changed(store, customer_ids, current)
