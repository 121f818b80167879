"""The weekly and daily jobs end to end against a real PostgreSQL, without Airflow."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from traitflow import event_schema, jobs
from traitflow.config import PipelineConfig
from traitflow.events import LoadResult
from traitflow.jobs import daily as daily_jobs
from traitflow.jobs import refresh as refresh_jobs
from traitflow.model import TraitflowModel, load_tokens, save_tokens
from traitflow.runs import EventInput, RunContext, TuningRequest
from traitflow.store import ModelStateError, Store
from traitflow.store.profile_shards import load_staged

START = datetime(2026, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)
PARAMS = {"k": 6, "vector_size": 16, "epochs": 3, "workers": 1, "training_window_days": 30}
CONFIG = PipelineConfig.from_mapping(PARAMS)


def context(env, run_id: str, end: datetime, work: str | Path | None = None, start: datetime | None = None):
    """The jobs' RunContext for the interval [start, end) (default: the day before ``end``)."""
    work_dir = str(work if work is not None else env["work"] / run_id)
    return RunContext(run_id, start or end - DAY, end, work_dir, env["url"])


def run_daily(env, day: int) -> dict:
    start = START + day * DAY
    run = context(env, f"daily-{day}", start + DAY)
    ingested = jobs.ingest_interval(run, EventInput(env["input"], "canonical"))
    selected = jobs.select_customers(run, env["input"])
    updated = update(run, selected)
    monitored = jobs.monitor_daily(run, updated)
    return {"ingested": ingested, "selected": selected, "updated": updated, "monitored": monitored}


def update(run: RunContext, selected, n_shards: int = 1):
    """The daily DAG's plan -> update_profiles per shard -> commit_update."""
    plan = jobs.plan_update(run, selected, n_shards)
    for shard in plan.shards():
        jobs.update_profiles(run, plan, shard)
    return jobs.commit_update(run, plan)


def recompute(run: RunContext, fitted, n_shards: int = 1):
    """The weekly DAG's plan_recompute -> recompute_profiles per shard: the plan, staged."""
    plan = jobs.plan_recompute(run, fitted, n_shards)
    for shard in plan.shards():
        jobs.recompute_profiles(run, plan, shard)
    return plan


def weekly_context(env, end: datetime, name: str | None = None) -> RunContext:
    name = name or f"weekly-{end:%Y%m%d}"
    return context(env, name, end, env["work"] / name, start=end - 7 * DAY)


def run_weekly(env, end: datetime, *, force: bool = False, config: PipelineConfig = CONFIG) -> dict:
    """The weekly DAG's chain on the week before ``end``, with ``config``'s thresholds."""
    run = weekly_context(env, end)
    corpus = jobs.build_corpus(run, config)
    retrain, why = jobs.should_retrain(corpus, force, config.triggers.new_vocab_threshold)
    result = {"corpus": corpus, "retrain": retrain, "retrain_reason": why}
    if not retrain:
        return result
    candidate = jobs.train_candidate(run, corpus, config)
    gate = jobs.quality_gate(run, candidate)
    result.update(candidate=candidate, gate=gate)
    if not gate.passed:
        result["rejected"] = jobs.reject_candidate(run, candidate, gate)
        return result
    drift = jobs.measure_drift(run, candidate)
    refit, why = jobs.should_refit(drift, config.triggers.drift_threshold)
    result.update(drift=drift, refit=refit, refit_reason=why)
    fitted = jobs.refit_traits(run, candidate) if refit else jobs.keep_traits(run, candidate)
    plan = recompute(run, fitted)
    result["promoted"] = jobs.promote(run, plan, gate, drift)
    result["fitted"] = fitted
    result["plan"] = plan
    return result


def ingest_days(env, days: range) -> None:
    for day in days:
        start = START + day * DAY
        jobs.ingest_interval(context(env, "backfill", start + DAY), EventInput(env["input"], "canonical"))


def test_first_week_then_daily_runs(env):
    store: Store = env["store"]
    for day in range(7):
        first = run_daily(env, day)
    # Before any model exists the daily run ingests but cannot profile, and says why.
    assert first["ingested"].n_files == 1 and first["ingested"].n_inserted > 0
    assert first["updated"].model_version is None and "weekly retrain" in first["updated"].reason

    week = run_weekly(env, START + 7 * DAY)
    assert week["retrain"] and week["retrain_reason"] == "no promoted model yet"
    assert week["gate"].passed and week["refit"]
    # A first model is compared with the popularity baseline on the held-out sessions.
    assert week["gate"].baseline == "popularity" and week["gate"].lower > 0, week["gate"]
    assert week["gate"].candidate_hit_rate > week["gate"].popularity_hit_rate
    version = week["promoted"].model_version
    assert store.active_model_version() == version
    assert store.load_model(version).metrics["quality_gate"] == week["gate"].to_xcom()
    assert store.model_versions().set_index("model_version").loc[version, "drift"] == week["drift"].to_xcom()
    n_customers = len(store.customers_with_events(None, START + 7 * DAY))
    assert store.table_counts()["customer_profiles"] == n_customers == week["promoted"].n_profiles

    day7 = run_daily(env, 7)
    assert day7["updated"].model_version == version
    assert day7["updated"].n_profiles == day7["selected"].n_customers > 0
    assert 0.0 <= day7["monitored"].profile_shift_js <= 1.0
    (stored,) = store.run_reports("daily", limit=1)
    assert stored["report"] == day7["monitored"].to_xcom()
    assert [r["run_key"] for r in store.run_reports("daily", limit=1)] == [(START + 8 * DAY).isoformat()]


def test_a_first_model_that_does_not_beat_popularity_is_not_promoted(env):
    ingest_days(env, range(7))
    run = weekly_context(env, START + 7 * DAY, "random")
    corpus = jobs.build_corpus(run, CONFIG)
    candidate = jobs.train_candidate(run, corpus, CONFIG)
    # The same vocabulary with random vectors: its neighbours predict nothing.
    tokens = load_tokens(candidate.tokens_path)
    tokens.vectors = np.random.default_rng(0).normal(size=tokens.vectors.shape).astype(np.float32)
    save_tokens(tokens, candidate.tokens_path)
    gate = jobs.quality_gate(run, candidate)
    assert not gate.passed and gate.baseline == "popularity", gate
    assert gate.upper < 0 and "not clearly better than popularity" in gate.reason
    rejected = jobs.reject_candidate(run, candidate, gate)
    assert rejected.promoted is False and rejected.reason == gate.reason
    assert env["store"].active_model_version() is None
    # The candidate is kept as a rejected version with the gate's result, once even when retried.
    again = jobs.reject_candidate(run, candidate, gate)
    assert again.model_version == rejected.model_version == 1
    versions = env["store"].model_versions()
    assert len(versions) == 1
    row = versions.iloc[0]
    assert row["status"] == "rejected" and row["status_reason"] == gate.reason
    assert row["metrics"]["quality_gate"] == gate.to_xcom()
    with pytest.raises(ModelStateError, match="rejected"):
        env["store"].promote(1)


def test_second_week_aligns_measures_drift_and_keeps_trait_ids(env):
    for day in range(10):
        run_daily(env, day)
    first = run_weekly(env, START + 7 * DAY)
    second = run_weekly(env, START + 10 * DAY, force=True)
    assert second["retrain_reason"] == "force_retrain requested"
    assert second["drift"].measured and second["drift"].n_shared_tokens > 100
    assert second["gate"].passed, second["gate"].reason
    store: Store = env["store"]
    assert store.active_model_version() == second["promoted"].model_version
    assert store.model_version_for(START + 9 * DAY) == first["promoted"].model_version
    old = set(store.traits(first["promoted"].model_version)["trait_id"])
    new = set(store.traits(second["promoted"].model_version)["trait_id"])
    if second["refit"]:
        assert second["fitted"].trait_match["n_matched"] >= 4, second["fitted"].trait_match
    assert len(old & new) >= 4


def test_a_retried_promote_publishes_the_candidate_once(env):
    for day in range(7):
        run_daily(env, day)
    week = run_weekly(env, START + 7 * DAY)
    store: Store = env["store"]
    first = week["promoted"]
    before = store.table_checksums()
    run = weekly_context(env, START + 7 * DAY)
    # The task retried twice after its COMMIT (e.g. the worker died before reporting success).
    retries = [jobs.promote(run, week["plan"], week["gate"], week["drift"]) for _ in range(2)]
    assert [r.model_version for r in retries] == [first.model_version] * 2
    assert {r.run_key for r in retries} == {first.run_key}
    assert len(store.model_versions()) == 1
    assert store.active_model_version() == first.model_version
    assert store.table_checksums() == before


def test_daily_backfill_in_any_order_gives_identical_rows(env, make_store, monkeypatch):
    # A backfill: the history is already loaded, then days are (re)processed in either order.
    ingest_days(env, range(10))
    run_weekly(env, START + 7 * DAY)
    store: Store = env["store"]
    for day in (7, 8, 9):
        run_daily(env, day)
    reverse_store = make_store(fresh=True)
    reverse_env = {**env, "store": reverse_store, "work": env["work"] / "reverse"}
    monkeypatch.setenv("TRAITFLOW_DB_SCHEMA", reverse_store.schema)
    ingest_days(env, range(10))
    run_weekly(reverse_env, START + 7 * DAY)
    for day in (9, 8, 7):
        run_daily(reverse_env, day)
    # Audit timestamps (updated_at, ingested_at) legitimately differ; every data column must not.
    for query in (
        "SELECT customer_id, as_of, model_version, traits, dominant_trait_id, n_events, cold_start"
        " FROM customer_profile_history ORDER BY customer_id, as_of",
        "SELECT customer_id, as_of, model_version, traits, dominant_trait_id, n_events, cold_start"
        " FROM customer_profiles ORDER BY customer_id",
        "SELECT customer_id, as_of, model_version, embedding FROM customer_profiles ORDER BY customer_id",
    ):
        forward = store.connection.execute(query).fetchall()
        assert forward, query
        assert forward == reverse_store.connection.execute(query).fetchall(), query


def test_tuned_retrain_records_the_chosen_parameters_with_the_model(env):
    ingest_days(env, range(7))
    run = weekly_context(env, START + 7 * DAY, "tuned")
    corpus = jobs.build_corpus(run, CONFIG)
    candidate = jobs.train_candidate(run, corpus, CONFIG, TuningRequest(sample_fraction=0.5, trials=3))
    assert candidate.tuning is not None
    chosen = {key: candidate.config[key] for key in ("ns_exponent", "window", "sample", "epochs")}
    gate = jobs.quality_gate(run, candidate)
    drift = jobs.measure_drift(run, candidate)
    fitted = jobs.refit_traits(run, candidate)
    version = jobs.promote(run, recompute(run, fitted), gate, drift).model_version
    model = env["store"].load_model(version)
    assert model.metrics["tuning"] == candidate.tuning.to_xcom()
    assert model.metrics["tuning"]["best_params"] == chosen
    # The trait fit used the tuned config the candidate carries, not the run's.
    assert {key: getattr(model.config.item2vec, key) for key in chosen} == chosen


def test_refresh_after_promotion_brings_every_profile_to_the_newest_date(env):
    ingest_days(env, range(9))
    week = run_weekly(env, START + 7 * DAY)
    assert jobs.refresh_all_profiles(context(env, "r1", START + 9 * DAY)).reason == "already current"
    run_daily(env, 7)  # some customers now have profiles as of day 8, the rest as of day 7
    refreshed = jobs.refresh_all_profiles(context(env, "r2", START + 9 * DAY))
    store: Store = env["store"]
    assert refreshed.n_profiles == store.table_counts()["customer_profiles"] > 0
    rows = store.connection.execute("SELECT DISTINCT as_of, model_version FROM customer_profiles").fetchall()
    assert rows == [(START + 8 * DAY, week["promoted"].model_version)]


PROFILE_QUERIES = (
    "SELECT customer_id, as_of, model_version, traits, dominant_trait_id, n_events, cold_start"
    " FROM customer_profile_history ORDER BY customer_id, as_of",
    "SELECT customer_id, as_of, model_version, traits, n_events, cold_start, embedding"
    " FROM customer_profiles ORDER BY customer_id",
)


def profile_rows(store: Store) -> list[list[tuple]]:
    return [store.connection.execute(query).fetchall() for query in PROFILE_QUERIES]


def test_a_promotion_during_a_daily_update_ends_as_if_they_ran_one_after_the_other(env, monkeypatch):
    ingest_days(env, range(10))
    first = run_weekly(env, START + 7 * DAY)["promoted"].model_version
    end = START + 10 * DAY
    selected = jobs.select_customers(context(env, "race", end))
    main, original = threading.get_ident(), daily_jobs.profile_customers
    daily_models: list[int] = []
    weekly: dict = {}

    def racing(events, model, as_of, **kwargs):
        # The critical point: the daily run has picked its model and computes its batch. A weekly
        # run trained through the same date promotes a new model, with its profiles, right now.
        if threading.get_ident() == main:
            daily_models.append(model.version)
            if len(daily_models) == 1:
                thread = threading.Thread(target=lambda: weekly.update(run_weekly(env, end, force=True)))
                thread.start()
                thread.join()
                weekly["rows"] = profile_rows(env["store"])
        return original(events, model, as_of, **kwargs)

    monkeypatch.setattr(daily_jobs, "profile_customers", racing)
    updated = update(context(env, "race", end), selected)
    second = weekly["promoted"].model_version
    assert second != first and daily_models == [first, second]
    assert updated.model_version == second and updated.n_profiles == selected.n_customers > 0
    assert updated.recomputed == f"model {first} was replaced by {second} for this date meanwhile"
    store: Store = env["store"]
    raced = profile_rows(store)
    # The state of "weekly, then daily": running the daily update now, after the weekly run,
    # changes nothing; the customers it did not select keep the weekly's rows exactly.
    update(context(env, "after", end), selected)
    assert daily_models == [first, second, second]
    assert profile_rows(store) == raced
    daily_ids = set(pd.read_parquet(selected.customers_path)["customer_id"])
    for rows, weekly_rows in zip(raced, weekly["rows"], strict=True):
        assert [r for r in rows if r[0] not in daily_ids] == [r for r in weekly_rows if r[0] not in daily_ids]
        for row, weekly_row in zip(rows, weekly_rows, strict=True):
            # The daily batch under model 2 reproduces the weekly's profiles (projection of a
            # subset vs all customers: equal to ~1e-6), not model 1's.
            assert row[:3] == weekly_row[:3]
            np.testing.assert_allclose(row[3], weekly_row[3], atol=1e-5)
    at_end = store.connection.execute(
        "SELECT DISTINCT model_version FROM customer_profile_history WHERE as_of = %s", (end,)
    ).fetchall()
    assert at_end == [(second,)]
    current = store.connection.execute("SELECT DISTINCT model_version FROM customer_profiles").fetchall()
    assert current == [(second,)]


def test_a_daily_update_losing_the_race_twice_skips_with_the_reason(env, monkeypatch):
    ingest_days(env, range(8))
    first = run_weekly(env, START + 7 * DAY)["promoted"].model_version
    end = START + 8 * DAY
    selected = jobs.select_customers(context(env, "race", end))
    store: Store = env["store"]
    before = store.table_checksums()
    # Every write finds yet another model selected for its date (as if promotions kept coming).
    from traitflow.store import StaleModelError

    def always_stale(self, batch, *, require_selected_model=False):
        assert require_selected_model
        raise StaleModelError(batch.as_of, batch.model_version, first)

    def always_stale_staged(self, run_key, n_shards, as_of, model_version, *, require_selected_model=False):
        assert require_selected_model
        raise StaleModelError(as_of, model_version, first)

    monkeypatch.setattr(Store, "write_profiles", always_stale)
    monkeypatch.setattr(Store, "write_staged_profiles", always_stale_staged)
    updated = update(context(env, "race", end), selected)
    assert updated.model_version is None and updated.n_profiles == 0
    assert updated.stale_versions == [first, first] and updated.reason.startswith("skipped: ")
    assert store.table_checksums() == before


def test_a_weekly_run_reads_one_event_snapshot_whatever_is_ingested_meanwhile(env):
    ingest_days(env, range(7))
    end = START + 7 * DAY
    run = weekly_context(env, end, "snapshot")
    corpus = jobs.build_corpus(run, CONFIG)
    candidate = jobs.train_candidate(run, corpus, CONFIG)
    # A daily ingest commits between the corpus and the fit: events inside the training window,
    # of a new customer.
    store: Store = env["store"]
    seen = store.read_events(end=end)
    late = seen.iloc[:40].assign(customer_id="zz-late")
    store.ingest_events(LoadResult(events=late, rejects=event_schema.empty_rejects()), "late.csv", "late")
    assert len(store.customers_with_events(None, end)) == seen["customer_id"].nunique() + 1

    fitted = jobs.refit_traits(run, candidate)
    plan = recompute(run, fitted)
    with store.connection.transaction():
        batch = load_staged(store.connection, plan.run_key, 1, end, plan.model_version)
    assert "zz-late" not in set(batch.customer_ids)
    assert len(batch) == seen["customer_id"].nunique()
    model = TraitflowModel.load(fitted.model_dir)
    assert model.metrics["event_snapshot"] == corpus.event_snapshot
    assert model.metrics["n_training_customers"] <= seen["customer_id"].nunique()


def deliver_late(input_dir: Path) -> None:
    """Move every fourth event of day 7 into day 8's file, plus a customer known only from one
    such late event: events dated before the day of the file that delivers them."""
    day7, day8 = (input_dir / f"events_{(START + d * DAY):%Y-%m-%d}.csv" for d in (7, 8))
    early, later = pd.read_csv(day7, dtype=str), pd.read_csv(day8, dtype=str)
    moved = early.iloc[::4]
    newcomer = moved.iloc[:1].assign(customer_id="zz-late")
    early.drop(moved.index).to_csv(day7, index=False)
    pd.concat([later, moved, newcomer]).to_csv(day8, index=False)


def test_late_events_are_picked_up_and_backfill_orders_agree(env, make_store, monkeypatch):
    deliver_late(Path(env["input"]))
    results: dict[tuple[int, ...], list[list[tuple]]] = {}
    selections = {}
    for order in ((7, 8, 9), (9, 8, 7), (8, 9, 7)):
        target = env["store"] if not results else make_store(fresh=True)
        monkeypatch.setenv("TRAITFLOW_DB_SCHEMA", target.schema)
        run_env = {**env, "store": target, "work": env["work"] / "-".join(map(str, order))}
        ingest_days(run_env, range(7))
        run_weekly(run_env, START + 7 * DAY)
        for day in order:
            selections[order, day] = run_daily(run_env, day)["selected"]
        results[order] = profile_rows(target)
        if order == (7, 8, 9):
            # The newcomer's only event is dated day 7 and arrives with day 8's file: picked up
            # by day 8's run, with a profile as of the end of day 8.
            late = target.profile_history("zz-late")
            assert list(late["as_of"]) == [pd.Timestamp(START + 9 * DAY)]
    for day in (7, 8, 9):
        counts = {order: selections[order, day].n_customers for order in results}
        assert len(set(counts.values())) == 1, (day, counts)
    assert results[(7, 8, 9)][0] and results[(7, 8, 9)] == results[(9, 8, 7)] == results[(8, 9, 7)]


def test_the_new_vocabulary_ratio_is_zero_on_unchanged_data(env):
    ingest_days(env, range(7))
    first = run_weekly(env, START + 7 * DAY)
    again = jobs.build_corpus(weekly_context(env, START + 7 * DAY, "again"), CONFIG)
    assert again.active_version == first["promoted"].model_version
    assert again.new_vocab_ratio == 0.0
    assert jobs.should_retrain(again, False, 0.05)[0] is False


def test_a_refresh_overtaken_by_a_promotion_skips_with_the_reason(env, monkeypatch):
    ingest_days(env, range(10))
    first = run_weekly(env, START + 7 * DAY)["promoted"].model_version
    run_daily(env, 9)  # the newest profiles are as of day 10, under the first model
    end = START + 10 * DAY
    original, weekly = refresh_jobs.profile_customers, {}

    def overtaken(events, model, as_of, **kwargs):
        if not weekly:  # the refresh computes under the first model; a retrain promotes now
            weekly["started"] = True
            thread = threading.Thread(target=lambda: weekly.update(run_weekly(env, end, force=True)))
            thread.start()
            thread.join()
        return original(events, model, as_of, **kwargs)

    monkeypatch.setattr(refresh_jobs, "profile_customers", overtaken)
    refreshed = jobs.refresh_all_profiles(context(env, "r", end))
    second = weekly["promoted"].model_version
    assert refreshed.n_profiles == 0 and refreshed.reason.startswith("skipped: ")
    assert f"computed with model {first}, but model {second}" in refreshed.reason
    store: Store = env["store"]
    rows = store.connection.execute("SELECT DISTINCT as_of, model_version FROM customer_profiles").fetchall()
    assert rows == [(end, second)]


def test_an_empty_training_window_is_a_skip_with_the_reason_not_an_error(env):
    from traitflow.chains import run_weekly_chain

    end = START + 7 * DAY  # nothing ingested yet
    corpus = jobs.build_corpus(weekly_context(env, end, "empty"), CONFIG)
    assert corpus.n_events == 0
    assert corpus.empty_reason == (
        "no events in the training window [2026-02-06T00:00:00+00:00, 2026-03-08T00:00:00+00:00)"
    )
    assert corpus.corpus is None and corpus.new_vocab_ratio is None
    assert jobs.should_retrain(corpus, True, 0.05) == (False, f"skip: {corpus.empty_reason}")

    decisions = []
    outcome = run_weekly_chain(
        env["url"], end, env["work"] / "chain", PARAMS, True, run_id="empty", on_decision=decisions.append
    )
    assert outcome.status == "skipped" and outcome.model_version is None
    assert [(d.step, d.branch) for d in decisions] == [("check_new_vocab", "skip_retrain")]
    (stored,) = env["store"].run_reports("weekly")
    assert stored["report"]["check_new_vocab"]["reason"] == f"skip: {corpus.empty_reason}"
    assert env["store"].model_versions().empty


def test_daily_and_refresh_writes_reach_the_profile_cache(env, redis_server, monkeypatch):
    """The daily job rewrites the cached profiles it changed; the refresh starts the cache over."""
    from traitflow import profile_cache

    monkeypatch.setenv(profile_cache.ENV_URL, redis_server.url)
    store: Store = env["store"]
    ingest_days(env, range(9))
    run_weekly(env, START + 7 * DAY)
    active = store.customers_with_events(START + 7 * DAY, START + 8 * DAY)  # the daily run's customers
    customers = [c for c in active if store.current_profile(c) is not None]  # not the new ones
    cached = [profile_cache.cached_current_profile(store, c) for c in customers]
    assert len(customers) > 10 and {r.outcome for r in cached} == {profile_cache.MISS}
    assert {r.profile["as_of"] for r in cached} == {START + 7 * DAY}  # type: ignore[index]

    run_daily(env, 7)  # these customers' profiles move to day 8
    after_daily = [profile_cache.cached_current_profile(store, c) for c in customers]
    assert {r.outcome for r in after_daily} == {profile_cache.HIT}  # refreshed in place, not dropped
    assert {r.profile["as_of"] for r in after_daily} == {START + 8 * DAY}  # type: ignore[index]

    jobs.refresh_all_profiles(context(env, "r", START + 9 * DAY))
    assert profile_cache.cached_current_profile(store, customers[0]).outcome == profile_cache.MISS
    monkeypatch.delenv(profile_cache.ENV_URL)
    assert profile_cache.shared_cache() is None
