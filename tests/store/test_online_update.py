"""``traitflow.online_update.update_from_events`` against a real PostgreSQL: stored before
profiled, no model, a promotion racing the write, the request limit."""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest
from psycopg import pq

from traitflow import event_schema
from traitflow.model import TraitflowModel
from traitflow.online_update import (
    MAX_EVENTS,
    SELECTIONS,
    SelectionHints,
    TooManyEventsError,
    day_end,
    request_source,
    update_from_events,
)
from traitflow.store import Store

EVENTS: list[dict[str, Any]] = [
    {"customer_id": "ann", "event_time": "2024-01-09T08:00:00Z", "action": "cart", "product_id": "p1"},
    {"customer_id": "ann", "event_time": "2024-01-09T09:00:00Z", "action": "view", "product_id": "p4"},
    {"customer_id": "ann", "event_time": "2024-01-09T10:00:00Z", "action": "purchase", "product_id": "p2"},
]


def _model(build_model: Any, trained_through: datetime, seed: int = 0) -> TraitflowModel:
    model = build_model(trained_through=trained_through, seed=seed)
    vectors = np.random.default_rng(seed).standard_normal(model.tokens.vectors.shape).astype(np.float32)
    return dataclasses.replace(model, tokens=dataclasses.replace(model.tokens, vectors=vectors))


def test_without_a_model_the_events_are_stored_and_the_customer_listed(store: Store) -> None:
    update = update_from_events(store, EVENTS, run_id="test")
    assert (update.n_received, update.n_inserted, update.n_rejected) == (3, 3, 0)
    assert update.profiles == ()
    [unprofiled] = update.unprofiled
    assert unprofiled.customer_id == "ann" and unprofiled.as_of == datetime(2024, 1, 10, tzinfo=UTC)
    assert "no promoted model" in unprofiled.reason
    assert len(store.read_events(customer_ids=["ann"])) == 3


def test_a_promotion_racing_the_write_is_recomputed_with_the_newer_model(
    store: Store, build_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = store.save_model(_model(build_model, datetime(2024, 1, 7, tzinfo=UTC)))
    store.promote(first)
    newer = store.save_model(_model(build_model, datetime(2024, 1, 8, tzinfo=UTC), seed=1))
    write = store.write_profiles
    calls: list[int | None] = []

    def promote_then_write(batch: Any, **kwargs: Any) -> Any:
        calls.append(batch.model_version)
        if len(calls) == 1:  # a weekly run promotes between the pick and the write
            store.promote(newer)
        return write(batch, **kwargs)

    monkeypatch.setattr(store, "write_profiles", promote_then_write)
    update = update_from_events(store, EVENTS, run_id="test")
    assert calls == [first, newer]
    [profile] = update.profiles
    assert profile.model_version == newer
    current = store.current_profile("ann")
    assert current is not None and current["model_version"] == newer


def test_a_known_selection_spares_the_query_and_a_promotion_still_wins(
    store: Store, build_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first post of a date asks for its model; later ones take the hint. A promotion for
    that date after the hint is caught by the write's check: the post is recomputed with the
    newer model, and that recompute does not use up the one a promotion racing the write gets."""
    first = store.save_model(_model(build_model, datetime(2024, 1, 7, tzinfo=UTC)))
    store.promote(first)
    asked: list[datetime] = []
    model_version_for = store.model_version_for

    def counted(as_of: datetime) -> int | None:
        asked.append(as_of)
        return model_version_for(as_of)

    monkeypatch.setattr(store, "model_version_for", counted)
    update_from_events(store, EVENTS[:1], run_id="test")
    update_from_events(store, EVENTS[1:2], run_id="test")
    assert asked == [datetime(2024, 1, 10, tzinfo=UTC)]
    assert SELECTIONS.get(store, datetime(2024, 1, 10, tzinfo=UTC)) == first

    newer = store.save_model(_model(build_model, datetime(2024, 1, 8, tzinfo=UTC), seed=1))
    newest = store.save_model(_model(build_model, datetime(2024, 1, 9, tzinfo=UTC), seed=2))
    store.promote(newer)  # the hint (first) is now out of date
    write = store.write_profiles
    calls: list[int | None] = []

    def promote_then_write(batch: Any, **kwargs: Any) -> Any:
        calls.append(batch.model_version)
        if len(calls) == 2:  # and a promotion races the recompute's write
            store.promote(newest)
        return write(batch, **kwargs)

    monkeypatch.setattr(store, "write_profiles", promote_then_write)
    [profile] = update_from_events(store, EVENTS[2:], run_id="test").profiles
    assert calls == [first, newer, newest] and profile.model_version == newest
    assert asked == [datetime(2024, 1, 10, tzinfo=UTC)]  # the write found each selection
    assert SELECTIONS.get(store, datetime(2024, 1, 10, tzinfo=UTC)) == newest
    current = store.current_profile("ann")
    assert current is not None and (current["model_version"], current["n_events"]) == (newest, 3)


def test_selection_hints_forget_a_date_without_a_model_and_stay_bounded(store: Store) -> None:
    hints = SelectionHints(max_dates=2)
    days = [datetime(2024, 1, d, tzinfo=UTC) for d in (1, 2, 3)]
    for version, day in enumerate(days, start=1):
        hints.remember(store, day, version)
    assert [hints.get(store, day) for day in days] == [None, 2, 3]  # the oldest dropped
    hints.remember(store, days[1], None)
    assert hints.get(store, days[1]) is None and hints.get(store, days[2]) == 3
    with pytest.raises(ValueError, match="max_dates must be >= 1, got 0"):
        SelectionHints(max_dates=0)


def test_the_source_names_the_content_and_the_limit_holds(store: Store) -> None:
    assert request_source(EVENTS) == request_source([dict(e) for e in EVENTS])
    assert request_source(EVENTS) != request_source(EVENTS[:2])
    assert request_source(EVENTS).startswith("api:sha256:")
    with pytest.raises(TooManyEventsError):
        update_from_events(store, EVENTS * (MAX_EVENTS // 3 + 1), run_id="test")
    assert store.table_counts()["events"] == 0


def test_day_end_is_the_daily_runs_as_of() -> None:
    import pandas as pd

    def micros(text: str) -> int:
        return int(pd.Timestamp(text).value) // 1000  # nanoseconds since the epoch

    assert day_end(micros("2024-01-09T23:59:59.999999Z")) == datetime(2024, 1, 10, tzinfo=UTC)
    assert day_end(micros("2024-01-10T00:00:00Z")) == datetime(2024, 1, 11, tzinfo=UTC)
    assert day_end(micros("2024-01-10T01:00:00+02:00")) == datetime(2024, 1, 10, tzinfo=UTC)
    assert day_end(micros("1969-12-31T12:00:00Z")) == datetime(1970, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("unit", ["us", "ns"])
def test_customers_are_grouped_by_the_day_after_their_newest_event(unit: str) -> None:
    import pandas as pd

    from traitflow.online_update import FrameHistories, _customers_by_day

    history = pd.DataFrame(
        {
            "customer_id": ["bo", "al", "bo", "cy", "al", "di"],
            "event_time": pd.to_datetime(
                [
                    "2024-01-09T23:59:59.999999Z",  # bo's newest: still the 9th
                    "2024-01-08T10:00:00Z",
                    "2024-01-09T01:00:00Z",
                    "2024-01-10T00:00:00Z",  # cy: midnight starts the 10th
                    "2024-01-09T00:00:00Z",  # al's newest
                    "1999-12-31T12:00:00Z",
                ],
                utc=True,
                format="ISO8601",
            ).astype(f"datetime64[{unit}, UTC]"),
        }
    )
    histories = FrameHistories.of(history)
    groups = _customers_by_day(histories.customer_ids, histories.newest_us())
    assert list(groups) == [
        datetime(2000, 1, 1, tzinfo=UTC),
        datetime(2024, 1, 10, tzinfo=UTC),
        datetime(2024, 1, 11, tzinfo=UTC),
    ]
    assert [list(ids) for ids in groups.values()] == [["di"], ["al", "bo"], ["cy"]]


def test_the_online_profiler_gives_the_posted_profile(store: Store, build_model: Any) -> None:
    """``online.CustomerProfiler`` (one customer, model prepared once) agrees with the batch path
    the update uses, recency weighting included."""
    from traitflow.config import PipelineConfig
    from traitflow.online import CustomerProfiler

    config = PipelineConfig.from_mapping({"k": 3, "recency_half_life_days": 1.5})
    model = dataclasses.replace(_model(build_model, datetime(2024, 1, 7, tzinfo=UTC)), config=config)
    version = store.save_model(model)
    store.promote(version)
    [posted] = update_from_events(store, EVENTS, run_id="test").profiles
    events = store.read_events(customer_ids=["ann"])
    online = CustomerProfiler(store.load_model(version)).profile(
        events["action"].tolist(),
        events["product_id"].tolist(),
        events["category"].tolist(),
        events["event_time"].dt.tz_convert(None).to_numpy(),  # UTC, as datetime64
        as_of=posted.as_of,
    )
    assert online.profile == pytest.approx(np.array(posted.scores), abs=1e-9)
    assert (online.n_events, online.n_known_tokens, online.cold_start) == (
        posted.n_events,
        posted.n_known_tokens,
        posted.cold_start,
    )


def test_a_few_customers_are_profiled_as_the_batch_path_profiles_many(store: Store, build_model: Any) -> None:
    """The two routes of a post (plain columns and the profiler's look-ups for a few customers,
    the batch path's frames for more) give the same profiles, to the bit, recency weighting,
    a category fallback and a few-tokens customer included."""
    from traitflow.config import PipelineConfig
    from traitflow.online_update import FrameHistories, _profile

    config = PipelineConfig.from_mapping({"k": 3, "recency_half_life_days": 1.5})
    model = dataclasses.replace(_model(build_model, datetime(2024, 1, 7, tzinfo=UTC)), config=config)
    version = store.save_model(model)
    store.promote(version)
    unseen = {
        "customer_id": "bea",
        "event_time": "2024-01-09T12:00:00Z",
        "action": "view",
        "product_id": "new",
    }
    events = [
        *EVENTS,
        *({**e, "customer_id": "bea", "category": "cat 1 🛒"} for e in EVENTS),
        {**unseen, "category": "cat 2 🛒"},
        {**EVENTS[0], "customer_id": "cal"},  # one event: few tokens
    ]
    update_from_events(store, events, run_id="test")
    ids = np.array(["ann", "bea", "cal"], dtype=object)
    as_of = datetime(2024, 1, 10, tzinfo=UTC)
    few = _profile(store, version, model, store.customer_histories(list(ids)), ids, as_of)
    many = _profile(
        store, version, model, FrameHistories.of(store.read_events(customer_ids=list(ids))), ids, as_of
    )
    assert few.customer_ids.tolist() == many.customer_ids.tolist() == ids.tolist()
    np.testing.assert_array_equal(few.embeddings, many.embeddings)
    np.testing.assert_array_equal(few.profiles, many.profiles)
    np.testing.assert_array_equal(few.n_events, many.n_events)
    np.testing.assert_array_equal(few.n_known_tokens, many.n_known_tokens)
    assert few.cold_start.tolist() == many.cold_start.tolist() == ["none", "none", "few_tokens"]


def test_a_post_of_more_customers_than_few_takes_the_frame_route_to_the_same_profile(
    store: Store, build_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A re-post profiles the customer again from the stored history: with ``FEW_CUSTOMERS`` at 0
    that goes through ``Store.read_events`` and ``pipeline.profile_customers``, to the same bits."""
    from traitflow import online_update
    from traitflow.store.reads import CustomerHistories

    version = store.save_model(_model(build_model, datetime(2024, 1, 7, tzinfo=UTC)))
    store.promote(version)
    routes: list[str] = []
    read = online_update._read_histories

    def recorded(*args: Any) -> Any:
        histories = read(*args)
        routes.append("few" if isinstance(histories, CustomerHistories) else "frame")
        return histories

    ingest_and_read = store.ingest_and_read_histories

    def recorded_with_ingest(*args: Any, **kwargs: Any) -> Any:
        report, histories = ingest_and_read(*args, **kwargs)
        routes.append("few with the ingest" if isinstance(histories, CustomerHistories) else "?")
        return report, histories

    monkeypatch.setattr(online_update, "_read_histories", recorded)
    monkeypatch.setattr(store, "ingest_and_read_histories", recorded_with_ingest)
    [few] = update_from_events(store, EVENTS, run_id="test").profiles
    monkeypatch.setattr(online_update, "FEW_CUSTOMERS", 0)
    again = update_from_events(store, EVENTS, run_id="test")
    assert routes == ["few with the ingest", "frame"] and again.n_inserted == 0
    [frame] = again.profiles
    assert frame == few


def test_events_stored_by_a_concurrent_post_are_in_the_last_profile_written(
    store: Store, build_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another post commits an event of the customer between this post's read and its write: the
    profile is computed again, so the stored profile rests on all four events."""
    version = store.save_model(_model(build_model, datetime(2024, 1, 7, tzinfo=UTC)))
    store.promote(version)
    write = store.write_profiles
    late = {"customer_id": "ann", "event_time": "2024-01-09T11:00:00Z", "action": "cart", "product_id": "p5"}
    written: list[int] = []

    def another_post_then_write(batch: Any, **kwargs: Any) -> Any:
        written.append(int(batch.n_events[0]))
        if len(written) == 1:
            monkeypatch.setattr(store, "write_profiles", write)
            update_from_events(store, [late], run_id="other")  # commits its event and profile
            monkeypatch.setattr(store, "write_profiles", another_post_then_write)
        return write(batch, **kwargs)

    monkeypatch.setattr(store, "write_profiles", another_post_then_write)
    [profile] = update_from_events(store, EVENTS, run_id="test").profiles
    assert written == [3, 4]  # the first write missed the other post's event; the second has it
    current = store.current_profile("ann")
    assert current is not None and profile.n_events == 4 == current["n_events"]


def _round_trips(store: Store, call: Callable[[], Any]) -> int:
    """Round trips to the server during ``call``: the times the client sends after it has read
    (libpq's protocol trace: ``F`` lines are messages sent, ``B`` lines messages received)."""
    conn = store.connection
    with tempfile.TemporaryFile("w+") as trace:
        conn.pgconn.trace(trace.fileno())
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            call()
        finally:
            conn.pgconn.untrace()
        trace.seek(0)
        directions = [line[0] for line in trace.read().splitlines() if line[:1] in ("F", "B")]
    return sum(
        1 for before, now in zip(["B", *directions], directions, strict=False) if (before, now) == ("B", "F")
    )


def test_a_single_event_post_takes_three_round_trips(store: Store, build_model: Any) -> None:
    """Pinned: a round trip added to the post path fails here. Once the model is cached and its
    selection for the day known (``SelectionHints``): ingest and history (BEGIN, the events
    insert, the conflict check, the history's SELECT and COMMIT in one pipeline), the write
    (BEGIN, the locks, model check, partitions and model traits in one pipeline; the row
    statement, the event count and COMMIT in another)."""
    version = store.save_model(_model(build_model, datetime(2024, 1, 7, tzinfo=UTC)))
    store.promote(version)
    update_from_events(store, EVENTS, run_id="test")  # loads the model into the process's cache
    event = {"customer_id": "ann", "event_time": "2024-01-09T11:00:00Z", "action": "view", "product_id": "p3"}
    posted: list[Any] = []
    assert _round_trips(store, lambda: posted.append(update_from_events(store, [event], run_id="test"))) == 3
    [update] = posted
    assert (update.n_inserted, update.n_rejected) == (1, 0)
    assert [p.n_events for p in update.profiles] == [4]
    assert store.current_profile("ann")["n_events"] == 4


def test_a_usual_post_reads_no_events_frame(
    store: Store, build_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not vacuous: a post of simple texts goes from validation to the store as ``EventRows``
    (building their frame and reading it back cost more than the rest of both)."""
    version = store.save_model(_model(build_model, datetime(2024, 1, 7, tzinfo=UTC)))
    store.promote(version)
    framed: list[int] = []
    original = event_schema.EventRows.frame

    def counted(rows: event_schema.EventRows) -> pd.DataFrame:
        framed.append(len(rows))
        return original(rows)

    monkeypatch.setattr(event_schema.EventRows, "frame", counted)
    update = update_from_events(store, EVENTS, run_id="test")
    assert framed == [] and update.n_inserted == len(EVENTS) and update.profiles


def test_the_write_reads_current_rows_only_for_a_configured_cache(
    store: Store, build_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``read_current`` costs a query in the writers' lock: asked for only when the profile cache
    will write the rows (caching on, at most ``MAX_REFRESHED_CUSTOMERS`` customers)."""
    from traitflow import online_update, profile_cache

    version = store.save_model(_model(build_model, datetime(2024, 1, 7, tzinfo=UTC)))
    store.promote(version)
    write = store.write_profiles
    asked: list[bool] = []

    def recorded(batch: Any, **kwargs: Any) -> Any:
        asked.append(kwargs["read_current"])
        return write(batch, **kwargs)

    monkeypatch.setattr(store, "write_profiles", recorded)
    monkeypatch.delenv(profile_cache.ENV_URL, raising=False)
    update_from_events(store, EVENTS, run_id="test")
    monkeypatch.setenv(profile_cache.ENV_URL, "redis://127.0.0.1:1/0")  # configured; never reached here
    try:
        assert profile_cache.refreshes_rows(profile_cache.MAX_REFRESHED_CUSTOMERS)
        assert not profile_cache.refreshes_rows(profile_cache.MAX_REFRESHED_CUSTOMERS + 1)
        monkeypatch.setattr(online_update, "profiles_changed", lambda *args: "refreshed")
        update_from_events(store, [{**EVENTS[0], "product_id": "p5"}], run_id="test")
    finally:
        monkeypatch.delenv(profile_cache.ENV_URL)
        assert profile_cache.shared_cache() is None  # closes this test's client
    assert asked == [False, True]
