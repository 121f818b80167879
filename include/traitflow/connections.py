"""Traitflow's database URL as Airflow processes resolve it.

Shared by the DAGs (``dags/traitflow_common``) and the UI plugin, which run in different
processes with different ``sys.path`` but both have the ``traitflow`` package. Airflow is
imported inside ``database_url`` only, so the library stays importable without Airflow.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from traitflow.config import env_str

CONN_ID = "traitflow_db"  # the Airflow Connection holding Traitflow's database
URL_ENV = "TRAITFLOW_DATABASE_URL"  # used when that Connection does not exist


def database_url() -> str | None:
    """Connection ``traitflow_db``, else ``TRAITFLOW_DATABASE_URL``, else None (= embedded server).

    Looks the Connection up through Airflow's secrets backends (environment, secrets manager,
    metadata database), so call it at run time only, never while a DAG file or plugin is imported.
    """
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = Connection.get(CONN_ID)
    except AirflowNotFoundException:
        return env_str(URL_ENV)
    return url_from_connection(conn)


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
