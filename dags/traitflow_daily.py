"""traitflow_daily: keep the trait profiles of customers with new events current, one day at a time."""

from __future__ import annotations

from airflow.sdk import CronDataIntervalTimetable, Param, dag, task

from traitflow.config import (
    MAX_SHARDS,
    MISSING_INPUT_POLICIES,
    history_retention_months,
    missing_input_policy,
)
from traitflow_common import (
    DEFAULT_ARGS,
    REPORT,
    TAGS,
    catchup_enabled,
    env_input_dir,
    explain_test_before_start,
    fail_fast,
    run_context,
    run_params,
    skip_unless,
    start_date,
    task_queue,
)

DOC_MD = """
### Traitflow daily profile update

`ingest` -> `select_customers` -> `plan_update` -> `shard_ids` -> `update_profiles` (one mapped
instance per customer shard) -> `commit_update` -> `monitor` -> `maintain_history`

* Every run processes its data interval (UTC). A scheduled or backfill run with logical date
  **D** covers the day **[D, D + 1 day)** and starts after midnight ending that day. A manual run
  (UI trigger, `dag.test(logical_date=T)`) covers the last complete day before T.
* **ingest** loads and validates files from `input_dir` (column mapping `mapping`); with an empty
  `input_dir` it skips and the run works on events already in the `events` table. Bad rows and
  malformed lines go to `rejected_events`; a file with more than `max_reject_share` of its rows
  rejected is refused whole (nothing stored) and fails the task.
* **No file for the day** (`input_dir` set, no file dated D): `missing_input` decides, default
  from `TRAITFLOW_MISSING_INPUT`. `fail` (the default): the run fails at once, no retries; a day
  without its delivery is an incident, and this run is the one to clear once the file arrives
  (later days do not pick up its customers). `skip`: the run ends green with every task but
  `maintain_history` skipped, for sources that legitimately deliver nothing on some days.
  `ignore`: a warning, and the day is updated from the events table. With `fail` and `skip` the
  day's run report (`traitflow reports`, the Traits page) stores the reason with `outcome`
  `failed` / `skipped`.
* **select_customers** takes the customers with events in the interval and those with events in
  the day's files (late events, dated before their file's day); files dated after the interval
  are ignored, so backfills in any order select and read the same events.
* **plan_update** picks the newest model trained through the interval end or earlier
  (backfill-safe) and assigns the selected customers to `n_shards` customer shards (a stable
  hash of the customer id), once, in the database; **update_profiles** runs once per shard,
  reads its own customers and their events from the database (no file of the run's folder) and
  stages its shard's profiles there (a retried shard replaces its own batch); **commit_update**
  writes every shard in one transaction that also deletes the run's shard assignment (a
  missing shard fails it, nothing written) and never overwrites a newer current profile; if a
  newer model is promoted for the same date meanwhile, it recomputes with that model instead of
  writing over its rows. Any `n_shards` writes the same rows.
* **monitor** stores a run report (OOV rate, profile-distribution drift). When nothing was written
  (no promoted model yet, no customers with events in the day) it stores the reason with
  `outcome: skipped` and ends skipped: a green run that says why, never retried.
* **maintain_history** creates the profile history's monthly partitions ahead (this month and
  the next two) and, with `history_retention_months` > 0 (default from
  `TRAITFLOW_HISTORY_RETENTION_MONTHS`, 0 = keep everything), drops the months older than that
  many months before the run's month, whole. What it created and dropped (with row counts) is
  the `history` entry of the day's run report. It runs after a skipped monitor too.
* Data and configuration errors (bad files, bad settings) fail a task at once (`fail_fast`);
  other errors (database, network) keep the retries.

**Scheduling.** Catchup is off unless `TRAITFLOW_CATCHUP=true` is set for the scheduler and
dag-processor: unpausing schedules the latest complete day only, not one run per day since the
start date (`TRAITFLOW_START_DATE`). History, and the days missed during an outage, are a
backfill (creates queued runs; a running scheduler executes them):

```bash
airflow backfill create --dag-id traitflow_daily \\
    --from-date 2026-01-02 --to-date 2026-01-31 --max-active-runs 1
```

processes Jan 2 to Jan 31 inclusive (the dates are logical dates = first day of each interval),
oldest first. Pass `--max-active-runs 1`: a backfill has its own limit (default 10), the DAG's
`max_active_runs` does not apply to it, and concurrent days would read and write the same
customers. `--run-backwards` is safe (a day reads only files dated up to it and events before its
end, so any order writes the same rows) but the first run then ingests every earlier file at once.
On a paused DAG the backfill's runs are created and wait, queued, until the DAG is unpaused. Add
`--reprocess-behavior completed` to redo days that ran.
"""


@dag(
    dag_id="traitflow_daily",
    # Explicit data-interval timetable: in Airflow 3 a bare "@daily" becomes a CronTriggerTimetable
    # whose runs have start == end (no day to process) unless [scheduler]
    # create_cron_data_intervals is set. With intervals, logical date D = the day processed, which
    # is also what `airflow backfill create --from-date/--to-date` selects on.
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=start_date(),
    catchup=catchup_enabled(),  # off by default: history is a backfill, not hundreds of queued runs
    max_active_runs=1,  # days build on each other (profiles, history); run them in order
    default_args=DEFAULT_ARGS,
    tags=TAGS,
    doc_md=DOC_MD,
    params={
        "input_dir": Param(
            env_input_dir(),
            type="string",
            title="input_dir",
            description="Folder of CSV/Parquet event files to ingest; empty = use the events table only.",
            section="Input",
        ),
        "mapping": Param(
            "canonical",
            type="string",
            minLength=1,
            title="mapping",
            description="Column-mapping preset (or path to a mapping file) for the input files.",
            section="Input",
        ),
        "max_reject_share": Param(
            0.5,
            type="number",
            minimum=0,
            maximum=1,
            title="max_reject_share",
            description="Refuse a file (nothing of it stored, the task fails) when more than this "
            "share of its rows is rejected: that is a wrong mapping, not bad rows. 1 = never refuse.",
            section="Input",
        ),
        "missing_input": Param(
            missing_input_policy(),
            type="string",
            enum=list(MISSING_INPUT_POLICIES),
            title="missing_input",
            description="When input_dir has no file dated the run's day: fail (no retries), skip (green, "
            "skipped) or ignore (update from the events table); the reason goes to the run report.",
            section="Input",
        ),
        "n_shards": Param(
            1,
            type="integer",
            minimum=1,
            maximum=MAX_SHARDS,
            title="n_shards",
            description="Customer shards: update_profiles runs once per shard (in parallel on a "
            "distributed executor) and commit_update writes all of them in one transaction. The "
            "rows written are the same for any number.",
            section="Run",
        ),
        "history_retention_months": Param(
            history_retention_months(),
            type="integer",
            minimum=0,
            title="history_retention_months",
            description="Keep this many months of customer_profile_history before the run's month and "
            "drop older months whole (recorded in the run report); 0 = keep everything.",
            section="History",
        ),
        # No model parameters: the daily update profiles customers with the stored model's own
        # config (traitflow.pipeline.profile_customers), so a form value could change nothing.
    },
)
def traitflow_daily() -> None:
    @task(multiple_outputs=False)
    @fail_fast
    def ingest() -> dict:
        from traitflow import jobs
        from traitflow.runs import EventInput

        params = run_params()
        source = EventInput(
            params["input_dir"] or None,
            params["mapping"],
            params.get("max_reject_share"),
            params["missing_input"],
        )
        return jobs.ingest_interval(run_context(), source).to_xcom()

    @task(multiple_outputs=False)
    @fail_fast
    def select_customers() -> dict:
        from traitflow import jobs

        return jobs.select_customers(run_context(), run_params()["input_dir"] or None).to_xcom()

    @task(multiple_outputs=False)
    @fail_fast
    def plan_update(selection: dict) -> dict:
        from traitflow import jobs
        from traitflow.runs import CustomerSelection

        customers = CustomerSelection.from_xcom(selection)
        return jobs.plan_update(run_context(), customers, run_params()["n_shards"]).to_xcom()

    @task
    def shard_ids(plan: dict) -> list[int]:
        return list(range(plan["n_shards"]))

    @task(multiple_outputs=False, queue=task_queue("profiles"))
    @fail_fast
    def update_profiles(plan: dict, shard: int) -> dict:
        from traitflow import jobs
        from traitflow.runs import ShardPlan

        return jobs.update_profiles(run_context(), ShardPlan.from_xcom(plan), shard).to_xcom()

    @task(multiple_outputs=False)
    @fail_fast
    def commit_update(plan: dict) -> dict:
        from traitflow import jobs
        from traitflow.runs import ShardPlan

        return jobs.commit_update(run_context(), ShardPlan.from_xcom(plan)).to_xcom()

    @task(multiple_outputs=False)
    @fail_fast
    def monitor(update_result: dict) -> dict:
        from traitflow import jobs
        from traitflow.runs import UpdateResult

        report = jobs.monitor_daily(run_context(), UpdateResult.from_xcom(update_result))
        return skip_unless(report.outcome == "updated", report.to_xcom(), report.update.reason)

    # After the report it adds to; also after a skipped update (none_failed), so quiet days
    # still create months ahead and apply retention.
    @task(multiple_outputs=False, trigger_rule=REPORT)
    @fail_fast
    def maintain_history() -> dict:
        from traitflow import jobs

        return jobs.maintain_history(run_context(), run_params()["history_retention_months"]).to_xcom()

    selection = select_customers()
    ingest() >> selection
    plan = plan_update(selection)
    shards = update_profiles.partial(plan=plan).expand(shard=shard_ids(plan))
    committed = commit_update(plan)
    shards >> committed
    monitor(committed) >> maintain_history()


traitflow_daily()
# `airflow dags test traitflow_daily DATE` before the start date would succeed silently: say why.
explain_test_before_start("traitflow_daily", start_date())
