"""``Store``: the one object the pipeline, the DAGs and the CLI use to talk to PostgreSQL.

Transactions: every public write method runs in exactly one transaction; if anything raises
(bad input detected late, a server error, a bug, a killed task) the transaction rolls back and
every table is as it was before the call. Reads run in autocommit (or a short read transaction
when they need a temporary table).

A ``Store`` owns one connection and is not meant to be shared between threads; open one per
task/thread (connections are cheap next to the work they do).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from traitflow import config
from traitflow.model import TraitflowModel
from traitflow.profile_batch import MIN_EVIDENCE_EVENTS, ProfileBatch

from . import ingest as _ingest
from . import migrations as _migrations
from . import models as _models
from . import partitions as _partitions
from . import pipeline_stats as _pipeline_stats
from . import products as _products
from . import profile_shards as _profile_shards
from . import profiles as _profiles
from . import reads as _reads
from . import reports as _reports
from . import serving as _serving
from . import shard_members as _shard_members
from .db import GuardedConnection, Timeouts, connect, mask_url, resolve_url, validate_schema
from .errors import DatabaseConnectionLostError, SchemaNotReadyError
from .ingest import IngestReport, LoadResultLike
from .profiles import WriteReport

_IDLE = psycopg.pq.TransactionStatus.IDLE


class Store:
    """PostgreSQL persistence for events, models, profiles and run reports.

    Parameters
    ----------
    url : database URL (``postgresql://``, ``postgres://`` or ``postgresql+psycopg://``); default
        ``TRAITFLOW_DATABASE_URL``, else the embedded server under ``TRAITFLOW_DATA_DIR``.
    schema : PostgreSQL schema holding the tables; default ``traitflow.config.db_schema()``.
    timeouts : statement/lock timeouts, keepalives and the client deadline of every connection;
        default ``Timeouts.from_env()`` (read at each (re)connect). A frozen or unreachable server
        raises ``DatabaseTimeoutError`` instead of hanging.

    Call ``upgrade()`` once to create/migrate the schema; other methods raise
    ``SchemaNotReadyError`` with instructions if the schema is missing or behind.
    """

    def __init__(
        self, url: str | None = None, schema: str | None = None, *, timeouts: Timeouts | None = None
    ) -> None:
        self.schema = validate_schema(config.db_schema() if schema is None else schema)
        self.url = resolve_url(url)
        self.timeouts = timeouts
        self._conn: GuardedConnection = connect(self.url, self.schema, timeouts=timeouts)
        self._ready = False

    # ------------------------------------------------------------------ lifecycle / plumbing

    def __repr__(self) -> str:
        return f"Store(url={mask_url(self.url)!r}, schema={self.schema!r})"

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if not self._conn.closed:
            self._conn.close()

    @property
    def connection(self) -> psycopg.Connection:
        """The underlying autocommit connection (search_path = schema), for ad-hoc SQL."""
        return self._live()

    def _live(self) -> psycopg.Connection:
        # Reconnect after a server restart or a dropped connection instead of failing forever.
        # An idle connection (no transaction open, so nothing can be lost by replacing it) is also
        # checked for a server that closed it meanwhile, e.g. a restart while the Store sat idle,
        # so the first call after a restart does not fail. The check is a select()
        # with timeout 0 on the socket (GuardedConnection.peer_hung_up), no round trip: a few
        # microseconds per call, where a "SELECT 1" ping costs a round trip on every call and a
        # ping after N idle seconds still misses a restart shorter than N. Retrying a failed first
        # statement instead would need every call to know where its transaction starts.
        conn = self._conn
        # pgconn.transaction_status, not conn.info's: no object built per call.
        if conn.closed or conn.broken or (conn.pgconn.transaction_status == _IDLE and conn.peer_hung_up()):
            conn.close()
            self._conn = connect(self.url, self.schema, timeouts=self.timeouts)
        return self._conn

    def upgrade(self, target: int | None = None) -> list[int]:
        """Create the schema and apply pending migrations; returns the versions applied (idempotent).

        ``target``: stop after that version (a schema as an older release left it, for testing
        later migrations on its data); the store is not ready for use until fully upgraded.
        """
        applied = _migrations.upgrade(self._live(), self.schema, target)
        self._ready = target is None or target >= _migrations.latest_version()
        return applied

    def schema_version(self) -> int:
        """Highest applied migration (0 if the schema is not initialised)."""
        return max(_migrations.applied_versions(self._live(), self.schema), default=0)

    def _ensure_ready(self) -> psycopg.Connection:
        conn = self._live()
        if not self._ready:
            pending = _migrations.pending_migrations(conn, self.schema)
            if pending:
                raise SchemaNotReadyError(
                    f"schema {self.schema!r} at {mask_url(self.url)} needs migrations "
                    f"{[m.version for m in pending]}: run `traitflow db upgrade` (or Store.upgrade())"
                )
            self._ready = True
        return conn

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection]:
        conn = self._ensure_ready()
        committing = False
        try:
            with conn.transaction():
                yield conn
                committing = True  # the body is done: leaving the block sends COMMIT
        except DatabaseConnectionLostError as exc:
            if not committing:
                raise
            raise DatabaseConnectionLostError(exc.target, exc.reason, during_commit=True) from None

    @contextmanager
    def _pipelined_transaction(self) -> Iterator[psycopg.Connection]:
        """One transaction in pipeline mode: BEGIN goes out with the body's first statements and
        COMMIT with its last, two round trips fewer than ``_transaction``. A body that only
        queues statements is one round trip; each result it reads inside the block is one more
        (results it queued are there after the block). A failed statement leaves the
        transaction aborted: it is rolled back before the error is raised."""
        conn = self._ensure_ready()
        committing = False
        try:
            with conn.pipeline():
                conn.execute("BEGIN")
                yield conn
                committing = True
                conn.execute("COMMIT")
        except DatabaseConnectionLostError as exc:
            if not committing:
                raise
            raise DatabaseConnectionLostError(exc.target, exc.reason, during_commit=True) from None
        except BaseException:
            if not conn.broken and conn.pgconn.transaction_status != _IDLE:
                conn.execute("ROLLBACK")
            raise

    # ---------------------------------------------------------------------------- ingestion

    def ingest_events(
        self,
        result: LoadResultLike,
        source: str,
        run_id: str,
        file_sha256: str | None = None,
        *,
        few_rows: bool = False,
        synchronous_commit: bool = True,
    ) -> IngestReport:
        """Insert a loader result's events and rejects; re-ingesting adds nothing twice.

        ``result`` has ``events`` (canonical frame) and ``rejects`` (``traitflow.event_schema``
        reject columns), and optionally ``products`` (name counts, ``schema.PRODUCT_NAME_COLUMNS``)
        whose most frequent name per product goes to ``product_names`` in the same transaction.
        With ``file_sha256`` the input is also recorded in ``ingested_files``. An event whose key
        is stored (or repeated in ``events``) with another category, price or session id is
        rejected as ``conflicting_duplicate`` under its row number: ``result.event_row_numbers``
        when present (the loader sets them), else its position in ``events`` from 1.
        ``few_rows``: a result of a few rows (``ingest.MAX_PARAMETER_ROWS``) without product
        names or ``file_sha256`` is sent as query parameters instead of staged, with BEGIN and
        COMMIT in one round trip (the same rows written; ``_pipelined_transaction``).
        ``synchronous_commit=False``: the commit returns before its WAL record is flushed (no
        fsync wait), so the rows are visible at once but not yet durable. The caller must not
        acknowledge them before a later synchronous commit of a transaction that changed rows
        has returned (its flush covers every WAL record before it), or ``flush_wal()``.
        """
        if few_rows and file_sha256 is None:
            batch = _ingest.parameter_batch(result, source, run_id)  # checked: nothing sent yet
            if batch is not None:
                with self._pipelined_transaction() as conn:
                    sent = _ingest.send_parameter_batch(conn, batch, synchronous_commit)
                return sent.report()
        with self._transaction() as conn:
            return _ingest.ingest_results(
                conn,
                [result],
                source,
                run_id,
                file_sha256,
                few_rows=few_rows,
                synchronous_commit=synchronous_commit,
            )

    def ingest_and_read_histories(
        self,
        result: LoadResultLike,
        source: str,
        run_id: str,
        customer_ids: Sequence[str],
        *,
        synchronous_commit: bool = True,
    ) -> tuple[IngestReport, _reads.CustomerHistories]:
        """``ingest_events(few_rows=True)``, then every stored event of ``customer_ids`` (a few:
        ``customer_histories``), the stored and the just ingested ones.

        For a result that goes as query parameters the read is queued in the ingest's
        transaction after its statements, so both take one round trip: the read's snapshot
        holds the transaction's own rows and what others committed before it, as a read after
        the commit would (less what others commit in between, which a later read would add).
        """
        batch = _ingest.parameter_batch(result, source, run_id)  # checked: nothing sent yet
        if batch is not None:
            with self._pipelined_transaction() as conn:
                sent = _ingest.send_parameter_batch(conn, batch, synchronous_commit)
                read = _reads.send_customer_histories_query(conn, customer_ids)
            return sent.report(), _reads.customer_histories_of(read)
        report = self.ingest_events(
            result, source, run_id, few_rows=True, synchronous_commit=synchronous_commit
        )
        return report, self.customer_histories(customer_ids)

    def flush_wal(self) -> None:
        """Make every transaction committed before this call durable, asynchronous ones included.

        One autocommit statement that writes a transactional WAL record (an empty logical
        decoding message, ``pg_logical_emit_message(true, ...)``; it also takes a transaction
        id): PostgreSQL commits synchronously (the session's ``synchronous_commit``, on by
        default) only a transaction that has an id and wrote WAL (an id alone commits
        asynchronously), and then returns only once the WAL up to its commit record, and so
        every record before it, is flushed. One round trip and one WAL flush; nothing stored.
        """
        self._ensure_ready().execute("SELECT pg_logical_emit_message(true, 'traitflow.flush', '')")

    def ingest_file(
        self,
        path: str | Path,
        mapping: Any,
        run_id: str,
        *,
        source: str | None = None,
        force: bool = False,
        chunksize: int = _ingest.DEFAULT_CHUNKSIZE,
        max_reject_share: float | None = None,
    ) -> IngestReport:
        """Stream a CSV/Parquet file through ``traitflow.events.iter_events`` into the store.

        ``mapping``: a ``ColumnMapping`` or a preset name / mapping file path (``load_mapping``).
        ``source`` defaults to the file's absolute path. All chunks go in one transaction, and the
        file's SHA-256 is recorded with them; a file already recorded is skipped without reading
        (``report.skipped``) unless ``force`` (which re-reads it and still adds nothing twice).
        A file with more than ``max_reject_share`` of its rows rejected (default
        ``events.DEFAULT_MAX_REJECT_SHARE``) raises ``events.MostlyRejectedError`` after its last
        chunk, which rolls the transaction back: nothing of it is stored, nor recorded as ingested.
        """
        from traitflow import events as ev  # imported lazily: optional for store-only use

        if isinstance(mapping, str | Path):
            mapping = ev.load_mapping(mapping)
        file = Path(path)
        sha = _ingest.file_sha256(file)
        source = source or str(file.resolve())
        with self._transaction() as conn:
            _ingest.lock_file(conn, sha)
            if not force and _ingest.is_file_ingested(conn, sha):
                return IngestReport(source=source, run_id=run_id, file_sha256=sha, skipped=True)
            share = ev.DEFAULT_MAX_REJECT_SHARE if max_reject_share is None else max_reject_share
            chunks = ev.iter_events(file, mapping, source=source, chunksize=chunksize, max_reject_share=share)
            return _ingest.ingest_results(conn, chunks, source, run_id, sha)

    def is_file_ingested(self, sha256: str) -> bool:
        return _ingest.is_file_ingested(self._ensure_ready(), sha256)

    def ingested_sources(self, sources: Sequence[str]) -> set[str]:
        """The subset of ``sources`` (file paths as given to ``ingest_file``) already ingested."""
        return _ingest.ingested_sources(self._ensure_ready(), list(sources))

    # -------------------------------------------------------------------------------- events

    def read_events(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        customer_ids: Sequence[str] | np.ndarray | None = None,
        *,
        snapshot: str | None = None,
        exclude_sources: Sequence[str] | None = None,
        shard: _shard_members.ShardRef | None = None,
    ) -> pd.DataFrame:
        """Canonical events with ``start <= event_time < end`` (end exclusive), ordered by customer, time.

        ``snapshot`` (from ``event_snapshot``): only events committed when it was taken.
        ``exclude_sources``: leave out events ingested from these sources.
        ``shard``: only the events of that shard's customers (``plan_shards``), instead of
        ``customer_ids``.
        """
        # One statement needs no transaction (a round trip each for BEGIN and COMMIT).
        with (
            self._transaction()
            if _reads.stages_ids(customer_ids)
            else nullcontext(self._ensure_ready()) as conn
        ):
            return _reads.read_events(
                conn,
                start,
                end,
                customer_ids,
                snapshot=snapshot,
                exclude_sources=exclude_sources,
                shard=shard,
            )

    def customer_histories(self, customer_ids: Sequence[str]) -> _reads.CustomerHistories:
        """Every stored event of a few customers, as plain columns (``event_reads.customer_histories``)."""
        return _reads.customer_histories(self._ensure_ready(), customer_ids)

    def event_counts(self, customer_ids: Sequence[str]) -> dict[str, int]:
        """Stored events per customer of ``customer_ids`` (customers without any left out)."""
        return _reads.event_counts(self._ensure_ready(), customer_ids)

    def event_snapshot(self) -> str:
        """What is committed now, as a ``pg_snapshot`` text: pins later reads to these events."""
        return _reads.event_snapshot(self._ensure_ready())

    def customers_with_events(
        self,
        start: datetime | None,
        end: datetime | None,
        *,
        delivered_in: Sequence[str] | None = None,
        exclude_sources: Sequence[str] | None = None,
        snapshot: str | None = None,
    ) -> np.ndarray:
        """Sorted distinct customer ids with events in ``[start, end)``, plus those with an event
        before ``end`` ingested from a source in ``delivered_in`` (late events)."""
        return _reads.customers_with_events(
            self._ensure_ready(),
            start,
            end,
            delivered_in=delivered_in,
            exclude_sources=exclude_sources,
            snapshot=snapshot,
        )

    def reject_counts(self, source: str) -> dict[str, int]:
        """``{reason: rows}`` of the rejects recorded for ``source`` (a file's path as ingested)."""
        return _reads.reject_counts(self._ensure_ready(), source)

    def rejects_of(self, source: str, reason: str | None = None) -> list[tuple[int, str]]:
        """``(row_number, reason)`` of the rejects recorded for ``source``, by row number."""
        return _reads.rejected_rows(self._ensure_ready(), source, reason)

    def product_names(self, product_ids: Sequence[str] | np.ndarray) -> dict[str, str]:
        """``{product_id: name}`` for those of ``product_ids`` with a stored name (from ingestion)."""
        return _products.product_names(self._ensure_ready(), product_ids)

    def customer_product_ids(self, customer_id: str) -> list[str]:
        """The distinct products ``customer_id`` has stored events on, sorted."""
        return _products.customer_product_ids(self._ensure_ready(), customer_id)

    # -------------------------------------------------------------------------------- models

    def save_model(self, model: TraitflowModel) -> int:
        """Save ``model`` as a new staging version; sets and returns ``model.version``."""
        with self._transaction() as conn:
            version = _models.save_model(conn, model)
        model.version = version
        return version

    def load_model(self, version: int) -> TraitflowModel:
        """The saved model, bit-identical arrays (one read transaction: a consistent snapshot)."""
        with self._transaction() as conn:
            return _models.load_model(conn, version)

    def promote(self, version: int, profiles: ProfileBatch | None = None) -> WriteReport | None:
        """Make ``version`` the active model (previous active -> retired), atomically.

        Promoting the active model again is a no-op. With ``profiles``, that batch is written in
        the same transaction, so consumers never see new profiles without their model or vice versa;
        the write's report is returned (None without ``profiles``).
        """
        with self._transaction() as conn:
            report = _profiles.write_profiles(conn, profiles) if profiles is not None else None
            _models.promote(conn, version)
        _active_model_changed(self)
        return report

    def publish(
        self,
        model: TraitflowModel,
        profiles: ProfileBatch,
        *,
        drift: dict[str, Any] | None = None,
        run_key: str | None = None,
    ) -> int:
        """Save ``model``, write ``profiles`` under it and make it active, in one transaction.

        The weekly promotion in one step: if any part fails (a refused batch, a lost connection),
        nothing is left behind, not even a staging version, so a retry starts from the same state.
        ``drift`` is recorded with the model. Sets ``model.version`` and ``profiles.model_version``;
        returns the version.

        ``run_key`` (e.g. a fingerprint of the candidate, ``traitflow.jobs.candidate_key``) makes
        the call idempotent: when a version was already published under that key, nothing is
        written, no status changes (even if a later model has been promoted since), and that
        version is returned. A retry after a COMMIT whose success was never reported is safe.
        """
        with self._transaction() as conn:
            if run_key is not None:
                _models._lock_lifecycle(conn)  # a concurrent publish of the same key waits, then finds it
                existing = _models.published_version(conn, run_key)
                if existing is not None:
                    model.version = profiles.model_version = existing
                    return existing
            version = _models.save_model(conn, model)
            if run_key is not None:
                _models.set_run_key(conn, version, run_key)
            if drift is not None:
                _models.update_model_metadata(conn, version, drift=drift)
            previous, profiles.model_version = profiles.model_version, version
            try:
                _profiles.write_profiles(conn, profiles)
                _models.promote(conn, version)
            except BaseException:
                profiles.model_version = previous  # the batch as it was, like the database
                raise
        _active_model_changed(self)
        model.version = version
        return version

    def record_rejected(self, model: TraitflowModel, reason: str, *, run_key: str | None = None) -> int:
        """Save ``model`` as a version with status ``rejected`` and ``reason``, in one transaction.

        For a candidate that failed the quality gate: its row (metrics included) shows that the
        gate worked, and ``promote`` refuses it. Every older ``staging`` version is rejected as
        superseded by it in the same transaction (``models.supersede_staging``; listed by
        ``superseded_by``). ``run_key`` makes the call idempotent like ``publish``: a version
        already stored under that key is returned and nothing is written. Sets ``model.version``;
        returns the version.
        """
        with self._transaction() as conn:
            if run_key is not None:
                _models._lock_lifecycle(conn)  # a concurrent call with the same key waits, then finds it
                existing = _models.published_version(conn, run_key)
                if existing is not None:
                    model.version = existing
                    return existing
            version = _models.save_model(conn, model)
            if run_key is not None:
                _models.set_run_key(conn, version, run_key)
            _models.reject_model(conn, version, reason)
            _models.supersede_staging(conn, version)
        model.version = version
        return version

    def reject_model(self, version: int, reason: str) -> None:
        """Mark a staging model as rejected (e.g. failed the quality gate), with the reason."""
        with self._transaction() as conn:
            _models.reject_model(conn, version, reason)

    def superseded_by(self, version: int) -> list[int]:
        """The staging versions rejected because ``version`` was published after them
        (``publish_candidate``, ``record_rejected``), ascending."""
        return _models.superseded_by(self._ensure_ready(), version)

    def active_model_version(self) -> int | None:
        return _models.active_model_version(self._ensure_ready())

    def model_version_for(self, as_of: datetime) -> int | None:
        """Newest promoted (active or retired) model with ``trained_through <= as_of``."""
        return _models.model_version_for(self._ensure_ready(), as_of)

    def update_model_metadata(
        self,
        version: int,
        *,
        metrics: dict[str, Any] | None = None,
        drift: dict[str, Any] | None = None,
        trait_match: dict[str, Any] | None = None,
    ) -> None:
        """Replace the given JSON fields of a model version (None leaves a field unchanged)."""
        with self._transaction() as conn:
            _models.update_model_metadata(
                conn, version, metrics=metrics, drift=drift, trait_match=trait_match
            )

    def model_versions(self) -> pd.DataFrame:
        """All model versions with status and metadata (no arrays), newest first."""
        return _models.list_models(self._ensure_ready())

    # ------------------------------------------------------------------------------ profiles

    def write_profiles(
        self,
        batch: ProfileBatch,
        *,
        require_selected_model: bool = False,
        few_rows: bool = False,
        count_events: bool = False,
        read_current: bool = False,
    ) -> WriteReport:
        """Write a batch: history replaced per (customer, as_of); current rows only move forward.

        ``require_selected_model``: raise ``StaleModelError`` (writing nothing) when the batch's
        model is no longer the one ``model_version_for(batch.as_of)`` selects, checked under the
        writers' locks (a newer model was promoted since the batch's model was picked).
        ``few_rows``: a batch of a few customers (``profiles.MAX_PARAMETER_ROWS``) is sent as query
        parameters instead of staged, in two round trips with BEGIN and COMMIT (the same rows
        written; ``profiles.send_parameter_write``).
        ``count_events``: the report's ``event_counts`` holds the batch's stored events per
        customer, counted in the write's transaction after it: an event committed before that
        count is in it, one committed after it was stored after this write took the writers' lock.
        ``read_current``: the report's ``current_profiles`` holds ``current_profiles`` of the
        batch's customers, read in the write's transaction after it (what is current at commit).
        """
        if few_rows and _profiles.fits_parameters(batch):
            with self._pipelined_transaction() as conn:
                pending = _profiles.send_parameter_write(
                    conn,
                    batch,
                    require_selected_model=require_selected_model,
                    count_events=count_events,
                    read_current=read_current,
                )
            return pending.report()
        customer_ids = [str(c) for c in batch.customer_ids]
        with self._transaction() as conn:
            report = _profiles.write_profiles(
                conn, batch, require_selected_model=require_selected_model, few_rows=few_rows
            )
            if count_events:
                report.event_counts = _reads.event_counts(conn, customer_ids)
            if read_current:
                report.current_profiles = _reads.current_profiles(conn, customer_ids)
            return report

    # ------------------------------------------------------------------- sharded profiles

    def plan_shards(
        self, run_key: str, n_shards: int, customer_ids: Sequence[str] | np.ndarray
    ) -> _shard_members.ShardMembership:
        """Assign ``customer_ids`` to ``n_shards`` customer shards (``traitflow.shards``) for run
        ``run_key`` (``shard_members``), in one transaction that first deletes the run's earlier
        plan and staged shards (computed from it) and those of runs abandoned ``STALE_AFTER`` ago.
        Returns the new plan's id, for ``shard_customers``, ``read_events(shard=...)`` and
        ``stage_profiles``, and its shard sizes."""
        with self._transaction() as conn:
            _profile_shards.clear_staged(conn, run_key)
            return _shard_members.write_plan(conn, run_key, n_shards, np.asarray(customer_ids, dtype=object))

    def shard_customers(self, plan_id: int, shard: int | None = None) -> np.ndarray:
        """Customer ids of ``shard`` of plan ``plan_id`` (None: of every shard), in byte order."""
        return _shard_members.shard_customers(self._ensure_ready(), plan_id, shard)

    def stage_profiles(
        self, run_key: str, shard: int, n_shards: int, batch: ProfileBatch, *, plan_id: int | None = None
    ) -> None:
        """Stage customer shard ``shard`` of ``n_shards`` of run ``run_key`` (``profile_shards``),
        replacing an earlier attempt of the same shard; the profile tables are not touched.

        ``plan_id``: the shard plan the batch was computed from; ``PlanNotFoundError`` (nothing
        staged) when it is no longer the run's plan (a retried plan replaced it)."""
        with self._transaction() as conn:
            if plan_id is not None:
                _shard_members.lock_plan(conn, plan_id, run_key, n_shards)
            _profile_shards.stage_shard(conn, run_key, shard, n_shards, batch)

    def discard_staged(self, run_key: str) -> None:
        """Delete the run's staged shards and shard plan (and stale ones of abandoned runs), in
        one transaction."""
        with self._transaction() as conn:
            _profile_shards.clear_staged(conn, run_key)

    def staged_shards(self, run_key: str) -> list[int]:
        """Shard numbers staged under ``run_key``, ascending."""
        return _profile_shards.staged_shards(self._ensure_ready(), run_key)

    def write_staged_profiles(
        self,
        run_key: str,
        n_shards: int,
        as_of: datetime,
        model_version: int,
        *,
        require_selected_model: bool = False,
    ) -> tuple[ProfileBatch, WriteReport]:
        """Write the run's ``n_shards`` staged batches as one batch (``write_profiles``) and delete
        them and the run's shard plan, in one transaction; returns the batch written (customer id
        order) and the report.

        ``ShardsNotReadyError`` when a shard is missing or was staged for another as_of, model or
        shard count; ``StaleModelError`` as ``write_profiles``. Either way nothing changes.
        """
        with self._transaction() as conn:
            batch = _profile_shards.load_staged(conn, run_key, n_shards, as_of, model_version)
            report = _profiles.write_profiles(conn, batch, require_selected_model=require_selected_model)
            _profile_shards.clear_staged(conn, run_key)
        return batch, report

    def save_candidate(self, model: TraitflowModel, *, run_key: str) -> int:
        """Save ``model`` as a ``staging`` version under ``run_key`` (e.g. the candidate's
        fingerprint, ``traitflow.jobs.candidate_key``), in one transaction; returns the version.

        The weekly candidate, saved before its profiles are computed: the shard tasks load it by
        version from the database, on any machine, and ``publish_candidate`` promotes it. A
        staging version is never selected for profiles (``model_version_for``). Idempotent: when
        a version is already stored under ``run_key`` (a retried plan task, whatever happened to
        the version since), nothing is written and that version is returned. Sets ``model.version``.
        """
        with self._transaction() as conn:
            _models._lock_lifecycle(conn)  # a concurrent call with the same key waits, then finds it
            version = _models.published_version(conn, run_key)
            if version is None:
                version = _models.save_model(conn, model)
                _models.set_run_key(conn, version, run_key)
        model.version = version
        return version

    def publish_candidate(
        self,
        version: int,
        staged_key: str,
        n_shards: int,
        as_of: datetime,
        *,
        metrics: dict[str, Any] | None = None,
        drift: dict[str, Any] | None = None,
    ) -> int:
        """Promote the staging ``version`` (``save_candidate``) with the profiles of the
        ``n_shards`` batches staged for it under ``staged_key``, deleting them and the run's shard
        plan, all in one transaction; returns the number of profiles written.

        ``metrics`` (top-level keys set, the others kept) and ``drift`` are recorded with the
        version in the same transaction. ``ShardsNotReadyError`` when a shard is missing or was
        staged for another as_of, model or shard count: nothing changes. Every older ``staging``
        version is rejected as superseded by ``version`` in the same transaction
        (``models.supersede_staging``; listed by ``superseded_by``).

        ``ModelRejectedError``, nothing changed, when ``version`` is ``rejected`` (superseded by
        a newer candidate published first, or rejected by hand): no retry can publish it.
        Idempotent: once the version was promoted (active, or retired by a later promotion
        since), a retry writes no profile and changes no status, deletes what shards re-run after
        the commit staged, and returns the version's profile count as of ``as_of``.
        """
        with self._transaction() as conn:
            _models._lock_lifecycle(conn)
            model = _models.model_row(conn, version, lock=True)
            # Before the staged shards are read: a superseded run's shards may be gone already.
            _models.refuse_rejected(model)
            if model["promoted_at"] is not None:
                _profile_shards.clear_staged(conn, staged_key)  # shards re-run after the commit
                row = conn.execute(
                    "SELECT count(*) FROM customer_profile_history WHERE model_version = %s AND as_of = %s",
                    (int(version), as_of),
                ).fetchone()
                return int(row[0]) if row else 0
            profiles = _profile_shards.load_staged(conn, staged_key, n_shards, as_of, version)
            if metrics:
                _models.merge_metrics(conn, version, metrics)
            if drift is not None:
                _models.update_model_metadata(conn, version, drift=drift)
            _profiles.write_profiles(conn, profiles)
            _models.promote(conn, version)
            _models.supersede_staging(conn, version)
            _profile_shards.clear_staged(conn, staged_key)
        _active_model_changed(self)
        return len(profiles)

    def current_profile(self, customer_id: str) -> dict[str, Any] | None:
        return _reads.current_profile(self._ensure_ready(), customer_id)

    def current_profiles(self, customer_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """``current_profile`` of each customer (None: never profiled), read in one query."""
        return _reads.current_profiles(self._ensure_ready(), list(customer_ids))

    def profile_history(self, customer_id: str) -> pd.DataFrame:
        return _reads.profile_history(self._ensure_ready(), customer_id)

    def newest_event_time(self) -> datetime | None:
        """Time of the newest stored event (None while there are none)."""
        return _reads.newest_event_time(self._ensure_ready())

    def latest_profile_as_of(self) -> datetime | None:
        """Newest ``as_of`` among current profiles (None before the first profile write)."""
        return _reads.latest_profile_as_of(self._ensure_ready())

    def stale_profiles(self, before: datetime) -> _reads.StaleProfiles:
        """Customers with events before ``before`` that their current profile does not include."""
        return _reads.stale_profiles(self._ensure_ready(), before)

    def count_profiles_not_at(self, as_of: datetime, model_version: int) -> int:
        """Current profiles not computed as of ``as_of`` under ``model_version`` (0: all are)."""
        return _reads.count_profiles_not_at(self._ensure_ready(), as_of, model_version)

    def top_customers(
        self,
        trait_id: int,
        n: int = 10,
        model_version: int | None = None,
        min_events: int = MIN_EVIDENCE_EVENTS,
    ) -> pd.DataFrame:
        return _reads.top_customers(self._ensure_ready(), trait_id, n, model_version, min_events)

    def traits(self, model_version: int | None = None) -> pd.DataFrame:
        return _reads.traits(self._ensure_ready(), model_version)

    def similar_customers(
        self, customer_id: str, n: int = 10, min_events: int = MIN_EVIDENCE_EVENTS
    ) -> pd.DataFrame:
        return _reads.similar_customers(self._ensure_ready(), customer_id, n, min_events)

    def trait_labels(self, model_versions: Sequence[int]) -> dict[int, dict[int, str]]:
        """``{model_version: {trait_id: label}}`` for some model versions (``{}`` for an unknown one)."""
        return _serving.trait_labels(self._ensure_ready(), model_versions)

    def trait_matches(self) -> dict[int, dict[str, Any] | None]:
        """``{model_version: trait_match}`` of every model version (None where none was recorded)."""
        return _serving.trait_matches(self._ensure_ready())

    def labelled_profile_history(self, customer_id: str) -> list[_serving.LabelledHistoryEntry]:
        """``profile_history`` as typed entries with the trait labels of each entry's model."""
        return _serving.labelled_history(self._ensure_ready(), customer_id)

    # ------------------------------------------------------------------- history partitions

    def ensure_history_partitions(
        self, through: datetime, months_ahead: int = _partitions.DEFAULT_MONTHS_AHEAD
    ) -> list[str]:
        """Create the missing monthly partitions of the profile history for ``through``'s month
        and the ``months_ahead`` after it (idempotent); returns the names created."""
        with self._transaction() as conn:
            _profiles._lock_profiles(conn)  # never in the middle of a profile write
            return _partitions.ensure_history_partitions(conn, through, months_ahead)

    def drop_expired_history(
        self, retention_months: int, as_of: datetime
    ) -> list[_partitions.DroppedPartition]:
        """Drop the months of profile history older than ``retention_months`` months before
        ``as_of``'s month (whole partitions; 0 keeps everything); returns what was dropped."""
        with self._transaction() as conn:
            _profiles._lock_profiles(conn)
            return _partitions.drop_expired_history(conn, retention_months, as_of)

    def maintain_history(
        self,
        as_of: datetime,
        retention_months: int,
        months_ahead: int = _partitions.DEFAULT_MONTHS_AHEAD,
        *,
        report: tuple[str, str] | None = None,
    ) -> _partitions.HistoryMaintenance:
        """Create months ahead and apply retention at ``as_of`` in one transaction; with
        ``report`` (kind, run_key), the outcome is stored as that run report's ``history`` key in
        the same transaction, so a dropped month is never left unrecorded."""
        with self._transaction() as conn:
            _profiles._lock_profiles(conn)
            done = _partitions.maintain_history(conn, as_of, retention_months, months_ahead)
            if report is not None:
                _reports.merge_run_report(conn, report[0], report[1], {"history": done.to_dict()})
        return done

    # ------------------------------------------------------------------------------- reports

    def write_run_report(self, kind: str, run_key: str, report: dict[str, Any]) -> None:
        """Store a run report; the same (kind, run_key) replaces the previous one."""
        with self._transaction() as conn:
            _reports.write_run_report(conn, kind, run_key, report)

    def run_reports(self, kind: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        return _reports.run_reports(self._ensure_ready(), kind, limit)

    # ------------------------------------------------------------------------- housekeeping

    def pipeline_stats(self) -> _pipeline_stats.PipelineStats:
        """Stored events, rejects by reason, current profiles, active model, last retrain (one snapshot)."""
        return _pipeline_stats.pipeline_stats(self._ensure_ready())

    def table_counts(self) -> dict[str, int]:
        return _reads.table_counts(self._ensure_ready())

    def table_checksums(
        self, tables: Sequence[str] | None = None, *, without: Sequence[str] = ()
    ) -> dict[str, str]:
        """md5 over each table's row hashes in a canonical order: equal checksums = identical
        contents.

        tables : the tables to read (default: every table, ``reads.TABLES``); a table the schema
            does not have is left out of the result
        without : columns left out of the rows of every table that has them, e.g.
            ``("updated_at",)`` to compare the profiles of two schemas written at other times

        Meant for tests, audits ("re-running this date changed nothing") and benchmarks; it reads
        every row. Each row is hashed first, so the aggregated text is 32 bytes per row, far below
        PostgreSQL's 1 GiB limit on one text value (the rows' own text passes it at about 1M
        current profiles).
        """
        conn = self._ensure_ready()
        out: dict[str, str] = {}
        with conn.transaction():  # one snapshot for all tables
            for table in _reads.TABLES if tables is None else tables:
                # A schema held at an older version (migration tests) lacks the later tables.
                if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,):
                    continue
                columns = [
                    name
                    for (name,) in conn.execute(
                        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s)"
                        " AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                        (table,),
                    ).fetchall()
                    if name not in without
                ]
                row = conn.execute(
                    sql.SQL(
                        "SELECT md5(coalesce(string_agg(h, '' ORDER BY h COLLATE \"C\"), ''))"
                        " FROM (SELECT md5(ROW({})::text) AS h FROM {} t) rows"
                    ).format(
                        sql.SQL(", ").join(sql.Identifier("t", name) for name in columns),
                        sql.Identifier(table),
                    )
                ).fetchone()
                out[table] = str(row[0]) if row else ""
        return out

    def drop_schema(self) -> None:
        """Drop the whole schema and everything in it (tests, throw-away environments)."""
        conn = self._live()
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema)))
        self._ready = False

    # --------------------------------------------------------------------- charts (serving)

    def trait_size_history(self, max_times: int = 90) -> _serving.TraitSizeHistory:
        """Trait sizes (customers per dominant trait) at the newest ``max_times`` profile times."""
        return _serving.trait_size_history(self._ensure_ready(), max_times)

    def model_quality(self) -> list[_serving.ModelQuality]:
        """Held-out hit rate and drift of every model version with the thresholds, oldest first."""
        return _serving.model_quality(self._ensure_ready())

    def profile_sample(self, model_version: int | None = None, limit: int = 500) -> _serving.ProfileSample:
        """Current profiles of a deterministic sample of a model's customers (default: active model)."""
        return _serving.profile_sample(self._ensure_ready(), model_version, limit)


def _active_model_changed(store: Store) -> None:
    """After a promotion commits: the API's profile cache (``traitflow.profile_cache``, when
    configured) starts a new generation, so its readers look the active version up again."""
    from traitflow.profile_cache import profiles_changed  # imports no Store code at top level

    profiles_changed(store)
