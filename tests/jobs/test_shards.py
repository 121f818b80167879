"""Customer-sharded profile computation: any number of shards writes the rows one shard does,
whatever order the shards finish in; a failed or retried shard leaves nothing half-written."""

from __future__ import annotations

import hashlib
import random
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from test_jobs import CONFIG, DAY, START, context, ingest_days, weekly_context

from traitflow import jobs
from traitflow.runs import FittedCandidate, RunContext
from traitflow.shards import N_BUCKETS, buckets_of, in_shard, shards_of
from traitflow.store import ShardsNotReadyError, Store

PROFILE_TABLES = ("customer_profiles", "customer_profile_history", "profile_shards")


def test_bucket_is_the_blake2b_of_the_id_known_answer():
    ids = np.array(["c1", "customer-42", "é"], dtype=object)
    expected = [
        int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "little") % N_BUCKETS for i in ids
    ]
    assert buckets_of(ids).tolist() == expected
    assert shards_of(ids, 3).tolist() == [b % 3 for b in expected]


def test_shards_partition_the_customers_in_their_order():
    ids = np.array([f"c{i:05d}" for i in range(2000)], dtype=object)
    parts = [in_shard(ids, shard, 8) for shard in range(8)]
    assert sorted(np.concatenate(parts).tolist()) == ids.tolist()
    assert all(list(part) == sorted(part) for part in parts)
    assert min(len(p) for p in parts) > 150  # a hash, not one shard taking everything
    with pytest.raises(ValueError):
        in_shard(ids, 8, 8)
    with pytest.raises(ValueError):
        shards_of(ids, 65)


def run_shards_shuffled(job, run: RunContext, plan, seed: int, *args) -> None:
    order = plan.shards()
    random.Random(seed).shuffle(order)
    for shard in order:
        job(run, plan, shard, *args)


def daily_checksums(env, run: RunContext, selected, n_shards: int) -> dict[str, str]:
    plan = jobs.plan_update(run, selected, n_shards)
    run_shards_shuffled(jobs.update_profiles, run, plan, n_shards)
    updated = jobs.commit_update(run, plan)
    assert updated.n_profiles == selected.n_customers > 0
    jobs.monitor_daily(run, updated)
    return env["store"].table_checksums()


def test_daily_update_with_1_3_8_shards_writes_identical_tables(env):
    ingest_days(env, range(9))
    week = weekly_context(env, START + 7 * DAY)
    corpus = jobs.build_corpus(week, CONFIG)
    candidate = jobs.train_candidate(week, corpus, CONFIG)
    fitted = jobs.refit_traits(week, candidate)
    plan = jobs.plan_recompute(week, fitted, 1)
    jobs.recompute_profiles(week, plan, 0)
    gate, drift = jobs.quality_gate(week, candidate), jobs.measure_drift(week, candidate)
    jobs.promote(week, plan, gate, drift)
    end = START + 9 * DAY
    run = context(env, "daily", end)
    selected = jobs.select_customers(run)
    one = daily_checksums(env, run, selected, 1)
    # A re-run replaces only rows whose content changed (and then sets updated_at): any value that
    # differed with more shards would change a checksum.
    for n_shards in (3, 8, 64, 1):  # 64: more shards than some have customers (empty batches)
        assert daily_checksums(env, run, selected, n_shards) == one, n_shards
    assert env["store"].table_counts()["profile_shards"] == 0
    ids = pd.read_parquet(selected.customers_path)["customer_id"].to_numpy(dtype=object)
    assert len(set(shards_of(ids, 64))) < 64  # some of the 64 shards were empty


def profile_state(store: Store) -> tuple:
    """The profile tables without ``updated_at`` (a fresh schema writes them at another time)."""
    current = store.connection.execute(
        "SELECT md5(string_agg(t::text, E'\\n' ORDER BY customer_id)) FROM (SELECT customer_id, as_of,"
        " model_version, traits, dominant_trait_id, n_events, cold_start, n_known_tokens, embedding"
        " FROM customer_profiles) t"
    ).fetchone()
    checksums = store.table_checksums()
    return current, checksums["customer_profile_history"], checksums["profile_shards"]


def test_weekly_recompute_with_1_3_8_shards_promotes_identical_profiles(env, make_store):
    """Each shard count promotes the same trained candidate into a fresh schema with the same events."""
    end = START + 7 * DAY
    ingest_days(env, range(7))
    week = weekly_context(env, end)
    corpus = jobs.build_corpus(week, CONFIG)
    candidate = jobs.train_candidate(week, corpus, CONFIG)
    fitted = jobs.refit_traits(week, candidate)
    gate, drift = jobs.quality_gate(week, candidate), jobs.measure_drift(week, candidate)
    states = {}
    for n_shards in (1, 3, 8):
        store = make_store(fresh=True)
        run = replace(week, schema=store.schema, run_id=f"weekly-{n_shards}")
        for day in range(7):
            ingest = replace(run, start=START + day * DAY, end=START + (day + 1) * DAY)
            jobs.ingest_interval(ingest, jobs_input(env))
        plan = jobs.plan_recompute(run, with_snapshot(fitted, store.event_snapshot()), n_shards)
        run_shards_shuffled(jobs.recompute_profiles, run, plan, n_shards)
        promoted = jobs.promote(run, plan, gate, drift)
        assert promoted.n_profiles == len(store.customers_with_events(None, end)) > 0
        states[n_shards] = profile_state(store)
    assert states[3] == states[8] == states[1]


def with_snapshot(fitted: FittedCandidate, snapshot: str) -> FittedCandidate:
    """``fitted`` reading another snapshot (a fresh schema's events)."""
    corpus = replace(fitted.candidate.corpus, event_snapshot=snapshot)
    return replace(fitted, candidate=replace(fitted.candidate, corpus=corpus))


def jobs_input(env):
    from traitflow.runs import EventInput

    return EventInput(env["input"], "canonical")


def test_a_shard_killed_mid_write_leaves_nothing_and_its_retry_commits_everything(env, monkeypatch):
    ingest_days(env, range(9))
    week = weekly_context(env, START + 7 * DAY)
    corpus = jobs.build_corpus(week, CONFIG)
    candidate = jobs.train_candidate(week, corpus, CONFIG)
    fitted = jobs.refit_traits(week, candidate)
    plan1 = jobs.plan_recompute(week, fitted, 1)
    jobs.recompute_profiles(week, plan1, 0)
    jobs.promote(week, plan1, jobs.quality_gate(week, candidate), jobs.measure_drift(week, candidate))
    store: Store = env["store"]
    end = START + 9 * DAY
    selected = jobs.select_customers(context(env, "daily", end))
    reference = context(env, "reference", end)
    expected = daily_checksums(env, reference, selected, 1)

    # The same day again, in 3 shards (a re-run: rows change only where a value differs).
    run = context(env, "killed", end)
    plan = jobs.plan_update(run, selected, 3)
    jobs.update_profiles(run, plan, 0)
    before = store.table_checksums()

    # Shard 1 dies in its staging transaction, after its row was sent.
    from traitflow.store import profile_shards

    real_stage = profile_shards.stage_shard

    def dying(conn, *args):
        real_stage(conn, *args)
        raise KeyboardInterrupt("worker killed")

    monkeypatch.setattr(profile_shards, "stage_shard", dying)
    with pytest.raises(KeyboardInterrupt):
        jobs.update_profiles(run, plan, 1)
    monkeypatch.setattr(profile_shards, "stage_shard", real_stage)
    assert store.table_checksums() == before  # rolled back: no row of shard 1, nothing else changed
    assert store.staged_shards(plan.run_key) == [0]

    # The commit refuses while a shard is missing, and writes nothing.
    with pytest.raises(ShardsNotReadyError, match=r"shards \[1, 2\] of 3"):
        jobs.commit_update(run, plan)
    assert store.table_checksums() == before

    # Shard 0 retried (a duplicate attempt), shard 1 retried, shard 2: one row each.
    for shard in (2, 1, 0):
        jobs.update_profiles(run, plan, shard)
    assert store.staged_shards(plan.run_key) == [0, 1, 2]
    updated = jobs.commit_update(run, plan)
    assert updated.n_profiles == selected.n_customers
    jobs.monitor_daily(replace(run, run_id="reference"), updated)
    assert store.table_checksums() == expected


def test_commit_refuses_shards_staged_for_another_shard_count(env):
    ingest_days(env, range(8))
    week = weekly_context(env, START + 7 * DAY)
    corpus = jobs.build_corpus(week, CONFIG)
    candidate = jobs.train_candidate(week, corpus, CONFIG)
    fitted = jobs.refit_traits(week, candidate)
    three = jobs.plan_recompute(week, fitted, 3)
    for shard in three.shards():
        jobs.recompute_profiles(week, three, shard)
    two = replace(three, n_shards=2)  # same run key, another count: shards 0 and 1 say 3
    store: Store = env["store"]
    before = store.table_checksums()
    with pytest.raises(ShardsNotReadyError, match="n_shards=3"):
        jobs.promote(week, two, jobs.quality_gate(week, candidate), jobs.measure_drift(week, candidate))
    assert store.table_checksums() == before
    assert store.model_versions().empty
