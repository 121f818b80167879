"""Split CSV bytes into records, vectorized, and set malformed lines aside as line-level rejects.

A CSV file is read as bytes in blocks of ``BLOCK_BYTES``. Each block is scanned with numpy for
record ends (newlines outside quotes), field separators (delimiters outside quotes), CRs and
quote placement; UTF-8 is checked with one ``bytes.decode`` per block. A record is set aside,
before any parsing, as

* ``oversized_line``: longer than ``MAX_LINE_BYTES`` bytes (``raw`` keeps its first
  ``RAW_PREFIX_BYTES`` bytes: the line is not worth storing whole, and may be the whole file);
* ``invalid_encoding``: not valid UTF-8;
* ``malformed_row``: a field count other than the header's (too many, too few, a blank line), or
  broken quoting (a quote that does not open or close a field, an unterminated quote).

Well-formed records are handed to pandas' C parser in one call per block (the fast path). A block
whose quoting is irregular (see ``_quotes_regular``) or that holds a bare CR is split by physical
lines instead, each parsed by ``csv.reader`` (the slow path, taken only by such blocks): there a
record never spans lines, so a quoted line break is reported as broken quoting.

Record numbers count data records from 1: a header row is not counted, a blank line is, and a
record with a quoted line break is one record. For a file without quoted line breaks that is
the file line number minus one with a header row, and the file line number without one.

``raw`` of a line-level reject is a JSON string of the record's bytes decoded with
``surrogateescape`` and every lone surrogate written as ``\\udcXX``: always storable as PostgreSQL
text (control characters and NUL are JSON escapes), and lossless:
``json.loads(raw).encode("utf-8", "surrogateescape")`` gives back the bytes.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeAlias, TypedDict

import numpy as np
import pandas as pd

from traitflow import event_schema

MAX_LINE_BYTES = 1 << 20  # a valid event row is a few KiB at most (ids <= 256, texts <= 1024 chars)
RAW_PREFIX_BYTES = 64 << 10
BLOCK_BYTES = 8 << 20
_DECODE_WINDOW = 64 << 10
_NL, _CR, _QUOTE, _COMMA = 0x0A, 0x0D, 0x22, 0x2C
_SURROGATE = re.compile("[\ud800-\udfff]")

# An opened input file: plain or gunzipped.
ByteStream: TypeAlias = gzip.GzipFile | io.BufferedReader


class _PandasOptions(TypedDict):
    dtype: type[str]
    keep_default_na: bool
    na_filter: bool
    index_col: Literal[False]
    skip_blank_lines: bool
    encoding: str
    engine: Literal["c"]


# Options of the pandas parse of well-formed records: every field as text, nothing guessed.
PANDAS_OPTIONS: _PandasOptions = {
    "dtype": str,
    "keep_default_na": False,
    "na_filter": False,
    "index_col": False,
    "skip_blank_lines": False,
    "encoding": "utf-8",
    "engine": "c",
}


class HeaderError(ValueError):
    """The header line is missing, undecodable, malformed or over-long (a file-level problem)."""


@dataclass(frozen=True)
class RecordChunk:
    """Consecutive records of a file: the well-formed ones parsed, the others set aside.

    frame: string columns named by the header, one row per well-formed record.
    row_numbers: int64 array, len(frame): the record number of each frame row (increasing).
    rejects: line-level rejects, columns ``row_number`` (int64), ``raw``, ``reason`` (str),
        by increasing row_number.
    first, last: the record numbers this chunk covers (every number in between is in exactly
        one of ``frame`` and ``rejects``); ``last = first - 1`` for an empty chunk.
    """

    frame: pd.DataFrame
    row_numbers: np.ndarray
    rejects: pd.DataFrame
    first: int
    last: int

    @property
    def n_records(self) -> int:
        return self.last - self.first + 1

    def split(self, last: int) -> tuple[RecordChunk, RecordChunk]:
        """(records first..last, records last+1..self.last)."""
        k = int(np.searchsorted(self.row_numbers, last, side="right"))
        j = int(np.searchsorted(self.rejects["row_number"].to_numpy(), last, side="right"))
        head = RecordChunk(
            self.frame.iloc[:k].reset_index(drop=True),
            self.row_numbers[:k],
            self.rejects.iloc[:j].reset_index(drop=True),
            self.first,
            last,
        )
        tail = RecordChunk(
            self.frame.iloc[k:].reset_index(drop=True),
            self.row_numbers[k:],
            self.rejects.iloc[j:].reset_index(drop=True),
            last + 1,
            self.last,
        )
        return head, tail


def empty_line_rejects() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "row_number": pd.Series([], dtype="int64"),
            "raw": pd.Series([], dtype="str"),
            "reason": pd.Series([], dtype="str"),
        }
    )


def escape_raw(data: bytes) -> str:
    """``data`` as a JSON string that PostgreSQL text can hold and that round-trips to the bytes."""
    text = json.dumps(data.decode("utf-8", "surrogateescape"), ensure_ascii=False)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def open_bytes(path: Path) -> ByteStream:
    """The file's bytes, gunzipped for a ``.gz`` name."""
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def read_header(path: Path) -> list[str] | None:
    """Column names from the first line (pandas' rules: BOM dropped, duplicates renamed), or None
    for an empty file."""
    with open_bytes(path) as stream:
        line = stream.readline(MAX_LINE_BYTES + 1)
    if not line:
        return None
    if len(line) > MAX_LINE_BYTES:
        raise HeaderError(f"header line longer than {MAX_LINE_BYTES} bytes")
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HeaderError(f"header line is not UTF-8: {exc}") from None
    try:
        return [str(c) for c in pd.read_csv(io.BytesIO(line), nrows=0, **PANDAS_OPTIONS).columns]
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise HeaderError(f"cannot parse the header line: {exc}") from None


def iter_records(
    path: Path, names: list[str], *, has_header: bool, chunksize: int | None
) -> Iterator[RecordChunk]:
    """Chunks of ``chunksize`` records (the last may be shorter; None: one chunk for the file)."""
    pending: list[RecordChunk] = []
    n_pending = 0
    for piece in _pieces(path, names, has_header=has_header):
        pending.append(piece)
        n_pending += piece.n_records
        while chunksize is not None and n_pending >= chunksize:
            head, tail = _concat(pending).split(pending[0].first + chunksize - 1)
            yield head
            pending, n_pending = [tail], tail.n_records
    if n_pending:
        yield _concat(pending)


def _concat(chunks: list[RecordChunk]) -> RecordChunk:
    if len(chunks) == 1:
        return chunks[0]
    return RecordChunk(
        pd.concat([c.frame for c in chunks], ignore_index=True),
        np.concatenate([c.row_numbers for c in chunks]),
        pd.concat([c.rejects for c in chunks], ignore_index=True),
        chunks[0].first,
        chunks[-1].last,
    )


def _pieces(path: Path, names: list[str], *, has_header: bool) -> Iterator[RecordChunk]:
    """One RecordChunk per block of the file, numbered on from record 1."""
    next_number = 1
    with open_bytes(path) as stream:
        if has_header:
            stream.readline(MAX_LINE_BYTES + 1)  # read_header has vetted it
        buffer = b""
        final = False
        while not final:
            more = stream.read(BLOCK_BYTES)
            final = not more
            buffer += more
            if not buffer:
                break
            scan = _Scan(buffer, len(names), final=final)
            if scan.used == 0:
                continue  # no record end yet, and less than MAX_LINE_BYTES buffered (see _Scan)
            piece = scan.records(names, next_number)
            next_number = piece.last + 1
            buffer = buffer[scan.used :]
            yield piece
            if scan.cut_line:  # the rest of that oversized line belongs to the reject just made
                buffer, final = _skip_line(stream, buffer)


def _skip_line(stream: ByteStream, buffer: bytes) -> tuple[bytes, bool]:
    """Drop bytes up to and including the next newline; (what follows, end of file reached)."""
    while True:
        at = buffer.find(b"\n")
        if at >= 0:
            return buffer[at + 1 :], False
        buffer = stream.read(BLOCK_BYTES)
        if not buffer:
            return b"", True


class _Scan:
    """Record boundaries and line-level verdicts of a buffer that starts at a record start.

    ``used``: bytes consumed (whole records; the rest is carried into the next block).
    """

    def __init__(self, buffer: bytes, n_fields: int, *, final: bool) -> None:
        self.buffer, self.n_fields, self.final = buffer, n_fields, final
        arr = np.frombuffer(buffer, dtype=np.uint8)
        self.arr = arr
        newlines = np.flatnonzero(arr == _NL)
        self.quotes = np.flatnonzero(arr == _QUOTE)
        cr = np.flatnonzero(arr == _CR)
        nxt = cr + 1
        bare_cr = bool(np.any((nxt < len(arr)) & (arr[np.minimum(nxt, len(arr) - 1)] != _NL))) or (
            final and len(cr) > 0 and cr[-1] == len(arr) - 1
        )
        self.by_lines = bare_cr
        ends = newlines
        if len(self.quotes) and not self.by_lines:
            outside = np.searchsorted(self.quotes, newlines) % 2 == 0
            ends = newlines[outside]
            unterminated = len(self.quotes) % 2 == 1
            carried = len(arr) - (ends[-1] + 1 if len(ends) else 0)
            if not _quotes_regular(arr, self.quotes) or (unterminated and final):
                self.by_lines = True
            elif unterminated and carried > MAX_LINE_BYTES:
                self.by_lines = True  # a quote left open for a megabyte: broken, not a long field
        if self.by_lines:
            ends = newlines
        if final and len(arr) and arr[-1] != _NL:
            ends = np.append(ends, len(arr))  # the last record may lack its newline
        self.cut_line = not final and not len(ends) and len(arr) > MAX_LINE_BYTES
        if self.cut_line:
            # No newline in over MAX_LINE_BYTES: reject the line now, skip its rest (_skip_line).
            ends = np.array([len(arr)])
        self.ends = ends.astype(np.int64)
        self.used = int(min(self.ends[-1] + 1, len(arr))) if len(self.ends) else 0
        self.starts = np.concatenate([[0], self.ends[:-1] + 1]).astype(np.int64)

    def records(self, names: list[str], first_number: int) -> RecordChunk:
        starts, ends, arr = self.starts, self.ends, self.arr
        n = len(ends)
        has_cr = (ends > starts) & (arr[np.maximum(ends - 1, 0)] == _CR)
        content_ends = ends - has_cr
        reasons = np.full(n, "", dtype=object)
        reasons[self._wrong_field_count(starts, content_ends)] = event_schema.REASON_MALFORMED_ROW
        reasons[self._undecodable(starts, ends)] = event_schema.REASON_INVALID_ENCODING
        oversized = ends - starts > MAX_LINE_BYTES
        reasons[oversized] = event_schema.REASON_OVERSIZED_LINE
        if self.by_lines:
            frame, reasons = self._parse_lines(names, starts, content_ends, reasons)
        else:
            frame = self._parse_fast(names, starts, ends, reasons == "")
        bad = np.flatnonzero(reasons != "")
        raw = [
            escape_raw(self.buffer[starts[i] : min(content_ends[i], starts[i] + RAW_PREFIX_BYTES)])
            for i in bad  # a loop over rejected lines only
        ]
        numbers = first_number + np.arange(n, dtype=np.int64)
        rejects = pd.DataFrame(
            {
                "row_number": numbers[bad],
                "raw": pd.Series(raw, dtype="str"),
                "reason": pd.Series(reasons[bad], dtype="str"),
            }
        )
        return RecordChunk(frame, numbers[reasons == ""], rejects, first_number, first_number + n - 1)

    def _wrong_field_count(self, starts: np.ndarray, content_ends: np.ndarray) -> np.ndarray:
        if self.by_lines:
            return np.zeros(len(starts), dtype=bool)  # csv.reader counts them in _parse_lines
        commas = np.flatnonzero(self.arr == _COMMA)
        if len(self.quotes):
            commas = commas[np.searchsorted(self.quotes, commas) % 2 == 0]
        fields = 1 + np.searchsorted(commas, content_ends) - np.searchsorted(commas, starts)
        return fields != self.n_fields

    def _undecodable(self, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Records holding bytes that are not UTF-8.

        Decoded a window of whole records (about ``_DECODE_WINDOW`` bytes) at a time, at C speed;
        after an error, decoding resumes after the bad record. Small windows keep each retry's
        cost (Python allocates for the whole input it is asked to decode) independent of the
        block size, so a file with a bad byte on every line stays linear.
        """
        bad = np.zeros(len(starts), dtype=bool)
        view, size, first = memoryview(self.buffer), len(self.buffer), 0
        while first < len(ends):
            last = max(first + 1, int(np.searchsorted(ends, starts[first] + _DECODE_WINDOW, side="right")))
            position, stop = int(starts[first]), min(int(ends[last - 1]), size)
            while position < stop:
                try:
                    str(view[position:stop], "utf-8")
                    break
                except UnicodeDecodeError as exc:
                    record = int(np.searchsorted(ends, position + exc.start, side="left"))
                    bad[record] = True
                    position = int(ends[record]) + 1
            first = last
        return bad

    def _parse_fast(
        self, names: list[str], starts: np.ndarray, ends: np.ndarray, good: np.ndarray
    ) -> pd.DataFrame:
        """Well-formed records through pandas' C parser, one call for the block."""
        n_good = int(good.sum())
        if not n_good:
            return pd.DataFrame({name: pd.Series([], dtype="str") for name in names})
        if good.all():
            data = self.buffer[: int(ends[-1])]
        else:
            # Runs of consecutive good records, joined: a loop over the bad records only.
            edges = np.flatnonzero(np.diff(np.concatenate([[0], good.view(np.int8), [0]])))
            runs = zip(edges[::2], edges[1::2], strict=True)
            data = b"\n".join(self.buffer[int(starts[a]) : int(ends[b - 1])] for a, b in runs)
        frame = pd.read_csv(io.BytesIO(data + b"\n"), header=None, names=names, **PANDAS_OPTIONS)
        if len(frame) != n_good:  # the scan and pandas must agree on what a record is
            raise RuntimeError(f"CSV scan found {n_good} records but pandas parsed {len(frame)}")
        return frame

    def _parse_lines(
        self, names: list[str], starts: np.ndarray, content_ends: np.ndarray, reasons: np.ndarray
    ) -> tuple[pd.DataFrame, np.ndarray]:
        """The slow path for a block with irregular quoting: one ``csv.reader`` call per line."""
        rows: list[list[str]] = []
        for i in np.flatnonzero(reasons == ""):
            line = self.buffer[starts[i] : content_ends[i]].decode("utf-8")
            try:
                fields = next(csv.reader([line], strict=True), [])
            except csv.Error:
                fields = []
            if len(fields) == len(names):
                rows.append(fields)
            else:
                reasons[i] = event_schema.REASON_MALFORMED_ROW
        frame = pd.DataFrame(rows, columns=names, dtype="str") if rows else None
        if frame is None:
            frame = pd.DataFrame({name: pd.Series([], dtype="str") for name in names})
        return frame, reasons


def _quotes_regular(arr: np.ndarray, quotes: np.ndarray) -> bool:
    """Do quotes only open fields (after a delimiter or line start) and close them (before a
    delimiter or line end), with ``""`` inside a quoted field? Then their parity tells which
    delimiters and newlines are inside a field, exactly as a CSV parser reads them."""
    n = len(arr)
    opening, closing = quotes[0::2], quotes[1::2]
    before = arr[np.maximum(opening - 1, 0)]
    reopened = np.isin(opening - 1, closing)  # the second quote of a "" pair
    opens_ok = (opening == 0) | (before == _COMMA) | (before == _NL) | reopened
    after_at = closing + 1
    after = arr[np.minimum(after_at, n - 1)]
    at_end = after_at >= n
    escaped = np.isin(after_at, opening)
    closes_ok = at_end | escaped | (after == _COMMA) | (after == _NL) | (after == _CR)
    return bool(opens_ok.all() and closes_ok.all())
