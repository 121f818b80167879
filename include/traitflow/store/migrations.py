"""Versioned schema migrations: numbered SQL files in ``traitflow/migrations``.

Each file ``NNNN_description.sql`` is applied once, in order, in its own transaction, and recorded
in ``<schema>.schema_migrations`` with a checksum. ``upgrade`` is idempotent (nothing pending ->
nothing done) and safe to run concurrently: a session-level advisory lock keyed by the schema name
serialises upgraders, and the second one finds nothing left to do.

The SQL files never name the schema: the transaction sets ``search_path`` to it, so the same files
build the production schema and the throw-away per-test schemas.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg import sql

from .db import validate_schema
from .errors import MigrationError

_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# First key of the two-int advisory lock: a constant ("trai") so the lock cannot collide with
# other applications' single-bigint advisory locks; the second key is hashtext(schema).
_LOCK_NAMESPACE = 0x74726169


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str
    checksum: str


def available_migrations() -> list[Migration]:
    """The migration files shipped with the package, in version order (validated: no gaps, no dups)."""
    folder = resources.files("traitflow").joinpath("migrations")
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _FILE_RE.match(entry.name)
        if not match:
            if entry.name.endswith(".sql"):
                raise MigrationError(f"migration file {entry.name!r} does not match NNNN_name.sql")
            continue
        text = entry.read_text(encoding="utf-8")
        found.append(
            Migration(
                version=int(match.group(1)),
                name=match.group(2),
                sql=text,
                checksum=hashlib.sha256(text.encode("utf-8")).hexdigest(),
            )
        )
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration versions must be 1..N without gaps or duplicates, found {versions}")
    return found


def latest_version() -> int:
    return available_migrations()[-1].version


def _table(schema: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier("schema_migrations"))


def applied_versions(conn: psycopg.Connection, schema: str) -> dict[int, str]:
    """``{version: checksum}`` recorded in the schema; empty if the schema is not initialised."""
    validate_schema(schema)
    exists = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = 'schema_migrations')",
        (schema,),
    ).fetchone()
    if not exists or not exists[0]:
        return {}
    rows = conn.execute(sql.SQL("SELECT version, checksum FROM {}").format(_table(schema))).fetchall()
    return {int(v): str(c) for v, c in rows}


def pending_migrations(conn: psycopg.Connection, schema: str) -> list[Migration]:
    applied = applied_versions(conn, schema)
    _check_consistent(applied, available_migrations())
    return [m for m in available_migrations() if m.version not in applied]


def _check_consistent(applied: dict[int, str], available: list[Migration]) -> None:
    known = {m.version: m for m in available}
    newer = sorted(v for v in applied if v not in known)
    if newer:
        raise MigrationError(
            f"the database has migrations {newer} that this version of traitflow does not know; "
            "upgrade traitflow (never downgrade a database)"
        )
    changed = sorted(v for v, checksum in applied.items() if known[v].checksum != checksum)
    if changed:
        raise MigrationError(
            f"migration file(s) {changed} changed after being applied; add a new numbered migration "
            "instead of editing an applied one (or recreate this schema if it is disposable)"
        )


def upgrade(conn: psycopg.Connection, schema: str, target: int | None = None) -> list[int]:
    """Create ``schema`` if needed and apply pending migrations; returns the versions applied.

    ``target``: apply pending migrations up to this version only (None: all of them), e.g. to
    build a schema as an older release left it and test the later migrations on its data.

    ``conn`` must be in autocommit mode (as ``traitflow.store.db.connect`` returns it): every
    migration runs in its own transaction, so a failure leaves the schema at the previous version.
    """
    validate_schema(schema)
    if not conn.autocommit:
        raise MigrationError("upgrade() needs an autocommit connection (one transaction per migration)")
    available = available_migrations()
    if target is not None and not any(m.version == target for m in available):
        raise MigrationError(f"no migration version {target}; known versions are 1..{available[-1].version}")
    conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (_LOCK_NAMESPACE, schema))
    try:
        with conn.transaction():
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} ("
                    " version integer PRIMARY KEY,"
                    " name text NOT NULL,"
                    " checksum text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                ).format(_table(schema))
            )
        applied = applied_versions(conn, schema)
        _check_consistent(applied, available)
        done: list[int] = []
        for migration in available:
            if migration.version in applied or (target is not None and migration.version > target):
                continue
            try:
                with conn.transaction():
                    conn.execute(
                        sql.SQL("SET LOCAL search_path TO {}, pg_temp").format(sql.Identifier(schema))
                    )
                    # A whole file: psycopg sends parameterless queries with the simple protocol,
                    # which accepts several statements. The text is package data, never input.
                    conn.execute(sql.SQL(migration.sql))
                    conn.execute(
                        sql.SQL("INSERT INTO {} (version, name, checksum) VALUES (%s, %s, %s)").format(
                            _table(schema)
                        ),
                        (migration.version, migration.name, migration.checksum),
                    )
            except psycopg.Error as exc:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name} failed on schema {schema!r}: {exc}"
                ) from exc
            done.append(migration.version)
        return done
    finally:
        if not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (_LOCK_NAMESPACE, schema))
