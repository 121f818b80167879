"""Quickstart: sample data -> weekly retrain -> daily runs, all through Airflow's ``dag.test()``.

Run by ``scripts/quickstart.sh`` after the environment is installed. Uses SQLite for Airflow's
metadata (``data/airflow/airflow.db``, the database ``scripts/airflow_standalone.sh`` uses too, so
these runs show in the UI) and, unless ``TRAITFLOW_DATABASE_URL`` is set, an embedded PostgreSQL
under ``data/pgdata`` that stays up afterwards so you can query it.

Timeline (``sample_timeline``), dated relative to the day the sample is generated, one file per
day in ``data/sample``, so the sample ends with the last complete day and a manual trigger of
either DAG in the UI finds data in its window:
  daily runs for the first 10 days -> ingest each day's file (no model yet: profiles are skipped,
                                      and say so)
  weekly retrain, interval ending on the Sunday after them -> train on everything before it
                                      (training window 90 days), quality gate, drift branch,
                                      promote model 1
  daily runs for the remaining days up to yesterday -> ingest and update the profiles of each
                                      day's customers with model 1
The timeline is recorded with the sample (``data/sample_truth/timeline.env``) and reused on a
rerun; ``airflow_standalone.sh`` sets the DAGs' start date from it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DAYS_BEFORE_RETRAIN = 10
DAY = timedelta(days=1)
# The quickstart's manual runs take logical dates one second past midnight: a manual run covers the
# complete interval before its logical date, so the data is the same, and no run can hold the
# midnight logical date the scheduler gives its own run of the same day once the DAGs are unpaused
# (Airflow allows one run per logical date; a taken one stalls the scheduled run).
PAST_MIDNIGHT = timedelta(seconds=1)


@dataclass(frozen=True)
class Timeline:
    """The sample covers ``[start, end)`` (UTC midnights); ``retrain`` is a Sunday, the end of the
    ``@weekly`` interval the quickstart's weekly run covers."""

    start: datetime
    retrain: datetime
    end: datetime

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    def to_env(self) -> str:
        return f"TRAITFLOW_START_DATE={self.start:%Y-%m-%d}\nTRAITFLOW_SAMPLE_END={self.end:%Y-%m-%d}\n"

    @classmethod
    def from_env(cls, text: str) -> Timeline:
        values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        start = datetime.fromisoformat(values["TRAITFLOW_START_DATE"]).replace(tzinfo=UTC)
        end = datetime.fromisoformat(values["TRAITFLOW_SAMPLE_END"]).replace(tzinfo=UTC)
        return cls(start, _retrain_sunday(start), end)


def _retrain_sunday(start: datetime) -> datetime:
    """The first Sunday at least ``DAYS_BEFORE_RETRAIN`` days after ``start``."""
    earliest = start + DAYS_BEFORE_RETRAIN * DAY
    return earliest + ((6 - earliest.weekday()) % 7) * DAY


def sample_timeline(now: datetime, days_after_retrain: int = 3) -> Timeline:
    """A sample ending with the last complete UTC day before ``now``, with at least
    ``DAYS_BEFORE_RETRAIN`` days before the retrain's Sunday and ``days_after_retrain`` after it."""
    end = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    latest = end - days_after_retrain * DAY
    retrain = latest - ((latest.weekday() + 1) % 7) * DAY  # the Sunday on or before `latest`
    return Timeline(start=retrain - DAYS_BEFORE_RETRAIN * DAY, retrain=retrain, end=end)


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


def ensure_sample(data: Path, days_after_retrain: int) -> Timeline:
    from traitflow.synthetic import SyntheticSpec, write_sample

    sample, truth = data / "sample", data / "sample_truth"
    recorded = truth / "timeline.env"
    if any(sample.glob("events_*.csv")) and recorded.is_file():
        timeline = Timeline.from_env(recorded.read_text())
        print(f"sample data: reusing {sample} ({timeline.start:%Y-%m-%d} to {timeline.end - DAY:%Y-%m-%d})")
        return timeline
    if any(sample.glob("events_*.csv")):
        raise SystemExit(f"{sample} holds event files but no {recorded}: remove the folder to regenerate")
    timeline = sample_timeline(datetime.now(UTC), days_after_retrain)
    spec = SyntheticSpec(
        n_customers=3000,
        n_products=1500,
        n_categories=24,
        n_segments=8,
        n_events=150_000,
        start=timeline.start,
        days=timeline.days,
        seed=7,
    )
    paths = write_sample(sample, spec, days_per_file=1)
    # The ground truth (segments, products) goes beside the input folder, not in it: the daily
    # DAG ingests every dated file there and warns about anything else.
    truth.mkdir(parents=True, exist_ok=True)
    for path in paths:
        if not path.name.startswith("events_"):
            path.rename(truth / path.name)
    recorded.write_text(timeline.to_env())
    print(
        f"sample data: {spec.n_events} events, {spec.n_customers} customers, {spec.n_segments} planted "
        f"segments, {timeline.start:%Y-%m-%d} to {timeline.end - DAY:%Y-%m-%d} -> {sample} "
        f"(ground truth in {truth})"
    )
    return timeline


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


def unpause(dag_ids: list[str]) -> None:
    """Unpause the DAGs the quickstart ran, so the UI (``airflow_standalone.sh``) schedules them.

    Safe on a fresh install: catch-up is off (``TRAITFLOW_CATCHUP``), so the scheduler adds one
    run per DAG, for its latest complete interval, which the sample covers.
    """
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import update

    with create_session() as session:
        session.execute(update(DagModel).where(DagModel.dag_id.in_(dag_ids)).values(is_paused=False))
    print(f"unpaused for the scheduler: {', '.join(dag_ids)}")


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
    parser.add_argument(
        "--daily-after", type=int, default=3, help="at least this many daily runs after the retrain"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    data = args.data_dir.resolve()
    configure_environment(data)
    url = ensure_database(data)
    timeline = ensure_sample(data, days_after_retrain=args.daily_after)
    # Airflow creates no task before a DAG's start date: start the DAGs with the sample.
    os.environ.setdefault("TRAITFLOW_START_DATE", f"{timeline.start:%Y-%m-%d}")

    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils import db

    # Airflow's .airflowignore handling uses a pathspec API that now warns on every DAG parse,
    # and httpx warns about starlette's test client; neither concerns this project.
    warnings.filterwarnings("ignore", message=".*GitWildMatchPattern")
    warnings.filterwarnings("ignore", message=".*starlette.testclient")
    db.upgradedb()
    dags = DagBag(dag_folder=str(ROOT / "dags")).dags
    daily, weekly = dags["traitflow_daily"], dags["traitflow_weekly_retrain"]
    # A manual run with logical date T covers the day before T (the daily DAG) or the last
    # complete week before T (the weekly one).
    print("\nDaily runs before any model exists (ingest only):")
    for offset in range(1, (timeline.retrain - timeline.start).days + 1):
        run(daily, timeline.start + offset * DAY + PAST_MIDNIGHT)
    print("\nWeekly retrain:")
    run(weekly, timeline.retrain + PAST_MIDNIGHT)
    print("\nDaily runs with the promoted model:")
    for offset in range(1, (timeline.end - timeline.retrain).days + 1):
        run(daily, timeline.retrain + offset * DAY + PAST_MIDNIGHT)
    unpause([daily.dag_id, weekly.dag_id, "traitflow_refresh_on_promotion"])
    summarize(url)
    from traitflow.html_report import write_report
    from traitflow.store import Store

    with Store(url) as store:
        print(f"\nHTML report (charts, traits): {write_report(store, data / 'report.html')}")
    print(f"\nquickstart finished in {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
