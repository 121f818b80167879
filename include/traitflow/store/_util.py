"""Small shared helpers: UTC handling, JSON for jsonb, COPY in/out, transaction checks."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
from psycopg import pq
from psycopg.copy import QueuedLibpqWriter

from traitflow import formatting

from . import copybin
from .errors import StoreInputError

# Arrow types of the column kinds of ``copy_out_csv``.
COLUMN_TYPES = {"str": pa.large_string(), "int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_()}


def require_transaction(conn: psycopg.Connection) -> None:
    """Write helpers run inside the caller's transaction; refuse to run in autocommit. In
    pipeline mode the server reports the transaction's state only at a sync, so there the
    caller's word is taken (``Store._pipelined_transaction`` opens one before any helper)."""
    if conn.pgconn.pipeline_status != pq.PipelineStatus.OFF:
        return
    if conn.info.transaction_status != pq.TransactionStatus.INTRANS:
        raise RuntimeError("store write helpers must run inside a transaction (use the Store methods)")


def utc(value: datetime) -> datetime:
    """Aware UTC datetime; a naive value is taken to be UTC (the canonical convention)."""
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def to_jsonable(value: Any) -> Any:
    """JSON-safe copy for a ``jsonb`` value (``traitflow.formatting.to_jsonable``).

    PostgreSQL ``jsonb`` has no NaN/Infinity and no ``\\u0000``: NaN metrics become null, and a
    NUL in a string or a value JSON cannot hold is rejected with a clear error rather than an
    opaque server error.
    """
    try:
        converted = formatting.to_jsonable(value)
    except TypeError as error:
        raise StoreInputError(str(error)) from None
    _reject_nul(converted)
    return converted


def _reject_nul(value: Any) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            raise StoreInputError("JSON strings cannot contain NUL (\\x00) characters in PostgreSQL jsonb")
    elif isinstance(value, dict):
        for key, item in value.items():
            _reject_nul(key)
            _reject_nul(item)
    elif isinstance(value, list):
        for item in value:
            _reject_nul(item)


def dumps(value: Any) -> str:
    """Serialise for a ``jsonb`` parameter (see ``to_jsonable``)."""
    return json.dumps(to_jsonable(value), allow_nan=False, ensure_ascii=False)


def copy_in(
    conn: psycopg.Connection, statement: Any, columns: Sequence[copybin.Column], chunk_rows: int = 25_000
) -> None:
    """Binary COPY ``columns`` with ``statement`` (``COPY ... FROM STDIN (FORMAT binary)``).

    The payload is built in chunks (bounded memory) and handed to a background sender thread
    (``QueuedLibpqWriter``), so encoding the next chunk (numpy/pyarrow, GIL released) overlaps
    with the server parsing the previous one.
    """
    with conn.cursor() as cur, cur.copy(statement, writer=QueuedLibpqWriter(cur)) as copy:
        for part in copybin.iter_payload(columns, chunk_rows=chunk_rows):
            copy.write(part)


def copy_out(conn: psycopg.Connection, statement: Any, params: Sequence[Any] | None = None) -> bytes:
    """All bytes of a ``COPY ... TO STDOUT``.

    psycopg binds COPY parameters client-side with its own escaping (the server does not accept
    parameters in COPY); values still never pass through string formatting here.
    """
    buffer = io.BytesIO()
    with conn.cursor() as cur, cur.copy(statement, params) as copy:
        for chunk in copy:
            buffer.write(chunk)
    return buffer.getvalue()


def copy_out_csv(
    conn: psycopg.Connection, statement: Any, params: Sequence[Any] | None, columns: Mapping[str, str]
) -> pa.Table:
    """Run ``COPY (...) TO STDOUT (FORMAT csv, FORCE_QUOTE *)`` and parse it with pyarrow.

    With FORCE_QUOTE every non-NULL value is quoted, so an unquoted empty field is exactly NULL
    and a quoted one is the empty string; embedded quotes, commas and newlines are CSV-escaped.
    Float text from PostgreSQL (extra_float_digits >= 1) is the shortest exact representation.
    ``columns``: output name -> ``str`` | ``int64`` | ``float64`` | ``bool``, in query order.
    """
    data = copy_out(conn, statement, params)
    names = list(columns)
    if not data:
        return pa.table({name: pa.array([], type=COLUMN_TYPES[kind]) for name, kind in columns.items()})
    return pa_csv.read_csv(
        pa.BufferReader(data),
        read_options=pa_csv.ReadOptions(column_names=names, block_size=64 << 20),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            column_types={name: COLUMN_TYPES[kind] for name, kind in columns.items()},
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            true_values=["t"],
            false_values=["f"],
        ),
    )
