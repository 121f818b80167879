"""Loading events files: read, validate and merge the line-level rejects, chunk by chunk."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from traitflow import csv_lines, event_schema
from traitflow.events.mapping import ColumnMapping
from traitflow.events.presets import resolve_mapping
from traitflow.events.readers import open_chunks
from traitflow.events.rejects import DEFAULT_MAX_REJECT_SHARE, RejectTally, check_share
from traitflow.events.validation import LoadResult, SeenHashes, validate_frame


def read_events(
    path: str | Path,
    mapping: ColumnMapping | str = "canonical",
    *,
    source: str | None = None,
    chunksize: int | None = None,
    max_reject_share: float = DEFAULT_MAX_REJECT_SHARE,
) -> LoadResult:
    """Load and validate a whole .csv, .csv.gz or .parquet file (``source`` defaults to the path).

    With ``chunksize`` the file is read in pieces (lower peak memory) with the same result.
    Raises ``MostlyRejectedError`` if more than ``max_reject_share`` of the rows are rejected
    (see ``traitflow.events``; 1.0 never refuses).
    """
    max_reject_share = check_share(max_reject_share)
    mapping = resolve_mapping(mapping)
    path = Path(path)
    chunks = open_chunks(path, mapping, chunksize)
    # One chunk needs no cross-chunk duplicate tracking; several chunks must match one-shot reading.
    parts = list(
        _validated(
            chunks,
            mapping,
            source or str(path),
            track_duplicates=chunksize is not None,
            max_reject_share=max_reject_share,
        )
    )
    if not parts:
        return LoadResult(event_schema.empty_events(), event_schema.empty_rejects())
    return LoadResult(
        events=pd.concat([p.events for p in parts], ignore_index=True),
        rejects=pd.concat([p.rejects for p in parts], ignore_index=True),
        products=event_schema.merge_name_counts([p.products for p in parts]),
        event_row_numbers=np.concatenate([p.event_row_numbers for p in parts]),
    )


def iter_events(
    path: str | Path,
    mapping: ColumnMapping | str = "canonical",
    *,
    source: str | None = None,
    chunksize: int = 1_000_000,
    max_reject_share: float = DEFAULT_MAX_REJECT_SHARE,
) -> Iterator[LoadResult]:
    """Validate a file ``chunksize`` rows at a time.

    Row numbers are global, and a row repeating the natural key of a valid row of an earlier chunk
    is rejected as ``exact_duplicate`` or ``conflicting_duplicate`` (tracked by 64-bit hashes of
    the row and of its key, 16 bytes per kept event), so the chunks concatenated equal
    ``read_events``. File problems raise here, not on first iteration; a
    mostly rejected file (``MostlyRejectedError``) raises after the last chunk, so a consumer
    that writes chunks inside one transaction (``Store.ingest_file``) rolls all of them back.
    """
    if chunksize < 1:
        raise ValueError(f"chunksize must be >= 1, got {chunksize}")
    max_reject_share = check_share(max_reject_share)
    mapping = resolve_mapping(mapping)
    path = Path(path)
    chunks = open_chunks(path, mapping, chunksize)
    return _validated(
        chunks, mapping, source or str(path), track_duplicates=True, max_reject_share=max_reject_share
    )


def validate_events(
    raw: pd.DataFrame, mapping: ColumnMapping, *, source: str, first_row_number: int = 1
) -> LoadResult:
    """Validate a string frame with source column names; row numbers start at ``first_row_number``.

    Non-string columns are converted with ``astype(str)`` and missing values treated as blank.
    """
    result, _ = validate_frame(raw, mapping, source, first_row_number, seen=None)
    return result


def _validated(
    chunks: Iterable[csv_lines.RecordChunk],
    mapping: ColumnMapping,
    source: str,
    *,
    track_duplicates: bool,
    max_reject_share: float = 1.0,
) -> Iterator[LoadResult]:
    """Validate each chunk's parsed rows and merge in its line-level rejects, by row number."""
    seen = SeenHashes.empty() if track_duplicates else None
    tally = RejectTally()
    for chunk in chunks:
        # Validated with positions as row numbers, then mapped to the records' own numbers: the
        # parsed rows skip the numbers of lines rejected before parsing.
        result, seen = validate_frame(chunk.frame, mapping, source, 0, seen)
        rejects = result.rejects.assign(
            row_number=chunk.row_numbers[result.rejects["row_number"].to_numpy(dtype=np.int64)]
        )
        if len(chunk.rejects):
            lines = chunk.rejects.assign(source=pd.Series([source] * len(chunk.rejects), dtype="str"))
            rejects = pd.concat([rejects, lines[list(event_schema.REJECT_COLUMNS)]], ignore_index=True)
            rejects = rejects.sort_values("row_number", kind="stable", ignore_index=True)
        tally.add(chunk.n_records, rejects)
        numbers = chunk.row_numbers[result.event_row_numbers]
        yield LoadResult(result.events, rejects, result.products, event_row_numbers=numbers)
    tally.refuse_if_mostly_rejected(source, mapping.name, max_reject_share)
