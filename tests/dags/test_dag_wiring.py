"""Run the real Traitflow DAGs with ``dag.test`` against a fake ``traitflow.jobs``.

The fake records every call, so these tests pin what the DAGs hand to the library (dates, params,
paths, the database URL) and which branch runs in each weekly scenario, without Postgres or
training. End-to-end runs against the real library live next to these once ``jobs`` exists.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import traitflow
from traitflow import chains  # imported before any FakeJobs is installed: it binds the real jobs
from traitflow.config import PipelineConfig

D = datetime(2026, 1, 11, tzinfo=UTC)  # a Sunday: a real weekly logical date
DAY, WEEK = timedelta(days=1), timedelta(weeks=1)
CONN = "postgresql://tf:pw@db.example:5432/traitflow"


class FakeJobs(types.ModuleType):
    """Stand-in for ``traitflow.jobs`` with the agreed signatures; records calls by name."""

    def __init__(
        self,
        retrain: bool = True,
        passed: bool = True,
        refit: bool = True,
        empty: bool = False,
        corpus_error: Exception | None = None,
    ) -> None:
        super().__init__("traitflow.jobs")
        self.retrain, self.passed, self.refit, self.empty = retrain, passed, refit, empty
        self.corpus_error = corpus_error
        self.calls: dict[str, dict[str, Any]] = {}

    def _record(self, name: str, args: dict[str, Any]) -> None:
        args.pop("self", None)
        assert name not in self.calls, f"{name} called twice"
        self.calls[name] = args

    # daily
    def ingest_interval(self, database_url, input_dir, mapping, start, end, run_id, max_reject_share) -> dict:
        self._record("ingest_interval", dict(locals()))
        return {"skipped": input_dir is None, "n_events": 0 if input_dir is None else 10}

    def select_customers(self, database_url, start, end, work_dir, input_dir) -> dict:
        self._record("select_customers", dict(locals()))
        path = Path(work_dir) / "customers.parquet"
        path.write_text("fake")
        return {"customers_path": str(path), "n_customers": 3}

    def update_profiles(self, database_url, as_of, customers_path, run_id, params, input_dir) -> dict:
        self._record("update_profiles", dict(locals()))
        return {"model_version": 1, "n_profiles": 3}

    def monitor_daily(self, database_url, as_of, run_id, update_result) -> dict:
        self._record("monitor_daily", dict(locals()))
        return {"ok": True}

    # weekly
    def build_corpus(self, database_url, trained_through, work_dir, params) -> dict:
        self._record("build_corpus", dict(locals()))
        if self.corpus_error is not None:
            raise self.corpus_error
        if self.empty:
            return {"n_events": 0, "empty_reason": "no events in the training window", "active_version": 1}
        return {
            "corpus_path": f"{work_dir}/corpus.txt",
            "tokens_path": "t",
            "new_vocab_ratio": 0.2,
            "active_version": 1,
        }

    def should_retrain(self, corpus_info, force_retrain, threshold) -> tuple[bool, str]:
        self._record("should_retrain", dict(locals()))
        if corpus_info.get("empty_reason"):
            return False, f"skip: {corpus_info['empty_reason']}"
        return (
            self.retrain or force_retrain,
            "new vocab 20% > 5%" if self.retrain else "new vocab below threshold",
        )

    def train_candidate(
        self, database_url, corpus_info, work_dir, params, *, tune, tune_sample_fraction, tune_trials
    ) -> dict:
        self._record("train_candidate", dict(locals()))
        return {"candidate_dir": f"{work_dir}/candidate", "version": 2}

    def quality_gate(self, database_url, candidate_info, params) -> dict:
        self._record("quality_gate", dict(locals()))
        return {"passed": self.passed, "reason": "hit rate ok" if self.passed else "hit rate -5%"}

    def reject_candidate(self, database_url, candidate_info, gate_result) -> dict:
        self._record("reject_candidate", dict(locals()))
        return {"rejected": True}

    def measure_drift(self, database_url, candidate_info) -> dict:
        self._record("measure_drift", dict(locals()))
        return {"mean_drift": 0.3, "max_drift": 0.5, "n_shared_tokens": 100}

    def should_refit(self, drift_info, threshold) -> tuple[bool, str]:
        self._record("should_refit", dict(locals()))
        return (self.refit, "drift above threshold" if self.refit else "drift below threshold")

    def refit_traits(self, database_url, candidate_info, params) -> dict:
        self._record("refit_traits", dict(locals()))
        return {**candidate_info, "traits": "refit"}

    def keep_traits(self, database_url, candidate_info) -> dict:
        self._record("keep_traits", dict(locals()))
        return {**candidate_info, "traits": "kept"}

    def recompute_profiles(self, database_url, candidate_info, as_of, work_dir) -> dict:
        self._record("recompute_profiles", dict(locals()))
        return {"profiles_path": f"{work_dir}/profiles.parquet", "n_profiles": 3}

    def promote(self, database_url, candidate_info, profiles_info) -> dict:
        self._record("promote", dict(locals()))
        return {"model_version": 2, "n_profiles": 3, "promoted": True}

    def weekly_report(self, database_url, run_id, results) -> dict:
        self._record("weekly_report", dict(locals()))
        return {"stored": True}

    # refresh
    def refresh_all_profiles(self, database_url, work_dir, run_id) -> dict:
        self._record("refresh_all_profiles", dict(locals()))
        return {"n_profiles": 3}


@pytest.fixture
def fake_jobs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Install a FakeJobs as ``traitflow.jobs`` (tasks run in this process under dag.test)."""

    def install(**behaviour: bool) -> FakeJobs:
        fake = FakeJobs(**behaviour)
        monkeypatch.setitem(sys.modules, "traitflow.jobs", fake)
        monkeypatch.setattr(traitflow, "jobs", fake, raising=False)
        return fake

    yield install


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
    calls = fake.calls
    ingest = calls["ingest_interval"]
    assert (ingest["start"], ingest["end"]) == (D - DAY, D)  # logical date D = end of the day
    assert (ingest["input_dir"], ingest["mapping"], ingest["run_id"], ingest["max_reject_share"]) == (
        "/data/in",
        "retailrocket",
        result.run_id,
        0.25,
    )
    assert {c["database_url"] for c in calls.values() if "database_url" in c} == {CONN}
    work_dir = Path(calls["select_customers"]["work_dir"])
    assert work_dir.is_dir() and work_dir.parts[-3:-1] == ("runs", "traitflow_daily")
    update = calls["update_profiles"]
    assert update["as_of"] == D
    assert update["customers_path"] == str(work_dir / "customers.parquet")
    assert not update.get("params")  # the update uses the stored model's own config
    # The day's files decide which late events are picked up and which files are not yet due.
    assert calls["select_customers"]["input_dir"] == update["input_dir"] == "/data/in"
    assert calls["monitor_daily"]["update_result"] == {"model_version": 1, "n_profiles": 3}


def test_daily_without_input_dir_ingests_nothing_but_still_updates(
    run_dag: Any, fake_jobs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_TRAITFLOW_DB", raising=False)
    monkeypatch.delenv("TRAITFLOW_DATABASE_URL", raising=False)
    fake = fake_jobs()
    result = run_dag("traitflow_daily", D, conf={"input_dir": ""})
    assert result.state == "success"
    assert fake.calls["ingest_interval"]["input_dir"] is None
    assert fake.calls["ingest_interval"]["database_url"] is None  # embedded Postgres
    assert fake.calls["update_profiles"]["input_dir"] is None


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
    "recompute_profiles",
    "promote",
    "report",
]
ALWAYS = {"build_corpus", "check_new_vocab", "report"}
TRAINED = {"train_candidate", "quality_gate"}
PROMOTED = {"measure_drift", "check_drift", "recompute_profiles", "promote"}


@pytest.mark.parametrize(
    ("behaviour", "conf", "ran"),
    [
        ({"retrain": False}, {}, ALWAYS | {"skip_retrain"}),
        ({"retrain": False}, {"force_retrain": True}, ALWAYS | TRAINED | PROMOTED | {"refit_traits"}),
        ({"passed": False}, {}, ALWAYS | TRAINED | {"reject_candidate"}),
        ({"refit": True}, {}, ALWAYS | TRAINED | PROMOTED | {"refit_traits"}),
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
    assert fake.calls["build_corpus"]["trained_through"] == D
    assert fake.calls["should_retrain"]["force_retrain"] is bool(conf.get("force_retrain"))
    assert fake.calls["should_retrain"]["threshold"] == PipelineConfig().triggers.new_vocab_threshold

    results = fake.calls["weekly_report"]["results"]
    assert set(results) == set(WEEKLY) - {"report"} | {"trained_through"}
    assert results["trained_through"] == D.isoformat()
    assert results["check_new_vocab"]["branch"] == (
        "train_candidate" if "train_candidate" in ran else "skip_retrain"
    )
    assert results["check_new_vocab"]["reason"]
    assert all(results[t] is None for t in set(WEEKLY) - ran)  # skipped tasks report nothing

    events = _asset_events(result.run_id)
    if "promote" in ran:
        assert events == [{"uri": "traitflow://models/active", "extra": {"model_version": 2}}]
        candidate = fake.calls["promote"]["candidate_info"]
        assert candidate["traits"] == ("refit" if "refit_traits" in ran else "kept")
        assert fake.calls["recompute_profiles"]["as_of"] == D
    else:
        assert events == []
    if "reject_candidate" in ran:
        gate = fake.calls["reject_candidate"]["gate_result"]
        assert gate["passed"] is False and gate["reason"] == "hit rate -5%"

    # `traitflow retrain` (traitflow.chains) takes the same branches with the same job calls.
    assert tuple(WEEKLY[:-1]) == chains.WEEKLY_STEPS
    chain_fake = FakeJobs(**behaviour)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(chains, "jobs", chain_fake)
        outcome = chains.run_weekly_chain(
            CONN,
            D,
            fake.calls["build_corpus"]["work_dir"],  # the fake's results embed it
            PipelineConfig().to_flat(),
            bool(conf.get("force_retrain")),
            run_id="cli-test",
        )
    assert list(chain_fake.calls) == list(fake.calls)  # same jobs, same order
    for name, call in fake.calls.items():
        ignored = {"run_id", "results"}
        assert {k: v for k, v in chain_fake.calls[name].items() if k not in ignored} == {
            k: v for k, v in call.items() if k not in ignored
        }, name
    chain_results = chain_fake.calls["weekly_report"]["results"]
    assert {k for k, v in results.items() if v is not None} == set(chain_results) - {"runner"}
    branches = ("check_new_vocab", "quality_gate", "check_drift")
    assert [d.branch for d in outcome.decisions] == [results[b]["branch"] for b in branches if results[b]]
    assert outcome.status == (
        "promoted" if "promote" in ran else "rejected" if "reject_candidate" in ran else "skipped"
    )


def test_weekly_failure_fails_the_run_and_skips_no_report_silently(run_dag: Any, fake_jobs: Any) -> None:
    fake = fake_jobs()

    def broken(*args: Any, **kwargs: Any) -> dict:
        raise RuntimeError("training blew up")

    fake.train_candidate = broken
    result = run_dag("traitflow_weekly_retrain", D)
    assert result.state == "failed"
    assert result["train_candidate"] == "failed"
    assert result["report"] == "upstream_failed"
    assert "promote" not in fake.calls


# --- refresh -------------------------------------------------------------------------------------


def test_refresh_on_promotion_refreshes_all_profiles(run_dag: Any, fake_jobs: Any) -> None:
    fake = fake_jobs()
    result = run_dag("traitflow_refresh_on_promotion", D, env={"AIRFLOW_CONN_TRAITFLOW_DB": CONN})
    assert result.state == "success"
    call = fake.calls["refresh_all_profiles"]
    assert call["database_url"] == CONN
    assert call["run_id"] == result.run_id
    assert Path(call["work_dir"]).is_dir()


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
    decision = fake.calls["weekly_report"]["results"]["check_new_vocab"]
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
