"""Every value that crosses a task boundary survives its XCom form: JSON types only, same value back."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

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
    TuningRequest,
    TuningSummary,
    UpdateResult,
    WeeklyReport,
    utc,
)

END = datetime(2026, 3, 8, tzinfo=UTC)
SECRET_URL = "postgresql://tf:hunter2-secret@db.example:5432/traitflow"

CONTEXT = RunContext("manual__x", END - timedelta(weeks=1), END, "/runs/w/x", SECRET_URL, "tf_test")
FILES = CorpusFiles("/w/corpus.txt", "/w/vocabulary.parquet", "/w/holdout.parquet", 900, 120, 100, 800, 55)
CORPUS = CorpusInfo(END - timedelta(days=30), END, 900, 3, "1:5:", corpus=FILES, new_vocab_ratio=0.125)
EMPTY_CORPUS = CorpusInfo(END - timedelta(days=30), END, 0, None, "1:5:", empty_reason="no events")
TUNING = TuningSummary({"window": 3}, {"window": 3, "validation_hit_rate": 0.2}, {"window": 5}, {"n": 10})
CANDIDATE = Candidate(CORPUS, "/w/candidate/tokens.npz", 55, {"k": 6, "window": 3}, TUNING)
GATE = GateResult(True, "passes", "active", 0.02, 0.31, -0.01, 0.005, 400, active_hit_rate=0.32)
FIRST_GATE = GateResult(
    False,
    "fails",
    "popularity",
    0.02,
    0.1,
    -0.05,
    0.01,
    300,
    popularity_hit_rate=0.15,
    lower=-0.07,
    upper=-0.03,
)
DRIFT = DriftResult(True, None, 0.1, 0.12, 0.3, 0.5, 50, 55, 52, 5)
FITTED = FittedCandidate(CANDIDATE, "/w/candidate/model", True, {"n_matched": 5})
WEEKLY_PLAN = ShardPlan("weekly:w-1", 3, END.isoformat(), fitted=FITTED, event_snapshot="9:12:10")
DAILY_PLAN = ShardPlan(
    "daily:d-1", 2, END.isoformat(), 7, [4, 3], model_version=2, exclude_sources=["/in/2026-01-12.csv"]
)
UPDATE = UpdateResult(
    END.isoformat(), 2, 3, None, {"oov_rate": 0.1}, [0.5, 0.5], [1, 2], [1], "model 1 was replaced by 2"
)

HISTORY = HistoryResult(
    END.isoformat(), 12, 2, "2025-03-01T00:00:00+00:00", [], {"customer_profile_history_2025_02": 40}, 40
)

VALUES = [
    CONTEXT,
    EventInput("/data/in", "taobao", 0.25),
    EventInput(None),
    EventInput("/data/in", "canonical", None, "skip"),
    TuningRequest(0.5, 3),
    IngestResult(skipped=True, reason="no input_dir"),
    IngestResult(False, None, 3, 1, ["/in/a.csv"], 1, 10, 8, 1, 1, 0, 1, 2),
    CustomerSelection("/w/customers.parquet", 7),
    CustomerSelection("/w/customers.parquet", 7, ["/in/2026-01-12.csv"]),
    UPDATE,
    UpdateResult(END.isoformat(), None, 0, "no promoted model"),
    DailyReport("daily-1", UPDATE, 0.1, 0.3, 0.02),
    DailyReport("daily-1", UpdateResult(END.isoformat(), None, 0, "no model")),
    DailyReport("daily-1", UpdateResult(END.isoformat(), None, 0, "no event file"), outcome="failed"),
    HISTORY,
    HistoryResult(END.isoformat(), 0, 2, None, ["customer_profile_history_2026_03"]),
    DailyReport("daily-1", UPDATE, 0.1, 0.3, 0.02, history=HISTORY),
    FILES,
    CORPUS,
    EMPTY_CORPUS,
    TUNING,
    CANDIDATE,
    replace(CANDIDATE, tuning=None),
    GATE,
    FIRST_GATE,
    DRIFT,
    DriftResult(False, "no active model"),
    FITTED,
    WEEKLY_PLAN,
    replace(WEEKLY_PLAN, plan_id=8, shard_sizes=[5, 6, 4]),
    DAILY_PLAN,
    ShardPlan("daily:d-1", 1, END.isoformat(), model_version=None, reason="no promoted model"),
    ShardResult(2, 40),
    ShardResult(0, 0, skipped=True),
    PromotionResult(4, 40, "candidate-sha256:ab"),
    RejectionResult("fails", 5, "rejected-sha256:cd"),
    RejectionResult("fails", None, not_saved="too few customers"),
    WeeklyReport("w-1", END, {"build_corpus": CORPUS.to_xcom(), "check_new_vocab": {"branch": "x"}}),
    WeeklyReport("cli-1", END, {"skip_retrain": {"retrained": False}}, runner="cli"),
    RefreshResult(40, 4, END.isoformat()),
    RefreshResult(0, reason="no profiles yet"),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_the_xcom_form_is_json_and_round_trips(value) -> None:
    form = value.to_xcom()
    # JSON types only: what json.dumps gives back through loads is exactly the form.
    assert json.loads(json.dumps(form, allow_nan=False)) == form
    back = type(value).from_xcom(json.loads(json.dumps(form)))
    assert back == value
    assert back.to_xcom() == form


@pytest.mark.parametrize(
    # A weekly report's keys are the DAG's task ids: open by design.
    "value",
    [v for v in VALUES if type(v) is not WeeklyReport],
    ids=lambda v: type(v).__name__,
)
def test_an_unknown_key_is_refused(value) -> None:
    with pytest.raises((ValueError, TypeError)):
        type(value).from_xcom({**value.to_xcom(), "surprise": 1})


def test_a_missing_required_key_is_refused() -> None:
    form = CustomerSelection("/w/c.parquet", 3).to_xcom()
    del form["n_customers"]
    with pytest.raises(TypeError):
        CustomerSelection.from_xcom(form)


def test_the_database_url_never_reaches_xcom_or_repr() -> None:
    form = CONTEXT.to_xcom()
    assert "database_url" not in form and "hunter2" not in json.dumps(form)
    assert "hunter2" not in repr(CONTEXT) and "db.example" not in repr(CONTEXT)
    back = RunContext.from_xcom(form)
    assert back.database_url is None and back == CONTEXT  # the URL identifies no run
    with pytest.raises(ValueError, match="never travels"):
        RunContext.from_xcom({**form, "database_url": SECRET_URL})


def test_run_dates_are_utc_and_the_interval_not_empty() -> None:
    plus_two = timezone(timedelta(hours=2))
    context = RunContext("r", datetime(2026, 3, 1, 2, tzinfo=plus_two), datetime(2026, 3, 2), "/w")
    assert context.start == datetime(2026, 3, 1, tzinfo=UTC) and context.start.tzinfo is UTC
    assert context.end == datetime(2026, 3, 2, tzinfo=UTC)  # naive = UTC
    with pytest.raises(ValueError, match="empty run interval"):
        RunContext("r", END, END, "/w")


def test_the_daily_report_keeps_the_keys_the_traits_page_summarises() -> None:
    # plugins/traitflow_ui/static/app.js SUMMARY_KEYS, read from the top level of a daily report.
    report = DailyReport("daily-1", UPDATE, 0.1, 0.3, 0.02).to_xcom()
    for key in ("model_version", "n_profiles", "oov_rate", "cold_start_share", "profile_shift_js", "reason"):
        assert key in report, key
    assert report["as_of"] == END.isoformat() and report["run_id"] == "daily-1"


def test_an_unknown_missing_input_policy_is_refused() -> None:
    from traitflow.config import ConfigError

    with pytest.raises(ConfigError, match="on_missing"):
        EventInput("/data/in", on_missing="retry")


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 3, 4, 5, 6, 7, 891_011, tzinfo=UTC),
        datetime(2026, 3, 4, tzinfo=UTC).replace(fold=1),
        datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(0))),
        datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(hours=2))),
        datetime(2026, 3, 4, 5, 6, 7),
        "2026-03-04T05:06:07.5+00:00",
    ],
)
def test_utc_of_a_plain_utc_datetime_is_what_the_conversion_builds(value: datetime | str) -> None:
    stamp = datetime.fromisoformat(value) if isinstance(value, str) else value
    stamp = stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)
    built = datetime(*stamp.timetuple()[:6], stamp.microsecond, tzinfo=UTC)
    got = utc(value)
    assert type(got) is datetime and got.tzinfo is UTC
    assert (got, repr(got), got.fold, got.isoformat()) == (built, repr(built), built.fold, built.isoformat())
