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
    events = generate(SyntheticSpec(n_customers=MAX_LISTED_IDS + 50, n_events=3000, n_products=50)).events
    hostile = events["customer_id"] == events["customer_id"].iloc[-1]
    events.loc[hostile, "customer_id"] = "x'); DROP TABLE events;--"
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
