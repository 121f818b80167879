"""Rows that collide on the natural key: rejected with a reason, never dropped.

The events key is (customer, time, action, product). A later row with the same key is an
``exact_duplicate`` when category, price and session id are equal too, else a
``conflicting_duplicate``; the first row in (in a file, or already stored) is kept. Count in =
stored + rejected on every path: the loader, ``Store.ingest_file`` (the CLI and the daily DAG) and
``Store.ingest_events``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from traitflow import event_schema
from traitflow.events import read_events
from traitflow.store import Store
from traitflow.store.cli import main

HEADER = list(event_schema.CANONICAL_COLUMNS)
KEY = list(event_schema.NATURAL_KEY)
ROW = {
    "customer_id": "c1",
    "event_time": "2024-03-01T10:00:00Z",
    "action": "purchase",
    "product_id": "p1",
    "category": "shoes",
    "price": "1.0",
    "session_id": "s1",
}
TWIN = ROW | {"price": "2.0"}


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=HEADER)
        writer.writeheader()
        writer.writerows(rows)
    return path


def rejects_of(store: Store, source: Path | str) -> pd.DataFrame:
    rows = store.connection.execute(
        "SELECT row_number, reason, raw FROM rejected_events WHERE source = %s ORDER BY row_number",
        (str(Path(source).resolve()) if isinstance(source, Path) else source,),
    ).fetchall()
    return pd.DataFrame(rows, columns=["row_number", "reason", "raw"])


def stored_prices(store: Store) -> list[float | None]:
    rows = store.connection.execute("SELECT price FROM events ORDER BY customer_id, event_time").fetchall()
    return [row[0] for row in rows]


def assert_balanced(report: object, n_read: int) -> None:
    r = report
    assert r.n_read == n_read == r.n_inserted + r.n_already_present + r.n_rejected  # type: ignore[attr-defined]


# --- the two-row case --------------------------------------------------------------------------


def test_two_rows_on_one_key_in_a_file_keep_the_first_and_reject_the_second(tmp_path: Path) -> None:
    result = read_events(write_csv(tmp_path / "two.csv", [ROW, TWIN]))
    assert result.events["price"].tolist() == [1.0]
    assert result.event_row_numbers.tolist() == [1]
    assert result.rejects.to_dict("records") == [
        {
            "source": str(tmp_path / "two.csv"),
            "row_number": 2,
            "raw": json.dumps(TWIN, ensure_ascii=False),
            "reason": event_schema.REASON_CONFLICTING_DUPLICATE,
        }
    ]


def test_two_rows_on_one_key_through_the_cli(store: Store, database_url: str, tmp_path: Path, capsys) -> None:
    path = write_csv(tmp_path / "two.csv", [ROW, TWIN])
    assert main(["ingest", str(path), "--mapping", "canonical", "--database-url", database_url,
                 "--schema", store.schema]) == 0  # fmt: skip
    assert "read 2 rows -> 1 new events, 0 already present, 1 rejected" in capsys.readouterr().out
    assert stored_prices(store) == [1.0]
    assert rejects_of(store, path)[["row_number", "reason"]].values.tolist() == [
        [2, event_schema.REASON_CONFLICTING_DUPLICATE]
    ]


def test_a_row_conflicting_with_a_stored_event_is_recorded_with_its_row(store: Store, tmp_path: Path) -> None:
    first = store.ingest_file(write_csv(tmp_path / "a.csv", [ROW]), "canonical", run_id="a")
    assert (first.n_inserted, first.n_rejected) == (1, 0)
    other = ROW | {"customer_id": "c2"}
    path = write_csv(tmp_path / "b.csv", [other, TWIN])
    second = store.ingest_file(path, "canonical", run_id="b")
    assert_balanced(second, 2)
    assert (second.n_inserted, second.n_already_present, second.n_rejected) == (1, 0, 1)
    assert (second.n_conflicting, second.n_rejects_recorded) == (1, 1)
    assert stored_prices(store) == [1.0, 1.0]  # the first one in stays
    rejects = rejects_of(store, path)
    assert rejects[["row_number", "reason"]].values.tolist() == [
        [2, event_schema.REASON_CONFLICTING_DUPLICATE]
    ]
    assert json.loads(rejects["raw"][0]) == {
        "customer_id": "c1",
        "event_time": "2024-03-01T10:00:00.000000Z",
        "action": "purchase",
        "product_id": "p1",
        "category": "shoes",
        "price": 2.0,
        "session_id": "s1",
    }
    again = store.ingest_file(path, "canonical", run_id="b2", force=True)
    assert (again.n_inserted, again.n_already_present, again.n_rejected) == (0, 1, 1)
    assert again.n_rejects_recorded == 0


def test_ingest_events_frames_conflict_within_a_frame_and_with_the_store(store: Store) -> None:
    @dataclass
    class Frames:
        events: pd.DataFrame
        rejects: pd.DataFrame

    def frame(*rows: dict[str, object]) -> Frames:
        return Frames(event_schema.as_canonical(pd.DataFrame(list(rows))), event_schema.empty_rejects())

    base = {k: v for k, v in ROW.items() if k != "price"} | {"event_time": pd.Timestamp(ROW["event_time"])}
    no_price, priced = base | {"price": None}, base | {"price": 2.0}
    # Within one frame (no row numbers: events are numbered by position from 1).
    report = store.ingest_events(frame(no_price, no_price, priced), source="f1", run_id="r")  # type: ignore[arg-type]
    assert_balanced(report, 3)
    assert (report.n_inserted, report.n_already_present, report.n_rejected) == (1, 1, 1)
    assert report.n_conflicting == 1
    assert rejects_of(store, "f1")[["row_number", "reason"]].values.tolist() == [
        [3, event_schema.REASON_CONFLICTING_DUPLICATE]
    ]
    # Against the store, NULL-safe: a missing price equals a missing price only.
    same = store.ingest_events(frame(no_price), source="f2", run_id="r")  # type: ignore[arg-type]
    assert (same.n_inserted, same.n_already_present, same.n_rejected) == (0, 1, 0)
    differs = store.ingest_events(frame(priced), source="f3", run_id="r")  # type: ignore[arg-type]
    assert (differs.n_inserted, differs.n_already_present, differs.n_rejected) == (0, 0, 1)
    assert stored_prices(store) == [None]
    assert store.table_counts()["rejected_events"] == 2


# --- a hostile mix -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Mix:
    """Rows in arrival order with the expected reason of each (None: stored); the good and the
    hostile rows apart, and the expected reason of each good row (in the good rows' order)."""

    rows: list[dict[str, str]]
    expected: list[str | None]
    good: list[dict[str, str]]
    hostile: list[dict[str, str]]
    good_outcome: list[str | None]


def hostile_mix(n_good: int = 1_000, n_hostile: int = 1_000, seed: int = 14) -> Mix:
    """Good rows with distinct keys and hostile rows of eight kinds, shuffled together.

    Hostile kinds: twins of a good row (another price; another category; no session id), an
    exact repeat of a good row, injection-looking ids (valid), control characters, bad times,
    oversized ids. Expected reasons follow the rule "the first row of a key wins".
    """
    rng = np.random.default_rng(seed)
    good = [
        {
            "customer_id": f"g{i % 200}",
            "event_time": f"2024-03-01T{i // 60 % 24:02d}:{i % 60:02d}:00Z",
            "action": event_schema.ACTIONS[i % len(event_schema.ACTIONS)],
            "product_id": f"p{i}",
            "category": f"cat{i % 7}",
            "price": f"{1 + i / 100:.2f}",
            "session_id": f"s{i % 50}",
        }
        for i in range(n_good)
    ]
    targets = rng.permutation(n_good)  # each good row has at most one hostile twin
    # (row, reason known without looking at other rows, index of the good row it shares a key with)
    hostile: list[tuple[dict[str, str], str | None, int | None]] = []
    for i in range(n_hostile):
        g = int(targets[i % n_good])
        kind = i % 8
        if kind == 0:
            hostile.append((good[g] | {"price": "999.99"}, None, g))
        elif kind == 1:
            hostile.append((good[g] | {"category": "'; DROP TABLE events; --"}, None, g))
        elif kind == 2:
            hostile.append((good[g] | {"session_id": ""}, None, g))
        elif kind == 3:
            hostile.append((dict(good[g]), None, g))  # an exact repeat
        elif kind == 4:
            ids = {"customer_id": f"x'); DROP TABLE events;-- {i}", "product_id": f'\\N{{{i}}}"q"'}
            hostile.append((good[g] | ids | {"event_time": "2024-03-02T00:00:00Z"}, None, None))
        elif kind == 5:
            hostile.append(
                (good[g] | {"customer_id": f"ctl\x1b{i}\t"}, event_schema.REASON_CONTROL_CHARS, None)
            )
        elif kind == 6:
            bad = ["2024-13-45T99:00:00", "yesterday", "1899-01-01T00:00:00Z", "2199-01-01T00:00:00Z"][i % 4]
            reason = event_schema.REASON_BAD_TIME if i % 4 < 2 else event_schema.REASON_TIME_RANGE
            hostile.append((good[g] | {"event_time": bad}, reason, None))
        else:
            oversized = {"product_id": "p" * (event_schema.MAX_ID_LENGTH + 1)}
            hostile.append((good[g] | oversized, event_schema.REASON_OVERSIZED, None))
    items = [(row, None, i, True) for i, row in enumerate(good)] + [
        (row, reason, g, False) for row, reason, g in hostile
    ]
    arrived = [items[k] for k in rng.permutation(len(items))]
    # The first arrival of a key wins; a later one is an exact or a conflicting duplicate.
    first: dict[int, dict[str, str]] = {}
    expected: list[str | None] = []
    good_outcome: list[str | None] = [None] * n_good
    for row, reason, g, is_good in arrived:
        if reason is None and g is not None:
            if g in first:
                same = first[g] == row
                reason = event_schema.REASON_DUPLICATE if same else event_schema.REASON_CONFLICTING_DUPLICATE
            else:
                first[g] = row
        expected.append(reason)
        if is_good:
            good_outcome[g] = reason
    return Mix([row for row, *_ in arrived], expected, good, [row for row, *_ in hostile], good_outcome)


def test_hostile_mix_in_the_loader_count_in_equals_events_plus_rejects(tmp_path: Path) -> None:
    mix = hostile_mix()
    path = write_csv(tmp_path / "mix.csv", mix.rows)
    whole = read_events(path)
    assert len(whole.events) + len(whole.rejects) == len(mix.rows) == 2_000
    expected = pd.Series([r for r in mix.expected if r is not None]).value_counts().to_dict()
    assert whole.rejects["reason"].value_counts().to_dict() == expected
    assert (
        expected[event_schema.REASON_CONFLICTING_DUPLICATE] == 375
        and expected[event_schema.REASON_DUPLICATE] == 125
    )
    kept_numbers = [i + 1 for i, r in enumerate(mix.expected) if r is None]
    assert whole.event_row_numbers.tolist() == kept_numbers
    rejected = whole.rejects.set_index("row_number")
    for number, reason in enumerate(mix.expected, start=1):
        if reason is not None:
            assert rejected.loc[number, "reason"] == reason
            assert json.loads(rejected.loc[number, "raw"]) == mix.rows[number - 1]
    # Chunked reading (hashes across chunks) gives the same split.
    for chunksize in (97, 700, 2_000):
        chunked = read_events(path, chunksize=chunksize)
        pd.testing.assert_frame_equal(chunked.events, whole.events)
        pd.testing.assert_frame_equal(chunked.rejects, whole.rejects)
        assert chunked.event_row_numbers.tolist() == kept_numbers


def good_rows_stored_exactly(store: Store, mix: Mix) -> np.ndarray:
    """bool per good row: stored field for field (its key may hold a twin that came first)."""
    stored = store.read_events()
    good = event_schema.as_canonical(
        pd.DataFrame(mix.good).assign(
            event_time=lambda f: pd.to_datetime(f["event_time"]),
            price=lambda f: f["price"].astype(float),
        )
    )
    merged = good.merge(stored, on=KEY, how="left", suffixes=("", "_stored"), indicator=True)
    assert (merged["_merge"] == "both").all()  # every good key is stored, by it or by a twin
    exact = np.ones(len(merged), dtype=bool)
    for column in event_schema.DUPLICATE_FIELDS:
        a, b = merged[column], merged[f"{column}_stored"]
        exact &= ((a == b).fillna(False) | (a.isna() & b.isna())).to_numpy(dtype=bool)
    return exact


def test_hostile_mix_through_the_store_in_chunks(store: Store, tmp_path: Path) -> None:
    mix = hostile_mix()
    path = write_csv(tmp_path / "mix.csv", mix.rows)
    report = store.ingest_file(path, "canonical", run_id="mix", chunksize=97)
    assert_balanced(report, 2_000)
    counts = store.table_counts()
    assert (report.n_already_present, report.n_conflicting) == (0, 0)  # all within the file
    assert counts["events"] == report.n_inserted and counts["rejected_events"] == report.n_rejected
    assert report.n_inserted == sum(r is None for r in mix.expected)
    one_shot = read_events(path).events
    pd.testing.assert_frame_equal(
        store.read_events().sort_values(KEY, ignore_index=True), one_shot.sort_values(KEY, ignore_index=True)
    )
    # Every good row is stored exactly unless a conflicting twin arrived before it.
    lost = np.array([o == event_schema.REASON_CONFLICTING_DUPLICATE for o in mix.good_outcome])
    assert (good_rows_stored_exactly(store, mix) == ~lost).all()
    assert 0 < lost.sum() < 375  # the shuffle does put some hostile twins first

    before = store.table_checksums()
    again = store.ingest_file(path, "canonical", run_id="mix-2", force=True)
    assert (again.n_inserted, again.n_rejects_recorded) == (0, 0)
    assert (again.n_already_present, again.n_rejected) == (report.n_inserted, report.n_rejected)
    assert store.table_checksums() == before


def test_hostile_rows_after_the_good_file_never_replace_a_good_row(store: Store, tmp_path: Path) -> None:
    mix = hostile_mix()
    good_path = write_csv(tmp_path / "good.csv", mix.good)
    hostile_rows = mix.hostile
    good = store.ingest_file(good_path, "canonical", run_id="good")
    assert (good.n_read, good.n_inserted, good.n_rejected) == (1_000, 1_000, 0)
    hostile_path = write_csv(tmp_path / "hostile.csv", hostile_rows)
    hostile = store.ingest_file(hostile_path, "canonical", run_id="hostile", chunksize=101)
    assert_balanced(hostile, len(hostile_rows))
    assert good_rows_stored_exactly(store, mix).all()
    reasons = rejects_of(store, hostile_path)["reason"].value_counts().to_dict()
    assert reasons[event_schema.REASON_CONFLICTING_DUPLICATE] == hostile.n_conflicting == 375
    assert hostile.n_already_present == 125  # the exact repeats of good rows
    assert hostile.n_inserted == 125  # the injection-looking ids, stored as they are
    assert store.table_counts()["events"] == 1_125


def test_the_daily_dag_ingestion_counts_conflicts_across_day_files(
    store: Store, database_url: str, tmp_path: Path, monkeypatch
) -> None:
    """``jobs.ingest_interval`` (the daily DAG's ingest task): day 2 contradicts day 1.

    Day 2 holds the twin first, then day 1's row: the loader keeps the twin and rejects the row
    (a conflict within the file), the store rejects the twin (a conflict with day 1's event).
    """
    from datetime import UTC, datetime, timedelta

    from traitflow import jobs
    from traitflow.runs import EventInput, RunContext

    monkeypatch.setenv("TRAITFLOW_DB_SCHEMA", store.schema)
    monkeypatch.setenv("TRAITFLOW_INPUT_ROOT", str(tmp_path))
    other = ROW | {"customer_id": "c2", "event_time": "2024-03-02T09:00:00Z"}
    write_csv(tmp_path / "events_2024-03-01.csv", [ROW])
    write_csv(tmp_path / "events_2024-03-02.csv", [TWIN, ROW, other])
    start = datetime(2024, 3, 2, tzinfo=UTC)
    run = RunContext("daily", start, start + timedelta(days=1), str(tmp_path / "work"), database_url)
    totals = jobs.ingest_interval(run, EventInput(str(tmp_path), "canonical"))
    assert totals.n_files == 2 and totals.n_read == 4
    assert (totals.n_inserted, totals.n_already_present, totals.n_rejected) == (2, 0, 2)
    assert totals.n_conflicting == 1
    assert stored_prices(store) == [1.0, 1.0]
    day2 = rejects_of(store, str(tmp_path / "events_2024-03-02.csv"))
    assert day2[["row_number", "reason"]].values.tolist() == [
        [1, event_schema.REASON_CONFLICTING_DUPLICATE],
        [2, event_schema.REASON_CONFLICTING_DUPLICATE],
    ]
