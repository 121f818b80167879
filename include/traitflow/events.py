"""Event loaders: read CSV/Parquet exports, map their columns to the canonical schema, validate.

Every row read ends up in exactly one of two frames (``LoadResult``): the canonical events frame
(``event_schema.CANONICAL_COLUMNS``) or the rejects frame (``event_schema.REJECT_COLUMNS``) with a reason.
Files are read with every field as a string, so validation sees exactly what the file holds.

A row with several problems gets the first reason in ``REASON_PRECEDENCE``: missing required
fields first, then fields that cannot be stored safely (control characters, oversized), then
values that do not parse or make no sense, and duplicates last, because a row is only called a
duplicate of an earlier row that is itself valid.

Duplicates (``event_schema.duplicate_masks``): a valid row whose natural key (customer, time, action,
product) equals an earlier valid row's is rejected; ``exact_duplicate`` when category, price and
session id are equal too, ``conflicting_duplicate`` when one of them differs. The first row of a
key is kept, across the chunks of a file as well. The store drops neither: its natural key is the
same, and ``traitflow.store`` records a row that conflicts with an already stored event as a
``conflicting_duplicate`` reject too.

Normalization: ids, category and session id are stripped of surrounding whitespace and otherwise
kept as they are; a blank category or session id becomes missing. The control-character check
covers all four. Times without an offset are taken as UTC; "iso" times may also end in "UTC" (as
REES46 writes them). Actions are matched case-insensitively after stripping.

Order-line exports (invoice lines, e.g. the ``online_retail`` preset) have their own mapping
options: ``default_action`` (no action column), ``integral_float_ids`` ("13085.0" -> "13085"),
a ``quantity`` column, a ``cancellation`` rule and a ``non_product`` rule (see ``ColumnMapping``),
with the reject reasons ``unparseable_quantity``, ``non_product``, ``cancellation`` and
``non_positive_quantity``. A ``product_name`` column fills ``LoadResult.products``; the events
frame keeps exactly the canonical columns.

Reading (``traitflow.csv_lines``): a CSV line that cannot become a row of fields (wrong field
count, broken quoting, bytes that are not UTF-8, longer than ``csv_lines.MAX_LINE_BYTES``) is a
reject with a line-level reason (``event_schema.LINE_REJECT_REASONS``), and the rest of the file loads.
``row_number`` counts data records from 1 in both frames: a header row is not counted, so with a
header data line 1 is file line 2 (without quoted line breaks, row_number = file line - 1; in a
headerless file row_number = file line); for Parquet it is the 1-based row index. A header-level
problem (empty file, missing mapped columns, an unreadable header line) is an ``EventsFileError``.

A file that is mostly rejects is refused as a whole (``MostlyRejectedError``): more than
``max_reject_share`` (default ``DEFAULT_MAX_REJECT_SHARE``) of its rows rejected, exact
duplicates not counted (a repeated export says nothing about the mapping), and at least
``MIN_REJECTS_TO_REFUSE`` such rejects, so that a tiny file is not refused for one or two bad
rows (a 2-row file with 1 bad row is 50%, not above the default limit, and loads). That is a
wrong mapping or the wrong file rather than bad rows; the error names the top reasons with
counts and row numbers.
"""

from __future__ import annotations

import gzip
import json
import operator
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from functools import reduce
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from traitflow import csv_lines, event_schema
from traitflow.config import ConfigError

T = TypeVar("T")

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
TIME_FORMATS: tuple[str, ...] = ("iso", "unix_s", "unix_ms")
MIN_EVENT_TIME = pd.Timestamp("1990-01-01", tz="UTC")
MAX_FUTURE = pd.Timedelta(days=1)  # tolerate clock skew between the source and us, nothing more

# Postgres text cannot hold NUL, and tabs/newlines inside ids break tokens and COPY files.
_CONTROL_CHARS = r"[\x00-\x1f\x7f]"
# pandas writes a non-range index into Parquet under this name; it is not a field of the data.
_PANDAS_INDEX_COLUMN = re.compile(r"__index_level_\d+__")


DEFAULT_MAX_REJECT_SHARE = 0.5
MIN_REJECTS_TO_REFUSE = 10
_REFUSAL_TOP_REASONS, _REFUSAL_ROW_EXAMPLES = 3, 5


class EventsFileError(ValueError):
    """An events file is missing, of an unsupported type, malformed, or lacks mapped columns."""


# A mapped source column: one name, or alternative names of which the first present in a file wins
# (exports of the same data spell columns differently, e.g. "CustomerID" and "Customer ID").
ColumnSource = str | tuple[str, ...]

# Mapped columns that are not event fields: ``quantity`` feeds the order-line checks, and
# ``product_name`` feeds ``LoadResult.products`` (a product attribute, not an event attribute).
AUXILIARY_COLUMNS: tuple[str, ...] = ("quantity", "product_name")
# An integral number written as a float ("13085.0", "7."): the digits before the point are the id.
_INTEGRAL_FLOAT = r"^(-?\d+)\.0*$"


def _column_source(value: Any, what: str) -> ColumnSource:
    """A source column name, or a list/tuple of alternatives (a one-name list is that name)."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, list | tuple) and value and all(isinstance(v, str) and v for v in value):
        names = tuple(dict.fromkeys(value))
        return names[0] if len(names) == 1 else names
    raise ConfigError(
        f"source column for {what!r} must be a non-empty string or a non-empty list of them, got {value!r}"
    )


def _alternatives(source: ColumnSource) -> tuple[str, ...]:
    return (source,) if isinstance(source, str) else source


def _describe(sources: list[ColumnSource]) -> str:
    """``['a', one of ('b', 'c')]``: how missing sources are named in error messages."""
    return "[" + ", ".join(repr(s) if isinstance(s, str) else f"one of {s!r}" for s in sources) + "]"


@dataclass(frozen=True)
class CancellationRule:
    """Order lines on an invoice whose id starts with ``invoice_prefix`` are cancellations.

    Cancellations are rejected with reason ``cancellation`` rather than turned into events: the
    action vocabulary (``event_schema.ACTIONS``) has no "return", and adding one would change every
    model's tokens; a cancellation line also does not say which purchase it undoes. They stay
    countable and queryable in the rejects. ``invoice_column`` may list alternatives.
    """

    invoice_column: ColumnSource
    invoice_prefix: str = "C"

    def __post_init__(self) -> None:
        object.__setattr__(self, "invoice_column", _column_source(self.invoice_column, "invoice_column"))
        if not isinstance(self.invoice_prefix, str) or not self.invoice_prefix.strip():
            raise ConfigError(
                f"cancellation invoice_prefix must be non-blank text, got {self.invoice_prefix!r}"
            )
        object.__setattr__(self, "invoice_prefix", self.invoice_prefix.strip())

    def matches(self, invoice: pd.Series) -> pd.Series:
        """bool per row: the stripped invoice id starts with the prefix (case-sensitive)."""
        return invoice.str.strip().str.startswith(self.invoice_prefix)


@dataclass(frozen=True)
class NonProductRule:
    """Product ids that are not products (postage, fees, discounts, manual adjustments, tests).

    A stripped product id matching one of ``codes`` exactly (case-sensitive) or one of
    ``patterns`` as a whole (regular expressions in RE2 syntax: no lookaround, no backreferences)
    is rejected with reason ``non_product``, so such lines never enter the vocabulary.
    """

    codes: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("codes", "patterns"):
            values = getattr(self, name)
            if isinstance(values, str) or not isinstance(values, Iterable):
                raise ConfigError(f"non_product {name} must be a list of strings, got {values!r}")
            values = tuple(values)
            if not all(isinstance(v, str) and v.strip() for v in values):
                raise ConfigError(f"non_product {name} must be non-blank strings, got {list(values)!r}")
            object.__setattr__(self, name, tuple(v.strip() for v in values))
        if not self.codes and not self.patterns:
            raise ConfigError("non_product needs at least one code or pattern")
        for pattern in self.patterns:
            try:  # checked with the engine that will run it (pyarrow's RE2), not only Python's re
                re.compile(pattern)
                pc.match_substring_regex(pa.array([""]), f"^(?:{pattern})$")
            except (re.error, pa.ArrowException) as exc:
                raise ConfigError(
                    f"non_product pattern {pattern!r} is not a valid RE2 expression: {exc}"
                ) from None

    def matches(self, product: pd.Series) -> pd.Series:
        """bool per row of stripped product ids."""
        mask = product.isin(self.codes)
        if self.patterns:
            combined = "|".join(f"(?:{p})" for p in self.patterns)
            mask = mask | product.str.fullmatch(combined).fillna(False).astype(bool)
        return mask


class MostlyRejectedError(EventsFileError):
    """Most rows of a file were rejected: a wrong mapping or file, refused as a whole.

    ``counts``: rejects by reason (exact duplicates excluded); ``n_read``: rows read.
    """

    def __init__(self, message: str, counts: dict[str, int], n_read: int) -> None:
        super().__init__(message)
        self.counts, self.n_read = counts, n_read


@dataclass(frozen=True)
class ColumnMapping:
    """How a source's columns and values map to the canonical schema.

    ``columns`` maps canonical names to source column names (required: customer_id, event_time,
    action, product_id; optional: category, price, session_id; auxiliary: quantity, product_name).
    A source may be a list of alternative names: the first one present in a file is read, and a
    file holding none of them is refused. ``header`` names the columns of a headerless CSV in
    order (``None``: the file has a header row; Parquet files always carry names).
    ``time_format`` is "iso", "unix_s", "unix_ms" or a strftime pattern, or a list of these tried
    in order per value. ``action_synonyms`` maps source values (case-insensitive, stripped) to
    canonical actions, which are always accepted. ``category_fallback_column`` is used where the
    category column is blank.

    Order-line exports (invoice lines):

    - ``default_action``: the action of rows whose action is blank, and of every row when
      ``action`` is not mapped (then it need not be).
    - ``integral_float_ids``: id columns (customer_id, product_id, session_id) holding an
      integral float ("13085.0") are read as the integer ("13085"); "13085.5" stays as it is.
    - ``quantity`` column: unparseable -> ``unparseable_quantity``; zero or negative on a row that
      is not a cancellation (a stock correction) -> ``non_positive_quantity``; blank is accepted.
    - ``cancellation`` (a ``CancellationRule``): cancellation lines -> ``cancellation``.
    - ``non_product`` (a ``NonProductRule``): postage, fees and the like -> ``non_product``.
    - ``product_name`` column: names of products, collected in ``LoadResult.products``.
    """

    name: str
    columns: Mapping[str, ColumnSource]
    header: tuple[str, ...] | None = None
    time_format: str | tuple[str, ...] = "iso"
    action_synonyms: Mapping[str, str] = field(default_factory=dict)
    category_fallback_column: str | None = None
    default_action: str | None = None
    integral_float_ids: bool = False
    cancellation: CancellationRule | None = None
    non_product: NonProductRule | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"column mapping name must be a non-empty string, got {self.name!r}")
        where = f"column mapping {self.name!r}"
        if not isinstance(self.columns, Mapping):
            raise ConfigError(f"{where}: columns must be a mapping canonical name -> source column")
        known = event_schema.CANONICAL_COLUMNS + AUXILIARY_COLUMNS
        unknown = sorted(set(self.columns) - set(known))
        if unknown:
            raise ConfigError(f"{where}: unknown canonical columns {unknown}; known: {known}")
        if self.default_action is not None and self.default_action not in event_schema.ACTIONS:
            raise ConfigError(
                f"{where}: default_action {self.default_action!r} is not one of {event_schema.ACTIONS}"
            )
        required = [c for c in event_schema.REQUIRED_COLUMNS if c != "action" or self.default_action is None]
        missing = [c for c in required if c not in self.columns]
        if missing:
            raise ConfigError(f"{where}: required columns {missing} are not mapped")
        try:
            # Copies, so that mutating the caller's dicts later cannot change a frozen mapping.
            columns = {canonical: _column_source(s, canonical) for canonical, s in self.columns.items()}
            object.__setattr__(self, "columns", columns)
            object.__setattr__(self, "cancellation", self._rule(CancellationRule, self.cancellation))
            object.__setattr__(self, "non_product", self._rule(NonProductRule, self.non_product))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if not isinstance(self.integral_float_ids, bool):
            raise ConfigError(f"{where}: integral_float_ids must be true or false")
        if self.category_fallback_column is not None:
            if not isinstance(self.category_fallback_column, str) or not self.category_fallback_column:
                raise ConfigError(f"{where}: category_fallback_column must be a non-empty string")
            if "category" not in self.columns:
                raise ConfigError(f"{where}: category_fallback_column needs a mapped 'category' column")
        if self.header is not None:
            header = tuple(self.header)
            if not header or not all(isinstance(h, str) and h for h in header):
                raise ConfigError(f"{where}: header must be a non-empty list of non-empty strings")
            if len(set(header)) != len(header):
                raise ConfigError(f"{where}: header has duplicate names: {list(header)}")
            absent = self._absent(header)
            if absent:
                raise ConfigError(
                    f"{where}: mapped columns {_describe(absent)} are not in header {list(header)}"
                )
            object.__setattr__(self, "header", header)
        object.__setattr__(self, "time_format", self._checked_time_format(where))
        object.__setattr__(self, "action_synonyms", self._normalized_synonyms(where))

    @staticmethod
    def _rule(kind: type[T], value: Any) -> T | None:
        """A rule given as the dataclass itself, or as plain data (a mapping of its fields)."""
        if value is None or isinstance(value, kind):
            return value
        label = "cancellation" if kind is CancellationRule else "non_product"
        if not isinstance(value, Mapping):
            raise ConfigError(f"{label} must be a mapping, got {value!r}")
        allowed = [f.name for f in fields(kind)]  # type: ignore[arg-type]
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise ConfigError(f"unknown {label} keys {unknown}; known: {allowed}")
        try:
            return kind(**value)
        except TypeError as exc:  # a missing required field
            raise ConfigError(f"{label}: {exc}") from None

    def _checked_time_format(self, where: str) -> str | tuple[str, ...]:
        formats = self.time_format
        if isinstance(formats, list | tuple):
            formats = tuple(formats)
            if not formats:
                raise ConfigError(f"{where}: time_format list must not be empty")
        for fmt in (formats,) if isinstance(formats, str) else formats:
            if fmt in TIME_FORMATS:
                continue
            if not isinstance(fmt, str) or "%" not in fmt:
                raise ConfigError(
                    f"{where}: time_format must be one of {TIME_FORMATS} or a strftime pattern, got {fmt!r}"
                )
            try:  # a bad directive would otherwise surface only when the first file is read
                pd.to_datetime(pd.Series(["0"], dtype="str"), format=fmt, errors="coerce")
            except ValueError as exc:
                raise ConfigError(f"{where}: time_format {fmt!r}: {exc}") from None
        return formats[0] if isinstance(formats, tuple) and len(formats) == 1 else formats

    def _normalized_synonyms(self, where: str) -> dict[str, str]:
        if not isinstance(self.action_synonyms, Mapping):
            raise ConfigError(f"{where}: action_synonyms must be a mapping source value -> action")
        out: dict[str, str] = {}
        for value, action in self.action_synonyms.items():
            key = str(value).strip().lower()
            if not key:
                raise ConfigError(f"{where}: action synonym keys must be non-blank")
            if action not in event_schema.ACTIONS:
                raise ConfigError(
                    f"{where}: synonym {value!r} -> {action!r}: not one of {event_schema.ACTIONS}"
                )
            if key in event_schema.ACTIONS and action != key:
                raise ConfigError(f"{where}: synonym {value!r} cannot remap canonical action {key!r}")
            if out.get(key, action) != action:
                raise ConfigError(f"{where}: synonym {value!r} maps to both {out[key]!r} and {action!r}")
            out[key] = action
        return out

    def _sources(self) -> list[ColumnSource]:
        """Every mapped source (a name or alternatives): canonical, auxiliary, fallback, invoice."""
        order = event_schema.CANONICAL_COLUMNS + AUXILIARY_COLUMNS
        wanted: list[ColumnSource] = [self.columns[c] for c in order if c in self.columns]
        if self.category_fallback_column is not None:
            wanted.append(self.category_fallback_column)
        if self.cancellation is not None:
            wanted.append(self.cancellation.invoice_column)
        return list(dict.fromkeys(wanted))

    def _absent(self, available: Iterable[str]) -> list[ColumnSource]:
        present = set(available)
        return [s for s in self._sources() if not any(a in present for a in _alternatives(s))]

    @property
    def source_columns(self) -> list[str]:
        """Every source column name this mapping may read (all alternatives), without repeats."""
        return list(dict.fromkeys(a for s in self._sources() for a in _alternatives(s)))

    def resolve(self, available: Iterable[str], where: str) -> ColumnMapping:
        """This mapping with each list of alternatives replaced by its first name in ``available``.

        Raises ``EventsFileError`` (prefixed with ``where``) naming every mapped source of which no
        name is present.
        """
        available = list(available)
        absent = self._absent(available)
        if absent:
            raise EventsFileError(
                f"{where}: column mapping {self.name!r} needs columns {_describe(absent)} that are missing; "
                f"the data has columns {available}"
            )
        if all(isinstance(s, str) for s in self._sources()):
            return self
        present = set(available)

        def pick(source: ColumnSource) -> str:
            return next(a for a in _alternatives(source) if a in present)

        cancellation = self.cancellation
        if cancellation is not None:
            cancellation = replace(cancellation, invoice_column=pick(cancellation.invoice_column))
        return replace(self, columns={c: pick(s) for c, s in self.columns.items()}, cancellation=cancellation)

    def column(self, canonical: str) -> str:
        """The single source name of a mapped column (after ``resolve`` when it has alternatives)."""
        source = self.columns[canonical]
        if not isinstance(source, str):
            raise ValueError(f"column {canonical!r} has alternatives {source}: resolve the mapping first")
        return source


# Online Retail (UCI, I and II): stock codes of lines that are no product. Found by inspecting the
# codes that are not 5 digits + optional letters, with their descriptions: postage and carriage
# (POST, DOT "dotcom postage", C2/C3), manual entries (M, m), discount (D), samples (S), bad debt
# (B), bank and Amazon fees, adjustments, cancer-charity commission (CRUK), cushion pads at a
# token 0.001 (PADS), gift vouchers and test codes. DCGS... codes are real (dotcom shop) products.
ONLINE_RETAIL_NON_PRODUCT = NonProductRule(
    codes=(
        "POST",
        "DOT",
        "C2",
        "C3",
        "M",
        "m",
        "D",
        "S",
        "B",
        "CRUK",
        "PADS",
        "GIFT",
        "BANK CHARGES",
        "AMAZONFEE",
    ),
    patterns=(r"ADJUST\d*", r"TEST\d+", r"gift_\d+_\d+"),
)


PRESETS: dict[str, ColumnMapping] = {
    "canonical": ColumnMapping(name="canonical", columns={c: c for c in event_schema.CANONICAL_COLUMNS}),
    # Kaggle "eCommerce behavior data from multi category store"; category_code is often blank.
    "rees46": ColumnMapping(
        name="rees46",
        columns={
            "customer_id": "user_id",
            "event_time": "event_time",
            "action": "event_type",
            "product_id": "product_id",
            "category": "category_code",
            "price": "price",
            "session_id": "user_session",
        },
        category_fallback_column="category_id",
    ),
    # Tianchi Taobao UserBehavior.csv: no header row.
    "taobao": ColumnMapping(
        name="taobao",
        columns={
            "customer_id": "user_id",
            "product_id": "item_id",
            "category": "category_id",
            "action": "behavior",
            "event_time": "timestamp",
        },
        header=("user_id", "item_id", "category_id", "behavior", "timestamp"),
        time_format="unix_s",
        action_synonyms={"pv": "view", "fav": "wishlist", "buy": "purchase"},
    ),
    # Kaggle RetailRocket events.csv; categories live in a separate item_properties file.
    "retailrocket": ColumnMapping(
        name="retailrocket",
        columns={
            "customer_id": "visitorid",
            "event_time": "timestamp",
            "action": "event",
            "product_id": "itemid",
        },
        time_format="unix_ms",
        action_synonyms={"addtocart": "cart", "transaction": "purchase"},
    ),
    # UCI Online Retail (InvoiceNo, UnitPrice, CustomerID) and Online Retail II (Invoice, Price,
    # Customer ID): invoice lines, every one a purchase or a cancellation, no category. The invoice
    # is the session (one basket). Dates are ISO in exports of the .xlsx, month-first in others.
    "online_retail": ColumnMapping(
        name="online_retail",
        columns={
            "customer_id": ("CustomerID", "Customer ID"),
            "event_time": "InvoiceDate",
            "product_id": "StockCode",
            "price": ("UnitPrice", "Price"),
            "session_id": ("InvoiceNo", "Invoice"),
            "quantity": "Quantity",
            "product_name": "Description",
        },
        time_format=("iso", "%m/%d/%Y %H:%M"),
        default_action="purchase",
        integral_float_ids=True,
        cancellation=CancellationRule(invoice_column=("InvoiceNo", "Invoice"), invoice_prefix="C"),
        non_product=ONLINE_RETAIL_NON_PRODUCT,
    ),
}


def mapping_from_dict(d: Mapping[str, Any]) -> ColumnMapping:
    """Build a mapping from plain data (e.g. a parsed YAML/JSON file); ``name`` defaults to "custom".

    Lists stand for tuples (column alternatives, time formats, header); ``cancellation`` and
    ``non_product`` are mappings of ``CancellationRule`` / ``NonProductRule`` fields.
    """
    if not isinstance(d, Mapping):
        raise ConfigError(f"a column mapping must be a mapping, got {type(d).__name__}")
    known = [f.name for f in fields(ColumnMapping)]
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ConfigError(f"unknown column mapping keys {unknown}; known: {known}")
    if "columns" not in d:
        raise ConfigError("a column mapping needs 'columns' (canonical name -> source column)")
    values = {"name": "custom", **d}
    if values.get("header") is not None and not isinstance(values["header"], list | tuple):
        raise ConfigError(f"header must be a list of column names, got {values['header']!r}")
    values["action_synonyms"] = values.get("action_synonyms") or {}
    return ColumnMapping(**values)


def load_mapping(path_or_name: str) -> ColumnMapping:
    """A preset by name (see ``PRESETS``), or a mapping read from a .yaml/.yml/.json file."""
    if path_or_name in PRESETS:
        return PRESETS[path_or_name]
    path = Path(path_or_name)
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise ConfigError(
            f"unknown column mapping {path_or_name!r}: not a preset {sorted(PRESETS)} "
            "nor a .yaml/.yml/.json file"
        )
    if not path.is_file():
        raise ConfigError(f"column mapping file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot parse column mapping: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: a column mapping file must hold a mapping at top level")
    try:
        return mapping_from_dict({"name": path.stem, **data})
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


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


@dataclass
class _RejectTally:
    """Rows read and rejects by reason (with their first row numbers) over a file's chunks."""

    n_read: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[int]] = field(default_factory=dict)

    def add(self, n_read: int, rejects: pd.DataFrame) -> None:
        self.n_read += n_read
        counted = rejects[rejects["reason"] != event_schema.REASON_DUPLICATE]
        for reason, rows in counted.groupby("reason", sort=False)["row_number"]:
            self.counts[reason] = self.counts.get(reason, 0) + len(rows)
            kept = self.examples.setdefault(reason, [])
            kept.extend(rows.iloc[: _REFUSAL_ROW_EXAMPLES - len(kept)].tolist())

    def refuse_if_mostly_rejected(self, where: str, mapping: str, max_reject_share: float) -> None:
        n_rejected = sum(self.counts.values())
        if n_rejected < MIN_REJECTS_TO_REFUSE or n_rejected <= max_reject_share * self.n_read:
            return
        top = sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))[:_REFUSAL_TOP_REASONS]
        reasons = "; ".join(
            f"{reason} x{count} (rows {', '.join(map(str, self.examples[reason]))}"
            f"{', ...' if count > len(self.examples[reason]) else ''})"
            for reason, count in top
        )
        raise MostlyRejectedError(
            f"{where}: refused, {n_rejected} of {self.n_read} rows rejected "
            f"({n_rejected / self.n_read:.0%}, above max_reject_share {max_reject_share:g}); "
            f"is column mapping {mapping!r} right for this file? Top reasons: {reasons}. "
            "Nothing from this file was loaded.",
            dict(self.counts),
            self.n_read,
        )


def _check_share(max_reject_share: float) -> float:
    if not 0.0 <= max_reject_share <= 1.0:
        raise ValueError(f"max_reject_share must be in [0, 1], got {max_reject_share}")
    return float(max_reject_share)


def read_events(
    path: str | Path,
    mapping: ColumnMapping | str = "canonical",
    *,
    source: str | None = None,
    chunksize: int | None = None,
    max_reject_share: float = DEFAULT_MAX_REJECT_SHARE,
) -> LoadResult:
    """Load and validate a whole .csv, .csv.gz or .parquet file (``source`` defaults to the path).

    With ``chunksize`` the file is read in pieces (lower peak memory) with the same result.
    Raises ``MostlyRejectedError`` if more than ``max_reject_share`` of the rows are rejected
    (see the module docstring; 1.0 never refuses).
    """
    max_reject_share = _check_share(max_reject_share)
    mapping = _resolve_mapping(mapping)
    path = Path(path)
    chunks = _open_chunks(path, mapping, chunksize)
    # One chunk needs no cross-chunk duplicate tracking; several chunks must match one-shot reading.
    parts = list(
        _validated(
            chunks,
            mapping,
            source or str(path),
            track_duplicates=chunksize is not None,
            max_reject_share=max_reject_share,
        )
    )
    if not parts:
        return LoadResult(event_schema.empty_events(), event_schema.empty_rejects())
    return LoadResult(
        events=pd.concat([p.events for p in parts], ignore_index=True),
        rejects=pd.concat([p.rejects for p in parts], ignore_index=True),
        products=event_schema.merge_name_counts([p.products for p in parts]),
        event_row_numbers=np.concatenate([p.event_row_numbers for p in parts]),
    )


def iter_events(
    path: str | Path,
    mapping: ColumnMapping | str = "canonical",
    *,
    source: str | None = None,
    chunksize: int = 1_000_000,
    max_reject_share: float = DEFAULT_MAX_REJECT_SHARE,
) -> Iterator[LoadResult]:
    """Validate a file ``chunksize`` rows at a time.

    Row numbers are global, and a row repeating the natural key of a valid row of an earlier chunk
    is rejected as ``exact_duplicate`` or ``conflicting_duplicate`` (tracked by 64-bit hashes of
    the row and of its key, 16 bytes per kept event), so the chunks concatenated equal
    ``read_events``. File problems raise here, not on first iteration; a
    mostly rejected file (``MostlyRejectedError``) raises after the last chunk, so a consumer
    that writes chunks inside one transaction (``Store.ingest_file``) rolls all of them back.
    """
    if chunksize < 1:
        raise ValueError(f"chunksize must be >= 1, got {chunksize}")
    max_reject_share = _check_share(max_reject_share)
    mapping = _resolve_mapping(mapping)
    path = Path(path)
    chunks = _open_chunks(path, mapping, chunksize)
    return _validated(
        chunks, mapping, source or str(path), track_duplicates=True, max_reject_share=max_reject_share
    )


def validate_events(
    raw: pd.DataFrame, mapping: ColumnMapping, *, source: str, first_row_number: int = 1
) -> LoadResult:
    """Validate a string frame with source column names; row numbers start at ``first_row_number``.

    Non-string columns are converted with ``astype(str)`` and missing values treated as blank.
    """
    result, _ = _validate(raw, mapping, source, first_row_number, seen=None)
    return result


def _resolve_mapping(mapping: ColumnMapping | str) -> ColumnMapping:
    return load_mapping(mapping) if isinstance(mapping, str) else mapping


def _validated(
    chunks: Iterable[csv_lines.RecordChunk],
    mapping: ColumnMapping,
    source: str,
    *,
    track_duplicates: bool,
    max_reject_share: float = 1.0,
) -> Iterator[LoadResult]:
    """Validate each chunk's parsed rows and merge in its line-level rejects, by row number."""
    seen = _SeenHashes.empty() if track_duplicates else None
    tally = _RejectTally()
    for chunk in chunks:
        # Validated with positions as row numbers, then mapped to the records' own numbers: the
        # parsed rows skip the numbers of lines rejected before parsing.
        result, seen = _validate(chunk.frame, mapping, source, 0, seen)
        rejects = result.rejects.assign(
            row_number=chunk.row_numbers[result.rejects["row_number"].to_numpy(dtype=np.int64)]
        )
        if len(chunk.rejects):
            lines = chunk.rejects.assign(source=pd.Series([source] * len(chunk.rejects), dtype="str"))
            rejects = pd.concat([rejects, lines[list(event_schema.REJECT_COLUMNS)]], ignore_index=True)
            rejects = rejects.sort_values("row_number", kind="stable", ignore_index=True)
        tally.add(chunk.n_records, rejects)
        numbers = chunk.row_numbers[result.event_row_numbers]
        yield LoadResult(result.events, rejects, result.products, event_row_numbers=numbers)
    tally.refuse_if_mostly_rejected(source, mapping.name, max_reject_share)


def _check_columns(available: list[str], mapping: ColumnMapping, where: str) -> ColumnMapping:
    """Raise ``EventsFileError`` unless every mapped column is present; returns the resolved mapping."""
    return mapping.resolve(available, where)


def _open_chunks(
    path: Path, mapping: ColumnMapping, chunksize: int | None
) -> Iterator[csv_lines.RecordChunk]:
    """Check the file now; return a lazy iterator of chunks of all-string frames ('' for null or
    absent) with their row numbers and line-level rejects."""
    if not path.is_file():
        raise EventsFileError(f"events file not found: {path}")
    name = path.name.lower()
    if name.endswith(".parquet"):
        return _parquet_chunks(path, mapping, chunksize)
    if name.endswith((".csv", ".csv.gz")):
        return _csv_chunks(path, mapping, chunksize)
    raise EventsFileError(f"{path}: unsupported file type; expected .csv, .csv.gz or .parquet")


def _csv_chunks(path: Path, mapping: ColumnMapping, chunksize: int | None) -> Iterator[csv_lines.RecordChunk]:
    # Fields are read as text, nothing guessed ("NA", "null" stay text); a blank line is a record
    # (a malformed_row reject) so that row numbers match the file.
    if mapping.header is None:
        names = _strict_csv(path, lambda: csv_lines.read_header(path))
        if names is None:
            raise EventsFileError(f"{path}: file is empty; expected a header row")
        _check_columns(names, mapping, str(path))
    else:
        names = list(mapping.header)
    return _csv_frames(path, names, has_header=mapping.header is None, chunksize=chunksize)


def _csv_frames(
    path: Path, names: list[str], *, has_header: bool, chunksize: int | None
) -> Iterator[csv_lines.RecordChunk]:
    records = csv_lines.iter_records(path, names, has_header=has_header, chunksize=chunksize)
    while (chunk := _strict_csv(path, lambda: next(records, None))) is not None:
        yield chunk


def _strict_csv(path: Path, read: Callable[[], T]) -> T:
    """Run a read of the file, turning a broken header and undecodable compression into errors."""
    try:
        return read()
    except csv_lines.HeaderError as exc:
        raise EventsFileError(f"{path}: {exc}") from exc
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise EventsFileError(f"{path}: cannot decode (expected UTF-8 CSV, optionally gzip): {exc}") from exc


def _parquet_chunks(path: Path, mapping: ColumnMapping, chunksize: int | None) -> Iterator[pd.DataFrame]:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise EventsFileError(f"{path}: not a readable Parquet file: {exc}") from exc
    names = [n for n in parquet.schema_arrow.names if not _PANDAS_INDEX_COLUMN.fullmatch(n)]
    _check_columns(names, mapping, str(path))
    batches = (
        parquet.iter_batches(batch_size=chunksize, columns=names) if chunksize else [parquet.read(names)]
    )
    return _numbered(_arrow_as_strings(path, batch) for batch in batches)


def _numbered(frames: Iterable[pd.DataFrame]) -> Iterator[csv_lines.RecordChunk]:
    """Frames of consecutive rows (no line-level rejects) as chunks numbered from 1."""
    first = 1
    for frame in frames:
        last = first + len(frame) - 1
        numbers = np.arange(first, last + 1, dtype=np.int64)
        yield csv_lines.RecordChunk(frame, numbers, csv_lines.empty_line_rejects(), first, last)
        first = last + 1


def _arrow_as_strings(path: Path, data: pa.Table | pa.RecordBatch) -> pd.DataFrame:
    """Typed Parquet columns as text (ints as digits, timestamps as ISO), like a CSV would hold them."""
    try:
        columns = {name: pc.cast(data.column(name), pa.string()) for name in data.column_names}
    except pa.ArrowException as exc:
        raise EventsFileError(f"{path}: a column cannot be read as text: {exc}") from exc
    return pa.table(columns).to_pandas().fillna("")


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
        parsed = pd.Series(np.isfinite(number), index=text.index)
        per_second = 1 if time_format == "unix_s" else 1_000
        # Range check on the numbers: absurd epochs would overflow the datetime conversion.
        in_range = parsed & number.between(
            MIN_EVENT_TIME.timestamp() * per_second, latest.timestamp() * per_second
        )
        # Via whole microseconds: float seconds straight to datetime are off by 1us now and then.
        micros = np.round(number * (1_000_000 // per_second))
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
class _SeenHashes:
    """64-bit hashes of the events kept from earlier chunks of a file, each array sorted.

    ``rows``: of whole canonical rows; ``keys``: of their natural keys (``event_schema.NATURAL_KEY``).
    """

    rows: np.ndarray
    keys: np.ndarray

    @staticmethod
    def empty() -> _SeenHashes:
        return _SeenHashes(np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.uint64))

    def classify(
        self, events: pd.DataFrame, exact: np.ndarray, conflicting: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, _SeenHashes]:
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
            _SeenHashes(
                np.sort(np.concatenate([self.rows, rows[kept]]), kind="stable"),  # radix sort
                np.sort(np.concatenate([self.keys, keys[kept]]), kind="stable"),
            ),
        )


def _validate(
    raw: pd.DataFrame, mapping: ColumnMapping, source: str, first_row_number: int, seen: _SeenHashes | None
) -> tuple[LoadResult, _SeenHashes | None]:
    """Split ``raw`` into events and rejects; ``seen`` holds hashes of earlier chunks' events."""
    mapping = _check_columns([str(c) for c in raw.columns], mapping, source)
    raw = _text(raw)
    customer = _id_text(raw[mapping.column("customer_id")].str.strip(), mapping)
    product = _id_text(raw[mapping.column("product_id")].str.strip(), mapping)
    when = raw[mapping.column("event_time")].str.strip()
    action = _actions(raw, mapping)
    category = _optional(raw, mapping, "category")
    session = _id_text(_optional(raw, mapping, "session_id"), mapping)
    if "price" in mapping.columns:
        price_text = raw[mapping.columns["price"]].str.strip()
        price = pd.to_numeric(price_text.mask(price_text == ""), errors="coerce").astype("float64")
        bad_price = (price_text != "") & ~np.isfinite(price)  # "nan"/"inf" parse but are no price
    else:
        price = pd.Series(np.nan, index=raw.index, dtype="float64")
        bad_price = pd.Series(False, index=raw.index)
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

    rejected = np.flatnonzero(codes >= 0)
    rejects = pd.DataFrame(
        {
            "source": pd.Series([source] * len(rejected), dtype="str"),
            "row_number": (first_row_number + rejected).astype("int64"),
            # Control characters come out JSON-escaped, so the raw text is always storable.
            "raw": _raw_json(raw.iloc[rejected][_mapped_columns(raw, mapping)]),
            "reason": pd.Series(np.asarray(REASON_PRECEDENCE)[codes[rejected]], dtype="str"),
        }
    )
    return LoadResult(events, rejects, products, event_row_numbers=event_row_numbers), seen


# JSON string escapes, as json.dumps writes them: the short forms, else \u00XX.
_JSON_ESCAPES = {"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _json_string_bodies(values: pa.Array) -> pa.Array:
    """Each string escaped as inside a JSON string literal, exactly as ``json.dumps`` with
    ``ensure_ascii=False`` does it (backslash, quote and the control characters U+0000-U+001F)."""
    out = pc.replace_substring(pc.replace_substring(values, "\\", "\\\\"), '"', '\\"')
    if pc.any(pc.match_substring_regex(out, r"[\x00-\x1f]")).as_py():  # rare: 32 passes only then
        for code in range(0x20):
            char = chr(code)
            out = pc.replace_substring(out, char, _JSON_ESCAPES.get(char, f"\\u{code:04x}"))
    return out


def _mapped_columns(raw: pd.DataFrame, mapping: ColumnMapping) -> list[str]:
    """The columns of ``raw`` the (resolved) mapping reads, in file order.

    A reject keeps only these: a file's other columns (an email, a national id) were never asked
    for and must not be copied into ``rejected_events``.
    """
    wanted = set(mapping.source_columns)
    return [c for c in raw.columns if str(c) in wanted]


def _raw_json(rows: pd.DataFrame) -> pd.Series:
    """Each row as a JSON object of its text fields, equal to ``json.dumps(row, ensure_ascii=False)``.

    Built column by column with Arrow string kernels: a file can reject most of its rows
    (order-line exports reject a quarter), and a per-row ``json.dumps`` cost seconds per 100K rows.
    ``rows`` holds strings only ('' for missing), as ``_text`` makes them.
    """
    if not len(rows):
        return pd.Series([], dtype="str")
    pieces: list[pa.Array | str] = []
    for i, column in enumerate(rows.columns):
        key = json.dumps(str(column), ensure_ascii=False)
        pieces.append(("{" if i == 0 else '", ') + key + ': "')
        pieces.append(_json_string_bodies(pa.array(rows[column].to_numpy(dtype=object), pa.large_string())))
    pieces.append('"}')
    scalars = [pa.scalar(p, pa.large_string()) if isinstance(p, str) else p for p in pieces]
    joined = pc.binary_join_element_wise(*scalars, pa.scalar("", pa.large_string()))
    return pd.Series(joined.to_pandas(), dtype="str")


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
