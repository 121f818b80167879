"""A database password never reaches a task log, whatever shape the connection setting has.

Each run points the daily DAG at a database that cannot be reached (nothing listens on the port,
or the setting is malformed), so a task fails with a connection error; everything the run wrote
(stdout, stderr, log records) is searched for the password.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pytest

D = datetime(2026, 1, 10, tzinfo=UTC)
PASSWORD = "Pw-9f3a7c1e"
CLOSED_PORT = 1  # privileged and unused: connection refused at once

SETTINGS = {
    "env_url": ("TRAITFLOW_DATABASE_URL", f"postgresql://tf:{PASSWORD}@127.0.0.1:{CLOSED_PORT}/tf"),
    "env_keyword_dsn": (
        "TRAITFLOW_DATABASE_URL",
        f"host=127.0.0.1 port={CLOSED_PORT} user=tf password={PASSWORD} dbname=tf",
    ),
    "env_url_without_scheme": ("TRAITFLOW_DATABASE_URL", f"tf:{PASSWORD}@127.0.0.1:{CLOSED_PORT}/tf"),
    "env_malformed_uri": (
        "TRAITFLOW_DATABASE_URL",
        f"postgresql://tf:{PASSWORD}@[127.0.0.1:{CLOSED_PORT}/tf",
    ),
    "airflow_conn_json": (
        "AIRFLOW_CONN_TRAITFLOW_DB",
        json.dumps(
            {
                "conn_type": "postgres",
                "login": "tf",
                "password": PASSWORD,
                "host": "127.0.0.1",
                "port": CLOSED_PORT,
                "schema": "tf",
            }
        ),
    ),
}


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_a_failing_connection_never_logs_the_password(
    run_dag: Any,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    setting: str,
) -> None:
    name, value = SETTINGS[setting]
    for other in ("TRAITFLOW_DATABASE_URL", "AIRFLOW_CONN_TRAITFLOW_DB"):
        monkeypatch.delenv(other, raising=False)
    caplog.set_level(logging.DEBUG)
    result = run_dag("traitflow_daily", D, env={name: value})
    assert result["select_customers"] == "failed"  # the run did reach the database and fail
    out, err = capfd.readouterr()
    logged = "\n".join(
        [out, err, caplog.text, *(str(r.msg) for r in caplog.records), *(str(r.args) for r in caplog.records)]
    )
    assert "select_customers" in logged  # the failure was logged, so the search below means something
    assert PASSWORD not in logged


def test_the_database_password_is_registered_with_airflows_secrets_masker() -> None:
    from airflow.sdk._shared.secrets_masker import redact as airflow_redact

    from traitflow_common import mask_database_secrets

    password = "Pw-masker-5b8d e@x"
    before = str(airflow_redact(f"text with {password} in it"))
    assert password in before  # not masked until registered
    mask_database_secrets(f"postgresql://tf:{quote(password, safe='')}@db.example:5432/tf")
    for spelling in (password, quote(password, safe="")):
        masked = str(airflow_redact(f"text with {spelling} in it"))
        assert spelling not in masked and "***" in masked
