"""The DAG files parse, carry the operational settings we rely on, and are wired as designed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from traitflow.config import PipelineConfig

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
PROJECT_DAG_IDS = ("traitflow_daily", "traitflow_refresh_on_promotion", "traitflow_weekly_retrain")

JOIN = "none_failed_min_one_success"

EXPECTED_EDGES: dict[str, set[tuple[str, str]]] = {
    "traitflow_daily": {
        ("ingest", "select_customers"),
        ("select_customers", "plan_update"),
        ("plan_update", "shard_ids"),
        ("plan_update", "update_profiles"),  # data: the plan, one mapped instance per shard
        ("shard_ids", "update_profiles"),
        ("plan_update", "commit_update"),
        ("update_profiles", "commit_update"),
        ("commit_update", "monitor"),
        ("monitor", "maintain_history"),
    },
    "traitflow_weekly_retrain": {
        ("build_corpus", "check_new_vocab"),
        ("build_corpus", "train_candidate"),  # data: corpus_info
        ("check_new_vocab", "train_candidate"),
        ("check_new_vocab", "skip_retrain"),
        ("train_candidate", "quality_gate"),
        ("train_candidate", "measure_drift"),  # data: candidate_info
        ("train_candidate", "reject_candidate"),  # data: candidate_info
        ("train_candidate", "refit_traits"),  # data: candidate_info
        ("train_candidate", "keep_traits"),  # data: candidate_info
        ("quality_gate", "measure_drift"),
        ("quality_gate", "reject_candidate"),
        ("measure_drift", "check_drift"),
        ("check_drift", "refit_traits"),
        ("check_drift", "keep_traits"),
        ("refit_traits", "plan_recompute"),
        ("keep_traits", "plan_recompute"),
        ("plan_recompute", "shard_ids"),
        ("plan_recompute", "recompute_profiles"),  # data: the plan, one mapped instance per shard
        ("shard_ids", "recompute_profiles"),
        ("plan_recompute", "promote"),
        ("recompute_profiles", "promote"),
        ("measure_drift", "promote"),  # data: the drift result, stored with the promoted model
        ("promote", "report"),
        ("skip_retrain", "report"),
        ("reject_candidate", "report"),
    },
    "traitflow_refresh_on_promotion": set(),
}
EXPECTED_TASKS = {
    "traitflow_refresh_on_promotion": {"refresh_profiles"},
}
BRANCHES = {
    "traitflow_weekly_retrain": {
        "check_new_vocab": {"train_candidate", "skip_retrain"},
        "quality_gate": {"measure_drift", "reject_candidate"},
        "check_drift": {"refit_traits", "keep_traits"},
    }
}
# Tasks that train or read the whole training window get the training timeout.
# reject_candidate fits the candidate's traits to store it as a rejected version.
LONG_TASKS = {
    "build_corpus",
    "train_candidate",
    "reject_candidate",
    "refit_traits",
    "keep_traits",
    "recompute_profiles",
}
HEAVY_MODULES = ("numpy", "pandas", "gensim", "sklearn", "scipy", "pyarrow", "psycopg", "pgserver")


def _edges(dag: Any) -> set[tuple[str, str]]:
    return {(t.task_id, d) for t in dag.tasks for d in t.downstream_task_ids}


def _tasks(dag_id: str) -> set[str]:
    return EXPECTED_TASKS.get(dag_id) or {t for edge in EXPECTED_EDGES[dag_id] for t in edge}


def test_dagbag_loads_all_dags_without_errors(dagbag: Any) -> None:
    assert dagbag.import_errors == {}
    assert sorted(dagbag.dag_ids) == sorted(PROJECT_DAG_IDS)


@pytest.mark.parametrize("dag_id", PROJECT_DAG_IDS)
def test_operational_settings(dagbag: Any, dag_id: str) -> None:
    dag = dagbag.dags[dag_id]
    assert "traitflow" in dag.tags
    assert dag.max_active_runs == 1
    assert dag.doc_md and dag.doc_md.strip()
    for task in dag.tasks:
        assert task.owner == "traitflow", task.task_id
        assert task.retries >= 1, task.task_id
        # Airflow 3: a float multiplier; True (== 1.0) would silently mean "no backoff".
        assert task.retry_exponential_backoff >= 2, task.task_id
        assert task.max_retry_delay is not None, task.task_id
        # A hung task fails and is retried instead of holding its slot forever.
        assert task.execution_timeout == timedelta(hours=6 if task.task_id in LONG_TASKS else 2), task.task_id


@pytest.mark.parametrize("dag_id", PROJECT_DAG_IDS)
def test_task_graph(dagbag: Any, dag_id: str) -> None:
    dag = dagbag.dags[dag_id]
    assert set(dag.task_ids) == _tasks(dag_id)
    assert _edges(dag) == EXPECTED_EDGES[dag_id]


@pytest.mark.parametrize(
    ("dag_id", "cron", "interval", "catchup"),
    [
        ("traitflow_daily", "0 0 * * *", timedelta(days=1), False),
        ("traitflow_weekly_retrain", "0 0 * * 0", timedelta(weeks=1), False),
    ],
)
def test_schedules_have_a_real_data_interval(
    dagbag: Any, dag_id: str, cron: str, interval: timedelta, catchup: bool
) -> None:
    """Scheduled/backfill run D covers [D, D + interval); a manual run at T the last one before T."""
    from airflow.sdk import CronDataIntervalTimetable
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.serialization.serialized_objects import DagSerialization

    dag = dagbag.dags[dag_id]
    assert isinstance(dag.timetable, CronDataIntervalTimetable)  # a bare "@daily" has start == end
    assert dag.timetable.expression == cron
    assert dag.catchup is catchup

    day = datetime(2026, 1, 4, tzinfo=UTC)  # a Sunday, so valid for both schedules
    # What the scheduler and `airflow backfill create --from-date D --to-date D` create:
    scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    (info,) = scheduler_dag.iter_dagrun_infos_between(day, day)
    assert info.logical_date == day
    assert (info.data_interval.start, info.data_interval.end) == (day, day + interval)
    # What a manual trigger / dag.test(logical_date=T) gets:
    manual = coerce_to_core_timetable(dag.timetable).infer_manual_data_interval(run_after=day + interval / 2)
    assert (manual.start, manual.end) == (day - interval, day)  # the last complete interval


@pytest.mark.parametrize(("value", "expected"), [(None, False), ("true", True), ("0", False), ("YES", True)])
def test_daily_catchup_is_a_deployment_setting_off_by_default(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: bool
) -> None:
    from traitflow_common import catchup_enabled

    if value is None:
        monkeypatch.delenv("TRAITFLOW_CATCHUP", raising=False)
    else:
        monkeypatch.setenv("TRAITFLOW_CATCHUP", value)
    assert catchup_enabled() is expected


def test_a_misspelt_catchup_or_missing_input_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from traitflow.config import ConfigError, missing_input_policy
    from traitflow_common import catchup_enabled

    monkeypatch.setenv("TRAITFLOW_CATCHUP", "maybe")
    with pytest.raises(ValueError, match="TRAITFLOW_CATCHUP"):
        catchup_enabled()
    monkeypatch.setenv("TRAITFLOW_MISSING_INPUT", "retry")
    with pytest.raises(ConfigError, match="fail"):
        missing_input_policy()
    monkeypatch.setenv("TRAITFLOW_MISSING_INPUT", "Skip")
    assert missing_input_policy() == "skip"


# Tasks routed to a Celery queue of their own when the deployment names one (docker-compose's
# celery profile does): the training task and the profile shards.
QUEUED_TASKS = {
    "traitflow_weekly_retrain": {"train_candidate": "training", "recompute_profiles": "profiles"},
    "traitflow_daily": {"update_profiles": "profiles"},
}


@pytest.mark.parametrize("dag_id", sorted(QUEUED_TASKS))
def test_heavy_tasks_go_to_their_celery_queue_only_when_one_is_configured(
    dagbag: Any, airflow_db: Path, monkeypatch: pytest.MonkeyPatch, dag_id: str
) -> None:
    """Every task is on Airflow's default queue unless the deployment names the training and
    profile queues; then those tasks alone move to them."""
    from airflow.dag_processing.dagbag import DagBag

    assert {task.queue for task in dagbag.dags[dag_id].tasks} == {"default"}
    monkeypatch.setenv("TRAITFLOW_TRAINING_QUEUE", "training")
    monkeypatch.setenv("TRAITFLOW_PROFILES_QUEUE", "profiles")
    parsed = DagBag(dag_folder=str(DAGS_DIR / f"{dag_id}.py")).dags[dag_id]
    queues = {task.task_id: task.queue for task in parsed.tasks}
    assert {task_id: queues.pop(task_id) for task_id in QUEUED_TASKS[dag_id]} == QUEUED_TASKS[dag_id]
    assert set(queues.values()) == {"default"}


def test_promotion_asset_links_weekly_and_refresh(dagbag: Any) -> None:
    from airflow.sdk import Asset

    asset = Asset("traitflow://models/active")
    promote = dagbag.dags["traitflow_weekly_retrain"].get_task("promote")
    assert promote.outlets == [asset]
    others = [t.task_id for t in dagbag.dags["traitflow_weekly_retrain"].tasks if t.outlets]
    assert others == ["promote"]  # only a promotion may announce a new model
    refresh = dagbag.dags["traitflow_refresh_on_promotion"]
    assert list(refresh.timetable.asset_condition.objects) == [asset]


def test_branch_structure(dagbag: Any) -> None:
    dag = dagbag.dags["traitflow_weekly_retrain"]
    for branch_id, options in BRANCHES["traitflow_weekly_retrain"].items():
        branch = dag.get_task(branch_id)
        assert branch.inherits_from_skipmixin, branch_id
        assert set(branch.downstream_task_ids) == options
    downstream = {t: set(dag.get_task(t).get_flat_relative_ids(upstream=False)) for t in dag.task_ids}
    assert downstream["skip_retrain"] == {"report"}
    assert downstream["reject_candidate"] == {"report"}
    assert downstream["train_candidate"] == {
        "quality_gate",
        "measure_drift",
        "reject_candidate",
        "check_drift",
        "refit_traits",
        "keep_traits",
        "plan_recompute",
        "shard_ids",
        "recompute_profiles",
        "promote",
        "report",
    }
    assert downstream["measure_drift"] == {
        "check_drift",
        "refit_traits",
        "keep_traits",
        "plan_recompute",
        "shard_ids",
        "recompute_profiles",
        "promote",
        "report",
    }
    assert (
        downstream["refit_traits"]
        == downstream["keep_traits"]
        == {"plan_recompute", "shard_ids", "recompute_profiles", "promote", "report"}
    )


def test_joins_after_branches_use_none_failed_min_one_success(dagbag: Any) -> None:
    """A task fed by two exclusive branch paths must not be skipped because one path was."""
    dag = dagbag.dags["traitflow_weekly_retrain"]

    def subtree(task_id: str) -> set[str]:
        return {task_id, *dag.get_task(task_id).get_flat_relative_ids(upstream=False)}

    joins: set[str] = set()
    for options in BRANCHES["traitflow_weekly_retrain"].values():
        for first in options:
            for second in options - {first}:
                only_first, only_second = subtree(first) - subtree(second), subtree(second) - subtree(first)
                for task in dag.tasks:
                    up = task.upstream_task_ids
                    if up & only_first and up & only_second:
                        joins.add(task.task_id)
    assert joins == {"plan_recompute", "report"}
    assert dag.get_task("plan_recompute").trigger_rule == JOIN
    # The report also runs when every input skipped (a step skipped for thin data), never after a
    # failure: all_done on the last task would mark a run with a failed training as successful.
    assert dag.get_task("report").trigger_rule == "none_failed"
    assert all(t.trigger_rule == "all_success" for t in dag.tasks if t.task_id not in joins)


DAILY_PARAMS = {
    "input_dir", "mapping", "max_reject_share", "missing_input", "n_shards", "history_retention_months"
}  # fmt: skip
WEEKLY_RUN_PARAMS = {"force_retrain", "tune_item2vec", "tune_trials", "tune_sample_fraction", "n_shards"}


def test_weekly_form_mirrors_pipeline_config(dagbag: Any) -> None:
    params = dagbag.dags["traitflow_weekly_retrain"].params
    defaults = PipelineConfig().to_flat()
    for key, default in defaults.items():
        param = params.get_param(key)
        assert param.value == default, key
        assert param.description, key
        assert param.schema.get("type"), key
        param.resolve()  # the default passes its own schema
    assert set(params.keys()) - set(defaults) == WEEKLY_RUN_PARAMS
    # The library rebuilds its config from the run's params: the form must round-trip.
    assert PipelineConfig.from_mapping(dict(params), ignore=tuple(WEEKLY_RUN_PARAMS)) == PipelineConfig()


def test_weekly_form_validates_with_the_bounds_declared_on_the_config(dagbag: Any) -> None:
    """The schema each form field is checked with is the one rendered from the config field's
    declared bounds (tests/unit/test_config.py checks that it agrees with the dataclass)."""
    params = dagbag.dags["traitflow_weekly_retrain"].params
    for key, (section, _) in PipelineConfig.FLAT_KEYS.items():
        param = params.get_param(key)
        declared = PipelineConfig.json_schema(key)
        assert param.description == declared.pop("description"), key
        assert param.schema == {**declared, "title": key, "section": param.schema["section"]}, key
        assert param.schema["section"] and param.schema["section"] != section, key  # a readable title


def test_daily_form_shows_only_what_the_daily_run_reads(dagbag: Any) -> None:
    """The daily update profiles customers with the stored model's own config, so the model
    parameters have no place in its form."""
    params = dagbag.dags["traitflow_daily"].params
    assert set(params.keys()) == DAILY_PARAMS
    for key in DAILY_PARAMS:
        assert params.get_param(key).description, key
        params.get_param(key).resolve()


def test_daily_history_maintenance_runs_after_a_skipped_monitor_and_retention_is_bounded(
    dagbag: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    from traitflow.config import ConfigError, history_retention_months

    dag = dagbag.dags["traitflow_daily"]
    # none_failed: a quiet day (monitor skipped) still creates months ahead; a failed one does not.
    assert dag.get_task("maintain_history").trigger_rule == "none_failed"
    assert all(t.trigger_rule == "all_success" for t in dag.tasks if t.task_id != "maintain_history")
    param = dag.params.get_param("history_retention_months")
    assert param.resolve(0) == 0 and param.resolve(24) == 24
    for bad in (-1, 1.5, "12"):
        with pytest.raises(ParamValidationError):
            param.resolve(bad)
    monkeypatch.delenv("TRAITFLOW_HISTORY_RETENTION_MONTHS", raising=False)
    assert history_retention_months() == 0  # keep everything unless the deployment says otherwise
    monkeypatch.setenv("TRAITFLOW_HISTORY_RETENTION_MONTHS", "18")
    assert history_retention_months() == 18
    monkeypatch.setenv("TRAITFLOW_HISTORY_RETENTION_MONTHS", "-3")
    with pytest.raises(ConfigError, match="TRAITFLOW_HISTORY_RETENTION_MONTHS"):
        history_retention_months()


def test_weekly_form_starts_with_force_retrain(dagbag: Any) -> None:
    params = dagbag.dags["traitflow_weekly_retrain"].params
    assert next(iter(params.keys())) == "force_retrain"
    assert params.get_param("force_retrain").value is False
    assert params.get_param("force_retrain").schema["type"] == "boolean"


def test_param_bounds_reject_bad_values(dagbag: Any) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    params = dagbag.dags["traitflow_weekly_retrain"].params
    with pytest.raises(ParamValidationError):
        params.get_param("k").resolve(0)
    with pytest.raises(ParamValidationError):
        params.get_param("new_vocab_threshold").resolve(1.5)
    assert params.get_param("recency_half_life_days").resolve(None) is None
    assert params.get_param("recency_half_life_days").resolve(14.0) == 14.0


# --- What parsing a DAG file may not do ----------------------------------------------------------

_PARSE_SCRIPT = textwrap.dedent(
    """
    import json, os, socket, subprocess, sys
    from pathlib import Path

    hits = []

    def deny(name):
        def refuse(*args, **kwargs):
            hits.append(name)
            raise RuntimeError(name + " at DAG parse time")
        return refuse

    before = set(sys.modules)
    # croniter runs `file` (platform.architecture) when first imported; that is Airflow's own
    # import cost, not the DAG files', so let it happen before the guards go up.
    import croniter
    from airflow.sdk import Connection, Variable

    # Any network round trip (Postgres, secrets backends), child process (embedded Postgres)
    # or Connection/Variable lookup while parsing is a bug: the dag-processor re-parses often.
    socket.socket.connect = deny("socket.connect")
    socket.socket.connect_ex = deny("socket.connect_ex")
    subprocess.Popen.__init__ = deny("subprocess.Popen")
    Connection.get = deny("Connection.get")
    Variable.get = deny("Variable.get")

    from airflow.dag_processing.dagbag import BundleDagBag
    dags = Path(sys.argv[1])
    bag = BundleDagBag(dag_folder=dags, bundle_path=dags, bundle_name="dags-folder")
    print(json.dumps({
        "dag_ids": sorted(bag.dag_ids),
        "import_errors": bag.import_errors,
        "hits": hits,
        "modules": sorted(set(sys.modules) - before),
    }))
    """
)


@pytest.fixture(scope="module")
def parse_report() -> dict[str, Any]:
    """Parse the dags folder in a fresh interpreter (as the dag-processor does) and report."""
    env = {
        **os.environ,
        # Unreachable on purpose: parsing must not try to use them.
        "AIRFLOW_CONN_TRAITFLOW_DB": "postgresql://nobody:secret@192.0.2.1:1/none",
        "TRAITFLOW_DATABASE_URL": "postgresql://nobody:secret@192.0.2.1:1/none",
    }
    proc = subprocess.run(
        [sys.executable, "-c", _PARSE_SCRIPT, str(DAGS_DIR)],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_parsing_in_a_fresh_interpreter_finds_all_dags(parse_report: dict[str, Any]) -> None:
    assert parse_report["import_errors"] == {}
    assert parse_report["dag_ids"] == sorted(PROJECT_DAG_IDS)


def test_dag_files_import_no_heavy_modules(parse_report: dict[str, Any]) -> None:
    loaded = parse_report["modules"]
    heavy = sorted({m.split(".")[0] for m in loaded} & set(HEAVY_MODULES))
    assert heavy == []
    traitflow_modules = {m for m in loaded if m == "traitflow" or m.startswith("traitflow.")}
    assert traitflow_modules <= {"traitflow", "traitflow.bounds", "traitflow.config"}


def test_dag_files_do_no_db_work_at_top_level(parse_report: dict[str, Any]) -> None:
    assert parse_report["hits"] == []
