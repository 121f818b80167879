"""Vectorized PostgreSQL binary COPY encoding and decoding (numpy + pyarrow, no per-row Python).

Why binary COPY: it is the fastest bulk path into PostgreSQL, and it carries float4/float8 values
as their exact IEEE bytes, so ``real[]`` / ``double precision[]`` columns round-trip bit-identically
(the text format would go through decimal strings).

Why not ``psycopg.Copy.write_row``: it needs one Python tuple per row and one Python float per
array element (200K customers x 80 floats = 16M objects). Here every column is turned into a byte
block with numpy (fixed-width fields, big-endian structured dtypes) or pyarrow (UTF-8 text), and
``pyarrow.compute.binary_join_element_wise`` concatenates the blocks row by row in C++.

Format reference: https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.4
(file header, then per row an int16 field count and per field an int32 length, -1 for NULL,
followed by the value in the type's ``*_send`` representation; trailer int16 -1).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"

# PostgreSQL's timestamp epoch (2000-01-01) in Unix microseconds.
PG_EPOCH_US = 946_684_800_000_000

# Element type OIDs checked by array_recv: they must match the column's element type.
_OID = {"float4": 700, "float8": 701, "int8": 20, "int4": 23}
_SCALAR_DTYPE = {"int8": ">i8", "int4": ">i4", "int2": ">i2", "float8": ">f8", "float4": ">f4", "bool": "?"}
# One field of a numpy structured dtype: (name, type) or (name, type, shape).
_Field = tuple[str, Any] | tuple[str, Any, tuple[int, ...]]


@dataclass(frozen=True)
class Column:
    """One column of a COPY payload.

    kind: ``text``, ``int8``, ``int4``, ``float8``, ``bool``, ``timestamptz``, ``float4[]``,
    ``float8[]``, ``packed float4`` (a bytea, see ``packed_float4``).
    values: 1-D array (scalars, text) or 2-D array (``*[]`` and packed kinds: one fixed-length
    vector per row).
    null: optional boolean mask of NULL rows for scalar kinds (text nulls come from the values).
    """

    kind: str
    values: Any
    null: np.ndarray | None = None


def text(values: Any) -> Column:
    return Column("text", values)


def int8(values: Any) -> Column:
    return Column("int8", np.asarray(values, dtype=np.int64))


def int4(values: Any) -> Column:
    return Column("int4", np.asarray(values, dtype=np.int32))


def float8(values: Any, *, nan_is_null: bool = False) -> Column:
    array = np.asarray(values, dtype=np.float64)
    return Column("float8", array, np.isnan(array) if nan_is_null else None)


def boolean(values: Any) -> Column:
    return Column("bool", np.asarray(values, dtype=bool))


def timestamptz(values: Any) -> Column:
    """``values``: tz-aware pandas series/index, or datetime64 array (naive values are taken as UTC)."""
    if isinstance(values, pd.Series | pd.Index) and isinstance(values.dtype, pd.DatetimeTZDtype):
        values = pd.DatetimeIndex(values).tz_convert("UTC").tz_localize(None)
    array = np.asarray(values)
    if array.dtype.kind != "M":
        raise TypeError(f"timestamptz column needs datetime64 values, got {array.dtype}")
    micros = array.astype("datetime64[us]").view(np.int64)
    null = np.isnat(array)
    return Column("timestamptz", micros - PG_EPOCH_US, null if null.any() else None)


def float4_array(values: np.ndarray) -> Column:
    return Column("float4[]", _as_2d(values, np.float32, "float4[]"))


def float8_array(values: np.ndarray) -> Column:
    return Column("float8[]", _as_2d(values, np.float64, "float8[]"))


def packed_float4(values: np.ndarray) -> Column:
    """A ``bytea`` per row: the row's float32 values as big-endian IEEE bytes (``float4send`` order).

    The storage layout of ``customer_profiles.embedding`` (migration 0003): the server copies the
    bytes as they are instead of receiving a ``real[]`` element by element.
    """
    return Column("packed float4", _as_2d(values, np.float32, "packed float4"))


def _as_2d(values: np.ndarray, dtype: type, kind: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 2 or array.shape[1] < 1:
        raise ValueError(f"{kind} column needs a 2-D array with at least one column, got shape {array.shape}")
    if array.dtype != dtype:
        # Refuse silent precision changes: the caller decides the storage precision.
        raise TypeError(f"{kind} column needs {np.dtype(dtype).name} values, got {array.dtype}")
    return array


def _array_fields(prefix: str, kind: str, dim: int) -> list[_Field]:
    elem = ">f4" if kind == "float4[]" else ">f8"
    return [
        (f"{prefix}len", ">i4"),
        (f"{prefix}ndim", ">i4"),
        (f"{prefix}flags", ">i4"),
        (f"{prefix}oid", ">i4"),
        (f"{prefix}dim", ">i4"),
        (f"{prefix}lb", ">i4"),
        (f"{prefix}el", [("l", ">i4"), ("v", elem)], (dim,)),
    ]


def _binary_from_fixed(block: np.ndarray) -> pa.Array:
    """Wrap a structured array as a large_binary array of its rows, without copying."""
    width = block.dtype.itemsize
    offsets = np.arange(len(block) + 1, dtype=np.int64) * width
    return pa.Array.from_buffers(
        pa.large_binary(), len(block), [None, pa.py_buffer(offsets), pa.py_buffer(block)]
    )


def _binary_from_masked(block: np.ndarray, keep: np.ndarray) -> pa.Array:
    """Rows of ``block`` where each row keeps only the bytes flagged in ``keep`` (n, itemsize)."""
    width = block.dtype.itemsize
    as_bytes = block.view(np.uint8).reshape(len(block), width)
    data = as_bytes[keep]  # row-major boolean selection keeps row order
    offsets = np.zeros(len(block) + 1, dtype=np.int64)
    np.cumsum(keep.sum(axis=1), out=offsets[1:])
    return pa.Array.from_buffers(
        pa.large_binary(), len(block), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def _text_segments(values: Any) -> tuple[np.ndarray, pa.Array]:
    """(length field values with -1 for NULL, UTF-8 bytes with NULL as empty)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not isinstance(values, pa.Array):
        values = pa.array(values, type=pa.large_string(), from_pandas=True)
    if not pa.types.is_large_string(values.type):
        values = values.cast(pa.large_string())
    binary = values.cast(pa.large_binary())
    lengths = pc.binary_length(binary).to_numpy(zero_copy_only=False)
    null = binary.is_null().to_numpy(zero_copy_only=False)
    lengths = np.where(null, -1, np.nan_to_num(lengths, nan=-1)).astype(np.int64)
    if null.any():
        binary = pc.fill_null(binary, pa.scalar(b"", pa.large_binary()))
    return lengths, binary


def encode_rows(columns: Sequence[Column]) -> pa.Buffer:
    """The binary COPY rows (no header, no trailer) for ``columns``, all of the same length."""
    n = _common_length(columns)
    segments: list[pa.Array] = []
    fields: list[_Field] = [("ncols", ">i2")]
    fills: dict[str, Any] = {"ncols": len(columns)}

    for i, col in enumerate(columns):
        p = f"c{i}_"
        if col.kind == "text":
            lengths, data = _text_segments(col.values)
            fields.append((f"{p}len", ">i4"))
            fills[f"{p}len"] = lengths
            _flush_fields(fields, fills, n, segments)
            segments.append(data)
        elif col.kind in ("float4[]", "float8[]"):
            dim = col.values.shape[1]
            elem_size = 4 if col.kind == "float4[]" else 8
            fields.extend(_array_fields(p, col.kind, dim))
            fills.update(
                {
                    f"{p}len": 20 + dim * (4 + elem_size),
                    f"{p}ndim": 1,
                    f"{p}flags": 0,
                    f"{p}oid": _OID["float4" if col.kind == "float4[]" else "float8"],
                    f"{p}dim": dim,
                    f"{p}lb": 1,
                }
            )
            # Structured sub-array assignment: set the element lengths and values separately.
            fills[f"{p}el.l"] = elem_size
            fills[f"{p}el.v"] = col.values
        elif col.kind == "packed float4":
            dim = col.values.shape[1]
            fields.extend([(f"{p}len", ">i4"), (f"{p}v", ">f4", (dim,))])
            fills[f"{p}len"] = 4 * dim
            fills[f"{p}v"] = col.values
        else:
            kind = "int8" if col.kind == "timestamptz" else col.kind
            dtype = _SCALAR_DTYPE[kind]
            size = np.dtype(dtype).itemsize
            if col.null is not None and col.null.any():
                _flush_fields(fields, fills, n, segments)
                block = np.empty(n, dtype=np.dtype([("len", ">i4"), ("v", dtype)]))
                block["len"] = np.where(col.null, -1, size)
                block["v"] = np.where(col.null, 0, col.values)
                keep = np.ones((n, 4 + size), dtype=bool)
                keep[col.null, 4:] = False
                segments.append(_binary_from_masked(block, keep))
            else:
                fields.extend([(f"{p}len", ">i4"), (f"{p}v", dtype)])
                fills[f"{p}len"] = size
                fills[f"{p}v"] = col.values
    _flush_fields(fields, fills, n, segments)
    if n == 0:
        return pa.py_buffer(b"")
    joined = pc.binary_join_element_wise(*segments, pa.scalar(b"", pa.large_binary()))
    offsets = np.frombuffer(joined.buffers()[1], dtype=np.int64, count=n + 1, offset=joined.offset * 8)
    return joined.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0]))


def _flush_fields(fields: list[_Field], fills: dict[str, Any], n: int, segments: list[pa.Array]) -> None:
    """Append the pending fixed-width fields as one block (sub-field keys use ``name.sub``)."""
    if not fields:
        return
    block = np.empty(n, dtype=np.dtype(fields))
    for name, value in fills.items():
        if "." in name:
            parent, sub = name.split(".")
            block[parent][sub] = value
        else:
            block[name] = value
    segments.append(_binary_from_fixed(block))
    fields.clear()
    fills.clear()


def _common_length(columns: Sequence[Column]) -> int:
    lengths = {len(c.values) for c in columns}
    if len(lengths) > 1:
        raise ValueError(f"COPY columns have different lengths: {sorted(lengths)}")
    if not columns:
        raise ValueError("COPY needs at least one column")
    return lengths.pop()


def iter_payload(columns: Sequence[Column], chunk_rows: int = 100_000) -> Iterator[pa.Buffer | bytes]:
    """Header, rows in chunks of ``chunk_rows`` (bounded memory), trailer: feed to ``copy.write``."""
    n = _common_length(columns)
    yield HEADER
    for start in range(0, n, chunk_rows):
        stop = min(n, start + chunk_rows)
        yield encode_rows([_slice(c, start, stop) for c in columns])
    yield TRAILER


def _slice(col: Column, start: int, stop: int) -> Column:
    null = None if col.null is None else col.null[start:stop]
    return Column(col.kind, col.values[start:stop], null)


# --------------------------------------------------------------------------------------- decoding


def decode_fixed(data: bytes | memoryview, spec: Sequence[tuple[str, str, int]]) -> dict[str, np.ndarray]:
    """Parse a binary COPY TO output whose rows are all fixed-width (no NULLs, equal array lengths).

    ``spec``: (name, kind, dim) per column, kind in ``int8``, ``int4``, ``float8``, ``float4``,
    ``float4[]``, ``float8[]`` (dim is the array length; ignored for scalars). Returns native-endian
    arrays (2-D for array kinds). Raises ``ValueError`` if the data does not have that shape, e.g.
    a NULL or a ragged array slipped in (never silently misparses).
    """
    view = memoryview(data)
    if bytes(view[:11]) != HEADER[:11]:
        raise ValueError("not a PostgreSQL binary COPY stream")
    ext = int.from_bytes(view[15:19], "big")
    body = view[19 + ext :]
    if bytes(body[-2:]) != TRAILER:
        raise ValueError("binary COPY stream lacks its trailer")
    body = body[:-2]
    fields: list[_Field] = [("ncols", ">i2")]
    expected: dict[str, int] = {"ncols": len(spec)}
    for i, (_name, kind, dim) in enumerate(spec):
        p = f"c{i}_"
        if kind.endswith("[]"):
            fields.extend(_array_fields(p, kind, dim))
            elem_size = 4 if kind == "float4[]" else 8
            expected.update(
                {
                    f"{p}len": 20 + dim * (4 + elem_size),
                    f"{p}ndim": 1,
                    f"{p}flags": 0,
                    f"{p}oid": _OID["float4" if kind == "float4[]" else "float8"],
                    f"{p}dim": dim,
                    f"{p}lb": 1,
                }
            )
        else:
            dtype = _SCALAR_DTYPE[kind]
            fields.extend([(f"{p}len", ">i4"), (f"{p}v", dtype)])
            expected[f"{p}len"] = np.dtype(dtype).itemsize
    row_dtype = np.dtype(fields)
    if len(body) % row_dtype.itemsize:
        raise ValueError("binary COPY rows are not fixed-width as expected (NULL or ragged array?)")
    rows = np.frombuffer(body, dtype=row_dtype)
    for name, value in expected.items():
        if len(rows) and not np.all(rows[name] == value):
            raise ValueError(f"unexpected binary COPY layout in field {name!r} (NULL or ragged array?)")
    out: dict[str, np.ndarray] = {}
    for i, (name, kind, _dim) in enumerate(spec):
        p = f"c{i}_"
        if kind.endswith("[]"):
            if len(rows) and not np.all(rows[f"{p}el"]["l"] == (4 if kind == "float4[]" else 8)):
                raise ValueError(f"NULL element in array column {name!r}")
            native = np.float32 if kind == "float4[]" else np.float64
            out[name] = rows[f"{p}el"]["v"].astype(native)
        else:
            out[name] = rows[f"{p}v"].astype(np.dtype(_SCALAR_DTYPE[kind]).newbyteorder("="))
    return out
