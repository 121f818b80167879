"""Writing customer trait profiles and embeddings: history (replace per date) + current (forward only).

Tables: ``customer_profile_history`` keyed (customer_id, as_of), and ``customer_profiles`` keyed
customer_id, one current row per customer holding its traits *and* its embedding (schema
version 2 merged the former ``customer_embeddings`` table into it: same key, same forward-only
rules, same batch; version 3 stores the embedding packed as bytea, big-endian float4 values).

One ``ProfileBatch`` is written in the caller's transaction:

1. checks (``profile_prepare``: model exists and is not rejected, trait ids equal the model's in
   position order, shapes, dtypes, finite values, unique ids, storage limits) -- all before
   touching the database;
2. a transaction-scoped advisory lock serialises profile writers (see ``_lock_profiles``), so what
   the next step finds stays true until commit; the history's partition for the batch's month is
   created if missing (``partitions.ensure_months``; the daily run creates months ahead);
3. two primary-key range probes: does either table hold a row between the batch's lowest and
   highest customer_id (COLLATE "C" byte order, the batch is sorted)?
4. none (a first load, a cohort of new ids past the existing ones): one binary COPY straight
   into each table. COPY inserts rows in multi-row batches, and the arrays are sent and parsed
   only once;
5. otherwise one binary COPY of the whole batch into a temporary staging table, then

   * history: a first write of the date is a plain INSERT (tried under a savepoint); a re-run
     replaces the rows whose content changed (``UPDATE ... FROM``) and inserts the missing ones,
     never duplicating them;
   * current rows: existing rows move forward only (``UPDATE ... FROM ... WHERE as_of <= new``),
     so a backfill of an old date never overwrites a newer current row; new customers get a
     plain INSERT.

A batch of a few customers written with ``few_rows`` (the event update path) skips the staging:
its rows go as query parameters to the re-run statements of step 5, in two round trips
(``_write_from_parameters``): the locks, the model check and the model's trait ids (pipelined),
then the four row statements as the parts of one statement.

Rows whose content is unchanged are never updated, so a re-run leaves every row as it was
(including ``updated_at``) and takes no row locks on them. Its only physical trace is the
history INSERT it tries first: the rows before the first conflicting customer (the stage is in
key order, so usually none) and that customer's row are written and undone with the savepoint,
leaving dead tuples for VACUUM.

Throughput (bench/bench_store_writes.py, 200K customers x 16 traits x 64-dim): see the report in
``bench/results``; the update path (every current row rewritten, e.g. a weekly recompute under
a new model) costs 1.1-1.6x the first write, as PostgreSQL writes new row versions (HOT updates:
customer_profiles keeps half of each page free, migration 0003). Development machine, 1M
customers, four rounds in two interleaved benchmark runs: 20.5 / 16.2 / 17.4 / 18.8 s against
17.6 / 11.6 / 10.9 / 16.9 s for the first write.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import sql

from traitflow.profile_batch import ProfileBatch

from ._util import copy_in, require_transaction, utc
from .errors import StaleModelError
from .event_reads import event_counts_of, send_event_counts_query
from .models import (
    MODEL_VERSION_FOR,
    _lock_lifecycle,
    model_traits,
    model_version_for,
    selected_version,
    send_model_traits_query,
)
from .partitions import ensure_months, listed_partitions, send_partitions_query
from .profile_prepare import PreparedProfiles, batch_version, prepare_batch
from .reads import current_profiles_of, send_current_profiles_query


@dataclass
class WriteReport:
    """What ``write_profiles`` did.

    history_inserted / history_replaced: new (customer, as_of) rows / rows of a re-run that changed.
    profiles_written: current rows (traits + embedding) inserted or moved forward. The rest of
    the batch (``n_customers - profiles_written``) was either identical already or older than the
    stored current row (a backfill).
    """

    as_of: datetime
    model_version: int
    n_customers: int
    history_inserted: int = 0
    history_replaced: int = 0
    profiles_written: int = 0
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step, for monitoring
    # With ``count_events``: stored events per customer of the batch (none: left out), counted in
    # the write's transaction after it, under the writers' lock.
    event_counts: dict[str, int] | None = None
    # With ``read_current``: ``Store.current_profiles`` of the batch's customers, read in the
    # write's transaction after it, under the writers' lock: what is current once it commits.
    current_profiles: dict[str, dict[str, Any] | None] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["as_of"] = self.as_of.isoformat()
        del out["current_profiles"]  # rows, not a report
        return out


# The hash joins of a re-run or a partly new batch (replacing history rows, inserting the customers
# without a row) stay in memory up to a few hundred thousand customers instead of spilling to temp
# files (4MB default). Moving current rows forward uses index probes instead (see
# ``_primary_key_probes``). Transaction-local.
WRITE_WORK_MEM = "128MB"


def _lock_profiles(conn: psycopg.Connection) -> None:
    """Serialise profile writers (transaction-scoped advisory lock).

    Every write of customer_profiles / customer_profile_history goes through ``write_profiles``
    (``Store.write_profiles`` and ``Store.promote(..., profiles=)``), so all writers take it.
    A write takes seconds, so queueing concurrent ones (e.g. backfill runs) costs little, and it
    makes the existence checks below exact until commit: the current rows can be moved with a
    plain UPDATE and new customers inserted with a plain INSERT or COPY (half the cost of a
    speculative INSERT ... ON CONFLICT), and writers can never deadlock. The key includes the
    schema: deployments in other schemas of the same database do not wait for each other.
    """
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('traitflow.profile_batch:' || current_schema(), 0))"
    )


def _check_selected_model(conn: psycopg.Connection, prepared: PreparedProfiles) -> None:
    """Refuse a batch whose model is no longer the one selected for its date (``StaleModelError``).

    The ordering between a daily run and a promotion. Called under ``_lock_profiles``, after
    which it takes the model-lifecycle lock too (the order every promotion with profiles takes
    them in, so no deadlock): a promotion committed before this point is seen by the check, and
    none can commit after it until this transaction has. So a daily batch computed with model 1
    while model 2 was being promoted for the same date can never land on top of model 2's rows;
    the caller recomputes with the newer model. A version check inside the write transaction
    rather than one lock held for a whole run: the daily computation stays concurrent with a
    weekly run of several minutes, and only the seconds of writing are ordered.
    """
    _lock_lifecycle(conn)
    _refuse_stale(model_version_for(conn, prepared.as_of), prepared)


def _refuse_stale(selected: int | None, prepared: PreparedProfiles) -> None:
    """``StaleModelError`` unless ``selected`` (``model_version_for`` the batch's as_of, read under
    the locks) is the batch's model."""
    if selected != prepared.model_version:
        raise StaleModelError(prepared.as_of, prepared.model_version, selected)


def _rows_in_range(conn: psycopg.Connection, prepared: PreparedProfiles) -> bool:
    """Whether either table has a row between the batch's lowest and highest id (key byte order).

    Two primary-key range probes. No row in that range means none of the batch's customers has
    one (a first load, a cohort of new ids past the existing ones): the batch can be copied
    straight into the tables. A wrong answer could not corrupt anything anyway: the primary keys
    would reject the COPY.
    """
    lowest, highest = prepared.ids[0].as_py(), prepared.ids[prepared.n - 1].as_py()
    in_range = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM customer_profile_history WHERE customer_id BETWEEN %(lo)s AND %(hi)s)"
        "    OR EXISTS (SELECT 1 FROM customer_profiles WHERE customer_id BETWEEN %(lo)s AND %(hi)s)",
        {"lo": lowest, "hi": highest},
    ).fetchone()
    return in_range != (False,)


def _any_current_row(conn: psycopg.Connection) -> bool:
    """Whether any staged customer has a current row (EXISTS stops at the first one found)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM _tf_stage_profiles s JOIN customer_profiles c"
        " ON c.customer_id = s.customer_id)"
    ).fetchone()
    assert row is not None
    return bool(row[0])


_COPY_HISTORY = (
    "COPY customer_profile_history"
    " (customer_id, as_of, model_version, traits, dominant_trait_id, n_events, cold_start, n_known_tokens)"
    " FROM STDIN (FORMAT binary)"
)
# updated_at: its column default, now() = the transaction's start, as in the INSERTs below.
_COPY_CURRENT = (
    "COPY customer_profiles"
    " (customer_id, as_of, model_version, traits, dominant_trait_id, n_events, cold_start, n_known_tokens,"
    " embedding) FROM STDIN (FORMAT binary)"
)


def _copy_history(conn: psycopg.Connection, prepared: PreparedProfiles) -> int:
    """Insert every row of the batch into the history (no row lies in its id range)."""
    copy_in(conn, _COPY_HISTORY, prepared.history_columns())
    return prepared.n


def _copy_current_profiles(conn: psycopg.Connection, prepared: PreparedProfiles) -> int:
    """Insert every row of the batch as a current row (no row lies in its id range)."""
    copy_in(conn, _COPY_CURRENT, prepared.current_columns())
    return prepared.n


# The statements below read the batch from ``{stage}``: this staging table (large batches), or
# the batch's rows as query parameters (``_parameter_rows``, small batches).
_STAGE = "_tf_stage_profiles"
_STAGE_COLUMNS = "customer_id, traits, embedding, dominant_trait_id, n_events, cold_start, n_known_tokens"


def _stage(conn: psycopg.Connection, prepared: PreparedProfiles) -> None:
    conn.execute("DROP TABLE IF EXISTS pg_temp._tf_stage_profiles")
    conn.execute(
        'CREATE TEMP TABLE _tf_stage_profiles (customer_id text COLLATE "C", traits double precision[],'
        " embedding bytea, dominant_trait_id bigint, n_events bigint, cold_start text, n_known_tokens bigint)"
        " ON COMMIT DROP"
    )
    copy_in(conn, "COPY _tf_stage_profiles FROM STDIN (FORMAT binary)", prepared.columns)
    # Row count and "customer_id is unique" for the planner: the joins below move wide rows, where
    # a misestimate (without statistics it is off by ~3x) costs more than this. A 3,000-row
    # sample (statistics target 10 on this column of this temporary table) tells both as well as
    # the default 30,000 in a sixth of the time (0.02 s for 200K rows).
    conn.execute("ALTER TABLE _tf_stage_profiles ALTER COLUMN customer_id SET STATISTICS 10")
    conn.execute("ANALYZE _tf_stage_profiles (customer_id)")


_INSERT_HISTORY = (
    "INSERT INTO customer_profile_history"
    " (customer_id, as_of, model_version, traits, dominant_trait_id, n_events, cold_start, n_known_tokens)"
    " SELECT s.customer_id, %(as_of)s, %(v)s, s.traits, s.dominant_trait_id, s.n_events, s.cold_start,"
    "  s.n_known_tokens"
    " FROM {stage} s"
)
_INSERT_NEW_HISTORY = (
    "INSERT INTO customer_profile_history"
    " (customer_id, as_of, model_version, traits, dominant_trait_id, n_events, cold_start, n_known_tokens)"
    " SELECT s.customer_id, %(as_of)s, %(v)s, s.traits, s.dominant_trait_id, s.n_events, s.cold_start,"
    "  s.n_known_tokens"
    " FROM {stage} s WHERE NOT EXISTS (SELECT 1 FROM customer_profile_history h"
    "  WHERE h.customer_id = s.customer_id AND h.as_of = %(as_of)s)"
)
_REPLACE_HISTORY = (
    "UPDATE customer_profile_history h SET model_version = %(v)s, traits = s.traits,"
    " dominant_trait_id = s.dominant_trait_id, n_events = s.n_events, cold_start = s.cold_start,"
    " n_known_tokens = s.n_known_tokens"
    " FROM {stage} s"
    " WHERE h.customer_id = s.customer_id AND h.as_of = %(as_of)s"
    "  AND (h.model_version, h.dominant_trait_id, h.n_events, h.cold_start, h.n_known_tokens, h.traits)"
    "  IS DISTINCT FROM (%(v)s, s.dominant_trait_id, s.n_events, s.cold_start, s.n_known_tokens, s.traits)"
)


def _upsert_history(conn: psycopg.Connection, prepared: PreparedProfiles) -> tuple[int, int]:
    """(inserted, replaced) for the staged history rows of this as_of.

    A first write of the date (the common case: every daily run, every weekly recompute) is one
    plain INSERT, tried under a savepoint: asking first whether any staged customer already has
    a row at this as_of would cost a join of the whole batch against the history (1-2 s per
    million customers) that finds nothing almost every time. A re-run of a date hits the primary
    key at once (the stage is in key order, so the first conflicting customer comes early) and is
    undone; then rows whose content changed are replaced in place, unchanged rows are not touched
    at all, new customers are inserted, and a re-run with identical input changes no row.
    """
    params = {"as_of": prepared.as_of, "v": prepared.model_version}
    try:
        with conn.transaction():
            return conn.execute(_INSERT_HISTORY.format(stage=_STAGE), params).rowcount, 0
    except psycopg.errors.UniqueViolation:
        pass
    replaced = conn.execute(_REPLACE_HISTORY.format(stage=_STAGE), params).rowcount
    return conn.execute(_INSERT_NEW_HISTORY.format(stage=_STAGE), params).rowcount, replaced


# Comparison order: the columns that usually differ (as_of, model) and the cheap ones first, so
# the OR that IS DISTINCT FROM expands to stops early; the arrays are compared last.
_MOVE_CURRENT = (
    "UPDATE customer_profiles c SET as_of = %(as_of)s, model_version = %(v)s, traits = s.traits,"
    " dominant_trait_id = s.dominant_trait_id, n_events = s.n_events, cold_start = s.cold_start,"
    " n_known_tokens = s.n_known_tokens, embedding = s.embedding, updated_at = now()"
    " FROM {stage} s"
    " WHERE c.customer_id = s.customer_id AND c.as_of <= %(as_of)s"
    "  AND (c.as_of, c.model_version, c.dominant_trait_id, c.n_events, c.cold_start, c.n_known_tokens,"
    "  c.traits, c.embedding) IS DISTINCT FROM"
    "  (%(as_of)s, %(v)s, s.dominant_trait_id, s.n_events, s.cold_start, s.n_known_tokens, s.traits,"
    "  s.embedding)"
)
_INSERT_CURRENT = (
    "INSERT INTO customer_profiles (customer_id, as_of, model_version, traits, dominant_trait_id,"
    " n_events, cold_start, n_known_tokens, embedding, updated_at)"
    " SELECT s.customer_id, %(as_of)s, %(v)s, s.traits, s.dominant_trait_id, s.n_events, s.cold_start,"
    "  s.n_known_tokens, s.embedding, now()"
    " FROM {stage} s"
)
_INSERT_NEW_CURRENT = (
    "INSERT INTO customer_profiles (customer_id, as_of, model_version, traits, dominant_trait_id,"
    " n_events, cold_start, n_known_tokens, embedding, updated_at)"
    " SELECT s.customer_id, %(as_of)s, %(v)s, s.traits, s.dominant_trait_id, s.n_events, s.cold_start,"
    "  s.n_known_tokens, s.embedding, now()"
    " FROM {stage} s"
    " WHERE NOT EXISTS (SELECT 1 FROM customer_profiles c WHERE c.customer_id = s.customer_id)"
)


def _any_row_up_to(conn: psycopg.Connection, as_of: datetime) -> bool:
    """Whether any current row at all is at ``as_of`` or older, i.e. could move forward to it.

    A sequential scan that stops at the first such row: at once for a daily or weekly write
    (nearly every row is older), the whole table for a backfill older than every current row,
    which then skips probing each staged customer's row for nothing. bench_store_writes at 1M
    customers, interleaved: the backfill's current-row step 6.5 / 8.6 s -> 5.0 / 4.8 s.
    """
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM customer_profiles WHERE as_of <= %s)", (as_of,)
    ).fetchone()
    assert row is not None
    return bool(row[0])


_SET_JOIN_METHODS = "SELECT set_config('enable_hashjoin', %s, true), set_config('enable_mergejoin', %s, true)"


@contextmanager
def _primary_key_probes(conn: psycopg.Connection) -> Iterator[None]:
    """Plan the statement inside as index probes into the target, not as a hash or merge join.

    The stage is in customer_id order, so probing customer_profiles' primary key once per staged
    row walks the index and the heap (kept in key order) front to back. The planner prefers a
    hash join for large batches: it cannot know the stage is sorted, and it hashes the whole stage
    first, which spills to disk past ``work_mem``. Measured for the weekly rewrite of 1M current
    rows (EXPLAIN ANALYZE, PostgreSQL 15): hash join 12.1 s, merge join (stage sorted on disk)
    10.2 s, index probes 9.1 s. The settings are transaction-local: restored on success, undone by
    the rollback otherwise.
    """
    previous = conn.execute(
        "SELECT current_setting('enable_hashjoin'), current_setting('enable_mergejoin')"
    ).fetchone()
    conn.execute(_SET_JOIN_METHODS, ("off", "off"))
    yield
    conn.execute(_SET_JOIN_METHODS, previous)


def _upsert_current_profiles(conn: psycopg.Connection, prepared: PreparedProfiles) -> int:
    """Current rows inserted or moved forward, from the stage.

    Existing rows move forward only (never to an older as_of; unchanged rows are not touched, so
    no row lock and no WAL for them), then new customers are inserted with a plain INSERT. In
    this order the second statement never re-examines rows the first one wrote; under
    ``_lock_profiles`` no other writer can insert or move a row in between.
    """
    params = {"as_of": prepared.as_of, "v": prepared.model_version}
    if not _any_current_row(conn):
        return conn.execute(_INSERT_CURRENT.format(stage=_STAGE), params).rowcount
    moved = 0
    if _any_row_up_to(conn, prepared.as_of):
        with _primary_key_probes(conn):
            moved = conn.execute(_MOVE_CURRENT.format(stage=_STAGE), params).rowcount
    if moved == prepared.n:  # every customer had a row (a full recompute): none is new
        return moved
    return moved + conn.execute(_INSERT_NEW_CURRENT.format(stage=_STAGE), params).rowcount


# A batch of up to this many customers written with ``few_rows`` (the event update path writes one
# or a few) takes the same statements with the rows as query parameters: no staging table to
# create, copy into and analyze, no savepoint, no planner settings (a few index probes need none).
MAX_PARAMETER_ROWS = 32


def fits_parameters(batch: ProfileBatch) -> bool:
    """Whether ``write_profiles(few_rows=True)`` sends ``batch`` as parameters (no COPY)."""
    return 0 < len(batch) <= MAX_PARAMETER_ROWS


# The rows of a batch sent as parameters, named in ``_parameter_statement``.
_ROWS = "_tf_rows"

# The parts of ``_parameter_statement``, in the order of the staged path's statements.
_PARAMETER_PARTS = (
    ("replaced", _REPLACE_HISTORY),
    ("inserted", _INSERT_NEW_HISTORY),
    ("moved", _MOVE_CURRENT),
    ("added", _INSERT_NEW_CURRENT),
)


@lru_cache(maxsize=MAX_PARAMETER_ROWS)
def _parameter_statement(n_rows: int) -> bytes:
    """The four re-run statements of the staged path (replace changed history rows, insert
    missing ones, move current rows forward, insert new customers) as one statement over
    ``n_rows`` rows of the named parameters of ``_parameter_rows``, rendered once per size. Its one
    answer row: the rows each of the four wrote.

    One statement whose four data-modifying parts all see the snapshot it starts with writes
    what the four write one after the other: each update changes only rows that exist and
    changes no key, each insert adds only rows missing from that snapshot, so none of them finds
    anything other than it would after the one before it. Its parameters are adapted and sent
    once instead of four times (four times cost about a third of the write's client CPU).
    """
    rows = [
        sql.SQL("({}::text, {}::float8[], {}::bytea, {}::int8, {}::int8, {}::text, {}::int8)").format(
            *(sql.Placeholder(f"{column}{i}") for column in "ctednsk")
        )
        for i in range(n_rows)
    ]
    parts = [
        sql.SQL("{} AS ({} RETURNING 1)").format(
            sql.SQL(name), sql.SQL(template).format(stage=sql.SQL(_ROWS))
        )
        for name, template in _PARAMETER_PARTS
    ]
    counts = [sql.SQL("(SELECT count(*) FROM {})").format(sql.SQL(name)) for name, _ in _PARAMETER_PARTS]
    return (
        sql.SQL("WITH {} ({}) AS (VALUES {}), {} SELECT {}")
        .format(
            sql.SQL(_ROWS),
            sql.SQL(_STAGE_COLUMNS),
            sql.SQL(", ").join(rows),
            sql.SQL(", ").join(parts),
            sql.SQL(", ").join(counts),
        )
        .as_bytes(None)
    )


def _parameter_rows(prepared: PreparedProfiles) -> dict[str, Any]:
    """The parameters of ``_parameter_statement(..., prepared.n)`` (at most ``MAX_PARAMETER_ROWS``
    rows): the values of the staging table's columns (``PreparedProfiles.columns``), traits as
    float8[] (Python floats round-trip exactly), the embedding packed as big-endian float4 bytes."""
    ids, cold, known = prepared.ids.to_pylist(), prepared.cold_start.to_pylist(), prepared.n_known_tokens
    params: dict[str, Any] = {}
    for i in range(prepared.n):
        params |= {
            f"c{i}": ids[i],
            f"t{i}": prepared.traits[i].tolist(),
            f"e{i}": prepared.embeddings[i].astype(">f4").tobytes(),
            f"d{i}": int(prepared.dominant[i]),
            f"n{i}": int(prepared.n_events[i]),
            f"s{i}": cold[i],
            f"k{i}": None if known is None else int(known[i]),
        }
    return params


def _write_from_parameters(
    conn: psycopg.Connection, batch: ProfileBatch, *, require_selected_model: bool
) -> WriteReport:
    """Write a small batch with its rows as query parameters (``send_parameter_write``), in two
    round trips inside the caller's transaction."""
    with conn.pipeline():
        pending = send_parameter_write(conn, batch, require_selected_model=require_selected_model)
    return pending.report()


@dataclass(frozen=True)
class PendingWrite:
    """A few-rows write whose statement is queued in pipeline mode (``send_parameter_write``):
    ``report()`` reads its counts once the pipeline has synced."""

    written: psycopg.Cursor[Any]
    counted: psycopg.Cursor[Any] | None
    current: psycopg.Cursor[dict[str, Any]] | None
    customer_ids: list[str]
    as_of: datetime
    model_version: int
    n_customers: int
    started: float
    checked: float

    def report(self) -> WriteReport:
        counts = self.written.fetchone()
        assert counts is not None  # an aggregate's one row
        replaced, inserted, moved, added = (int(count) for count in counts)
        done = time.perf_counter()
        return WriteReport(
            as_of=self.as_of,
            model_version=self.model_version,
            n_customers=self.n_customers,
            history_inserted=inserted,
            history_replaced=replaced,
            profiles_written=moved + added,
            seconds=done - self.started,
            timings={
                "check": round(self.checked - self.started, 4),
                "parameters": round(done - self.checked, 4),
            },
            event_counts=None if self.counted is None else event_counts_of(self.counted),
            current_profiles=None
            if self.current is None
            else current_profiles_of(self.current, self.customer_ids),
        )


def send_parameter_write(
    conn: psycopg.Connection,
    batch: ProfileBatch,
    *,
    require_selected_model: bool,
    count_events: bool = False,
    read_current: bool = False,
) -> PendingWrite:
    """A small batch's write with its rows as query parameters, on ``conn`` in the caller's
    pipeline and transaction: one round trip here, and the write statement queued (it goes out
    with whatever the caller queues after it, e.g. its COMMIT).

    1. The writers' lock (and with ``require_selected_model`` the model-lifecycle lock, then the
       model selected for the batch's date), the history's partitions and the batch's model
       (``prepare_batch``), sent with anything the caller queued before (e.g. its BEGIN) and
       read: the locks are taken first, so what the queries after them find stays true until
       commit, as in the staged path.
    2. The re-run statements of the staged path: replace changed history rows, insert missing
       ones, move current rows forward, insert new customers (exact under ``_lock_profiles``),
       as one statement (``_parameter_statement``), queued; with ``count_events`` the batch's
       stored events per customer after it (``WriteReport.event_counts``) and with
       ``read_current`` its current profiles (``WriteReport.current_profiles``), queued.
    """
    started = time.perf_counter()
    # No nested pipeline block: entering one would first send what the caller queued, alone.
    _lock_profiles(conn)
    selected = None
    if require_selected_model:
        _lock_lifecycle(conn)
        selected = conn.execute(MODEL_VERSION_FOR, (utc(batch.as_of),))
    partitions = send_partitions_query(conn)
    version = batch_version(batch)
    model = send_model_traits_query(conn, version)
    # Reading the last answer sends the queue (a flush, not a sync: the transaction stays open)
    # and reads every answer before it.
    prepared = prepare_batch(conn, batch, model_traits(model, version))
    if selected is not None:
        _refuse_stale(selected_version(selected), prepared)
    ensure_months(conn, [prepared.as_of], listed_partitions(partitions))
    checked = time.perf_counter()
    params = _parameter_rows(prepared) | {"as_of": prepared.as_of, "v": prepared.model_version}
    written = conn.execute(_parameter_statement(prepared.n), params)
    ids = prepared.ids.to_pylist()
    counted = send_event_counts_query(conn, ids) if count_events else None
    current = send_current_profiles_query(conn, ids) if read_current else None
    return PendingWrite(
        written, counted, current, ids, prepared.as_of, prepared.model_version, prepared.n, started, checked
    )


def write_profiles(
    conn: psycopg.Connection,
    batch: ProfileBatch,
    *,
    require_selected_model: bool = False,
    few_rows: bool = False,
) -> WriteReport:
    """Write ``batch`` (inside the caller's transaction); see the module docstring.

    ``require_selected_model``: the batch's model must still be the one ``model_version_for``
    selects for its ``as_of`` once the writers are serialised, else ``StaleModelError`` and
    nothing is written (``_check_selected_model``). For writers that picked the model themselves
    (the daily update); a promotion writes under a model that is not selected until it commits.
    ``few_rows``: a batch of at most ``MAX_PARAMETER_ROWS`` customers is sent as query parameters
    in two round trips (``_write_from_parameters``: the same rows and checks); larger
    ones are staged.
    """
    require_transaction(conn)
    if few_rows and fits_parameters(batch):
        return _write_from_parameters(conn, batch, require_selected_model=require_selected_model)
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
        if require_selected_model:
            _check_selected_model(conn, prepared)
        ensure_months(conn, [prepared.as_of])
        conn.execute("SELECT set_config('work_mem', %s, true)", (WRITE_WORK_MEM,))
        rows_in_range = _rows_in_range(conn, prepared)
        step("check")
        if not rows_in_range:
            report.history_inserted = _copy_history(conn, prepared)
            step("history")
            report.profiles_written = _copy_current_profiles(conn, prepared)
            step("profiles")
        else:
            _stage(conn, prepared)
            step("stage")
            report.history_inserted, report.history_replaced = _upsert_history(conn, prepared)
            step("history")
            report.profiles_written = _upsert_current_profiles(conn, prepared)
            step("profiles")
    report.seconds = time.perf_counter() - started
    report.timings = timings
    return report
