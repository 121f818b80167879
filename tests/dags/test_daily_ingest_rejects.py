"""The daily DAG's ingest (``dag.test``, real PostgreSQL) on a hostile file and a mostly-bad one."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from traitflow.events import DEFAULT_MAX_REJECT_SHARE
from traitflow.store import Store

MARCH_2 = datetime(2026, 3, 2, tzinfo=UTC)  # a manual run at Mar 2 covers Mar 1
MARCH_3 = datetime(2026, 3, 3, tzinfo=UTC)


def test_form_default_is_the_library_default(dagbag) -> None:
    assert dagbag.dags["traitflow_daily"].params["max_reject_share"] == DEFAULT_MAX_REJECT_SHARE


def test_daily_ingest_stores_good_rows_rejects_bad_lines_and_refuses_a_mostly_bad_file(
    run_dag, store: Store, store_schema: str, database_url: str, tmp_path: Path, hostile_events
) -> None:
    input_dir = tmp_path / "input"
    input_dir.mkdir()
    hostile_events.write(input_dir / "events_2026-03-01.csv")
    env = {
        "TRAITFLOW_DATABASE_URL": database_url,
        "TRAITFLOW_DB_SCHEMA": store_schema,
        "TRAITFLOW_INPUT_ROOT": str(input_dir),
    }
    conf = {"input_dir": str(input_dir), "mapping": "taobao"}

    result = run_dag("traitflow_daily", MARCH_2, conf=conf, env=env)
    assert result.state == "success", result
    ingest = result.xcom("ingest")
    assert (ingest["n_read"], ingest["n_inserted"], ingest["n_rejected"]) == (51, 42, 9)
    counts = store.table_counts()
    assert (counts["events"], counts["rejected_events"]) == (42, 9)
    rejects = store.connection.execute("SELECT row_number, reason FROM rejected_events ORDER BY 1")
    assert [tuple(row) for row in rejects] == hostile_events.rejects

    # The next day's file is mostly lines of another dialect: the task fails, nothing is stored.
    good = [f"v{i},i1,c1,pv,{1772409600 + i}" for i in range(5)]
    bad = [f"v{i};i1;c1;pv;1772409600" for i in range(15)]
    (input_dir / "events_2026-03-02.csv").write_text("\n".join(good + bad) + "\n")
    refused = run_dag("traitflow_daily", MARCH_3, conf=conf, env=env)
    assert refused.state == "failed" and refused["ingest"] == "failed", refused
    assert store.table_counts() == counts

    relaxed = run_dag("traitflow_daily", MARCH_3, conf={**conf, "max_reject_share": 0.8}, env=env)
    assert relaxed.state == "success", relaxed
    assert relaxed.xcom("ingest")["n_inserted"] == 5 and relaxed.xcom("ingest")["n_rejected"] == 15
