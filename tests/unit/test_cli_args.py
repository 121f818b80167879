"""The CLI's argument types: integers within bounds, with errors that name the bound and the value."""

from __future__ import annotations

import argparse

import pytest

from traitflow.cli import build_parser
from traitflow.cli.common import bounded_int, int_list
from traitflow.config import MAX_SHARDS


@pytest.mark.parametrize(
    ("minimum", "maximum", "value", "parsed"),
    [(1, 64, "1", 1), (1, 64, "64", 64), (0, None, "0", 0), (1, None, "1000000000000", 10**12)],
)
def test_bounded_int_accepts_its_bounds(minimum: int, maximum: int | None, value: str, parsed: int) -> None:
    assert bounded_int(minimum, maximum)(value) == parsed


@pytest.mark.parametrize(
    ("minimum", "maximum", "value", "message"),
    [
        (1, 64, "0", "must be between 1 and 64, got 0"),
        (1, 64, "65", "must be between 1 and 64, got 65"),
        (0, None, "-1", "must be >= 0, got -1"),
        (1, None, "0", "must be >= 1, got 0"),
        (3, 3, "4", "must be between 3 and 3, got 4"),
    ],
)
def test_bounded_int_names_the_bound_and_the_value(
    minimum: int, maximum: int | None, value: str, message: str
) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as raised:
        bounded_int(minimum, maximum)(value)
    assert str(raised.value) == message


@pytest.mark.parametrize("value", ["", "x", "1.5", "2e3", "0x10", "1,000"])
def test_bounded_int_refuses_what_is_not_an_integer(value: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as raised:
        bounded_int(0)(value)
    assert str(raised.value) == f"not an integer: {value!r}"


def test_bounded_int_refuses_an_empty_range() -> None:
    with pytest.raises(ValueError, match="maximum 0 is below minimum 1"):
        bounded_int(1, 0)


def test_int_list_checks_every_entry() -> None:
    assert int_list("4, 8,16,") == (4, 8, 16)
    for value, message in [
        ("4,0", "must be >= 1, got 0"),
        ("4,x", "not an integer: 'x'"),
        (",", "need at least one integer, got ','"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError) as raised:
            int_list(value)
        assert str(raised.value) == message


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["update", "--shards", "0"], f"argument --shards: must be between 1 and {MAX_SHARDS}, got 0"),
        (["retrain", "--shards", "two"], "argument --shards: not an integer: 'two'"),
        (["top", "3", "--min-events", "-1"], "argument --min-events: must be >= 0, got -1"),
        (["reports", "--limit", "0"], "argument --limit: must be >= 1, got 0"),
        (["evaluate", "e.csv", "--bootstrap", "0"], "argument --bootstrap: must be >= 1, got 0"),
        (["sample", "--customers", "1.5"], "argument --customers: not an integer: '1.5'"),
    ],
)
def test_the_commands_report_the_bound_a_flag_breaks(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_the_commands_parse_flags_within_their_bounds() -> None:
    args = build_parser().parse_args(["update", "--shards", str(MAX_SHARDS)])
    assert args.shards == MAX_SHARDS
    args = build_parser().parse_args(["top", "3", "--min-events", "0", "-n", "1"])
    assert (args.min_events, args.n) == (0, 1)
