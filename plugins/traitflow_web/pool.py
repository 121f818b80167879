"""Pooled ``traitflow.store.Store`` objects: each request borrows one, used by it alone.

The database is resolved like the DAGs resolve it (``traitflow.connections.database_url``): the
Airflow Connection ``traitflow_db``, else ``TRAITFLOW_DATABASE_URL``, else the embedded
PostgreSQL under ``TRAITFLOW_DATA_DIR``; schema ``TRAITFLOW_DB_SCHEMA`` (default ``traitflow``).
The URL is looked up on the first request and re-read every ``URL_TTL_SECONDS`` (connection
edits apply without a restart); at most ``MAX_IDLE_STORES`` idle connections are kept.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import Depends, HTTPException, status
from fastapi.concurrency import run_in_threadpool

from .errors import http_error, is_db_failure

log = logging.getLogger(__name__)

URL_TTL_SECONDS = 60.0
# A request that finds no idle Store opens a new PostgreSQL connection (several ms). The
# api-server runs sync routes on a thread pool of 40, so under concurrent load a small pool means
# a connect per request; 16 per worker process keeps the common case warm.
MAX_IDLE_STORES = 16

# (database URL or None for the embedded server, schema): what a pooled Store is connected to
StoreKey = tuple[str | None, str]


class StorePool:
    """Idle ``Store`` objects for the current (url, schema), reused by later requests.

    ``acquire`` hands a Store to one request; ``release`` keeps it (up to ``max_idle``) unless
    the request failed with a database error or the settings changed meanwhile.
    """

    def __init__(self, max_idle: int = MAX_IDLE_STORES, ttl_seconds: float = URL_TTL_SECONDS) -> None:
        self.max_idle = max_idle
        self.ttl_seconds = ttl_seconds
        self._lock = threading.Lock()
        self._create_lock = threading.Lock()  # the embedded server must not be started twice at once
        self._idle: list[Any] = []
        self._key: StoreKey | None = None
        self._key_read_at = 0.0

    def settings(self) -> StoreKey:
        """(database URL or None for the embedded server, schema); cached for ``ttl_seconds``."""
        from traitflow.config import db_schema
        from traitflow.connections import database_url

        with self._lock:
            now = time.monotonic()
            if self._key is None or now - self._key_read_at > self.ttl_seconds:
                key = (database_url(), db_schema())
                if key != self._key:
                    self._close_idle()
                self._key, self._key_read_at = key, now
            return self._key

    def take_idle(self) -> tuple[Any, StoreKey] | None:
        """An idle Store while the settings are fresh, without any I/O; else None (``acquire``)."""
        with self._lock:
            fresh = self._key is not None and time.monotonic() - self._key_read_at <= self.ttl_seconds
            if fresh and self._idle:
                assert self._key is not None  # for mypy: fresh says so
                return self._idle.pop(), self._key
        return None

    def acquire(self) -> tuple[Any, StoreKey]:
        key = self.settings()
        with self._lock:
            if self._idle and self._key == key:
                return self._idle.pop(), key
        from traitflow.store import Store

        with self._create_lock:
            return Store(key[0], key[1]), key

    def keep(self, store: Any, key: StoreKey, reusable: bool) -> bool:
        """Take ``store`` back as idle (no I/O); False: not kept, the caller closes it."""
        with self._lock:
            if reusable and key == self._key and len(self._idle) < self.max_idle:
                self._idle.append(store)
                return True
        return False

    def release(self, store: Any, key: StoreKey, reusable: bool) -> None:
        if not self.keep(store, key, reusable):
            store.close()

    def _close_idle(self) -> None:
        idle, self._idle = self._idle, []
        for store in idle:
            store.close()

    def clear(self) -> None:
        """Close idle connections and forget the settings (shutdown, tests)."""
        with self._lock:
            self._close_idle()
            self._key = None


POOL = StorePool()


def acquire_store() -> tuple[Any, StoreKey]:
    """A pooled Store; settings/connection problems (bad URL, server down) become 503."""
    try:
        return POOL.acquire()
    except Exception as exc:
        log.warning("Traitflow plugin cannot open the database: %s", exc)
        detail = http_error(exc) or HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"Traitflow database is not configured correctly: {exc}"
        )
        raise detail from exc


@contextmanager
def borrow_store() -> Iterator[Any]:
    """A pooled Store for one request, returned to the pool unless a database error happened."""
    store, key = acquire_store()
    reusable = False
    try:
        yield store
        reusable = True
    except Exception as exc:
        reusable = not (is_db_failure(exc) or is_db_failure(exc.__cause__))
        raise
    finally:
        POOL.release(store, key, reusable)


async def get_store() -> AsyncIterator[Any]:
    """FastAPI dependency: a pooled ``Store``, returned to the pool unless a database error
    happened; store errors raised by the endpoint become 404/503. Taking an idle Store and
    giving it back need no I/O, so they stay on the event loop (a trip to the thread pool and
    back costs every request time); opening and closing connections run in the thread pool."""
    taken = POOL.take_idle()
    store, key = taken if taken is not None else await run_in_threadpool(acquire_store)
    reusable = False
    try:
        yield store
        reusable = True
    except Exception as exc:
        reusable = not (is_db_failure(exc) or is_db_failure(exc.__cause__))
        translated = http_error(exc)
        if translated is None or translated is exc:
            raise
        raise translated from exc
    finally:
        if not POOL.keep(store, key, reusable):
            await run_in_threadpool(store.close)


StoreDep = Annotated[Any, Depends(get_store)]
