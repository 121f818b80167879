"""Quickstart: sample data -> weekly retrain -> daily runs, all through Airflow's ``dag.test()``.

Run by ``scripts/quickstart.sh`` after the environment is installed. Uses SQLite for Airflow's
metadata (``data/airflow``) and, unless ``TRAITFLOW_DATABASE_URL`` is set, an embedded
PostgreSQL under ``data/pgdata`` that stays up afterwards so you can query it.

Timeline (sample data starts Thursday 2026-01-01, one file per day in ``data/sample``):
  daily runs for Jan 1..10  -> ingest each day's file (no model yet: profiles are skipped, and say so)
  weekly retrain, interval ending Sunday Jan 11 -> train on everything before it (training
                               window 90 days), quality gate, drift branch, promote model 1
  daily runs for Jan 11..13 -> ingest and update the profiles of each day's customers with model 1
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_START = datetime(2026, 1, 1, tzinfo=UTC)
DAYS_BEFORE_RETRAIN = 10  # Jan 11, 2026 is a Sunday: the end of a @weekly interval


def configure_environment(data: Path) -> None:
    """Airflow reads its configuration on first import: set everything before importing it."""
    home = data / "airflow"
    (home / "plugins").mkdir(parents=True, exist_ok=True)
    os.environ.update(
        {
            "TRAITFLOW_DATA_DIR": str(data),
            "TRAITFLOW_INPUT_DIR": str(data / "sample"),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH": str(home / "bundles"),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        }
    )
    sys.path.append(str(ROOT / "dags"))


def ensure_database(data: Path) -> str:
    from traitflow.store import Store, embedded_url, mask_url

    url = os.environ.get("TRAITFLOW_DATABASE_URL", "").strip()
    if not url:
        url = embedded_url(data / "pgdata", keep_running=True)
        os.environ["TRAITFLOW_DATABASE_URL"] = url
    with Store(url) as store:
        store.upgrade()
    print(f"Traitflow database: {mask_url(url)}")
    return url


def ensure_sample(data: Path, days: int) -> None:
    from traitflow.synthetic import SyntheticSpec, write_sample

    sample = data / "sample"
    if any(sample.glob("events_*.csv")):
        print(f"sample data: reusing {sample}")
        return
    spec = SyntheticSpec(
        n_customers=3000,
        n_products=1500,
        n_categories=24,
        n_segments=8,
        n_events=150_000,
        start=SAMPLE_START,
        days=days,
        seed=7,
    )
    paths = write_sample(sample, spec, days_per_file=1)
    # The ground truth (segments, products) goes beside the input folder, not in it: the daily
    # DAG ingests every dated file there and warns about anything else.
    truth = data / "sample_truth"
    truth.mkdir(parents=True, exist_ok=True)
    for path in paths:
        if not path.name.startswith("events_"):
            path.rename(truth / path.name)
    print(
        f"sample data: {spec.n_events} events, {spec.n_customers} customers, {spec.n_segments} planted "
        f"segments -> {sample} (ground truth in {truth})"
    )


def run(dag, logical_date: datetime, conf: dict | None = None) -> dict[str, str]:
    from airflow.utils.session import create_session

    started = time.perf_counter()
    dag_run = dag.test(logical_date=logical_date, run_conf=conf)
    with create_session() as session:
        states = {
            ti.task_id: str(getattr(ti.state, "value", ti.state))
            for ti in dag_run.get_task_instances(session=session)
        }
    state = str(getattr(dag_run.state, "value", dag_run.state))
    taken = ", ".join(f"{task}={s}" for task, s in sorted(states.items()))
    start, end = dag_run.data_interval_start, dag_run.data_interval_end
    elapsed = time.perf_counter() - started
    print(f"  {dag.dag_id} [{start:%Y-%m-%d}, {end:%Y-%m-%d}): {state} in {elapsed:.1f}s  [{taken}]")
    if state != "success":
        raise SystemExit(f"{dag.dag_id} run for {logical_date:%Y-%m-%d} failed; see the task logs above")
    return states


def summarize(url: str) -> None:
    from traitflow.store import Store

    with Store(url) as store:
        traits = store.traits()
        print("\nTraits of the active model (size = customers whose dominant trait it is):")
        for row in traits.itertuples():
            print(
                f"  trait {row.trait_id:>3}  size {row.size:>5}  {row.label:<28} top products: "
                f"{', '.join(list(row.top_products)[:3])}"
            )
        top = store.top_customers(int(traits["trait_id"].iloc[0]), n=3)
        print(f"\nTop customers of trait {int(traits['trait_id'].iloc[0])}:")
        print(top.to_string(index=False))
        customer = str(top["customer_id"].iloc[0])
        profile = store.current_profile(customer)
        print(f"\nCurrent profile of {customer}:")
        keys = ("as_of", "model_version", "n_events", "n_known_tokens", "confidence", "cold_start")
        for key in (*keys, "dominant_trait_id"):
            print(f"  {key}: {profile[key]}")
        print("\nRow counts:", {k: v for k, v in store.table_counts().items()})
    print(
        "\nQuery it yourself (schema 'traitflow'): customer_profiles, customer_profile_history,\n"
        "customer_trait_scores (view), trait_components, model_versions, run_reports, rejected_events.\n"
        "CLI: .venv/bin/traitflow traits | top TRAIT_ID | similar CUSTOMER_ID | reports\n"
        f"database URL: {url}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--daily-after", type=int, default=3, help="daily runs after the retrain")
    args = parser.parse_args()
    started = time.perf_counter()
    data = args.data_dir.resolve()
    configure_environment(data)
    url = ensure_database(data)
    ensure_sample(data, days=DAYS_BEFORE_RETRAIN + args.daily_after)

    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils import db

    # Airflow's .airflowignore handling uses a pathspec API that now warns on every DAG parse,
    # and httpx warns about starlette's test client; neither concerns this project.
    warnings.filterwarnings("ignore", message=".*GitWildMatchPattern")
    warnings.filterwarnings("ignore", message=".*starlette.testclient")
    db.upgradedb()
    dags = DagBag(dag_folder=str(ROOT / "dags")).dags
    daily, weekly = dags["traitflow_daily"], dags["traitflow_weekly_retrain"]
    day = timedelta(days=1)
    # A manual run with logical date T covers the day before T.
    print("\nDaily runs before any model exists (ingest only):")
    for offset in range(1, DAYS_BEFORE_RETRAIN + 1):
        run(daily, SAMPLE_START + offset * day)
    print("\nWeekly retrain:")
    run(weekly, SAMPLE_START + DAYS_BEFORE_RETRAIN * day)
    print("\nDaily runs with the promoted model:")
    for offset in range(DAYS_BEFORE_RETRAIN + 1, DAYS_BEFORE_RETRAIN + 1 + args.daily_after):
        run(daily, SAMPLE_START + offset * day)
    summarize(url)
    print(f"\nquickstart finished in {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
