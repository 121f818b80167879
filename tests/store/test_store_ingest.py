"""Event ingestion and event reads: idempotent, exact, hostile-input safe, atomic."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from traitflow import event_schema
from traitflow.events import LoadResult
from traitflow.store import Store, StoreInputError
from traitflow.store import ingest as store_ingest

T0 = datetime(2024, 3, 1, tzinfo=UTC)

# Ids that break naive quoting/escaping (SQL, COPY text and CSV formats, array literals).
HOSTILE_IDS = [
    "o'brien",
    'say "hi"',
    "a;DROP TABLE events;--",
    "back\\slash\\N",
    "\\N",
    "tab\there",
    "new\nline",
    "comma,separated",
    "{braces}",
    "NULL",
    "emoji 🧑‍🚀🛒",
    "ünïcødé ß 中文",
    " leading and trailing ",
    "x" * event_schema.MAX_ID_LENGTH,
    "🧑‍🚀" * (event_schema.MAX_ID_LENGTH // 5),  # multi-codepoint emoji up to the char limit
]


def events_frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    """A canonical events frame from row dicts (missing optional fields -> missing)."""
    frame = pd.DataFrame(rows)
    return event_schema.as_canonical(frame)


def sample_events(n_customers: int = 5, per_customer: int = 4) -> pd.DataFrame:
    rows = []
    for c in range(n_customers):
        for i in range(per_customer):
            rows.append(
                {
                    "customer_id": f"c{c}",
                    "event_time": T0 + timedelta(hours=c, minutes=7 * i, microseconds=123457 * i),
                    "action": event_schema.ACTIONS[(c + i) % len(event_schema.ACTIONS)],
                    "product_id": f"p{(c * 3 + i) % 7}",
                    "category": None if i == 2 else f"cat{i}",
                    "price": np.nan if i == 1 else 0.1 * (i + 1) + 1e-13,
                    "session_id": None if i == 3 else f"s{c}",
                }
            )
    return events_frame(rows)


def canonical_sort(frame: pd.DataFrame) -> pd.DataFrame:
    # Python/arrow string order is code-point order = UTF-8 byte order = COLLATE "C".
    keys = ["customer_id", "event_time", "action", "product_id"]
    return frame.sort_values(keys, kind="stable", ignore_index=True)


def result(events: pd.DataFrame, rejects: pd.DataFrame | None = None) -> LoadResult:
    return LoadResult(events=events, rejects=event_schema.empty_rejects() if rejects is None else rejects)


def test_ingest_then_read_returns_the_same_canonical_frame(store: Store) -> None:
    events = sample_events()
    report = store.ingest_events(result(events), source="unit", run_id="r1")
    assert (report.n_read, report.n_inserted, report.n_already_present, report.n_rejected) == (20, 20, 0, 0)
    back = store.read_events()
    pd.testing.assert_frame_equal(back, canonical_sort(events))
    assert list(back.dtypes) == list(event_schema.empty_events().dtypes)


def test_reingesting_adds_nothing(store: Store) -> None:
    events = sample_events()
    rejects = pd.DataFrame(
        {
            "source": ["unit", "unit"],
            "row_number": [3, 9],
            "raw": ['{"a": 1}', "x"],
            "reason": ["unknown_action"] * 2,
        }
    )
    first = store.ingest_events(result(events, rejects), source="unit", run_id="r1", file_sha256="a" * 64)
    before = store.table_checksums()
    second = store.ingest_events(result(events, rejects), source="unit", run_id="r2", file_sha256="a" * 64)
    assert store.table_checksums() == before
    assert (first.n_inserted, first.n_rejects_recorded) == (20, 2)
    assert (second.n_inserted, second.n_already_present, second.n_rejected, second.n_rejects_recorded) == (
        0,
        20,
        2,
        0,
    )
    assert store.is_file_ingested("a" * 64)


def test_overlapping_batches_count_in_equals_stored_plus_rejected(store: Store) -> None:
    events = sample_events()
    store.ingest_events(result(events.iloc[:12]), source="a", run_id="r1")
    rejects = pd.DataFrame({"row_number": [1], "raw": ["bad"], "reason": ["missing_customer_id"]})
    report = store.ingest_events(result(events.iloc[8:], rejects), source="b", run_id="r2")
    assert report.n_read == report.n_inserted + report.n_already_present + report.n_rejected
    assert (report.n_inserted, report.n_already_present, report.n_rejected) == (8, 4, 1)
    counts = store.table_counts()
    assert counts["events"] == 20 and counts["rejected_events"] == 1
    stored = store.connection.execute("SELECT source FROM rejected_events").fetchall()
    assert stored == [("b",)]  # a reject without its own source gets the batch's


def test_hostile_ids_round_trip_unchanged(store: Store) -> None:
    rows = [
        {
            "customer_id": cid,
            "event_time": T0 + timedelta(seconds=i),
            "action": "view",
            "product_id": cid[::-1] if cid.strip() else "p",
            "category": cid + " | " + "c" * 500,
            "price": 1.5,
            "session_id": cid,
        }
        for i, cid in enumerate(HOSTILE_IDS)
    ]
    events = events_frame(rows)
    store.ingest_events(result(events), source="hostile '; source", run_id="r'1")
    back = store.read_events()
    pd.testing.assert_frame_equal(back, canonical_sort(events))
    assert sorted(store.customers_with_events(None, None).tolist()) == sorted(HOSTILE_IDS)
    subset = store.read_events(customer_ids=[HOSTILE_IDS[2], HOSTILE_IDS[5], "absent"])
    assert sorted(subset["customer_id"]) == sorted([HOSTILE_IDS[2], HOSTILE_IDS[5]])
    # The table still exists and holds exactly what went in (the ';DROP' id did nothing).
    assert store.table_counts()["events"] == len(HOSTILE_IDS)


def test_ten_kilobyte_reject_rows_round_trip_and_nul_is_escaped(store: Store) -> None:
    big = "é😀'\\\"," * 1500  # ~10 KB of awkward text
    rejects = pd.DataFrame(
        {
            "source": ["f.csv", "f.csv"],
            "row_number": [7, 8],
            "raw": [big, "a\x00b"],
            "reason": [event_schema.REASON_OVERSIZED, event_schema.REASON_CONTROL_CHARS],
        }
    )
    report = store.ingest_events(result(event_schema.empty_events(), rejects), source="f.csv", run_id="r")
    assert report.n_rejected == 2 and report.n_read == 2
    rows = store.connection.execute("SELECT raw, reason FROM rejected_events ORDER BY row_number").fetchall()
    assert len(big.encode()) > 10_000
    assert rows[0] == (big, event_schema.REASON_OVERSIZED)
    assert rows[1][0] == "a" + store_ingest.NUL_ESCAPE + "b"  # Postgres text cannot hold NUL


@pytest.mark.parametrize("column", ["customer_id", "product_id", "category", "session_id"])
def test_nul_in_an_event_is_a_clear_error_and_writes_nothing(store: Store, column: str) -> None:
    store.ingest_events(result(sample_events()), source="ok", run_id="r0")
    before = store.table_checksums()
    events = sample_events()
    events.loc[3, column] = "bad\x00value"
    with pytest.raises(StoreInputError, match=rf"column '{column}' row 3 contains a NUL"):
        store.ingest_events(result(events), source="nul", run_id="r1")
    assert store.table_checksums() == before


def test_oversized_or_invalid_events_are_refused(store: Store) -> None:
    before = store.table_checksums()
    too_long = sample_events()
    too_long.loc[0, "customer_id"] = "x" * 10_240
    with pytest.raises(StoreInputError, match="longer than 256"):
        store.ingest_events(result(too_long), source="s", run_id="r")
    bad_action = sample_events()
    bad_action.loc[1, "action"] = "click"
    with pytest.raises(StoreInputError, match="action 'click'"):
        store.ingest_events(result(bad_action), source="s", run_id="r")
    empty_id = sample_events()
    empty_id.loc[2, "product_id"] = ""
    with pytest.raises(StoreInputError, match="'product_id' row 2 is missing or empty"):
        store.ingest_events(result(empty_id), source="s", run_id="r")
    assert store.table_checksums() == before


def test_a_failure_halfway_through_ingest_leaves_every_table_unchanged(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.ingest_events(result(sample_events().iloc[:5]), source="s", run_id="r0")
    before = store.table_checksums()
    rejects = pd.DataFrame({"row_number": [1], "raw": ["x"], "reason": ["exact_duplicate"]})
    original = store_ingest.copy_in

    def copy_then_fail(conn: object, statement: str, columns: object) -> None:
        if "_tf_stage_rejects" in statement:  # events are already inserted at this point
            raise RuntimeError("injected failure")
        original(conn, statement, columns)  # type: ignore[arg-type]

    monkeypatch.setattr(store_ingest, "copy_in", copy_then_fail)
    with pytest.raises(RuntimeError, match="injected"):
        store.ingest_events(result(sample_events(), rejects), source="s", run_id="r1", file_sha256="b" * 64)
    assert store.table_checksums() == before


def test_time_window_is_start_inclusive_end_exclusive(store: Store) -> None:
    events = events_frame(
        [
            {
                "customer_id": "a",
                "event_time": T0 - timedelta(microseconds=1),
                "action": "view",
                "product_id": "p",
            },
            {"customer_id": "a", "event_time": T0, "action": "view", "product_id": "p"},
            {
                "customer_id": "b",
                "event_time": T0 + timedelta(days=1) - timedelta(microseconds=1),
                "action": "cart",
                "product_id": "p",
            },
            {"customer_id": "c", "event_time": T0 + timedelta(days=1), "action": "view", "product_id": "p"},
        ]
    )
    store.ingest_events(result(events), source="s", run_id="r")
    day = store.read_events(T0, T0 + timedelta(days=1))
    assert day["event_time"].tolist() == [
        pd.Timestamp(T0),
        pd.Timestamp(T0 + timedelta(days=1, microseconds=-1)),
    ]
    assert store.customers_with_events(T0, T0 + timedelta(days=1)).tolist() == ["a", "b"]
    assert len(store.read_events(end=T0)) == 1
    assert len(store.read_events(start=T0 + timedelta(days=1))) == 1
    # Naive datetimes mean UTC; other offsets are converted.
    assert len(store.read_events(T0.replace(tzinfo=None), (T0 + timedelta(days=1)).replace(tzinfo=None))) == 2
    paris = T0.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Paris"))
    assert len(store.read_events(paris, paris + timedelta(days=1))) == 2


def test_read_events_filters_and_empty_results(store: Store) -> None:
    store.ingest_events(result(sample_events()), source="s", run_id="r")
    some = store.read_events(customer_ids=np.array(["c1", "c3", "c3"], dtype=object))
    assert sorted(set(some["customer_id"])) == ["c1", "c3"] and len(some) == 8
    empty = store.read_events(customer_ids=[])
    assert empty.empty and list(empty.dtypes) == list(event_schema.empty_events().dtypes)
    none = store.read_events(start=T0 + timedelta(days=30))
    assert none.empty and list(none.columns) == list(event_schema.CANONICAL_COLUMNS)
    assert store.customers_with_events(T0 + timedelta(days=30), None).tolist() == []


def test_missing_price_and_optional_text_survive_as_missing(store: Store) -> None:
    events = sample_events(1, 4)
    store.ingest_events(result(events), source="s", run_id="r")
    back = store.read_events()
    assert back["price"].isna().tolist() == events["price"].isna().tolist()
    assert back["category"].isna().sum() == 1 and back["session_id"].isna().sum() == 1
    row = store.connection.execute("SELECT count(*) FROM events WHERE price IS NULL").fetchone()
    assert row == (1,)  # NaN price is stored as NULL, not as a NaN float


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["customer_id", "event_time", "action", "product_id", "category", "price", "session_id"]
        )
        writer.writerows(rows)
    return path


def test_ingest_file_through_the_events_loader(store: Store, tmp_path: Path) -> None:
    rows = [
        ["c1", "2024-03-01T10:00:00Z", "view", "p1", "shoes", "10.5", "s1"],
        ["c1", "2024-03-01T10:01:00Z", "Purchase", "p1", "shoes", "10.5", "s1"],
        ["o'brien; --", "2024-03-01T11:00:00+02:00", "cart", "p\\2", "", "", ""],
        ["emoji 🛒", "2024-03-01 12:00:00", "wishlist", "p3", "home", "3", "s2"],
        ["c1", "2024-03-01T10:00:00Z", "view", "p1", "shoes", "10.5", "s1"],  # exact duplicate
        ["", "2024-03-01T10:00:00Z", "view", "p1", "", "", ""],  # missing customer
        ["c2", "not a time", "view", "p1", "", "", ""],
        ["c3", "2024-03-01T10:00:00Z", "teleport", "p1", "", "", ""],
        ["c\x00nul", "2024-03-01T10:00:00Z", "view", "p1", "", "", ""],  # NUL: rejected by validation
        ["x" * 10_240, "2024-03-01T10:00:00Z", "view", "p1", "", "", ""],  # 10 KB id: oversized
    ]
    path = write_csv(tmp_path / "events.csv", rows)
    report = store.ingest_file(path, "canonical", run_id="file-run", chunksize=3)
    assert report.n_read == len(rows) == report.n_inserted + report.n_already_present + report.n_rejected
    assert (report.n_inserted, report.n_rejected) == (4, 6)
    assert report.source == str(path.resolve()) and not report.skipped
    counts = store.table_counts()
    assert counts["events"] + counts["rejected_events"] == len(rows)
    reasons = dict(store.connection.execute("SELECT row_number, reason FROM rejected_events").fetchall())
    assert (
        reasons[9] == event_schema.REASON_CONTROL_CHARS and reasons[10] == event_schema.REASON_OVERSIZED
    )  # data rows from 1
    raw_10k = store.connection.execute("SELECT raw FROM rejected_events WHERE row_number = 10").fetchone()
    assert raw_10k is not None and "x" * 10_240 in raw_10k[0]
    assert sorted(store.customers_with_events(None, None).tolist()) == sorted(
        ["c1", "emoji 🛒", "o'brien; --"]
    )

    before = store.table_checksums()
    again = store.ingest_file(path, "canonical", run_id="file-run-2")
    assert again.skipped and again.n_read == 0 and store.table_checksums() == before
    forced = store.ingest_file(path, "canonical", run_id="file-run-3", force=True)
    assert (forced.n_inserted, forced.n_already_present, forced.n_rejected, forced.n_rejects_recorded) == (
        0,
        4,
        6,
        0,
    )
    assert store.table_checksums() == before


def test_ingest_events_accepts_any_result_like_object(store: Store) -> None:
    like = SimpleNamespace(events=sample_events(1, 2), rejects=event_schema.empty_rejects())
    assert store.ingest_events(like, source="s", run_id="r").n_inserted == 2  # type: ignore[arg-type]


def test_few_rows_as_parameters_store_what_the_staged_path_stores(make_store: Callable[..., Store]) -> None:
    """The same sequence of ingests into two schemas, staged and with ``few_rows``: equal reports
    and equal tables (events, rejects with their raw text, conflicts) after every step."""
    stores = [make_store(fresh=True), make_store(fresh=True)]
    for s in stores:
        s.upgrade()
    events = sample_events(n_customers=2, per_customer=4)
    hostile = events_frame(
        [
            {"customer_id": c, "event_time": T0 + timedelta(seconds=i), "action": "view", "product_id": c}
            for i, c in enumerate(HOSTILE_IDS)
        ]
    )
    changed = events.iloc[:2].assign(price=[7.0, 8.0])  # stored keys, other fields: conflicts
    repeated = pd.concat([events.iloc[:1], events.iloc[:1].assign(session_id="other")], ignore_index=True)
    rejects = pd.DataFrame(
        {
            "row_number": [9, 10],
            "raw": ['{"a": "nul\x00"}', "x"],
            "reason": ["unknown_action", "exact_duplicate"],
        }
    )
    steps = [
        ("s1", result(events)),
        ("s1", result(events)),  # a re-post: already present
        ("s2", result(changed)),
        ("s3", result(repeated.assign(customer_id="fresh"))),  # repeated key within the batch
        ("s4", result(hostile)),
        ("s5", result(events.iloc[2:3], rejects)),
        ("s5", result(events.iloc[2:3], rejects)),  # the rejects recorded once
        ("s6", result(event_schema.empty_events(), rejects)),
    ]
    queries = {  # the data columns (ingested_at, ingest_xid differ between the schemas)
        "events": "SELECT customer_id, event_time, action, product_id, category, price, session_id, source,"
        " run_id FROM events ORDER BY customer_id, event_time, action, product_id",
        "rejected_events": "SELECT source, row_number, raw, reason, run_id FROM rejected_events"
        " ORDER BY source, row_number",
    }
    for source, loaded in steps:
        reports = [
            stores[0].ingest_events(loaded, source, "run"),
            stores[1].ingest_events(loaded, source, "run", few_rows=True),
        ]
        counts = [{k: v for k, v in r.to_dict().items() if k != "seconds"} for r in reports]
        assert counts[0] == counts[1], source
        for table, query in queries.items():
            staged, few = (s.connection.execute(query).fetchall() for s in stores)
            assert staged == few, (source, table)
    assert stores[1].table_counts()["rejected_events"] > 0


def test_few_rows_falls_back_to_staging_above_the_limit(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    copies: list[str] = []
    original = store_ingest.copy_in

    def counted(conn: object, statement: str, columns: object) -> None:
        copies.append(statement)
        original(conn, statement, columns)  # type: ignore[arg-type]

    monkeypatch.setattr(store_ingest, "copy_in", counted)
    small = sample_events(n_customers=1, per_customer=3)
    store.ingest_events(result(small), "small", "run", few_rows=True)
    assert copies == []
    big = sample_events(n_customers=9, per_customer=4)  # 36 events > MAX_PARAMETER_ROWS
    assert len(big) > store_ingest.MAX_PARAMETER_ROWS
    report = store.ingest_events(result(big), "big", "run", few_rows=True)
    assert copies and report.n_inserted == len(big) - len(small)


def test_table_checksums_change_with_the_rows_and_only_with_them(store: Store) -> None:
    events = sample_events()
    store.ingest_events(result(events), source="unit", run_id="r1")
    before = store.table_checksums()
    reversed_events = events.iloc[::-1].reset_index(drop=True)
    store.ingest_events(result(reversed_events), source="unit", run_id="r1")  # already stored
    assert store.table_checksums() == before

    extra = events.iloc[:1].assign(product_id="p-extra").reset_index(drop=True)
    store.ingest_events(result(extra), source="unit", run_id="r2")
    after = store.table_checksums()
    assert after["events"] != before["events"]
    assert after["rejected_events"] == before["rejected_events"]  # nothing rejected: unchanged


@pytest.mark.parametrize(
    ("values", "required", "message"),
    [
        (["a", "b\x00", None, ""], True, "row 1 contains a NUL"),  # the NUL is reported first
        (["a", None, "x" * 9], True, "row 1 is missing or empty"),
        (["a", "", "x" * 9], True, "row 1 is missing or empty"),
        (["a", None, "x" * 9], False, "row 2 is longer than 8"),
        (["a", "é" * 8, "€" * 9], False, "row 2 is longer than 8"),  # characters, not bytes
        (["a", None, "", "é" * 8], False, None),
    ],
)
def test_few_and_many_texts_are_checked_alike(
    values: list[str | None], required: bool, message: str | None
) -> None:
    """``check_text`` checks a few values in Python and more with Arrow kernels: same verdicts."""
    few = pa.array(values, pa.large_string())
    many = pa.array(values + ["ok"] * (store_ingest._FEW_TEXTS + 1), pa.large_string())
    for array in (few, many):
        if message is None:
            store_ingest.check_text(array, "c", required=required, max_chars=8)
        else:
            with pytest.raises(StoreInputError, match=f"^column 'c' {message}"):
                store_ingest.check_text(array, "c", required=required, max_chars=8)


def _frames_breaking_the_contract() -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """(what is wrong, events, rejects): each one a ``StoreInputError`` on either path."""
    events = sample_events(n_customers=1, per_customer=3)
    ok_rejects = event_schema.empty_rejects()

    def with_value(column: str, value: object, dtype: str | None = None) -> pd.DataFrame:
        frame = events.copy()
        if dtype is not None:
            frame[column] = frame[column].astype(dtype)
        frame.loc[1, column] = value
        return frame

    rejects = pd.DataFrame({"row_number": [4, 5], "raw": ["a", "b"], "reason": ["unknown_action", "x"]})
    return [
        *[
            (f"NUL in {c}", with_value(c, "a\x00b"), ok_rejects)
            for c in ("customer_id", "product_id", "session_id")
        ],
        ("oversized id", with_value("customer_id", "x" * (event_schema.MAX_ID_LENGTH + 1)), ok_rejects),
        ("oversized category", with_value("category", "x" * (event_schema.MAX_TEXT_LENGTH + 1)), ok_rejects),
        ("empty product", with_value("product_id", ""), ok_rejects),
        ("missing product", with_value("product_id", None), ok_rejects),
        ("unknown action", with_value("action", "click"), ok_rejects),
        ("a number for an id", with_value("customer_id", 7, dtype="object"), ok_rejects),
        ("no product column", events.drop(columns="product_id"), ok_rejects),
        ("times as text", events.assign(event_time=events["event_time"].astype(str)), ok_rejects),
        ("a missing time", with_value("event_time", pd.NaT), ok_rejects),
        ("a reject without a reason", events, rejects.drop(columns="reason")),
        ("a reject without a row number", events, rejects.assign(row_number=[4.0, np.nan])),
        ("an empty reason", events, rejects.assign(reason=["x", ""])),
        ("NUL in a reason", events, rejects.assign(reason=["x", "a\x00"])),
    ]


@pytest.mark.parametrize(
    ("what", "events", "rejects"),
    _frames_breaking_the_contract(),
    ids=[c[0] for c in _frames_breaking_the_contract()],
)
def test_few_rows_refuse_what_the_staged_path_refuses_with_its_error(
    store: Store, what: str, events: pd.DataFrame, rejects: pd.DataFrame
) -> None:
    """Rows sent as parameters are checked in Python (``_parameter_event_rows``,
    ``_parameter_reject_rows``): the same error as the staged path's checks, nothing written."""
    store.ingest_events(result(sample_events(n_customers=2, per_customer=2)), "ok", "run")
    before = store.table_checksums()
    messages = []
    for few_rows in (False, True):
        with pytest.raises(StoreInputError) as refused:
            store.ingest_events(result(events, rejects), "bad", "run", few_rows=few_rows)
        messages.append(str(refused.value))
    assert messages[0] == messages[1], what
    assert store.table_checksums() == before


def test_few_rows_take_naive_times_missing_texts_and_object_columns_as_the_staged_path(
    make_store: Callable[..., Store],
) -> None:
    """Naive times (UTC), NaN, None and ``pd.NA`` for missing texts, object columns: as staged."""
    stores = [make_store(fresh=True), make_store(fresh=True)]
    for s in stores:
        s.upgrade()
    events = sample_events(n_customers=1, per_customer=4)
    odd = events.assign(
        event_time=events["event_time"].dt.tz_localize(None),
        category=pd.Series(["a", np.nan, None, pd.NA], dtype="object"),
        session_id=events["session_id"].astype("object"),
        price=["1.5", "x", None, 2],
    )
    reports = [
        stores[0].ingest_events(result(odd), "s", "run"),
        stores[1].ingest_events(result(odd), "s", "run", few_rows=True),
    ]
    assert reports[0].to_dict() | {"seconds": 0} == reports[1].to_dict() | {"seconds": 0}
    query = (
        "SELECT customer_id, event_time, action, product_id, category, price, session_id FROM events"
        " ORDER BY 1, 2, 3, 4"
    )
    staged, few = (s.connection.execute(query).fetchall() for s in stores)
    assert staged == few and len(few) == 4
    assert [row[4] for row in few].count(None) == 3


def _rows_of(frame: pd.DataFrame) -> event_schema.EventRows:
    """A canonical frame's events as ``EventRows`` (what a request's validation hands the store)."""
    return event_schema.EventRows(
        customer_id=frame["customer_id"].tolist(),
        event_time=[t.to_pydatetime() for t in frame["event_time"]],
        action=frame["action"].tolist(),
        product_id=frame["product_id"].tolist(),
        category=[None if pd.isna(c) else c for c in frame["category"]],
        price=frame["price"].astype("float64").tolist(),
        session_id=[None if pd.isna(s) else s for s in frame["session_id"]],
    )


def test_event_rows_store_what_their_frame_stores(make_store: Callable[..., Store]) -> None:
    """A result of ``EventRows`` (``LoadResult.of_rows``) stores what its frame stores, sent as
    parameters or, above the limit, staged; a key repeated with other values in the batch is a
    conflict either way."""
    stores = [make_store(fresh=True), make_store(fresh=True)]
    for s in stores:
        s.upgrade()
    events = sample_events(n_customers=2, per_customer=4)
    repeated = pd.concat([events.iloc[:1], events.iloc[:1].assign(price=99.0)], ignore_index=True)
    many = sample_events(n_customers=9, per_customer=4).assign(customer_id=lambda f: "m-" + f["customer_id"])
    assert len(many) > store_ingest.MAX_PARAMETER_ROWS
    queries = (
        "SELECT customer_id, event_time, action, product_id, category, price, session_id FROM events"
        " ORDER BY 1, 2, 3, 4",
        "SELECT source, row_number, raw, reason FROM rejected_events ORDER BY 1, 2",
    )
    for source, frame in (("a", events), ("a", events), ("b", repeated.assign(customer_id="r")), ("c", many)):
        numbers = np.arange(3, 3 + len(frame), dtype=np.int64)
        reports = [
            stores[0].ingest_events(
                LoadResult(frame, event_schema.empty_rejects(), None, numbers), source, "run"
            ),
            stores[1].ingest_events(
                LoadResult.of_rows(_rows_of(frame), event_schema.empty_rejects(), numbers),
                source,
                "run",
                few_rows=True,
            ),
        ]
        assert reports[0].to_dict() | {"seconds": 0} == reports[1].to_dict() | {"seconds": 0}, source
        for query in queries:
            framed, rows = (s.connection.execute(query).fetchall() for s in stores)
            assert framed == rows, (source, query)
    assert stores[1].table_counts()["rejected_events"] == 1  # the repeated key's conflict


@pytest.mark.parametrize(
    ("what", "change", "message"),
    [
        ("NUL", {"customer_id": "a\x00b"}, "column 'customer_id' row 1 contains a NUL"),
        ("empty product", {"product_id": ""}, "column 'product_id' row 1 is missing or empty"),
        ("long session", {"session_id": "s" * 1025}, "column 'session_id' row 1 is longer than 1024"),
        ("unknown action", {"action": "click"}, "row 1 has action 'click'"),
    ],
)
def test_event_rows_get_the_frames_contract_errors(
    store: Store, what: str, change: dict[str, str], message: str
) -> None:
    events = sample_events(n_customers=1, per_customer=3)
    bad = events.copy()
    for column, value in change.items():
        bad.loc[1, column] = value
    before = store.table_checksums()
    with pytest.raises(StoreInputError, match=re.escape(message)):
        store.ingest_events(result(bad), "s", "run")
    with pytest.raises(StoreInputError, match=re.escape(message)):
        rows = LoadResult.of_rows(_rows_of(bad), event_schema.empty_rejects(), np.arange(1, 4))
        store.ingest_events(rows, "s", "run", few_rows=True)
    assert store.table_checksums() == before, what


@pytest.mark.parametrize("with_histories", [False, True])
def test_a_statement_failing_in_the_one_round_trip_ingest_writes_nothing_and_rolls_back(
    store: Store, monkeypatch: pytest.MonkeyPatch, with_histories: bool
) -> None:
    """``few_rows``: BEGIN, the rows and COMMIT go out in one pipeline (with the history read of
    ``ingest_and_read_histories`` queued after the rows). A statement failing after the insert
    (queued behind it) aborts the transaction: nothing written, the connection rolled back and
    usable, and the same post stored once afterwards."""
    import psycopg

    events = sample_events(n_customers=1, per_customer=2)

    def ingest(source: str) -> Any:
        if with_histories:
            return store.ingest_and_read_histories(result(events), source, "run", ["c0"])[0]
        return store.ingest_events(result(events), source, "run", few_rows=True)

    before = store.table_checksums()
    original = store_ingest.send_parameter_batch

    def and_then_fail(conn: psycopg.Connection, *args: Any) -> Any:
        sent = original(conn, *args)
        conn.execute("SELECT 1 / 0")
        return sent

    monkeypatch.setattr(store_ingest, "send_parameter_batch", and_then_fail)
    with pytest.raises(psycopg.errors.DivisionByZero):
        ingest("s")
    assert store.connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert store.table_checksums() == before
    monkeypatch.setattr(store_ingest, "send_parameter_batch", original)
    report = ingest("s")
    assert (report.n_inserted, report.n_already_present) == (2, 0)


@pytest.mark.parametrize("n_customers", [1, 9])  # 4 rows as parameters; 36 rows staged
def test_ingest_and_read_histories_reads_what_customer_histories_reads_after_the_ingest(
    store: Store, n_customers: int
) -> None:
    earlier = sample_events(n_customers=2, per_customer=3)
    earlier["event_time"] = earlier["event_time"] - pd.Timedelta(days=3)
    store.ingest_events(result(earlier), "earlier", "run")
    events = sample_events(n_customers=n_customers, per_customer=4)
    ids = sorted({*events["customer_id"], "nobody"})
    report, histories = store.ingest_and_read_histories(result(events), "s", "run", ids)
    assert (report.n_inserted, report.n_already_present) == (len(events), 0)
    expected = store.customer_histories(ids)
    assert histories.customer_ids.tolist() == expected.customer_ids.tolist()
    assert histories.customer_ids.tolist() == sorted(events["customer_id"].unique())  # not "nobody"
    assert histories.starts.tolist() == expected.starts.tolist()
    assert histories.event_us.tolist() == expected.event_us.tolist()
    assert (histories.actions, histories.product_ids, histories.categories) == (
        expected.actions,
        expected.product_ids,
        expected.categories,
    )
    # the posted events and the earlier ones of the same customers (3 each)
    both = set(earlier["customer_id"]) & set(events["customer_id"])
    assert int(histories.starts[-1]) == len(events) + 3 * len(both)
