"""Output helpers shared by the CLI, the store, evaluation and the benchmark: one JSON conversion
and one table formatter.

``to_jsonable`` is the single place that decides how numpy values, dates, paths and non-finite
floats become JSON; every ``json.dumps`` in the project goes through it (directly or as
``json_default``), so a metric written by one module reads back the same in another.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from decimal import Decimal
from pathlib import PurePath
from typing import Any, Literal
from uuid import UUID

import numpy as np


def to_jsonable(value: Any) -> Any:
    """JSON-safe copy of ``value``.

    Mappings (keys as ``str``), lists and tuples recursively; numpy arrays and scalars as Python
    values; dates and datetimes as ISO 8601 (NaT as None); decimals as floats; paths and UUIDs as
    strings; NaN and infinities as None (JSON
    has neither). Anything else raises ``TypeError`` naming the type.
    """
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return [to_jsonable(item) for item in value.tolist()]
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, date):  # datetime is a date; pandas' NaT is one that is not equal to itself
        return value.isoformat() if value == value else None
    if isinstance(value, Decimal):  # PostgreSQL numeric
        return to_jsonable(float(value))
    if isinstance(value, PurePath | UUID):
        return str(value)
    if value is None or isinstance(value, str | bool | int):
        return value
    raise TypeError(f"value of type {type(value).__name__} is not JSON serialisable: {value!r}")


def dumps(value: Any, *, indent: int | None = None) -> str:
    """``json.dumps`` of ``to_jsonable(value)``; non-ASCII text kept as it is."""
    return json.dumps(to_jsonable(value), indent=indent, allow_nan=False, ensure_ascii=False)


def format_cell(value: Any, digits: int = 3) -> str:
    """A table cell: None as ``-``, floats with ``digits`` decimals, ints with thousands separators."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float | np.floating):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    if isinstance(value, int | np.integer):
        return f"{value:,}"
    return str(value)


def text_table(
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    style: Literal["plain", "markdown"] = "plain",
    cell: Callable[[Any], str] = format_cell,
) -> list[str]:
    """Lines of a table of ``rows`` (each as long as ``header``).

    ``plain``: columns aligned (first left, the rest right), a dashed rule under the header, each
    line indented by two spaces. ``markdown``: a GitHub table.
    """
    for number, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(f"row {number} has {len(row)} cells, the header {len(header)}")
    cells = [[str(h) for h in header]] + [[cell(v) for v in row] for row in rows]
    if style == "markdown":
        lines = ["| " + " | ".join(row) + " |" for row in cells]
        lines.insert(1, "|" + "|".join("---" for _ in header) + "|")
        return lines
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  "
        + "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    ]
    lines.insert(1, "  " + "  ".join("-" * w for w in widths))
    return lines
