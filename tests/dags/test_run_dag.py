"""``dag.test`` + state readback work in Airflow 3.3.2, on a throwaway DAG defined here.

Kept independent of the Traitflow DAGs so a regression of ``dag.test`` itself (it has changed
across 3.x releases) shows up as a failure here rather than as a puzzling pipeline failure.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

D = datetime(2026, 1, 10, tzinfo=UTC)


def _branch_dag() -> Any:
    """choose -> (left | right) -> join, plus a task that reads the Traitflow DB connection."""
    from airflow.sdk import CronDataIntervalTimetable, Param, dag, task

    from traitflow_common import JOIN, database_url, run_context, run_params

    @dag(
        dag_id="traitflow_test_branch",
        schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
        start_date=datetime(2026, 1, 1, tzinfo=UTC),
        catchup=False,
        params={"go": Param("left", type="string", enum=["left", "right"])},
    )
    def traitflow_test_branch() -> None:
        @task.branch
        def choose() -> str:
            return run_params()["go"]

        @task
        def left() -> str:
            return "L"

        @task
        def right() -> str:
            return "R"

        @task(multiple_outputs=False, trigger_rule=JOIN)
        def join() -> dict:
            run = run_context()
            return {"start": run.start.isoformat(), "end": run.end.isoformat(), "work_dir": run.work_dir}

        @task
        def read_connection() -> str | None:
            return database_url()  # test-only: never return a real URL from a task

        choose() >> [left(), right()] >> join()
        read_connection()

    return traitflow_test_branch()


@pytest.fixture(scope="module")
def branch_dag() -> Any:
    return _branch_dag()


@pytest.mark.parametrize(
    ("go", "taken", "not_taken"), [("left", "left", "right"), ("right", "right", "left")]
)
def test_dag_test_runs_branch_and_reports_states(
    run_dag: Any, branch_dag: Any, go: str, taken: str, not_taken: str
) -> None:
    result = run_dag(branch_dag, D, conf={"go": go})
    assert result.state == "success"
    assert result[taken] == "success"
    assert result[not_taken] == "skipped"
    assert result["choose"] == result["join"] == "success"
    assert result.xcom(taken) == taken[0].upper()
    assert result.xcom(not_taken) is None


def test_manual_run_covers_the_day_before_the_logical_date(run_dag: Any, branch_dag: Any) -> None:
    result = run_dag(branch_dag, D)
    assert result.data_interval == (D - timedelta(days=1), D)
    seen = result.xcom("join")
    assert (seen["start"], seen["end"]) == ((D - timedelta(days=1)).isoformat(), D.isoformat())
    assert "traitflow_test_branch" in seen["work_dir"]


def test_rerunning_a_logical_date_replaces_the_run(run_dag: Any, branch_dag: Any) -> None:
    first = run_dag(branch_dag, D, conf={"go": "left"})
    second = run_dag(branch_dag, D, conf={"go": "right"})
    assert first.run_id != second.run_id  # dag.test run ids are manual__<now>
    assert second["left"] == "skipped" and second["right"] == "success"


def test_invalid_conf_is_rejected(run_dag: Any, branch_dag: Any) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        run_dag(branch_dag, D, conf={"go": "sideways"})


@pytest.mark.parametrize(
    "conn",
    [
        "postgresql://tf%40user:p%40ss@db.example:5433/traitflow?sslmode=require",
        json.dumps(
            {
                "conn_type": "postgres",
                "login": "tf@user",
                "password": "p@ss",
                "host": "db.example",
                "port": 5433,
                "schema": "traitflow",
                "extra": {"sslmode": "require"},
            }
        ),
    ],
    ids=["uri", "json"],
)
def test_connection_from_env_var_reaches_the_task(run_dag: Any, branch_dag: Any, conn: str) -> None:
    result = run_dag(branch_dag, D, env={"AIRFLOW_CONN_TRAITFLOW_DB": conn})
    assert result["read_connection"] == "success"
    expected = "postgresql://tf%40user:p%40ss@db.example:5433/traitflow?sslmode=require"
    assert result.xcom("read_connection") == expected


def test_without_connection_falls_back_to_env_then_embedded(
    run_dag: Any, branch_dag: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_TRAITFLOW_DB", raising=False)
    monkeypatch.delenv("TRAITFLOW_DATABASE_URL", raising=False)
    assert run_dag(branch_dag, D).xcom("read_connection") is None  # None = embedded Postgres
    url = "postgresql://u@localhost:5432/tf"
    assert run_dag(branch_dag, D, env={"TRAITFLOW_DATABASE_URL": url}).xcom("read_connection") == url
