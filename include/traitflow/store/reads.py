"""Reads for consumers: profiles, trait tables, top and similar customers, run checks.

The pipeline's bulk event reads are ``event_reads``'s; the Store reaches them through here.
Lookups use ordinary parameterized queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from traitflow.profile_batch import MIN_EVIDENCE_EVENTS, profile_confidence

from ._util import utc
from .errors import NotFoundError
from .event_reads import CustomerHistories as CustomerHistories
from .event_reads import customer_histories as customer_histories
from .event_reads import customer_histories_of as customer_histories_of
from .event_reads import customers_with_events as customers_with_events
from .event_reads import event_counts as event_counts
from .event_reads import event_snapshot as event_snapshot
from .event_reads import read_events as read_events
from .event_reads import send_customer_histories_query as send_customer_histories_query
from .event_reads import stages_ids as stages_ids
from .naming import trait_column

# Every table the store owns (table_counts, test checksums). Constant: never from input.
TABLES: tuple[str, ...] = (
    "schema_migrations",
    "events",
    "ingested_files",
    "rejected_events",
    "model_versions",
    "token_vectors",
    "trait_components",
    "trait_products",
    "customer_profiles",
    "customer_profile_history",
    "run_reports",
    "product_names",
    "profile_shards",
    "shard_plans",
    "shard_members",
)

# -------------------------------------------------------------------------- consumer queries


def _components(conn: psycopg.Connection, version: int) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT position, trait_id, label, top_products, top_categories FROM trait_components"
            " WHERE model_version = %s ORDER BY position",
            (version,),
        ).fetchall()


def _active_or(conn: psycopg.Connection, model_version: int | None) -> int:
    if model_version is not None:
        row = conn.execute(
            "SELECT 1 FROM model_versions WHERE model_version = %s", (int(model_version),)
        ).fetchone()
        if row is None:
            raise NotFoundError(f"model version {model_version} does not exist")
        return int(model_version)
    row = conn.execute("SELECT model_version FROM model_versions WHERE status = 'active'").fetchone()
    if row is None:
        raise NotFoundError("there is no active model yet (run `traitflow retrain`, or pass a model version)")
    return int(row[0])


def _min_events(min_events: int) -> int:
    if isinstance(min_events, bool) or not isinstance(min_events, int | np.integer) or min_events < 0:
        raise ValueError(f"min_events must be a non-negative integer, got {min_events!r}")
    return int(min_events)


def _with_confidence(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (a page of answers) with a ``confidence`` column from ``n_known_tokens``; both
    hold Python numbers, or None where the count was not recorded (JSON null, not NaN)."""
    known = pd.to_numeric(frame["n_known_tokens"], errors="coerce").to_numpy(dtype=np.float64)
    confidence = profile_confidence(known)
    missing = np.isnan(known)
    frame["n_known_tokens"] = pd.Series(
        [None if m else int(k) for m, k in zip(missing, known, strict=True)], index=frame.index, dtype=object
    )
    frame["confidence"] = pd.Series(
        [None if m else float(c) for m, c in zip(missing, confidence, strict=True)],
        index=frame.index,
        dtype=object,
    )
    return frame


# A current row with its model's trait ids and labels in trait-position order (NULL for a model
# without components): the row and its labels in one round trip.
_SELECT_CURRENT_PROFILES = (
    "SELECT p.customer_id, p.as_of, p.model_version, p.traits, p.dominant_trait_id, p.n_events,"
    " p.cold_start, p.n_known_tokens, p.updated_at, p.embedding,"
    " c.trait_ids AS _trait_ids, c.labels AS _labels"
    " FROM customer_profiles p LEFT JOIN LATERAL ("
    "  SELECT array_agg(t.trait_id ORDER BY t.position) AS trait_ids,"
    "   array_agg(t.label ORDER BY t.position) AS labels"
    "  FROM trait_components t WHERE t.model_version = p.model_version) c ON true"
    " WHERE p.customer_id"
)


def current_profile(conn: psycopg.Connection, customer_id: str) -> dict[str, Any] | None:
    """The current profile of a customer with trait ids and labels, or None if never profiled.

    ``traits`` lists {trait_id, label, score} in the model's trait-position order; ``embedding``
    is the current customer embedding (float32 array, stored packed in the same row as the traits:
    big-endian float4 bytes, migration 0003). The evidence: ``n_events``, ``n_known_tokens`` (None
    when not recorded) and ``confidence`` (``profiles.profile_confidence``; None likewise).
    """
    with conn.cursor(binary=True, row_factory=dict_row) as cur:
        profile = cur.execute(_SELECT_CURRENT_PROFILES + " = %s", (customer_id,)).fetchone()
    return None if profile is None else _labelled_profile(profile)


def current_profiles(conn: psycopg.Connection, customer_ids: list[str]) -> dict[str, dict[str, Any] | None]:
    """``current_profile`` of each of ``customer_ids`` (None: never profiled), in one query."""
    return current_profiles_of(send_current_profiles_query(conn, customer_ids), customer_ids)


def send_current_profiles_query(
    conn: psycopg.Connection, customer_ids: list[str]
) -> psycopg.Cursor[dict[str, Any]]:
    """The cursor of ``current_profiles``' query: in a pipeline, its answer comes with the other
    statements sent before the next sync (``current_profiles_of`` reads it and closes it)."""
    cursor = conn.cursor(binary=True, row_factory=dict_row)
    return cursor.execute(_SELECT_CURRENT_PROFILES + " = ANY(%s)", ([str(c) for c in customer_ids],))


def current_profiles_of(
    cursor: psycopg.Cursor[dict[str, Any]], customer_ids: list[str]
) -> dict[str, dict[str, Any] | None]:
    with cursor:
        found = {row["customer_id"]: _labelled_profile(row) for row in cursor.fetchall()}
    return {str(c): found.get(str(c)) for c in customer_ids}


def _labelled_profile(profile: dict[str, Any]) -> dict[str, Any]:
    """A row of ``_SELECT_CURRENT_PROFILES`` as ``current_profile`` returns it."""
    scores = profile.pop("traits")
    trait_ids, labels = profile.pop("_trait_ids") or [], profile.pop("_labels") or []
    profile["dominant_label"] = dict(zip(trait_ids, labels, strict=True)).get(profile["dominant_trait_id"])
    profile["traits"] = [
        {"trait_id": trait_id, "label": label, "score": float(score)}
        for trait_id, label, score in zip(trait_ids, labels, scores, strict=True)
    ]
    profile["embedding"] = np.frombuffer(profile.pop("embedding"), dtype=">f4").astype(np.float32)
    known = profile["n_known_tokens"]
    profile["confidence"] = None if known is None else float(profile_confidence(np.array([known]))[0])
    return profile


def profile_history(conn: psycopg.Connection, customer_id: str) -> pd.DataFrame:
    """All stored profiles of a customer, oldest first, one ``trait_<id>`` column per trait id.

    A trait absent from the model used on a date is NaN there (ids are stable across retrains).
    """
    with conn.cursor(binary=True, row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT as_of, model_version, traits, dominant_trait_id, n_events, cold_start, n_known_tokens"
            " FROM customer_profile_history WHERE customer_id = %s ORDER BY as_of",
            (customer_id,),
        ).fetchall()
    base = ["as_of", "model_version", "dominant_trait_id", "n_events", "cold_start", "n_known_tokens"]
    if not rows:
        return pd.DataFrame(columns=base)
    ids_by_model = {
        v: [c["trait_id"] for c in _components(conn, v)] for v in sorted({r["model_version"] for r in rows})
    }
    all_ids = sorted({t for ids in ids_by_model.values() for t in ids})
    records = []
    for r in rows:
        record = {k: r[k] for k in base}
        record.update({trait_column(t): np.nan for t in all_ids})
        record.update(
            {
                trait_column(t): float(s)
                for t, s in zip(ids_by_model[r["model_version"]], r["traits"], strict=True)
            }
        )
        records.append(record)
    return pd.DataFrame.from_records(records, columns=base + [trait_column(t) for t in all_ids])


_EVIDENCE = ["n_events", "n_known_tokens", "cold_start"]


def top_customers(
    conn: psycopg.Connection,
    trait_id: int,
    n: int = 10,
    model_version: int | None = None,
    min_events: int = MIN_EVIDENCE_EVENTS,
) -> pd.DataFrame:
    """The ``n`` customers with the highest current score on ``trait_id`` under a model (default:
    active), among those with at least ``min_events`` events (``profiles.MIN_EVIDENCE_EVENTS``:
    a profile from one or two events tops a trait on a guess; ``min_events=0`` keeps everyone).

    Columns: customer_id, score, label, as_of, model_version, n_events, n_known_tokens,
    cold_start, confidence.
    """
    minimum = _min_events(min_events)
    version = _active_or(conn, model_version)
    if not any(c["trait_id"] == int(trait_id) for c in _components(conn, version)):
        raise NotFoundError(f"trait {trait_id} does not exist in model {version}")
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT customer_id, score, label, as_of, model_version, n_events, n_known_tokens, cold_start"
            " FROM customer_trait_scores WHERE trait_id = %s AND model_version = %s AND n_events >= %s"
            " ORDER BY score DESC, customer_id LIMIT %s",
            (int(trait_id), version, minimum, int(n)),
        ).fetchall()
    columns = ["customer_id", "score", "label", "as_of", "model_version", *_EVIDENCE]
    frame = pd.DataFrame(rows, columns=columns)
    return _with_confidence(frame)


def traits(conn: psycopg.Connection, model_version: int | None = None) -> pd.DataFrame:
    """A model's traits (default: active) with labels, top products/categories and size.

    size = number of customers whose current profile uses this model and has this dominant trait.
    """
    version = _active_or(conn, model_version)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT c.trait_id, c.position, c.label, c.top_products, c.top_categories,"
            " coalesce(s.size, 0) AS size"
            " FROM trait_components c LEFT JOIN ("
            "  SELECT dominant_trait_id, count(*) AS size FROM customer_profiles"
            "  WHERE model_version = %s GROUP BY dominant_trait_id"
            " ) s ON s.dominant_trait_id = c.trait_id"
            " WHERE c.model_version = %s ORDER BY c.position",
            (version, version),
        ).fetchall()
    frame = pd.DataFrame(
        rows, columns=["trait_id", "position", "label", "top_products", "top_categories", "size"]
    )
    frame.insert(0, "model_version", version)
    return frame


def similar_customers(
    conn: psycopg.Connection, customer_id: str, n: int = 10, min_events: int = MIN_EVIDENCE_EVENTS
) -> pd.DataFrame:
    """Customers whose current trait profile is closest (cosine) to ``customer_id``'s.

    Only customers profiled with the same model are compared (profiles of different models live
    in different trait bases), and only those with at least ``min_events`` events
    (``profiles.MIN_EVIDENCE_EVENTS``; ``min_events=0`` keeps everyone): a profile from one or two
    events is the projection of one or two token vectors and reaches cosines near 1 with anyone
    who has those items. Vectorized in SQL: the dot product and norms are one generated
    arithmetic expression over the k array subscripts (k from the model, never from input),
    evaluated in a single scan with a top-N sort; only the n answers leave the database.

    Columns: customer_id, similarity, dominant_trait_id, as_of, n_events, n_known_tokens,
    cold_start, confidence.
    """
    minimum = _min_events(min_events)
    row = conn.execute(
        "SELECT p.model_version, m.n_traits FROM customer_profiles p"
        " JOIN model_versions m USING (model_version) WHERE p.customer_id = %s",
        (customer_id,),
    ).fetchone()
    if row is None:
        raise NotFoundError(f"customer {customer_id!r} has no current profile")
    version, k = int(row[0]), int(row[1])

    def total(template: str) -> sql.Composable:
        return sql.SQL(" + ").join(sql.SQL(template).format(i=sql.Literal(i)) for i in range(1, k + 1))

    query = sql.SQL(
        "SELECT p.customer_id,"
        " ({dot}) / nullif(sqrt({pp}) * sqrt({qq}), 0) AS similarity,"
        " p.dominant_trait_id, p.as_of, p.n_events, p.n_known_tokens, p.cold_start"
        " FROM customer_profiles p,"
        " (SELECT traits FROM customer_profiles WHERE customer_id = %s) q"
        " WHERE p.model_version = %s AND p.customer_id <> %s AND p.n_events >= %s"
        " ORDER BY similarity DESC NULLS LAST, p.customer_id LIMIT %s"
    ).format(
        dot=total("p.traits[{i}] * q.traits[{i}]"),
        pp=total("p.traits[{i}] * p.traits[{i}]"),
        qq=total("q.traits[{i}] * q.traits[{i}]"),
    )
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query, (customer_id, version, customer_id, minimum, int(n))).fetchall()
    columns = ["customer_id", "similarity", "dominant_trait_id", "as_of", *_EVIDENCE]
    frame = pd.DataFrame(rows, columns=columns)
    return _with_confidence(frame)


def newest_event_time(conn: psycopg.Connection) -> datetime | None:
    """The newest stored ``event_time`` (None while the events table is empty)."""
    row = conn.execute("SELECT max(event_time) FROM events").fetchone()
    return None if row is None else row[0]


def latest_profile_as_of(conn: psycopg.Connection) -> datetime | None:
    """The newest ``as_of`` among current profiles (None if nothing was profiled yet)."""
    row = conn.execute("SELECT max(as_of) FROM customer_profiles").fetchone()
    return None if row is None else row[0]


def count_profiles_not_at(conn: psycopg.Connection, as_of: datetime, model_version: int) -> int:
    """Current profiles whose ``as_of`` or model differs from the given ones."""
    row = conn.execute(
        "SELECT count(*) FROM customer_profiles WHERE as_of <> %s OR model_version <> %s",
        (utc(as_of), model_version),
    ).fetchone()
    return int(row[0]) if row else 0


def reject_counts(conn: psycopg.Connection, source: str) -> dict[str, int]:
    """``{reason: rows}`` of the rejects recorded for ``source``, most frequent reason first."""
    rows = conn.execute(
        "SELECT reason, count(*) FROM rejected_events WHERE source = %s GROUP BY reason "
        "ORDER BY count(*) DESC, reason",
        (source,),
    ).fetchall()
    return {str(reason): int(n) for reason, n in rows}


def rejected_rows(conn: psycopg.Connection, source: str, reason: str | None = None) -> list[tuple[int, str]]:
    """``(row_number, reason)`` of the rejects recorded for ``source`` (only ``reason`` if given)."""
    rows = conn.execute(
        "SELECT row_number, reason FROM rejected_events WHERE source = %s"
        " AND (%s::text IS NULL OR reason = %s) ORDER BY row_number",
        (source, reason, reason),
    ).fetchall()
    return [(int(number), str(why)) for number, why in rows]


@dataclass(frozen=True)
class StaleProfiles:
    """Customers with events before an instant that their current profile does not include.

    ``earliest``: the oldest such event (None when ``n_customers`` is 0), i.e. the ``since`` of an
    update that would cover them all.
    """

    n_customers: int
    earliest: datetime | None


def stale_profiles(conn: psycopg.Connection, before: datetime) -> StaleProfiles:
    """Customers with an event before ``before`` and no current profile, or one whose ``as_of`` is
    not after that event (the profile was computed without it)."""
    row = conn.execute(
        "SELECT count(DISTINCT e.customer_id), min(e.event_time) FROM events e "
        "LEFT JOIN customer_profiles p USING (customer_id) "
        "WHERE e.event_time < %s AND (p.as_of IS NULL OR e.event_time >= p.as_of)",
        (utc(before),),
    ).fetchone()
    if row is None or not row[0]:
        return StaleProfiles(0, None)
    return StaleProfiles(int(row[0]), row[1])


def table_counts(conn: psycopg.Connection) -> dict[str, int]:
    """Exact row count of every store table."""
    counts: dict[str, int] = {}
    for table in TABLES:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
        counts[table] = int(row[0]) if row else 0
    return counts
