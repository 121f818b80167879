"""Tests for the synthetic event generator (traitflow.synthetic)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from traitflow.event_schema import ACTIONS, CANONICAL_COLUMNS, empty_events
from traitflow.synthetic import MIN_SESSION_BREAK, SyntheticData, SyntheticSpec, generate, write_sample

SPEC = SyntheticSpec(n_customers=400, n_products=300, n_categories=12, n_events=20_000, days=10, seed=7)


@pytest.fixture(scope="module")
def data() -> SyntheticData:
    return generate(SPEC)


def _by_customer(events: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Events sorted per customer, and the gap (s) to the customer's previous event (NaN at first)."""
    ordered = events.sort_values(["customer_id", "event_time"], kind="stable").reset_index(drop=True)
    gap = ordered["event_time"].diff().dt.total_seconds()
    return ordered, gap.where(ordered["customer_id"].eq(ordered["customer_id"].shift()))


def test_deterministic_and_seed_sensitive(data: SyntheticData) -> None:
    again = generate(SPEC)
    pd.testing.assert_frame_equal(data.events, again.events)
    pd.testing.assert_frame_equal(data.segments, again.segments)
    pd.testing.assert_frame_equal(data.products, again.products)
    pd.testing.assert_frame_equal(data.segment_categories, again.segment_categories)
    other = generate(replace(SPEC, seed=SPEC.seed + 1))
    assert not data.events.equals(other.events)
    assert not data.segments["segment"].equals(other.segments["segment"])


def test_schema_and_dtypes(data: SyntheticData) -> None:
    events = data.events
    assert tuple(events.columns) == CANONICAL_COLUMNS
    pd.testing.assert_series_equal(events.dtypes, empty_events().dtypes)
    assert events["event_time"].is_monotonic_increasing
    assert isinstance(events.index, pd.RangeIndex)
    assert events["session_id"].isna().all()
    assert set(events["action"]) <= set(ACTIONS)
    assert (
        events[["customer_id", "event_time", "action", "product_id", "category", "price"]].notna().all().all()
    )
    assert events["customer_id"].str.fullmatch(r"c\d{3}").all()  # 400 customers -> 3 digits
    assert data.products["product_id"].str.fullmatch(r"p\d{3}").all()
    assert data.products["category"].str.fullmatch(r"cat_\d{2}").all()
    assert data.segments.dtypes.to_dict() == {"customer_id": "str", "segment": "int64"}
    assert data.products["price"].dtype == "float64" and (data.products["price"] > 0).all()
    # Events carry their product's category and price.
    joined = events.merge(data.products, on="product_id", suffixes=("", "_p"), validate="many_to_one")
    assert (joined["category"] == joined["category_p"]).all()
    assert (joined["price"] == joined["price_p"]).all()
    start = pd.Timestamp(SPEC.start)
    assert events["event_time"].min() >= start
    assert events["event_time"].max() < start + pd.Timedelta(days=SPEC.days)


def test_sizes_roughly_as_requested(data: SyntheticData) -> None:
    assert abs(len(data.events) - SPEC.n_events) <= 0.05 * SPEC.n_events
    assert len(data.segments) == SPEC.n_customers == data.events["customer_id"].nunique()
    assert len(data.products) == SPEC.n_products
    assert data.products["category"].nunique() == SPEC.n_categories
    assert sorted(data.segments["segment"].unique()) == list(range(SPEC.n_segments))
    per_customer = data.events.groupby("customer_id").size()
    assert per_customer.max() > 5 * per_customer.median()  # heavy-tailed activity


def test_funnel_and_references(data: SyntheticData) -> None:
    counts = data.events["action"].value_counts()
    assert counts["view"] > 5 * counts["cart"] > 0
    assert counts["cart"] > counts["purchase"] > 0
    assert 0.8 < counts["view"] / counts.sum() < 0.9
    # Every non-view event refers to a product the customer viewed earlier in the same session.
    ordered, gap = _by_customer(data.events)
    session = (gap.isna() | (gap > 1800)).cumsum()
    view_time = (
        ordered[ordered["action"] == "view"]
        .assign(session=session)
        .groupby(["session", "product_id"])["event_time"]
        .min()
    )
    others = ordered[ordered["action"] != "view"].assign(session=session)
    first_view = view_time.reindex(pd.MultiIndex.from_frame(others[["session", "product_id"]]))
    assert (first_view.to_numpy() < others["event_time"].to_numpy()).all()


def test_zipf_popularity(data: SyntheticData) -> None:
    views = data.events.loc[data.events["action"] == "view", "product_id"].value_counts()
    rank = data.products.set_index("product_id")["popularity_rank"]
    by_rank = views.groupby(rank.reindex(views.index)).sum()
    assert by_rank[1] > 3 * by_rank[10]


def test_planted_segments(data: SyntheticData) -> None:
    favourite = data.segment_categories.assign(favourite=True)
    events = data.events.merge(data.segments, on="customer_id").merge(
        favourite, on=["segment", "category"], how="left"
    )
    in_favourite = events["favourite"].fillna(False).astype(bool)
    # segment_focus is the expected share; sessions (~6 events each) make per-segment shares noisy.
    assert abs(in_favourite.mean() - SPEC.segment_focus) < 0.02
    assert (in_favourite.groupby(events["segment"]).mean() > SPEC.segment_focus - 0.1).all()
    # 6 segments x 3 > 12 categories: favourites overlap, yet each segment still has 3 distinct ones.
    assert data.segment_categories.groupby("segment").size().eq(SPEC.categories_per_segment).all()
    disjoint = generate(SyntheticSpec(n_customers=60, n_categories=20, n_events=2_000))
    assert disjoint.segment_categories["category"].is_unique


def test_session_gaps(data: SyntheticData) -> None:
    _, gap = _by_customer(data.events)
    gap = gap.dropna()
    assert (gap >= 0).all()
    assert not gap.between(15 * 60, MIN_SESSION_BREAK.total_seconds(), inclusive="neither").any()
    assert (gap < 15 * 60).mean() > 0.7  # mostly within-session gaps
    breaks = gap[gap > 1800]
    assert len(breaks) > SPEC.n_customers  # customers come back
    assert breaks.median() > 3600 * 2  # hours to days between sessions


def test_write_sample_single_and_daily(tmp_path: Path) -> None:
    spec = SyntheticSpec(n_customers=100, n_products=60, n_categories=12, n_events=3_000, days=5, seed=3)
    expected = generate(spec).events
    single = write_sample(tmp_path / "one", spec)
    assert [p.name for p in single] == [
        "events.csv",
        "segments.csv",
        "products.csv",
        "segment_categories.csv",
    ]
    text = single[0].read_text().splitlines()
    assert text[0] == ",".join(CANONICAL_COLUMNS) and "T" in text[1] and "Z," in text[1]
    back = pd.read_csv(single[0], keep_default_na=True)
    back["event_time"] = pd.to_datetime(back["event_time"], utc=True).astype(expected["event_time"].dtype)
    back["session_id"] = back["session_id"].astype("str")
    pd.testing.assert_frame_equal(back, expected, check_dtype=False)
    assert len(pd.read_csv(single[1])) == 100 and len(pd.read_csv(single[2])) == 60

    daily = write_sample(tmp_path / "daily", spec, days_per_file=1)
    names = [p.name for p in daily[: spec.days]]
    assert names == [f"events_{spec.start + timedelta(days=d):%Y-%m-%d}.csv" for d in range(spec.days)]
    parts = []
    for path in daily[: spec.days]:
        part = pd.read_csv(path)
        times = pd.to_datetime(part["event_time"], utc=True)
        assert (times.dt.strftime("%Y-%m-%d") == path.stem.removeprefix("events_")).all()
        parts.append(part)
    assert pd.concat(parts, ignore_index=True).equals(pd.read_csv(single[0]))
    two_day = write_sample(tmp_path / "two", spec, days_per_file=2)
    assert [p.name for p in two_day[:3]] == [
        "events_2026-01-01.csv",
        "events_2026-01-03.csv",
        "events_2026-01-05.csv",
    ]
    with pytest.raises(ValueError, match="days_per_file"):
        write_sample(tmp_path / "bad", spec, days_per_file=0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"n_customers": 0}, "n_customers must be a positive integer"),
        ({"n_events": -5}, "n_events must be a positive integer"),
        ({"days": 1.5}, "days must be a positive integer"),
        ({"n_products": 5}, r"n_products \(5\) must be >= n_categories \(20\)"),
        ({"categories_per_segment": 21}, r"categories_per_segment \(21\) exceeds n_categories \(20\)"),
        ({"categories_per_segment": 0}, "categories_per_segment must be a positive integer"),
        ({"n_segments": 2_000}, r"n_segments \(2000\) exceeds n_customers \(1000\)"),
        ({"segment_focus": 1.2}, r"segment_focus must be in \[0, 1\]"),
        ({"categories_per_segment": 20}, "segment_focus < 1 needs categories_per_segment < n_categories"),
        ({"zipf_exponent": -1.0}, "zipf_exponent must be finite and >= 0"),
        ({"start": datetime(2026, 1, 1)}, "start must be a timezone-aware datetime"),
        ({"seed": -1}, "seed must be a non-negative integer"),
    ],
)
def test_validation(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SyntheticSpec(**changes)


def test_edge_specs() -> None:
    # All categories favourite (focus 1), fewer events than one session per customer, naive-free tz.
    spec = SyntheticSpec(
        n_customers=50,
        n_products=4,
        n_categories=4,
        n_segments=2,
        categories_per_segment=4,
        segment_focus=1.0,
        n_events=10,
        days=1,
        start=datetime(2026, 3, 1, 12, tzinfo=UTC),
    )
    data = generate(spec)
    assert data.events["customer_id"].nunique() == 50  # everyone gets at least one session
    assert data.events["event_time"].min() >= pd.Timestamp("2026-03-01 12:00", tz="UTC")
    assert data.events["event_time"].max() < pd.Timestamp("2026-03-02 12:00", tz="UTC")
