"""The PostgreSQL stages of the benchmark: what the DAG tasks read from and write to the store.

Each stage is a ``stages.StageHook`` on a throw-away schema per workload (dropped at the end):

=================  ============  =============================================================
stage              counts in     what runs (the DAG task it stands for)
=================  ============  =============================================================
``pg_ingest``      load          ``Store.ingest_events`` of every event, in chunks of 1M rows
                                 (the daily ``ingest`` task; untimed for scaling slices)
``pg_read_events`` weekly        ``Store.read_events`` of the training window
                                 (``build_corpus``; ``recompute_profiles`` reads it again)
``pg_save_model``  weekly        ``Store.save_model``: token vectors, components, labels
``pg_promote``     weekly        ``Store.promote(version, profiles=batch)``: every customer's
                                 history + current row, and the switch, in one transaction; in
                                 the steady state of a weekly run (last week's profiles written
                                 untimed first), so every current row is rewritten
``pg_daily_read``  daily         ``customers_with_events`` of the day + ``read_events`` of their
                                 whole history (``select_customers`` / ``update_profiles``)
``pg_daily_write`` daily         ``Store.write_profiles`` of the touched customers
``tf_write``       baseline      ``Store.write_profiles`` of the baseline slice into empty tables
                                 (own schema, emptied untimed before each repeat)
``seed_insert``    baseline      the seed-literal persistence: one ``INSERT`` per profile row
                                 (customer, as_of, model version, traits, embedding), one commit
=================  ============  =============================================================

Throughput is reported in rows of the stage's unit (events, customers, token rows).
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pandas as pd
from stages import StageHook

from traitflow import event_schema
from traitflow.store import Store

INGEST_CHUNK_ROWS = 1_000_000


@dataclass
class _Loaded:
    """The minimal loader result ``Store.ingest_events`` takes (validated canonical events)."""

    events: pd.DataFrame
    rejects: pd.DataFrame = field(default_factory=event_schema.empty_rejects)


# The seed's table: one row per customer with its profile and embedding, written row by row.
_SEED_TABLE = (
    "CREATE TABLE seed_profiles (customer_id text PRIMARY KEY, as_of timestamptz NOT NULL,"
    " model_version integer NOT NULL, traits double precision[] NOT NULL, embedding real[] NOT NULL)"
)
_SEED_INSERT = (
    "INSERT INTO seed_profiles (customer_id, as_of, model_version, traits, embedding)"
    " VALUES (%s, %s, %s, %s, %s)"
)


class PostgresStages:
    """Builds the hooks; one schema per benchmark context (main run, scaling slices, baseline).

    ``url`` None means the embedded server (``traitflow.store``'s default), as in the quickstart.
    """

    def __init__(self, url: str | None = None, *, keep: bool = False) -> None:
        self.url = url
        self.keep = keep
        self.run_id = uuid.uuid4().hex[:8]
        self._stores: dict[str, Store] = {}  # by the context's "pg_key" (ids of dead objects repeat)
        self._ingested: set[str] = set()
        self._baseline: Store | None = None

    # ----------------------------------------------------------------------- bookkeeping

    def _new_store(self, label: str) -> Store:
        store = Store(self.url, f"bench_{self.run_id}_{label}")
        store.upgrade()
        return store

    @staticmethod
    def _key(ctx: Any) -> str:
        return ctx.options.setdefault("pg_key", uuid.uuid4().hex)

    def store_for(self, ctx: Any) -> Store:
        key = self._key(ctx)
        store = self._stores.get(key)
        if store is None:
            store = self._stores[key] = self._new_store(f"w{len(self._stores)}")
        return store

    def close(self) -> None:
        stores = list(self._stores.values()) + ([self._baseline] if self._baseline else [])
        for store in stores:
            try:
                if not self.keep:
                    store.drop_schema()
            finally:
                store.close()
        self._stores.clear()
        self._baseline = None

    def describe(self) -> dict[str, Any]:
        from traitflow.store import mask_url

        store = next(iter(self._stores.values()), None)
        if store is None:
            return {"url": "embedded" if self.url is None else mask_url(self.url)}
        server = store.connection.execute("SHOW server_version").fetchone()
        return {"url": mask_url(store.url), "server_version": server[0] if server else None}

    # ---------------------------------------------------------------------------- stages

    def ingest(self, ctx: Any) -> int:
        store = self.store_for(ctx)
        events = ctx.events
        for start in range(0, len(events), INGEST_CHUNK_ROWS):
            chunk = events.iloc[start : start + INGEST_CHUNK_ROWS]
            report = store.ingest_events(_Loaded(chunk), source=f"bench-{start}", run_id="bench")
            if report.n_rejected:
                raise RuntimeError(f"the store rejected {report.n_rejected} benchmark events")
        self._ingested.add(self._key(ctx))
        return len(events)

    def ensure_ingested(self, ctx: Any) -> None:
        """Untimed set-up of the weekly stages (scaling slices are ingested here)."""
        if self._key(ctx) not in self._ingested:
            self.ingest(ctx)

    def read_events(self, ctx: Any) -> int:
        window = self.store_for(ctx).read_events(end=ctx.trained_through)
        if len(window) != len(ctx.events):
            raise RuntimeError(f"read {len(window)} events back, ingested {len(ctx.events)}")
        return len(window)

    def save_model(self, ctx: Any) -> int:
        self.store_for(ctx).save_model(ctx.model)  # sets ctx.model.version
        return len(ctx.model.tokens)

    def last_week(self, ctx: Any) -> None:
        """Untimed set-up of ``pg_promote``: every customer's profile of the week before.

        A weekly promotion rewrites current rows that exist (the update path, 1.1-1.6x the cost of
        a first load into empty tables, which ``bench_store_writes.py`` measures as ``insert``;
        see ``traitflow.store.profiles``).
        """
        as_of = ctx.weekly_batch.as_of - timedelta(days=7)
        batch = dataclasses.replace(ctx.weekly_batch, model_version=ctx.model.version, as_of=as_of)
        store = self.store_for(ctx)
        # Current rows never move back: a second weekly group on the same schema (the incremental
        # retrain after the full one) first empties them, so that its promotion is the same
        # rewrite of every row from the week before.
        with store.connection.transaction():
            store.connection.execute("TRUNCATE customer_profiles")
        store.write_profiles(batch)

    def promote(self, ctx: Any) -> int:
        batch = dataclasses.replace(ctx.weekly_batch, model_version=ctx.model.version)
        report = self.store_for(ctx).promote(ctx.model.version, profiles=batch)
        assert report is not None
        if "stage" not in report.timings or report.profiles_written != len(batch):
            raise RuntimeError(f"pg_promote did not rewrite every current row: {report.to_dict()}")
        return len(batch)

    def daily_read(self, ctx: Any) -> int:
        store = self.store_for(ctx)
        start, end = ctx.daily_window
        touched = store.customers_with_events(start, end)
        history = store.read_events(end=end, customer_ids=touched)
        return len(history)

    def daily_write(self, ctx: Any) -> int:
        self.store_for(ctx).write_profiles(ctx.daily_batch)
        return len(ctx.daily_batch)

    def _baseline_store(self, ctx: Any) -> Store:
        """A fresh schema holding the model (so ``write_profiles`` accepts the batch) and the
        seed's table: both sides write into empty tables."""
        if self._baseline is None:
            self._baseline = self._new_store("baseline")
            model = dataclasses.replace(ctx.model, version=None)
            version = self._baseline.save_model(model)
            self._baseline.promote(version)
            with self._baseline.connection.transaction():
                self._baseline.connection.execute(_SEED_TABLE)
        return self._baseline

    def _empty_profiles(self, ctx: Any) -> None:
        """Untimed set-up of ``tf_write``: its tables empty again (each repeat writes the same rows)."""
        conn = self._baseline_store(ctx).connection
        with conn.transaction():
            conn.execute("TRUNCATE customer_profiles, customer_profile_history")

    def _empty_seed_table(self, ctx: Any) -> None:
        conn = self._baseline_store(ctx).connection
        with conn.transaction():
            conn.execute("TRUNCATE seed_profiles")

    def tf_write(self, ctx: Any) -> int:
        store = self._baseline_store(ctx)
        version = store.active_model_version()
        batch = dataclasses.replace(ctx.baseline_batch, model_version=version)
        store.write_profiles(batch)
        return len(batch)

    def seed_insert(self, ctx: Any) -> int:
        """One INSERT per profile row in a loop, committed once (the seed's code path)."""
        store = self._baseline_store(ctx)
        rows = ctx.baseline_rows
        as_of, version = ctx.trained_through, store.active_model_version()
        conn = store.connection
        with conn.transaction(), conn.cursor() as cur:
            for customer_id, profile, embedding in zip(
                rows["customer_ids"], rows["profiles"], rows["embeddings"], strict=True
            ):
                cur.execute(
                    _SEED_INSERT, (str(customer_id), as_of, version, profile.tolist(), embedding.tolist())
                )
        return len(rows["customer_ids"])

    # ----------------------------------------------------------------------------- hooks

    def hooks(self) -> list[StageHook]:
        """The Postgres stages as hooks, in the order they run."""
        return [
            StageHook("pg_ingest", "load", self.ingest, units="events"),
            StageHook(
                "pg_read_events", "weekly_start", self.read_events, units="events", setup=self.ensure_ingested
            ),
            StageHook("pg_save_model", "weekly", self.save_model, units="tokens"),
            StageHook("pg_promote", "weekly", self.promote, units="customers", setup=self.last_week),
            StageHook("pg_daily_read", "daily_start", self.daily_read, units="events"),
            StageHook("pg_daily_write", "daily", self.daily_write, units="customers"),
            StageHook("tf_write", "baseline", self.tf_write, units="customers", setup=self._empty_profiles),
            StageHook(
                "seed_insert",
                "baseline",
                self.seed_insert,
                units="customers",
                compare_with="tf_write",
                setup=self._empty_seed_table,
            ),
        ]
