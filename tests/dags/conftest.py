"""Airflow 3.3 test harness: SQLite metadata in a temp AIRFLOW_HOME, DagBag, and ``run_dag``.

How Airflow 3.3.2 is run here (the same recipe works for a quickstart):

* Airflow reads its configuration once, when ``airflow`` is first imported, so the environment
  below is set at import of this conftest, before any test module imports Airflow. pytest loads
  this file when it collects ``tests/dags``; nothing in ``tests/conftest.py`` or ``include/``
  imports Airflow. If a folder collected earlier already imported it, we stop with a clear error
  instead of silently writing to ``~/airflow``.
* ``AIRFLOW_HOME`` is a temp dir with a SQLite metadata DB, ``AIRFLOW__CORE__LOAD_EXAMPLES=False``,
  ``AIRFLOW__CORE__DAGS_FOLDER`` = the project's ``dags/``. The schema is created once per session
  with ``airflow.utils.db.upgradedb()`` (what ``airflow db migrate`` runs).
* ``dag.test(run_after=None, logical_date=..., run_conf=..., conn_file_path=None,
  variable_file_path=None, use_executor=False, mark_success_pattern=None)`` runs every task in this
  process (no scheduler, no api-server, no executor) and returns the ``DagRun``; a failing task
  does not raise, it leaves the run ``failed``; invalid ``run_conf`` raises ParamValidationError.
  Final states come from ``dag_run.get_task_instances(session=...)`` (see ``RunResult``).
* ``dag.test`` only runs DAGs that are serialized in the metadata DB; it syncs the dags-folder
  bundle itself, so DAGs defined in test modules are registered first (``register_dag``).
* ``dag.test`` is a *manual* run: its data interval is the timetable's manual interval for
  ``logical_date``, i.e. the last complete interval before it. For the Traitflow DAGs
  (``CronDataIntervalTimetable``) ``dag.test(logical_date=D)`` covers ``[D - 1 day, D)``, whereas
  the scheduled/backfill run with logical date D covers ``[D, D + 1 day)``.
* It honours retries and their delays, and it resolves ``run_conf`` into the DAG's own Param
  objects (values leak into later runs in the same process); ``run_dag`` neutralises both.
* Connections come from ``AIRFLOW_CONN_<ID>`` env vars (URI or JSON form); tasks read them with
  ``airflow.sdk.Connection.get``. Set them per test (``run_dag(..., env=...)``).
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS_DIR = REPO / "dags"
PROJECT_DAG_IDS = ("traitflow_daily", "traitflow_refresh_on_promotion", "traitflow_weekly_retrain")


def airflow_env(home: Path) -> dict[str, str]:
    """Environment for an isolated Airflow 3.3 with SQLite metadata under ``home``."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
        # The UI plugin has its own tests; DAG tests should not break when it is mid-edit.
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "plugins"),
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH": str(home / "bundles"),
    }


def _configure_airflow() -> Path:
    if "airflow" in sys.modules and not os.environ.get("_TRAITFLOW_AIRFLOW_HOME"):
        raise pytest.UsageError(
            "airflow was imported before tests/dags/conftest.py could configure it; "
            "run tests/dags in its own pytest process or import nothing from airflow at collection."
        )
    if existing := os.environ.get("_TRAITFLOW_AIRFLOW_HOME"):
        return Path(existing)  # already configured (e.g. conftest re-imported)
    home = Path(tempfile.mkdtemp(prefix="traitflow-airflow-"))
    (home / "plugins").mkdir()
    os.environ.update(airflow_env(home))
    os.environ["_TRAITFLOW_AIRFLOW_HOME"] = str(home)
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    # Airflow puts the dags folder on sys.path when it parses or runs a DAG (BundleDagBag);
    # do the same so tests import traitflow_common exactly like the DAG files do.
    if str(DAGS_DIR) not in sys.path:
        sys.path.append(str(DAGS_DIR))
    return home


AIRFLOW_HOME = _configure_airflow()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Silence one third-party deprecation for the tests in this folder only.

    Airflow's .airflowignore (glob syntax) handling uses a pathspec class that pathspec now
    deprecates; it fires on every DagBag fill and is not ours to fix. (A warnings filter set here
    would be overridden by pytest's per-test "always" for DeprecationWarning.)
    """
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning"))


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """The migrated SQLite metadata DB (created once per session)."""
    from airflow.utils import db

    db.upgradedb()
    return AIRFLOW_HOME / "airflow.db"


@pytest.fixture(scope="session")
def dagbag(airflow_db: Path) -> Any:
    """The project's DAGs, parsed the way the dag-processor parses them."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def register_dag(dag: Any) -> None:
    """Serialize a DAG that is not in the dags folder, so ``dag.test`` can create runs for it."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)


def _value(state: Any) -> str:
    """Plain string of a state enum (``TaskInstanceState.SUCCESS`` -> ``"success"``)."""
    return str(getattr(state, "value", state))


class RunResult(dict[str, str | None]):
    """``{task_id: final state}`` of one ``dag.test`` run, plus the run's id, state and XComs."""

    def __init__(self, dag_run: Any, states: Mapping[str, str | None]) -> None:
        super().__init__(states)
        self.dag_id: str = dag_run.dag_id
        self.run_id: str = dag_run.run_id
        self.state: str = _value(dag_run.state)
        self.data_interval: tuple[datetime | None, datetime | None] = (
            dag_run.data_interval_start,
            dag_run.data_interval_end,
        )

    def xcom(self, task_id: str, key: str = "return_value") -> Any:
        """A task's XCom in this run (None if it pushed nothing, e.g. skipped)."""
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session

        query = XComModel.get_many(key=key, run_id=self.run_id, dag_ids=self.dag_id, task_ids=task_id)
        with create_session() as session:
            row = session.execute(query.with_only_columns(XComModel.value)).first()
        return None if row is None else XComModel.deserialize_value(row)

    def ran(self) -> set[str]:
        return {task_id for task_id, state in self.items() if state == "success"}

    def skipped(self) -> set[str]:
        return {task_id for task_id, state in self.items() if state == "skipped"}


RunDag = Callable[..., RunResult]


@pytest.fixture
def run_dag(dagbag: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[RunDag]:
    """Run a DAG with ``dag.test`` and return its task states.

    ``run_dag(dag_or_id, logical_date, conf=None, env=None, retries=0)``: ``dag_or_id`` is a
    project dag_id or a DAG object (e.g. defined in the test module); ``env`` is applied for the
    duration of the test (connections, ``TRAITFLOW_DATABASE_URL``...). ``TRAITFLOW_DATA_DIR``
    defaults to a temp dir so per-run work folders never land in the repo. ``retries`` overrides
    every task's retries for this test: ``dag.test`` honours retry delays, so with the DAGs'
    exponential backoff a failing task would keep the test waiting for many minutes.
    """
    from airflow.utils.session import create_session

    monkeypatch.setenv("TRAITFLOW_DATA_DIR", str(tmp_path / "data"))

    def _run(
        dag_or_id: Any,
        logical_date: datetime | None,
        conf: dict[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        retries: int | None = 0,
    ) -> RunResult:
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        if isinstance(dag_or_id, str):
            dag = dagbag.dags[dag_or_id]
        else:
            dag = dag_or_id
            if Path(dag.fileloc).resolve().parent != DAGS_DIR:
                register_dag(dag)
        if retries is not None:
            for task in dag.tasks:
                monkeypatch.setattr(task, "retries", retries)
        # dag.test resolves run conf into the DAG's own Param objects (ParamsDict.__setitem__ ->
        # Param.resolve stores the value). A worker parses afresh per task, but in-process a
        # conf override would become the default of every later run: restore the values.
        saved = [
            (param, param.value)
            for ps in (dag.params, *(t.params for t in dag.tasks))
            for _, param in ps.items()
        ]
        try:
            dag_run = dag.test(logical_date=logical_date, run_conf=conf)
        finally:
            for param, value in saved:
                param.value = value
        with create_session() as session:
            states = {ti.task_id: ti.state for ti in dag_run.get_task_instances(session=session)}
        return RunResult(dag_run, {k: None if v is None else _value(v) for k, v in states.items()})

    yield _run
