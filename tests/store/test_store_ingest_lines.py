"""`traitflow ingest` on hostile files: malformed lines are stored as rejects, mostly-bad files are
refused with nothing written (against the real PostgreSQL of tests/conftest.py)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from traitflow import cli, event_schema
from traitflow.events import MostlyRejectedError
from traitflow.store import Store


def run_cli(database_url: str, store: Store, *args: str) -> int:
    """``traitflow <args>`` in-process; store commands exit via SystemExit on failure."""
    try:
        return cli.main([*args, "--database-url", database_url, "--schema", store.schema])
    except SystemExit as exc:
        return int(exc.code or 0)


def stored(store: Store) -> tuple[list[str], list[tuple[int, str, str]]]:
    conn = store.connection
    ids = [row[0] for row in conn.execute("SELECT customer_id FROM events ORDER BY event_time")]
    rejects = conn.execute("SELECT row_number, reason, raw FROM rejected_events ORDER BY row_number")
    return ids, [tuple(row) for row in rejects]


@pytest.mark.parametrize(("suffix", "chunksize"), [(".csv", "500000"), (".csv", "4"), (".csv.gz", "7")])
def test_hostile_file_ingest_stores_good_rows_and_every_reject(
    tmp_path: Path,
    store: Store,
    database_url: str,
    hostile_events,
    suffix: str,
    chunksize: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = hostile_events.write(tmp_path / "hostile.csv")
    if suffix == ".csv.gz":
        path = path.with_suffix(".csv.gz")
        path.write_bytes(gzip.compress((tmp_path / "hostile.csv").read_bytes()))
    code = run_cli(database_url, store, "ingest", str(path), "--mapping", "taobao", "--chunksize", chunksize)
    assert code == 0, capsys.readouterr().err
    assert "read 51 rows -> 42 new events, 0 already present, 9 rejected" in capsys.readouterr().out
    ids, rejects = stored(store)
    # Event times increase with the file order of the good rows.
    assert ids == hostile_events.good_ids  # the injection-looking and emoji ids among them
    assert [(n, reason) for n, reason, _ in rejects] == hostile_events.rejects
    for row_number, _, raw in rejects:
        assert hostile_events.raw_bytes(raw) == hostile_events.lines[row_number - 1]
    assert store.table_counts()["ingested_files"] == 1


def test_a_mostly_rejected_file_is_refused_and_nothing_is_written(
    tmp_path: Path, store: Store, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    good = [f"u{i},i1,c1,pv,{1772323200 + i}" for i in range(8)]
    bad = [f"u{i};i1;c1;pv;1772323200" for i in range(12)]  # semicolons: a wrong dialect
    path = tmp_path / "mostly_bad.csv"
    path.write_text("\n".join(good[:4] + bad + good[4:]) + "\n")
    with pytest.raises(MostlyRejectedError, match=r"malformed_row x12 \(rows 5, 6, 7, 8, 9, \.\.\.\)"):
        store.ingest_file(path, "taobao", "run-1", chunksize=3)  # chunks were written, then rolled back
    counts = store.table_counts()
    assert (counts["events"], counts["rejected_events"], counts["ingested_files"]) == (0, 0, 0)

    code = run_cli(database_url, store, "ingest", str(path), "--mapping", "taobao", "--chunksize", "3")
    err = capsys.readouterr().err
    assert code == 1
    assert "refused, 12 of 20 rows rejected (60%, above max_reject_share 0.5)" in err
    assert "malformed_row x12 (rows 5, 6, 7, 8, 9, ...)" in err
    assert store.table_counts()["events"] == 0

    code = run_cli(
        database_url, store, "ingest", str(path), "--mapping", "taobao", "--max-reject-share", "0.7"
    )
    assert code == 0, capsys.readouterr().err
    ids, rejects = stored(store)
    assert len(ids) == 8
    malformed = event_schema.REASON_MALFORMED_ROW
    assert [(n, reason) for n, reason, _ in rejects] == [(n, malformed) for n in range(5, 17)]
