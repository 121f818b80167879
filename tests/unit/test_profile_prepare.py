"""``profile_prepare``'s checks of a few values against their general (Arrow) path, without a
database: the same arrays, the same errors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from traitflow.store import StoreInputError, profile_prepare


def _both(values: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> tuple[object, object]:
    """``_check_cold_start(values)`` with its few-values path, then with the general path only:
    the array returned or the error's message."""
    outcomes: list[object] = []
    for few in (profile_prepare._FEW_TEXTS, -1):
        monkeypatch.setattr(profile_prepare, "_FEW_TEXTS", few)
        try:
            outcomes.append(profile_prepare._check_cold_start(values))
        except StoreInputError as exc:
            outcomes.append(str(exc))
    return outcomes[0], outcomes[1]


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["none"],
        ["few_tokens"],
        ["no_history"],
        ["none", "no_history", "few_tokens", "none"],
        [np.str_("few_tokens")],
        ["none"] * 64,
        ["none"] * 65,
    ],
)
def test_valid_cold_start_values_give_the_general_paths_array(
    values: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    few, general = _both(np.array(values, dtype=object), monkeypatch)
    assert isinstance(few, pa.Array) and isinstance(general, pa.Array)
    assert few.type == general.type == pa.large_string()
    assert few.equals(general)
    assert few.to_pylist() == [str(v) for v in values]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["maybe"], "cold_start value 'maybe' is not one of"),
        (["none", 5, "none"], "cold_start value 5 is not one of"),
        ([None], "cold_start value None is not one of"),
        (["none", np.nan], "cold_start value nan is not one of"),
        (["None"], "cold_start value 'None' is not one of"),
        (["none"] * 64 + ["maybe"], "cold_start value 'maybe' is not one of"),
    ],
)
def test_invalid_cold_start_values_raise_the_general_paths_error(
    values: list[object], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    few, general = _both(np.array(values, dtype=object), monkeypatch)
    assert few == general
    assert isinstance(few, str) and few.startswith(message)


@pytest.mark.parametrize("values", [[b"none"], ["none", b"few_tokens"], [1.5], [["none"]]])
def test_values_that_are_not_plain_strings_are_decided_by_the_general_path(
    values: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    values_array = np.empty(len(values), dtype=object)
    values_array[:] = values
    few, general = _both(values_array, monkeypatch)
    if isinstance(general, pa.Array):
        assert isinstance(few, pa.Array) and few.equals(general)
    else:
        assert few == general


@pytest.mark.parametrize(
    "ids",
    [
        ["a", "b"],
        ["b", "a"],
        ["a", "a"],
        ["a", "ab", "b"],
        ["Z", "a", "é", "\uffff", "𝄞"],  # code point = UTF-8 byte order, past the BMP too
        ["𝄞", "\uffff"],
        ["c1", "c2", "c10"],
        [f"c{i:03d}" for i in range(64)],
        [f"c{i:03d}" for i in range(64)][::-1],
        [f"c{i:03d}" for i in range(65)],
        [f"c{i:03d}" for i in range(64)] + ["c000"],
    ],
)
def test_few_ids_are_ordered_as_the_arrow_kernels_order_them(
    ids: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    array = pa.array(ids, pa.large_string())
    few = profile_prepare._strictly_increasing(array)
    monkeypatch.setattr(profile_prepare, "_FEW_TEXTS", 0)
    assert few == profile_prepare._strictly_increasing(array)
    assert few == (ids == sorted(set(ids), key=lambda i: i.encode("utf-8")))


@pytest.mark.parametrize("shape", [(0, 4), (1, 16), (3, 64), (65, 64), (1000, 64)])
@pytest.mark.parametrize("bad", [None, np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_small_and_large_arrays_are_checked_finite_alike(
    shape: tuple[int, int], bad: float | None, dtype: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = np.random.default_rng(1).normal(size=shape).astype(dtype)
    if bad is not None and values.size:
        values.flat[values.size // 2] = bad
    small = profile_prepare._all_finite(values)
    monkeypatch.setattr(profile_prepare, "_FEW_VALUES", -1)
    assert small == profile_prepare._all_finite(values) == (bad is None or not values.size)


@pytest.mark.parametrize(
    "batch_ids",
    [
        np.array([3, 11, 7], dtype=np.int64),
        np.array([3, 7, 11], dtype=np.int64),
        np.array([3, 11, 7], dtype=np.int32),
        np.array([3.0, 11.0, 7.0]),
        np.array([3.5, 11.0, 7.0]),
        np.array([[3, 11, 7]], dtype=np.int64).reshape(3),
        np.array([3, 11, 7], dtype=np.uint8),
    ],
)
def test_trait_ids_compare_as_the_int64_arrays_do(batch_ids: np.ndarray) -> None:
    model_ids = np.array([3, 11, 7], dtype=np.int64)
    expected = np.array_equal(batch_ids.astype(np.int64), model_ids)
    assert profile_prepare._same_trait_ids(batch_ids, model_ids) is expected
