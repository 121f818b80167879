"""The staging area of customer-sharded profile computation (table ``profile_shards``).

Each shard task stores its ``ProfileBatch`` under ``(run_key, shard)`` (``stage_shard``: one
statement that replaces the shard's own row, so a retry overwrites, never duplicates). The
commit (``Store.write_staged_profiles`` / ``Store.publish_candidate``) reads every shard of the run
(``load_staged``: all present, all computed for the same as_of, model and shard count), writes
the concatenated batch and deletes the run's rows and its shard plan (``clear_staged``;
``shard_members``) in its one transaction, so the profile tables receive all shards or none.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg

from traitflow.profile_batch import ProfileBatch, concat_batches
from traitflow.shards import check_n_shards

from ._util import require_transaction, utc
from .errors import StoreInputError
from .shard_members import delete_plans

# Staged batches of runs that never committed (a run failed for good, a changed shard count)
# are deleted by the next commit once they are this old.
STALE_AFTER = timedelta(days=3)


class ShardsNotReadyError(StoreInputError):
    """The staged shards of a run are incomplete or do not belong together."""


def _check_key(run_key: str) -> str:
    if not isinstance(run_key, str) or not 1 <= len(run_key) <= 512 or "\x00" in run_key:
        raise StoreInputError(f"run_key must be 1-512 characters without NUL, got {run_key!r:.80}")
    return run_key


def stage_shard(
    conn: psycopg.Connection, run_key: str, shard: int, n_shards: int, batch: ProfileBatch
) -> None:
    """Store ``batch`` as shard ``shard`` of ``n_shards`` of ``run_key`` (replacing an earlier
    attempt), inside the caller's transaction."""
    require_transaction(conn)
    n_shards = check_n_shards(n_shards)
    if not 0 <= int(shard) < n_shards:
        raise StoreInputError(f"shard must be between 0 and {n_shards - 1}, got {shard}")
    conn.execute(
        "INSERT INTO profile_shards (run_key, shard, n_shards, as_of, model_version, n_rows, batch)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (run_key, shard) DO UPDATE SET n_shards = EXCLUDED.n_shards, as_of = EXCLUDED.as_of,"
        " model_version = EXCLUDED.model_version, n_rows = EXCLUDED.n_rows, batch = EXCLUDED.batch,"
        " created_at = now()",
        (
            _check_key(run_key),
            int(shard),
            n_shards,
            utc(batch.as_of),
            batch.model_version,
            len(batch),
            batch.to_bytes(),
        ),
    )


def staged_shards(conn: psycopg.Connection, run_key: str) -> list[int]:
    """The shard numbers staged under ``run_key``, ascending."""
    rows = conn.execute(
        "SELECT shard FROM profile_shards WHERE run_key = %s ORDER BY shard", (_check_key(run_key),)
    ).fetchall()
    return [int(row[0]) for row in rows]


def load_staged(
    conn: psycopg.Connection, run_key: str, n_shards: int, as_of: datetime, model_version: int | None
) -> ProfileBatch:
    """The ``n_shards`` staged batches of ``run_key`` as one batch in customer id order.

    Raises ``ShardsNotReadyError`` when a shard is missing, or a row was staged for another
    shard count, as_of or model (e.g. a shard computed before the model changed).
    """
    n_shards = check_n_shards(n_shards)
    rows = conn.execute(
        "SELECT shard, n_shards, as_of, model_version, n_rows, batch FROM profile_shards"
        " WHERE run_key = %s ORDER BY shard",
        (_check_key(run_key),),
    ).fetchall()
    found = [int(row[0]) for row in rows]
    missing = sorted(set(range(n_shards)) - set(found))
    if missing:
        raise ShardsNotReadyError(f"run {run_key!r}: shards {missing} of {n_shards} are not staged")
    expected = (n_shards, utc(as_of), model_version)
    batches = []
    for shard, count, stamp, version, n_rows, data in rows:
        if (int(count), utc(stamp), version) != expected or shard >= n_shards:
            raise ShardsNotReadyError(
                f"run {run_key!r}: shard {shard} was staged for n_shards={count}, as_of={stamp.isoformat()},"
                f" model {version}; expected n_shards={n_shards}, as_of={utc(as_of).isoformat()},"
                f" model {model_version}"
            )
        batch = ProfileBatch.from_bytes(bytes(data))
        if len(batch) != n_rows:
            raise ShardsNotReadyError(f"run {run_key!r}: shard {shard} holds {len(batch)} rows, not {n_rows}")
        batches.append(batch)
    return concat_batches(batches)


def clear_staged(conn: psycopg.Connection, run_key: str) -> int:
    """Delete the run's staged shards and shard plan (``shard_members``), and every staged batch
    and plan older than ``STALE_AFTER``; returns the staged batches deleted."""
    require_transaction(conn)
    stale = (_check_key(run_key), STALE_AFTER)
    delete_plans(conn, run_key, STALE_AFTER)
    return conn.execute(
        "DELETE FROM profile_shards WHERE run_key = %s OR created_at < now() - %s", stale
    ).rowcount
