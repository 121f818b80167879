"""Versioned migrations: idempotent, concurrent-safe, strict about edited or unknown versions."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from psycopg import sql

from traitflow.store import MigrationError, SchemaNotReadyError, Store, migrations


def test_migration_files_are_numbered_and_shipped() -> None:
    found = migrations.available_migrations()
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    assert found[0].name == "initial"
    assert "CREATE TABLE events" in found[0].sql
    code = "\n".join(line.split("--")[0] for line in found[0].sql.splitlines())
    assert "traitflow" not in code.lower()  # the schema comes from search_path, never the file


def test_upgrade_creates_everything_and_is_idempotent(make_store: Callable[..., Store]) -> None:
    store = make_store(fresh=True)
    assert store.schema_version() == 0
    assert store.upgrade() == [m.version for m in migrations.available_migrations()]
    before = store.table_checksums()
    assert store.upgrade() == []
    assert store.table_checksums() == before
    assert store.schema_version() == migrations.latest_version()
    rows = store.connection.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (store.schema,)
    ).fetchall()
    names = {r[0] for r in rows}
    for table in (
        "events", "ingested_files", "rejected_events", "model_versions", "token_vectors", "trait_components",
        "customer_embeddings", "customer_profiles", "customer_profile_history", "run_reports",
        "customer_trait_scores", "schema_migrations",
    ):  # fmt: skip
        assert table in names


def test_a_store_on_an_unmigrated_schema_says_what_to_do(make_store: Callable[..., Store]) -> None:
    store = make_store(fresh=True)
    with pytest.raises(SchemaNotReadyError, match="traitflow db upgrade"):
        store.table_counts()
    store.upgrade()
    assert store.table_counts()["events"] == 0


def test_concurrent_upgrades_apply_each_migration_once(make_store: Callable[..., Store]) -> None:
    first = make_store(fresh=True)
    stores = [first] + [Store(first.url, first.schema) for _ in range(3)]
    results: list[list[int]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(stores))

    def run(s: Store) -> None:
        try:
            barrier.wait()
            results.append(s.upgrade())
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores[1:]:
        s.close()
    assert not errors
    assert sorted(results, key=len) == [[], [], [], [m.version for m in migrations.available_migrations()]]
    count = first.connection.execute(
        sql.SQL("SELECT count(*) FROM {}.schema_migrations").format(sql.Identifier(first.schema))
    ).fetchone()
    assert count == (len(migrations.available_migrations()),)


def test_an_edited_applied_migration_is_refused(store: Store) -> None:
    store.connection.execute("UPDATE schema_migrations SET checksum = 'tampered' WHERE version = 1")
    with pytest.raises(MigrationError, match="changed after being applied"):
        store.upgrade()


def test_a_database_newer_than_the_code_is_refused(store: Store) -> None:
    store.connection.execute(
        "INSERT INTO schema_migrations (version, name, checksum) VALUES (999, 'future', 'x')"
    )
    with pytest.raises(MigrationError, match="does not know"):
        store.upgrade()


def test_schemas_are_isolated(make_store: Callable[..., Store], store: Store) -> None:
    other = make_store(fresh=True)
    other.upgrade()
    store.write_run_report("test", "k", {"a": 1})
    assert other.table_counts()["run_reports"] == 0
    assert store.table_counts()["run_reports"] == 1
