"""``event_reads``' grouping of a history read's rows by customer, without a database: the
answer ``np.unique`` gives, whatever order the rows come in."""

from __future__ import annotations

import numpy as np
import pytest

from traitflow.store.event_reads import _customer_runs


@pytest.mark.parametrize(
    "customers",
    [
        ["a"],
        ["a"] * 40,
        ["a", "a", "b", "c", "c", "c"],
        ["Z", "a", "a", "é", "\uffff", "𝄞", "𝄞"],  # byte order = code point order
        ["b", "b", "a"],  # not in byte order (another collation)
        ["a", "b", "a"],  # a customer's rows not together
        ["a", "B", "b"],
        [f"c{i % 7:02d}" for i in sorted(range(50), key=lambda i: i % 7)],
    ],
)
def test_customer_runs_are_what_np_unique_gives(customers: list[str]) -> None:
    ids, starts = _customer_runs(customers)
    unique, firsts = np.unique(np.array(customers, dtype=object), return_index=True)
    assert ids.dtype == object and starts.dtype == np.int64
    assert ids.tolist() == unique.tolist()
    np.testing.assert_array_equal(starts, np.append(firsts, len(customers)))
