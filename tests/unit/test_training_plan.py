"""Which way a weekly candidate is trained (``jobs.weekly.plan_training``): each rule with the
reason it records, on hand-made model lineages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from traitflow.config import PipelineConfig
from traitflow.jobs.weekly import plan_training
from traitflow.model import Lineage, TokenTable, TraitflowModel, TraitModel

END = datetime(2026, 6, 1, tzinfo=UTC)
WEEK = timedelta(weeks=1)
WINDOW_START = END - timedelta(days=90)


def _model(version: int, trained_through: datetime, lineage: Lineage | None, **flat: Any) -> TraitflowModel:
    config = PipelineConfig.from_mapping(flat)
    d = config.item2vec.vector_size
    one = np.array(["x"], dtype=object)
    tokens = TokenTable(one, one, one, one, np.array([1]), np.zeros((1, d), dtype=np.float32))
    traits = TraitModel(
        components=np.ones((1, 2 * d)),
        center=np.zeros(d),
        trait_ids=np.array([1]),
        labels=["t"],
        top_products=[[]],
        top_categories=[[]],
        population_profile=np.ones(1),
        population_vector=np.zeros(d, dtype=np.float32),
    )
    return TraitflowModel(trained_through, config, tokens, traits, version=version, lineage=lineage)


def _models(*rows: tuple[int, str, datetime, str | None, int | None]) -> pd.DataFrame:
    """``Store.model_versions`` columns the plan reads: (version, status, trained_through, mode, parent)."""
    columns = ["model_version", "status", "trained_through", "training_mode", "parent_version"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype({"parent_version": "Int64"})


FULL_1 = _model(1, END - WEEK, Lineage("full"))
HISTORY = _models((1, "active", END - WEEK, "full", None))


def plan(active: TraitflowModel | None, models: pd.DataFrame, **flat: Any):
    return plan_training(active, models, PipelineConfig.from_mapping(flat), WINDOW_START, END)


def test_auto_continues_a_compatible_recent_model() -> None:
    result = plan(FULL_1, HISTORY)
    assert (result.mode, result.requested, result.parent_version) == ("incremental", "auto", 1)
    assert result.trained_since == END - WEEK
    assert result.reason.startswith("continue v1 on the sessions since 2026-05-25T00:00:00+00:00")


def test_full_is_trained_when_asked_for_or_when_nothing_can_be_continued() -> None:
    assert plan(FULL_1, HISTORY, training_mode="full").reason == "training_mode=full requested"
    assert plan(None, _models(), training_mode="incremental").reason == "no active model to continue"
    other_size = plan(FULL_1, HISTORY, vector_size=32)
    assert other_size.mode == "full" and other_size.reason == "v1 is not compatible: vector_size 64 -> 32"
    old = _model(1, WINDOW_START - WEEK, Lineage("full"))
    assert "before the window starts" in plan(old, HISTORY, training_mode="incremental").reason
    current = _model(1, END, Lineage("full"))
    no_news = "v1 was trained through 2026-06-01T00:00:00+00:00: no newer sessions"
    assert plan(current, HISTORY).reason == no_news


def test_auto_retrains_from_scratch_on_schedule_counting_from_the_last_full_one() -> None:
    # v1 full four weeks ago, then increments v2 and v3: three weeks of increments so far.
    models = _models(
        (3, "active", END - WEEK, "incremental", 2),
        (2, "retired", END - 2 * WEEK, "incremental", 1),
        (1, "retired", END - 4 * WEEK, "full", None),
    )
    active = _model(3, END - WEEK, Lineage("incremental", 2, END - 2 * WEEK))
    assert plan(active, models, full_retrain_every_weeks=5).mode == "incremental"
    due = plan(active, models, full_retrain_every_weeks=4)
    assert due.mode == "full"
    assert due.reason == "the last full retrain (v1) is 4.0 weeks old (full_retrain_every_weeks=4)"
    # An explicit incremental request ignores the schedule.
    assert plan(active, models, training_mode="incremental", full_retrain_every_weeks=4).mode == "incremental"
    # A model saved before lineage was recorded counts as a full retrain.
    unrecorded = _models((1, "active", END - 6 * WEEK, None, None))
    legacy = _model(1, END - 6 * WEEK, None)
    assert "(v1) is 6.0 weeks old" in plan(legacy, unrecorded).reason


def test_auto_retrains_from_scratch_after_a_rejected_increment_or_a_refit() -> None:
    rejected = _models(
        (2, "rejected", END - WEEK, "incremental", 1), (1, "active", END - 2 * WEEK, "full", None)
    )
    active = _model(1, END - 2 * WEEK, Lineage("full"))
    result = plan(active, rejected)
    assert result.mode == "full"
    assert result.reason == "the incremental candidate v2 from v1 was rejected by the quality gate"
    refitted = _model(2, END - WEEK, Lineage("incremental", 1, END - 2 * WEEK))
    refitted.metrics["training"] = {"refit": True}
    models = _models(
        (2, "active", END - WEEK, "incremental", 1), (1, "retired", END - 2 * WEEK, "full", None)
    )
    assert plan(refitted, models).reason == "v2 was an increment whose drift refitted the traits"
    refitted.metrics["training"] = {"refit": False}
    assert plan(refitted, models).mode == "incremental"
