"""Versioned models: promote / reject, and pick the model for a date (saving and loading: ``model_io``).

Lifecycle (``model_versions.status``)::

    staging --promote--> active --(another model promoted)--> retired --promote--> active
       \\--reject--> rejected
       \\--(a newer candidate published: supersede_staging)--> rejected

* At most one ``active`` model (partial unique index); promotion is one transaction that retires
  the previous active model and activates the new one, so readers see either the old or the new.
* A candidate of the weekly run stays ``staging`` until its run publishes it. Once a newer
  candidate is published (promoted, or rejected by the gate), the older staging versions are
  rejected in that transaction (``supersede_staging``): a run that failed after saving its
  candidate leaves no staging version behind, and a retry of it cannot promote the older model.
  Their ``superseded_by`` column names the newer candidate (set only on rejected rows, to a
  higher version: a CHECK); rejected is final, so nothing clears it.
* ``model_version_for(as_of)`` = the newest *promoted* (active or retired) model with
  ``trained_through <= as_of``: a backfill of date D picks the same model whenever it runs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from ._util import dumps, require_transaction, utc
from .errors import ModelRejectedError, ModelStateError, NotFoundError, StoreInputError

# Saving and loading are ``model_io``'s; the Store reaches every model operation through here.
from .model_io import load_model as load_model
from .model_io import model_row
from .model_io import save_model as save_model

STATUSES = ("staging", "active", "retired", "rejected")
PROMOTED = ("active", "retired")


# ---------------------------------------------------------------------------------- lifecycle


def _lock_lifecycle(conn: psycopg.Connection) -> None:
    """Serialise status transitions of this schema's models (transaction-scoped), so two
    promotions cannot interleave."""
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('traitflow.model_lifecycle:' || current_schema(), 0))"
    )


def _retire_active(conn: psycopg.Connection) -> int | None:
    row = conn.execute(
        "UPDATE model_versions SET status = 'retired', retired_at = now()"
        " WHERE status = 'active' RETURNING model_version"
    ).fetchone()
    return None if row is None else int(row[0])


def _activate(conn: psycopg.Connection, version: int) -> None:
    conn.execute(
        "UPDATE model_versions SET status = 'active', promoted_at = now(), retired_at = NULL,"
        " status_reason = NULL WHERE model_version = %s",
        (int(version),),
    )


def promote(conn: psycopg.Connection, version: int) -> bool:
    """Make ``version`` the active model; returns False when it already was (a no-op)."""
    require_transaction(conn)
    _lock_lifecycle(conn)
    row = model_row(conn, version, lock=True)
    if row["status"] == "active":
        return False
    refuse_rejected(row)
    _retire_active(conn)
    _activate(conn, version)
    return True


def refuse_rejected(row: dict[str, Any]) -> None:
    """Raise ``ModelRejectedError`` when ``row`` (``model_io.model_row``) is a rejected model."""
    if row["status"] == "rejected":
        raise ModelRejectedError(
            f"model {row['model_version']} was rejected ({row['status_reason']}); it cannot be"
            " promoted, and retrying will not change that: run the retrain again for a new candidate"
        )


def reject_model(conn: psycopg.Connection, version: int, reason: str) -> bool:
    """Mark a staging model rejected (kept for inspection); returns False if it already was."""
    require_transaction(conn)
    _lock_lifecycle(conn)
    status = model_row(conn, version, lock=True)["status"]
    if status == "rejected":
        return False
    if status != "staging":
        raise ModelStateError(f"only a staging model can be rejected; model {version} is {status}")
    conn.execute(
        "UPDATE model_versions SET status = 'rejected', status_reason = %s WHERE model_version = %s",
        (str(reason), int(version)),
    )
    return True


def superseded_reason(version: int) -> str:
    """The ``status_reason`` of a staging version that ``supersede_staging(version)`` rejected
    (text for people: ``superseded_by`` reads the ``superseded_by`` column, not this)."""
    return f"superseded by version {int(version)} before its run promoted it"


def supersede_staging(conn: psycopg.Connection, version: int) -> int:
    """Reject every ``staging`` version older than ``version`` (a lower number), recording
    ``version`` in its ``superseded_by`` column and ``superseded_reason(version)`` as its reason,
    in the caller's transaction; returns how many.

    Called when the newer candidate ``version`` is published (promoted, or rejected by the gate):
    an older candidate's run failed or was abandoned before promoting it, and promoting it now
    would replace a newer decision with an older model. Active, retired and rejected versions
    are not touched.
    """
    require_transaction(conn)
    _lock_lifecycle(conn)
    cur = conn.execute(
        "UPDATE model_versions SET status = 'rejected', status_reason = %s, superseded_by = %s"
        " WHERE status = 'staging' AND model_version < %s",
        (superseded_reason(version), int(version), int(version)),
    )
    return cur.rowcount


def superseded_by(conn: psycopg.Connection, version: int) -> list[int]:
    """The versions ``supersede_staging(version)`` rejected, ascending (also after a retry)."""
    rows = conn.execute(
        "SELECT model_version FROM model_versions WHERE superseded_by = %s ORDER BY model_version",
        (int(version),),
    ).fetchall()
    return [int(r[0]) for r in rows]


def published_version(conn: psycopg.Connection, run_key: str) -> int | None:
    """The version stored under ``run_key`` (``Store.publish``, ``Store.save_candidate``), or None."""
    row = conn.execute(
        "SELECT model_version FROM model_versions WHERE run_key = %s", (str(run_key),)
    ).fetchone()
    return None if row is None else int(row[0])


def set_run_key(conn: psycopg.Connection, version: int, run_key: str) -> None:
    """Record the key a version was published under (unique: one version per key)."""
    if not isinstance(run_key, str) or not 1 <= len(run_key) <= 256 or "\x00" in run_key:
        raise StoreInputError(f"run_key must be 1-256 characters without NUL, got {run_key!r:.80}")
    conn.execute("UPDATE model_versions SET run_key = %s WHERE model_version = %s", (run_key, int(version)))


def merge_metrics(conn: psycopg.Connection, version: int, metrics: dict[str, Any]) -> None:
    """Set the top-level keys of ``metrics`` in the version's metrics, keeping its other keys."""
    require_transaction(conn)
    conn.execute(
        "UPDATE model_versions SET metrics = metrics || %s::jsonb WHERE model_version = %s",
        (dumps(metrics), int(version)),
    )


def active_model_version(conn: psycopg.Connection) -> int | None:
    row = conn.execute("SELECT model_version FROM model_versions WHERE status = 'active'").fetchone()
    return None if row is None else int(row[0])


MODEL_VERSION_FOR = (
    "SELECT model_version FROM model_versions WHERE status IN ('active', 'retired')"
    " AND trained_through <= %s ORDER BY trained_through DESC, model_version DESC LIMIT 1"
)


def model_version_for(conn: psycopg.Connection, as_of: datetime) -> int | None:
    """Newest promoted (active or retired) model with ``trained_through <= as_of``, else None.

    "Newest" = latest ``trained_through`` (ties: highest version). Staging and rejected models
    are never chosen, and the current active status does not matter, so the answer for a date
    does not depend on when it is asked (backfills are reproducible).
    """
    return selected_version(conn.execute(MODEL_VERSION_FOR, (utc(as_of),)))


def selected_version(cursor: psycopg.Cursor[Any]) -> int | None:
    """The answer of a cursor that ran ``MODEL_VERSION_FOR`` (sent earlier in a pipeline, say)."""
    row = cursor.fetchone()
    return None if row is None else int(row[0])


def update_model_metadata(
    conn: psycopg.Connection,
    version: int,
    *,
    metrics: dict[str, Any] | None = None,
    drift: dict[str, Any] | None = None,
    trait_match: dict[str, Any] | None = None,
) -> None:
    """Replace the given JSON fields (None = leave unchanged)."""
    require_transaction(conn)
    model_row(conn, version, lock=True)
    updates = {"metrics": metrics, "drift": drift, "trait_match": trait_match}
    assignments = [
        sql.SQL("{} = %s::jsonb").format(sql.Identifier(name))
        for name, value in updates.items()
        if value is not None
    ]
    values = [dumps(value) for value in updates.values() if value is not None]
    if not assignments:
        return
    conn.execute(
        sql.SQL("UPDATE model_versions SET {} WHERE model_version = %s").format(
            sql.SQL(", ").join(assignments)
        ),
        [*values, int(version)],
    )


def list_models(conn: psycopg.Connection) -> pd.DataFrame:
    """All model versions (no arrays), newest first."""
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        rows = cur.execute(
            "SELECT model_version, status, trained_through, created_at, promoted_at, retired_at,"
            " status_reason, n_tokens, vector_size, n_traits, metrics, drift,"
            " training_mode, parent_version, trained_since, superseded_by"
            " FROM model_versions ORDER BY model_version DESC"
        ).fetchall()
    columns = [
        "model_version", "status", "trained_through", "created_at", "promoted_at", "retired_at",
        "status_reason", "n_tokens", "vector_size", "n_traits", "metrics", "drift",
        "training_mode", "parent_version", "trained_since", "superseded_by",
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


ModelTraits = tuple[
    np.ndarray, list[str], int, str
]  # trait ids in position order, labels, vector_size, status


def model_trait_ids(conn: psycopg.Connection, version: int) -> ModelTraits:
    """(trait ids in position order, labels, vector_size, status) of a model, in one statement
    (``NotFoundError`` for an unknown version)."""
    return model_traits(send_model_traits_query(conn, version), version)


def send_model_traits_query(conn: psycopg.Connection, version: int) -> psycopg.Cursor[Any]:
    """The cursor of the query ``model_traits`` reads: in a pipeline, its answer comes with the
    other statements sent before the next sync."""
    return conn.execute(
        "SELECT m.vector_size, m.status,"
        " ARRAY(SELECT c.trait_id FROM trait_components c WHERE c.model_version = m.model_version"
        "  ORDER BY c.position),"
        " ARRAY(SELECT c.label FROM trait_components c WHERE c.model_version = m.model_version"
        "  ORDER BY c.position)"
        " FROM model_versions m WHERE m.model_version = %s",
        (int(version),),
    )


def model_traits(cursor: psycopg.Cursor[Any], version: int) -> ModelTraits:
    """``model_trait_ids`` of ``version`` from the cursor ``send_model_traits_query`` returned."""
    row = cursor.fetchone()
    if row is None:
        raise NotFoundError(f"model version {version} does not exist")
    vector_size, status, trait_ids, labels = row
    return np.array(trait_ids, dtype=np.int64), list(labels), int(vector_size), str(status)
