"""Customer-sharded profile computation: any number of shards writes the rows one shard does,
whatever order the shards finish in; a failed or retried shard leaves nothing half-written."""

from __future__ import annotations

import hashlib
import random
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_jobs import CONFIG, DAY, START, context, ingest_days, weekly_context

from traitflow import jobs
from traitflow.model import TraitflowModel
from traitflow.pipeline import profile_customers
from traitflow.profile_batch import ProfileBatch
from traitflow.runs import Candidate, FittedCandidate, RunContext
from traitflow.shards import N_BUCKETS, buckets_of, in_shard, shards_of
from traitflow.store import ModelRejectedError, PlanNotFoundError, ShardsNotReadyError, Store
from traitflow.store.cli import models_frame
from traitflow.store.profile_shards import STALE_AFTER

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


def weekly_candidate(env, days: int) -> tuple[RunContext, Candidate, FittedCandidate]:
    """The first ``days`` days ingested, and the weekly run through day 7 with its candidate
    trained and its traits fitted (corpus -> candidate -> refit): (run, candidate, fitted)."""
    ingest_days(env, range(days))
    week = weekly_context(env, START + 7 * DAY)
    candidate = jobs.train_candidate(week, jobs.build_corpus(week, CONFIG), CONFIG)
    return week, candidate, jobs.refit_traits(week, candidate)


def promote_first_model(env) -> None:
    """Nine days ingested and a model trained through day 7 promoted (one shard)."""
    week, candidate, fitted = weekly_candidate(env, 9)
    plan = jobs.plan_recompute(week, fitted, 1)
    jobs.recompute_profiles(week, plan, 0)
    jobs.promote(week, plan, jobs.quality_gate(week, candidate), jobs.measure_drift(week, candidate))


def daily_checksums(env, run: RunContext, selected, n_shards: int) -> dict[str, str]:
    plan = jobs.plan_update(run, selected, n_shards)
    run_shards_shuffled(jobs.update_profiles, run, plan, n_shards)
    updated = jobs.commit_update(run, plan)
    assert updated.n_profiles == selected.n_customers > 0
    jobs.monitor_daily(run, updated)
    return env["store"].table_checksums()


def test_daily_update_with_1_3_8_shards_writes_identical_tables(env):
    promote_first_model(env)
    end = START + 9 * DAY
    run = context(env, "daily", end)
    selected = jobs.select_customers(run)
    one = daily_checksums(env, run, selected, 1)
    # A re-run replaces only rows whose content changed (and then sets updated_at): any value that
    # differed with more shards would change a checksum.
    for n_shards in (3, 8, 64, 1):  # 64: more shards than some have customers (empty batches)
        assert daily_checksums(env, run, selected, n_shards) == one, n_shards
    counts = env["store"].table_counts()
    assert counts["profile_shards"] == counts["shard_plans"] == counts["shard_members"] == 0
    ids = pd.read_parquet(selected.customers_path)["customer_id"].to_numpy(dtype=object)
    assert len(set(shards_of(ids, 64))) < 64  # some of the 64 shards were empty


def profile_state(store: Store) -> dict[str, str]:
    """The profile tables' checksums without ``updated_at`` (a fresh schema writes them at another time)."""
    return store.table_checksums(PROFILE_TABLES, without=("updated_at",))


def test_weekly_recompute_with_1_3_8_shards_promotes_identical_profiles(env, make_store):
    """Each shard count promotes the same trained candidate into a fresh schema with the same events."""
    end = START + 7 * DAY
    week, candidate, fitted = weekly_candidate(env, 7)
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


def test_weekly_shards_and_promote_read_the_candidate_from_the_database_not_the_run_folder(env, make_store):
    """The run folder deleted after the plan: the shards and promote still run, and give the
    profiles of the candidate's model directory itself (computed and published in a fresh schema)."""
    end = START + 7 * DAY
    week, candidate, fitted = weekly_candidate(env, 7)
    store: Store = env["store"]
    on_disk = TraitflowModel.load(fitted.model_dir)
    events = store.read_events(end=end, snapshot=candidate.corpus.event_snapshot)
    reference = make_store(fresh=True)
    reference.upgrade()
    reference.publish(on_disk, profile_customers(events, on_disk, end))
    gate, drift = jobs.quality_gate(week, candidate), jobs.measure_drift(week, candidate)

    plan = jobs.plan_recompute(week, fitted, 3)
    assert plan.model_version == store.model_versions()["model_version"].item()  # saved as staging
    assert Path(fitted.model_dir).is_relative_to(week.work_dir)
    shutil.rmtree(week.work_dir)  # the candidate's model directory with the rest of the run's folder
    run_shards_shuffled(jobs.recompute_profiles, week, plan, 3)
    promoted = jobs.promote(week, plan, gate, drift)
    assert promoted.model_version == plan.model_version == store.active_model_version()
    assert promoted.n_profiles == len(events["customer_id"].unique()) > 0
    assert profile_state(store) == profile_state(reference)
    model = store.load_model(promoted.model_version)
    assert model.metrics["quality_gate"] == gate.to_xcom() and model.metrics["event_snapshot"]
    assert store.model_versions()["drift"].item() == drift.to_xcom()


def with_snapshot(fitted: FittedCandidate, snapshot: str) -> FittedCandidate:
    """``fitted`` reading another snapshot (a fresh schema's events)."""
    corpus = replace(fitted.candidate.corpus, event_snapshot=snapshot)
    return replace(fitted, candidate=replace(fitted.candidate, corpus=corpus))


def jobs_input(env):
    from traitflow.runs import EventInput

    return EventInput(env["input"], "canonical")


def test_a_shard_killed_mid_write_leaves_nothing_and_its_retry_commits_everything(env, monkeypatch):
    promote_first_model(env)
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
    week, candidate, fitted = weekly_candidate(env, 8)
    three = jobs.plan_recompute(week, fitted, 3)
    for shard in three.shards():
        jobs.recompute_profiles(week, three, shard)
    two = replace(three, n_shards=2)  # same run key, another count: shards 0 and 1 say 3
    store: Store = env["store"]
    before = store.table_checksums()
    with pytest.raises(ShardsNotReadyError, match="n_shards=3"):
        jobs.promote(week, two, jobs.quality_gate(week, candidate), jobs.measure_drift(week, candidate))
    assert store.table_checksums() == before
    # Only the candidate the plan saved, still staging: nothing was promoted.
    assert store.model_versions()["status"].tolist() == ["staging"] and store.active_model_version() is None


# --- the shard plan: customers assigned once per run, each shard reading its own ---------------


def membership(store: Store, run_key: str) -> dict[int, list[str]]:
    """``{shard: customer ids}`` of the run's plan in ``shard_members``."""
    rows = store.connection.execute(
        "SELECT m.shard, m.customer_id FROM shard_plans p JOIN shard_members m USING (plan_id)"
        " WHERE p.run_key = %s ORDER BY m.shard, m.customer_id",
        (run_key,),
    ).fetchall()
    found: dict[int, list[str]] = {}
    for shard, customer in rows:
        found.setdefault(int(shard), []).append(customer)
    return found


def hash_split(ids: np.ndarray, n_shards: int) -> dict[int, list[str]]:
    """``{shard: sorted ids}`` by ``traitflow.shards``, empty shards left out."""
    parts = {shard: sorted(in_shard(ids, shard, n_shards)) for shard in range(n_shards)}
    return {shard: part for shard, part in parts.items() if part}


def staged_ids(store: Store, run_key: str) -> dict[int, list[str]]:
    """``{shard: customer ids}`` of the batches staged under ``run_key``."""
    rows = store.connection.execute(
        "SELECT shard, batch FROM profile_shards WHERE run_key = %s ORDER BY shard", (run_key,)
    ).fetchall()
    return {int(shard): ProfileBatch.from_bytes(bytes(data)).customer_ids.tolist() for shard, data in rows}


def plan_tables(store: Store) -> tuple[int, int, int]:
    counts = store.table_counts()
    return counts["shard_plans"], counts["shard_members"], counts["profile_shards"]


class EventReads:
    """Records the customers of every ``Store.read_events`` result; a shard that asks for every
    customer (``customers_with_events``) fails the test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.customers: list[set[str]] = []
        real = Store.read_events

        def read_events(store: Store, *args, **kwargs) -> pd.DataFrame:
            events = real(store, *args, **kwargs)
            self.customers.append(set(events["customer_id"]))
            return events

        def everyone(*args, **kwargs):
            raise AssertionError("a shard read every customer of the run")

        monkeypatch.setattr(Store, "read_events", read_events)
        monkeypatch.setattr(Store, "customers_with_events", everyone)


def test_each_daily_shard_reads_only_its_members_and_no_file_of_the_run(env, monkeypatch):
    promote_first_model(env)
    store: Store = env["store"]
    run = context(env, "daily", START + 9 * DAY)
    selected = jobs.select_customers(run)
    ids = pd.read_parquet(selected.customers_path)["customer_id"].to_numpy(dtype=object)
    plan = jobs.plan_update(run, selected, 3)
    split = hash_split(ids, 3)
    assert len(split) == 3
    assert membership(store, plan.run_key) == split  # the plan hashed every selected id once
    assert plan.shard_sizes == [len(split[shard]) for shard in range(3)]

    shutil.rmtree(run.work_dir)  # the shards need no file of the run's folder
    reads = EventReads(monkeypatch)
    for shard in plan.shards():
        assert jobs.update_profiles(run, plan, shard).n_profiles == len(split[shard])
        assert reads.customers[-1] == set(split[shard])  # the events of its members, only
    assert staged_ids(store, plan.run_key) == split
    assert jobs.commit_update(run, plan).n_profiles == selected.n_customers
    assert plan_tables(store) == (0, 0, 0)  # the commit deleted the plan with the batches


def test_each_weekly_shard_reads_only_its_members(env, monkeypatch):
    end = START + 7 * DAY
    week, candidate, fitted = weekly_candidate(env, 7)
    store: Store = env["store"]
    plan = jobs.plan_recompute(week, fitted, 3)
    split = hash_split(store.customers_with_events(None, end, snapshot=candidate.corpus.event_snapshot), 3)
    assert membership(store, plan.run_key) == split
    assert plan.shard_sizes == [len(split[shard]) for shard in range(3)]

    reads = EventReads(monkeypatch)
    for shard in plan.shards():
        jobs.recompute_profiles(week, plan, shard)
        assert reads.customers[-1] == set(split[shard])
    assert staged_ids(store, plan.run_key) == split
    promoted = jobs.promote(
        week, plan, jobs.quality_gate(week, candidate), jobs.measure_drift(week, candidate)
    )
    assert promoted.n_profiles == sum(len(part) for part in split.values())
    assert plan_tables(store) == (0, 0, 0)


def test_a_retried_plan_gives_the_same_membership_and_retires_the_earlier_attempt(env):
    promote_first_model(env)
    store: Store = env["store"]
    run = context(env, "retried", START + 9 * DAY)
    selected = jobs.select_customers(run)
    first = jobs.plan_update(run, selected, 3)
    assigned = membership(store, first.run_key)
    jobs.update_profiles(run, first, 0)
    second, third = jobs.plan_update(run, selected, 3), jobs.plan_update(run, selected, 3)
    assert membership(store, first.run_key) == assigned
    assert second.shard_sizes == third.shard_sizes == first.shard_sizes
    assert len({first.plan_id, second.plan_id, third.plan_id}) == 3  # one id per attempt
    # One plan of the run left; the batch staged from the first attempt went with it.
    assert plan_tables(store) == (1, selected.n_customers, 0)

    # A shard still holding an earlier attempt's plan stages nothing.
    with pytest.raises(PlanNotFoundError):
        jobs.update_profiles(run, second, 1)
    assert store.staged_shards(third.run_key) == []
    with pytest.raises(ShardsNotReadyError):
        jobs.commit_update(run, third)
    for shard in third.shards():
        jobs.update_profiles(run, third, shard)
    assert jobs.commit_update(run, third).n_profiles == selected.n_customers
    assert plan_tables(store) == (0, 0, 0)


def test_a_weekly_run_abandoned_after_its_plan_is_superseded_by_the_next_promotion(env):
    """The abandoned run's staging candidate is rejected when the next run promotes its own; the
    abandoned run's promote, retried afterwards, fails with the non-retryable error."""
    end = START + 7 * DAY
    week, candidate, fitted = weekly_candidate(env, 7)
    gate, drift = jobs.quality_gate(week, candidate), jobs.measure_drift(week, candidate)
    abandoned = jobs.plan_recompute(week, fitted, 1)
    jobs.recompute_profiles(week, abandoned, 0)

    # The next run reads a later event snapshot (one more day ingested): another candidate.
    ingest_days(env, range(7, 8))
    rerun = weekly_context(env, end, "weekly-rerun")
    candidate2 = jobs.train_candidate(rerun, jobs.build_corpus(rerun, CONFIG), CONFIG)
    plan = jobs.plan_recompute(rerun, jobs.refit_traits(rerun, candidate2), 1)
    assert plan.model_version == abandoned.model_version + 1
    jobs.recompute_profiles(rerun, plan, 0)
    promoted = jobs.promote(rerun, plan, gate, drift)
    assert promoted.n_superseded == 1
    assert jobs.promote(rerun, plan, gate, drift) == promoted  # a retry after the commit: same counts
    store: Store = env["store"]
    models = store.model_versions().set_index("model_version")
    assert models.loc[abandoned.model_version, "status"] == "rejected"
    assert models.loc[abandoned.model_version, "status_reason"] == (
        f"superseded by version {plan.model_version} before its run promoted it"
    )
    listed = models_frame(models.reset_index(), store.model_quality()).set_index("model_version")
    assert listed.loc[abandoned.model_version, "superseded_by"] == plan.model_version  # `traitflow models`
    assert pd.isna(listed.loc[plan.model_version, "superseded_by"])

    checksums = store.table_checksums()
    with pytest.raises(ModelRejectedError, match="superseded by version"):
        jobs.promote(week, abandoned, gate, drift)
    assert store.table_checksums() == checksums
    assert store.active_model_version() == plan.model_version


def test_an_abandoned_plan_stays_its_own_run_s_and_goes_once_stale(env):
    promote_first_model(env)
    store: Store = env["store"]
    end = START + 9 * DAY
    abandoned_run = context(env, "abandoned", end)
    selected = jobs.select_customers(abandoned_run)
    abandoned = jobs.plan_update(abandoned_run, selected, 3)
    jobs.update_profiles(abandoned_run, abandoned, 0)
    left = membership(store, abandoned.run_key)

    # The next run of the day plans, computes and commits with its own plan only.
    run = context(env, "next", end)
    plan = jobs.plan_update(run, selected, 2)
    assert plan.plan_id != abandoned.plan_id
    ids = pd.read_parquet(selected.customers_path)["customer_id"].to_numpy(dtype=object)
    assert membership(store, plan.run_key) == hash_split(ids, 2)
    for shard in plan.shards():
        jobs.update_profiles(run, plan, shard)
    assert jobs.commit_update(run, plan).n_profiles == selected.n_customers
    assert membership(store, abandoned.run_key) == left  # a recent plan of another run is kept
    assert store.staged_shards(abandoned.run_key) == [0]

    # Older than STALE_AFTER: the next plan (of any run) deletes it with its batch.
    aged = (STALE_AFTER + DAY,)
    store.connection.execute("UPDATE shard_plans SET created_at = created_at - %s", aged)
    store.connection.execute("UPDATE profile_shards SET created_at = created_at - %s", aged)
    later = context(env, "later", end)
    jobs.plan_update(later, selected, 1)
    assert membership(store, abandoned.run_key) == {}
    assert store.staged_shards(abandoned.run_key) == []
    assert plan_tables(store) == (1, selected.n_customers, 0)
