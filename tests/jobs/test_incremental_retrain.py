"""Incremental weekly retrains end to end against a real PostgreSQL, without Airflow: the mode
each week takes and why, the lineage stored with each version, trait ids kept on unchanged
behaviour, and a planted behaviour shift that refits the traits and makes the next week full."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from test_jobs import START, run_weekly

from traitflow import event_schema
from traitflow.config import PipelineConfig
from traitflow.events import LoadResult
from traitflow.store import Store
from traitflow.store.cli import models_frame
from traitflow.synthetic import SyntheticSpec, generate

WEEK = timedelta(weeks=1)
PARAMS = {
    "k": 4,
    "vector_size": 16,
    "epochs": 5,
    "workers": 1,
    "training_window_days": 60,
    "full_retrain_every_weeks": 3,
}
SPEC = SyntheticSpec(
    n_customers=300,
    n_products=120,
    n_categories=8,
    n_segments=4,
    n_events=24_000,
    start=START,
    days=35,
    seed=3,
)


def permuted_from(events: pd.DataFrame, since: datetime, seed: int) -> pd.DataFrame:
    """``events`` where from ``since`` on every product behaves like another (a permutation of the ids)."""
    events = events.copy()
    ids = np.sort(events["product_id"].unique())
    swap = dict(zip(ids, np.random.default_rng(seed).permutation(ids), strict=True))
    shifted = events["event_time"] >= since
    events.loc[shifted, "product_id"] = events.loc[shifted, "product_id"].map(swap)
    return events


def ingest(store: Store, events: pd.DataFrame) -> None:
    store.ingest_events(LoadResult(events=events, rejects=event_schema.empty_rejects()), "synthetic", "test")


def lineage(store: Store) -> list[tuple[int, str, int | None, datetime | None]]:
    frame = store.model_versions().sort_values("model_version")
    return [
        (
            int(row.model_version),
            row.training_mode,
            None if pd.isna(row.parent_version) else int(row.parent_version),
            None if pd.isna(row.trained_since) else row.trained_since.to_pydatetime(),
        )
        for row in frame.itertuples()
    ]


def test_full_then_two_increments_then_a_full_retrain_on_schedule(store_env):
    store: Store = store_env["store"]
    ingest(store, generate(SPEC).events)
    config = PipelineConfig.from_mapping(PARAMS)
    # Every week is forced to train: the vocabulary barely moves here.
    weeks = [run_weekly(store_env, START + n * WEEK, force=True, config=config) for n in (2, 3, 4, 5)]
    plans = [week["candidate"].training for week in weeks]
    assert [plan.mode for plan in plans] == ["full", "incremental", "incremental", "full"]
    assert plans[0].reason == "no active model to continue"
    assert "3.0 weeks old (full_retrain_every_weeks=3)" in plans[3].reason, plans[3].reason
    assert plans[1].increment is not None and plans[1].increment["n_sessions"] > 0
    assert lineage(store) == [
        (1, "full", None, None),
        (2, "incremental", 1, START + 2 * WEEK),
        (3, "incremental", 2, START + 3 * WEEK),
        (4, "full", None, None),
    ]
    # Unchanged behaviour: the increments pass the gate, drift little and keep the trait ids.
    for week in weeks[1:3]:
        assert week["gate"].passed, week["gate"].reason
        assert week["drift"].increment_threshold == config.increment.increment_drift_threshold
        recent = week["drift"].recent_weighted_drift
        assert not week["refit"] and recent is not None and recent < week["drift"].increment_threshold
    ids = [set(store.traits(version)["trait_id"]) for version in (1, 2, 3)]
    assert ids[0] == ids[1] == ids[2]
    # The lineage travels with the loaded model and is listed by `traitflow models`.
    assert store.load_model(3).lineage.parent_version == 2  # type: ignore[union-attr]
    listed = models_frame(store.model_versions(), store.model_quality()).set_index("model_version")
    assert listed.loc[3, "training_mode"] == "incremental" and listed.loc[3, "parent_version"] == 2
    assert store.load_model(3).metrics["training"]["refit"] is False


def test_a_planted_behaviour_shift_refits_the_traits_and_the_next_week_is_full(store_env):
    store: Store = store_env["store"]
    # From the third week on every product behaves like another one.
    ingest(store, permuted_from(generate(SPEC).events, START + 2 * WEEK, seed=1))
    # The default thresholds: the increment is judged by increment_drift_threshold.
    config = PipelineConfig.from_mapping({**PARAMS, "full_retrain_every_weeks": 8})
    first = run_weekly(store_env, START + 2 * WEEK, force=True, config=config)
    shift = run_weekly(store_env, START + 3 * WEEK, force=True, config=config)
    assert shift["candidate"].training.mode == "incremental"
    assert shift["gate"].passed, shift["gate"].reason
    threshold = config.increment.increment_drift_threshold
    assert shift["drift"].increment_threshold == threshold < config.triggers.drift_threshold
    recent = shift["drift"].recent_weighted_drift
    assert recent is not None and threshold < recent < config.triggers.drift_threshold
    assert shift["refit"] and shift["refit_reason"].startswith("recent-weighted drift"), shift["refit_reason"]
    after = run_weekly(store_env, START + 4 * WEEK, force=True, config=config)
    plan = after["candidate"].training
    assert plan.mode == "full"
    assert (
        plan.reason == f"v{shift['promoted'].model_version} was an increment whose drift refitted the traits"
    )
    modes = [row[1:3] for row in lineage(store)]
    assert modes == [("full", None), ("incremental", first["promoted"].model_version), ("full", None)]


@pytest.mark.parametrize("seed", [4, 5])
@pytest.mark.parametrize("shifted", [False, True], ids=["unchanged", "shifted"])
def test_the_increment_drift_threshold_separates_a_planted_shift_on_other_seeds(store_env, seed, shifted):
    """One increment after a full retrain, on workloads drawn with other seeds (the data's and
    Word2Vec's): unchanged behaviour keeps the traits and their ids; every product behaving like
    another one from the increment's week on refits them."""
    store: Store = store_env["store"]
    events = generate(dataclasses.replace(SPEC, seed=seed)).events
    ingest(store, permuted_from(events, START + 2 * WEEK, seed=seed) if shifted else events)
    config = PipelineConfig.from_mapping({**PARAMS, "seed": seed, "full_retrain_every_weeks": 8})
    first = run_weekly(store_env, START + 2 * WEEK, force=True, config=config)
    week = run_weekly(store_env, START + 3 * WEEK, force=True, config=config)
    assert week["candidate"].training.mode == "incremental" and week["gate"].passed, week["gate"].reason
    threshold = config.increment.increment_drift_threshold
    recent = week["drift"].recent_weighted_drift
    assert recent is not None and (recent > threshold) is shifted, recent
    assert week["refit"] is shifted, week["refit_reason"]
    if not shifted:
        versions = (first["promoted"].model_version, week["promoted"].model_version)
        assert set(store.traits(versions[0])["trait_id"]) == set(store.traits(versions[1])["trait_id"])
