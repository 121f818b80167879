"""URL handling, schema-name validation and the embedded server."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from traitflow.store import (
    Store,
    StoreError,
    mask_url,
    migrations,
    normalize_url,
    resolve_url,
    stop_embedded,
    validate_schema,
)
from traitflow.store import db as store_db


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@h:5432/d", "postgresql://u:p@h:5432/d"),
        ("postgres://u:p@h/d", "postgresql://u:p@h/d"),
        ("postgresql+psycopg://u@h/d?sslmode=disable", "postgresql://u@h/d?sslmode=disable"),
        ("PostgreSQL://h/d", "postgresql://h/d"),
    ],
)
def test_normalize_url_accepts_the_three_forms(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


@pytest.mark.parametrize(
    "url", ["mysql://h/d", "sqlite:///x.db", "host=h dbname=d", "postgresql+asyncpg://h/d"]
)
def test_normalize_url_rejects_other_schemes(url: str) -> None:
    with pytest.raises(ValueError, match=r"PostgreSQL URL|unsupported database URL scheme"):
        normalize_url(url)


def test_mask_url_hides_passwords_only() -> None:
    assert mask_url("postgresql://alice:s3cr%40t@db:5432/x") == "postgresql://alice:***@db:5432/x"
    assert mask_url("postgresql://alice@db/x") == "postgresql://alice@db/x"
    assert (
        mask_url("postgresql://postgres:@/postgres?host=/tmp/pg")
        == "postgresql://postgres:@/postgres?host=/tmp/pg"
    )
    masked = mask_url("postgresql://db/x?user=a&password=hunter2")
    assert "hunter2" not in masked and "password=%2A%2A%2A" in masked


@pytest.mark.parametrize("name", ["traitflow", "tf_test_1", "_x"])
def test_validate_schema_accepts_identifiers(name: str) -> None:
    assert validate_schema(name) == name


@pytest.mark.parametrize(
    "name", ["Traitflow", "x; DROP TABLE events", 'a"b', "", "1abc", "pg_catalog", "a" * 64, "ça", "a-b"]
)
def test_validate_schema_rejects_everything_else(name: str) -> None:
    with pytest.raises(ValueError, match="lower-case identifier"):
        validate_schema(name)
    with pytest.raises(ValueError, match="lower-case identifier"):
        Store("postgresql://nowhere.invalid/x", name)


def test_resolve_url_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAITFLOW_DATABASE_URL", "postgres://env@h/d")
    assert resolve_url("postgresql+psycopg://explicit@h/d") == "postgresql://explicit@h/d"
    assert resolve_url() == "postgresql://env@h/d"
    monkeypatch.setattr(store_db, "embedded_url", lambda: "postgresql://embedded@/x")
    monkeypatch.delenv("TRAITFLOW_DATABASE_URL")
    assert resolve_url() == "postgresql://embedded@/x"


def test_unreachable_database_gives_a_clear_error() -> None:
    with pytest.raises(StoreError, match=r"cannot connect to postgresql://u:\*\*\*@127.0.0.1:1/x"):
        Store("postgresql://u:secret@127.0.0.1:1/x?connect_timeout=2", "traitflow")


@pytest.fixture
def private_dir() -> Iterator[Path]:
    # mkdtemp, not tmp_path: see the note on pytest in traitflow.store.db
    path = Path(tempfile.mkdtemp(prefix="traitflow-embedded-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_embedded_server_starts_under_the_data_dir(
    private_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No URL anywhere -> pgserver under TRAITFLOW_DATA_DIR (as root it runs as user 'pgserver')."""
    monkeypatch.delenv("TRAITFLOW_DATABASE_URL", raising=False)
    monkeypatch.setenv("TRAITFLOW_DATA_DIR", str(private_dir / "data"))
    pgdata = private_dir / "data" / "pgdata"
    started = time.perf_counter()
    try:
        with Store(schema="tf_embedded_check") as store:
            assert time.perf_counter() - started < 10
            assert "host=" in store.url and str(private_dir) in store.url  # Unix socket in pgdata
            assert store.upgrade() == list(range(1, migrations.latest_version() + 1))
            assert store.table_counts()["events"] == 0
        assert (pgdata / "PG_VERSION").is_file()
        with psycopg.connect(resolve_url()) as conn:  # same server, attached again
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        stop_embedded(pgdata)
    assert not (pgdata / "postmaster.pid").exists()  # stopped cleanly


def test_session_settings(store: Store) -> None:
    conn = store.connection
    assert conn.execute("SHOW TimeZone").fetchone() == ("UTC",)
    path = conn.execute("SHOW search_path").fetchone()
    assert path is not None and path[0].startswith(store.schema)
    assert conn.autocommit
