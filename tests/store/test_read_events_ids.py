"""``Store.read_events(customer_ids=...)``: a few ids go into the query as an array, many are
staged in a temp table; both give the same events."""

from __future__ import annotations

import pandas as pd

from traitflow import event_schema
from traitflow.events import LoadResult
from traitflow.store import Store
from traitflow.store.event_reads import MAX_LISTED_IDS
from traitflow.synthetic import SyntheticSpec, generate


def test_listed_and_staged_ids_read_the_same_events(store: Store) -> None:
    """The listed ids' plain SELECT gives the frame of the staged ids' COPY, missing values and
    text that CSV must quote included."""
    events = generate(SyntheticSpec(n_customers=MAX_LISTED_IDS + 50, n_events=3000, n_products=50)).events
    hostile = events["customer_id"] == events["customer_id"].iloc[-1]
    events.loc[hostile, "customer_id"] = "x'); DROP TABLE events;--"
    rows = events.index[hostile]
    events.loc[rows[0], "category"] = None
    events.loc[rows[1], "price"] = float("nan")
    events.loc[rows[2], "session_id"] = None
    events.loc[rows[3], "category"] = 'a "quoted", multi\nline category'
    events.loc[rows[4], "price"] = 0.1 + 0.2  # no shorter decimal text
    store.ingest_events(LoadResult(events, event_schema.empty_rejects()), "synthetic", "test")
    ids = pd.unique(events["customer_id"])
    assert len(ids) > MAX_LISTED_IDS

    staged = store.read_events(customer_ids=ids)
    assert len(staged) == len(events)
    few = [*ids[:3], "x'); DROP TABLE events;--", "absent"]
    listed = store.read_events(customer_ids=few)
    expected = staged[staged["customer_id"].isin(few)].reset_index(drop=True)
    pd.testing.assert_frame_equal(listed.reset_index(drop=True), expected)
    assert set(listed["customer_id"]) == set(few) - {"absent"}
    mine = listed[listed["customer_id"] == "x'); DROP TABLE events;--"]
    assert mine["category"].isna().sum() >= 1 and mine["price"].isna().sum() >= 1
    assert mine["session_id"].isna().sum() >= 1 and (mine["price"] == 0.1 + 0.2).any()
    assert (mine["category"] == 'a "quoted", multi\nline category').any()


def test_the_read_frame_has_the_canonical_columns_dtypes_and_missing_values() -> None:
    import numpy as np
    import pyarrow as pa

    from traitflow.store.event_reads import events_frame

    table = pa.table(
        {
            "customer_id": pa.array(["c1", "c2"], pa.large_string()),
            "event_us": pa.array([1_704_164_645_000_001, 1_704_164_646_000_000], pa.int64()),
            "action": pa.array(["view", "purchase"], pa.large_string()),
            "product_id": pa.array(["p1", "p2"], pa.large_string()),
            "category": pa.array([None, "shoes"], pa.large_string()),
            "price": pa.array([None, 9.5], pa.float64()),
            "session_id": pa.array(["s1", None], pa.large_string()),
        }
    )
    frame = events_frame(table)
    assert list(frame.columns) == list(event_schema.CANONICAL_COLUMNS)
    assert frame.dtypes.to_dict() == event_schema.empty_events().dtypes.to_dict()
    assert list(frame["event_time"]) == [
        pd.Timestamp("2024-01-02T03:04:05.000001Z"),
        pd.Timestamp("2024-01-02T03:04:06Z"),
    ]
    assert frame["category"].isna().tolist() == [True, False] and frame["category"].iloc[1] == "shoes"
    assert np.isnan(frame["price"].iloc[0]) and frame["price"].iloc[1] == 9.5
    assert frame["session_id"].isna().tolist() == [False, True]
