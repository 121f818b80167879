"""Column mappings: how a source's columns and values map to the canonical event schema.

A ``ColumnMapping`` names the source column of each canonical field (or alternative names), the
time format(s), action synonyms and the order-line options (``CancellationRule``,
``NonProductRule``); it is validated when built, so a bad mapping fails before any file is read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from traitflow import event_schema
from traitflow.config import ConfigError
from traitflow.events.errors import EventsFileError

T = TypeVar("T")

TIME_FORMATS: tuple[str, ...] = ("iso", "unix_s", "unix_ms")

# A mapped source column: one name, or alternative names of which the first present in a file wins
# (exports of the same data spell columns differently, e.g. "CustomerID" and "Customer ID").
ColumnSource = str | tuple[str, ...]

# Mapped columns that are not event fields: ``quantity`` feeds the order-line checks, and
# ``product_name`` feeds ``LoadResult.products`` (a product attribute, not an event attribute).
AUXILIARY_COLUMNS: tuple[str, ...] = ("quantity", "product_name")


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
