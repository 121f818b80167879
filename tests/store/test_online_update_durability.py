"""An event post's ingest commits asynchronously; the post must not return before its WAL is
flushed (``traitflow.online_update``'s module docstring), on every way out.

A private server whose WAL writer flushes on its own at most every ``WAL_WRITER_DELAY`` (and no
background writer, autovacuum or checkpoint flushing WAL meanwhile): right after the writer's
own flush, a flush position at or past the ingest's commit when the post returns was asked for
by the post. The control case (the post's explicit flush disabled) shows the check fails when
the flush is missing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql

from traitflow import online_update
from traitflow.model import TraitflowModel
from traitflow.online_update import update_from_events
from traitflow.store import StaleModelError, Store, WriteReport
from traitflow.store.db import embedded_url, stop_embedded

WAL_WRITER_DELAY_S = 4
_QUIET_WAL = {
    "wal_writer_delay": f"{WAL_WRITER_DELAY_S}s",
    "wal_writer_flush_after": "1GB",  # the writer flushes by time only
    "bgwriter_lru_maxpages": "0",  # writing a dirty page out flushes the WAL up to it
    "autovacuum": "off",
    "checkpoint_timeout": "1h",
    "synchronous_commit": "on",
}
EVENT = {"customer_id": "ann", "event_time": "2024-01-09T08:00:00Z", "action": "cart", "product_id": "p1"}


@pytest.fixture(scope="module")
def quiet_wal_url() -> Iterator[str]:
    """A throw-away embedded server with ``_QUIET_WAL`` settings; stopped and deleted afterwards."""
    pgdata = Path(tempfile.mkdtemp(prefix="traitflow-wal-pg-")) / "pgdata"
    try:
        url = embedded_url(pgdata, delete_on_exit=True)
        with psycopg.connect(url, autocommit=True) as conn:
            for name, value in _QUIET_WAL.items():
                conn.execute(
                    sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value))
                )
            conn.execute("SELECT pg_reload_conf()")
        yield url
    finally:
        with contextlib.suppress(Exception):
            stop_embedded(pgdata)
        shutil.rmtree(pgdata.parent, ignore_errors=True)


@dataclasses.dataclass
class Wal:
    """An observer connection of its own: WAL positions as bytes from 0/0."""

    conn: psycopg.Connection

    def position(self, function: str) -> int:
        row = self.conn.execute(
            sql.SQL("SELECT {}() - '0/0'::pg_lsn").format(sql.Identifier(function))
        ).fetchone()
        assert row is not None
        return int(row[0])

    def writer_just_flushed(self) -> None:
        """Commit asynchronously and wait for the WAL writer's own flush of it: for about
        ``WAL_WRITER_DELAY_S`` after it, the writer flushes nothing by itself."""
        self.conn.execute("SET synchronous_commit TO off")
        self.conn.execute("SELECT pg_current_xact_id()")  # a commit record, not flushed by its commit
        self.conn.execute("SET synchronous_commit TO on")
        target = self.position("pg_current_wal_insert_lsn")
        deadline = time.monotonic() + 3 * WAL_WRITER_DELAY_S
        while self.position("pg_current_wal_flush_lsn") < target:
            assert time.monotonic() < deadline, "the WAL writer did not flush an asynchronous commit"
            time.sleep(0.02)


@pytest.fixture
def post_env(
    quiet_wal_url: str, build_model: Callable[..., TraitflowModel], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Store, Wal, list[int]]]:
    """(store on a fresh schema, observer, WAL insert positions right after each ingest)."""
    schema = f"tf_wal_{time.monotonic_ns()}"
    store = Store(quiet_wal_url, schema)
    store.upgrade()
    ingested: list[int] = []
    with psycopg.connect(quiet_wal_url, autocommit=True) as observer:
        wal = Wal(observer)

        def then_note_position(ingest: Callable[..., Any]) -> Callable[..., Any]:
            def ingest_then_note_position(*args: Any, **kwargs: Any) -> Any:
                answer = ingest(*args, **kwargs)
                ingested.append(wal.position("pg_current_wal_insert_lsn"))  # past the ingest's commit
                return answer

            return ingest_then_note_position

        # a post of a few customers ingests with its history read, others with ingest_events
        for name in ("ingest_events", "ingest_and_read_histories"):
            monkeypatch.setattr(store, name, then_note_position(getattr(store, name)))
        try:
            yield store, wal, ingested
        finally:
            store.drop_schema()
            store.close()


def _promote(store: Store, build_model: Callable[..., TraitflowModel]) -> int:
    model = build_model(trained_through=datetime(2024, 1, 7, tzinfo=UTC))
    vectors = np.random.default_rng(0).standard_normal(model.tokens.vectors.shape).astype(np.float32)
    version = store.save_model(
        dataclasses.replace(model, tokens=dataclasses.replace(model.tokens, vectors=vectors))
    )
    store.promote(version)
    return version


def _post_then_flushed(
    store: Store, wal: Wal, ingested: list[int], rows: list[dict[str, Any]]
) -> tuple[bool, Exception | None]:
    """Post ``rows`` right after the WAL writer's own flush: whether the WAL was flushed past the
    ingest's commit when the post returned or raised, and what it raised."""
    wal.writer_just_flushed()
    started = time.monotonic()
    raised: Exception | None = None
    try:
        update_from_events(store, rows, run_id="test")
    except Exception as error:
        raised = error
    flushed = wal.position("pg_current_wal_flush_lsn")
    assert time.monotonic() - started < WAL_WRITER_DELAY_S / 2, "too slow to tell who flushed"
    [position] = ingested[-1:]
    return flushed >= position, raised


def test_a_profiled_post_returns_flushed_by_its_profile_write(
    post_env: tuple[Store, Wal, list[int]], build_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, wal, ingested = post_env
    _promote(store, build_model)
    update_from_events(store, [EVENT], run_id="warm")  # loads the model: the timed post only posts
    flushes: list[None] = []
    flush = store.flush_wal
    monkeypatch.setattr(store, "flush_wal", lambda: flushes.append(flush()))
    later = {**EVENT, "event_time": "2024-01-09T09:00:00Z"}
    assert _post_then_flushed(store, wal, ingested, [later]) == (True, None)
    assert flushes == []  # the profile write's synchronous commit did it: one flush per post


def test_without_a_model_the_post_flushes_before_returning(post_env: tuple[Store, Wal, list[int]]) -> None:
    store, wal, ingested = post_env
    assert _post_then_flushed(store, wal, ingested, [EVENT]) == (True, None)


def test_the_check_fails_when_the_flush_is_missing(
    post_env: tuple[Store, Wal, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: the asynchronous ingest alone leaves the WAL unflushed past its commit."""
    store, wal, ingested = post_env
    monkeypatch.setattr(store, "flush_wal", lambda: None)
    assert _post_then_flushed(store, wal, ingested, [EVENT]) == (False, None)


def test_a_post_of_rejects_only_flushes_before_returning(post_env: tuple[Store, Wal, list[int]]) -> None:
    store, wal, ingested = post_env
    assert _post_then_flushed(store, wal, ingested, [{**EVENT, "action": "teleport"}]) == (True, None)
    assert store.table_counts()["rejected_events"] == 1


def test_a_skipped_stale_model_flushes_before_returning(
    post_env: tuple[Store, Wal, list[int]], build_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, wal, ingested = post_env
    version = _promote(store, build_model)

    def always_stale(batch: Any, **kwargs: Any) -> Any:
        raise StaleModelError(batch.as_of, version, version)

    monkeypatch.setattr(store, "write_profiles", always_stale)
    assert _post_then_flushed(store, wal, ingested, [EVENT]) == (True, None)


def test_a_write_that_changed_no_row_flushes_before_returning(
    post_env: tuple[Store, Wal, list[int]], build_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transaction that changed nothing has no commit record: its commit flushes nothing."""
    store, wal, ingested = post_env
    version = _promote(store, build_model)

    def changing_nothing(batch: Any, **_: Any) -> WriteReport:
        counts = store.event_counts(list(batch.customer_ids))  # what count_events=True answers
        return WriteReport(batch.as_of, version, len(batch.customer_ids), event_counts=counts)

    monkeypatch.setattr(store, "write_profiles", changing_nothing)
    assert _post_then_flushed(store, wal, ingested, [EVENT]) == (True, None)


def test_a_failing_post_flushes_before_raising(
    post_env: tuple[Store, Wal, list[int]], build_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, wal, ingested = post_env
    _promote(store, build_model)

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("profiling failed")

    monkeypatch.setattr(online_update, "profiles_from_embeddings", fail)
    flushed, raised = _post_then_flushed(store, wal, ingested, [EVENT])
    assert flushed and isinstance(raised, RuntimeError) and str(raised) == "profiling failed"
