"""Reading events files as chunks of all-string frames: CSV (optionally gzipped) and Parquet.

Each chunk (``csv_lines.RecordChunk``) carries its rows' numbers and the line-level rejects of
CSV lines that did not become a row of fields. File-level problems are ``EventsFileError``.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from traitflow import csv_lines
from traitflow.events.errors import EventsFileError
from traitflow.events.mapping import ColumnMapping

T = TypeVar("T")

# pandas writes a non-range index into Parquet under this name; it is not a field of the data.
_PANDAS_INDEX_COLUMN = re.compile(r"__index_level_\d+__")


def open_chunks(path: Path, mapping: ColumnMapping, chunksize: int | None) -> Iterator[csv_lines.RecordChunk]:
    """Check the file now; return a lazy iterator of chunks of all-string frames ('' for null or
    absent) with their row numbers and line-level rejects."""
    if not path.is_file():
        raise EventsFileError(f"events file not found: {path}")
    name = path.name.lower()
    if name.endswith(".parquet"):
        return _parquet_chunks(path, mapping, chunksize)
    if name.endswith((".csv", ".csv.gz")):
        return _csv_chunks(path, mapping, chunksize)
    raise EventsFileError(f"{path}: unsupported file type; expected .csv, .csv.gz or .parquet")


def _csv_chunks(path: Path, mapping: ColumnMapping, chunksize: int | None) -> Iterator[csv_lines.RecordChunk]:
    # Fields are read as text, nothing guessed ("NA", "null" stay text); a blank line is a record
    # (a malformed_row reject) so that row numbers match the file.
    if mapping.header is None:
        names = _strict_csv(path, lambda: csv_lines.read_header(path))
        if names is None:
            raise EventsFileError(f"{path}: file is empty; expected a header row")
        mapping.resolve(names, str(path))  # raises unless every mapped column is present
    else:
        names = list(mapping.header)
    return _csv_frames(path, names, has_header=mapping.header is None, chunksize=chunksize)


def _csv_frames(
    path: Path, names: list[str], *, has_header: bool, chunksize: int | None
) -> Iterator[csv_lines.RecordChunk]:
    records = csv_lines.iter_records(path, names, has_header=has_header, chunksize=chunksize)
    while (chunk := _strict_csv(path, lambda: next(records, None))) is not None:
        yield chunk


def _strict_csv(path: Path, read: Callable[[], T]) -> T:
    """Run a read of the file, turning a broken header and undecodable compression into errors."""
    try:
        return read()
    except csv_lines.HeaderError as exc:
        raise EventsFileError(f"{path}: {exc}") from exc
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise EventsFileError(f"{path}: cannot decode (expected UTF-8 CSV, optionally gzip): {exc}") from exc


def _parquet_chunks(
    path: Path, mapping: ColumnMapping, chunksize: int | None
) -> Iterator[csv_lines.RecordChunk]:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise EventsFileError(f"{path}: not a readable Parquet file: {exc}") from exc
    names = [n for n in parquet.schema_arrow.names if not _PANDAS_INDEX_COLUMN.fullmatch(n)]
    mapping.resolve(names, str(path))  # raises unless every mapped column is present
    batches = (
        parquet.iter_batches(batch_size=chunksize, columns=names) if chunksize else [parquet.read(names)]
    )
    return _numbered(_arrow_as_strings(path, batch) for batch in batches)


def _numbered(frames: Iterable[pd.DataFrame]) -> Iterator[csv_lines.RecordChunk]:
    """Frames of consecutive rows (no line-level rejects) as chunks numbered from 1."""
    first = 1
    for frame in frames:
        last = first + len(frame) - 1
        numbers = np.arange(first, last + 1, dtype=np.int64)
        yield csv_lines.RecordChunk(frame, numbers, csv_lines.empty_line_rejects(), first, last)
        first = last + 1


def _arrow_as_strings(path: Path, data: pa.Table | pa.RecordBatch) -> pd.DataFrame:
    """Typed Parquet columns as text (ints as digits, timestamps as ISO), like a CSV would hold them."""
    try:
        columns = {name: pc.cast(data.column(name), pa.string()) for name in data.column_names}
    except pa.ArrowException as exc:
        raise EventsFileError(f"{path}: a column cannot be read as text: {exc}") from exc
    return pa.table(columns).to_pandas().fillna("")
