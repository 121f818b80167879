"""Shared wiring for the Traitflow DAG files: the only DAG-side module that imports Airflow.

Kept deliberately thin: Param forms built from ``traitflow.config``, the database URL from the
Airflow Connection, per-run folders and the run's ``traitflow.runs.RunContext``. Pipeline logic
lives in ``traitflow.jobs``, imported (with ``traitflow.runs``) inside task functions only (the
dag-processor re-parses DAG files every few seconds and must not pay for numpy/gensim/sklearn).

The dags folder is put on ``sys.path`` by Airflow itself (``BundleDagBag`` adds the bundle path
when the dag-processor parses and when a worker runs a task), so DAG files import this package as
``traitflow_common``; tests/dags/conftest.py does the same. ``.airflowignore`` keeps the
dag-processor from parsing this folder as DAG files.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from airflow.sdk import Asset, Param

from traitflow.config import ConfigError, PipelineConfig, data_dir, env_int, env_str

if TYPE_CHECKING:
    from traitflow.runs import RunContext

OWNER = "traitflow"
TAGS = ["traitflow"]

# Emitted by the weekly DAG's promote task; schedules traitflow_refresh_on_promotion.
MODEL_ASSET = Asset("traitflow://models/active")

# Trigger rule of every join after a branch: run if at least one upstream succeeded and none
# failed; a plain all_success join would be skipped whenever a branch skipped one of its inputs.
JOIN = "none_failed_min_one_success"
# Trigger rule of a run's report: written on every path, also when a step skipped for thin data
# and every input of the report is skipped; a failed step still fails it (upstream_failed).
REPORT = "none_failed"
# XCom key of a skipped task's reason, for the report.
SKIP_KEY = "skipped"


def task_timeout() -> timedelta:
    """``execution_timeout`` of every task (``TRAITFLOW_TASK_TIMEOUT_S``, default 2 h).

    The last guard against a hung task: the database layers fail a stalled statement much sooner
    (``traitflow.store.db.Timeouts``), this also bounds anything else that could hang.
    """
    return timedelta(seconds=env_int("TRAITFLOW_TASK_TIMEOUT_S", 2 * 3600))


def training_timeout() -> timedelta:
    """``execution_timeout`` of the weekly training and profiling tasks
    (``TRAITFLOW_TRAINING_TIMEOUT_S``, default 6 h: Item2Vec and NMF on the M tier take far less)."""
    return timedelta(seconds=env_int("TRAITFLOW_TRAINING_TIMEOUT_S", 6 * 3600))


# Retries with exponential backoff: 2 min, 4 min, 8 min... capped at 30 min. In Airflow 3.x
# ``retry_exponential_backoff`` is a float multiplier (0 = constant delay), not a bool.
DEFAULT_ARGS: dict[str, Any] = {
    "owner": OWNER,
    "retries": 3,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=30),
    "execution_timeout": task_timeout(),
}


def start_date() -> datetime:
    """First logical date of the scheduled DAGs (``TRAITFLOW_START_DATE``, ISO date; naive = UTC).

    Defaults to the start of the bundled sample data (``traitflow sample``); an env read, no DB,
    so it is safe at parse time.
    """
    raw = env_str("TRAITFLOW_START_DATE", "2026-01-01")
    assert raw is not None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"TRAITFLOW_START_DATE must be an ISO date or datetime, got {raw!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def catchup_enabled() -> bool:
    """``catchup`` of the daily DAG (``TRAITFLOW_CATCHUP``, default off; an env read, parse-safe).

    Off: unpausing (a fresh install, or after an outage) schedules the latest complete day only,
    not one run per day since the start date; history is processed with ``airflow backfill
    create``. On: the scheduler creates every missed day itself, oldest first, one at a time.
    """
    raw = (env_str("TRAITFLOW_CATCHUP", "false") or "").lower()
    if raw not in _TRUE + _FALSE:
        raise ConfigError(f"TRAITFLOW_CATCHUP must be true or false, got {raw!r}")
    return raw in _TRUE


_EXPLAINED: set[str] = set()


def explain_test_before_start(dag_id: str, start: datetime, argv: list[str] | None = None) -> str | None:
    """Say why ``airflow dags test DAG_ID DATE`` with DATE before ``start`` will run nothing.

    Airflow creates no task instance for a logical date before a DAG's start date (backfills
    excepted) and marks such a run successful, and no DAG or task hook runs for it. The only
    place to catch it is the parse in the ``dags test`` process itself, so the DAG files call
    this at parse time: it reads the command line only (no DB, no I/O), prints the reason to
    stderr and returns it; None when the command is anything else.
    """
    words = list(sys.argv if argv is None else argv)[1:]
    if words[:2] != ["dags", "test"] or dag_id not in words[2:]:
        return None
    after = words[words.index(dag_id, 2) + 1 :]
    if not after or after[0].startswith("-"):
        return None  # no logical date given: dags test uses now
    try:
        logical = datetime.fromisoformat(after[0])
    except ValueError:
        return None
    logical = logical if logical.tzinfo else logical.replace(tzinfo=UTC)
    if logical >= start or dag_id in _EXPLAINED:
        return None
    _EXPLAINED.add(dag_id)  # `dags test` parses the DAG files twice; say it once
    message = (
        f"traitflow: {dag_id}: logical date {after[0]} is before the DAG's start date "
        f"{start.date().isoformat()} (TRAITFLOW_START_DATE), so Airflow creates no task and reports "
        f"success without running anything. Set TRAITFLOW_START_DATE={logical.date().isoformat()} "
        "(or earlier) for this command, or run a historical range with `airflow backfill create "
        "--dag-id ... --from-date ... --to-date ... --max-active-runs 1`, or use the CLI "
        "(`traitflow retrain --as-of ...`, `traitflow update --as-of ...`)."
    )
    print(message, file=sys.stderr)
    return message


# --- Param form -------------------------------------------------------------------------------

_SECTIONS = {
    "sessions": "Sessions",
    "item2vec": "Item2Vec (gensim Word2Vec)",
    "aggregation": "Customer embedding",
    "traits": "Traits (NMF)",
    "triggers": "Retrain triggers and quality gate",
    "increment": "Training mode (full or incremental)",
}


def pipeline_params() -> dict[str, Param]:
    """One Param per ``PipelineConfig.FLAT_KEYS`` entry: the default from ``PipelineConfig()``,
    the JSON schema and help text from the bounds declared on the config field, so the form, the
    CLI and the library cannot disagree."""
    params: dict[str, Param] = {}
    for key, default in PipelineConfig().to_flat().items():
        schema = PipelineConfig.json_schema(key)
        description = schema.pop("description")
        section = PipelineConfig.FLAT_KEYS[key][0]
        params[key] = Param(
            default, description=description, title=key, section=_SECTIONS.get(section, section), **schema
        )
    return params


def pipeline_config_values(params: dict[str, Any]) -> dict[str, Any]:
    """Only the ``PipelineConfig.FLAT_KEYS`` entries of a run's params (what ``jobs`` expects)."""
    return {key: params[key] for key in PipelineConfig.FLAT_KEYS if key in params}


# --- Database URL -----------------------------------------------------------------------------


def database_url() -> str | None:
    """Traitflow's database: Connection ``traitflow_db``, else ``TRAITFLOW_DATABASE_URL``, else None.

    None means: the library starts its embedded Postgres. The lookup is
    ``traitflow.connections.database_url`` (the UI plugin uses it too); here its secrets are also
    registered with the log masker. Call inside tasks only (a connection lookup at parse time
    would hit the secrets backends on every parse), and never return the URL from a task: XCom
    is stored unencrypted and shown in the UI.
    """
    from traitflow.connections import database_url as lookup_database_url

    url = lookup_database_url()
    mask_database_secrets(url)
    return url


def mask_database_secrets(url: str | None) -> None:
    """Register the database password (every spelling ``traitflow.redaction`` knows) with
    Airflow's secrets masker, so task logs show ``***`` wherever it would appear."""
    from airflow.sdk.log import mask_secret

    from traitflow.redaction import environment_secrets, secrets_of

    for secret in {*secrets_of(url), *environment_secrets()}:
        mask_secret(secret)


# --- Run context ------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(value: str) -> str:
    """``value`` usable as one path component (run ids contain ':' and '+')."""
    return _UNSAFE.sub("_", value).strip("._") or "run"


def work_dir(dag_id: str, run_id: str) -> str:
    """Per-run folder ``$TRAITFLOW_DATA_DIR/runs/<dag_id>/<run_id>``, shared by the run's tasks."""
    path = data_dir() / "runs" / safe_name(dag_id) / safe_name(run_id)
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def run_context(period: timedelta = timedelta(days=1)) -> RunContext:
    """The running task's ``RunContext`` (UTC dates, the run's folder, the database URL); call
    inside a task, once.

    The run covers ``[data_interval_start, data_interval_end)``. Runs without a data interval
    (manual runs without a logical date, asset-triggered runs) or with an empty one cover the
    ``period`` that ends at the run's ``run_after``/interval end. The schema is left to the
    store's default (``TRAITFLOW_DB_SCHEMA``).
    """
    from airflow.sdk import get_current_context

    from traitflow.runs import RunContext

    context = get_current_context()
    end: datetime = context.get("data_interval_end") or context["dag_run"].run_after
    start: datetime | None = context.get("data_interval_start")
    if start is None or start >= end:
        start = end - period
    return RunContext(
        run_id=context["run_id"],
        start=start,
        end=end,
        work_dir=work_dir(context["dag"].dag_id, context["run_id"]),
        database_url=database_url(),
    )


def run_params() -> dict[str, Any]:
    """The running task's run parameters (the DAG's form, as triggered)."""
    from airflow.sdk import get_current_context

    return dict(get_current_context()["params"])


def run_config() -> PipelineConfig:
    """The run's ``PipelineConfig``, from the ``PipelineConfig.FLAT_KEYS`` entries of its params."""
    return PipelineConfig.from_mapping(pipeline_config_values(run_params()))


F = TypeVar("F", bound=Callable[..., Any])


def non_retryable() -> tuple[type[BaseException], ...]:
    """Exceptions no retry can fix: bad configuration, a bad events file (mostly-rejected ones
    and a missing day file included), a shard whose plan is gone (replaced by a later plan
    attempt or committed: only clearing the run from its plan task can help) and a rejected
    candidate (superseded by a newer one published first: only a new run can promote a model).
    Imported on failure only (``traitflow.events`` pulls in pandas)."""
    from traitflow.config import ConfigError
    from traitflow.events import EventsFileError
    from traitflow.store import ModelRejectedError, PlanNotFoundError

    return (ConfigError, EventsFileError, PlanNotFoundError, ModelRejectedError)


def skip_with(reason: str, error: BaseException) -> NoReturn:
    """End the running task skipped with ``reason``, kept as its XCom ``SKIP_KEY`` for the report."""
    from airflow.sdk.exceptions import AirflowSkipException

    push_result(SKIP_KEY, {"reason": reason})
    raise AirflowSkipException(reason) from error


def fail_fast(func: F) -> F:
    """Task-function decorator (under ``@task``): a data or configuration error fails the task at
    once (``AirflowFailException``: no retries); a data condition with nothing to do
    (``traitflow.runs.RunSkipped``) or data too thin for the fit (``ThinDataError``: too few
    customers or sessions) ends it skipped with the reason; anything else (database, network)
    keeps the task's retries with backoff."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from traitflow.config import ThinDataError
        from traitflow.runs import RunSkipped

        try:
            return func(*args, **kwargs)
        except RunSkipped as skip:
            skip_with(skip.reason, skip)
        except ThinDataError as thin:
            skip_with(f"{type(thin).__name__}: {thin}", thin)
        except Exception as error:
            if isinstance(error, non_retryable()):
                from airflow.sdk.exceptions import AirflowFailException

                raise AirflowFailException(f"{type(error).__name__}: {error}") from error
            raise

    return wrapper  # type: ignore[return-value]


def push_result(key: str, value: dict[str, Any]) -> None:
    """Push ``value`` as this task's XCom ``key``, beside its return value (a branch task's result
    for the tasks after it)."""
    from airflow.sdk import get_current_context

    get_current_context()["ti"].xcom_push(key=key, value=value)


def record_decision(branch: str, **details: Any) -> str:
    """Push a branch task's decision as XCom ``decision`` (for the report) and return ``branch``."""
    from airflow.sdk import get_current_context

    get_current_context()["ti"].xcom_push(key="decision", value={"branch": branch, **details})
    return branch


def collect_results() -> dict[str, Any]:
    """Return values of every other task of this run (None for skipped); branch tasks give their
    decision, tasks skipped for a data condition ``{"reason": ...}``. Read from the DAG itself, so
    a task added to the DAG is reported without a list to keep in step."""
    from airflow.sdk import get_current_context

    context = get_current_context()
    ti = context["ti"]
    results: dict[str, Any] = {}
    dag = context["dag"]
    for task_id in dag.task_ids:
        if task_id == ti.task_id:
            continue
        decision = ti.xcom_pull(task_ids=task_id, key="decision")
        if decision is None:
            decision = ti.xcom_pull(task_ids=task_id, key=SKIP_KEY)
        results[task_id] = decision if decision is not None else ti.xcom_pull(task_ids=task_id)
        if getattr(dag.get_task(task_id), "is_mapped", False):
            results[task_id] = _mapped_values(results[task_id])
    return results


def _mapped_values(value: Any) -> list[Any] | None:
    """A mapped task's values as a list by map index (None when it did not run): ``xcom_pull``
    gives a single instance's value bare."""
    if value is None:
        return None
    values = list(value) if isinstance(value, list | tuple) else [value]
    return values or None


def branch_result(*task_ids: str) -> Any:
    """Return value of whichever of ``task_ids`` ran, for a join after a branch.

    Pulled with ``ti.xcom_pull`` rather than passed as task arguments: resolving the skipped
    task's argument logs an ``XCom not found`` error in Airflow 3.3 (harmless, but it alarms).
    """
    from airflow.sdk import get_current_context

    ti = get_current_context()["ti"]
    for task_id in task_ids:
        value = ti.xcom_pull(task_ids=task_id)
        if value is not None:
            return value
    raise RuntimeError(f"none of {task_ids} returned a value; the join ran without its branch")


def upstream_result(task_id: str, key: str = "return_value") -> Any:
    """XCom ``key`` of ``task_id``, which ran before this task but is not its direct input (a branch
    task: a direct input of it would be skipped whenever the branch follows the other path)."""
    from airflow.sdk import get_current_context

    value = get_current_context()["ti"].xcom_pull(task_ids=task_id, key=key)
    if value is None:
        raise RuntimeError(f"{task_id} pushed no XCom {key!r}; this task ran without it")
    return value


def skip_unless(done: bool, result: dict[str, Any], reason: str | None) -> dict[str, Any]:
    """``result`` as the task's return value; unless ``done``, it is pushed as the XCom
    ``return_value`` and the task ends skipped with ``reason`` (a green run)."""
    if done:
        return result
    from airflow.sdk.exceptions import AirflowSkipException

    push_result("return_value", result)
    raise AirflowSkipException(reason or "nothing to do")


def task_queue(kind: str) -> str:
    """Celery queue of one kind of heavy task (``TRAITFLOW_<KIND>_QUEUE``; ``kind`` is
    ``training`` or ``profiles``), default Airflow's ``default`` queue. Only the CeleryExecutor
    routes by queue: its workers serve the queues named in ``airflow celery worker --queues``
    (docs/celery.md); the LocalExecutor ignores it. An env read, parse-safe."""
    return env_str(f"TRAITFLOW_{kind.upper()}_QUEUE", "default") or "default"


def env_input_dir() -> str:
    """Default ``input_dir`` of the daily form (``TRAITFLOW_INPUT_DIR``; empty = use the events table)."""
    return os.environ.get("TRAITFLOW_INPUT_DIR", "").strip()
