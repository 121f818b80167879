"""Ordering between writers and readers: event snapshots, late deliveries, stale-model writes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from traitflow import event_schema
from traitflow.events import LoadResult
from traitflow.model import TraitflowModel
from traitflow.profile_batch import ProfileBatch
from traitflow.store import StaleModelError, Store

BuildModel = Callable[..., TraitflowModel]
BuildBatch = Callable[..., ProfileBatch]
T0 = datetime(2024, 1, 8, tzinfo=UTC)
DAY = timedelta(days=1)


def events(customers: list[str], when: datetime) -> LoadResult:
    frame = event_schema.as_canonical(
        pd.DataFrame(
            {
                "customer_id": customers,
                "event_time": [when + timedelta(minutes=i) for i in range(len(customers))],
                "action": "view",
                "product_id": [f"p{i}" for i in range(len(customers))],
            }
        )
    )
    return LoadResult(events=frame, rejects=event_schema.empty_rejects())


def test_a_snapshot_pins_reads_to_what_was_committed_when_it_was_taken(store: Store, make_store) -> None:
    store.ingest_events(events(["a", "b"], T0), source="day1.csv", run_id="r1")
    # An ingest in progress when the snapshot is taken, committed after it: not in the snapshot
    # although its transaction started first (a timestamp watermark would take it).
    other = make_store()
    started, taken = threading.Event(), threading.Event()

    def slow_ingest() -> None:
        with other._transaction() as conn:
            conn.execute("SELECT pg_current_xact_id()")  # the transaction has its id from here on
            started.set()
            taken.wait(10)
            from traitflow.store import ingest as store_ingest

            store_ingest.ingest_results(conn, [events(["c"], T0)], "late.csv", "r2", None)

    thread = threading.Thread(target=slow_ingest)
    thread.start()
    assert started.wait(10)
    snapshot = store.event_snapshot()
    taken.set()
    thread.join(10)
    store.ingest_events(events(["d"], T0 + timedelta(hours=1)), source="day2.csv", run_id="r3")

    assert sorted(store.read_events(snapshot=snapshot)["customer_id"].unique()) == ["a", "b"]
    assert list(store.customers_with_events(None, None, snapshot=snapshot)) == ["a", "b"]
    assert sorted(store.read_events()["customer_id"].unique()) == ["a", "b", "c", "d"]
    # Rows ingested before ingest_xid existed (NULL) count as committed before any snapshot.
    store.connection.execute("UPDATE events SET ingest_xid = NULL WHERE customer_id = 'a'")
    assert sorted(store.read_events(snapshot=store.event_snapshot())["customer_id"].unique()) == [
        "a",
        "b",
        "c",
        "d",
    ]


def test_the_day_selection_includes_late_events_of_its_files_and_ignores_later_files(store: Store) -> None:
    store.ingest_events(events(["a"], T0), source="/in/events_2024-01-08.csv", run_id="r")
    # Delivered on the 9th, dated the 8th: a late event.
    store.ingest_events(events(["late", "b"], T0 + timedelta(hours=5)), "/in/events_2024-01-09.csv", "r")
    store.ingest_events(events(["c"], T0 + DAY), source="/in/events_2024-01-09.csv", run_id="r")
    store.ingest_events(events(["e"], T0 + 2 * DAY), source="/in/events_2024-01-10.csv", run_id="r")
    later = ["/in/events_2024-01-10.csv"]
    assert list(store.customers_with_events(T0 + DAY, T0 + 2 * DAY)) == ["c"]
    day9 = store.customers_with_events(
        T0 + DAY, T0 + 2 * DAY, delivered_in=["/in/events_2024-01-09.csv"], exclude_sources=later
    )
    assert list(day9) == ["b", "c", "late"]
    # The run for the 8th never sees the file of the 9th, whether it was ingested already or not.
    not_yet = [*later, "/in/events_2024-01-09.csv"]
    day8 = store.customers_with_events(
        T0, T0 + DAY, delivered_in=["/in/events_2024-01-08.csv"], exclude_sources=not_yet
    )
    assert list(day8) == ["a"]
    read = store.read_events(end=T0 + DAY, exclude_sources=["/in/events_2024-01-09.csv"])
    assert list(read["customer_id"]) == ["a"]


def test_a_daily_batch_of_a_replaced_model_is_refused_and_writes_nothing(
    store: Store, build_model: BuildModel, build_profile_batch: BuildBatch
) -> None:
    first = store.save_model(build_model(trained_through=T0))
    store.promote(first)
    as_of = T0 + 3 * DAY
    batch = build_profile_batch(first, ["c1", "c2"], as_of=as_of)
    assert store.write_profiles(batch, require_selected_model=True).profiles_written == 2

    # A weekly run promotes a model trained through a later date, with its profiles as of as_of.
    second = store.save_model(build_model(trained_through=as_of - DAY, seed=1))
    store.promote(second, profiles=build_profile_batch(second, ["c1", "c2", "c3"], as_of=as_of, seed=2))
    before = store.table_checksums()
    late = build_profile_batch(first, ["c1", "c2"], as_of=as_of, seed=3)  # picked model 1 earlier
    with pytest.raises(StaleModelError) as caught:
        store.write_profiles(late, require_selected_model=True)
    assert caught.value.model_version == first and caught.value.selected == second
    assert store.table_checksums() == before
    rows = store.connection.execute("SELECT DISTINCT model_version FROM customer_profile_history").fetchall()
    assert rows == [(second,)]
    # An older date still selects the first model: its backfill writes as before.
    old = build_profile_batch(first, ["c1"], as_of=T0 + DAY, seed=4)
    assert store.write_profiles(old, require_selected_model=True).history_inserted == 1
    # Without the check (the default) the batch is written as given.
    assert store.write_profiles(late).history_replaced == 2
