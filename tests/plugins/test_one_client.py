"""bench/one_client.py without servers: the posted bodies (valid, unique event times, the read
customers) and the table."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def one_client() -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCH_DIR))
    try:
        import one_client

        yield one_client
    finally:
        sys.path.remove(str(BENCH_DIR))


def test_each_post_is_one_valid_event_at_a_time_of_its_own(one_client: ModuleType) -> None:
    from load_server import BuiltData, Product

    from traitflow.events import PRESETS, validate_columns
    from traitflow.online_update import event_columns

    day = datetime(2026, 3, 29, tzinfo=UTC)
    customers = tuple(f"c{i}" for i in range(300))
    data = BuiltData("s", 1, customers, (Product("p1", "shoes", 9.5), Product("p2", "hats", 3.0)), day)
    poster = one_client.Poster(data)
    posts = [poster() for _ in range(500)]
    times = [body["events"][0]["event_time"] for _, body in posts]
    assert len(set(times)) == 500
    assert all(day <= pd.Timestamp(t) < day + pd.Timedelta(days=1) for t in times)
    paths = {path for path, _ in posts}
    assert paths == {f"/traitflow/api/customers/c{i}/events" for i in range(one_client.READ_CUSTOMERS)}
    rows = [{"customer_id": "c1", **body["events"][0]} for _, body in posts[:10]]
    result = validate_columns(event_columns(rows), PRESETS["canonical"], source="test")
    assert len(result.events) == 10 and len(result.rejects) == 0


def test_the_table_has_a_row_per_variant_and_measured_route(one_client: ModuleType) -> None:
    times = [
        {"read": [1.0, 2.0, 3.0], "health": [4.0], "post": []},
        {"read": [2.0], "health": [], "post": []},
    ]
    table = one_client.render(["this checkout", "abc123"], times).splitlines()
    assert table[2:] == [
        "| this checkout | read | 3 | 2.00 | 2.80 | 2.98 |",
        "| this checkout | health | 1 | 4.00 | 4.00 | 4.00 |",
        "| abc123 | read | 1 | 2.00 | 2.00 | 2.00 |",
    ]
