"""Both DAGs through Airflow (``dag.test``) on sample data against a real PostgreSQL.

Timeline (2026-03-01 is a Sunday, so weekly intervals end on Mar 8 and Mar 15):
  days Mar 1-7   behaviour A (synthetic seed 3), one bad row among them
  days Mar 8-14  behaviour B: a different product -> category structure (seed 4) and a third
                 of the products renamed, i.e. new vocabulary *and* drifted relationships.
A manual ``dag.test(logical_date=T)`` covers the interval that ends at T.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from traitflow.store import Store
from traitflow.synthetic import SyntheticSpec, generate

START = datetime(2026, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)
# Small and fast. At 7K events a week, retraining the same behaviour with another seed measures
# ~0.09 aligned drift and different behaviour ~0.67 (the 0.1 default is calibrated on 40K+
# events, where the same comparison gives 0.01 vs 0.85), so this workload uses a 0.25 threshold.
WEEKLY_CONF = {
    "k": 6,
    "vector_size": 16,
    "epochs": 20,
    "workers": 1,
    "training_window_days": 7,
    "drift_threshold": 0.25,
}

WEEKLY_BRANCHES = (
    "skip_retrain",
    "train_candidate",
    "reject_candidate",
    "measure_drift",
    "refit_traits",
    "keep_traits",
)


def _write_days(events: pd.DataFrame, folder: Path) -> None:
    events = events.copy()
    events["event_time"] = events["event_time"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    day = events["event_time"].str.slice(0, 10)
    for name, frame in events.groupby(day):
        frame.to_csv(folder / f"events_{name}.csv", index=False)


@pytest.fixture(scope="module")
def input_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("input")
    spec = dict(n_customers=400, n_products=300, n_categories=12, n_segments=4, n_events=7_000, days=7)
    first = generate(SyntheticSpec(**spec, start=START, seed=3)).events
    second = generate(SyntheticSpec(**spec, start=START + 7 * DAY, seed=4)).events
    renamed = second["product_id"].str.slice(1).astype(int) % 3 == 0
    second.loc[renamed, "product_id"] = "q" + second.loc[renamed, "product_id"].str.slice(1)
    _write_days(first, folder)
    _write_days(second, folder)
    bad = folder / "events_2026-03-02.csv"
    bad.write_text(bad.read_text() + "c0001,2026-03-02T10:00:00Z,teleport,p001,cat_01,,\n")
    return folder


@pytest.fixture
def pipeline(run_dag, store: Store, store_schema: str, database_url: str, input_dir: Path):
    env = {
        "TRAITFLOW_DATABASE_URL": database_url,
        "TRAITFLOW_DB_SCHEMA": store_schema,
        "TRAITFLOW_INPUT_ROOT": str(input_dir),  # the daily DAG reads files only inside it
    }
    daily_conf = {"input_dir": str(input_dir), "mapping": "canonical"}

    def daily(day: int) -> dict:
        result = run_dag("traitflow_daily", START + (day + 1) * DAY, conf=daily_conf, env=env)
        assert result.state == "success", result
        return result

    def weekly(end: datetime, **conf) -> dict:
        result = run_dag("traitflow_weekly_retrain", end, conf={**WEEKLY_CONF, **conf}, env=env)
        assert result.state == "success", result
        return result

    def refresh() -> dict:
        return run_dag("traitflow_refresh_on_promotion", None, env=env)

    return daily, weekly, refresh


def taken(result: dict) -> set[str]:
    return {task for task in WEEKLY_BRANCHES if result[task] == "success"}


def test_weekly_branches_daily_updates_and_every_table(pipeline, store: Store):
    daily, weekly, refresh = pipeline
    for day in range(7):
        daily(day)
    assert store.active_model_version() is None

    first = weekly(START + 7 * DAY)  # no model yet: train, gate (nothing to compare), refit
    assert taken(first) == {"train_candidate", "measure_drift", "refit_traits"}
    assert first["promote"] == "success" and first.xcom("promote")["model_version"] == 1

    unchanged = weekly(START + 7 * DAY)  # same window, no new vocabulary: neither branch
    assert taken(unchanged) == {"skip_retrain"}
    assert unchanged["promote"] == "skipped" and unchanged["report"] == "success"

    same_behaviour = weekly(START + 7 * DAY, force_retrain=True, seed=7)  # new seed, same data
    decision = same_behaviour.xcom("check_drift", key="decision")
    assert taken(same_behaviour) == {"train_candidate", "measure_drift", "keep_traits"}, decision
    assert same_behaviour.xcom("promote")["model_version"] == 2

    for day in range(7, 14):
        daily(day)
    drifted = weekly(START + 14 * DAY)  # behaviour B: >5% new tokens, drifted relations
    vocab = drifted.xcom("check_new_vocab", key="decision")
    assert vocab["branch"] == "train_candidate" and "new-vocabulary ratio" in vocab["reason"], vocab
    assert taken(drifted) == {"train_candidate", "measure_drift", "refit_traits"}, drifted.xcom(
        "check_drift", key="decision"
    )
    assert store.active_model_version() == 3
    latest = store.model_versions().set_index("model_version").loc[3]
    # Auto mode continued v2 (recent, compatible): an increment, judged by its own drift threshold.
    assert (latest["training_mode"], latest["parent_version"]) == ("incremental", 2)
    drift = latest["drift"]
    assert drift["measured"] and drift["recent_weighted_drift"] > drift["increment_threshold"] == 0.015
    assert latest["metrics"]["quality_gate"]["passed"] is True
    assert store.load_model(3).trait_match["n_matched"] >= 1  # the match report is kept
    assert refresh().state == "success"

    counts = store.table_counts()
    # No names in the sample; the commits took every staged shard batch and shard plan.
    emptied = ("product_names", "profile_shards", "shard_plans", "shard_members")
    filled = {table: n for table, n in counts.items() if table not in emptied}
    assert all(n > 0 for n in filled.values()), counts
    assert [counts[table] for table in emptied] == [0, 0, 0, 0], counts
    rejects = store.connection.execute("SELECT reason FROM rejected_events").fetchall()
    assert rejects == [("unknown_action",)]
    assert store.model_version_for(START + 10 * DAY) == 2  # a date between retrains keeps its model
    reports = {r["run_key"] for r in store.run_reports("weekly", limit=10)}
    assert (START + 14 * DAY).isoformat() in reports


def test_daily_backfill_in_order_and_reverse_gives_identical_rows(
    pipeline, run_dag, database_url, make_store, input_dir: Path, store: Store
):
    daily, weekly, _ = pipeline
    for day in range(7):
        daily(day)
    weekly(START + 7 * DAY)

    reverse = make_store(fresh=True)
    env = {
        "TRAITFLOW_DATABASE_URL": database_url,
        "TRAITFLOW_DB_SCHEMA": reverse.schema,
        "TRAITFLOW_INPUT_ROOT": str(input_dir),
    }
    conf = {"input_dir": str(input_dir), "mapping": "canonical"}
    for day in range(7):
        assert run_dag("traitflow_daily", START + (day + 1) * DAY, conf=conf, env=env).state == "success"
    weekly_conf = {**WEEKLY_CONF}
    assert run_dag("traitflow_weekly_retrain", START + 7 * DAY, conf=weekly_conf, env=env).state == "success"

    for day in (7, 8, 9):
        daily(day)
    for day in (9, 8, 7):
        assert run_dag("traitflow_daily", START + (day + 1) * DAY, conf=conf, env=env).state == "success"
    for query in (
        "SELECT customer_id, as_of, model_version, traits, n_events, cold_start"
        " FROM customer_profile_history ORDER BY customer_id, as_of",
        "SELECT customer_id, as_of, model_version, traits, n_events, cold_start"
        " FROM customer_profiles ORDER BY customer_id",
    ):
        rows = store.connection.execute(query).fetchall()
        assert rows and rows == reverse.connection.execute(query).fetchall(), query


def test_a_weekly_run_on_an_empty_window_is_green_and_reports_why(
    run_dag, store: Store, store_schema: str, database_url: str
):
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    env = {"TRAITFLOW_DATABASE_URL": database_url, "TRAITFLOW_DB_SCHEMA": store_schema}
    conf = {**WEEKLY_CONF, "force_retrain": True}  # nothing ingested: even forced, nothing to train
    # The DAG's own retries (3, with backoff): a retried task would show as try_number > 1.
    result = run_dag("traitflow_weekly_retrain", START + 7 * DAY, conf=conf, env=env, retries=None)
    assert result.state == "success", result
    assert taken(result) == {"skip_retrain"}
    assert result["build_corpus"] == "success" and result["report"] == "success"
    with create_session() as session:
        tries = session.execute(
            select(TaskInstance.task_id, TaskInstance.try_number).where(TaskInstance.run_id == result.run_id)
        ).all()
    tries = dict(tries)
    assert tries["build_corpus"] == tries["check_new_vocab"] == tries["report"] == 1
    assert max(tries.values()) == 1  # no task was retried
    (report,) = store.run_reports("weekly", limit=10)
    reason = report["report"]["check_new_vocab"]["reason"]
    assert reason.startswith("skip: no events in the training window [2026-03-01T00:00:00+00:00"), reason
    assert report["report"]["build_corpus"]["n_events"] == 0
    assert store.model_versions().empty
