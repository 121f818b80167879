"""The canonical event schema every loader produces and every stage consumes.

A canonical events frame has exactly ``CANONICAL_COLUMNS`` with these dtypes:

===============  ==========================  =========================================
column           dtype                       meaning
===============  ==========================  =========================================
customer_id      ``str`` (pandas string)     non-empty, at most ``MAX_ID_LENGTH`` chars
event_time       ``datetime64[us, UTC]``     when it happened
action           ``str``                     one of ``ACTIONS``
product_id       ``str``                     non-empty, at most ``MAX_ID_LENGTH`` chars
category         ``str`` or missing          optional product category
price            ``float64`` or NaN          optional
session_id       ``str`` or missing          optional session id given by the source
===============  ==========================  =========================================

An event is identified by its natural key ``NATURAL_KEY`` (customer, time, action, product; the
store's unique key). Two rows with the same key are duplicates: equal in the other canonical
columns ``DUPLICATE_FIELDS`` (category, price, session id; a missing value equals only a missing
value) they are an ``exact_duplicate``, otherwise a ``conflicting_duplicate``. Either way the
first row is kept and the later one rejected with that reason, so no row vanishes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

import numpy as np
import pandas as pd

ACTIONS: tuple[str, ...] = ("view", "wishlist", "cart", "remove_from_cart", "purchase")

CANONICAL_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "event_time",
    "action",
    "product_id",
    "category",
    "price",
    "session_id",
)
REQUIRED_COLUMNS: tuple[str, ...] = ("customer_id", "event_time", "action", "product_id")
OPTIONAL_COLUMNS: tuple[str, ...] = ("category", "price", "session_id")
NATURAL_KEY: tuple[str, ...] = REQUIRED_COLUMNS
# The "other fields" of a duplicate: the canonical columns beyond the key.
DUPLICATE_FIELDS: tuple[str, ...] = OPTIONAL_COLUMNS

MAX_ID_LENGTH = 256
MAX_TEXT_LENGTH = 1024  # category and session id

TIME_DTYPE: Final = "datetime64[us, UTC]"

REJECT_COLUMNS: tuple[str, ...] = ("source", "row_number", "raw", "reason")

# Reject reasons (a closed vocabulary so they can be counted and queried).
REASON_MISSING_CUSTOMER = "missing_customer_id"
REASON_MISSING_PRODUCT = "missing_product_id"
REASON_MISSING_TIME = "missing_event_time"
REASON_BAD_TIME = "unparseable_event_time"
REASON_TIME_RANGE = "event_time_out_of_range"
REASON_UNKNOWN_ACTION = "unknown_action"
REASON_OVERSIZED = "oversized_field"
REASON_DUPLICATE = "exact_duplicate"  # same key and fields as an earlier kept row
REASON_CONFLICTING_DUPLICATE = "conflicting_duplicate"  # same key, different DUPLICATE_FIELDS
REASON_BAD_PRICE = "unparseable_price"
REASON_CONTROL_CHARS = "control_characters_in_field"
# Order-line exports (see traitflow.events: quantity, cancellation and non_product mapping options).
REASON_BAD_QUANTITY = "unparseable_quantity"
REASON_NON_PRODUCT = "non_product"
REASON_CANCELLATION = "cancellation"
REASON_NON_POSITIVE_QUANTITY = "non_positive_quantity"
# Line-level reasons: the CSV line itself is unusable, so it never became a row of fields.
REASON_MALFORMED_ROW = "malformed_row"  # wrong field count (blank line included), broken quoting
REASON_INVALID_ENCODING = "invalid_encoding"  # bytes that are not UTF-8
REASON_OVERSIZED_LINE = "oversized_line"  # longer than traitflow.csv_lines.MAX_LINE_BYTES
LINE_REJECT_REASONS: tuple[str, ...] = (REASON_MALFORMED_ROW, REASON_INVALID_ENCODING, REASON_OVERSIZED_LINE)
REJECT_REASONS: tuple[str, ...] = (
    REASON_MISSING_CUSTOMER,
    REASON_MISSING_PRODUCT,
    REASON_MISSING_TIME,
    REASON_BAD_TIME,
    REASON_TIME_RANGE,
    REASON_UNKNOWN_ACTION,
    REASON_OVERSIZED,
    REASON_DUPLICATE,
    REASON_CONFLICTING_DUPLICATE,
    REASON_BAD_PRICE,
    REASON_CONTROL_CHARS,
    REASON_BAD_QUANTITY,
    REASON_NON_PRODUCT,
    REASON_CANCELLATION,
    REASON_NON_POSITIVE_QUANTITY,
    *LINE_REJECT_REASONS,
)

# Product names seen in a load, one row per (product_id, product_name) with the number of event
# rows carrying that name: counts, not a single name, so that chunks of one file merge exactly.
PRODUCT_NAME_COLUMNS: tuple[str, ...] = ("product_id", "product_name", "n_rows")


def _empty_events() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": pd.Series([], dtype="str"),
            "event_time": pd.Series([], dtype=TIME_DTYPE),
            "action": pd.Series([], dtype="str"),
            "product_id": pd.Series([], dtype="str"),
            "category": pd.Series([], dtype="str"),
            "price": pd.Series([], dtype="float64"),
            "session_id": pd.Series([], dtype="str"),
        }
    )


def _empty_rejects() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "source": pd.Series([], dtype="str"),
            "row_number": pd.Series([], dtype="int64"),
            "raw": pd.Series([], dtype="str"),
            "reason": pd.Series([], dtype="str"),
        }
    )


def _empty_product_names() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "product_id": pd.Series([], dtype="str"),
            "product_name": pd.Series([], dtype="str"),
            "n_rows": pd.Series([], dtype="int64"),
        }
    )


# Zero-row frames are copied from these: copying one costs ~1/20 of building it, which matters
# to a request of one event (up to two such frames, each costing a tenth of its validation).
_EMPTY_EVENTS = _empty_events()
_EMPTY_REJECTS = _empty_rejects()
_EMPTY_PRODUCT_NAMES = _empty_product_names()


def empty_events() -> pd.DataFrame:
    """A zero-row canonical events frame (a fresh copy: callers may change it)."""
    return _EMPTY_EVENTS.copy()


def empty_rejects() -> pd.DataFrame:
    """A zero-row rejects frame (``REJECT_COLUMNS``; a fresh copy: callers may change it)."""
    return _EMPTY_REJECTS.copy()


_TEXT_DTYPE = pd.StringDtype(na_value=np.nan)  # pandas' "str"


@dataclass(frozen=True)
class EventRows:
    """Canonical events as Python values, one list per canonical column (a request's few rows:
    building their frame and reading it back cost more than the rest of their validation and
    storage). ``event_time``: aware datetimes in UTC; ``category``, ``session_id``: None when
    missing; ``price``: NaN when missing. ``frame()`` is the canonical frame of the same events."""

    customer_id: list[str]
    event_time: list[datetime]
    action: list[str]
    product_id: list[str]
    category: list[str | None]
    price: list[float]
    session_id: list[str | None]

    def __len__(self) -> int:
        return len(self.customer_id)

    def keys(self) -> list[tuple[str, datetime, str, str]]:
        """Each event's natural key (``NATURAL_KEY``)."""
        return list(zip(self.customer_id, self.event_time, self.action, self.product_id, strict=True))

    def subset(self, keep: np.ndarray) -> EventRows:
        """The rows where ``keep`` (bool, one value per row) is True, in their order."""
        kept = np.flatnonzero(keep).tolist()
        return EventRows(
            *([column[i] for i in kept] for column in (getattr(self, name) for name in CANONICAL_COLUMNS))
        )

    def frame(self) -> pd.DataFrame:
        """The canonical events frame of these rows."""
        # Columns as arrays, not Series: a frame of Series aligns and copies each (half its cost).
        return pd.DataFrame(
            {
                "customer_id": pd.array(self.customer_id, dtype=_TEXT_DTYPE),
                "event_time": pd.array(self.event_time, dtype=TIME_DTYPE),
                "action": pd.array(self.action, dtype=_TEXT_DTYPE),
                "product_id": pd.array(self.product_id, dtype=_TEXT_DTYPE),
                "category": pd.array(self.category, dtype=_TEXT_DTYPE),
                "price": np.array(self.price, dtype=np.float64),
                "session_id": pd.array(self.session_id, dtype=_TEXT_DTYPE),
            },
            copy=False,
        )


def as_canonical(frame: pd.DataFrame) -> pd.DataFrame:
    """Coerce an already-valid frame to the canonical column order and dtypes.

    Raises ``ValueError`` naming the missing required columns; optional columns are added empty.
    This does not validate values: use ``traitflow.events.validate_events`` for untrusted input.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"events frame lacks required columns {missing}; has {list(frame.columns)}")
    out = pd.DataFrame(index=pd.RangeIndex(len(frame)))
    out["customer_id"] = frame["customer_id"].astype("str").to_numpy()
    times = frame["event_time"]
    if not isinstance(times.dtype, pd.DatetimeTZDtype):
        times = pd.to_datetime(times, utc=True)
    out["event_time"] = times.dt.tz_convert("UTC").astype(TIME_DTYPE).to_numpy()
    out["action"] = frame["action"].astype("str").to_numpy()
    out["product_id"] = frame["product_id"].astype("str").to_numpy()
    for column in ("category", "session_id"):
        if column in frame.columns:
            out[column] = frame[column].astype("str").to_numpy()
            out.loc[frame[column].isna().to_numpy(), column] = np.nan
        else:
            out[column] = pd.Series([np.nan] * len(frame), dtype="str")
    out["price"] = (
        pd.to_numeric(frame["price"], errors="coerce").astype("float64").to_numpy()
        if "price" in frame.columns
        else np.full(len(frame), np.nan)
    )
    return out[list(CANONICAL_COLUMNS)]


def duplicate_masks(events: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(exact, conflicting): bool arrays over the rows of a canonical ``events`` frame.

    A row is a duplicate when an earlier row has its ``NATURAL_KEY``; it is exact when it also
    equals the first row of that key in ``DUPLICATE_FIELDS`` (missing equals missing), else
    conflicting. The first row of each key is neither: it is the one to keep.
    """
    n = len(events)
    if n < 2:  # a single row repeats nothing
        return np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    # Groups are numbered in order of first appearance, so np.unique's first index per group
    # number is the position of each key's first row.
    group = events.groupby(list(NATURAL_KEY), sort=False, dropna=False).ngroup().to_numpy()
    _, first_at = np.unique(group, return_index=True)
    first = first_at[group]
    later = first != np.arange(n)
    same = np.ones(n, dtype=bool)
    for column in DUPLICATE_FIELDS:
        if column not in events.columns:
            continue
        values = events[column]
        kept = values.iloc[first].reset_index(drop=True)
        mine = values.reset_index(drop=True)
        equal = (mine == kept).fillna(False).to_numpy(dtype=bool) | (mine.isna() & kept.isna()).to_numpy()
        same &= equal
    return later & same, later & ~same


def empty_product_names() -> pd.DataFrame:
    """A zero-row product-name count frame (``PRODUCT_NAME_COLUMNS``; a fresh copy)."""
    return _EMPTY_PRODUCT_NAMES.copy()


def merge_name_counts(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Sum product-name count frames (e.g. of the chunks of one file) into one, sorted by id, name."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return empty_product_names()
    summed = pd.concat(frames, ignore_index=True).groupby(["product_id", "product_name"], sort=True)["n_rows"]
    return summed.sum().astype("int64").reset_index()


def most_frequent_names(counts: pd.DataFrame) -> pd.DataFrame:
    """One name per product: the most frequent in ``counts``; ties go to the smallest name.

    Returns a frame (product_id, product_name), one row per product id, sorted by product id.
    """
    if not len(counts):
        return empty_product_names()[["product_id", "product_name"]]
    merged = merge_name_counts([counts])
    ranked = merged.sort_values(
        ["product_id", "n_rows", "product_name"], ascending=[True, False, True], kind="stable"
    )
    winners = ranked.drop_duplicates("product_id", keep="first")
    return winners[["product_id", "product_name"]].reset_index(drop=True)
