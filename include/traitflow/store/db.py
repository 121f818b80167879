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

Timeouts (``Timeouts``; every value from an environment variable, 0 turns one off)
--------------------------------------------------------------------------------
A database that stops answering must fail the task, not hang it: the retry then runs once the
server is back. Each layer bounds a different failure:

* ``connect_timeout`` (``TRAITFLOW_CONNECT_TIMEOUT_S``, 10 s): establishing a connection.
* ``statement_timeout`` (``TRAITFLOW_STATEMENT_TIMEOUT_S``, 30 min) and ``lock_timeout``
  (``TRAITFLOW_LOCK_TIMEOUT_S``, 5 min): enforced by the server on each statement and lock
  wait, with PostgreSQL's own error. 30 min leaves the weekly write of a million profiles
  (tens of seconds) a wide margin on a slow disk.
* TCP keepalives (``TRAITFLOW_KEEPALIVES_IDLE_S`` 30, ``..._INTERVAL_S`` 10, ``..._COUNT`` 5)
  and libpq ``tcp_user_timeout`` (the same total): a peer host that vanished from the network.
* The client deadline (``TRAITFLOW_CLIENT_TIMEOUT_S``, default statement timeout + 60 s) on
  every wait for the server (``GuardedConnection.wait``). It is the only layer that catches a
  server *process* that is frozen (SIGSTOP, a hung storage mount) while its host is fine: the
  kernel still ACKs every packet and answers keepalives, and the frozen server cannot enforce its
  own statement_timeout, so a blocked read would wait forever. When it expires the connection is
  closed (its state is unknown) and ``DatabaseTimeoutError`` is raised; the open transaction is
  rolled back by the server once it resumes and sees the closed socket (a deadline that expires
  while COMMIT is in flight cannot tell whether it committed: every Traitflow write is idempotent,
  so the retry is safe either way).

Lost connections
----------------
A connection the server closes during a call (shutdown, restart, a terminated backend) raises
``DatabaseConnectionLostError`` from ``GuardedConnection.wait``, with the masked URL and the
redacted driver message; the connection is closed and the ``Store``'s next call opens a new one.
An idle connection the server closed between calls is replaced before use
(``GuardedConnection.peer_hung_up``, a ``select`` on the socket, no round trip).

Other facts worth knowing: the bundled server is PostgreSQL 16 (the docker-compose one is 15;
the schema uses nothing newer than 14), databases are created with UTF8 encoding and trust
auth for the ``postgres`` role.
"""

from __future__ import annotations

import re
import select
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from traitflow import config
from traitflow.redaction import redact, secrets_of

from .errors import DatabaseConnectionLostError, DatabaseTimeoutError, StoreError

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
        shown = redact(url, secrets_of(url))
        raise ValueError(f"not a PostgreSQL URL (expected postgresql://...): {shown!r}")
    scheme, rest = url.split("://", 1)
    normalized = _URL_SCHEMES.get(scheme.lower())
    if normalized is None:
        raise ValueError(
            f"unsupported database URL scheme {redact(scheme, secrets_of(url))!r}; "
            "use postgresql://, postgres:// or postgresql+psycopg://"
        )
    return f"{normalized}://{rest}"


def mask_url(url: str) -> str:
    """``url`` with any password (in the netloc or a ``password=`` query parameter) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url, secrets_of(url))
    if not parts.scheme or not parts.netloc:  # not a URL: a keyword DSN, a URL without scheme...
        return redact(url, secrets_of(url))
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


@dataclass(frozen=True)
class Timeouts:
    """Every database time limit, in seconds (0 = off); see the module docstring for each layer.

    ``client_s=None`` means ``statement_s + 60`` (or off when the statement timeout is off): the
    client waits a little longer than the server would, so a live server's own, clearer
    statement-timeout error wins.
    """

    connect_s: float = 10.0
    statement_s: float = 1800.0
    lock_s: float = 300.0
    keepalives_idle_s: int = 30
    keepalives_interval_s: int = 10
    keepalives_count: int = 5
    client_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("connect_s", "statement_s", "lock_s", "keepalives_idle_s", "keepalives_interval_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.keepalives_count < 0 or (self.client_s is not None and not self.client_s >= 0):
            raise ValueError("keepalives_count and client_s must be >= 0")

    @classmethod
    def from_env(cls) -> Timeouts:
        """From ``TRAITFLOW_CONNECT_TIMEOUT_S``, ``..._STATEMENT_TIMEOUT_S``, ``..._LOCK_TIMEOUT_S``,
        ``..._KEEPALIVES_IDLE_S``, ``..._KEEPALIVES_INTERVAL_S``, ``..._KEEPALIVES_COUNT`` and
        ``..._CLIENT_TIMEOUT_S``; unset ones keep the defaults."""
        base = cls()

        def number(name: str) -> float | None:
            raw = config.env_str(f"TRAITFLOW_{name}")
            if raw is None:
                return None
            try:
                return float(raw)
            except ValueError:
                raise config.ConfigError(
                    f"TRAITFLOW_{name} must be a number of seconds, got {raw!r}"
                ) from None

        def seconds(name: str, default: float) -> float:
            value = number(name)
            return default if value is None else value

        return cls(
            connect_s=seconds("CONNECT_TIMEOUT_S", base.connect_s),
            statement_s=seconds("STATEMENT_TIMEOUT_S", base.statement_s),
            lock_s=seconds("LOCK_TIMEOUT_S", base.lock_s),
            keepalives_idle_s=int(seconds("KEEPALIVES_IDLE_S", base.keepalives_idle_s)),
            keepalives_interval_s=int(seconds("KEEPALIVES_INTERVAL_S", base.keepalives_interval_s)),
            keepalives_count=int(seconds("KEEPALIVES_COUNT", base.keepalives_count)),
            client_s=number("CLIENT_TIMEOUT_S"),
        )

    @property
    def client_deadline_s(self) -> float | None:
        """Seconds the client waits for any one answer from the server (None = forever)."""
        if self.client_s is not None:
            return self.client_s or None
        return self.statement_s + 60.0 if self.statement_s else None

    def libpq_options(self) -> dict[str, Any]:
        """Connection parameters for libpq (keepalives only act on TCP connections)."""
        options: dict[str, Any] = {}
        if self.connect_s:
            # libpq takes whole seconds; anything below 2 s is raised to 2 s by libpq itself.
            options["connect_timeout"] = max(1, round(self.connect_s))
        if self.keepalives_idle_s:
            options.update(
                keepalives=1,
                keepalives_idle=self.keepalives_idle_s,
                keepalives_interval=self.keepalives_interval_s,
                keepalives_count=self.keepalives_count,
                # Sent data unacknowledged this long = the peer host is gone (Linux only).
                tcp_user_timeout=1000
                * (self.keepalives_idle_s + self.keepalives_interval_s * self.keepalives_count),
            )
        return options


class GuardedConnection(psycopg.Connection):
    """A psycopg connection whose every wait for the server has a deadline (``client_timeout``).

    psycopg funnels all network waits of queries, COPY, COMMIT and ROLLBACK through
    ``Connection.wait``; its ``timeout`` raises ``psycopg.errors._WaitTimeout`` (private, hence
    caught as its public base ``OperationalError`` and recognised by class name). On expiry the
    connection is closed, since the protocol state is unknown, and ``DatabaseTimeoutError`` says
    what happened.
    """

    client_timeout: float | None = None
    redacted_target: str = "the database"
    redaction_secrets: tuple[str, ...] = ()

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        limit = timeout if timeout is not None else self.client_timeout
        try:
            return super().wait(gen, interval, limit)
        except psycopg.OperationalError as exc:
            if self._lost(exc):
                self.pgconn.finish()  # _live() of the Store sees it closed and reconnects
                reason = redact(str(exc).strip(), self.redaction_secrets) or type(exc).__name__
                # from None: a chained psycopg error may echo the DSN.
                raise DatabaseConnectionLostError(self.redacted_target, reason) from None
            if limit is None or timeout is not None or type(exc).__name__ != "_WaitTimeout":
                raise
            self.pgconn.finish()
            raise DatabaseTimeoutError(
                f"{self.redacted_target} did not answer within {limit:g} s (TRAITFLOW_CLIENT_TIMEOUT_S): "
                "the server is frozen, overloaded or unreachable; the connection was closed and the "
                "transaction left uncommitted. Retry once the database answers again."
            ) from None

    def _lost(self, exc: psycopg.OperationalError) -> bool:
        """Whether ``exc`` means the session is gone (not a timeout, not a query's own error)."""
        if type(exc).__name__ == "_WaitTimeout":
            return False
        shutdown = isinstance(exc, psycopg.errors.AdminShutdown | psycopg.errors.CrashShutdown)
        return shutdown or self.pgconn.status != psycopg.pq.ConnStatus.OK

    def peer_hung_up(self) -> bool:
        """Whether the server closed this *idle* connection (a restart, an admin's terminate).

        No round trip: a server that ends a session sends its FATAL message and closes the socket,
        so an idle connection whose socket is readable has either such an end or a harmless
        asynchronous message (a NOTICE, a parameter change) waiting. A ``select`` with timeout 0
        tells; only then ``consume_input`` reads it. The first read usually takes the FATAL message
        only, so the socket is read while it stays readable (a few times at most): end-of-file
        turns the status BAD, a harmless message leaves the socket quiet. A peer host that vanished
        without closing (no FIN) is not seen here: the keepalives and the client deadline bound it.
        """
        if self.closed or self.broken:
            return True
        try:
            for _ in range(4):
                readable, _, _ = select.select([self.pgconn.socket], [], [], 0)
                if not readable or self.pgconn.status != psycopg.pq.ConnStatus.OK:
                    break
                self.pgconn.consume_input()
        except (OSError, ValueError, psycopg.OperationalError):
            return True
        return self.pgconn.status != psycopg.pq.ConnStatus.OK


def _given_keys(url: str) -> set[str]:
    try:
        return set(conninfo_to_dict(url))
    except psycopg.Error:
        return set()


def connect(
    url: str, schema: str, *, application_name: str = "traitflow", timeouts: Timeouts | None = None
) -> GuardedConnection:
    """Open an autocommit connection with Traitflow's session settings.

    * ``search_path = <schema>, pg_temp``: SQL (and the migration files) name tables unqualified;
      pg_temp goes last so a temporary table can never shadow a Traitflow table.
    * ``TimeZone = UTC``: timestamps come back as UTC datetimes; naive inputs mean UTC.
    * UTF8 client encoding, and a UTF8 server is required (ids may hold any Unicode).
    * ``timeouts`` (default ``Timeouts.from_env()``): statement/lock timeouts, keepalives and the
      client deadline; parameters given in ``url`` itself win over the libpq ones.

    Autocommit is deliberate: every public write wraps its statements in one explicit
    ``conn.transaction()``, so nothing is left half-done or idle in transaction.
    Errors never show the password (``traitflow.redaction``).
    """
    validate_schema(schema)
    timeouts = Timeouts.from_env() if timeouts is None else timeouts
    secrets = secrets_of(url)
    target = mask_url(url)
    url = normalize_url(url)
    given = _given_keys(url)
    kwargs: dict[str, Any] = {"autocommit": True, "application_name": application_name}
    kwargs.update({k: v for k, v in timeouts.libpq_options().items() if k not in given})
    try:
        conn = GuardedConnection.connect(url, **kwargs)
    except psycopg.Error as exc:
        # from None: the psycopg message may echo the DSN, and a chained cause is printed in full.
        raise StoreError(f"cannot connect to {target}: {redact(str(exc).strip(), secrets)}") from None
    conn.redacted_target = target
    conn.redaction_secrets = tuple(secrets)
    conn.client_timeout = timeouts.client_deadline_s
    try:
        encoding = conn.execute("SHOW server_encoding").fetchone()
        if encoding is None or encoding[0].upper() not in ("UTF8", "UTF-8"):
            raise StoreError(f"the database must use UTF8 encoding, {target} uses {encoding}")
        conn.execute("SET client_encoding TO 'UTF8'")
        conn.execute("SET TIME ZONE 'UTC'")
        conn.execute(sql.SQL("SET search_path TO {}, pg_temp").format(sql.Identifier(schema)))
        limits = {"statement_timeout": timeouts.statement_s, "lock_timeout": timeouts.lock_s}
        for setting, seconds in limits.items():
            conn.execute("SELECT set_config(%s, %s, false)", (setting, f"{round(seconds * 1000)}ms"))
    except BaseException:
        conn.close()
        raise
    return conn
