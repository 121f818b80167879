"""Task-sized jobs the Airflow DAGs and the CLI chains call: ``(context, input) -> output``.

Every job takes the run's ``traitflow.runs.RunContext`` and the typed result of the job before it,
opens its own ``Store`` (a task may run on any worker), passes large data between tasks only as
files under the run's ``work_dir`` or as staging rows in the database (a sharded run's customer
shards and staged batches: ``Store.plan_shards``, ``Store.stage_profiles``) and returns a frozen
dataclass of ``traitflow.runs`` (ids, paths and counts; ``to_xcom()`` for Airflow). No Airflow
imports: the DAG files adapt these to tasks.

daily : ingest, customer selection, profile update (in customer shards), monitoring and history
    maintenance of one day
weekly : corpus, new-vocabulary check, candidate training, quality gate and drift
candidate : trait fit, rejection, profiles of every customer (in customer shards), promotion and
    the weekly report
refresh : every current profile under the model of its date after a promotion
input_files : the dated event files of an input folder
"""

from traitflow.jobs.candidate import (
    candidate_key,
    keep_traits,
    plan_recompute,
    promote,
    recompute_profiles,
    refit_traits,
    reject_candidate,
    weekly_report,
)
from traitflow.jobs.daily import (
    commit_update,
    confined_mapping,
    ingest_interval,
    maintain_history,
    monitor_daily,
    plan_update,
    select_customers,
    update_profiles,
)
from traitflow.jobs.input_files import EventFiles, event_files
from traitflow.jobs.refresh import refresh_all_profiles
from traitflow.jobs.weekly import (
    build_corpus,
    measure_drift,
    quality_gate,
    should_refit,
    should_retrain,
    train_candidate,
)

__all__ = [
    "EventFiles",
    "build_corpus",
    "candidate_key",
    "commit_update",
    "confined_mapping",
    "event_files",
    "ingest_interval",
    "keep_traits",
    "maintain_history",
    "measure_drift",
    "monitor_daily",
    "plan_recompute",
    "plan_update",
    "promote",
    "quality_gate",
    "recompute_profiles",
    "refit_traits",
    "refresh_all_profiles",
    "reject_candidate",
    "select_customers",
    "should_refit",
    "should_retrain",
    "train_candidate",
    "update_profiles",
    "weekly_report",
]
