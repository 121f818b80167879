"""Connections: URL resolution, the embedded PostgreSQL server, per-connection session settings.

URL resolution order (``resolve_url``): an explicit argument, then ``TRAITFLOW_DATABASE_URL``
(``traitflow.config.database_url()``), then an embedded server started with
``pgserver.get_server(<TRAITFLOW_DATA_DIR>/pgdata)``.

Embedded PostgreSQL (pgserver 0.1.4), notably when running as root
------------------------------------------------------------------
PostgreSQL refuses to run as root, so when ``os.geteuid() == 0`` pgserver does the following by
itself (measured here as root on 2 cores: first start incl. initdb 0.7 s idle, 4.5 s with the
machine fully loaded; a restart of an existing pgdata 0.15 s):

* creates a system user ``pgserver`` with ``useradd`` if it does not exist (needs ``useradd``),
  and runs ``initdb`` / ``pg_ctl`` as that user (``subprocess.run(user=...)``);
* ``chown``s the pgdata directory to ``pgserver`` and makes *every ancestor directory* of pgdata
  group/other readable+traversable (``chmod g+rx,o+rx``; e.g. a data dir under ``/root`` makes
  ``/root`` world-traversable) and loosens permissions of its bundled ``pginstall`` binaries;
* listens on a Unix socket only (no TCP): in pgdata itself, or, if that path is too long for a
  socket, under ``$XDG_RUNTIME_DIR`` (``/tmp/runtime-0`` for root when unset; platformdirs
  warns about that, which we silence). The URL looks like ``postgresql://postgres:@/postgres?host=<dir>``
  and works for any local process, including Airflow task processes;
* reference-counts the processes using the server (``pgdata/.handle_pids.json``, under a file
  lock) and stops it when the last one exits (``cleanup_mode='stop'``), so it never outlives
  its users. Pass ``keep_running=True`` to leave it running (faster repeated CLI calls).
* the ancestors' permissions are only fixed at start: if something later makes an ancestor
  private again, the running server keeps working (it uses paths relative to pgdata) but
  ``pg_ctl stop`` cannot reach pgdata and pgserver falls back to killing the postmaster.
  pytest does exactly that to ``/tmp/pytest-of-root`` whenever a session starts, so the test
  fixtures keep their server in a ``tempfile.mkdtemp()`` directory instead of ``tmp_path``.

Other facts worth knowing: the bundled server is PostgreSQL 16 (the docker-compose one is 15;
the schema uses nothing newer than 14), databases are created with UTF8 encoding and trust
auth for the ``postgres`` role.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from traitflow import config

from .errors import StoreError

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_URL_SCHEMES = {"postgresql": "postgresql", "postgres": "postgresql", "postgresql+psycopg": "postgresql"}
_servers: dict[Path, Any] = {}  # pgdata -> pgserver handle, kept alive for the process lifetime


def validate_schema(name: str) -> str:
    """Return ``name`` if it is a safe lower-case SQL identifier, else raise ``ValueError``.

    The schema is the only identifier that comes from configuration; it is validated here and
    always composed with ``psycopg.sql.Identifier`` (never formatted into SQL text).
    """
    if not isinstance(name, str) or not _SCHEMA_RE.match(name) or name.startswith("pg_"):
        raise ValueError(
            f"schema name must be a lower-case identifier ([a-z_][a-z0-9_]*, at most 63 chars, "
            f"not starting with pg_), got {name!r}"
        )
    return name


def normalize_url(url: str) -> str:
    """Accept ``postgresql://``, ``postgres://`` and ``postgresql+psycopg://``; return ``postgresql://``.

    SQLAlchemy-style URLs (``+psycopg``) and Heroku/Airflow-style ``postgres://`` are rewritten to
    the form libpq (psycopg) understands. Anything else raises ``ValueError``.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(f"not a PostgreSQL URL (expected postgresql://...): {mask_url(str(url))!r}")
    scheme, rest = url.split("://", 1)
    normalized = _URL_SCHEMES.get(scheme.lower())
    if normalized is None:
        raise ValueError(
            f"unsupported database URL scheme {scheme!r}; use postgresql://, postgres:// or postgresql+psycopg://"
        )
    return f"{normalized}://{rest}"


def mask_url(url: str) -> str:
    """``url`` with any password (in the netloc or a ``password=`` query parameter) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, hostinfo = netloc.rsplit("@", 1)
        if ":" in userinfo:
            user, password = userinfo.split(":", 1)
            userinfo = f"{user}:***" if password else f"{user}:"
        netloc = f"{userinfo}@{hostinfo}"
    query = parts.query
    if query:
        pairs = [
            (k, "***" if k.lower() == "password" else v) for k, v in parse_qsl(query, keep_blank_values=True)
        ]
        query = urlencode(pairs, safe="/")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def embedded_pgdata() -> Path:
    """Where the embedded server keeps its data: ``<TRAITFLOW_DATA_DIR>/pgdata``."""
    return config.data_dir() / "pgdata"


def embedded_url(
    pgdata: str | Path | None = None,
    *,
    database: str = "postgres",
    keep_running: bool = False,
    delete_on_exit: bool = False,
) -> str:
    """Start (or attach to) the embedded PostgreSQL server and return its URL.

    ``pgdata`` defaults to ``embedded_pgdata()``; it is created (with parents) if missing.
    ``keep_running`` leaves the server up when this process exits; ``delete_on_exit`` stops it
    and deletes ``pgdata`` (throw-away servers, e.g. tests). See the module docstring for
    pgserver's behaviour, in particular as root.
    """
    path = Path(pgdata) if pgdata is not None else embedded_pgdata()
    path = path.expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    server = _servers.get(path)
    if server is None:
        cleanup_mode = "delete" if delete_on_exit else None if keep_running else "stop"
        with warnings.catch_warnings():
            # platformdirs warns that XDG_RUNTIME_DIR is unset (normal for root/containers).
            warnings.simplefilter("ignore")
            import pgserver

            try:
                server = pgserver.get_server(path, cleanup_mode=cleanup_mode)
            except Exception as exc:  # pgserver raises CalledProcessError/TimeoutExpired/AssertionError
                log = path / "log"
                tail = log.read_text(errors="replace")[-2000:] if log.is_file() else "(no log)"
                raise StoreError(f"could not start the embedded PostgreSQL in {path}: {exc}\n{tail}") from exc
        _servers[path] = server
    return str(server.get_uri(database))


def stop_embedded(pgdata: str | Path | None = None) -> None:
    """Release this process's handle on an embedded server (stops it if no other process uses it)."""
    path = (Path(pgdata) if pgdata is not None else embedded_pgdata()).expanduser().resolve()
    server = _servers.pop(path, None)
    if server is not None:
        server.cleanup()


def resolve_url(url: str | None = None) -> str:
    """Explicit ``url`` > ``TRAITFLOW_DATABASE_URL`` > embedded server; normalized for psycopg."""
    chosen = url or config.database_url()
    if chosen:
        return normalize_url(chosen)
    return embedded_url()


def connect(url: str, schema: str, *, application_name: str = "traitflow") -> psycopg.Connection:
    """Open an autocommit connection with Traitflow's session settings.

    * ``search_path = <schema>, pg_temp``: SQL (and the migration files) name tables unqualified;
      pg_temp goes last so a temporary table can never shadow a Traitflow table.
    * ``TimeZone = UTC``: timestamps come back as UTC datetimes; naive inputs mean UTC.
    * UTF8 client encoding, and a UTF8 server is required (ids may hold any Unicode).

    Autocommit is deliberate: every public write wraps its statements in one explicit
    ``conn.transaction()``, so nothing is left half-done or idle in transaction.
    """
    validate_schema(schema)
    kwargs: dict[str, Any] = {"autocommit": True, "application_name": application_name}
    if "connect_timeout" not in url:
        kwargs["connect_timeout"] = 10
    try:
        conn = psycopg.connect(normalize_url(url), **kwargs)
    except psycopg.OperationalError as exc:
        raise StoreError(f"cannot connect to {mask_url(url)}: {str(exc).strip()}") from exc
    try:
        encoding = conn.execute("SHOW server_encoding").fetchone()
        if encoding is None or encoding[0].upper() not in ("UTF8", "UTF-8"):
            raise StoreError(f"the database must use UTF8 encoding, {mask_url(url)} uses {encoding}")
        conn.execute("SET client_encoding TO 'UTF8'")
        conn.execute("SET TIME ZONE 'UTC'")
        conn.execute(sql.SQL("SET search_path TO {}, pg_temp").format(sql.Identifier(schema)))
    except BaseException:
        conn.close()
        raise
    return conn
