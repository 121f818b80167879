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

from traitflow.events.errors import EventsFileError, MostlyRejectedError
from traitflow.events.loading import iter_events, read_events, validate_events
from traitflow.events.mapping import (
    AUXILIARY_COLUMNS,
    TIME_FORMATS,
    CancellationRule,
    ColumnMapping,
    ColumnSource,
    NonProductRule,
    mapping_from_dict,
)
from traitflow.events.presets import ONLINE_RETAIL_NON_PRODUCT, PRESETS, load_mapping
from traitflow.events.rejects import DEFAULT_MAX_REJECT_SHARE, MIN_REJECTS_TO_REFUSE
from traitflow.events.validation import (
    MAX_FUTURE,
    MIN_EVENT_TIME,
    REASON_PRECEDENCE,
    LoadResult,
    validate_columns,
)

__all__ = [
    "AUXILIARY_COLUMNS",
    "DEFAULT_MAX_REJECT_SHARE",
    "MAX_FUTURE",
    "MIN_EVENT_TIME",
    "MIN_REJECTS_TO_REFUSE",
    "ONLINE_RETAIL_NON_PRODUCT",
    "PRESETS",
    "REASON_PRECEDENCE",
    "TIME_FORMATS",
    "CancellationRule",
    "ColumnMapping",
    "ColumnSource",
    "EventsFileError",
    "LoadResult",
    "MostlyRejectedError",
    "NonProductRule",
    "iter_events",
    "load_mapping",
    "mapping_from_dict",
    "read_events",
    "validate_columns",
    "validate_events",
]
