"""Timeouts: a frozen database fails a write within the client deadline, and the retry succeeds.

The frozen-server test runs its own throw-away embedded PostgreSQL (never the shared test
server): it stops the postmaster and every backend with SIGSTOP in the middle of a write
transaction, which is what a hung host or storage looks like from the client (the kernel keeps
ACKing, the server enforces nothing). It is always resumed, stopped and deleted in ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from traitflow.config import ConfigError
from traitflow.model import TraitflowModel
from traitflow.profile_batch import ProfileBatch
from traitflow.store import DatabaseTimeoutError, Store, StoreError, Timeouts, embedded_url, stop_embedded
from traitflow.store import profiles as store_profiles

BuildModel = Callable[..., TraitflowModel]
BuildBatch = Callable[..., ProfileBatch]
IDS = [f"c{i}" for i in range(50)]
CLIENT_S = 3.0


def _process_tree(root: int) -> list[int]:
    """``root`` and its direct children (the postmaster's backends and auxiliary processes)."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # exited meanwhile
        if int(stat.rsplit(")", 1)[1].split()[1]) == root:
            children.append(int(entry))
    return [root, *children]


@pytest.fixture
def private_server() -> Iterator[tuple[str, Path]]:
    """A throw-away embedded server: (url, pgdata); always stopped and deleted afterwards."""
    pgdata = Path(tempfile.mkdtemp(prefix="traitflow-stall-pg-")) / "pgdata"
    try:
        yield embedded_url(pgdata, delete_on_exit=True), pgdata
    finally:
        pid_file = pgdata / "postmaster.pid"
        if pid_file.is_file():  # never leave a stopped server behind, whatever the test did
            for pid in _process_tree(int(pid_file.read_text().split()[0])):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        stop_embedded(pgdata)
        shutil.rmtree(pgdata.parent, ignore_errors=True)


def _profile_rows(store: Store) -> list[tuple]:
    return store.connection.execute(
        "SELECT customer_id, as_of, model_version, traits, n_events, cold_start FROM customer_profiles"
        " ORDER BY customer_id"
    ).fetchall()


def test_a_frozen_server_fails_the_write_within_the_deadline_and_the_retry_succeeds(
    private_server: tuple[str, Path],
    build_model: BuildModel,
    build_profile_batch: BuildBatch,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, pgdata = private_server
    timeouts = Timeouts(statement_s=60, client_s=CLIENT_S)
    store = Store(url, "tf_stall", timeouts=timeouts)
    clean = Store(url, "tf_clean", timeouts=timeouts)
    try:
        for s in (store, clean):
            s.upgrade()
            s.promote(s.save_model(build_model()))
        version = store.active_model_version()
        assert version == clean.active_model_version()
        batch = build_profile_batch(version, IDS)
        clean.write_profiles(build_profile_batch(version, IDS))

        frozen: list[int] = []
        original = store_profiles.write_profiles

        def freeze_then_write(conn: psycopg.Connection, profiles: ProfileBatch, **options):
            # Inside the write transaction (BEGIN has been sent): the server freezes mid-write.
            frozen.extend(_process_tree(int((pgdata / "postmaster.pid").read_text().split()[0])))
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            return original(conn, profiles, **options)

        monkeypatch.setattr(store_profiles, "write_profiles", freeze_then_write)
        started = time.monotonic()
        with pytest.raises(DatabaseTimeoutError, match=r"did not answer within 3 s") as failure:
            store.write_profiles(batch)
        elapsed = time.monotonic() - started
        assert CLIENT_S <= elapsed < CLIENT_S + 5, elapsed
        assert "retry" in str(failure.value).lower()
        # A task that starts while the server is frozen fails at connect, within connect_timeout.
        started = time.monotonic()
        with pytest.raises(StoreError, match="cannot connect"):
            Store(url, "tf_stall", timeouts=Timeouts(connect_s=2, client_s=CLIENT_S))
        assert time.monotonic() - started < 2 + 3

        monkeypatch.setattr(store_profiles, "write_profiles", original)
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        report = store.write_profiles(batch)  # the retry, on a new connection
        assert report is not None
        assert _profile_rows(store) == _profile_rows(clean)
        counts, clean_counts = store.table_counts(), clean.table_counts()
        assert counts == clean_counts
        assert len(_profile_rows(store)) == len(IDS)
    finally:
        store.close()
        clean.close()


def test_statement_and_lock_timeouts_are_set_on_every_connection(
    database_url: str, store_schema: str
) -> None:
    store = Store(database_url, store_schema, timeouts=Timeouts(statement_s=1234, lock_s=2.5))
    try:
        conn = store.connection
        assert conn.execute("SHOW statement_timeout").fetchone() == ("1234s",)
        assert conn.execute("SHOW lock_timeout").fetchone() == ("2500ms",)
        parameters = conn.info.get_parameters()  # keepalives act on TCP only; always requested
        assert (parameters["keepalives_idle"], parameters["tcp_user_timeout"]) == ("30", "80000")
    finally:
        store.close()


def test_a_held_lock_fails_a_write_after_the_lock_timeout(
    store: Store, build_model: BuildModel, store_schema: str, database_url: str
) -> None:
    store.promote(store.save_model(build_model()))
    blocked = Store(database_url, store_schema, timeouts=Timeouts(lock_s=1))
    try:
        with store.connection.transaction():
            store.connection.execute("LOCK TABLE model_versions IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            with pytest.raises(psycopg.errors.LockNotAvailable):
                blocked.save_model(build_model())
            assert time.monotonic() - started < 10
    finally:
        blocked.close()


def test_timeouts_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAITFLOW_STATEMENT_TIMEOUT_S", "90")
    monkeypatch.setenv("TRAITFLOW_LOCK_TIMEOUT_S", "7")
    monkeypatch.setenv("TRAITFLOW_KEEPALIVES_IDLE_S", "11")
    timeouts = Timeouts.from_env()
    assert (timeouts.statement_s, timeouts.lock_s, timeouts.keepalives_idle_s) == (90, 7, 11)
    assert timeouts.client_deadline_s == 150  # statement timeout + 60 s
    assert timeouts.libpq_options()["tcp_user_timeout"] == 1000 * (11 + 10 * 5)
    monkeypatch.setenv("TRAITFLOW_CLIENT_TIMEOUT_S", "0")
    assert Timeouts.from_env().client_deadline_s is None  # 0 = off
    monkeypatch.setenv("TRAITFLOW_LOCK_TIMEOUT_S", "five")
    with pytest.raises(ConfigError, match="TRAITFLOW_LOCK_TIMEOUT_S"):
        Timeouts.from_env()
    assert Timeouts().client_deadline_s == 1860  # defaults: 30 min statements + 60 s
