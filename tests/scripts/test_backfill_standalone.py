"""The README's daily backfill against a real scheduler (scripts/airflow_standalone.sh, real jobs,
real PostgreSQL): the runs wait while the DAG is paused, then run one at a time in date order;
the days with a file ingest it, the day without one fails at once with its reason reported."""

from __future__ import annotations

import itertools
import json
import re
import shlex
import sqlite3
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from traitflow.store import Store
from traitflow.synthetic import SyntheticSpec, generate

REPO = Path(__file__).resolve().parents[2]
FIRST, MISSING, LAST = "2026-03-01", "2026-03-02", "2026-03-03"
RUNS_TIMEOUT_S = 180
FINISHED = {"success", "failed"}


def readme_backfill_commands() -> list[str]:
    """The README's daily backfill steps (Airflow UI section), dates replaced with this test's."""
    readme = (REPO / "README.md").read_text()
    start = readme.index("### The Airflow UI without Docker")
    end = readme.index("### Airflow over historical")
    section = readme[start:end]
    block = section[section.index("```bash\nsource .venv") :].split("```")[1].replace("\\\n", " ")
    commands = [line.split("#")[0].strip() for line in block.splitlines()[1:] if line.startswith("airflow ")]
    backfill = commands[0]
    assert backfill.startswith("airflow backfill create --dag-id traitflow_daily "), backfill
    assert "--max-active-runs 1" in backfill and "--run-backwards" not in backfill
    # A date is a word or a quoted shell expression ("$(date ...)").
    backfill = re.sub(r'--from-date ("[^"]*"|\S+)', f"--from-date {FIRST}", backfill)
    return [re.sub(r'--to-date ("[^"]*"|\S+)', f"--to-date {LAST}", backfill), *commands[1:]]


def _write_day_files(folder: Path) -> None:
    folder.mkdir(parents=True)
    spec = SyntheticSpec(
        n_customers=40,
        n_products=30,
        n_categories=4,
        n_segments=2,
        n_events=300,
        start=datetime.fromisoformat(FIRST).replace(tzinfo=UTC),
        days=3,
        seed=5,
    )
    events = generate(spec).events
    events["event_time"] = events["event_time"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    for day, frame in events.groupby(events["event_time"].str.slice(0, 10)):
        if day != MISSING:
            frame.to_csv(folder / f"events_{day}.csv", index=False)


def _run(airflow: Any, command: str) -> subprocess.CompletedProcess[str]:
    words = shlex.split(command)
    assert words[0] == "airflow"
    return airflow.cli(*words[1:])


def _listed(stdout: str) -> list[dict[str, Any]]:
    """The JSON list an ``airflow ... -o json`` command printed (log lines may come before it)."""
    (line,) = [line for line in stdout.splitlines() if line.startswith(("[{", "[]"))]
    return json.loads(line)


def _runs(airflow: Any) -> list[dict[str, Any]]:
    listed = _listed(airflow.cli("dags", "list-runs", "traitflow_daily", "-o", "json").stdout)
    return sorted(listed, key=lambda run: run["logical_date"])


def _wait_for_dag(airflow: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        dags = {dag["dag_id"]: dag for dag in _listed(airflow.cli("dags", "list", "-o", "json").stdout)}
        if "traitflow_daily" in dags:
            return dags["traitflow_daily"]
        time.sleep(3)
    pytest.fail(f"the dag-processor did not register traitflow_daily:\n{airflow.log_tail()}")


def _tries(airflow: Any, run_id: str) -> dict[str, tuple[str, int]]:
    """{task_id: (state, try_number)} of a run, from the standalone's SQLite metadata."""
    with sqlite3.connect(airflow.data_dir / "airflow" / "airflow.db") as db:
        rows = db.execute(
            "SELECT task_id, state, try_number FROM task_instance WHERE dag_id = ? AND run_id = ?",
            ("traitflow_daily", run_id),
        ).fetchall()
    return {task_id: (state, tries) for task_id, state, tries in rows}


@pytest.mark.slow
def test_readme_backfill_runs_days_in_order_one_at_a_time_and_reports_the_missing_day(
    start_standalone: Any, database_url: str, store: Store, store_schema: str, tmp_path: Path
) -> None:
    backfill, *after = readme_backfill_commands()
    assert after[0] == "airflow dags unpause traitflow_daily"
    _write_day_files(tmp_path / "data" / "sample")  # the script's default input folder
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    airflow = start_standalone(
        TRAITFLOW_DATABASE_URL=database_url,
        TRAITFLOW_DB_SCHEMA=store_schema,
        # No scheduled run beside the backfill's: a backfill is not bound by the start date.
        TRAITFLOW_START_DATE=tomorrow,
    )
    assert _wait_for_dag(airflow)["is_paused"] == "True"  # new DAGs start paused

    _run(airflow, backfill)
    created = _runs(airflow)
    assert [run["logical_date"][:10] for run in created] == [FIRST, MISSING, LAST]
    assert all(run["run_id"].startswith("backfill__") for run in created)
    time.sleep(8)  # several scheduler loops: nothing starts on a paused DAG
    assert {run["state"] for run in _runs(airflow)} == {"queued"}

    _run(airflow, after[0])
    deadline = time.monotonic() + RUNS_TIMEOUT_S
    runs = _runs(airflow)
    while {run["state"] for run in runs} - FINISHED:
        if time.monotonic() > deadline:
            pytest.fail(f"backfill runs not finished: {runs}\n{airflow.log_tail()}")
        time.sleep(5)
        runs = _runs(airflow)

    assert [run["state"] for run in runs] == ["success", "failed", "success"], runs
    for earlier, later in itertools.pairwise(runs):  # one at a time, in date order
        assert earlier["end_date"] <= later["start_date"], runs
    run_ids = {run["logical_date"][:10]: run["run_id"] for run in runs}

    ingested = dict(store.connection.execute("SELECT source, run_id FROM ingested_files").fetchall())
    assert {Path(source).name: run for source, run in ingested.items()} == {
        f"events_{FIRST}.csv": run_ids[FIRST],
        f"events_{LAST}.csv": run_ids[LAST],
    }
    reports = {r["run_key"][:10]: r["report"] for r in store.run_reports("daily", limit=10)}
    missing = reports["2026-03-03"]  # keyed by the day's end
    assert missing["run_id"] == run_ids[MISSING] and missing["outcome"] == "failed", missing
    assert missing["reason"].startswith(f"no event file dated {MISSING} in "), missing
    assert _tries(airflow, run_ids[MISSING])["ingest"] == ("failed", 1)  # no retries
    for day, key in ((FIRST, "2026-03-02"), (LAST, "2026-03-04")):  # no model yet: skipped, says why
        assert reports[key]["run_id"] == run_ids[day] and reports[key]["outcome"] == "skipped"
        assert reports[key]["reason"].startswith("no promoted model trained before"), reports[key]
        assert _tries(airflow, run_ids[day])["monitor"] == ("skipped", 1)
