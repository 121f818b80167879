"""Line-level rejects (traitflow.csv_lines) through the loaders, and the mostly-rejected refusal."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from traitflow import csv_lines, event_schema
from traitflow.events import (
    MIN_REJECTS_TO_REFUSE,
    EventsFileError,
    LoadResult,
    MostlyRejectedError,
    iter_events,
    read_events,
)

HEADER = ",".join(event_schema.CANONICAL_COLUMNS)
GOOD = "c{i},2024-01-01T00:{m:02d}:00Z,view,p{i},cat,1.5,s{i}"


def good(i: int) -> str:
    return GOOD.format(i=i, m=i % 60)


def write(path: Path, lines: list[str | bytes], *, header: bool = True) -> Path:
    raw = [line.encode() if isinstance(line, str) else line for line in lines]
    path.write_bytes(b"\n".join(([HEADER.encode()] if header else []) + raw) + b"\n")
    return path


def chunked(path: Path, chunksize: int, mapping: str = "canonical") -> LoadResult:
    parts = list(iter_events(path, mapping, chunksize=chunksize))
    assert all(p.n_read == chunksize for p in parts[:-1])  # chunks of exactly chunksize records
    return LoadResult(
        pd.concat([p.events for p in parts], ignore_index=True),
        pd.concat([p.rejects for p in parts], ignore_index=True),
    )


def reasons(result: LoadResult) -> list[list[object]]:
    return result.rejects[["row_number", "reason"]].values.tolist()


# --- the hostile file ----------------------------------------------------------------------------


def check_hostile(result: LoadResult, hostile) -> None:
    assert result.events["customer_id"].tolist() == hostile.good_ids
    assert reasons(result) == [list(r) for r in hostile.rejects]
    for row_number, raw in result.rejects[["row_number", "raw"]].itertuples(index=False):
        assert hostile.raw_bytes(raw) == hostile.lines[row_number - 1]  # the line is kept
        assert "\x00" not in raw  # storable as PostgreSQL text


def test_hostile_file_loads_its_good_rows_and_rejects_each_bad_line(tmp_path: Path, hostile_events) -> None:
    path = hostile_events.write(tmp_path / "hostile.csv")
    result = read_events(path, "taobao")
    assert result.n_read == len(hostile_events.lines) == 51
    assert (len(result.events), len(result.rejects)) == (42, 9)
    check_hostile(result, hostile_events)
    assert result.rejects["raw"][2] == '"u9\\udcff02,i1,c1,pv,1772323200"'  # the 0xFF byte, escaped


def test_hostile_file_gzipped_and_chunked_gives_the_same_result(tmp_path: Path, hostile_events) -> None:
    plain = hostile_events.write(tmp_path / "hostile.csv")
    whole = read_events(plain, "taobao")
    packed = tmp_path / "hostile.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    for path, chunksizes in ((plain, (1, 7, 50, 51, 1000)), (packed, (3,))):
        result = read_events(path, "taobao", source=str(plain))
        pd.testing.assert_frame_equal(result.events, whole.events)
        pd.testing.assert_frame_equal(result.rejects, whole.rejects)
        for chunksize in chunksizes:
            result = chunked(path, chunksize, "taobao")
            pd.testing.assert_frame_equal(result.events, whole.events)
            pd.testing.assert_frame_equal(result.rejects.assign(source=str(plain)), whole.rejects)


def test_block_boundaries_do_not_change_the_result(
    tmp_path: Path, hostile_events, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks cut anywhere (mid-line, mid-quote, mid-UTF-8 character) give the same records."""
    path = hostile_events.write(tmp_path / "hostile.csv")
    quoted = write(
        tmp_path / "quoted.csv",
        [good(1), 'c2,2024-01-01,view,"p,2","multi\nline",,"s ""q"""', "c3,2024-01-01,view,p3,,,", "ü,x"],
    )
    expected = [read_events(p, m) for p, m in ((path, "taobao"), (quoted, "canonical"))]
    assert reasons(expected[1]) == [
        [2, event_schema.REASON_CONTROL_CHARS],
        [4, event_schema.REASON_MALFORMED_ROW],
    ]
    for block in (1, 2, 5, 13, 64, 997):
        monkeypatch.setattr(csv_lines, "BLOCK_BYTES", block)
        for (p, m), want in zip(((path, "taobao"), (quoted, "canonical")), expected, strict=True):
            got = read_events(p, m)
            pd.testing.assert_frame_equal(got.events, want.events)
            pd.testing.assert_frame_equal(got.rejects, want.rejects)


# --- each kind of line ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "c9,2024-01-01,view,p9,,,,",  # one field too many (an empty one)
        "c9,2024-01-01,view,p9,,",  # one too few
        "",  # blank
        '"c9,2024-01-01,view,p9,,,',  # unterminated quote
        'c9,"2024"-01-01,view,p9,,,',  # a quote that does not close its field
        "c9,2024-01-01,view,p9\r,,,",  # a bare CR
    ],
)
def test_malformed_lines(tmp_path: Path, line: str) -> None:
    path = write(tmp_path / "bad.csv", [good(1), line, good(3)])
    result = read_events(path)
    assert result.events["customer_id"].tolist() == ["c1", "c3"]
    assert reasons(result) == [[2, event_schema.REASON_MALFORMED_ROW]]
    assert json.loads(result.rejects["raw"][0]) == line


def test_well_formed_quoting_crlf_and_literal_quotes_are_not_rejects(tmp_path: Path) -> None:
    lines = [
        'c1,2024-01-01,view,"p,1","a ""b""",,',  # quoted delimiter, escaped quotes
        "c2,2024-01-01,view,p2,,,\r",  # CRLF
        'c3,2024-01-01,view,p"3,,,',  # a quote inside an unquoted field is text (as pandas reads it)
    ]
    result = read_events(write(tmp_path / "ok.csv", lines))
    assert result.rejects.empty
    assert result.events["product_id"].tolist() == ["p,1", "p2", 'p"3']
    assert result.events["category"].tolist()[0] == 'a "b"'


def test_a_quoted_line_break_is_one_record(tmp_path: Path) -> None:
    path = write(tmp_path / "q.csv", [good(1), 'c2,2024-01-01,view,p2,"two\nlines",,', "c3,x,view,p3,,,"])
    result = read_events(path)
    assert result.events["customer_id"].tolist() == ["c1"]
    # The record with the line break is record 2 (file lines 3-4); the next one is record 3.
    assert reasons(result) == [[2, event_schema.REASON_CONTROL_CHARS], [3, event_schema.REASON_BAD_TIME]]


def test_oversized_lines_keep_a_prefix_and_the_rest_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(csv_lines, "MAX_LINE_BYTES", 100)
    monkeypatch.setattr(csv_lines, "RAW_PREFIX_BYTES", 20)
    long_line = "c2,2024-01-01,view,p2,,," + "x" * 200
    for block in (8 << 20, 30):  # the long line within one block, and spread over several
        monkeypatch.setattr(csv_lines, "BLOCK_BYTES", block)
        result = read_events(write(tmp_path / "long.csv", [good(1), long_line, good(3), "x" * 500]))
        assert result.events["customer_id"].tolist() == ["c1", "c3"]
        assert reasons(result) == [
            [2, event_schema.REASON_OVERSIZED_LINE],
            [4, event_schema.REASON_OVERSIZED_LINE],
        ]
        assert json.loads(result.rejects["raw"][0]) == long_line[:20]
    (tmp_path / "wide_header.csv").write_text("a" * 101 + "\n")
    with pytest.raises(EventsFileError, match="header line longer than 100 bytes"):
        read_events(tmp_path / "wide_header.csv")


def test_undecodable_bytes_are_escaped_losslessly(tmp_path: Path) -> None:
    lines: list[str | bytes] = [b"c1\xc3,2024-01-01,view,p1,,,", good(2), b"c3,2024-01-01,view,\xe2\x82,,,"]
    result = read_events(write(tmp_path / "enc.csv", lines))
    assert result.events["customer_id"].tolist() == ["c2"]
    assert reasons(result) == [
        [1, event_schema.REASON_INVALID_ENCODING],
        [3, event_schema.REASON_INVALID_ENCODING],
    ]
    back = [json.loads(raw).encode("utf-8", "surrogateescape") for raw in result.rejects["raw"]]
    assert back == [lines[0], lines[2]]


def test_escape_raw_round_trips_any_bytes() -> None:
    data = bytes(range(256)) + "ü🛒".encode()
    raw = csv_lines.escape_raw(data)
    raw.encode("utf-8")  # no lone surrogates: storable
    assert "\x00" not in raw
    assert json.loads(raw).encode("utf-8", "surrogateescape") == data


def test_header_problems_stay_file_errors(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(EventsFileError, match="file is empty"):
        read_events(tmp_path / "empty.csv")
    write(tmp_path / "wrong.csv", [good(1)], header=False)
    with pytest.raises(EventsFileError, match="needs columns"):
        read_events(tmp_path / "wrong.csv")


# --- mostly rejected files -----------------------------------------------------------------------


def mostly_bad(path: Path, n_good: int, n_bad: int) -> Path:
    lines = [good(i) for i in range(n_good)]
    lines += [f"c{i},2024-01-01,zoom,p1,,," if i % 2 else f"c{i},1,2" for i in range(n_bad)]
    return write(path, lines)


def test_a_mostly_rejected_file_is_refused_naming_reasons_and_rows(tmp_path: Path) -> None:
    path = mostly_bad(tmp_path / "bad.csv", 10, 30)
    for read in (
        lambda: read_events(path),
        lambda: read_events(path, chunksize=7),
        lambda: list(iter_events(path, chunksize=4)),
    ):
        with pytest.raises(MostlyRejectedError) as caught:
            read()
        message = str(caught.value)
        assert "refused, 30 of 40 rows rejected (75%, above max_reject_share 0.5)" in message
        assert "malformed_row x15 (rows 11, 13, 15, 17, 19, ...)" in message
        assert "unknown_action x15 (rows 12, 14, 16, 18, 20, ...)" in message
        assert "Nothing from this file was loaded" in message
        assert caught.value.counts == {
            event_schema.REASON_MALFORMED_ROW: 15,
            event_schema.REASON_UNKNOWN_ACTION: 15,
        }
    assert len(read_events(path, max_reject_share=0.8).rejects) == 30  # a higher limit loads it
    assert len(read_events(path, max_reject_share=1.0).events) == 10
    with pytest.raises(ValueError, match=r"max_reject_share must be in \[0, 1\]"):
        read_events(path, max_reject_share=1.5)


def test_tiny_files_and_duplicates_are_not_refused(tmp_path: Path) -> None:
    # Half bad is not above the limit; fewer than MIN_REJECTS_TO_REFUSE rejects never refuse.
    assert len(read_events(mostly_bad(tmp_path / "half.csv", 20, 20)).rejects) == 20
    few = MIN_REJECTS_TO_REFUSE - 1
    assert len(read_events(mostly_bad(tmp_path / "few.csv", 1, few)).rejects) == few
    with pytest.raises(MostlyRejectedError):
        read_events(mostly_bad(tmp_path / "ten.csv", 1, MIN_REJECTS_TO_REFUSE))
    # A file repeated three times is two-thirds exact duplicates: not a wrong mapping.
    repeated = write(tmp_path / "repeated.csv", [good(i) for i in range(20)] * 3)
    result = read_events(repeated)
    assert (len(result.events), len(result.rejects)) == (20, 40)


def test_parquet_files_are_refused_too(tmp_path: Path) -> None:
    rows = [dict(zip(event_schema.CANONICAL_COLUMNS, good(i).split(","), strict=True)) for i in range(5)]
    rows += [{**rows[0], "customer_id": f"z{i}", "action": "zoom"} for i in range(15)]
    pd.DataFrame(rows, dtype="str").to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(MostlyRejectedError, match=r"unknown_action x15 \(rows 6, 7, 8, 9, 10, \.\.\.\)"):
        read_events(tmp_path / "bad.parquet", chunksize=4)


@pytest.mark.parametrize("command", ["train", "evaluate", "tune"])
def test_file_reading_commands_refuse_a_mostly_rejected_file(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from traitflow import cli

    path = mostly_bad(tmp_path / "bad.csv", 10, 30)
    extra = ["--out", str(tmp_path / "model")] if command == "train" else []
    assert cli.main([command, str(path), *extra]) == 2
    err = capsys.readouterr().err
    assert "refused, 30 of 40 rows rejected" in err and "malformed_row x15 (rows 11, 13," in err
    for share in ("1.5", "-0.1", "half"):
        with pytest.raises(SystemExit) as caught:
            cli.build_parser().parse_args([command, str(path), *extra, "--max-reject-share", share])
        assert caught.value.code == 2
