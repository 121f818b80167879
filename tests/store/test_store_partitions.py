"""The profile history by month (migration 0010, ``traitflow.store.partitions``): the in-place
conversion of a populated table, months created ahead and by writes, retention."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from traitflow.runs import HistoryResult
from traitflow.store import Store, migrations, partitions

HISTORY = "customer_profile_history"
# Instants of history rows, each with the month partition it belongs to: month boundaries to the
# microsecond, and an instant written with another offset whose UTC month differs from its local one.
EDGE_ROWS = {
    "2025-11-30 23:59:59.999999+00": "2025_11",
    "2025-12-01 00:00:00+00": "2025_12",
    "2026-01-01 00:30:00+01": "2025_12",  # 2025-12-31 23:30 UTC
    "2026-02-28 23:59:59.999999+00": "2026_02",
    "2026-03-01 00:00:00+00": "2026_03",
}
INSERT_ROW = (
    "INSERT INTO customer_profile_history (customer_id, as_of, model_version, traits, dominant_trait_id,"
    " n_events, cold_start, n_known_tokens) VALUES (%s, %s, 1, %s, 7, %s, %s, %s)"
)


def _partitions_of_rows(conn: psycopg.Connection) -> dict[str, int]:
    """``{partition: rows}`` as the rows are stored (``tableoid``)."""
    rows = conn.execute(
        "SELECT tableoid::regclass::text, count(*) FROM customer_profile_history GROUP BY 1"
    ).fetchall()
    return {name: int(n) for name, n in rows}


def _counts(conn: psycopg.Connection, tables: Iterable[str]) -> dict[str, int]:
    """Exact row counts of ``tables`` (names from the store's own table list)."""
    counts = {}
    for table in tables:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
        counts[table] = int(row[0]) if row else -1
    return counts


def _constraints(conn: psycopg.Connection) -> set[tuple[str, str, str]]:
    rows = conn.execute(
        "SELECT conname, contype::text, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = 'customer_profile_history'::regclass"
    ).fetchall()
    return {tuple(r) for r in rows}


def _fill_history_at_version_8(conn: psycopg.Connection) -> None:
    """History rows as version-8 code wrote them: 40 customers daily over four months (bulk),
    awkward ids and values, the month-boundary instants of EDGE_ROWS."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO customer_profile_history (customer_id, as_of, model_version, traits,"
            " dominant_trait_id, n_events, cold_start, n_known_tokens)"
            " SELECT 'c' || lpad(c::text, 3, '0'), timestamptz '2025-11-03 00:00+00' + d * interval '1 day',"
            "  1, ARRAY[c / 40.0, d / 120.0, 0.1 + 0.2], c % 3 + 3, c + d,"
            "  (ARRAY['none', 'few_tokens', 'no_history'])[1 + (c + d) % 3],"
            "  CASE WHEN d < 30 THEN NULL ELSE (c + d) / 2 END"
            " FROM generate_series(1, 40) AS c, generate_series(0, 110, 3) AS d"
        )
        odd_ids = ["o'brien", "emoji 🧑‍🚀", "x" * 256, "tab\there"]
        for i, (instant, _) in enumerate(EDGE_ROWS.items()):
            for cid in odd_ids:
                traits = [-0.0, 5e-324, float("nan"), 1.0 / 3]
                conn.execute(INSERT_ROW, (cid, instant, traits, 3 + i, "few_tokens", None if i % 2 else i))


def test_version_10_partitions_a_populated_history_in_place_without_losing_a_row(
    make_store: Callable[..., Store],
    build_model: Callable[..., Any],
    build_profile_batch: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = make_store(fresh=True)
    assert store.upgrade(target=8) == list(range(1, 9))
    conn = store.connection
    _fill_history_at_version_8(conn)
    with monkeypatch.context() as patch:  # the store's audit read, on a schema at version 8
        shipped = migrations.available_migrations()[:8]
        patch.setattr(migrations, "available_migrations", lambda: shipped)
        before = store.table_checksums()  # the tables that exist at version 8
        store._ready = False  # ready for version 8 only
    del before["schema_migrations"]
    counts_before = _counts(conn, before)
    constraints_before = _constraints(conn)
    assert counts_before[HISTORY] == 40 * 37 + 4 * len(EDGE_ROWS)
    # Month boundaries must not depend on the session's time zone.
    conn.execute("SET TimeZone = 'America/New_York'")

    applied = store.upgrade()
    assert 10 in applied and store.schema_version() == migrations.latest_version()
    conn.execute("SET TimeZone = 'UTC'")
    after = store.table_checksums()
    assert {table: after[table] for table in before} == before  # every table, the history row for row
    assert _counts(conn, before) == counts_before
    relkind = conn.execute(
        "SELECT relkind::text FROM pg_class WHERE oid = 'customer_profile_history'::regclass"
    )
    assert relkind.fetchone() == ("p",)
    assert _constraints(conn) == constraints_before  # same names, same definitions
    assert conn.execute("SELECT to_regclass('customer_profile_history_unpartitioned')").fetchone() == (None,)
    months = ["2025_11", "2025_12", "2026_01", "2026_02", "2026_03"]
    assert list(partitions.history_partitions(conn)) == [f"{HISTORY}_{m}" for m in months]
    for instant, month in EDGE_ROWS.items():
        where = conn.execute(
            "SELECT DISTINCT tableoid::regclass::text FROM customer_profile_history WHERE as_of = %s",
            (instant,),
        ).fetchall()
        assert where == [(f"{HISTORY}_{month}",)], instant
    # Each partition's rows lie inside its month (UTC), and the counts add up.
    bounds = conn.execute(
        "SELECT tableoid::regclass::text, min(as_of), max(as_of), count(*) FROM customer_profile_history"
        " GROUP BY 1"
    ).fetchall()
    for name, lowest, highest, _ in bounds:
        start = partitions.month_of(name)
        assert start is not None and start <= lowest and highest < partitions.add_months(start, 1), name
    assert sum(int(n) for *_, n in bounds) == counts_before[HISTORY]

    # The constraints hold on the partitioned table.
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(INSERT_ROW, ("c001", "2025-11-03 00:00+00", [1.0], 1, "none", 0))
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(INSERT_ROW, ("new", "2025-11-04 00:00+00", [1.0], 1, "none", 2))  # known > events
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(INSERT_ROW, ("new", "2025-11-04 00:00+00", [1.0], 1, "warm", 0))
    # No DEFAULT partition: a month nobody created refuses rows instead of hiding them.
    with pytest.raises(psycopg.errors.CheckViolation, match="no partition"):
        conn.execute(INSERT_ROW, ("new", "2027-05-01 00:00+00", [1.0], 1, "none", 0))

    # Writes work: a re-run of a stored date replaces in place; a new month gets its partition.
    version = store.save_model(build_model())
    rerun = build_profile_batch(version, ["c001", "c002"], as_of=datetime(2025, 11, 3, tzinfo=UTC))
    report = store.write_profiles(rerun)
    assert (report.history_inserted, report.history_replaced) == (0, 2)
    later = build_profile_batch(version, ["c001", "zz-new"], as_of=datetime(2026, 6, 10, tzinfo=UTC))
    report = store.write_profiles(later)
    assert report.history_inserted == 2
    assert f"{HISTORY}_2026_06" in partitions.history_partitions(conn)
    assert _partitions_of_rows(conn)[f"{HISTORY}_2026_06"] == 2
    assert store.table_counts()[HISTORY] == counts_before[HISTORY] + 2
    history = store.profile_history("c001")
    assert list(history["as_of"]) == sorted(history["as_of"]) and len(history) == 37 + 1


def test_an_empty_history_converts_to_a_parent_without_partitions(make_store: Callable[..., Store]) -> None:
    store = make_store(fresh=True)
    store.upgrade()
    assert partitions.history_partitions(store.connection) == {}
    assert store.table_counts()[HISTORY] == 0


def test_upgrade_to_an_unknown_target_is_refused(make_store: Callable[..., Store]) -> None:
    store = make_store(fresh=True)
    with pytest.raises(migrations.MigrationError, match="no migration version 999"):
        store.upgrade(target=999)
    assert store.schema_version() == 0


def test_partition_names_and_bounds_come_from_utc_months() -> None:
    assert partitions.partition_name(datetime(2026, 1, 31, 23, 59, tzinfo=UTC)) == f"{HISTORY}_2026_01"
    east = datetime(2026, 2, 1, 0, 30, tzinfo=UTC) + timedelta(hours=1)  # still February
    assert partitions.partition_name(east) == f"{HISTORY}_2026_02"
    assert partitions.add_months(datetime(2026, 11, 1, tzinfo=UTC), 3) == datetime(2027, 2, 1, tzinfo=UTC)
    assert partitions.add_months(datetime(2026, 1, 1, tzinfo=UTC), -13) == datetime(2024, 12, 1, tzinfo=UTC)
    assert partitions.month_of(f"{HISTORY}_2026_13") is None
    assert partitions.month_of(f"{HISTORY}_2026_01_old") is None
    assert partitions.month_of(f"{HISTORY}_2026_01") == datetime(2026, 1, 1, tzinfo=UTC)


def test_ensure_history_partitions_creates_missing_months_once(store: Store) -> None:
    created = store.ensure_history_partitions(datetime(2026, 11, 20, tzinfo=UTC), months_ahead=2)
    assert created == [f"{HISTORY}_2026_11", f"{HISTORY}_2026_12", f"{HISTORY}_2027_01"]
    assert store.ensure_history_partitions(datetime(2026, 11, 1, tzinfo=UTC), months_ahead=2) == []
    assert store.ensure_history_partitions(datetime(2026, 12, 5, tzinfo=UTC), months_ahead=2) == [
        f"{HISTORY}_2027_02"
    ]
    conn = store.connection
    for instant, month in [
        ("2026-11-30 23:59:59.999999+00", "2026_11"),
        ("2027-01-01 00:00:00+00", "2027_01"),
        ("2027-03-01 00:59:00+01", "2027_02"),
    ]:
        conn.execute(INSERT_ROW, ("c", instant, [1.0], 1, "none", 0))
        assert conn.execute(
            "SELECT tableoid::regclass::text FROM customer_profile_history WHERE as_of = %s", (instant,)
        ).fetchone() == (f"{HISTORY}_{month}",)
    # A created month is a full member: its own primary key, the parent's CHECKs.
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(INSERT_ROW, ("c", "2027-01-01 00:00:00+00", [1.0], 1, "none", 0))
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(INSERT_ROW, ("d", "2027-01-01 00:00:00+00", [1.0], 1, "none", 5))
    with pytest.raises(ValueError, match="months_ahead"):
        store.ensure_history_partitions(datetime(2026, 1, 1, tzinfo=UTC), months_ahead=-1)


def _fill_months(store: Store) -> dict[str, int]:
    """History rows in Jan..Jun 2026, month k (1-based) with 10 * k rows plus one row on each side
    of the Feb/Mar boundary; returns ``{partition: rows}``."""
    store.ensure_history_partitions(datetime(2026, 1, 1, tzinfo=UTC), months_ahead=5)
    conn = store.connection
    with conn.transaction():
        for month in range(1, 7):
            for i in range(10 * month):
                conn.execute(
                    INSERT_ROW, (f"c{i}", datetime(2026, month, 2, i % 24, tzinfo=UTC), [1.0], 1, "none", 0)
                )
        conn.execute(INSERT_ROW, ("edge", "2026-02-28 23:59:59.999999+00", [1.0], 1, "none", 0))
        conn.execute(INSERT_ROW, ("edge", "2026-03-01 00:00:00+00", [1.0], 1, "none", 0))
    return _partitions_of_rows(conn)


def test_retention_drops_exactly_the_expired_months_and_says_what_it_dropped(store: Store) -> None:
    per_month = _fill_months(store)
    assert per_month[f"{HISTORY}_2026_02"] == 21 and per_month[f"{HISTORY}_2026_03"] == 31
    conn = store.connection
    kept_rows = "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM customer_profile_history t"
    kept_before = conn.execute(kept_rows + " WHERE as_of >= '2026-03-01 00:00+00'").fetchone()

    # Three months before June: March, April, May and June stay; January and February go.
    dropped = store.drop_expired_history(3, datetime(2026, 6, 15, tzinfo=UTC))
    assert [(d.name, d.month, d.rows) for d in dropped] == [
        (f"{HISTORY}_2026_01", datetime(2026, 1, 1, tzinfo=UTC), 10),
        (f"{HISTORY}_2026_02", datetime(2026, 2, 1, tzinfo=UTC), 21),
    ]
    assert _partitions_of_rows(conn) == {k: v for k, v in per_month.items() if k >= f"{HISTORY}_2026_03"}
    assert conn.execute(kept_rows).fetchone() == kept_before  # the kept rows are untouched
    assert conn.execute("SELECT min(as_of) FROM customer_profile_history").fetchone() == (
        datetime(2026, 3, 1, tzinfo=UTC),
    )
    assert store.drop_expired_history(3, datetime(2026, 6, 30, tzinfo=UTC)) == []  # idempotent
    assert store.drop_expired_history(0, datetime(2030, 1, 1, tzinfo=UTC)) == []  # 0 keeps everything
    assert sum(_partitions_of_rows(conn).values()) == sum(per_month.values()) - 31
    # The first day of a month moves the cutoff by a whole month: March goes on July 1st.
    dropped = store.drop_expired_history(3, datetime(2026, 7, 1, tzinfo=UTC))
    assert [(d.name, d.rows) for d in dropped] == [(f"{HISTORY}_2026_03", 31)]
    for bad in (-1, True, 1.5, "3"):
        with pytest.raises(ValueError, match="retention_months"):
            store.drop_expired_history(bad, datetime(2026, 7, 1, tzinfo=UTC))  # type: ignore[arg-type]


def test_retention_leaves_partitions_of_other_names_alone(store: Store) -> None:
    _fill_months(store)
    conn = store.connection
    conn.execute(
        "CREATE TABLE customer_profile_history_archive PARTITION OF customer_profile_history"
        " FOR VALUES FROM ('2000-01-01+00') TO ('2001-01-01+00')"
    )
    dropped = store.drop_expired_history(1, datetime(2026, 6, 15, tzinfo=UTC))
    assert [d.name for d in dropped] == [f"{HISTORY}_2026_0{m}" for m in range(1, 5)]
    assert conn.execute("SELECT to_regclass('customer_profile_history_archive')").fetchone() != (None,)


def test_maintenance_records_its_outcome_in_the_run_report_in_the_same_transaction(store: Store) -> None:
    per_month = _fill_months(store)
    store.write_run_report("daily", "2026-06-15T00:00:00+00:00", {"outcome": "updated", "n_profiles": 3})
    done = store.maintain_history(
        datetime(2026, 6, 15, tzinfo=UTC), 4, months_ahead=2, report=("daily", "2026-06-15T00:00:00+00:00")
    )
    assert done.created == (f"{HISTORY}_2026_07", f"{HISTORY}_2026_08")
    assert [d.name for d in done.dropped] == [f"{HISTORY}_2026_01"]
    assert done.cutoff == datetime(2026, 2, 1, tzinfo=UTC)
    report = store.run_reports("daily")[0]["report"]
    assert report == {"outcome": "updated", "n_profiles": 3, "history": done.to_dict()}
    assert report["history"]["dropped"] == {f"{HISTORY}_2026_01": per_month[f"{HISTORY}_2026_01"]}
    assert report["history"]["rows_dropped"] == 10
    # The XCom result reads the stored form back field for field.
    result = HistoryResult.from_xcom(report["history"])
    assert result.to_xcom() == done.to_dict() and result.cutoff == "2026-02-01T00:00:00+00:00"

    # A failure inside the transaction leaves every month in place and the report as it was.
    with pytest.raises(ValueError, match="kind and run_key"):
        store.maintain_history(datetime(2026, 6, 15, tzinfo=UTC), 1, report=("daily", ""))
    assert f"{HISTORY}_2026_02" in partitions.history_partitions(store.connection)
    assert store.run_reports("daily")[0]["report"] == report


def test_creating_a_month_blocks_neither_reads_nor_writes_of_the_history(
    store: Store, make_store: Callable[..., Store]
) -> None:
    store.ensure_history_partitions(datetime(2026, 1, 1, tzinfo=UTC), months_ahead=0)
    conn = store.connection
    conn.execute(INSERT_ROW, ("c", "2026-01-05 00:00+00", [1.0], 1, "none", 0))
    other = make_store().connection
    other.execute("SET lock_timeout = '2s'")  # waiting for the creator's lock would raise
    with conn.transaction():  # a profile write creating its month holds this until it commits
        assert partitions.ensure_months(conn, [datetime(2026, 2, 3, tzinfo=UTC)]) == [f"{HISTORY}_2026_02"]
        read = other.execute("SELECT count(*) FROM customer_profile_history WHERE customer_id = 'c'")
        assert read.fetchone() == (1,)
        other.execute(INSERT_ROW, ("d", "2026-01-06 00:00+00", [1.0], 1, "none", 0))
    assert _partitions_of_rows(conn) == {f"{HISTORY}_2026_01": 2}
