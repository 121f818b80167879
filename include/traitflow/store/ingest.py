"""Idempotent bulk ingestion of canonical events and their rejects.

Path of a batch: check the storage contract (vectorized) -> binary COPY into a temporary table ->
``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` into ``events`` / ``rejected_events``. The
natural keys make a re-run add nothing: ``events (customer_id, event_time, action, product_id)``
and ``rejected_events (source, row_number)``. Files are additionally recorded by SHA-256 in
``ingested_files`` so a repeated file is recognised without reading it.

No row vanishes on the events key (``traitflow.event_schema.duplicate_masks``): an event whose key is
stored with the same category, price and session id is "already present" (a re-run); one whose
key is stored with other values, or repeats the key of an earlier event of the same batch with
other values, is recorded in ``rejected_events`` as ``conflicting_duplicate`` under its row
number, with its canonical fields as a JSON object for ``raw`` (the loader keeps no source text
of valid rows). The stored event stays as it is: the first one in wins.

These functions run inside the caller's transaction (``Store`` opens exactly one per public
method); they never commit. With ``synchronous_commit=False`` they make that transaction's commit
asynchronous (``SET LOCAL synchronous_commit = off``: COMMIT returns before its WAL record is
flushed); the caller must then make it durable before acknowledging anything (see
``Store.ingest_events``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, NoReturn, Protocol

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from traitflow import event_schema

from . import copybin
from ._util import copy_in, require_transaction
from .errors import StoreInputError

# Event text columns with their storage limits (the SQL CHECK constraints mirror these).
_EVENT_TEXT_LIMITS: dict[str, tuple[bool, int]] = {  # column -> (required, max chars)
    "customer_id": (True, event_schema.MAX_ID_LENGTH),
    "action": (True, event_schema.MAX_ID_LENGTH),
    "product_id": (True, event_schema.MAX_ID_LENGTH),
    "category": (False, event_schema.MAX_TEXT_LENGTH),
    "session_id": (False, event_schema.MAX_TEXT_LENGTH),
}
# Postgres text cannot hold NUL; a reject's raw text is kept readable with a JSON-style escape.
NUL_ESCAPE = "\\u0000"
DEFAULT_CHUNKSIZE = 500_000


class LoadResultLike(Protocol):
    @property
    def events(self) -> pd.DataFrame: ...

    @property
    def rejects(self) -> pd.DataFrame: ...


@dataclass
class IngestReport:
    """Counts of one ingestion; ``n_read = n_inserted + n_already_present + n_rejected``.

    n_read: rows handed to the store (valid events + rejects).
    n_inserted: events new to the ``events`` table.
    n_already_present: valid events stored before with the same key and fields (re-ingestion, overlap).
    n_rejected: rejects in the input, plus ``n_conflicting`` events rejected here because their key
        was stored (or came earlier in the batch) with other fields (``conflicting_duplicate``);
        ``n_rejects_recorded`` of them were new to ``rejected_events``.
    n_conflicting: the events among ``n_rejected`` that conflict with a stored or earlier event.
    n_product_names: products whose name was stored or changed (``product_names`` table).
    skipped: the file's SHA-256 was already recorded, so nothing was read (all counts 0).
    """

    source: str
    run_id: str
    file_sha256: str | None = None
    n_read: int = 0
    n_inserted: int = 0
    n_already_present: int = 0
    n_rejected: int = 0
    n_conflicting: int = 0
    n_rejects_recorded: int = 0
    n_product_names: int = 0
    skipped: bool = False
    seconds: float = 0.0

    def add(self, other: IngestReport) -> None:
        counts = ("n_read", "n_inserted", "n_already_present", "n_rejected", "n_conflicting")
        for name in (*counts, "n_rejects_recorded"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def as_text_array(series: pd.Series | np.ndarray, column: str) -> pa.Array:
    try:
        array = pa.array(series, type=pa.large_string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise StoreInputError(f"column {column!r} must hold strings: {exc}") from exc
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _first_true(mask: pa.Array | np.ndarray) -> int:
    values = mask.to_numpy(zero_copy_only=False) if isinstance(mask, pa.Array) else mask
    return int(np.flatnonzero(np.asarray(values, dtype=bool))[0])


def check_text(array: pa.Array, column: str, *, required: bool, max_chars: int | None) -> None:
    """Raise ``StoreInputError`` for NULs, missing required values or oversized values.

    NUL is checked explicitly because PostgreSQL rejects it with an opaque encoding error; the
    events validator should have rejected such rows already, so reaching here means a bug upstream.
    """
    if len(array) == 0:
        return
    if len(array) <= _FEW_TEXTS:
        _check_few_texts(array.to_pylist(), column, required=required, max_chars=max_chars)
        return
    has_nul = pc.fill_null(pc.match_substring(array, "\x00"), False)
    if pc.any(has_nul).as_py():
        _raise_nul(column, _first_true(has_nul))
    if required:
        # Kleene or: or_ of a null is null, which pc.any skips (a NULL would pass as present).
        missing = pc.or_kleene(array.is_null(), pc.equal(pc.utf8_length(array), 0))
        if pc.any(missing).as_py():
            _raise_missing(column, _first_true(missing))
    if max_chars is not None:
        too_long = pc.fill_null(pc.greater(pc.utf8_length(array), max_chars), False)
        if pc.any(too_long).as_py():
            _raise_too_long(column, _first_true(too_long), max_chars)


# Up to this many values ``check_text`` checks the Python strings: each Arrow kernel call costs
# tens of microseconds whatever the length, five per column, several columns per posted event.
_FEW_TEXTS = 64


def _check_few_texts(values: list[str | None], column: str, *, required: bool, max_chars: int | None) -> None:
    """``check_text`` of a few values, in its order of checks (a NUL anywhere first, then a
    missing value, then a long one). ``len`` counts code points, as Arrow's ``utf8_length``."""
    for row, value in enumerate(values):
        if value is not None and "\x00" in value:
            _raise_nul(column, row)
    if required:
        for row, value in enumerate(values):
            if not value:
                _raise_missing(column, row)
    if max_chars is not None:
        for row, value in enumerate(values):
            if value is not None and len(value) > max_chars:
                _raise_too_long(column, row, max_chars)


def _raise_nul(column: str, row: int) -> NoReturn:
    raise StoreInputError(
        f"column {column!r} row {row} contains a NUL (\\x00) character, which PostgreSQL text "
        "cannot store; validate input with traitflow.events (it rejects control characters)"
    )


def _raise_missing(column: str, row: int) -> NoReturn:
    raise StoreInputError(f"column {column!r} row {row} is missing or empty")


def _raise_too_long(column: str, row: int, max_chars: int) -> NoReturn:
    raise StoreInputError(f"column {column!r} row {row} is longer than {max_chars} characters")


@dataclass
class _EventArrays:
    """A canonical events frame after the storage contract's checks: text columns as Arrow
    strings (null: missing), ``times`` tz-aware UTC, ``price`` float64 (NaN: missing)."""

    text: dict[str, pa.Array]
    times: pd.Series
    price: np.ndarray


def event_columns(
    events: pd.DataFrame, row_numbers: np.ndarray | None = None, conflicting: np.ndarray | None = None
) -> list[copybin.Column]:
    """COPY columns (canonical order) for a canonical events frame, after checking the contract.

    With ``row_numbers`` (int64) and ``conflicting`` (bool), both aligned with ``events``, they
    follow as two more columns.
    """
    return _copy_columns(_checked_events(events), row_numbers, conflicting)


def _copy_columns(
    checked: _EventArrays, row_numbers: np.ndarray | None, conflicting: np.ndarray | None
) -> list[copybin.Column]:
    text, times, price = checked.text, checked.times, checked.price
    # Stage (and so insert) in natural-key order: btree insertions into events_natural_key then
    # walk the index sequentially instead of touching a random leaf page per row, which matters
    # as soon as the index outgrows shared_buffers (measured: 2M random rows 45 s -> see bench).
    keys = pa.table(
        {
            "customer_id": text["customer_id"],
            "event_time": pa.array(
                times.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[us]")
            ),
            "action": text["action"],
            "product_id": text["product_id"],
        }
    )
    order = pa.array(pc.sort_indices(keys, sort_keys=[(k, "ascending") for k in keys.column_names]))
    np_order = order.to_numpy()
    extra = []
    if row_numbers is not None and conflicting is not None:
        extra = [copybin.int8(row_numbers[np_order]), copybin.boolean(conflicting[np_order])]
    return [
        copybin.text(text["customer_id"].take(order)),
        copybin.timestamptz(times.iloc[np_order]),
        copybin.text(text["action"].take(order)),
        copybin.text(text["product_id"].take(order)),
        copybin.text(text["category"].take(order)),
        copybin.float8(price[np_order], nan_is_null=True),  # a missing price is NULL, not NaN
        copybin.text(text["session_id"].take(order)),
        *extra,
    ]


def _checked_events(events: pd.DataFrame) -> _EventArrays:
    """``events``' columns once the storage contract holds (else ``StoreInputError``)."""
    _require_event_columns(events)
    n = len(events)
    text: dict[str, pa.Array] = {}
    for column, (required, limit) in _EVENT_TEXT_LIMITS.items():
        if column in events.columns:
            text[column] = as_text_array(events[column], column)
        else:
            text[column] = pa.nulls(n, pa.large_string())
        check_text(text[column], column, required=required, max_chars=limit)
    if n:
        unknown = pc.invert(
            pc.is_in(text["action"], value_set=pa.array(event_schema.ACTIONS, pa.large_string()))
        )
        if pc.any(unknown).as_py():
            row = _first_true(unknown)
            _raise_unknown_action(row, text["action"][row].as_py())
    return _EventArrays(text, _checked_times(events), _checked_prices(events))


def _require_event_columns(events: pd.DataFrame) -> None:
    missing = [c for c in event_schema.REQUIRED_COLUMNS if c not in events.columns]
    if missing:
        raise StoreInputError(f"events frame lacks required columns {missing}; has {list(events.columns)}")


def _raise_unknown_action(row: int, action: Any) -> NoReturn:
    raise StoreInputError(f"row {row} has action {action!r}; expected one of {event_schema.ACTIONS}")


def _checked_times(events: pd.DataFrame) -> pd.Series:
    """``event_time`` as tz-aware times (naive ones are UTC), none missing."""
    times = events["event_time"]
    if not isinstance(times.dtype, pd.DatetimeTZDtype):
        if pd.api.types.is_datetime64_dtype(times.dtype):
            times = times.dt.tz_localize("UTC")  # naive datetimes are UTC by the canonical contract
        else:
            raise StoreInputError(f"event_time must be a datetime column, got {times.dtype}")
    if times.isna().any():
        raise StoreInputError(f"event_time row {_first_true(times.isna().to_numpy())} is missing")
    return times


def _checked_prices(events: pd.DataFrame) -> np.ndarray:
    """``price`` as float64, NaN where missing, unparseable or absent."""
    if "price" not in events.columns:
        return np.full(len(events), np.nan)
    return pd.to_numeric(events["price"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _text_values(values: pd.Series | None, n: int, column: str) -> list[str | None]:
    """A text column's values as Python strings (None: missing; an absent column: all missing).
    Anything but ``str`` and None (NaN, ``pd.NA``, numbers) goes through ``as_text_array``, which
    maps missing values to None and refuses the rest."""
    if values is None:
        return [None] * n
    texts = values.tolist()
    if all(v is None or type(v) is str for v in texts):
        return texts
    return as_text_array(values, column).to_pylist()


def reject_columns(rejects: pd.DataFrame, default_source: str) -> list[copybin.Column]:
    """COPY columns (source, row_number, raw, reason) for a rejects frame."""
    return _reject_copy_columns(_checked_rejects(rejects, default_source))


def _reject_copy_columns(checked: tuple[pa.Array, np.ndarray, pa.Array, pa.Array]) -> list[copybin.Column]:
    source, row_number, raw, reason = checked
    return [copybin.text(source), copybin.int8(row_number), copybin.text(raw), copybin.text(reason)]


def _checked_rejects(
    rejects: pd.DataFrame, default_source: str
) -> tuple[pa.Array, np.ndarray, pa.Array, pa.Array]:
    """(source, row_number int64, raw with NULs escaped, reason) of a rejects frame, checked."""
    n = len(rejects)
    for column in ("row_number", "reason"):
        if column not in rejects.columns:
            raise StoreInputError(f"rejects frame lacks column {column!r}; has {list(rejects.columns)}")
    source = rejects["source"] if "source" in rejects.columns else pd.Series([None] * n, dtype="object")
    source = source.astype("object").where(source.notna(), default_source)
    raw = rejects["raw"] if "raw" in rejects.columns else pd.Series([""] * n, dtype="object")
    raw = raw.astype("object").where(raw.notna(), "")
    raw_array = pc.replace_substring(as_text_array(raw, "raw"), "\x00", NUL_ESCAPE)
    if rejects["row_number"].isna().any():
        raise StoreInputError("rejects frame has a missing row_number")
    source_array = as_text_array(source, "source")
    reason_array = as_text_array(rejects["reason"], "reason")
    check_text(source_array, "source", required=True, max_chars=None)
    check_text(reason_array, "reason", required=True, max_chars=None)
    return source_array, rejects["row_number"].to_numpy(dtype=np.int64), raw_array, reason_array


def _batch_row_numbers(
    events: pd.DataFrame | event_schema.EventRows, row_numbers: np.ndarray | None
) -> np.ndarray:
    """int64 row number per event: the given ones, else positions from 1 (a frame without any)."""
    if row_numbers is None:
        return np.arange(1, len(events) + 1, dtype=np.int64)
    numbers = np.asarray(row_numbers)
    if numbers.shape != (len(events),) or not np.issubdtype(numbers.dtype, np.integer):
        raise StoreInputError(
            f"event row numbers must be {len(events)} integers, one per event; got shape {numbers.shape}"
        )
    return numbers.astype(np.int64, copy=False)


# Rejects for staged events that conflict on the natural key: with an earlier event of the batch
# (flagged when staging), or, when {stored} is set, with a stored event whose other fields differ
# (NULL-safe: a missing price equals only a missing price). Runs after the insert, so a key
# inserted by this batch compares equal to itself. A join rather than EXISTS: with the stage
# analyzed the planner may hash-join a large stage (measured 4.4 s against 6.5 s of index probes
# plus 2 s of JIT for 394K staged rows all already stored).
_CONFLICTS_SQL = """
WITH conflicting AS MATERIALIZED (
    SELECT s.* FROM {stage} s WHERE s.conflict_in_batch
    {stored}
), recorded AS (
    INSERT INTO rejected_events (source, row_number, raw, reason, run_id)
    SELECT %(source)s, c.row_number,
           json_build_object(
               'customer_id', c.customer_id,
               'event_time', to_char(c.event_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
               'action', c.action, 'product_id', c.product_id, 'category', c.category,
               'price', c.price, 'session_id', c.session_id
           )::text,
           %(reason)s, %(run_id)s
    FROM conflicting c
    ON CONFLICT (source, row_number) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM conflicting), (SELECT count(*) FROM recorded)
"""
_STORED_CONFLICT_SQL = """UNION ALL
    SELECT s.* FROM {stage} s
    JOIN events e ON e.customer_id = s.customer_id AND e.event_time = s.event_time
        AND e.action = s.action AND e.product_id = s.product_id
    WHERE NOT s.conflict_in_batch
      AND (e.category IS DISTINCT FROM s.category OR e.price IS DISTINCT FROM s.price
           OR e.session_id IS DISTINCT FROM s.session_id)"""


_CONFLICTS_WITH_STORED = _CONFLICTS_SQL.format(stored=_STORED_CONFLICT_SQL, stage="{stage}")
_STAGE_EVENTS = "_tf_stage_events"
_STAGE_REJECTS = "_tf_stage_rejects"
_INSERT_EVENTS = (
    "INSERT INTO events"
    " (customer_id, event_time, action, product_id, category, price, session_id, source, run_id)"
    " SELECT customer_id, event_time, action, product_id, category, price, session_id, %(source)s, %(run_id)s"
    " FROM {stage} s WHERE NOT conflict_in_batch"
    " ON CONFLICT (customer_id, event_time, action, product_id) DO NOTHING"
)
_INSERT_REJECTS = (
    "INSERT INTO rejected_events (source, row_number, raw, reason, run_id)"
    " SELECT source, row_number, raw, reason, %(run_id)s FROM {stage} s"
    " ON CONFLICT (source, row_number) DO NOTHING"
)
# With ``few_rows``, batches of up to this many events and rejects (a posted request) go to the
# statements above as query parameters instead of through staging tables: no temporary table to
# create, copy into and analyze.
MAX_PARAMETER_ROWS = 32
_ASYNCHRONOUS_COMMIT = "SET LOCAL synchronous_commit TO off"


def _fits_parameters(n_events: int, n_rejects: int) -> bool:
    return max(n_events, n_rejects) <= MAX_PARAMETER_ROWS


def _values(rows: list[list[Any]]) -> tuple[int, dict[str, Any]]:
    """(the row count, the named parameters) of ``rows`` for ``_values_source``'s placeholders."""
    params: dict[str, Any] = {}
    for i, row in enumerate(rows):
        params |= {f"v{i}_{j}": value for j, value in enumerate(row)}
    return len(rows), params


def _values_source(columns: str, types: str, n_rows: int) -> sql.Composable:
    """``(SELECT * FROM (VALUES ...) AS v(columns))`` of ``n_rows`` rows of named parameters,
    each value cast to its column's type in ``types`` (comma-separated, in ``columns``' order)."""
    casts = [t.strip() for t in types.split(",")]
    values = [
        sql.SQL("({})").format(
            sql.SQL(", ").join(
                sql.SQL("{}::{}").format(sql.Placeholder(f"v{i}_{j}"), sql.SQL(cast))
                for j, cast in enumerate(casts)
            )
        )
        for i in range(n_rows)
    ]
    return sql.SQL("(SELECT * FROM (VALUES {}) AS v({}))").format(
        sql.SQL(", ").join(values), sql.SQL(columns)
    )


@lru_cache(maxsize=4 * MAX_PARAMETER_ROWS)
def _statement(template: str, columns: str, types: str, n_rows: int) -> bytes:
    """``template``'s ``{stage}`` replaced by ``_values_source(columns, types, n_rows)``, rendered
    once per shape: composing the statement on every post cost about as much as the insert."""
    return sql.SQL(template).format(stage=_values_source(columns, types, n_rows)).as_bytes(None)


_EVENT_COLUMNS = (
    "customer_id, event_time, action, product_id, category, price, session_id, row_number, conflict_in_batch"
)
_EVENT_TYPES = "text, timestamptz, text, text, text, float8, text, int8, bool"
_REJECT_COLUMNS, _REJECT_TYPES = "source, row_number, raw, reason", "text, int8, text, text"


def _parameter_event_rows(
    events: pd.DataFrame | event_schema.EventRows, numbers: np.ndarray, in_batch: np.ndarray
) -> list[list[Any]]:
    """The staging table's rows (``_stage_events``) of a batch that goes as query parameters (at
    most ``MAX_PARAMETER_ROWS``), after ``_checked_events``' checks in its order and with its
    errors, on the Python values: an Arrow or pandas call costs tens of microseconds whatever
    the length, several per column. Rows given as ``EventRows`` are taken as they are."""
    frame = events if isinstance(events, pd.DataFrame) else None
    n = len(events)
    text: dict[str, list[str | None]] = {}
    for column, (required, limit) in _EVENT_TEXT_LIMITS.items():
        if frame is None:
            text[column] = list(getattr(events, column))
        else:
            text[column] = _text_values(frame[column] if column in frame.columns else None, n, column)
        _check_few_texts(text[column], column, required=required, max_chars=limit)
    for row, action in enumerate(text["action"]):
        if action not in _ACTIONS:
            _raise_unknown_action(row, action)
    if frame is None:
        assert isinstance(events, event_schema.EventRows)
        times = [_utc(t) for t in events.event_time]
        price = events.price
    else:
        times = [t.to_pydatetime().astimezone(UTC) for t in _checked_times(frame)]
        price = _checked_prices(frame).tolist()
    return [
        [
            text["customer_id"][i],
            times[i],
            text["action"][i],
            text["product_id"][i],
            text["category"][i],
            None if np.isnan(price[i]) else price[i],  # missing: NULL, not NaN
            text["session_id"][i],
            int(numbers[i]),
            bool(in_batch[i]),
        ]
        for i in range(n)
    ]


def _utc(instant: datetime) -> datetime:
    """An instant in UTC; a naive one is UTC (the canonical contract)."""
    return instant.astimezone(UTC) if instant.tzinfo is not None else instant.replace(tzinfo=UTC)


def _repeated_keys(events: pd.DataFrame | event_schema.EventRows) -> np.ndarray:
    """``duplicate_masks``' conflicting rows: a key repeated with other values (bool per row)."""
    if isinstance(events, event_schema.EventRows):
        if len(set(events.keys())) == len(events):  # no key twice: nothing to group
            return np.zeros(len(events), dtype=bool)
        events = events.frame()
    return event_schema.duplicate_masks(events)[1]


_ACTIONS = frozenset(event_schema.ACTIONS)


def _parameter_reject_rows(rejects: pd.DataFrame, default_source: str) -> list[list[Any]]:
    """(source, row_number, raw, reason) rows of a rejects frame that goes as query parameters,
    after ``_checked_rejects``' checks in its order and with its errors, on the Python values."""
    n = len(rejects)
    for column in ("row_number", "reason"):
        if column not in rejects.columns:
            raise StoreInputError(f"rejects frame lacks column {column!r}; has {list(rejects.columns)}")
    sources = _text_values(rejects["source"] if "source" in rejects.columns else None, n, "source")
    raws = _text_values(rejects["raw"] if "raw" in rejects.columns else None, n, "raw")
    if rejects["row_number"].isna().any():
        raise StoreInputError("rejects frame has a missing row_number")
    reasons = _text_values(rejects["reason"], n, "reason")
    sources = [default_source if s is None else s for s in sources]
    _check_few_texts(sources, "source", required=True, max_chars=None)
    _check_few_texts(reasons, "reason", required=True, max_chars=None)
    return [
        [source, row_number, (raw or "").replace("\x00", NUL_ESCAPE), reason]
        for source, row_number, raw, reason in zip(
            sources, rejects["row_number"].to_numpy(dtype=np.int64).tolist(), raws, reasons, strict=True
        )
    ]


def _stage_events(conn: psycopg.Connection, columns: list[copybin.Column]) -> None:
    conn.execute("DROP TABLE IF EXISTS pg_temp._tf_stage_events")
    conn.execute(
        "CREATE TEMP TABLE _tf_stage_events ("
        ' customer_id text COLLATE "C", event_time timestamptz, action text COLLATE "C",'
        ' product_id text COLLATE "C", category text, price double precision, session_id text,'
        " row_number bigint, conflict_in_batch boolean"
        ") ON COMMIT DROP"
    )
    copy_in(conn, "COPY _tf_stage_events FROM STDIN (FORMAT binary)", columns)


def _stage_rejects(conn: psycopg.Connection, columns: list[copybin.Column]) -> None:
    conn.execute("DROP TABLE IF EXISTS pg_temp._tf_stage_rejects")
    conn.execute(
        "CREATE TEMP TABLE _tf_stage_rejects (source text, row_number bigint, raw text, reason text)"
        " ON COMMIT DROP"
    )
    copy_in(conn, "COPY _tf_stage_rejects FROM STDIN (FORMAT binary)", columns)


def ingest_frames(
    conn: psycopg.Connection,
    events: pd.DataFrame | event_schema.EventRows,
    rejects: pd.DataFrame | None,
    source: str,
    run_id: str,
    event_row_numbers: np.ndarray | None = None,
    *,
    few_rows: bool = False,
    synchronous_commit: bool = True,
) -> IngestReport:
    """Stage and insert one batch of events and rejects (inside the caller's transaction).

    ``event_row_numbers`` (int64 per event) number the events in the source like the rejects'
    ``row_number``; without them events are numbered by position from 1. They name the
    ``conflicting_duplicate`` rejects (see the module docstring). ``few_rows``: a batch of at
    most ``MAX_PARAMETER_ROWS`` events and rejects is sent as query parameters of the same
    statements instead of staged (the same rows written, fewer round trips).
    ``synchronous_commit=False``: the transaction's commit is asynchronous (module docstring);
    sent in the same pipeline as the rows when they go as parameters.
    """
    require_transaction(conn)
    if not source or not run_id:
        raise StoreInputError("source and run_id must be non-empty strings")
    rejects = rejects if rejects is not None else event_schema.empty_rejects()
    as_parameters = few_rows and _fits_parameters(len(events), len(rejects))
    if isinstance(events, event_schema.EventRows) and not as_parameters:
        events = events.frame()
    # Check everything before writing anything (a bad reject must not follow inserted events).
    if as_parameters:
        batch = _batch_of(events, rejects, event_row_numbers, source, run_id)
        with conn.pipeline():  # one round trip
            sent = send_parameter_batch(conn, batch, synchronous_commit)
        return sent.report()
    assert isinstance(events, pd.DataFrame)  # rows are framed above unless sent as parameters
    numbers, in_batch = _numbered(events, event_row_numbers)
    checked = _checked_events(events) if len(events) else None
    checked_rejects = _checked_rejects(rejects, source) if len(rejects) else None
    if not synchronous_commit:
        conn.execute(_ASYNCHRONOUS_COMMIT)
    report = IngestReport(source=source, run_id=run_id)
    params: dict[str, Any] = {"source": source, "run_id": run_id}
    _insert_staged(conn, report, checked, numbers, in_batch, checked_rejects, params)
    report.n_rejected = len(rejects) + report.n_conflicting
    report.n_read = len(events) + len(rejects)
    report.n_already_present = len(events) - report.n_inserted - report.n_conflicting
    return report


_CheckedRejects = tuple[pa.Array, np.ndarray, pa.Array, pa.Array]  # _checked_rejects' answer


def _insert_staged(
    conn: psycopg.Connection,
    report: IngestReport,
    checked: _EventArrays | None,
    numbers: np.ndarray,
    in_batch: np.ndarray,
    checked_rejects: _CheckedRejects | None,
    params: dict[str, Any],
) -> None:
    """Insert a batch through staging tables (binary COPY), counting into ``report``: the events,
    their conflicts (looked for only when some candidate was not inserted or the batch repeats a
    key), then the rejects."""
    stage = sql.SQL(_STAGE_EVENTS)
    if checked is not None:
        _stage_events(conn, _copy_columns(checked, numbers, in_batch))
        report.n_inserted = conn.execute(sql.SQL(_INSERT_EVENTS).format(stage=stage), params).rowcount
        n_candidates = len(numbers) - int(in_batch.sum())
        if report.n_inserted < n_candidates or in_batch.any():
            # Every candidate inserted means no key was stored before: no stored conflict to look for.
            stored = ""
            if report.n_inserted < n_candidates:
                conn.execute("ANALYZE _tf_stage_events")  # row counts and key statistics for the join
                stored = _STORED_CONFLICT_SQL
            conflicts = sql.SQL(_CONFLICTS_SQL.format(stored=stored, stage="{stage}")).format(stage=stage)
            row = conn.execute(
                conflicts, params | {"reason": event_schema.REASON_CONFLICTING_DUPLICATE}
            ).fetchone()
            assert row is not None  # one aggregate row
            report.n_conflicting, report.n_rejects_recorded = int(row[0]), int(row[1])
    if checked_rejects is not None:
        _stage_rejects(conn, _reject_copy_columns(checked_rejects))
        cur = conn.execute(
            sql.SQL(_INSERT_REJECTS).format(stage=sql.SQL(_STAGE_REJECTS)), {"run_id": report.run_id}
        )
        report.n_rejects_recorded += cur.rowcount


@dataclass(frozen=True)
class ParameterBatch:
    """A few events and rejects, checked, as the query parameters of ``_insert_staged``'s
    statements (``_parameter_event_rows``, ``_parameter_reject_rows``): at most
    ``MAX_PARAMETER_ROWS`` of each, sent without staging."""

    source: str
    run_id: str
    n_events: int
    n_rejects: int
    event_rows: list[list[Any]] | None
    reject_rows: list[list[Any]] | None


def parameter_batch(result: LoadResultLike, source: str, run_id: str) -> ParameterBatch | None:
    """``result`` as a ``ParameterBatch``, checked as ``ingest_frames`` checks it (its
    ``StoreInputError``), or None when it does not fit one (more rows than
    ``MAX_PARAMETER_ROWS``, or product names to store): those take ``ingest_results``."""
    if not source or not run_id:
        raise StoreInputError("source and run_id must be non-empty strings")
    rows = getattr(result, "event_rows", None)
    events: pd.DataFrame | event_schema.EventRows = result.events if rows is None else rows
    rejects = result.rejects
    products = getattr(result, "products", None)
    if not _fits_parameters(len(events), len(rejects)) or (products is not None and len(products)):
        return None
    return _batch_of(events, rejects, getattr(result, "event_row_numbers", None), source, run_id)


def _numbered(
    events: pd.DataFrame | event_schema.EventRows, event_row_numbers: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """(int64 row number, bool repeats an earlier key with other values) per event, once a
    frame has the required columns (``duplicate_masks`` groups by them)."""
    if isinstance(events, pd.DataFrame):
        _require_event_columns(events)
    if not len(events):
        return np.empty(0, np.int64), np.empty(0, bool)
    # Loader output has no repeated key; a frame from elsewhere may.
    return _batch_row_numbers(events, event_row_numbers), _repeated_keys(events)


def _batch_of(
    events: pd.DataFrame | event_schema.EventRows,
    rejects: pd.DataFrame,
    event_row_numbers: np.ndarray | None,
    source: str,
    run_id: str,
) -> ParameterBatch:
    numbers, in_batch = _numbered(events, event_row_numbers)
    return ParameterBatch(
        source,
        run_id,
        len(events),
        len(rejects),
        _parameter_event_rows(events, numbers, in_batch) if len(events) else None,
        _parameter_reject_rows(rejects, source) if len(rejects) else None,
    )


@dataclass(frozen=True)
class SentBatch:
    """The cursors of a ``ParameterBatch``'s statements, queued in pipeline mode; ``report()``
    reads their counts once the pipeline has synced."""

    batch: ParameterBatch
    inserted: psycopg.Cursor[Any] | None
    counted: psycopg.Cursor[Any] | None
    recorded: psycopg.Cursor[Any] | None

    def report(self) -> IngestReport:
        batch = self.batch
        report = IngestReport(source=batch.source, run_id=batch.run_id)
        if self.inserted is not None and self.counted is not None:
            report.n_inserted = self.inserted.rowcount
            row = self.counted.fetchone()
            assert row is not None  # one aggregate row
            report.n_conflicting, report.n_rejects_recorded = int(row[0]), int(row[1])
        if self.recorded is not None:
            report.n_rejects_recorded += self.recorded.rowcount
        report.n_rejected = batch.n_rejects + report.n_conflicting
        report.n_read = batch.n_events + batch.n_rejects
        report.n_already_present = batch.n_events - report.n_inserted - report.n_conflicting
        return report


def send_parameter_batch(
    conn: psycopg.Connection, batch: ParameterBatch, synchronous_commit: bool
) -> SentBatch:
    """Queue the statements of ``_insert_staged`` with ``batch``'s rows as parameters, in the
    same order (after ``_ASYNCHRONOUS_COMMIT`` unless ``synchronous_commit``), on ``conn`` in
    pipeline mode inside the caller's transaction: they go out with whatever the caller queues
    around them. The conflicts query always runs, with the stored-conflict part: it cannot wait
    for the insert's count, and on events all new it finds nothing (each inserted row equals
    itself), so the rows written and the counts are those of the staged path."""
    params: dict[str, Any] = {"source": batch.source, "run_id": batch.run_id}
    inserted = counted = recorded = None
    if not synchronous_commit:
        conn.execute(_ASYNCHRONOUS_COMMIT)
    if batch.event_rows is not None:
        n, rows = _values(batch.event_rows)
        inserted = conn.execute(_statement(_INSERT_EVENTS, _EVENT_COLUMNS, _EVENT_TYPES, n), params | rows)
        counted = conn.execute(
            _statement(_CONFLICTS_WITH_STORED, _EVENT_COLUMNS, _EVENT_TYPES, n),
            params | rows | {"reason": event_schema.REASON_CONFLICTING_DUPLICATE},
        )
    if batch.reject_rows is not None:
        n_rejects, reject_params = _values(batch.reject_rows)
        recorded = conn.execute(
            _statement(_INSERT_REJECTS, _REJECT_COLUMNS, _REJECT_TYPES, n_rejects),
            reject_params | {"run_id": batch.run_id},
        )
    return SentBatch(batch, inserted, counted, recorded)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def lock_file(conn: psycopg.Connection, sha256: str) -> None:
    """Serialise concurrent ingestions of the same file content (transaction-scoped lock)."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"traitflow.ingest:{sha256}",))


def is_file_ingested(conn: psycopg.Connection, sha256: str) -> bool:
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM ingested_files WHERE sha256 = %s)", (sha256,)).fetchone()
    return bool(row and row[0])


def ingested_sources(conn: psycopg.Connection, sources: list[str]) -> set[str]:
    """Which of ``sources`` have been fully ingested (under any content hash)."""
    rows = conn.execute(
        "SELECT DISTINCT source FROM ingested_files WHERE source = ANY(%s)", (list(sources),)
    ).fetchall()
    return {row[0] for row in rows}


def record_file(conn: psycopg.Connection, report: IngestReport) -> None:
    """Remember a fully ingested file (same transaction as its rows: recorded iff complete)."""
    if report.file_sha256 is None:
        return
    conn.execute(
        "INSERT INTO ingested_files (sha256, source, n_rows, n_inserted, n_rejected, run_id)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (sha256) DO NOTHING",
        (
            report.file_sha256,
            report.source,
            report.n_read,
            report.n_inserted,
            report.n_rejected,
            report.run_id,
        ),
    )


def ingest_results(
    conn: psycopg.Connection,
    results: Iterable[LoadResultLike],
    source: str,
    run_id: str,
    file_sha256: str | None = None,
    *,
    few_rows: bool = False,
    synchronous_commit: bool = True,
) -> IngestReport:
    """Ingest a stream of load results (e.g. ``events.iter_events`` chunks) in the caller's transaction.

    Product names (a result's optional ``products`` counts) are summed over all results first, so
    a file read in chunks stores each product's most frequent name in the whole file.
    """
    from .products import upsert_product_names  # products imports this module's text checks

    started = time.perf_counter()
    total = IngestReport(source=source, run_id=run_id, file_sha256=file_sha256)
    name_counts: list[pd.DataFrame] = []
    for result in results:
        numbers = getattr(result, "event_row_numbers", None)  # loaders without numbers: positions
        rows = getattr(result, "event_rows", None)  # a request's few rows, not framed
        total.add(
            ingest_frames(
                conn,
                result.events if rows is None else rows,
                result.rejects,
                source,
                run_id,
                numbers,
                few_rows=few_rows,
                synchronous_commit=synchronous_commit,
            )
        )
        products = getattr(result, "products", None)  # loaders without names have no such frame
        if products is not None and len(products):
            name_counts.append(products)
    if name_counts:
        total.n_product_names = upsert_product_names(
            conn, event_schema.merge_name_counts(name_counts), source, run_id
        )
    record_file(conn, total)
    total.seconds = time.perf_counter() - started
    return total
