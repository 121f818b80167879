"""traitflow_weekly_retrain: retrain Item2Vec + traits when the catalogue moved, behind quality gates."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import CronDataIntervalTimetable, Param, dag, task

from traitflow.config import MAX_SHARDS
from traitflow_common import (
    DEFAULT_ARGS,
    JOIN,
    MODEL_ASSET,
    REPORT,
    TAGS,
    branch_result,
    collect_results,
    explain_test_before_start,
    fail_fast,
    pipeline_params,
    push_result,
    record_decision,
    run_config,
    run_context,
    run_params,
    start_date,
    task_queue,
    training_timeout,
    upstream_result,
)

WEEK = timedelta(weeks=1)
LONG = training_timeout()  # the tasks that read the whole window or train; the rest use DEFAULT_ARGS

DOC_MD = """
### Traitflow weekly retrain

Every path ends in **report**:

1. `build_corpus` -> `check_new_vocab` -> `skip_retrain`
2. `build_corpus` -> `check_new_vocab` -> `train_candidate` -> `quality_gate` -> `reject_candidate`
3. `build_corpus` -> `check_new_vocab` -> `train_candidate` -> `quality_gate` -> `measure_drift`
   -> `check_drift` -> `refit_traits` or `keep_traits` -> `plan_recompute` -> `shard_ids`
   -> `recompute_profiles` (one mapped instance per customer shard) -> `promote` (emits the asset)

* **build_corpus** takes the run's event snapshot: every later read of the run (trait fit,
  profiles) sees the events committed when the run started, not what a daily ingest adds meanwhile.
* **check_new_vocab** retrains when more than `new_vocab_threshold` of the window's tokens are new
  to the active model, when there is no active model yet, or when `force_retrain` is set.
* **train_candidate** trains from scratch or continues the active model's vectors on the sessions
  since its `trained_through` (`training_mode`: auto, full, incremental; build_corpus records the
  choice and why, the promoted or rejected version its lineage).
* **quality_gate** rejects a candidate that scores worse than the active model by more than
  `quality_margin` on held-out sessions (chosen by session identity: the same sessions are held
  out every week, so the active model was not trained on them either).
* **reject_candidate** stores the candidate (traits fitted) as a `rejected` model version with
  the gate's result in its metrics, so `traitflow models` shows what the gate refused.
* **check_drift** measures drift after aligning the candidate to the active model (Procrustes) and
  refits the NMF traits (keeping trait ids stable) only above `drift_threshold`.
* **plan_recompute** saves the fitted candidate as a `staging` model version (a retry finds it
  by the candidate's fingerprint) and assigns every customer of the run's event snapshot to one
  of `n_shards` customer shards (a stable hash of the customer id), once, in the database (with
  one shard: no assignment, the shard reads everyone). **recompute_profiles** loads the candidate
  from the database, reads the customers of its shard and their events (only theirs) and stages
  their profiles in the database; it reads no file of the run's folder, and a retried shard
  replaces its own batch. Any `n_shards` gives the same rows.
* **promote** records the gate and drift with the candidate's version, writes the profiles of
  every shard and deletes the run's shard assignment in one transaction (a missing shard fails
  it, nothing written),
  switches the active model atomically and emits the asset `traitflow://models/active`,
  which triggers `traitflow_refresh_on_promotion`. The same transaction (and reject_candidate's)
  rejects the older staging candidates of runs that never promoted theirs, as superseded
  (`n_superseded` in the report); such a run's promote then fails at once (ModelRejectedError).
* An empty training window is a branch, not a failure: build_corpus returns `n_events: 0` with
  an `empty_reason`, check_new_vocab skips with it (even when forced) and the report stores it.
* Data too thin for a fit (ThinDataError: fewer customers than traits, every session held out)
  is a data condition too: that task ends skipped with the reason, the tasks after it skip, the
  run is green and the report stores the reason under the skipped task's id. No retries.
* Data and configuration errors (ConfigError, EventsFileError), a shard whose plan is gone
  (PlanNotFoundError) and a superseded candidate (ModelRejectedError) fail a task at once
  (`fail_fast`); other errors (database, network) keep the retries.
* **report** is written on every path (skip, reject, promote, a skipped step; trigger rule
  `none_failed`); a failed task fails the run instead of being hidden behind an `all_done` report.

A scheduled run with logical date **D** (a Sunday, UTC) covers the week [D, D + 7 days), starts
when that week is over, and trains on the `training_window_days` before the interval end. A manual
run covers the last complete week before its trigger time.
"""


@dag(
    dag_id="traitflow_weekly_retrain",
    # Explicit data-interval timetable, for the same reason as the daily DAG.
    schedule=CronDataIntervalTimetable("@weekly", timezone="UTC"),
    start_date=start_date(),
    catchup=False,  # a retrain covers a trailing window; replaying missed weeks buys nothing
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=TAGS,
    doc_md=DOC_MD,
    params={
        "force_retrain": Param(
            False,
            type="boolean",
            title="force_retrain",
            description="Train a candidate even if the new-vocabulary ratio is below the threshold.",
            section="Run",
        ),
        "tune_item2vec": Param(
            False,
            type="boolean",
            title="tune_item2vec",
            description=(
                "Search ns_exponent/window/sample/epochs on held-out next-item hit rate before training "
                "(recorded with the model). Check the result with `traitflow evaluate`: better next-item "
                "prediction can make traits worse."
            ),
            section="Run",
        ),
        "tune_trials": Param(
            8,
            type="integer",
            minimum=1,
            maximum=144,
            title="tune_trials",
            description="Parameter combinations tried when tuning.",
            section="Run",
        ),
        "tune_sample_fraction": Param(
            0.1,
            type="number",
            exclusiveMinimum=0,
            maximum=1,
            title="tune_sample_fraction",
            description="Share of customers the tuning trains on.",
            section="Run",
        ),
        "n_shards": Param(
            1,
            type="integer",
            minimum=1,
            maximum=MAX_SHARDS,
            title="n_shards",
            description="Customer shards: recompute_profiles runs once per shard (in parallel on a "
            "distributed executor) and promote writes all of them with the model in one "
            "transaction. The rows written are the same for any number.",
            section="Run",
        ),
        **pipeline_params(),
    },
)
def traitflow_weekly_retrain() -> None:
    @task(multiple_outputs=False, execution_timeout=LONG)
    @fail_fast
    def build_corpus() -> dict:
        from traitflow import jobs

        return jobs.build_corpus(run_context(WEEK), run_config()).to_xcom()

    @task.branch
    @fail_fast
    def check_new_vocab(corpus_info: dict) -> str:
        from traitflow import jobs
        from traitflow.runs import CorpusInfo

        params = run_params()
        retrain, reason = jobs.should_retrain(
            CorpusInfo.from_xcom(corpus_info), bool(params["force_retrain"]), params["new_vocab_threshold"]
        )
        return record_decision("train_candidate" if retrain else "skip_retrain", reason=reason)

    @task(multiple_outputs=False)
    @fail_fast
    def skip_retrain() -> dict:
        # Nothing to do: the report records the reason from check_new_vocab's decision.
        return {"retrained": False}

    @task(multiple_outputs=False, execution_timeout=LONG, queue=task_queue("training"))
    @fail_fast
    def train_candidate(corpus_info: dict) -> dict:
        from traitflow import jobs
        from traitflow.runs import CorpusInfo, TuningRequest

        params = run_params()
        tuning = None
        if params["tune_item2vec"]:
            tuning = TuningRequest(params["tune_sample_fraction"], params["tune_trials"])
        corpus = CorpusInfo.from_xcom(corpus_info)
        return jobs.train_candidate(run_context(WEEK), corpus, run_config(), tuning).to_xcom()

    @task.branch
    @fail_fast
    def quality_gate(candidate_info: dict) -> str:
        from traitflow import jobs
        from traitflow.runs import Candidate

        gate = jobs.quality_gate(run_context(WEEK), Candidate.from_xcom(candidate_info))
        push_result("gate_result", gate.to_xcom())  # for reject_candidate and promote
        return record_decision("measure_drift" if gate.passed else "reject_candidate", **gate.to_xcom())

    @task(multiple_outputs=False, execution_timeout=LONG)  # fits the candidate's traits to store it
    @fail_fast
    def reject_candidate(candidate_info: dict, gate_result: dict) -> dict:
        from traitflow import jobs
        from traitflow.runs import Candidate, GateResult

        candidate, gate = Candidate.from_xcom(candidate_info), GateResult.from_xcom(gate_result)
        return jobs.reject_candidate(run_context(WEEK), candidate, gate).to_xcom()

    @task(multiple_outputs=False)
    @fail_fast
    def measure_drift(candidate_info: dict) -> dict:
        from traitflow import jobs
        from traitflow.runs import Candidate

        return jobs.measure_drift(run_context(WEEK), Candidate.from_xcom(candidate_info)).to_xcom()

    @task.branch
    @fail_fast
    def check_drift(drift_info: dict) -> str:
        from traitflow import jobs
        from traitflow.runs import DriftResult

        refit, reason = jobs.should_refit(DriftResult.from_xcom(drift_info), run_params()["drift_threshold"])
        return record_decision("refit_traits" if refit else "keep_traits", reason=reason)

    @task(multiple_outputs=False, execution_timeout=LONG)
    @fail_fast
    def refit_traits(candidate_info: dict) -> dict:
        from traitflow import jobs
        from traitflow.runs import Candidate

        return jobs.refit_traits(run_context(WEEK), Candidate.from_xcom(candidate_info)).to_xcom()

    @task(multiple_outputs=False, execution_timeout=LONG)
    @fail_fast
    def keep_traits(candidate_info: dict) -> dict:
        from traitflow import jobs
        from traitflow.runs import Candidate

        return jobs.keep_traits(run_context(WEEK), Candidate.from_xcom(candidate_info)).to_xcom()

    @task(multiple_outputs=False, trigger_rule=JOIN)
    @fail_fast
    def plan_recompute() -> dict:
        from traitflow import jobs
        from traitflow.runs import FittedCandidate

        fitted = FittedCandidate.from_xcom(branch_result("refit_traits", "keep_traits"))  # one of them ran
        return jobs.plan_recompute(run_context(WEEK), fitted, run_params()["n_shards"]).to_xcom()

    @task
    def shard_ids(plan: dict) -> list[int]:
        return list(range(plan["n_shards"]))

    @task(multiple_outputs=False, execution_timeout=LONG, queue=task_queue("profiles"))
    @fail_fast
    def recompute_profiles(plan: dict, shard: int) -> dict:
        from traitflow import jobs
        from traitflow.runs import ShardPlan

        return jobs.recompute_profiles(run_context(WEEK), ShardPlan.from_xcom(plan), shard).to_xcom()

    @task(multiple_outputs=False, outlets=[MODEL_ASSET])
    @fail_fast
    def promote(plan: dict, drift_info: dict) -> dict:
        from airflow.sdk import get_current_context

        from traitflow import jobs
        from traitflow.runs import DriftResult, GateResult, ShardPlan

        # Pulled, not an argument: a direct input from the branch task would make it skip this one.
        gate = GateResult.from_xcom(upstream_result("quality_gate", key="gate_result"))
        shard_plan, drift = ShardPlan.from_xcom(plan), DriftResult.from_xcom(drift_info)
        result = jobs.promote(run_context(WEEK), shard_plan, gate, drift)
        # The asset event tells traitflow_refresh_on_promotion (and the UI) which version is live.
        get_current_context()["outlet_events"][MODEL_ASSET].extra = {"model_version": result.model_version}
        return result.to_xcom()

    @task(multiple_outputs=False, trigger_rule=REPORT)
    @fail_fast
    def report() -> dict:
        from traitflow import jobs

        return jobs.weekly_report(run_context(WEEK), collect_results()).to_xcom()

    corpus = build_corpus()
    candidate = train_candidate(corpus)
    skipped = skip_retrain()
    check_new_vocab(corpus) >> [candidate, skipped]

    gate = quality_gate(candidate)
    drift = measure_drift(candidate)
    rejected = reject_candidate(candidate, gate["gate_result"])  # pushed by quality_gate
    gate >> [drift, rejected]

    refitted = refit_traits(candidate)
    kept = keep_traits(candidate)
    check_drift(drift) >> [refitted, kept]

    plan = plan_recompute()
    [refitted, kept] >> plan
    shards = recompute_profiles.partial(plan=plan).expand(shard=shard_ids(plan))
    promoted = promote(plan, drift)
    shards >> promoted
    [skipped, rejected, promoted] >> report()


traitflow_weekly_retrain()
# `airflow dags test traitflow_weekly_retrain DATE` before the start date would succeed silently: say why.
explain_test_before_start("traitflow_weekly_retrain", start_date())
