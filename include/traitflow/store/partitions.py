"""Monthly partitions of ``customer_profile_history`` (migration 0010): creating months, retention.

One partition per calendar month in UTC, ``[first day 00:00 UTC, next month's first day)``, named
``customer_profile_history_YYYY_MM`` (``partition_name``); migration 0010 derives the same names
and bounds. Names are made from dates by that fixed format only, never from input, and a
partition found in the catalogue is acted on only if its name has that format.

There is no DEFAULT partition, so a month's partition must exist before a row of that month is
written: ``profiles.write_profiles`` calls ``ensure_months`` for its ``as_of`` in its own
transaction, and the daily run creates the coming months ahead (``ensure_history_partitions``),
so that a write rarely has to create one.

Creating a month is a ``CREATE TABLE (LIKE ... INCLUDING ALL)`` (the columns, CHECK constraints
and primary key of the parent) then ``ATTACH PARTITION``: attaching takes a SHARE UPDATE
EXCLUSIVE lock on the parent, which blocks neither reads nor writes of the history, where
``CREATE TABLE ... PARTITION OF`` would hold an ACCESS EXCLUSIVE lock on it until commit (the rest
of a profile write). The attach checks the new, empty table against its bounds: no scan.

Retention (``drop_expired_history``) drops whole months: a ``DROP TABLE`` per partition, which
locks the parent exclusively for the few statements left in its transaction; no DELETE, no dead
rows. The caller holds the profile writers' lock (the ``Store`` takes it), so creating and
dropping months never interleaves with a profile write.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from ._util import require_transaction, utc

PARENT = "customer_profile_history"
_NAME_RE = re.compile(r"^customer_profile_history_(\d{4})_(\d{2})$")
# Months created ahead of the run's date by the daily maintenance (the current month and the next
# two): a few days of failed runs never leave a write to create its own month.
DEFAULT_MONTHS_AHEAD = 2


def month_start(instant: datetime) -> datetime:
    """The first instant (UTC) of the UTC calendar month holding ``instant`` (naive = UTC)."""
    stamp = utc(instant)
    return datetime(stamp.year, stamp.month, 1, tzinfo=UTC)


def add_months(month: datetime, n: int) -> datetime:
    """The first instant of the month ``n`` months after the month starting at ``month`` (n < 0: before)."""
    index = month.year * 12 + month.month - 1 + n
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def partition_name(month: datetime) -> str:
    """``customer_profile_history_YYYY_MM`` for the month holding ``month``."""
    start = month_start(month)
    return f"{PARENT}_{start.year:04d}_{start.month:02d}"


def month_of(name: str) -> datetime | None:
    """The first instant of the month a partition name stands for; None if not one of ours."""
    match = _NAME_RE.match(name)
    if match is None or not 1 <= int(match.group(2)) <= 12:
        return None
    return datetime(int(match.group(1)), int(match.group(2)), 1, tzinfo=UTC)


def history_partitions(conn: psycopg.Connection) -> dict[str, datetime]:
    """``{name: month start}`` of the history's monthly partitions, oldest first (other
    partitions, should anyone attach one, are not listed)."""
    return listed_partitions(send_partitions_query(conn))


def send_partitions_query(conn: psycopg.Connection) -> psycopg.Cursor[Any]:
    """The cursor of the query ``listed_partitions`` reads: in a pipeline, its answer comes with
    the other statements sent before the next sync."""
    return conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = %s::regclass",
        (PARENT,),
    )


def listed_partitions(cursor: psycopg.Cursor[Any]) -> dict[str, datetime]:
    """``history_partitions`` from the cursor ``send_partitions_query`` returned."""
    ours = [(month, name) for (name,) in cursor.fetchall() if (month := month_of(name)) is not None]
    return {name: month for month, name in sorted(ours)}


def _create_month(conn: psycopg.Connection, month: datetime) -> str:
    name = partition_name(month)
    table = sql.Identifier(name)
    conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(table, sql.Identifier(PARENT)))
    # DDL takes no bind parameters: the bounds are literals of aware datetimes (with their offset).
    conn.execute(
        sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
            sql.Identifier(PARENT), table, sql.Literal(month), sql.Literal(add_months(month, 1))
        )
    )
    return name


def ensure_months(
    conn: psycopg.Connection, instants: Iterable[datetime], existing: Mapping[str, datetime] | None = None
) -> list[str]:
    """Create the partitions of the months holding ``instants`` that do not exist yet, in the
    caller's transaction; returns the names created, oldest first (``[]``: all existed).
    ``existing``: ``history_partitions`` read already in this transaction (else read here)."""
    require_transaction(conn)
    existing = history_partitions(conn) if existing is None else existing
    wanted = sorted({month_start(i) for i in instants})
    return [_create_month(conn, m) for m in wanted if partition_name(m) not in existing]


def _months_ahead(months_ahead: int) -> int:
    if isinstance(months_ahead, bool) or not isinstance(months_ahead, int) or months_ahead < 0:
        raise ValueError(f"months_ahead must be a non-negative integer, got {months_ahead!r}")
    return months_ahead


def _retention(retention_months: int) -> int:
    if isinstance(retention_months, bool) or not isinstance(retention_months, int) or retention_months < 0:
        raise ValueError(
            f"retention_months must be a non-negative integer (0 = keep all), got {retention_months!r}"
        )
    return retention_months


def ensure_history_partitions(
    conn: psycopg.Connection, through: datetime, months_ahead: int = DEFAULT_MONTHS_AHEAD
) -> list[str]:
    """Create the partitions of ``through``'s month and the ``months_ahead`` months after it
    that do not exist yet (idempotent); returns the names created, oldest first."""
    first = month_start(through)
    return ensure_months(conn, [add_months(first, k) for k in range(_months_ahead(months_ahead) + 1)])


def retention_cutoff(retention_months: int, as_of: datetime) -> datetime | None:
    """The oldest instant kept by ``retention_months`` at ``as_of``: the start of the month
    ``retention_months`` months before ``as_of``'s month (so that month, the ones after it and
    ``as_of``'s own are kept); None for 0 (keep everything)."""
    months = _retention(retention_months)
    return add_months(month_start(as_of), -months) if months else None


@dataclass(frozen=True)
class DroppedPartition:
    """A month of history dropped by retention: its partition, its first instant, its rows."""

    name: str
    month: datetime
    rows: int


def drop_expired_history(
    conn: psycopg.Connection, retention_months: int, as_of: datetime
) -> list[DroppedPartition]:
    """Drop the monthly partitions that lie entirely before ``retention_cutoff`` (in the caller's
    transaction), oldest first, with the number of rows each held; ``[]`` for retention 0."""
    require_transaction(conn)
    cutoff = retention_cutoff(retention_months, as_of)
    if cutoff is None:
        return []
    # A month starting before the cutoff ends at or before it: cutoffs are month starts.
    expired = [(name, month) for name, month in history_partitions(conn).items() if month < cutoff]
    dropped = []
    for name, month in expired:
        table = sql.Identifier(name)  # a catalogue name of our format (history_partitions)
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
        conn.execute(sql.SQL("DROP TABLE {}").format(table))
        dropped.append(DroppedPartition(name, month, int(row[0]) if row else 0))
    return dropped


@dataclass(frozen=True)
class HistoryMaintenance:
    """What ``maintain_history`` did at ``as_of``: months created ahead, months dropped.

    cutoff : the oldest instant kept (None: retention 0, everything kept)
    """

    as_of: datetime
    retention_months: int
    months_ahead: int
    cutoff: datetime | None
    created: tuple[str, ...]
    dropped: tuple[DroppedPartition, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the run report (``traitflow.runs.HistoryMaintenance`` reads it back):
        ``dropped`` maps each dropped partition to its row count."""
        return {
            "as_of": self.as_of.isoformat(),
            "retention_months": self.retention_months,
            "months_ahead": self.months_ahead,
            "cutoff": None if self.cutoff is None else self.cutoff.isoformat(),
            "created": list(self.created),
            "dropped": {d.name: d.rows for d in self.dropped},
            "rows_dropped": sum(d.rows for d in self.dropped),
        }


def maintain_history(
    conn: psycopg.Connection, as_of: datetime, retention_months: int, months_ahead: int = DEFAULT_MONTHS_AHEAD
) -> HistoryMaintenance:
    """``ensure_history_partitions`` then ``drop_expired_history`` at ``as_of``, in the caller's
    transaction. Retention never drops a month the first step creates (those start at ``as_of``'s)."""
    created = ensure_history_partitions(conn, as_of, months_ahead)
    dropped = drop_expired_history(conn, retention_months, as_of)
    return HistoryMaintenance(
        as_of=utc(as_of),
        retention_months=retention_months,
        months_ahead=months_ahead,
        cutoff=retention_cutoff(retention_months, as_of),
        created=tuple(created),
        dropped=tuple(dropped),
    )
