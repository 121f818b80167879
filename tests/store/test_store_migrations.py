"""Versioned migrations: idempotent, concurrent-safe, strict about edited or unknown versions."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql

from traitflow.store import MigrationError, SchemaNotReadyError, Store, migrations, reads


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
        "customer_profiles", "customer_profile_history", "run_reports",
        "customer_trait_scores", "schema_migrations",
    ):  # fmt: skip
        assert table in names
    assert "customer_embeddings" not in names  # merged into customer_profiles (version 2)


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


def _upgrade_to(store: Store, version: int, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Apply pending migrations up to ``version`` only (later ones hidden while upgrading)."""
    shipped = migrations.available_migrations()[:version]
    with monkeypatch.context() as patch:
        patch.setattr(migrations, "available_migrations", lambda: shipped)
        return store.upgrade()


def _store_at_version_1(make_store: Callable[..., Store], monkeypatch: pytest.MonkeyPatch) -> Store:
    """A fresh schema migrated to version 1 only."""
    store = make_store(fresh=True)
    assert _upgrade_to(store, 1, monkeypatch) == [1]
    return store


def test_version_2_moves_the_embeddings_into_customer_profiles_without_losing_any(
    make_store: Callable[..., Store],
    monkeypatch: pytest.MonkeyPatch,
    build_profile_batch: Callable[..., Any],
) -> None:
    store = _store_at_version_1(make_store, monkeypatch)
    conn = store.connection
    # Data as version-1 code wrote it: one current profile and one current embedding per customer,
    # same as_of/model_version, each with its own updated_at; history rows; a model.
    with conn.transaction():
        version = conn.execute(
            "INSERT INTO model_versions (trained_through, status, promoted_at, format_version, n_tokens,"
            " vector_size, n_traits, params, center, population_profile, population_vector)"
            " VALUES (%s, 'active', now(), 1, 0, 5, 3, '{}', %s, %s, %s::real[]) RETURNING model_version",
            (datetime(2024, 1, 7, tzinfo=UTC), [0.0] * 5, [1 / 3] * 3, [0.0] * 5),
        ).fetchone()[0]
        for position, trait_id in enumerate((3, 7, 11), start=1):
            conn.execute(
                "INSERT INTO trait_components (model_version, position, trait_id, label, top_products,"
                " top_categories, component) VALUES (%s, %s, %s, 'x', '{}', '{}', '{1}')",
                (version, position, trait_id),
            )
    ids = ["c1", "o'brien", "emoji 🧑‍🚀", "x" * 256]
    batch = build_profile_batch(version, ids, seed=4)
    batch.embeddings[0, :2] = [np.float32(-0.0), np.float32(1e-45)]  # exact bits must survive
    stamps = [datetime(2024, 1, 11, tzinfo=UTC), datetime(2024, 1, 12, tzinfo=UTC)]
    with conn.transaction(), conn.cursor() as cur:
        for i, cid in enumerate(ids):
            profile_stamp, embedding_stamp = stamps if i % 2 else stamps[::-1]
            cur.execute(
                "INSERT INTO customer_profiles (customer_id, as_of, model_version, traits,"
                " dominant_trait_id, n_events, cold_start, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (cid, batch.as_of, version, batch.profiles[i].tolist(), 7, int(batch.n_events[i]),
                 batch.cold_start[i], profile_stamp),
            )  # fmt: skip
            cur.execute(
                "INSERT INTO customer_embeddings (customer_id, as_of, model_version, embedding, updated_at)"
                " VALUES (%s, %s, %s, %s::real[], %s)",
                (cid, batch.as_of, version, batch.embeddings[i].tolist(), embedding_stamp),
            )
            cur.execute(
                "INSERT INTO customer_profile_history (customer_id, as_of, model_version, traits,"
                " dominant_trait_id, n_events, cold_start) SELECT customer_id, as_of, model_version, traits,"
                " dominant_trait_id, n_events, cold_start FROM customer_profiles WHERE customer_id = %s",
                (cid,),
            )
    before = store.table_checksums()  # the version-1 tables (customer_embeddings is not listed)
    profile_columns = "customer_id, as_of, model_version, traits, dominant_trait_id, n_events, cold_start"
    profiles_before = conn.execute(f"SELECT {profile_columns} FROM customer_profiles ORDER BY 1").fetchall()

    assert _upgrade_to(store, 2, monkeypatch) == [2]
    assert store.schema_version() == 2
    after = store.table_checksums()
    for table in ("model_versions", "customer_profile_history", "events", "run_reports"):
        assert after[table] == before[table], table
    assert conn.execute(f"SELECT {profile_columns} FROM customer_profiles ORDER BY 1").fetchall() == (
        profiles_before
    )
    exists = conn.execute("SELECT to_regclass('customer_embeddings') IS NULL").fetchone()
    assert exists == (True,)
    with conn.cursor(binary=True) as cur:
        rows = cur.execute("SELECT customer_id, embedding, updated_at FROM customer_profiles").fetchall()
    merged = {row[0]: row[1:] for row in rows}
    for i, cid in enumerate(ids):
        embedding, updated_at = merged[cid]
        assert np.asarray(embedding, dtype=np.float32).tobytes() == batch.embeddings[i].tobytes()
        assert updated_at == stamps[1]  # the later of the two rows' stamps
    nullable = conn.execute(
        "SELECT is_nullable FROM information_schema.columns"
        " WHERE table_schema = %s AND table_name = 'customer_profiles' AND column_name = 'embedding'",
        (store.schema,),
    ).fetchone()
    assert nullable == ("NO",)
    # 3 packs the embeddings (its own test below checks the bits); later ones add tables.
    assert store.upgrade() == list(range(3, migrations.latest_version() + 1))
    # The merged rows move forward like any other current row.
    later = build_profile_batch(version, ids[:2], as_of=batch.as_of + timedelta(days=1), seed=5)
    report = store.write_profiles(later)
    assert (report.history_inserted, report.profiles_written) == (2, 2)
    assert store.current_profile(ids[0])["embedding"].tobytes() == later.embeddings[0].tobytes()
    assert store.current_profile(ids[2])["embedding"].tobytes() == batch.embeddings[2].tobytes()
    assert store.table_counts()["customer_profiles"] == len(ids)


def test_version_2_refuses_tables_that_disagree(
    make_store: Callable[..., Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store_at_version_1(make_store, monkeypatch)
    store.connection.execute(
        "INSERT INTO customer_profiles (customer_id, as_of, model_version, traits, dominant_trait_id,"
        " n_events, cold_start) VALUES ('lonely', now(), 1, '{1}', 1, 0, 'none')"
    )
    with pytest.raises(MigrationError, match=r"disagree.*'lonely'"):
        store.upgrade()
    assert store.schema_version() == 1  # rolled back: nothing merged, nothing dropped
    assert store.connection.execute("SELECT to_regclass('customer_embeddings') IS NOT NULL").fetchone() == (
        True,
    )


def test_version_3_packs_the_embeddings_bit_for_bit(
    make_store: Callable[..., Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store_at_version_1(make_store, monkeypatch)
    assert _upgrade_to(store, 2, monkeypatch) == [2]
    conn = store.connection
    rng = np.random.default_rng(7)
    special = np.array([-0.0, 1e-45, -2.5e-40, 3.4e38, -1.0, 0.1], dtype=np.float32)  # sign, subnormals
    embeddings = {
        "a": special,
        "b": rng.standard_normal(6).astype(np.float32),
        "c": rng.standard_normal(6).astype(np.float32) * np.float32(1e-30),
    }
    with conn.transaction(), conn.cursor() as cur:
        for cid, embedding in embeddings.items():
            cur.execute(
                "INSERT INTO customer_profiles (customer_id, as_of, model_version, traits, dominant_trait_id,"
                " n_events, cold_start, embedding) VALUES (%s, now(), 1, '{1}', 1, 0, 'none', %s::real[])",
                (cid, embedding.tolist()),
            )
    arrays_before = dict(
        conn.execute("SELECT customer_id, embedding::text FROM customer_profiles").fetchall()
    )

    assert _upgrade_to(store, 3, monkeypatch) == [3]
    with conn.cursor(binary=True) as cur:
        packed = dict(cur.execute("SELECT customer_id, embedding FROM customer_profiles").fetchall())
    for cid, embedding in embeddings.items():
        assert bytes(packed[cid]) == embedding.astype(">f4").tobytes(), cid
    # SQL consumers get the same real[] back, and the two functions are inverses.
    unpacked = dict(
        conn.execute("SELECT customer_id, embedding_array(embedding)::text FROM customer_profiles").fetchall()
    )
    assert unpacked == arrays_before
    assert conn.execute(
        "SELECT bool_and(embedding_bytes(embedding_array(embedding)) = embedding) FROM customer_profiles"
    ).fetchone() == (True,)
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE customer_profiles SET embedding = '\\x000000' WHERE customer_id = 'a'")
    # Half of each page is kept free for the weekly rewrite of every current row (HOT updates).
    options = conn.execute("SELECT reloptions FROM pg_class WHERE oid = 'customer_profiles'::regclass")
    assert options.fetchone() == (["fillfactor=50"],)


def test_version_5_records_the_evidence_of_new_profiles_and_leaves_old_ones_unknown(
    make_store: Callable[..., Store], monkeypatch: pytest.MonkeyPatch, build_model, build_profile_batch
) -> None:
    store = _store_at_version_1(make_store, monkeypatch)
    assert _upgrade_to(store, 4, monkeypatch) == [2, 3, 4]
    conn = store.connection
    as_of = datetime(2024, 1, 10, tzinfo=UTC)
    with conn.transaction(), conn.cursor() as cur:
        for cid in ("a", "b"):  # rows as version-4 code wrote them: no n_known_tokens yet
            for table in ("customer_profiles", "customer_profile_history"):
                extra = ", embedding" if table == "customer_profiles" else ""
                cur.execute(
                    f"INSERT INTO {table} (customer_id, as_of, model_version, traits, dominant_trait_id,"
                    f" n_events, cold_start{extra}) VALUES (%s, %s, 1, '{{1,0,0}}', 3, 4, 'none'"
                    + (", '\\x00000000'" if extra else "")
                    + ")",
                    (cid, as_of),
                )
    assert _upgrade_to(store, 5, monkeypatch) == [5]
    store.upgrade()  # the later migrations, which today's model writes need
    version = store.save_model(build_model())
    old = build_profile_batch(version, ["a", "b"], as_of=as_of, known_tokens=False)
    rows = conn.execute("SELECT customer_id, n_known_tokens FROM customer_profiles ORDER BY 1").fetchall()
    assert rows == [("a", None), ("b", None)]  # not recorded then: unknown, not guessed
    later = build_profile_batch(version, ["a", "c"], as_of=old.as_of + timedelta(days=1), seed=3)
    store.write_profiles(later)
    rows = dict(conn.execute("SELECT customer_id, n_known_tokens FROM customer_profiles").fetchall())
    assert rows == {"a": int(later.n_known_tokens[0]), "b": None, "c": int(later.n_known_tokens[1])}
    unknown = reads.current_profile(conn, "b")
    assert unknown is not None and (unknown["n_known_tokens"], unknown["confidence"]) == (None, None)
    similar = reads.similar_customers(conn, "a", min_events=0).set_index("customer_id")
    assert similar.loc["b", "n_known_tokens"] is None and similar.loc["b", "confidence"] is None
    history = conn.execute(
        "SELECT customer_id, n_known_tokens FROM customer_profile_history WHERE as_of = %s ORDER BY 1",
        (later.as_of,),
    ).fetchall()
    assert history == [("a", int(later.n_known_tokens[0])), ("c", int(later.n_known_tokens[1]))]
    # The view keeps its columns in place and appends the evidence.
    columns = conn.execute(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = %s AND table_name = 'customer_trait_scores' ORDER BY ordinal_position",
        (store.schema,),
    ).fetchall()
    assert [c for (c,) in columns] == [
        "customer_id", "as_of", "model_version", "trait_id", "label", "score",
        "n_events", "n_known_tokens", "cold_start",
    ]  # fmt: skip
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE customer_profiles SET n_known_tokens = n_events + 1 WHERE customer_id = 'a'")


def test_version_13_records_the_supersessions_written_as_reasons_only(
    make_store: Callable[..., Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(fresh=True)
    assert _upgrade_to(store, 12, monkeypatch) == list(range(1, 13))
    conn = store.connection
    reasons = {  # version: (status, status_reason) as version-12 code (or a person) wrote them
        1: ("rejected", "superseded by version 3 before its run promoted it"),
        2: ("rejected", "superseded by version 3 before its run promoted it."),  # not the wording
        3: ("rejected", "hit rate below the gate"),
        4: ("rejected", "superseded by version 99 before its run promoted it"),  # no version 99
        5: ("rejected", "superseded by version 3 before its run promoted it"),  # 3 is older
        6: ("staging", None),
        7: ("rejected", "superseded by version 03 before its run promoted it"),  # never written so
        8: ("rejected", "superseded by version 10 before its run promoted it"),
        9: ("rejected", "Superseded by version 10 before its run promoted it"),
        10: ("rejected", "drifted too far"),
    }
    with conn.transaction():
        for version, (status, reason) in reasons.items():
            inserted = conn.execute(
                "INSERT INTO model_versions (trained_through, status, status_reason, format_version,"
                " n_tokens, vector_size, n_traits, params, center, population_profile, population_vector)"
                " VALUES (%s, %s, %s, 1, 0, 2, 1, '{}', '{0,0}', '{1}', '{0,0}') RETURNING model_version",
                (datetime(2024, 1, 7, tzinfo=UTC), status, reason),
            ).fetchone()
            assert inserted == (version,)

    assert _upgrade_to(store, 13, monkeypatch) == [13]
    rows = conn.execute("SELECT model_version, superseded_by, status_reason FROM model_versions ORDER BY 1")
    recorded = {version: superseded for version, superseded, _ in rows.fetchall()}
    assert recorded == {1: 3, 2: None, 3: None, 4: None, 5: None, 6: None, 7: None, 8: 10, 9: None, 10: None}
    after = conn.execute("SELECT model_version, status, status_reason FROM model_versions ORDER BY 1")
    assert {v: (s, r) for v, s, r in after.fetchall()} == reasons  # the reasons stay, word for word
    store.upgrade()
    assert store.superseded_by(3) == [1] and store.superseded_by(10) == [8]
    assert store.superseded_by(9) == []
