"""The shared JSON conversion and table formatter (known answers)."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import numpy as np
import pandas as pd
import pytest

from traitflow.formatting import dumps, format_cell, text_table, to_jsonable


def test_to_jsonable_converts_numpy_dates_paths_and_non_finite_floats() -> None:
    value = {
        1: np.int64(3),
        "a": np.array([[1.5, np.nan], [np.inf, 2.0]]),
        "t": (datetime(2024, 1, 2, 3, 4, tzinfo=UTC), date(2024, 1, 2)),
        "p": Path("/x/y"),
        "d": Decimal("0.25"),
        "u": UUID(int=1),
        "b": np.bool_(True),
        "n": None,
        "nat": pd.NaT,
    }
    assert to_jsonable(value) == {
        "1": 3,
        "a": [[1.5, None], [None, 2.0]],
        "t": ["2024-01-02T03:04:00+00:00", "2024-01-02"],
        "p": "/x/y",
        "d": 0.25,
        "u": "00000000-0000-0000-0000-000000000001",
        "b": True,
        "n": None,
        "nat": None,
    }


def test_to_jsonable_names_an_unsupported_type() -> None:
    with pytest.raises(TypeError, match="object"):
        to_jsonable({"x": object()})


def test_dumps_round_trips_and_keeps_non_ascii() -> None:
    text = dumps({"name": "Café", "v": np.float32(0.5), "bad": float("nan")})
    assert "Café" in text
    assert json.loads(text) == {"name": "Café", "v": 0.5, "bad": None}


def test_format_cell() -> None:
    assert [format_cell(v) for v in (None, 1.23456, float("nan"), 1234567, np.int32(5), True, "x")] == [
        "-",
        "1.235",
        "nan",
        "1,234,567",
        "5",
        "True",
        "x",
    ]
    assert format_cell(math.pi, digits=1) == "3.1"


def test_plain_and_markdown_tables() -> None:
    rows = [["popularity", 0.5], ["profile", 0.75]]
    assert text_table(["method", "hit"], rows) == [
        "  method        hit",
        "  ----------  -----",
        "  popularity  0.500",
        "  profile     0.750",
    ]
    assert text_table(["method", "hit"], rows, style="markdown") == [
        "| method | hit |",
        "|---|---|",
        "| popularity | 0.500 |",
        "| profile | 0.750 |",
    ]


def test_a_short_row_is_an_error() -> None:
    with pytest.raises(ValueError, match="row 1 has 1 cells"):
        text_table(["a", "b"], [[1, 2], [3]])
