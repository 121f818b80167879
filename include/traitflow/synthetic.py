"""Deterministic synthetic e-commerce events with planted customer segments (known ground truth).

The generator is fully vectorized: every session and event is drawn as a numpy array from one
``np.random.default_rng(spec.seed)`` stream, so the same spec always yields identical frames.

Model (why: each piece gives later stages a realistic, checkable signal):
- products belong to categories; popularity within a category is Zipf(``zipf_exponent``) over a
  random rank order; prices are log-normal around a log-normal per-category median;
- each customer belongs to one segment; segment ``s`` has ``categories_per_segment`` favourite
  categories, assigned round-robin over a shuffled category list (disjoint whenever
  ``categories_per_segment * n_segments <= n_categories``, otherwise overlapping but spread evenly);
- a customer's number of sessions is 1 + a log-normal-weighted multinomial share of the remaining
  session budget (heavy tail), capped so the customer's sessions fit the window (see ``_layout``);
- a session picks a favourite category with probability ``segment_focus`` and otherwise a random
  non-favourite one, so ``segment_focus`` is exactly the expected share of sessions (and events)
  spent in favourite categories;
- a session has 1 + Geometric events (mean ``MEAN_SESSION_LENGTH``); the first is a fresh view,
  later ones follow ``_NEXT_ACTION_PROBS``; carts, purchases, wishlists, removals and repeat views
  refer to a product viewed earlier in the same session;
- gaps inside a session are 1 s .. 15 min (log-normal, median 30 s); consecutive sessions of a
  customer are at least ``MIN_SESSION_BREAK`` apart (hours to days typically), so a 30-minute
  sessionizer recovers the planted sessions exactly. All times are whole seconds in
  ``[start, start + days)``.

The event count is ~``n_events`` (relative error ~1/sqrt(n_events / 6)) unless every customer's
single mandatory session already exceeds it: then it is ~``n_customers * MEAN_SESSION_LENGTH``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from traitflow.event_schema import ACTIONS, CANONICAL_COLUMNS, TIME_DTYPE

MEAN_SESSION_LENGTH = 6.0
MIN_SESSION_BREAK = timedelta(hours=1)
MAX_EVENT_GAP_S = 15 * 60
# Actions after the first (always a view) event of a session. Chosen so the overall mix at mean
# length 6 is ~85% view / 10% cart / 3% purchase / 1% wishlist / 1% remove_from_cart.
_NEXT_ACTION_PROBS: dict[str, float] = {
    "view": 0.82,
    "cart": 0.12,
    "purchase": 0.036,
    "wishlist": 0.012,
    "remove_from_cart": 0.012,
}
assert set(_NEXT_ACTION_PROBS) <= set(ACTIONS) and next(iter(_NEXT_ACTION_PROBS)) == "view"
_REPEAT_VIEW_PROB = 0.15  # share of non-first views that revisit a product seen earlier
_ACTIVITY_SIGMA = 1.0  # log-normal sigma of customer activity weights (heavy tail)


@dataclass(frozen=True)
class SyntheticSpec:
    """Sizes and knobs of a synthetic workload; validated on construction."""

    n_customers: int = 1_000
    n_products: int = 500
    n_categories: int = 20
    n_segments: int = 6
    n_events: int = 50_000
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    days: int = 30
    zipf_exponent: float = 1.1
    segment_focus: float = 0.85
    categories_per_segment: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_customers", "n_products", "n_categories", "n_segments", "n_events", "days"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        cps = self.categories_per_segment
        if isinstance(cps, bool) or not isinstance(cps, int | np.integer) or cps < 1:
            raise ValueError(f"categories_per_segment must be a positive integer, got {cps!r}")
        if cps > self.n_categories:
            raise ValueError(f"categories_per_segment ({cps}) exceeds n_categories ({self.n_categories})")
        if self.n_products < self.n_categories:
            raise ValueError(
                f"n_products ({self.n_products}) must be >= n_categories ({self.n_categories}) "
                "so that every category has a product"
            )
        if self.n_segments > self.n_customers:
            raise ValueError(f"n_segments ({self.n_segments}) exceeds n_customers ({self.n_customers})")
        if not 0.0 <= self.segment_focus <= 1.0:
            raise ValueError(f"segment_focus must be in [0, 1], got {self.segment_focus!r}")
        if self.segment_focus < 1.0 and cps == self.n_categories:
            raise ValueError("segment_focus < 1 needs categories_per_segment < n_categories")
        if not (np.isfinite(self.zipf_exponent) and self.zipf_exponent >= 0):
            raise ValueError(f"zipf_exponent must be finite and >= 0, got {self.zipf_exponent!r}")
        if not isinstance(self.start, datetime) or self.start.utcoffset() is None:
            raise ValueError(f"start must be a timezone-aware datetime, got {self.start!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")


@dataclass
class SyntheticData:
    """Generated events plus ground truth.

    events: canonical events frame (``schema.CANONICAL_COLUMNS``), ~n_events rows, sorted by time.
    segments: (n_customers,) customer_id str, segment int64.
    products: (n_products,) product_id str, category str, price float64, popularity_rank int64
        (1 = most popular in its category).
    segment_categories: (n_segments * categories_per_segment,) segment int64, category str.
    """

    events: pd.DataFrame
    segments: pd.DataFrame
    products: pd.DataFrame
    segment_categories: pd.DataFrame


def _ids(prefix: str, n: int) -> pa.Array:
    width = len(str(n - 1))
    return pa.array([f"{prefix}{i:0{width}d}" for i in range(n)], type=pa.large_string())


def _take(values: pa.Array, codes: np.ndarray) -> pd.arrays.ArrowStringArray:
    # Arrow take builds millions of strings ~10x faster than an object-array round trip.
    return pd.array(values.take(pa.array(codes)), dtype="str")


def _products(rng: np.random.Generator, spec: SyntheticSpec) -> tuple[np.ndarray, ...]:
    """Category (P,), within-category popularity rank (P,), price (P,), and the Zipf sampler:
    ``order`` (P,) product indices sorted by (category, rank) and ``cdf`` (P,) = category + CDF."""
    n, k = spec.n_products, spec.n_categories
    category = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])  # every category non-empty
    order = np.lexsort((rng.random(n), category))  # random rank order inside each category
    sizes = np.bincount(category, minlength=k)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - np.repeat(np.cumsum(sizes) - sizes, sizes) + 1
    weight = rank[order].astype(np.float64) ** -spec.zipf_exponent  # (P,) in (category, rank) order
    group_first = np.cumsum(sizes) - sizes
    cum = np.cumsum(weight)
    cum_before = np.repeat(cum[group_first] - weight[group_first], sizes)
    totals = np.repeat(np.bincount(category[order], weights=weight, minlength=k), sizes)
    cdf = category[order] + (cum - cum_before) / totals
    cdf[group_first + sizes - 1] = np.arange(1, k + 1)  # exact upper edges: a search never spills over
    log_median = rng.normal(np.log(25.0), 0.9, k)
    price = np.round(np.maximum(np.exp(log_median[category] + rng.normal(0, 0.35, n)), 0.5), 2)
    return category, rank, price, order, cdf


def _layout(
    rng: np.random.Generator, spec: SyntheticSpec, sess_customer: np.ndarray, dur: np.ndarray
) -> np.ndarray:
    """Session start offsets in seconds (S,), given each session's customer (sorted) and span (S,).

    Sorted uniform points in ``[0, T - reserved)`` plus the cumulative reserved time of earlier
    sessions (span + break) give uniformly spread starts with every break >= MIN_SESSION_BREAK."""
    window = spec.days * 86_400.0
    brk = MIN_SESSION_BREAK.total_seconds()
    n_sess = np.bincount(sess_customer, minlength=spec.n_customers)
    reserved = np.bincount(sess_customer, weights=dur + brk, minlength=spec.n_customers)
    free = np.maximum(window - reserved, 0.0)
    keyed = np.sort(sess_customer + rng.random(len(sess_customer)))  # sort within each customer
    u = (keyed - sess_customer) * free[sess_customer]
    reserved_before = np.cumsum(dur + brk) - (dur + brk)  # every customer has >= 1 session
    reserved_before -= np.repeat(reserved_before[np.cumsum(n_sess) - n_sess], n_sess)
    return u + reserved_before


def _segments(rng: np.random.Generator, spec: SyntheticSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Balanced segment of each customer, shape (c,); each segment's favourite categories, shape
    (m, cps), round-robin over shuffled categories; and its other categories, shape (m, k - cps)."""
    k, m, c = spec.n_categories, spec.n_segments, spec.n_customers
    cps = spec.categories_per_segment
    segment = rng.permutation(np.arange(c) % m)
    shuffled = rng.permutation(k)
    favourites = shuffled[(np.arange(m)[:, None] * cps + np.arange(cps)) % k]  # (m, cps)
    is_fav = np.zeros((m, k), dtype=bool)
    np.put_along_axis(is_fav, favourites, True, axis=1)
    others = np.argsort(is_fav, axis=1, kind="stable")[:, : k - cps]  # (m, k - cps) non-favourites
    return segment, favourites, others


def _event_seconds(
    rng: np.random.Generator,
    spec: SyntheticSpec,
    sess_customer: np.ndarray,
    sess: np.ndarray,
    sess_start: np.ndarray,
    length: np.ndarray,
) -> np.ndarray:
    """Seconds after ``spec.start`` of every event, shape (E,): integer-second gaps inside
    sessions, sessions laid out per customer (``_layout``) inside the window."""
    c, n_e = spec.n_customers, len(sess)
    pos = np.arange(n_e) - sess_start[sess]
    gap = np.clip(np.round(rng.lognormal(np.log(30.0), 1.0, n_e)), 1, MAX_EVENT_GAP_S)
    gap[pos == 0] = 0
    offset = np.cumsum(gap)
    offset -= offset[sess_start][sess]
    span = offset[sess_start + length - 1]  # (S,) first to last event of each session
    # A hyperactive customer's sessions could outgrow the window: shrink their gaps to fit (rare).
    room = spec.days * 86_400.0 - np.bincount(sess_customer, minlength=c) * MIN_SESSION_BREAK.total_seconds()
    total_span = np.bincount(sess_customer, weights=span, minlength=c)
    shrink = np.minimum(1.0, room / np.maximum(total_span, 1.0))
    offset *= shrink[sess_customer[sess]]
    span *= shrink[sess_customer]
    start_s = np.floor(_layout(rng, spec, sess_customer, span))
    return np.floor(start_s[sess] + offset).astype(np.int64)


def generate(spec: SyntheticSpec) -> SyntheticData:
    """Draw a synthetic workload; identical output for identical specs."""
    rng = np.random.default_rng(spec.seed)
    k, m, c = spec.n_categories, spec.n_segments, spec.n_customers
    cps = spec.categories_per_segment
    p_category, p_rank, p_price, p_order, p_cdf = _products(rng, spec)

    segment, favourites, others = _segments(rng, spec)

    # Sessions per customer: 1 + heavy-tailed share of the rest; capped so breaks fit the window.
    budget = max(round(spec.n_events / MEAN_SESSION_LENGTH), c)
    activity = rng.lognormal(0.0, _ACTIVITY_SIGMA, c)
    n_sess = 1 + rng.multinomial(budget - c, activity / activity.sum())
    n_sess = np.minimum(n_sess, max(1, int(spec.days * 86_400 / (2 * MIN_SESSION_BREAK.total_seconds()))))
    sess_customer = np.repeat(np.arange(c), n_sess)
    n_s = len(sess_customer)
    seg_s = segment[sess_customer]
    sess_category = favourites[seg_s, rng.integers(0, cps, n_s)]
    if cps < k:
        other_pick = others[seg_s, rng.integers(0, k - cps, n_s)]
        sess_category = np.where(rng.random(n_s) < spec.segment_focus, sess_category, other_pick)
    length = rng.geometric(1.0 / MEAN_SESSION_LENGTH, n_s)

    # Events, one row per (session, position); everything below is flat (E,) arrays.
    sess_start = np.cumsum(length) - length
    sess = np.repeat(np.arange(n_s), length)
    n_e = len(sess)
    pos = np.arange(n_e) - sess_start[sess]
    names = list(_NEXT_ACTION_PROBS)
    action_code = rng.choice(len(names), n_e, p=list(_NEXT_ACTION_PROBS.values()))
    action_code[pos == 0] = 0  # a session opens with a view
    fresh = (action_code == 0) & ((pos == 0) | (rng.random(n_e) >= _REPEAT_VIEW_PROB))
    category_e = sess_category[sess]
    zipf_draw = np.searchsorted(p_cdf, category_e + rng.random(n_e), side="right")
    product = p_order[np.minimum(zipf_draw, len(p_order) - 1)]
    # Non-fresh events copy the product of a uniformly chosen earlier fresh view in the session.
    fresh_cum = np.cumsum(fresh)
    fresh_before_sess = fresh_cum[sess_start] - 1
    ref = np.flatnonzero(~fresh)
    n_earlier = fresh_cum[ref] - fresh_before_sess[sess[ref]]
    pick = fresh_before_sess[sess[ref]] + (rng.random(len(ref)) * n_earlier).astype(np.int64)
    product[ref] = product[np.flatnonzero(fresh)[pick]]

    seconds = _event_seconds(rng, spec, sess_customer, sess, sess_start, length)
    order = np.argsort(seconds, kind="stable")
    base = np.datetime64(spec.start.astimezone(UTC).replace(tzinfo=None), "us")
    times = base + seconds[order].astype("timedelta64[s]")

    customers, product_ids, categories = _ids("c", c), _ids("p", spec.n_products), _ids("cat_", k)
    actions = pa.array(names, type=pa.large_string())
    prod = product[order]
    events = pd.DataFrame(
        {
            "customer_id": _take(customers, sess_customer[sess[order]]),
            "event_time": pd.DatetimeIndex(times).tz_localize("UTC").astype(TIME_DTYPE),
            "action": _take(actions, action_code[order]),
            "product_id": _take(product_ids, prod),
            "category": _take(categories, p_category[prod]),
            "price": p_price[prod],
            "session_id": pd.array(pa.nulls(n_e, pa.large_string()), dtype="str"),  # no source ids
        }
    )[list(CANONICAL_COLUMNS)]
    segments = pd.DataFrame(
        {"customer_id": _take(customers, np.arange(c)), "segment": segment.astype("int64")}
    )
    products = pd.DataFrame(
        {
            "product_id": _take(product_ids, np.arange(spec.n_products)),
            "category": _take(categories, p_category),
            "price": p_price.astype("float64"),
            "popularity_rank": p_rank,
        }
    )
    seg_cat = pd.DataFrame(
        {
            "segment": np.repeat(np.arange(m, dtype=np.int64), cps),
            "category": _take(categories, favourites.ravel()),
        }
    )
    return SyntheticData(events=events, segments=segments, products=products, segment_categories=seg_cat)


def write_sample(directory: Path, spec: SyntheticSpec, *, days_per_file: int | None = None) -> list[Path]:
    """Generate ``spec`` and write canonical CSVs (times as ``YYYY-MM-DDTHH:MM:SSZ``) to ``directory``.

    Events go to ``events.csv``, or with ``days_per_file`` to one ``events_YYYY-MM-DD.csv`` per
    block of that many UTC calendar days (named by the block's first day; a block without events
    still gets a header-only file so a daily reader sees "no events", not "missing input").
    Ground truth goes to ``segments.csv``, ``products.csv`` and ``segment_categories.csv``.
    Returns the written paths, events files first in time order.
    """
    if days_per_file is not None and (isinstance(days_per_file, bool) or days_per_file < 1):
        raise ValueError(f"days_per_file must be a positive integer or None, got {days_per_file!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = generate(spec)
    events = data.events.copy()
    events["event_time"] = events["event_time"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    paths: list[Path] = []
    if days_per_file is None:
        paths.append(directory / "events.csv")
        events.to_csv(paths[-1], index=False)
    else:
        first_day = spec.start.astimezone(UTC).date()
        last_day = (spec.start.astimezone(UTC) + timedelta(days=spec.days) - timedelta(microseconds=1)).date()
        day = (data.events["event_time"] - pd.Timestamp(first_day, tz="UTC")) // pd.Timedelta(days=1)
        block = (day // days_per_file).to_numpy()
        for b in range((last_day - first_day).days // days_per_file + 1):
            paths.append(directory / f"events_{first_day + timedelta(days=b * days_per_file):%Y-%m-%d}.csv")
            events[block == b].to_csv(paths[-1], index=False)
    for name, frame in (
        ("segments", data.segments),
        ("products", data.products),
        ("segment_categories", data.segment_categories),
    ):
        paths.append(directory / f"{name}.csv")
        frame.to_csv(paths[-1], index=False)
    return paths
