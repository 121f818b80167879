"""Validation of a frame of source rows: each row becomes a canonical event or a reject with a reason.

A row with several problems gets the first reason in ``REASON_PRECEDENCE``; duplicates are found
among the valid rows only, across the chunks of a file with ``SeenHashes``.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from functools import reduce

import numpy as np
import pandas as pd

from traitflow import event_schema
from traitflow.events.mapping import ColumnMapping
from traitflow.events.rejects import mapped_columns, raw_json

REASON_PRECEDENCE: tuple[str, ...] = (
    event_schema.REASON_MISSING_CUSTOMER,
    event_schema.REASON_MISSING_PRODUCT,
    event_schema.REASON_MISSING_TIME,
    event_schema.REASON_CONTROL_CHARS,
    event_schema.REASON_OVERSIZED,
    event_schema.REASON_BAD_TIME,
    event_schema.REASON_TIME_RANGE,
    event_schema.REASON_UNKNOWN_ACTION,
    event_schema.REASON_BAD_PRICE,
    event_schema.REASON_BAD_QUANTITY,
    # Order lines that are no purchase of a product; a cancelled postage line is "non_product".
    event_schema.REASON_NON_PRODUCT,
    event_schema.REASON_CANCELLATION,
    event_schema.REASON_NON_POSITIVE_QUANTITY,
    event_schema.REASON_DUPLICATE,
    event_schema.REASON_CONFLICTING_DUPLICATE,
)
MIN_EVENT_TIME = pd.Timestamp("1990-01-01", tz="UTC")
MAX_FUTURE = pd.Timedelta(days=1)  # tolerate clock skew between the source and us, nothing more

# Postgres text cannot hold NUL, and tabs/newlines inside ids break tokens and COPY files.
_CONTROL_CHARS = r"[\x00-\x1f\x7f]"
# An integral number written as a float ("13085.0", "7."): the digits before the point are the id.
_INTEGRAL_FLOAT = r"^(-?\d+)\.0*$"


@dataclass
class LoadResult:
    """Canonical ``events`` (event_schema.CANONICAL_COLUMNS) and ``rejects`` (event_schema.REJECT_COLUMNS).

    ``products`` (event_schema.PRODUCT_NAME_COLUMNS) counts the product names carried by the events'
    rows when the mapping has a ``product_name`` column (else it is empty); ``product_names()``
    picks one name per product. ``event_row_numbers`` holds each event's row number.
    """

    events: pd.DataFrame
    rejects: pd.DataFrame
    products: pd.DataFrame = field(default_factory=event_schema.empty_product_names)
    # Source row number of each event (int64, aligned with ``events``), so that the store can
    # record an event conflicting with a stored one as a reject of its row; None if unknown.
    event_row_numbers: np.ndarray | None = None

    def product_names(self) -> pd.DataFrame:
        """(product_id, product_name): each product's most frequent name (ties: smallest name)."""
        return event_schema.most_frequent_names(self.products)

    @property
    def n_read(self) -> int:
        """Rows read from the source: every one is either an event or a reject."""
        return len(self.events) + len(self.rejects)


def _text(frame: pd.DataFrame) -> pd.DataFrame:
    """Every column as pandas ``str`` with '' for missing, on a fresh RangeIndex."""
    return frame.reset_index(drop=True).astype("str").fillna("")


def _optional(raw: pd.DataFrame, mapping: ColumnMapping, canonical: str) -> pd.Series:
    """A stripped optional text column; blank or unmapped -> missing (NaN)."""
    if canonical not in mapping.columns:
        return pd.Series(np.nan, index=raw.index, dtype="str")
    values = raw[mapping.columns[canonical]].str.strip()
    if canonical == "category" and mapping.category_fallback_column is not None:
        values = values.mask(values == "", raw[mapping.category_fallback_column].str.strip())
    return values.mask(values == "")


def _parse_times(text: pd.Series, time_format: str) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Stripped time strings -> (UTC times, NaT unless valid; unparseable mask; out-of-range mask).

    Blank strings are neither unparseable nor out of range (they are reported as missing).
    """
    blank = text == ""
    latest = pd.Timestamp.now(tz="UTC") + MAX_FUTURE
    if time_format in ("unix_s", "unix_ms"):
        number = pd.to_numeric(text.mask(blank), errors="coerce").astype("float64")
        parsed = pd.Series(np.isfinite(number), index=text.index, dtype=bool)
        per_second = 1 if time_format == "unix_s" else 1_000
        # Range check on the numbers: absurd epochs would overflow the datetime conversion.
        in_range = parsed & number.between(
            MIN_EVENT_TIME.timestamp() * per_second, latest.timestamp() * per_second
        )
        # Via whole microseconds: float seconds straight to datetime are off by 1us now and then.
        micros = (number * (1_000_000 // per_second)).round()
        times = pd.to_datetime(micros.where(in_range), unit="us", utc=True)
    else:
        if time_format == "iso":
            # A trailing "UTC" (REES46, BigQuery exports) as an offset keeps pandas on its fast ISO
            # path; a "%Z" pattern parses ~50x slower. "...+02:00 UTC" stays unparseable. No "\s"
            # in the pattern: pandas would leave pyarrow's regex engine for Python's (10x slower).
            text = text.str.replace(r" ?UTC$", "+00:00", regex=True)
        fmt = "ISO8601" if time_format == "iso" else time_format
        times = pd.to_datetime(text.mask(blank), format=fmt, utc=True, errors="coerce")
        parsed = times.notna()
        in_range = parsed & (times >= MIN_EVENT_TIME) & (times <= latest)
        times = times.where(in_range)
    return times.astype(event_schema.TIME_DTYPE), ~blank & ~parsed, parsed & ~in_range


@dataclass(frozen=True)
class SeenHashes:
    """64-bit hashes of the events kept from earlier chunks of a file, each array sorted.

    ``rows``: of whole canonical rows; ``keys``: of their natural keys (``event_schema.NATURAL_KEY``).
    """

    rows: np.ndarray
    keys: np.ndarray

    @staticmethod
    def empty() -> SeenHashes:
        return SeenHashes(np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.uint64))

    def classify(
        self, events: pd.DataFrame, exact: np.ndarray, conflicting: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, SeenHashes]:
        """Extend a chunk's own duplicate masks to earlier chunks; returns them and the new hashes.

        A row whose key was kept before is exact if the whole row was (one kept row per key),
        else conflicting; the rows kept now are added.
        """
        rows = pd.util.hash_pandas_object(events, index=False).to_numpy()
        keys = pd.util.hash_pandas_object(events[list(event_schema.NATURAL_KEY)], index=False).to_numpy()
        earlier = _in_sorted(keys, self.keys)
        same_row = _in_sorted(rows, self.rows)
        exact = np.where(earlier, same_row, exact)
        conflicting = np.where(earlier, ~same_row, conflicting)
        kept = ~(exact | conflicting)
        # Not in place: arrays from pandas are read-only views under copy-on-write.
        return (
            exact,
            conflicting,
            SeenHashes(
                np.sort(np.concatenate([self.rows, rows[kept]]), kind="stable"),  # radix sort
                np.sort(np.concatenate([self.keys, keys[kept]]), kind="stable"),
            ),
        )


def validate_frame(
    raw: pd.DataFrame, mapping: ColumnMapping, source: str, first_row_number: int, seen: SeenHashes | None
) -> tuple[LoadResult, SeenHashes | None]:
    """Split ``raw`` into events and rejects; ``seen`` holds hashes of earlier chunks' events."""
    mapping = mapping.resolve([str(c) for c in raw.columns], source)
    raw = _text(raw)
    customer = _id_text(raw[mapping.column("customer_id")].str.strip(), mapping)
    product = _id_text(raw[mapping.column("product_id")].str.strip(), mapping)
    when = raw[mapping.column("event_time")].str.strip()
    action = _actions(raw, mapping)
    category = _optional(raw, mapping, "category")
    session = _id_text(_optional(raw, mapping, "session_id"), mapping)
    price, bad_price = _prices(raw, mapping)
    times, bad_time, time_out_of_range = _parse_times_any(when, mapping.time_format)

    ids, texts = (customer, product), (category, session)
    checks = {
        event_schema.REASON_MISSING_CUSTOMER: customer == "",
        event_schema.REASON_MISSING_PRODUCT: product == "",
        event_schema.REASON_MISSING_TIME: when == "",
        event_schema.REASON_CONTROL_CHARS: reduce(
            operator.or_, (s.str.contains(_CONTROL_CHARS, regex=True, na=False) for s in ids + texts)
        ),
        # str.len() of a missing value is NaN, and NaN > n is False: missing is never oversized.
        event_schema.REASON_OVERSIZED: reduce(
            operator.or_,
            [s.str.len() > event_schema.MAX_ID_LENGTH for s in ids]
            + [s.str.len() > event_schema.MAX_TEXT_LENGTH for s in texts],
        ),
        event_schema.REASON_BAD_TIME: bad_time,
        event_schema.REASON_TIME_RANGE: time_out_of_range,
        event_schema.REASON_UNKNOWN_ACTION: action.isna(),
        event_schema.REASON_BAD_PRICE: bad_price,
        **_order_line_checks(raw, mapping, product),
    }
    # Index into REASON_PRECEDENCE per row, -1 = valid; earlier reasons win.
    codes = np.full(len(raw), -1, dtype=np.int8)
    for reason, mask in checks.items():
        codes[(codes < 0) & mask.to_numpy(dtype=bool)] = REASON_PRECEDENCE.index(reason)

    valid = codes < 0
    events = pd.DataFrame(
        {
            "customer_id": customer[valid],
            "event_time": times[valid],
            "action": action[valid].astype("str"),
            "product_id": product[valid],
            "category": category[valid],
            "price": price[valid],
            "session_id": session[valid],
        }
    ).reset_index(drop=True)
    exact, conflicting = event_schema.duplicate_masks(events)
    if seen is not None:
        exact, conflicting, seen = seen.classify(events, exact, conflicting)
    duplicate = exact | conflicting
    valid_at = np.flatnonzero(valid)
    codes[valid_at[exact]] = REASON_PRECEDENCE.index(event_schema.REASON_DUPLICATE)
    codes[valid_at[conflicting]] = REASON_PRECEDENCE.index(event_schema.REASON_CONFLICTING_DUPLICATE)
    events = events[~duplicate].reset_index(drop=True)
    event_row_numbers = (first_row_number + valid_at[~duplicate]).astype(np.int64)
    products = _name_counts(events["product_id"], _product_names(raw, mapping)[valid].to_numpy()[~duplicate])
    rejects = _rejects(raw, mapping, source, first_row_number, codes)
    return LoadResult(events, rejects, products, event_row_numbers=event_row_numbers), seen


def _prices(raw: pd.DataFrame, mapping: ColumnMapping) -> tuple[pd.Series, pd.Series]:
    """(price per row, NaN when blank or unmapped; mask of present but unusable prices)."""
    if "price" not in mapping.columns:
        return pd.Series(np.nan, index=raw.index, dtype="float64"), pd.Series(False, index=raw.index)
    price_text = raw[mapping.columns["price"]].str.strip()
    price = pd.to_numeric(price_text.mask(price_text == ""), errors="coerce").astype("float64")
    return price, (price_text != "") & ~np.isfinite(price)  # "nan"/"inf" parse but are no price


def _rejects(
    raw: pd.DataFrame, mapping: ColumnMapping, source: str, first_row_number: int, codes: np.ndarray
) -> pd.DataFrame:
    """The rejects frame of the rows with a reason code (an index into ``REASON_PRECEDENCE``)."""
    rejected = np.flatnonzero(codes >= 0)
    return pd.DataFrame(
        {
            "source": pd.Series([source] * len(rejected), dtype="str"),
            "row_number": (first_row_number + rejected).astype("int64"),
            # Control characters come out JSON-escaped, so the raw text is always storable.
            "raw": raw_json(raw.iloc[rejected][mapped_columns(raw, mapping)]),
            "reason": pd.Series(np.asarray(REASON_PRECEDENCE)[codes[rejected]], dtype="str"),
        }
    )


def _id_text(ids: pd.Series, mapping: ColumnMapping) -> pd.Series:
    """Stripped ids, with integral floats ("13085.0") as integers when the mapping asks for it."""
    if not mapping.integral_float_ids:
        return ids
    return ids.str.replace(_INTEGRAL_FLOAT, r"\1", regex=True)


def _actions(raw: pd.DataFrame, mapping: ColumnMapping) -> pd.Series:
    """Canonical action per row, missing (NaN) where the value is unknown."""
    if "action" not in mapping.columns:
        return pd.Series(mapping.default_action, index=raw.index, dtype="str")
    text = raw[mapping.column("action")].str.strip().str.lower()
    if mapping.default_action is not None:
        text = text.mask(text == "", mapping.default_action)
    return text.map({a: a for a in event_schema.ACTIONS} | dict(mapping.action_synonyms))


def _order_line_checks(raw: pd.DataFrame, mapping: ColumnMapping, product: pd.Series) -> dict[str, pd.Series]:
    """Reject masks of the order-line options (quantity, cancellation, non_product) that are set."""
    checks: dict[str, pd.Series] = {}
    if mapping.non_product is not None:
        checks[event_schema.REASON_NON_PRODUCT] = mapping.non_product.matches(product)
    cancelled = pd.Series(False, index=raw.index)
    if mapping.cancellation is not None:
        cancelled = mapping.cancellation.matches(raw[mapping.cancellation.invoice_column])
        checks[event_schema.REASON_CANCELLATION] = cancelled
    if "quantity" in mapping.columns:
        text = raw[mapping.column("quantity")].str.strip()
        quantity = pd.to_numeric(text.mask(text == ""), errors="coerce").astype("float64")
        checks[event_schema.REASON_BAD_QUANTITY] = (text != "") & ~np.isfinite(quantity)
        # NaN <= 0 is False: a blank quantity is no stock correction.
        checks[event_schema.REASON_NON_POSITIVE_QUANTITY] = (quantity <= 0) & ~cancelled
    return checks


def _product_names(raw: pd.DataFrame, mapping: ColumnMapping) -> pd.Series:
    """Stripped product names; blank, oversized or holding control characters -> missing.

    A name is a label, not part of the event: an unusable one is dropped, the event is kept.
    """
    if "product_name" not in mapping.columns:
        return pd.Series(np.nan, index=raw.index, dtype="str")
    names = raw[mapping.column("product_name")].str.strip()
    unusable = (names == "") | (names.str.len() > event_schema.MAX_TEXT_LENGTH)
    return names.mask(unusable | names.str.contains(_CONTROL_CHARS, regex=True))


def _name_counts(product_ids: pd.Series, names: np.ndarray) -> pd.DataFrame:
    """Count (product_id, product_name) pairs over events; rows without a name are not counted."""
    pairs = pd.DataFrame(
        {"product_id": product_ids.to_numpy(), "product_name": pd.Series(names, dtype="str").to_numpy()}
    )
    pairs = pairs[pairs["product_name"].notna().to_numpy()]
    if not len(pairs):
        return event_schema.empty_product_names()
    counts = pairs.astype("str").groupby(["product_id", "product_name"], sort=True).size()
    return counts.rename("n_rows").astype("int64").reset_index()


def _parse_times_any(
    text: pd.Series, time_format: str | tuple[str, ...]
) -> tuple[pd.Series, pd.Series, pd.Series]:
    """``_parse_times`` with alternative formats: each value gets the first format that parses it."""
    formats = (time_format,) if isinstance(time_format, str) else time_format
    times, bad, out_of_range = _parse_times(text, formats[0])
    for fmt in formats[1:]:
        retry = bad.to_numpy(dtype=bool)
        if not retry.any():
            break
        again = _parse_times(text[retry], fmt)
        times, bad, out_of_range = times.copy(), bad.copy(), out_of_range.copy()
        for whole, part in zip((times, bad, out_of_range), again, strict=True):
            whole[retry] = part.array
    return times, bad, out_of_range


def _in_sorted(values: np.ndarray, sorted_values: np.ndarray) -> np.ndarray:
    """Membership by binary search: np.isin re-sorts both arrays (its cost dominated chunked reads)."""
    if not len(sorted_values):
        return np.zeros(len(values), dtype=bool)
    at = np.searchsorted(sorted_values, values).clip(max=len(sorted_values) - 1)
    return sorted_values[at] == values
