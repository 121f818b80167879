"""Writing customer embeddings and trait profiles: history (replace per date) + current (forward only).

One ``ProfileBatch`` is written in the caller's transaction:

1. checks (model exists and is not rejected, trait ids equal the model's in position order,
   shapes, dtypes, finite values, unique ids, storage limits) -- all before touching the database;
2. a transaction-scoped advisory lock serialises profile writers (see ``_lock_profiles``);
3. one binary COPY of the batch, sorted by customer_id, into a temporary staging table;
4. ``customer_profile_history``, keyed (customer_id, as_of): a first write of the date is a plain
   INSERT; a re-run replaces rows whose content changed (``ON CONFLICT ... DO UPDATE``) and
   never duplicates them;
5. ``customer_profiles`` and ``customer_embeddings``, keyed customer_id: existing rows move
   forward only, ``ON CONFLICT (customer_id) DO UPDATE ... WHERE excluded.as_of >= current.as_of``
   (fed only with rows whose stored as_of is not newer), so a backfill of an old date never
   overwrites a newer current profile; new customers get a plain INSERT.

Rows whose content is unchanged are never touched, so a re-run leaves every table byte-identical
(including ``updated_at``), takes no row locks and writes no WAL for them.

Throughput (bench/bench_store_writes.py, 200K customers x 16 traits x 64-dim): see the report in
``bench/results``; the update path (every current row rewritten, e.g. a weekly recompute under
a new model) costs about 2.5x the first write, as PostgreSQL writes new row versions.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from traitflow import schema as ev_schema
from traitflow.profiles import COLD_START_VALUES, ProfileBatch

from . import copybin
from ._util import copy_in, require_transaction, utc
from .errors import ModelStateError, StoreInputError
from .ingest import as_text_array, check_text
from .models import model_trait_ids


@dataclass
class WriteReport:
    """What ``write_profiles`` did.

    history_inserted / history_replaced: new (customer, as_of) rows / rows of a re-run that changed.
    profiles_written / embeddings_written: current rows inserted or moved forward. The rest of
    the batch (``n_customers - profiles_written``) was either identical already or older than the
    stored current row (a backfill).
    """

    as_of: datetime
    model_version: int
    n_customers: int
    history_inserted: int = 0
    history_replaced: int = 0
    profiles_written: int = 0
    embeddings_written: int = 0
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step, for monitoring

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["as_of"] = self.as_of.isoformat()
        return out


@dataclass
class _Prepared:
    as_of: datetime
    model_version: int
    columns: list[copybin.Column]
    n: int


def prepare_batch(conn: psycopg.Connection, batch: ProfileBatch) -> _Prepared:
    """Check ``batch`` against its model and the storage contract; build the COPY columns."""
    if batch.model_version is None:
        raise StoreInputError("ProfileBatch.model_version is None: save the model first (Store.save_model)")
    version = int(batch.model_version)
    trait_ids, _labels, vector_size, status = model_trait_ids(conn, version)
    if status == "rejected":
        raise ModelStateError(f"model {version} is rejected; profiles cannot be written with it")
    batch_ids = np.asarray(batch.trait_ids)
    if batch_ids.shape != trait_ids.shape or not np.array_equal(batch_ids.astype(np.int64), trait_ids):
        raise StoreInputError(
            f"batch trait_ids {batch_ids.tolist()} differ from model {version}'s trait ids "
            f"{trait_ids.tolist()} (same ids in the same position order are required)"
        )
    n = len(batch)
    profiles = np.asarray(batch.profiles)
    embeddings = np.asarray(batch.embeddings)
    if profiles.dtype != np.float64:
        raise StoreInputError(f"profiles must be float64, got {profiles.dtype}")
    if embeddings.dtype != np.float32 or embeddings.ndim != 2 or embeddings.shape != (n, vector_size):
        raise StoreInputError(
            f"embeddings must be float32 of shape ({n}, {vector_size}), "
            f"got {embeddings.dtype} {embeddings.shape}"
        )
    if not np.isfinite(profiles).all() or not np.isfinite(embeddings).all():
        raise StoreInputError("profiles and embeddings must be finite (no NaN/inf)")
    n_events = np.asarray(batch.n_events)
    if n_events.dtype.kind not in "iu" or (n_events < 0).any():
        raise StoreInputError("n_events must be non-negative integers")
    cold_start = pd.Series(np.asarray(batch.cold_start, dtype=object))
    bad = ~cold_start.isin(COLD_START_VALUES)
    if bad.any():
        raise StoreInputError(
            f"cold_start value {cold_start[bad].iloc[0]!r} is not one of {COLD_START_VALUES}"
        )
    ids = pd.Series(np.asarray(batch.customer_ids, dtype=object))
    id_array = as_text_array(ids, "customer_ids")
    check_text(id_array, "customer_ids", required=True, max_chars=ev_schema.MAX_ID_LENGTH)
    if ids.duplicated().any():
        raise StoreInputError(f"customer id {ids[ids.duplicated()].iloc[0]!r} appears twice in the batch")
    dominant = trait_ids[np.argmax(profiles, axis=1)] if n else np.zeros(0, dtype=np.int64)
    # Stage rows in customer_id byte order (= COLLATE "C"): the upserts then scan the stage in key
    # order, so concurrent writers lock overlapping rows in the same order (no deadlocks) and
    # index insertions are local, without a server-side sort of the wide rows.
    order = pc.sort_indices(id_array).to_numpy()
    columns = [
        copybin.text(id_array.take(pa.array(order))),
        copybin.float8_array(np.ascontiguousarray(profiles[order])),
        copybin.float4_array(np.ascontiguousarray(embeddings[order])),
        copybin.int8(dominant[order]),
        copybin.int8(n_events.astype(np.int64)[order]),
        copybin.text(as_text_array(cold_start, "cold_start").take(pa.array(order))),
    ]
    return _Prepared(as_of=utc(batch.as_of), model_version=version, columns=columns, n=n)


def _stage(conn: psycopg.Connection, prepared: _Prepared) -> None:
    conn.execute("DROP TABLE IF EXISTS pg_temp._tf_stage_profiles")
    conn.execute(
        'CREATE TEMP TABLE _tf_stage_profiles (customer_id text COLLATE "C", traits double precision[],'
        " embedding real[], dominant_trait_id bigint, n_events bigint, cold_start text) ON COMMIT DROP"
    )
    copy_in(conn, "COPY _tf_stage_profiles FROM STDIN (FORMAT binary)", prepared.columns)
    # Row count statistics let the planner pick index probes for a small daily batch and
    # hash/merge joins for a full recompute.
    conn.execute("ANALYZE _tf_stage_profiles (customer_id)")


# Hash joins between the stage and the current tables stay in memory up to a few hundred
# thousand customers instead of spilling to temp files (4MB default). Transaction-local.
WRITE_WORK_MEM = "128MB"


def _lock_profiles(conn: psycopg.Connection) -> None:
    """Serialise profile writers (transaction-scoped advisory lock).

    A write takes seconds, so queueing concurrent ones (e.g. backfill runs) costs little, and it
    makes the existence checks below exact: new customers can be inserted with a plain INSERT
    (half the cost of a speculative INSERT ... ON CONFLICT) and writers can never deadlock.
    """
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('traitflow.profiles', 0))")


def _history_exists(conn: psycopg.Connection, prepared: _Prepared) -> bool:
    """Does any staged customer already have a history row for this as_of? (index probes only)"""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM _tf_stage_profiles s JOIN customer_profile_history h"
        " ON h.customer_id = s.customer_id AND h.as_of = %s)",
        (prepared.as_of,),
    ).fetchone()
    return bool(row and row[0])


_INSERT_HISTORY = (
    "INSERT INTO customer_profile_history"
    " (customer_id, as_of, model_version, traits, dominant_trait_id, n_events, cold_start)"
    " SELECT s.customer_id, %(as_of)s, %(v)s, s.traits, s.dominant_trait_id, s.n_events, s.cold_start"
    " FROM _tf_stage_profiles s"
)
_INSERT_NEW_HISTORY = (
    "INSERT INTO customer_profile_history"
    " (customer_id, as_of, model_version, traits, dominant_trait_id, n_events, cold_start)"
    " SELECT s.customer_id, %(as_of)s, %(v)s, s.traits, s.dominant_trait_id, s.n_events, s.cold_start"
    " FROM _tf_stage_profiles s WHERE NOT EXISTS (SELECT 1 FROM customer_profile_history h"
    " WHERE h.customer_id = s.customer_id AND h.as_of = %(as_of)s)"
)


def _insert_new_history(conn: psycopg.Connection, prepared: _Prepared, *, check: bool) -> int:
    """Insert history rows; with ``check``, only for customers without a row for this as_of."""
    query = _INSERT_NEW_HISTORY if check else _INSERT_HISTORY
    return conn.execute(query, {"as_of": prepared.as_of, "v": prepared.model_version}).rowcount


def _upsert_history(conn: psycopg.Connection, prepared: _Prepared) -> tuple[int, int]:
    """(inserted, replaced) for the history rows of this as_of.

    First write of a date (the common case): one plain INSERT. Re-run of a date: rows whose
    content changed are replaced (upsert), unchanged rows are not touched at all, new customers
    are inserted; a re-run with identical input writes nothing.
    """
    if not _history_exists(conn, prepared):
        return _insert_new_history(conn, prepared, check=False), 0
    replaced = conn.execute(
        "INSERT INTO customer_profile_history AS h"
        " (customer_id, as_of, model_version, traits, dominant_trait_id, n_events, cold_start)"
        " SELECT s.customer_id, %(as_of)s, %(v)s, s.traits, s.dominant_trait_id, s.n_events, s.cold_start"
        " FROM _tf_stage_profiles s JOIN customer_profile_history c"
        "  ON c.customer_id = s.customer_id AND c.as_of = %(as_of)s"
        " WHERE (c.model_version, c.traits, c.dominant_trait_id, c.n_events, c.cold_start)"
        "  IS DISTINCT FROM (%(v)s, s.traits, s.dominant_trait_id, s.n_events, s.cold_start)"
        " ON CONFLICT (customer_id, as_of) DO UPDATE SET model_version = excluded.model_version,"
        "  traits = excluded.traits, dominant_trait_id = excluded.dominant_trait_id,"
        "  n_events = excluded.n_events, cold_start = excluded.cold_start",
        {"as_of": prepared.as_of, "v": prepared.model_version},
    ).rowcount
    return _insert_new_history(conn, prepared, check=True), replaced


def _upsert_current_profiles(conn: psycopg.Connection, prepared: _Prepared) -> int:
    """Move existing rows forward (never to an older as_of; unchanged rows are not touched, so no
    row lock and no WAL for them), then insert new customers with a plain INSERT. In this order
    the second statement never re-examines rows the first one wrote."""
    moved = conn.execute(
        "INSERT INTO customer_profiles AS p"
        " (customer_id, as_of, model_version, traits, dominant_trait_id, n_events, cold_start, updated_at)"
        " SELECT s.customer_id, %(as_of)s, %(v)s, s.traits, s.dominant_trait_id, s.n_events,"
        "  s.cold_start, now()"
        " FROM _tf_stage_profiles s JOIN customer_profiles c ON c.customer_id = s.customer_id"
        " WHERE c.as_of <= %(as_of)s"
        "  AND (c.as_of, c.model_version, c.traits, c.dominant_trait_id, c.n_events, c.cold_start)"
        "  IS DISTINCT FROM (%(as_of)s, %(v)s, s.traits, s.dominant_trait_id, s.n_events, s.cold_start)"
        " ON CONFLICT (customer_id) DO UPDATE SET as_of = excluded.as_of,"
        "  model_version = excluded.model_version, traits = excluded.traits,"
        "  dominant_trait_id = excluded.dominant_trait_id, n_events = excluded.n_events,"
        "  cold_start = excluded.cold_start, updated_at = excluded.updated_at"
        " WHERE excluded.as_of >= p.as_of",
        {"as_of": prepared.as_of, "v": prepared.model_version},
    ).rowcount
    inserted = conn.execute(
        "INSERT INTO customer_profiles"
        " (customer_id, as_of, model_version, traits, dominant_trait_id, n_events, cold_start, updated_at)"
        " SELECT s.customer_id, %s, %s, s.traits, s.dominant_trait_id, s.n_events, s.cold_start, now()"
        " FROM _tf_stage_profiles s"
        " WHERE NOT EXISTS (SELECT 1 FROM customer_profiles c WHERE c.customer_id = s.customer_id)",
        (prepared.as_of, prepared.model_version),
    ).rowcount
    return moved + inserted


def _upsert_embeddings(conn: psycopg.Connection, prepared: _Prepared) -> int:
    """Same rules and order as ``_upsert_current_profiles``, for ``customer_embeddings``."""
    moved = conn.execute(
        "INSERT INTO customer_embeddings AS e (customer_id, as_of, model_version, embedding, updated_at)"
        " SELECT s.customer_id, %(as_of)s, %(v)s, s.embedding, now()"
        " FROM _tf_stage_profiles s JOIN customer_embeddings c ON c.customer_id = s.customer_id"
        " WHERE c.as_of <= %(as_of)s"
        "  AND (c.as_of, c.model_version, c.embedding) IS DISTINCT FROM (%(as_of)s, %(v)s, s.embedding)"
        " ON CONFLICT (customer_id) DO UPDATE SET as_of = excluded.as_of,"
        "  model_version = excluded.model_version, embedding = excluded.embedding,"
        "  updated_at = excluded.updated_at"
        " WHERE excluded.as_of >= e.as_of",
        {"as_of": prepared.as_of, "v": prepared.model_version},
    ).rowcount
    inserted = conn.execute(
        "INSERT INTO customer_embeddings (customer_id, as_of, model_version, embedding, updated_at)"
        " SELECT s.customer_id, %s, %s, s.embedding, now() FROM _tf_stage_profiles s"
        " WHERE NOT EXISTS (SELECT 1 FROM customer_embeddings c WHERE c.customer_id = s.customer_id)",
        (prepared.as_of, prepared.model_version),
    ).rowcount
    return moved + inserted


def write_profiles(conn: psycopg.Connection, batch: ProfileBatch) -> WriteReport:
    """Write ``batch`` (inside the caller's transaction); see the module docstring."""
    require_transaction(conn)
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def step(name: str, clock: list[float] = [started]) -> None:  # noqa: B006 (a closure's clock)
        now = time.perf_counter()
        timings[name] = round(now - clock[0], 4)
        clock[0] = now

    prepared = prepare_batch(conn, batch)
    step("prepare")
    report = WriteReport(as_of=prepared.as_of, model_version=prepared.model_version, n_customers=prepared.n)
    if prepared.n:
        _lock_profiles(conn)
        conn.execute("SELECT set_config('work_mem', %s, true)", (WRITE_WORK_MEM,))
        _stage(conn, prepared)
        step("stage")
        report.history_inserted, report.history_replaced = _upsert_history(conn, prepared)
        step("history")
        report.profiles_written = _upsert_current_profiles(conn, prepared)
        step("profiles")
        report.embeddings_written = _upsert_embeddings(conn, prepared)
        step("embeddings")
    report.seconds = time.perf_counter() - started
    report.timings = timings
    return report
