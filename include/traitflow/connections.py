"""Database URLs from Airflow Connection objects (duck-typed: no Airflow import here).

Shared by the DAGs (``dags/traitflow_common``) and the UI plugin, which run in different
processes with different ``sys.path`` but both have the ``traitflow`` package.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode


def url_from_connection(conn: Any) -> str:
    """A libpq-style ``postgresql://`` URL from an Airflow Postgres Connection.

    ``Connection.get_uri()`` is not usable here: it renders ``postgres://``, which SQLAlchemy 2
    rejects, and it would put Airflow-only extras into the query string. ``schema`` of a Postgres
    connection is the database name (Airflow convention); string and integer extras such as
    ``sslmode`` become query parameters.
    """
    conn_type = (conn.conn_type or "").lower()
    if not conn_type.startswith("postgres"):
        raise ValueError(f"connection {conn.conn_id!r} must be a Postgres connection, got {conn_type!r}")
    auth = ""
    if conn.login:
        auth = quote(conn.login, safe="")
        if conn.password:
            auth += ":" + quote(conn.password, safe="")
        auth += "@"
    host = conn.host or "localhost"
    port = f":{conn.port}" if conn.port else ""
    database = quote(conn.schema or "", safe="")
    extras = {
        k: v for k, v in conn.extra_dejson.items() if isinstance(v, str | int) and not isinstance(v, bool)
    }
    query = f"?{urlencode(sorted(extras.items()))}" if extras else ""
    return f"postgresql://{auth}{host}{port}/{database}{query}"
