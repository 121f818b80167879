"""Validation of a frame of source rows: each row becomes a canonical event or a reject with a reason.

A row with several problems gets the first reason in ``REASON_PRECEDENCE``; duplicates are found
among the valid rows only, across the chunks of a file with ``SeenHashes``.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import reduce
from typing import TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

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
T = TypeVar("T")


class LoadResult:
    """Canonical ``events`` (event_schema.CANONICAL_COLUMNS) and ``rejects`` (event_schema.REJECT_COLUMNS).

    ``products`` (event_schema.PRODUCT_NAME_COLUMNS) counts the product names carried by the events'
    rows when the mapping has a ``product_name`` column (else it is empty); ``product_names()``
    picks one name per product. ``event_row_numbers`` holds each event's row number (int64,
    aligned with ``events``) so that the store can record an event conflicting with a stored one
    as a reject of its row; None if unknown.

    A result of a request's few rows (``of_rows``) holds its events as ``event_rows`` and builds
    the ``events`` frame only when it is read: the store takes the rows as they are.
    """

    def __init__(
        self,
        events: pd.DataFrame,
        rejects: pd.DataFrame,
        products: pd.DataFrame | None = None,
        event_row_numbers: np.ndarray | None = None,
    ) -> None:
        self._events: pd.DataFrame | None = events
        self.rejects = rejects
        self.products = event_schema.empty_product_names() if products is None else products
        self.event_row_numbers = event_row_numbers
        self.event_rows: event_schema.EventRows | None = None

    @classmethod
    def of_rows(
        cls, rows: event_schema.EventRows, rejects: pd.DataFrame, event_row_numbers: np.ndarray
    ) -> LoadResult:
        """A result whose events are ``rows`` (no product names)."""
        result = cls(event_schema.empty_events(), rejects, None, event_row_numbers)
        result._events, result.event_rows = None, rows
        return result

    @property
    def events(self) -> pd.DataFrame:
        if self._events is None:
            assert self.event_rows is not None  # one of the two is always set
            self._events = self.event_rows.frame()
        return self._events

    def product_names(self) -> pd.DataFrame:
        """(product_id, product_name): each product's most frequent name (ties: smallest name)."""
        return event_schema.most_frequent_names(self.products)

    @property
    def n_read(self) -> int:
        """Rows read from the source: every one is either an event or a reject."""
        n_events = len(self.event_rows) if self.event_rows is not None else len(self.events)
        return n_events + len(self.rejects)


@dataclass(frozen=True)
class _Fields:
    """What the reject rules look at, per row: the stripped text fields as Arrow strings (null:
    missing; ``category`` and ``session`` blank -> null) and the parsers' verdicts (bool arrays)."""

    customer: pa.Array | pa.ChunkedArray
    product: pa.Array | pa.ChunkedArray
    when: pa.Array | pa.ChunkedArray
    category: pa.Array | pa.ChunkedArray
    session: pa.Array | pa.ChunkedArray
    unknown_action: np.ndarray
    bad_time: np.ndarray
    time_out_of_range: np.ndarray
    bad_price: np.ndarray


def _arrow(values: pd.Series) -> pa.Array | pa.ChunkedArray:
    """A ``str`` column as its Arrow strings (pandas keeps them in Arrow: no copy); NaN -> null."""
    return pa.array(values.array)


def _true(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """An Arrow bool result as a numpy mask; null (a missing value) is False."""
    return np.asarray(pc.fill_null(mask, False), dtype=bool)


def _rule_masks(f: _Fields) -> dict[str, np.ndarray]:
    """The reject rules every mapping has, one mask per reason (bool, one value per row).

    The loaders' frames (``validate_frame``) and a request's few rows of any text
    (``_validate_few``) apply them with the Arrow kernels pandas' ``str`` methods run. A request
    of simple texts (``_simple_texts``) applies the same rules in Python (``_simple_rule_masks``),
    on the same limits and pattern; tests/unit/test_events_few_rows.py holds both to the loaders'
    verdicts on hostile and random bodies.
    """
    ids, texts = (f.customer, f.product), (f.category, f.session)
    return {
        event_schema.REASON_MISSING_CUSTOMER: _true(pc.equal(f.customer, "")),
        event_schema.REASON_MISSING_PRODUCT: _true(pc.equal(f.product, "")),
        event_schema.REASON_MISSING_TIME: _true(pc.equal(f.when, "")),
        event_schema.REASON_CONTROL_CHARS: reduce(
            operator.or_, (_true(pc.match_substring_regex(s, _CONTROL_CHARS)) for s in ids + texts)
        ),
        # The length of a missing value is null, never above a limit: missing is never oversized.
        event_schema.REASON_OVERSIZED: reduce(
            operator.or_,
            [_true(pc.greater(pc.utf8_length(s), event_schema.MAX_ID_LENGTH)) for s in ids]
            + [_true(pc.greater(pc.utf8_length(s), event_schema.MAX_TEXT_LENGTH)) for s in texts],
        ),
        event_schema.REASON_BAD_TIME: f.bad_time,
        event_schema.REASON_TIME_RANGE: f.time_out_of_range,
        event_schema.REASON_UNKNOWN_ACTION: f.unknown_action,
        event_schema.REASON_BAD_PRICE: f.bad_price,
    }


def _reason_codes(n: int, checks: Mapping[str, np.ndarray]) -> np.ndarray:
    """Index into ``REASON_PRECEDENCE`` per row (int8), -1 = valid; earlier reasons win."""
    codes = np.full(n, -1, dtype=np.int8)
    for reason, mask in checks.items():
        codes[(codes < 0) & mask] = REASON_PRECEDENCE.index(reason)
    return codes


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

    fields = _Fields(
        _arrow(customer),
        _arrow(product),
        _arrow(when),
        _arrow(category),
        _arrow(session),
        unknown_action=action.isna().to_numpy(dtype=bool),
        bad_time=bad_time.to_numpy(dtype=bool),
        time_out_of_range=time_out_of_range.to_numpy(dtype=bool),
        bad_price=bad_price.to_numpy(dtype=bool),
    )
    order_lines = _order_line_checks(raw, mapping, product)
    codes = _reason_codes(
        len(raw), {**_rule_masks(fields), **{r: m.to_numpy(dtype=bool) for r, m in order_lines.items()}}
    )

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
    return _parse_prices(raw[mapping.column("price")].str.strip())


def _parse_prices(price_text: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Stripped price texts -> (prices, NaN when blank; mask of present but unusable prices)."""
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
    return text.map(_action_names(mapping))


def _action_names(mapping: ColumnMapping) -> dict[str, str]:
    """Lower-cased action text -> canonical action (absent: an unknown action)."""
    return {a: a for a in event_schema.ACTIONS} | dict(mapping.action_synonyms)


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


# ISO 8601 times of the plain form a posting client sends (date, "T" or " ", time, at most 6
# decimals, "Z" / an offset / nothing for UTC), years 1990-2199 (within pandas' nanosecond range).
_PLAIN_ISO = re.compile(
    r"(199[0-9]|2[01][0-9][0-9])-[0-9]{2}-[0-9]{2}[T ]"
    r"[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})?"
)


def _plain_iso_instants(texts: Sequence[str], time_format: str | tuple[str, ...]) -> list[datetime] | None:
    """The UTC instants of ``texts`` when the format is "iso" and every text has the plain form
    ``_PLAIN_ISO`` accepts: ``datetime.fromisoformat`` gives the instants pandas' ISO 8601 parser
    gives (pandas costs a millisecond per call). None otherwise (pandas gives the verdict)."""
    if time_format != "iso" or not texts or not all(_PLAIN_ISO.fullmatch(text) for text in texts):
        return None
    try:
        parsed = [datetime.fromisoformat(text) for text in texts]
    except ValueError:  # e.g. February 30th
        return None
    return [t.astimezone(UTC) if t.tzinfo is not None else t.replace(tzinfo=UTC) for t in parsed]


def _in_time_range(instants: Sequence[datetime]) -> list[bool]:
    """``_parse_times``' range check of UTC instants: from ``MIN_EVENT_TIME`` to now + ``MAX_FUTURE``."""
    latest = (pd.Timestamp.now(tz="UTC") + MAX_FUTURE).to_pydatetime()
    earliest = MIN_EVENT_TIME.to_pydatetime()
    return [earliest <= t <= latest for t in instants]


def _parse_few_times(
    texts: Sequence[str], time_format: str | tuple[str, ...]
) -> tuple[pd.Series, pd.Series, pd.Series]:
    """``_parse_times_any`` of a few stripped texts, without pandas' parser for plain ISO times
    (``_plain_iso_instants``)."""
    utc = _plain_iso_instants(texts, time_format)
    if utc is None:
        return _parse_times_any(pd.Series(list(texts), dtype="str"), time_format)
    in_range = _in_time_range(utc)
    times = pd.Series(
        [t if ok else None for t, ok in zip(utc, in_range, strict=True)], dtype=event_schema.TIME_DTYPE
    )
    return times, pd.Series(False, index=times.index), pd.Series([not ok for ok in in_range], dtype=bool)


def _in_sorted(values: np.ndarray, sorted_values: np.ndarray) -> np.ndarray:
    """Membership by binary search: np.isin re-sorts both arrays (its cost dominated chunked reads)."""
    if not len(sorted_values):
        return np.zeros(len(values), dtype=bool)
    at = np.searchsorted(sorted_values, values).clip(max=len(sorted_values) - 1)
    return sorted_values[at] == values


# Up to this many rows of a plain mapping (``_is_plain``) skip pandas' fixed cost per call (a
# request of one event took tens of milliseconds through ``validate_frame``, nearly all of it
# pandas overhead): the rules are applied to the few rows' values, not to a frame.
MAX_FEW_ROWS = 64


def validate_columns(
    columns: Mapping[str, Sequence[str]], mapping: ColumnMapping, *, source: str, first_row_number: int = 1
) -> LoadResult:
    """Validate rows given column by column (source name -> texts, '' for missing, all of one
    length), as ``validate_frame`` validates the frame of these columns: the same events, rejects,
    reasons and row numbers. A few rows of a plain mapping take ``_validate_few_simple`` when
    their texts are simple, else ``_validate_few``."""
    n = len(next(iter(columns.values()), ()))
    mapping = mapping.resolve(list(columns), source)
    if n <= MAX_FEW_ROWS and _is_plain(mapping):
        simple = _validate_few_simple(columns, n, mapping, source, first_row_number)
        if simple is not None:
            return simple
        return _validate_few(columns, n, mapping, source, first_row_number)
    frame = pd.DataFrame({name: pd.Series(list(values), dtype="str") for name, values in columns.items()})
    return validate_frame(frame, mapping, source, first_row_number, None)[0]


def _is_plain(mapping: ColumnMapping) -> bool:
    """A mapping of the canonical fields only, without the order-line options."""
    return (
        "action" in mapping.columns
        and not {"quantity", "product_name"} & set(mapping.columns)
        and mapping.category_fallback_column is None
        and not mapping.integral_float_ids
        and mapping.cancellation is None
        and mapping.non_product is None
    )


def _validate_few(
    columns: Mapping[str, Sequence[str]], n: int, mapping: ColumnMapping, source: str, first_row_number: int
) -> LoadResult:
    """``validate_frame`` for a few rows of a plain mapping without a pandas call per rule.

    Text fields go through the Arrow kernels pandas' ``str`` methods run (strip, lower), the
    rules through ``_rule_masks``; times through the loaders' own parser (``_parse_times_any``)
    and prices through pandas' number parser (``_parse_few_prices``), so what parses is pandas' call.
    """

    def stripped(canonical: str) -> pa.Array:
        return pc.utf8_trim_whitespace(pa.array(list(columns[mapping.column(canonical)]), pa.large_string()))

    def optional(canonical: str) -> pa.Array:
        if canonical not in mapping.columns:
            return pa.nulls(n, pa.large_string())
        values = stripped(canonical)
        return pc.if_else(pc.equal(values, ""), pa.scalar(None, pa.large_string()), values)

    customer, product, when = stripped("customer_id"), stripped("product_id"), stripped("event_time")
    action_text = pc.utf8_lower(stripped("action"))
    if mapping.default_action is not None:
        action_text = pc.if_else(pc.equal(action_text, ""), mapping.default_action, action_text)
    names = _action_names(mapping)
    actions = [names.get(a) for a in action_text.to_pylist()]
    if "price" in mapping.columns:
        price, bad_price = _parse_few_prices(stripped("price").to_pylist())
    else:
        price, bad_price = np.full(n, np.nan), np.zeros(n, dtype=bool)
    times, bad_time, out_of_range = _parse_few_times(when.to_pylist(), mapping.time_format)
    category, session = optional("category"), optional("session_id")
    fields = _Fields(
        customer,
        product,
        when,
        category,
        session,
        unknown_action=np.array([a is None for a in actions], dtype=bool),
        bad_time=bad_time.to_numpy(dtype=bool),
        time_out_of_range=out_of_range.to_numpy(dtype=bool),
        bad_price=bad_price,
    )
    codes = _reason_codes(n, _rule_masks(fields))
    keep = pa.array(codes < 0)
    return _few_result(
        columns,
        mapping,
        source,
        first_row_number,
        codes,
        event_schema.EventRows(
            customer.filter(keep).to_pylist(),
            times.array[codes < 0].to_pydatetime().tolist(),
            _known(actions, codes < 0),
            product.filter(keep).to_pylist(),
            category.filter(keep).to_pylist(),
            price[codes < 0].tolist(),
            session.filter(keep).to_pylist(),
        ),
    )


# A text is simple when, once stripped of spaces, it is empty or starts and ends with a printable
# character: Python's ``str.strip`` and Arrow's ``utf8_trim_whitespace`` then strip it alike
# (their whitespace sets differ only among characters that are not printable: controls, line
# and paragraph separators, other spaces). A lone surrogate has no UTF-8 form: not simple.
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile(_CONTROL_CHARS)


def _simple_texts(texts: Sequence[str]) -> list[str] | None:
    """``texts`` stripped as the Arrow kernel strips them, or None unless every one is simple."""
    stripped = []
    for text in texts:
        value = text.strip(" ")
        if value and not (value[0].isprintable() and value[-1].isprintable()):
            return None
        if not text.isascii() and _SURROGATE.search(text):
            return None
        stripped.append(value)
    return stripped


def _simple_columns(
    columns: Mapping[str, Sequence[str]], n: int, mapping: ColumnMapping
) -> dict[str, list[str]] | None:
    """The canonical fields' stripped texts ('' where unmapped), or None unless all are simple."""
    texts: dict[str, list[str]] = {}
    for canonical in event_schema.CANONICAL_COLUMNS:
        if canonical not in mapping.columns:
            texts[canonical] = [""] * n
            continue
        stripped = _simple_texts(columns[mapping.column(canonical)])
        if stripped is None:
            return None
        texts[canonical] = stripped
    return texts


@dataclass(frozen=True)
class _SimpleFields:
    """``_Fields`` of simple texts as Python values: stripped texts (``category`` and ``session``
    blank -> None) and the parsers' verdicts (bool arrays), one value per row."""

    customer: list[str]
    product: list[str]
    when: list[str]
    category: list[str | None]
    session: list[str | None]
    unknown_action: np.ndarray
    bad_time: np.ndarray
    time_out_of_range: np.ndarray
    bad_price: np.ndarray


def _simple_rule_masks(f: _SimpleFields) -> dict[str, np.ndarray]:
    """``_rule_masks`` in Python, for simple texts (``_simple_texts``): the same masks."""
    rows = list(zip(f.customer, f.product, f.category, f.session, strict=True))

    def mask(values: Iterable[bool]) -> np.ndarray:
        return np.fromiter(values, dtype=bool, count=len(rows))

    def oversized(customer: str, product: str, category: str | None, session: str | None) -> bool:
        return (
            len(customer) > event_schema.MAX_ID_LENGTH
            or len(product) > event_schema.MAX_ID_LENGTH
            or len(category or "") > event_schema.MAX_TEXT_LENGTH
            or len(session or "") > event_schema.MAX_TEXT_LENGTH
        )

    return {
        event_schema.REASON_MISSING_CUSTOMER: mask(c == "" for c in f.customer),
        event_schema.REASON_MISSING_PRODUCT: mask(p == "" for p in f.product),
        event_schema.REASON_MISSING_TIME: mask(w == "" for w in f.when),
        event_schema.REASON_CONTROL_CHARS: mask(
            any(_CONTROL.search(text) for text in row if text) for row in rows
        ),
        event_schema.REASON_OVERSIZED: mask(oversized(*row) for row in rows),
        event_schema.REASON_BAD_TIME: f.bad_time,
        event_schema.REASON_TIME_RANGE: f.time_out_of_range,
        event_schema.REASON_UNKNOWN_ACTION: f.unknown_action,
        event_schema.REASON_BAD_PRICE: f.bad_price,
    }


def _validate_few_simple(
    columns: Mapping[str, Sequence[str]], n: int, mapping: ColumnMapping, source: str, first_row_number: int
) -> LoadResult | None:
    """``_validate_few`` without Arrow, for rows whose texts are simple (``_simple_texts``), whose
    actions are ASCII (lower-cased alike by Python and Arrow) and whose times are plain ISO
    (``_plain_iso_instants``): the usual request. None for any other request."""
    texts = _simple_columns(columns, n, mapping)
    if texts is None or not all(a.isascii() for a in texts["action"]):
        return None
    when = texts["event_time"]
    instants = _plain_iso_instants(when, mapping.time_format)
    if instants is None:
        return None
    names = _action_names(mapping)
    default = mapping.default_action
    actions = [names.get(a.lower() if a or default is None else default) for a in texts["action"]]
    if "price" in mapping.columns:
        price, bad_price = _parse_few_prices(texts["price"])
    else:
        price, bad_price = np.full(n, np.nan), np.zeros(n, dtype=bool)
    in_range = _in_time_range(instants)
    customer, product = texts["customer_id"], texts["product_id"]
    fields = _SimpleFields(
        customer,
        product,
        when,
        [c or None for c in texts["category"]],
        [s or None for s in texts["session_id"]],
        unknown_action=np.array([a is None for a in actions], dtype=bool),
        bad_time=np.zeros(n, dtype=bool),
        time_out_of_range=~np.array(in_range, dtype=bool),
        bad_price=bad_price,
    )
    codes = _reason_codes(n, _simple_rule_masks(fields))
    valid = (codes < 0).tolist()

    def kept(values: Sequence[T]) -> list[T]:
        return [v for v, ok in zip(values, valid, strict=True) if ok]

    return _few_result(
        columns,
        mapping,
        source,
        first_row_number,
        codes,
        event_schema.EventRows(
            kept(customer),
            kept(instants),
            _known(actions, codes < 0),
            kept(product),
            kept(fields.category),
            price[codes < 0].tolist(),
            kept(fields.session),
        ),
    )


def _known(actions: Sequence[str | None], valid: np.ndarray) -> list[str]:
    """The actions of the valid rows (each known: an unknown one is a reject reason)."""
    return [a for a, ok in zip(actions, valid.tolist(), strict=True) if ok and a is not None]


def _few_result(
    columns: Mapping[str, Sequence[str]],
    mapping: ColumnMapping,
    source: str,
    first_row_number: int,
    codes: np.ndarray,
    valid: event_schema.EventRows,
) -> LoadResult:
    """The ``LoadResult`` of a few rows from their reason codes (``_reason_codes``) and valid rows:
    duplicates among the valid rows found and coded, the rejects framed."""
    # Valid rows have every key field (event_schema.NATURAL_KEY), so distinct key tuples mean no
    # duplicates; only a repeated key needs duplicate_masks' grouping (most of a 10-row call).
    if len(set(valid.keys())) == len(valid):
        exact = conflicting = np.zeros(len(valid), dtype=bool)
    else:
        exact, conflicting = event_schema.duplicate_masks(valid.frame())
    valid_at = np.flatnonzero(codes < 0)
    codes[valid_at[exact]] = REASON_PRECEDENCE.index(event_schema.REASON_DUPLICATE)
    codes[valid_at[conflicting]] = REASON_PRECEDENCE.index(event_schema.REASON_CONFLICTING_DUPLICATE)
    duplicate = exact | conflicting
    return LoadResult.of_rows(
        valid.subset(~duplicate) if duplicate.any() else valid,
        _few_rejects(columns, mapping, source, first_row_number, codes),
        (first_row_number + valid_at[~duplicate]).astype(np.int64),
    )


def _parse_few_prices(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``_parse_prices`` of a few stripped texts, as (float64 prices, bool mask) arrays.

    ``pd.to_numeric`` of a list runs the kernel it runs on a ``str`` Series (object values,
    NaN for the blanks, coerced) without building the three Series the frame path needs.
    """
    number = np.asarray(pd.to_numeric([t if t else np.nan for t in texts], errors="coerce"), dtype="float64")
    return number, np.array([t != "" for t in texts], dtype=bool) & ~np.isfinite(number)


def _few_rejects(
    columns: Mapping[str, Sequence[str]],
    mapping: ColumnMapping,
    source: str,
    first_row_number: int,
    codes: np.ndarray,
) -> pd.DataFrame:
    """``_rejects`` for a few rows: the raw text of the mapped columns as ``raw_json`` writes it
    (``json.dumps(row, ensure_ascii=False)``, which it equals by its contract)."""
    rejected = np.flatnonzero(codes >= 0)
    if not len(rejected):  # the usual request: a copied empty frame costs ~1/20 of building one
        return event_schema.empty_rejects()
    wanted = set(mapping.source_columns)
    mapped = [name for name in columns if name in wanted]
    raw: Iterable[str] = (
        json.dumps({name: columns[name][int(i)] for name in mapped}, ensure_ascii=False) for i in rejected
    )
    return pd.DataFrame(
        {
            "source": pd.Series([source] * len(rejected), dtype="str"),
            "row_number": (first_row_number + rejected).astype("int64"),
            "raw": pd.Series(list(raw), dtype="str"),
            "reason": pd.Series(np.asarray(REASON_PRECEDENCE)[codes[rejected]], dtype="str"),
        }
    )
