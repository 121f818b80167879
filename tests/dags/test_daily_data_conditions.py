"""The daily DAG's data conditions through Airflow (``dag.test``, real jobs, real PostgreSQL): a day
without its event file fails or skips as the deployment chose, a day without a promoted model
skips; each stores its reason in the day's run report and nothing is retried."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from traitflow.store import Store
from traitflow.synthetic import SyntheticSpec, generate

START = datetime(2026, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)
DAILY_TASKS = {
    "ingest",
    "select_customers",
    "plan_update",
    "shard_ids",
    "update_profiles",
    "commit_update",
    "monitor",
}


@pytest.fixture
def input_dir(tmp_path: Path) -> Path:
    """Event files for Mar 1 and Mar 3; none for Mar 2."""
    folder = tmp_path / "input"
    folder.mkdir()
    spec = SyntheticSpec(
        n_customers=40, n_products=30, n_categories=4, n_segments=2, n_events=300, start=START, days=3, seed=5
    )
    events = generate(spec).events
    events["event_time"] = events["event_time"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    for day, frame in events.groupby(events["event_time"].str.slice(0, 10)):
        if day != "2026-03-02":
            frame.to_csv(folder / f"events_{day}.csv", index=False)
    return folder


@pytest.fixture
def daily(run_dag: Any, store_schema: str, database_url: str, input_dir: Path, store: Store) -> Any:
    env = {
        "TRAITFLOW_DATABASE_URL": database_url,
        "TRAITFLOW_DB_SCHEMA": store_schema,
        "TRAITFLOW_INPUT_ROOT": str(input_dir),
    }

    def run(day: datetime, **conf: Any) -> Any:
        # The DAGs' own retries: a data condition must not use them.
        return run_dag(
            "traitflow_daily", day + DAY, conf={"input_dir": str(input_dir), **conf}, env=env, retries=None
        )

    return run


def _tries(run_id: str) -> dict[str, int]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(TaskInstance.task_id, TaskInstance.try_number).where(TaskInstance.run_id == run_id)
        ).all()
    return {task_id: tries for task_id, tries in rows}


def _report(store: Store, day: datetime) -> dict[str, Any]:
    reports = {r["run_key"]: r["report"] for r in store.run_reports("daily", limit=10)}
    return reports[(day + DAY).isoformat()]


def test_a_missing_day_file_fails_the_run_at_once_by_default_with_the_reason_stored(
    daily: Any, store: Store
) -> None:
    result = daily(START + DAY)
    assert result.state == "failed" and result["ingest"] == "failed", result
    assert {result[task] for task in DAILY_TASKS - {"ingest"}} == {"upstream_failed"}
    assert _tries(result.run_id)["ingest"] == 1  # not retried
    report = _report(store, START + DAY)
    assert report["outcome"] == "failed" and report["run_id"] == result.run_id
    assert report["reason"].startswith("no event file dated 2026-03-02 in "), report
    assert "missing_input=fail" in report["reason"]
    assert store.table_counts()["events"] == 0  # nothing ingested on a failed day


def test_a_missing_day_file_with_skip_gives_a_green_skipped_run_with_the_reason_stored(
    daily: Any, store: Store
) -> None:
    result = daily(START + DAY, missing_input="skip")
    assert result.state == "success", result
    assert {result[task] for task in DAILY_TASKS} == {"skipped"}
    assert max(_tries(result.run_id).values()) == 1
    report = _report(store, START + DAY)
    assert report["outcome"] == "skipped" and "missing_input=skip" in report["reason"], report


def test_a_missing_day_file_with_ignore_updates_from_the_table(daily: Any, store: Store) -> None:
    result = daily(START + DAY, missing_input="ignore")
    assert result["ingest"] == "success" and result.xcom("ingest")["n_files"] == 1  # Mar 1's, caught up
    assert result.state == "success"


def test_a_day_before_the_first_model_skips_with_the_reason_stored(daily: Any, store: Store) -> None:
    result = daily(START)
    assert result.state == "success", result
    for task in DAILY_TASKS - {"monitor"}:
        assert result[task] == "success", task
    assert result["monitor"] == "skipped"
    assert max(_tries(result.run_id).values()) == 1
    assert result.xcom("ingest")["n_inserted"] > 0
    report = _report(store, START)
    assert report["outcome"] == "skipped" and report["model_version"] is None, report
    assert report["reason"].startswith("no promoted model trained before 2026-03-02"), report
    assert result.xcom("monitor") == report  # the skipped task still hands its report on
