"""``events.validate_columns``: a request's few rows validated without pandas per rule give exactly
what ``validate_events`` gives for the same rows as a frame (events, rejects with reasons and
raw text, row numbers), on a table of valid and hostile bodies and on random mixtures of them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest

from traitflow import event_schema
from traitflow.events import (
    PRESETS,
    ColumnMapping,
    LoadResult,
    mapping_from_dict,
    validate_columns,
    validate_events,
)
from traitflow.events import validation as validation_module

CANONICAL = PRESETS["canonical"]
FIELDS = event_schema.CANONICAL_COLUMNS
GOOD = {
    "customer_id": "c1",
    "event_time": "2024-01-02T03:04:05Z",
    "action": "view",
    "product_id": "p1",
    "category": "shoes",
    "price": "9.5",
    "session_id": "s1",
}

# One field changed per case: each rule, its edges, and values that look alike but are not.
VARIANTS: dict[str, list[str]] = {
    "customer_id": [
        "",
        " ",
        "  c1  ",
        "c\x001",
        "c\t1",
        "c\x7f",
        "\u00e9l\u00e8ve",
        "\u2003c1\u2003",
        "c\x1c",
        "x" * event_schema.MAX_ID_LENGTH,
        "x" * (event_schema.MAX_ID_LENGTH + 1),
        "\U0001f600" * 257,
        "13085.0",
        "nan",
        "None",
        'q"uote\\',
        "\u0085c1",
    ],
    "event_time": [
        "",
        " ",
        "not a time",
        "2024-01-02",
        "2024-01-02 03:04:05",
        "2024-01-02T03:04:05+02:00",
        "2024-01-02 03:04:05 UTC",
        "2024-01-02T03:04:05+02:00 UTC",
        "1989-12-31T23:59:59Z",
        "1990-01-01T00:00:00Z",
        "2999-01-01T00:00:00Z",
        "2024-02-30T00:00:00Z",
        "2024-01-02T03:04:05.123456789Z",
        "1704164645",
        "2024-01-02T03:04:05Z\n",
        # the plain forms parsed without pandas, and their neighbours
        "2024-01-02T03:04:05.5Z",
        "2024-01-02T03:04:05.123456Z",
        "2024-01-02T03:04:05.1234567Z",
        "2024-01-02T03:04:05-05:30",
        "2024-01-02 03:04:05+00:00",
        "2024-01-02T03:04:05+0200",
        "2024-01-02T24:00:00Z",
        "2024-01-02T03:04:60Z",
        "2024-13-02T03:04:05Z",
        "1990-01-01T00:00:00+01:00",
        "2199-12-31T23:59:59Z",
        "2200-01-01T00:00:00Z",
        "\u0662024-01-02T03:04:05Z",
    ],
    "action": ["", "VIEW", " Purchase ", "teleport", "add_to_cart", "view\x00", "vi ew", "\u0130"],
    "product_id": ["", "p\n1", " p1", "p" * 300, "p1 ", "\u00a0"],
    "category": ["", "  ", "a\x1fb", "c" * 2000, "c" * 100_000, "\u00e9", "x\u2028y"],
    "price": [
        "",
        "abc",
        "nan",
        "inf",
        "-inf",
        "1e3",
        " 2 ",
        "0x10",
        "1_000",
        "-0",
        "1,5",
        "\u0661",
        "1e400",
        "12",
        "18446744073709551616",
    ],
    "session_id": ["", "s\r", "s" * 2000, "  ", "s\u0000"],
}


def _rows_of(case: Sequence[Mapping[str, str]]) -> dict[str, list[str]]:
    return {name: [row[name] for row in case] for name in FIELDS}


def _single_field_cases() -> list[list[dict[str, str]]]:
    return [[{**GOOD, field: value}] for field, values in VARIANTS.items() for value in values]


def _multi_row_cases() -> list[list[dict[str, str]]]:
    other = {**GOOD, "product_id": "p2", "event_time": "2024-01-02T03:04:06Z"}
    return [
        [],
        [GOOD, GOOD],  # exact duplicate
        [GOOD, {**GOOD, "price": "10"}],  # conflicting duplicate
        [GOOD, {**GOOD, "price": ""}, {**GOOD, "category": ""}],
        [{**GOOD, "price": ""}, {**GOOD, "price": " "}],  # missing equals missing
        [{**GOOD, "action": "teleport"}, GOOD, GOOD, other],  # a rejected row is no duplicate's original
        [GOOD, {**GOOD, "action": " VIEW "}],  # the same key once normalised
        [GOOD, {**GOOD, "event_time": "2024-01-02 04:04:05+01:00"}],  # the same instant, other text
        [GOOD, {**GOOD, "event_time": "2024-01-02T03:04:05.000001Z"}, {**GOOD, "customer_id": "c2"}],
        [{**GOOD, "customer_id": ""}, {**GOOD, "event_time": "x"}, other, {**other, "session_id": "s2"}],
    ]


def _random_cases(n_cases: int, seed: int) -> list[list[dict[str, str]]]:
    """Bodies of 1-12 rows, each row GOOD with 0-3 fields swapped for a hostile variant, and now
    and then a repeat of an earlier row (duplicates)."""
    rng = np.random.default_rng(seed)
    fields = list(VARIANTS)
    cases = []
    for _ in range(n_cases):
        rows: list[dict[str, str]] = []
        for _ in range(int(rng.integers(1, 13))):
            if rows and rng.random() < 0.2:
                rows.append(dict(rows[int(rng.integers(len(rows)))]))
                continue
            row = dict(GOOD)
            for field in rng.choice(fields, size=int(rng.integers(0, 4)), replace=False):
                row[str(field)] = str(rng.choice(VARIANTS[str(field)]))
            rows.append(row)
        cases.append(rows)
    return cases


def _assert_same(few: LoadResult, frame: LoadResult) -> None:
    pd.testing.assert_frame_equal(few.events, frame.events)
    pd.testing.assert_frame_equal(few.rejects, frame.rejects)
    pd.testing.assert_frame_equal(few.products, frame.products)
    assert few.event_row_numbers is not None and frame.event_row_numbers is not None
    assert np.array_equal(few.event_row_numbers, frame.event_row_numbers)
    assert few.event_row_numbers.dtype == frame.event_row_numbers.dtype == np.int64


def _frame(columns: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(list(values), dtype="str") for name, values in columns.items()})


@pytest.fixture
def frame_path(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """``validate_frame`` as the loaders call it, counted; the lengths of the frames it got."""
    calls: list[int] = []
    original = validation_module.validate_frame

    def counted(raw: pd.DataFrame, *args: Any) -> Any:
        calls.append(len(raw))
        return original(raw, *args)

    monkeypatch.setattr(validation_module, "validate_frame", counted)
    return calls


def _compare(
    columns: Mapping[str, Sequence[str]], mapping: ColumnMapping, calls: list[int], first: int = 1
) -> LoadResult:
    """The few-row result, checked against the frame path's for the same rows; the few-row path
    must have been taken (else the comparison compares the frame path with itself)."""
    expected = validate_events(_frame(columns), mapping, source="req", first_row_number=first)
    calls.clear()
    got = validate_columns(columns, mapping, source="req", first_row_number=first)
    assert calls == [], "validate_columns took the frame path"
    _assert_same(got, expected)
    return got


@pytest.mark.parametrize("case", _single_field_cases() + _multi_row_cases(), ids=repr)
def test_each_hostile_field_gets_the_loaders_verdict(
    case: list[dict[str, str]], frame_path: list[int]
) -> None:
    _compare(_rows_of(case), CANONICAL, frame_path)


def test_random_mixtures_of_hostile_rows_match(frame_path: list[int]) -> None:
    for case in _random_cases(150, seed=17):
        _compare(_rows_of(case), CANONICAL, frame_path, first=5)


def test_the_cases_reach_every_rule_of_the_canonical_mapping() -> None:
    """Not vacuous: the table reaches each reason a canonical body can get, and valid rows."""
    reasons: set[str] = set()
    n_events = 0
    for case in _single_field_cases() + _multi_row_cases():
        result = validate_columns(_rows_of(case), CANONICAL, source="req")
        reasons |= set(result.rejects["reason"])
        n_events += len(result.events)
    expected = set(validation_module.REASON_PRECEDENCE) - {
        event_schema.REASON_BAD_QUANTITY,
        event_schema.REASON_NON_PRODUCT,
        event_schema.REASON_CANCELLATION,
        event_schema.REASON_NON_POSITIVE_QUANTITY,
    }
    assert reasons == expected
    assert n_events > 20


def test_only_a_repeated_key_is_grouped_for_duplicates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not vacuous: rows with distinct keys skip ``duplicate_masks``; a key repeated in another
    time notation (equal instants, different texts) takes it and is an exact duplicate."""
    calls: list[int] = []
    original = event_schema.duplicate_masks

    def counted(events: pd.DataFrame) -> Any:
        calls.append(len(events))
        return original(events)

    monkeypatch.setattr(event_schema, "duplicate_masks", counted)
    other = {**GOOD, "product_id": "p2"}
    result = validate_columns(_rows_of([GOOD, other, {**GOOD, "action": "cart"}]), CANONICAL, source="req")
    assert (calls, len(result.events)) == ([], 3)
    same_instant = {**GOOD, "event_time": "2024-01-02 04:04:05+01:00"}
    result = validate_columns(_rows_of([GOOD, other, same_instant]), CANONICAL, source="req")
    assert calls == [3]
    assert list(result.rejects["reason"]) == [event_schema.REASON_DUPLICATE]
    assert list(result.rejects["row_number"]) == [3]


def test_a_mapping_with_synonyms_and_other_names_matches(frame_path: list[int]) -> None:
    mapping = mapping_from_dict(
        {
            "columns": {
                "customer_id": "user",
                "event_time": "ts",
                "action": "type",
                "product_id": "item",
                "price": "amount",
            },
            "action_synonyms": {"click": "view", "buy": "purchase"},
        }
    )
    columns = {
        "user": ["u1", "u1", "u2"],
        "ts": ["2024-01-02T03:04:05Z"] * 3,
        "type": ["Click", "zap", "buy"],
        "item": ["i1", "i1", "i2"],
        "amount": ["1", "x", ""],
        "email": ["a@b", "c@d", ""],
    }
    got = _compare(columns, mapping, frame_path)
    assert got.rejects["reason"].tolist() == [event_schema.REASON_UNKNOWN_ACTION]
    assert "email" not in got.rejects["raw"].iloc[0]  # unmapped columns are never copied
    assert got.events["action"].tolist() == ["view", "purchase"]


def test_many_rows_or_an_order_line_mapping_take_the_frame_path(frame_path: list[int]) -> None:
    many = [{**GOOD, "product_id": f"p{i}"} for i in range(validation_module.MAX_FEW_ROWS + 1)]
    assert len(validate_columns(_rows_of(many), CANONICAL, source="req").events) == len(many)
    retail = PRESETS["online_retail"]
    row = {
        "Invoice": "536365",
        "StockCode": "85123A",
        "Description": "HEART",
        "Quantity": "6",
        "InvoiceDate": "2010-12-01 08:26:00",
        "Price": "2.55",
        "Customer ID": "17850.0",
        "Country": "UK",
    }
    columns = {name: [value] for name, value in row.items()}
    assert validate_columns(columns, retail, source="req").events["customer_id"].tolist() == ["17850"]
    assert frame_path == [len(many), 1]


def test_plain_iso_times_skip_pandas_and_others_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not vacuous: the table's plain times take the path without pandas, the rest pandas'."""
    calls: list[list[str]] = []
    original = validation_module._parse_times_any

    def counted(text: pd.Series, time_format: Any) -> Any:
        calls.append(list(text))
        return original(text, time_format)

    monkeypatch.setattr(validation_module, "_parse_times_any", counted)
    plain = ["2024-01-02T03:04:05Z", "2024-01-02 03:04:05.5-05:30", "1990-01-01T00:00:00+01:00"]
    result = validate_columns(_rows_of([{**GOOD, "event_time": t} for t in plain]), CANONICAL, source="req")
    assert calls == []
    assert list(result.events["event_time"]) == [
        pd.Timestamp("2024-01-02T03:04:05Z"),
        pd.Timestamp("2024-01-02T08:34:05.5Z"),
    ]
    assert list(result.rejects["reason"]) == [event_schema.REASON_TIME_RANGE]
    validate_columns(_rows_of([{**GOOD, "event_time": "2024-02-30T00:00:00Z"}]), CANONICAL, source="req")
    assert calls == [["2024-02-30T00:00:00Z"]]


@pytest.fixture
def arrow_path(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """``_validate_few`` (the few rows through Arrow kernels), counted: the row counts it got."""
    calls: list[int] = []
    original = validation_module._validate_few

    def counted(columns: Mapping[str, Sequence[str]], n: int, *args: Any) -> Any:
        calls.append(n)
        return original(columns, n, *args)

    monkeypatch.setattr(validation_module, "_validate_few", counted)
    return calls


SIMPLE = [
    {**GOOD, "customer_id": "  c1  "},
    {**GOOD, "customer_id": "c\x001"},  # a control character inside: rejected by the Python rules
    {**GOOD, "customer_id": "c\t1"},
    {**GOOD, "customer_id": "\u00e9l\u00e8ve"},
    {**GOOD, "customer_id": "x" * (event_schema.MAX_ID_LENGTH + 1)},
    {**GOOD, "customer_id": "\U0001f600" * 257},  # 257 characters, 1,028 UTF-8 bytes: oversized
    {**GOOD, "action": " Purchase "},
    {**GOOD, "price": "nan"},
    {**GOOD, "category": "  "},
    {**GOOD, "event_time": "2199-12-31T23:59:59Z"},  # out of range
    {**GOOD, "event_time": "1990-01-01T00:00:00+01:00"},
]
NOT_SIMPLE = [
    {**GOOD, "customer_id": "\u2003c1\u2003"},  # a space Arrow and Python may strip differently
    {**GOOD, "customer_id": "c\x1c"},  # Python strips \x1c, a control character
    {**GOOD, "customer_id": "\u0085c1"},
    {**GOOD, "product_id": "\u00a0"},
    {**GOOD, "category": "x\ud800y"},  # a lone surrogate
    {**GOOD, "action": "\u0130"},  # lower-cased differently by Python and Arrow
    {**GOOD, "event_time": "2024-02-30T00:00:00Z"},  # not a plain instant: pandas decides
    {**GOOD, "event_time": ""},
]


@pytest.mark.parametrize("row", SIMPLE, ids=repr)
def test_simple_texts_take_the_python_rules(
    row: dict[str, str], arrow_path: list[int], frame_path: list[int]
) -> None:
    _compare(_rows_of([row, GOOD]), CANONICAL, frame_path)
    assert arrow_path == []


@pytest.mark.parametrize("row", NOT_SIMPLE, ids=repr)
def test_other_texts_take_the_arrow_kernels(
    row: dict[str, str], arrow_path: list[int], frame_path: list[int]
) -> None:
    if "\ud800" in row["category"]:  # no frame of it can be built: the paths are compared below
        with pytest.raises(UnicodeEncodeError):
            validate_columns(_rows_of([row, GOOD]), CANONICAL, source="req")
    else:
        _compare(_rows_of([row, GOOD]), CANONICAL, frame_path)
    assert arrow_path == [2]


_PRINTABLE = [chr(c) for c in range(0x20, 0x7F)]
_AWKWARD = ["\x00", "\t", "\x1f", "\x7f", "\u00e9", "\u2003", "\U0001f600", "\u0085"]


def _random_text(rng: np.random.Generator, limit: int) -> str:
    """Mostly printable ASCII with spaces at the edges, now and then an awkward character inside
    or at an edge, lengths around ``limit``."""
    length = int(rng.choice([0, 1, 3, limit - 1, limit, limit + 1]))
    chars = rng.choice(_PRINTABLE, size=length).tolist()
    if chars and rng.random() < 0.3:
        chars[int(rng.integers(len(chars)))] = str(rng.choice(_AWKWARD))
    return " " * int(rng.integers(0, 3)) + "".join(chars) + " " * int(rng.integers(0, 3))


def _random_row(rng: np.random.Generator) -> dict[str, str]:
    row = dict(GOOD)
    pick = int(rng.integers(8))
    if pick == 0:
        row["customer_id"] = _random_text(rng, event_schema.MAX_ID_LENGTH)
    elif pick == 1:
        row["product_id"] = _random_text(rng, event_schema.MAX_ID_LENGTH)
    elif pick == 2:
        row["category"] = _random_text(rng, event_schema.MAX_TEXT_LENGTH)
    elif pick == 3:
        row["session_id"] = _random_text(rng, event_schema.MAX_TEXT_LENGTH)
    elif pick == 4:
        action = str(rng.choice([*event_schema.ACTIONS, "Cart", "VIEW", "", "buy", "purchase "]))
        row["action"] = " " * int(rng.integers(0, 2)) + action
    elif pick == 5:
        row["price"] = str(
            rng.choice(["", "0", "-1.5", "1e3", " 7 ", "nan", "inf", "x", "1.000000000000000001"])
        )
    elif pick == 6:
        year = int(rng.choice([1989, 1990, 2024, 2199]))
        row["event_time"] = (
            f"{year}-0{int(rng.integers(1, 10))}-1{int(rng.integers(0, 10))}T12:00:0{int(rng.integers(10))}Z"
        )
    return row


def test_random_simple_and_awkward_texts_match_the_frame_path(
    arrow_path: list[int], frame_path: list[int]
) -> None:
    """Random bodies of 1-6 rows around every rule's edges: each one's verdict is the loaders',
    and both few-row paths are taken (most bodies by the Python rules)."""
    rng = np.random.default_rng(23)
    n_bodies = 150
    for _ in range(n_bodies):
        rows = [_random_row(rng) for _ in range(int(rng.integers(1, 7)))]
        if rng.random() < 0.2:
            rows.append(dict(rows[0]))
        _compare(_rows_of(rows), CANONICAL, frame_path)
    assert 0 < len(arrow_path) < n_bodies / 2
