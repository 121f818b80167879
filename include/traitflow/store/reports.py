"""Run reports: one JSON document per (kind, run_key); writing the same key again replaces it."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from ._util import dumps, require_transaction


def write_run_report(conn: psycopg.Connection, kind: str, run_key: str, report: dict[str, Any]) -> None:
    """Upsert a report (inside the caller's transaction).

    ``created_at`` keeps the first write; ``updated_at`` moves only when the content changes, so
    re-running a task that produces the same report leaves the row untouched.
    """
    require_transaction(conn)
    if not kind or not run_key:
        raise ValueError("kind and run_key must be non-empty strings")
    conn.execute(
        "INSERT INTO run_reports AS r (kind, run_key, report) VALUES (%s, %s, %s::jsonb)"
        " ON CONFLICT (kind, run_key) DO UPDATE SET report = excluded.report, updated_at = now()"
        " WHERE r.report IS DISTINCT FROM excluded.report",
        (str(kind), str(run_key), dumps(report)),
    )


def merge_run_report(conn: psycopg.Connection, kind: str, run_key: str, fields: dict[str, Any]) -> None:
    """Set top-level keys of a stored report (inside the caller's transaction), keeping its other
    keys; a report not stored yet is created with ``fields`` alone. For a step that adds its
    part to a report another step wrote (the daily history maintenance after the monitor)."""
    require_transaction(conn)
    if not kind or not run_key:
        raise ValueError("kind and run_key must be non-empty strings")
    conn.execute(
        "INSERT INTO run_reports AS r (kind, run_key, report) VALUES (%s, %s, %s::jsonb)"
        " ON CONFLICT (kind, run_key) DO UPDATE SET report = r.report || excluded.report, updated_at = now()"
        " WHERE r.report IS DISTINCT FROM r.report || excluded.report",
        (str(kind), str(run_key), dumps(fields)),
    )


def run_reports(conn: psycopg.Connection, kind: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """Most recently written reports first, optionally of one kind."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT kind, run_key, created_at, updated_at, report FROM run_reports"
            " WHERE %s::text IS NULL OR kind = %s"
            " ORDER BY updated_at DESC, kind, run_key LIMIT %s",
            (kind, kind, int(limit)),
        ).fetchall()
