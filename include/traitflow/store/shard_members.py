"""Shard membership of a sharded profile run (tables ``shard_plans`` and ``shard_members``).

The run's plan task assigns its customers to shards once (``write_plan``: ``traitflow.shards``
over the ids, one COPY of ``(plan_id, shard, customer_id)``); each shard task reads its own
customers (``shard_customers``) and their events (``traitflow.store.event_reads.read_events``
with a ``ShardRef``) by joining on the membership. The commit deletes the run's plan with its
staged batches (``profile_shards.clear_staged``, ``delete_plans``), in the commit's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
from psycopg import sql

from traitflow.shards import check_n_shards, shards_of

from . import copybin
from ._util import copy_in, copy_out_csv, require_transaction
from .errors import StoreInputError


class PlanNotFoundError(StoreInputError):
    """A shard's plan is gone: replaced by a retried plan, or committed (deleted with its run)."""


@dataclass(frozen=True)
class ShardRef:
    """Shard ``shard`` of the membership written under ``plan_id`` (``write_plan``)."""

    plan_id: int
    shard: int


@dataclass(frozen=True)
class ShardMembership:
    """A written plan: its id and the number of customers of each shard (index = shard)."""

    plan_id: int
    shard_sizes: tuple[int, ...]


def write_plan(
    conn: psycopg.Connection, run_key: str, n_shards: int, customer_ids: np.ndarray
) -> ShardMembership:
    """Replace the run's plan by the shards of ``customer_ids`` (distinct ids), inside the
    caller's transaction; the caller deletes the run's earlier plan and staged batches first
    (``profile_shards.clear_staged``)."""
    require_transaction(conn)
    n_shards = check_n_shards(n_shards)
    ids = pd.unique(np.asarray(customer_ids, dtype=object))
    shards = shards_of(ids, n_shards)
    # Rows in (shard, id) order when the ids come sorted (they come from an ORDER BY): the
    # primary key then grows at one end per shard instead of taking random inserts.
    order = np.argsort(shards, kind="stable")
    ids, shards = ids[order], shards[order]
    row = conn.execute(
        "INSERT INTO shard_plans (run_key, n_shards) VALUES (%s, %s) RETURNING plan_id", (run_key, n_shards)
    ).fetchone()
    assert row is not None
    plan_id = int(row[0])
    copy_in(
        conn,
        "COPY shard_members (plan_id, shard, customer_id) FROM STDIN (FORMAT binary)",
        [
            copybin.int8(np.full(len(ids), plan_id, dtype=np.int64)),
            copybin.int4(shards),
            copybin.text(pa.array(ids, pa.large_string())),
        ],
    )
    sizes = np.bincount(shards, minlength=n_shards)
    return ShardMembership(plan_id, tuple(int(n) for n in sizes))


def delete_plans(conn: psycopg.Connection, run_key: str, older_than: timedelta) -> None:
    """Delete the run's plan and every plan created more than ``older_than`` ago, with their
    members, inside the caller's transaction."""
    require_transaction(conn)
    rows = conn.execute(
        "DELETE FROM shard_plans WHERE run_key = %s OR created_at < now() - %s RETURNING plan_id",
        (run_key, older_than),
    ).fetchall()
    if rows:  # the plans this statement deleted: a plan committed meanwhile keeps its members
        conn.execute("DELETE FROM shard_members WHERE plan_id = ANY(%s)", ([int(row[0]) for row in rows],))


def lock_plan(conn: psycopg.Connection, plan_id: int, run_key: str, n_shards: int) -> None:
    """Check that ``plan_id`` is the run's current plan of ``n_shards`` shards and keep it so
    until the caller's transaction ends (a plan retried meanwhile waits for it); else
    ``PlanNotFoundError``."""
    require_transaction(conn)
    row = conn.execute(
        "SELECT run_key, n_shards FROM shard_plans WHERE plan_id = %s FOR KEY SHARE", (int(plan_id),)
    ).fetchone()
    if row is None or (str(row[0]), int(row[1])) != (run_key, int(n_shards)):
        raise PlanNotFoundError(
            f"run {run_key!r}: shard plan {plan_id} of {n_shards} shards is not the run's plan"
            " (a retried plan replaced it, or the run was committed): run the plan task again"
        )


def shard_customers(conn: psycopg.Connection, plan_id: int, shard: int | None) -> np.ndarray:
    """The customer ids of shard ``shard`` of plan ``plan_id`` (None: of every shard), in byte
    order (object array of str)."""
    condition = sql.SQL("plan_id = %s")
    params: list[int] = [int(plan_id)]
    if shard is not None:
        condition = sql.SQL("plan_id = %s AND shard = %s")
        params.append(int(shard))
    query = sql.SQL(
        "COPY (SELECT customer_id FROM shard_members WHERE {} ORDER BY customer_id)"
        " TO STDOUT (FORMAT csv, FORCE_QUOTE *)"
    ).format(condition)
    table = copy_out_csv(conn, query, params, {"customer_id": "str"})
    return np.asarray(table.column("customer_id").to_numpy(zero_copy_only=False), dtype=object)
