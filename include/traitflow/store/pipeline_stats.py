"""Counts an operator watches (the plugin's ``/traitflow/metrics``): stored events, rejects by
reason, current profiles, the active model and the outcome of the newest retrain.

Derived from the tables at read time, so they survive restarts and agree across processes. The
row counts are exact (``count(*)``: a scan of the events and profiles primary keys); callers that
poll them cache the result for a while.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg.rows import dict_row


@dataclass(frozen=True)
class LastRetrain:
    """The newest model version that left staging: promoted (gate passed) or rejected by the gate."""

    model_version: int
    status: str  # active, retired or rejected
    gate_passed: bool
    drift: dict[str, float] = field(default_factory=dict)  # the numeric drift measures


@dataclass(frozen=True)
class PipelineStats:
    events_stored: int
    rejects_by_reason: dict[str, int]
    profiles_current: int
    latest_profile_as_of: datetime | None
    active_model_version: int | None
    last_retrain: LastRetrain | None


def pipeline_stats(conn: psycopg.Connection) -> PipelineStats:
    """All counts from one snapshot (a read-only transaction)."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SET TRANSACTION READ ONLY")
        events = cur.execute("SELECT count(*) FROM events").fetchone() or (0,)
        rejects = cur.execute(
            "SELECT reason, count(*) FROM rejected_events GROUP BY reason ORDER BY reason"
        ).fetchall()
        profiles, latest = cur.execute("SELECT count(*), max(as_of) FROM customer_profiles").fetchone() or (
            0,
            None,
        )
        active = cur.execute("SELECT model_version FROM model_versions WHERE status = 'active'").fetchone()
        last = _last_retrain(conn)
    return PipelineStats(
        events_stored=int(events[0]),
        rejects_by_reason={str(reason): int(n) for reason, n in rejects},
        profiles_current=int(profiles),
        latest_profile_as_of=latest,
        active_model_version=int(active[0]) if active else None,
        last_retrain=last,
    )


def _last_retrain(conn: psycopg.Connection) -> LastRetrain | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT model_version, status, drift, metrics -> 'quality_gate' AS gate FROM model_versions"
            " WHERE status <> 'staging' ORDER BY model_version DESC LIMIT 1"
        ).fetchone()
    if row is None:
        return None
    gate = row["gate"] if isinstance(row["gate"], dict) else {}
    passed = bool(gate.get("passed", row["status"] != "rejected"))
    drift = row["drift"] if isinstance(row["drift"], dict) else {}
    numeric = {
        k: float(v) for k, v in drift.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    return LastRetrain(int(row["model_version"]), str(row["status"]), passed, numeric)
