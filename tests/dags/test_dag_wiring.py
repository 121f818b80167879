"""Run the real Traitflow DAGs with ``dag.test`` against test doubles of ``traitflow.jobs``.

The doubles are generated from the real job functions (``create_autospec``: a call that does not
fit a job's signature fails) and return real ``traitflow.runs`` results, which travel between the
tasks through their XCom forms (``from_xcom`` refuses an unknown key). The deciders
(``should_retrain``, ``should_refit``) are the real ones. So these tests pin what the DAGs hand to
the library (run context, inputs, the database URL) and which branch runs in each weekly scenario,
without Postgres or training.
"""

from __future__ import annotations

import inspect
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import create_autospec

import pytest

import traitflow
from traitflow import chains  # imported before any double is installed: it binds the real jobs
from traitflow import jobs as real_jobs
from traitflow.config import PipelineConfig
from traitflow.runs import (
    Candidate,
    CorpusFiles,
    CorpusInfo,
    CustomerSelection,
    DailyReport,
    DriftResult,
    EventInput,
    FittedCandidate,
    GateResult,
    HistoryResult,
    IngestResult,
    PromotionResult,
    RefreshResult,
    RejectionResult,
    RunContext,
    ShardPlan,
    ShardResult,
    UpdateResult,
    WeeklyReport,
    iso,
)

D = datetime(2026, 1, 11, tzinfo=UTC)  # a Sunday: a real weekly logical date
DAY, WEEK = timedelta(days=1), timedelta(weeks=1)
CONN = "postgresql://tf:pw@db.example:5432/traitflow"


class JobsDouble:
    """``traitflow.jobs`` made of autospecced job functions returning real result dataclasses.

    ``module`` is what gets installed; ``order`` lists the jobs called, in order, ``returned``
    their results by name; ``args(name)`` gives a job's call as {parameter: value} (defaults
    filled in), bound to the real signature.
    """

    def __init__(
        self,
        retrain: bool = True,
        passed: bool = True,
        refit: bool = True,
        empty: bool = False,
        corpus_error: Exception | None = None,
    ) -> None:
        self.retrain, self.passed, self.refit, self.empty = retrain, passed, refit, empty
        self.corpus_error = corpus_error
        self.order: list[str] = []
        self.returned: dict[str, Any] = {}
        self.module = types.ModuleType("traitflow.jobs")
        for name in real_jobs.__all__:
            real = getattr(real_jobs, name)
            if inspect.isfunction(real):
                behaviour = getattr(self, f"_{name}", None)
                side_effect = self._recorded(name, behaviour or real)
                setattr(self.module, name, create_autospec(real, side_effect=side_effect))

    def _recorded(self, name: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.order.append(name)
            self.returned[name] = behaviour(*args, **kwargs)
            return self.returned[name]

        return call

    def args(self, name: str) -> dict[str, Any]:
        double = getattr(self.module, name)
        assert double.call_count == 1, f"{name} called {double.call_count} times"
        call = double.call_args
        bound = inspect.signature(getattr(real_jobs, name)).bind(*call.args, **call.kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)

    def called(self) -> set[str]:
        return set(self.order)

    # daily
    def _ingest_interval(self, context: RunContext, source: EventInput) -> IngestResult:
        if source.input_dir is None:
            return IngestResult(skipped=True, reason="no input_dir")
        return IngestResult(skipped=False, n_files_seen=1, files=["/in/a.csv"], n_files=1, n_inserted=10)

    def _select_customers(self, context: RunContext, input_dir: str | None = None) -> CustomerSelection:
        path = Path(context.work_dir) / "customers.parquet"
        path.write_text("fake")
        return CustomerSelection(str(path), 3, [f"{input_dir}/later.csv"] if input_dir else [])

    def _plan_update(self, context: RunContext, selection: CustomerSelection, n_shards: int = 1) -> ShardPlan:
        sizes = [3] + [0] * (n_shards - 1)
        return ShardPlan(
            f"daily:{context.run_id}",
            n_shards,
            iso(context.end),
            plan_id=5,
            shard_sizes=sizes,
            model_version=1,
            exclude_sources=selection.exclude_sources,
        )

    def _update_profiles(self, context: RunContext, plan: ShardPlan, shard: int) -> ShardResult:
        return ShardResult(shard, 1)

    def _commit_update(self, context: RunContext, plan: ShardPlan) -> UpdateResult:
        return UpdateResult(plan.as_of, plan.model_version, 3)

    def _monitor_daily(self, context: RunContext, update: UpdateResult) -> DailyReport:
        return DailyReport(context.run_id, update, 0.1, 0.2, 0.01)

    def _maintain_history(self, context: RunContext, retention_months: int) -> HistoryResult:
        cutoff = None if retention_months == 0 else "2025-01-01T00:00:00+00:00"
        return HistoryResult(
            iso(context.end), retention_months, 2, cutoff, ["h_2026_03"], {"h_2024_12": 5}, 5
        )

    # weekly
    def _build_corpus(self, context: RunContext, config: PipelineConfig) -> CorpusInfo:
        if self.corpus_error is not None:
            raise self.corpus_error
        window = {"window_start": context.end - WEEK, "trained_through": context.end, "active_version": 1}
        if self.empty:
            return CorpusInfo(
                **window, n_events=0, event_snapshot="9:9:", empty_reason="no events in the training window"
            )
        work = context.work_dir
        files = CorpusFiles(
            f"{work}/corpus.txt", f"{work}/vocabulary.parquet", f"{work}/holdout.parquet", 50, 9, 8, 40, 7
        )
        ratio = 0.2 if self.retrain else 0.01
        return CorpusInfo(**window, n_events=50, event_snapshot="9:9:", corpus=files, new_vocab_ratio=ratio)

    def _train_candidate(
        self, context: RunContext, corpus: CorpusInfo, config: PipelineConfig, tuning=None
    ) -> Candidate:
        return Candidate(corpus, f"{context.work_dir}/candidate/tokens.npz", 7, config.to_flat())

    def _quality_gate(self, context: RunContext, candidate: Candidate) -> GateResult:
        reason = "hit rate ok" if self.passed else "hit rate -5%"
        return GateResult(
            self.passed, reason, "active", 0.02, 0.3, 0.0 if self.passed else -0.05, 0.01, 100, 0.3
        )

    def _reject_candidate(
        self, context: RunContext, candidate: Candidate, gate: GateResult
    ) -> RejectionResult:
        return RejectionResult(gate.reason, 2, "rejected-sha256:00")

    def _measure_drift(self, context: RunContext, candidate: Candidate) -> DriftResult:
        drift = 0.5 if self.refit else 0.01
        return DriftResult(True, None, drift, drift, drift, drift, 100, 110, 105, 5)

    def _refit_traits(self, context: RunContext, candidate: Candidate) -> FittedCandidate:
        return FittedCandidate(candidate, f"{context.work_dir}/candidate/model", refit=True)

    def _keep_traits(self, context: RunContext, candidate: Candidate) -> FittedCandidate:
        return FittedCandidate(candidate, f"{context.work_dir}/candidate/model", refit=False)

    def _plan_recompute(self, context: RunContext, fitted: FittedCandidate, n_shards: int = 1) -> ShardPlan:
        return ShardPlan(f"weekly:{context.run_id}", n_shards, iso(context.end), fitted=fitted)

    def _recompute_profiles(self, context: RunContext, plan: ShardPlan, shard: int) -> ShardResult:
        return ShardResult(shard, 1)

    def _promote(self, context: RunContext, plan: ShardPlan, gate, drift) -> PromotionResult:
        return PromotionResult(2, 3, "candidate-sha256:00")

    def _weekly_report(self, context: RunContext, steps, runner=None) -> WeeklyReport:
        return WeeklyReport(context.run_id, context.end, dict(steps), runner)

    # refresh
    def _refresh_all_profiles(self, context: RunContext) -> RefreshResult:
        return RefreshResult(3, 2, iso(context.end))


@pytest.fixture
def fake_jobs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Install a JobsDouble as ``traitflow.jobs`` (tasks run in this process under dag.test)."""

    def install(**behaviour: Any) -> JobsDouble:
        double = JobsDouble(**behaviour)
        monkeypatch.setitem(sys.modules, "traitflow.jobs", double.module)
        monkeypatch.setattr(traitflow, "jobs", double.module, raising=False)
        return double

    yield install


def test_the_doubles_refuse_a_call_the_real_job_would_refuse() -> None:
    double = JobsDouble()
    context = RunContext("r", D - DAY, D, "/tmp/w")
    with pytest.raises(TypeError):
        double.module.commit_update(context, CustomerSelection("/c.parquet", 1), "/in", PipelineConfig())
    with pytest.raises(TypeError):
        double.module.refresh_all_profiles(context, "/tmp/w", "run-id")
    assert double.order == []


def _asset_events(run_id: str) -> list[dict[str, Any]]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetModel.uri, AssetEvent.extra)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetEvent.source_run_id == run_id)
        ).all()
    return [{"uri": uri, "extra": extra} for uri, extra in rows]


# --- daily ---------------------------------------------------------------------------------------


def test_daily_hands_the_day_params_and_connection_to_the_library(run_dag: Any, fake_jobs: Any) -> None:
    fake = fake_jobs()
    result = run_dag(
        "traitflow_daily",
        D,
        conf={"input_dir": "/data/in", "mapping": "retailrocket", "max_reject_share": 0.25},
        env={"AIRFLOW_CONN_TRAITFLOW_DB": CONN},
    )
    assert result.state == "success"
    assert set(result.values()) == {"success"}
    assert fake.order == [
        "ingest_interval",
        "select_customers",
        "plan_update",
        "update_profiles",
        "commit_update",
        "monitor_daily",
        "maintain_history",
    ]
    calls = {name: fake.args(name) for name in fake.order}
    ingest = calls["ingest_interval"]
    context = ingest["context"]
    assert (context.start, context.end) == (D - DAY, D)  # logical date D = end of the day
    assert context.run_id == result.run_id
    assert ingest["source"] == EventInput("/data/in", "retailrocket", 0.25, "fail")  # the default policy
    # Every task builds the same context; the database URL reaches the library, never XCom.
    assert {call["context"] for call in calls.values()} == {context}
    assert {call["context"].database_url for call in calls.values()} == {CONN}
    assert all(CONN not in repr(result.xcom(task)) for task in result)
    work_dir = Path(context.work_dir)
    assert work_dir.is_dir() and work_dir.parts[-3:-1] == ("runs", "traitflow_daily")
    plan = calls["plan_update"]
    assert plan["selection"] == CustomerSelection(
        str(work_dir / "customers.parquet"), 3, ["/data/in/later.csv"]
    )
    assert plan["n_shards"] == 1  # the form's default
    update = calls["update_profiles"]
    assert update["context"].end == D
    assert update["plan"] == fake.returned["plan_update"] == calls["commit_update"]["plan"]
    assert update["shard"] == 0
    # The day's files decide which late events are picked up and which files are not yet due;
    # the shards and the commit get the files to leave out with the plan, not the folder.
    assert calls["select_customers"]["input_dir"] == "/data/in"
    assert update["plan"].exclude_sources == ["/data/in/later.csv"]
    assert calls["monitor_daily"]["update"] == UpdateResult(D.isoformat(), 1, 3)
    assert (
        result.xcom("monitor")
        == DailyReport(result.run_id, UpdateResult(D.isoformat(), 1, 3), 0.1, 0.2, 0.01).to_xcom()
    )
    assert calls["maintain_history"]["retention_months"] == 0  # the form's default: keep everything
    assert result.xcom("maintain_history") == fake.returned["maintain_history"].to_xcom()


def test_daily_passes_the_retention_on_and_the_cli_chain_makes_the_same_calls(
    run_dag: Any, fake_jobs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRAITFLOW_HISTORY_RETENTION_MONTHS", "7")  # the CLI's default; the form gets 18
    fake = fake_jobs()
    result = run_dag(
        "traitflow_daily",
        D,
        conf={"input_dir": "", "history_retention_months": 18},
        env={"AIRFLOW_CONN_TRAITFLOW_DB": CONN},
    )
    assert result.state == "success"
    assert fake.args("maintain_history")["retention_months"] == 18
    context = fake.args("update_profiles")["context"]

    # `traitflow update` (traitflow.chains.run_daily_update): the same jobs after ingestion, same inputs.
    chain_fake = JobsDouble()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(chains, "jobs", chain_fake.module)
        outcome = chains.run_daily_update(
            CONN, D - DAY, D, context.work_dir, run_id="cli-test", history_retention_months=18
        )
        assert chain_fake.order == fake.order[1:]
        for name in chain_fake.order:
            dag_args, chain_args = fake.args(name), chain_fake.args(name)
            assert replace(chain_args["context"], run_id=context.run_id) == dag_args["context"], name
            assert {k: same_run(v) for k, v in chain_args.items() if k != "context"} == {
                k: same_run(v) for k, v in dag_args.items() if k != "context"
            }, name
        assert outcome.report["history"] == chain_fake.returned["maintain_history"].to_xcom()
        chains.run_daily_update(CONN, D - DAY, D, context.work_dir, run_id="cli-default")
    assert chain_fake.module.maintain_history.call_args.args[1] == 7  # TRAITFLOW_HISTORY_RETENTION_MONTHS


def test_daily_without_input_dir_ingests_nothing_but_still_updates(
    run_dag: Any, fake_jobs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_TRAITFLOW_DB", raising=False)
    monkeypatch.delenv("TRAITFLOW_DATABASE_URL", raising=False)
    fake = fake_jobs()
    result = run_dag("traitflow_daily", D, conf={"input_dir": ""})
    assert result.state == "success"
    assert fake.args("ingest_interval")["source"].input_dir is None
    assert fake.args("ingest_interval")["context"].database_url is None  # embedded Postgres
    assert fake.args("select_customers")["input_dir"] is None
    assert fake.args("update_profiles")["plan"].exclude_sources == []
    assert result.xcom("ingest")["skipped"] is True


# --- weekly --------------------------------------------------------------------------------------

WEEKLY = [
    "build_corpus",
    "check_new_vocab",
    "skip_retrain",
    "train_candidate",
    "quality_gate",
    "reject_candidate",
    "measure_drift",
    "check_drift",
    "refit_traits",
    "keep_traits",
    "plan_recompute",
    "shard_ids",
    "recompute_profiles",
    "promote",
    "report",
]
ALWAYS = {"build_corpus", "check_new_vocab", "report"}
TRAINED = {"train_candidate", "quality_gate"}
PROMOTED = {"measure_drift", "check_drift", "plan_recompute", "shard_ids", "recompute_profiles", "promote"}


def same_run(value: Any) -> Any:
    """A shard plan (object or XCom form) with its run key, which names the run, left out: the
    DAG's and the chain's runs have different ids."""
    if isinstance(value, ShardPlan):
        return replace(value, run_key="run")
    if isinstance(value, dict) and "run_key" in value and "n_shards" in value:
        return {**value, "run_key": "run"}
    return value


@pytest.mark.parametrize(
    ("behaviour", "conf", "ran"),
    [
        ({"retrain": False}, {}, ALWAYS | {"skip_retrain"}),
        ({"retrain": False}, {"force_retrain": True}, ALWAYS | TRAINED | PROMOTED | {"refit_traits"}),
        ({"passed": False}, {}, ALWAYS | TRAINED | {"reject_candidate"}),
        ({"refit": True}, {"k": 8}, ALWAYS | TRAINED | PROMOTED | {"refit_traits"}),
        ({"refit": False}, {}, ALWAYS | TRAINED | PROMOTED | {"keep_traits"}),
    ],
    ids=["skip", "forced", "reject", "promote-refit", "promote-keep"],
)
def test_weekly_branches(
    run_dag: Any, fake_jobs: Any, behaviour: dict[str, bool], conf: dict[str, Any], ran: set[str]
) -> None:
    fake = fake_jobs(**behaviour)
    result = run_dag("traitflow_weekly_retrain", D, conf=conf, env={"AIRFLOW_CONN_TRAITFLOW_DB": CONN})
    assert result.state == "success"
    assert set(result) == set(WEEKLY)
    assert result.ran() == ran
    assert result.skipped() == set(WEEKLY) - ran
    corpus_call = fake.args("build_corpus")
    context = corpus_call["context"]
    assert (context.start, context.end, context.database_url) == (D - WEEK, D, CONN)
    # Only the form's PipelineConfig keys reach the library, as a config.
    assert corpus_call["config"] == PipelineConfig.from_mapping({k: v for k, v in conf.items() if k == "k"})
    retrain_call = fake.args("should_retrain")
    assert retrain_call["force_retrain"] is bool(conf.get("force_retrain"))
    assert retrain_call["threshold"] == PipelineConfig().triggers.new_vocab_threshold

    report_call = fake.args("weekly_report")
    steps = report_call["steps"]
    assert report_call["context"] == context and report_call["runner"] is None
    assert set(steps) == set(WEEKLY) - {"report"}
    assert result.xcom("report")["trained_through"] == D.isoformat()
    assert steps["check_new_vocab"]["branch"] == (
        "train_candidate" if "train_candidate" in ran else "skip_retrain"
    )
    assert steps["check_new_vocab"]["reason"]
    assert all(steps[t] is None for t in set(WEEKLY) - ran)  # skipped tasks report nothing

    events = _asset_events(result.run_id)
    if "promote" in ran:
        assert events == [{"uri": "traitflow://models/active", "extra": {"model_version": 2}}]
        promote = fake.args("promote")
        assert promote["plan"].fitted.refit is ("refit_traits" in ran)
        # What reached promote through XCom is what the jobs returned, field for field.
        for argument, job in (
            ("gate", "quality_gate"),
            ("drift", "measure_drift"),
            ("plan", "plan_recompute"),
        ):
            assert promote[argument] == fake.returned[job], argument
        shard = fake.args("recompute_profiles")
        assert shard["context"].end == D
        assert (shard["plan"], shard["shard"]) == (fake.returned["plan_recompute"], 0)
        assert steps["recompute_profiles"] == [{"shard": 0, "n_profiles": 1, "skipped": False}]
    else:
        assert events == []
    if "reject_candidate" in ran:
        gate = fake.args("reject_candidate")["gate"]
        assert gate == fake.returned["quality_gate"]
        assert gate.passed is False and gate.reason == "hit rate -5%"

    # `traitflow retrain` (traitflow.chains) takes the same branches with the same job calls.
    assert tuple(WEEKLY[:-1]) == chains.WEEKLY_STEPS
    chain_fake = JobsDouble(**behaviour)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(chains, "jobs", chain_fake.module)
        outcome = chains.run_weekly_chain(
            CONN,
            D,
            context.work_dir,  # the double's results embed it
            PipelineConfig.from_mapping({k: v for k, v in conf.items() if k == "k"}).to_flat(),
            bool(conf.get("force_retrain")),
            run_id="cli-test",
        )
    assert chain_fake.order == fake.order  # same jobs, same order
    for name in fake.order:
        dag_args, chain_args = fake.args(name), chain_fake.args(name)
        if "context" in dag_args:
            assert chain_args["context"].database_url == CONN
            assert replace(chain_args["context"], run_id=context.run_id) == dag_args["context"], name
        ignored = {"context", "steps", "runner"}
        assert {k: same_run(v) for k, v in chain_args.items() if k not in ignored} == {
            k: same_run(v) for k, v in dag_args.items() if k not in ignored
        }, name
    chain_steps = chain_fake.args("weekly_report")["steps"]
    assert chain_fake.args("weekly_report")["runner"] == "cli"
    assert {k: same_run(v) for k, v in steps.items() if v is not None} == {
        k: same_run(v) for k, v in chain_steps.items()
    }
    branches = ("check_new_vocab", "quality_gate", "check_drift")
    assert [d.branch for d in outcome.decisions] == [steps[b]["branch"] for b in branches if steps[b]]
    assert outcome.status == (
        "promoted" if "promote" in ran else "rejected" if "reject_candidate" in ran else "skipped"
    )


def test_weekly_failure_fails_the_run_and_skips_no_report_silently(run_dag: Any, fake_jobs: Any) -> None:
    fake = fake_jobs()
    fake.module.train_candidate.side_effect = RuntimeError("training blew up")
    result = run_dag("traitflow_weekly_retrain", D)
    assert result.state == "failed"
    assert result["train_candidate"] == "failed"
    assert result["report"] == "upstream_failed"
    assert "promote" not in fake.called()


# --- refresh -------------------------------------------------------------------------------------


def test_refresh_on_promotion_refreshes_all_profiles(run_dag: Any, fake_jobs: Any) -> None:
    fake = fake_jobs()
    result = run_dag("traitflow_refresh_on_promotion", D, env={"AIRFLOW_CONN_TRAITFLOW_DB": CONN})
    assert result.state == "success"
    context = fake.args("refresh_all_profiles")["context"]
    assert context.database_url == CONN
    assert context.run_id == result.run_id
    assert Path(context.work_dir).is_dir()
    assert result.xcom("refresh_profiles") == RefreshResult(3, 2, iso(context.end)).to_xcom()


def test_dags_test_before_the_start_date_says_why_nothing_runs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import traitflow_common

    start = datetime(2026, 1, 1, tzinfo=UTC)
    explain = traitflow_common.explain_test_before_start
    monkeypatch.setattr(traitflow_common, "_EXPLAINED", set())
    for argv in (
        ["airflow", "dags", "test", "traitflow_daily", "2026-01-05"],  # on or after the start
        ["airflow", "dags", "test", "traitflow_daily"],  # no date: now
        ["airflow", "dags", "test", "traitflow_daily", "--conf", "{}"],
        ["airflow", "dags", "test", "other_dag", "2017-12-10"],
        ["airflow", "backfill", "create", "--dag-id", "traitflow_daily", "--from-date", "2017-12-10"],
        ["airflow", "scheduler"],
    ):
        assert explain("traitflow_daily", start, argv) is None, argv
    argv = ["airflow", "dags", "test", "-c", "{}", "traitflow_weekly_retrain", "2017-12-10"]
    message = explain("traitflow_weekly_retrain", start, argv)
    assert message is not None and message in capsys.readouterr().err
    assert "logical date 2017-12-10 is before the DAG's start date 2026-01-01" in message
    assert "TRAITFLOW_START_DATE=2017-12-10" in message and "airflow backfill create" in message
    assert explain("traitflow_weekly_retrain", start, argv) is None  # said once per process


def test_weekly_empty_window_takes_the_skip_branch_with_the_reason(run_dag: Any, fake_jobs: Any) -> None:
    fake = fake_jobs(empty=True)
    result = run_dag(
        "traitflow_weekly_retrain", D, conf={"force_retrain": True}, env={"AIRFLOW_CONN_TRAITFLOW_DB": CONN}
    )
    assert result.state == "success"
    assert result.ran() == ALWAYS | {"skip_retrain"}
    decision = fake.args("weekly_report")["steps"]["check_new_vocab"]
    assert decision == {"branch": "skip_retrain", "reason": "skip: no events in the training window"}


def test_a_config_error_fails_the_task_at_once_without_retries(
    run_dag: Any, fake_jobs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from traitflow.config import ConfigError

    fake_jobs(corpus_error=ConfigError("k must be > 0, got 0"))
    result = run_dag(
        "traitflow_weekly_retrain", D, env={"AIRFLOW_CONN_TRAITFLOW_DB": CONN}, retries=None
    )  # the DAG's own retries (3 with backoff): a retry would show as try_number > 1
    assert result.state == "failed"
    assert result["build_corpus"] == "failed"
    with create_session() as session:
        tries = session.execute(
            select(TaskInstance.try_number).where(
                TaskInstance.run_id == result.run_id, TaskInstance.task_id == "build_corpus"
            )
        ).scalar_one()
    assert tries == 1


def test_a_gone_plan_or_rejected_candidate_fails_at_once_and_other_errors_keep_their_retries() -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from traitflow.store import ModelRejectedError, PlanNotFoundError
    from traitflow_common import fail_fast

    def raising(error: Exception) -> Callable[[], None]:
        @fail_fast
        def task_body() -> None:
            raise error

        return task_body

    with pytest.raises(AirflowFailException, match="PlanNotFoundError: plan 7 is gone"):
        raising(PlanNotFoundError("plan 7 is gone"))()
    with pytest.raises(AirflowFailException, match="ModelRejectedError: model 3 was rejected"):
        raising(ModelRejectedError("model 3 was rejected"))()
    with pytest.raises(ConnectionError):  # a database hiccup: Airflow retries it
        raising(ConnectionError("server closed the connection"))()


def test_too_few_customers_skips_the_rest_of_the_week_and_reports_why(run_dag: Any, fake_jobs: Any) -> None:
    from traitflow.config import ThinDataError

    fake = fake_jobs()
    fake.module.refit_traits.side_effect = ThinDataError(
        "need at least n_traits=16 customers to fit traits, got 3"
    )
    result = run_dag("traitflow_weekly_retrain", D, retries=None)  # the DAG's own retries
    assert result.state == "success", result
    assert result["refit_traits"] == result["recompute_profiles"] == result["promote"] == "skipped"
    assert result["report"] == "success"
    assert fake.module.refit_traits.call_count == 1  # not retried
    reason = fake.args("weekly_report")["steps"]["refit_traits"]["reason"]
    assert reason == "ThinDataError: need at least n_traits=16 customers to fit traits, got 3"
    assert "promote" not in fake.called()
