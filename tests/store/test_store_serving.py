"""The Store reads behind the UI plugin: trait labels, trait matches, labelled profile history and
the charts' data (trait sizes over time, model quality, a sample of profiles)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import pytest

from traitflow.model import TraitflowModel
from traitflow.profile_batch import ProfileBatch
from traitflow.store import NotFoundError, Store
from traitflow.store.naming import trait_column, trait_id_of_column
from traitflow.store.serving import (
    LabelledHistoryEntry,
    LabelledTraitScore,
    ModelQuality,
    TraitSizeHistory,
    TraitSizeSeries,
)

BuildModel = Callable[..., TraitflowModel]
BuildBatch = Callable[..., ProfileBatch]
D1 = datetime(2024, 1, 10, tzinfo=UTC)
D2 = datetime(2024, 1, 17, tzinfo=UTC)
FIRST_TRAITS = (3, 7, 11)
SECOND_TRAITS = (3, 7, 12)  # a retrain: trait 11 gone, trait 12 new


@dataclasses.dataclass(frozen=True)
class TwoModels:
    first: TraitflowModel
    second: TraitflowModel
    first_version: int
    second_version: int


@pytest.fixture
def two_models(store: Store, build_model: BuildModel, build_profile_batch: BuildBatch) -> TwoModels:
    """Customer ``c1`` profiled under the first model on D1 and under the second on D2."""
    first = build_model(trait_ids=FIRST_TRAITS)
    first.trait_match = None  # the first model has no predecessor to be matched with
    first_version = store.save_model(first)
    store.promote(first_version)
    second = build_model(trait_ids=SECOND_TRAITS, seed=1, trained_through=datetime(2024, 1, 14, tzinfo=UTC))
    second_version = store.save_model(second)
    store.update_model_metadata(second_version, trait_match={"matched": [[3, 3], [7, 7]], "new": [12]})
    early = build_profile_batch(
        first_version, ["c1"], trait_ids=FIRST_TRAITS, profiles=np.array([[0.1, 0.2, 0.7]]), as_of=D1
    )
    early.n_events[:], early.n_known_tokens[:] = 9, 6
    store.write_profiles(early)
    late = build_profile_batch(
        second_version,
        ["c1"],
        trait_ids=SECOND_TRAITS,
        profiles=np.array([[0.6, 0.3, 0.1]]),
        as_of=D2,
        known_tokens=False,
    )
    late.n_events[:] = 12
    store.write_profiles(late)
    return TwoModels(first, second, first_version, second_version)


def test_trait_columns_name_and_decode_profile_history_columns(store: Store, two_models: TwoModels) -> None:
    frame = store.profile_history("c1")
    decoded = {column: trait_id_of_column(column) for column in frame.columns}
    assert {c: t for c, t in decoded.items() if t is not None} == {
        trait_column(t): t for t in sorted({*FIRST_TRAITS, *SECOND_TRAITS})
    }
    assert trait_column(12) == "trait_12"
    for other in ("as_of", "model_version", "dominant_trait_id", "n_events", "trait_", "trait_x", "traits"):
        assert trait_id_of_column(other) is None, other


def test_trait_labels_of_some_model_versions(store: Store, two_models: TwoModels) -> None:
    first, second = two_models.first, two_models.second
    labels = store.trait_labels([two_models.second_version, two_models.first_version, 999])
    assert labels == {
        two_models.first_version: dict(zip(FIRST_TRAITS, first.traits.labels, strict=True)),
        two_models.second_version: dict(zip(SECOND_TRAITS, second.traits.labels, strict=True)),
        999: {},  # no such model: no labels
    }
    assert store.trait_labels([]) == {}


def test_trait_matches_of_every_model_version(store: Store, two_models: TwoModels) -> None:
    assert store.trait_matches() == {
        two_models.first_version: None,
        two_models.second_version: {"matched": [[3, 3], [7, 7]], "new": [12]},
    }


def test_labelled_history_uses_each_entry_model_and_its_labels(store: Store, two_models: TwoModels) -> None:
    first, second = two_models.first, two_models.second
    early, late = store.labelled_profile_history("c1")
    assert isinstance(early, LabelledHistoryEntry)
    assert (early.as_of, late.as_of) == (D1, D2)
    assert type(early.as_of) is datetime
    assert (early.model_version, late.model_version) == (two_models.first_version, two_models.second_version)
    assert (early.dominant_trait_id, early.dominant_label) == (11, first.traits.labels[2])
    assert (late.dominant_trait_id, late.dominant_label) == (3, second.traits.labels[0])
    assert (early.n_events, late.n_events) == (9, 12)
    assert early.n_known_tokens == 6 and type(early.n_known_tokens) is int
    assert late.n_known_tokens is None  # not recorded for that batch
    assert early.cold_start in {"none", "few_tokens", "no_history"}
    # Only the traits of the entry's own model, in trait id order, each with its label.
    assert all(isinstance(s, LabelledTraitScore) for s in early.traits)
    assert [(s.trait_id, s.label) for s in early.traits] == list(
        zip(FIRST_TRAITS, first.traits.labels, strict=True)
    )
    assert [s.score for s in early.traits] == pytest.approx([0.1, 0.2, 0.7])
    assert [(s.trait_id, s.label) for s in late.traits] == list(
        zip(SECOND_TRAITS, second.traits.labels, strict=True)
    )
    assert [s.score for s in late.traits] == pytest.approx([0.6, 0.3, 0.1])
    assert all(type(s.score) is float for s in late.traits)
    with pytest.raises(dataclasses.FrozenInstanceError):
        early.n_events = 0  # type: ignore[misc]


def test_labelled_history_of_an_unknown_customer_is_empty(store: Store, two_models: TwoModels) -> None:
    assert store.labelled_profile_history("nobody") == []


# ------------------------------------------------------------------------------------ charts

D3 = datetime(2024, 1, 24, tzinfo=UTC)
ONE_HOT = dict(zip(FIRST_TRAITS, np.eye(3), strict=True))  # a profile dominated by one trait


def _write_dominant(
    store: Store, build_profile_batch: BuildBatch, version: int, as_of: datetime, dominant: dict[str, int]
) -> None:
    profiles = np.array([0.8 * ONE_HOT[t] + 0.2 / 3 for t in dominant.values()])
    store.write_profiles(
        build_profile_batch(version, list(dominant), trait_ids=FIRST_TRAITS, profiles=profiles, as_of=as_of)
    )


def test_trait_size_history_counts_each_customer_once_at_every_time(
    store: Store, build_model: BuildModel, build_profile_batch: BuildBatch
) -> None:
    assert store.trait_size_history() == TraitSizeHistory(times=(), series=())
    model = build_model(trait_ids=FIRST_TRAITS)
    version = store.save_model(model)
    store.promote(version)
    _write_dominant(store, build_profile_batch, version, D1, {"c1": 11, "c2": 3, "c3": 3})
    _write_dominant(store, build_profile_batch, version, D2, {"c2": 7})  # c2 moves from 3 to 7
    _write_dominant(store, build_profile_batch, version, D3, {"c4": 3, "c1": 7})  # c4 new, c1 11 -> 7
    label = dict(zip(FIRST_TRAITS, model.traits.labels, strict=True))

    history = store.trait_size_history()
    assert history.times == (D1, D2, D3)
    assert history.series == (
        TraitSizeSeries(3, label[3], (2, 1, 2)),
        TraitSizeSeries(7, label[7], (0, 1, 2)),
        TraitSizeSeries(11, label[11], (1, 1, 0)),
    )
    totals = [sum(s.sizes[i] for s in history.series) for i in range(len(history.times))]
    assert totals == [3, 3, 4]  # every profiled customer once at each time
    # The newest time alone: trait 11 has no customer left there and is left out.
    newest = store.trait_size_history(max_times=1)
    assert newest.times == (D3,)
    assert [(s.trait_id, s.sizes) for s in newest.series] == [(3, (2,)), (7, (2,))]
    assert all(type(size) is int for s in history.series for size in s.sizes)


def _gated(model: TraitflowModel, **gate: object) -> TraitflowModel:
    model.metrics = {"hit_rate": 0.1, "quality_gate": {"passed": True, **gate}}
    return model


def test_model_quality_reads_gate_drift_and_thresholds(store: Store, build_model: BuildModel) -> None:
    assert store.model_quality() == []
    first = _gated(
        build_model(), baseline="popularity", candidate_hit_rate=0.3, popularity_hit_rate=0.2, margin=0.02
    )
    first_version = store.save_model(first)
    store.promote(first_version)
    second = _gated(build_model(seed=1), baseline="active", candidate_hit_rate=0.29, active_hit_rate=0.3)
    second.metrics["quality_gate"].update(passed=False, margin=0.005)
    second_version = store.save_model(second)
    store.update_model_metadata(second_version, drift={"weighted_mean_drift": 0.15, "measured": True})
    store.reject_model(second_version, "worse than the active model")
    ungated = build_model(seed=2)
    ungated.metrics = {}
    ungated_version = store.save_model(ungated)

    first_q, second_q, ungated_q = store.model_quality()
    triggers = first.config.triggers
    assert first_q == ModelQuality(
        model_version=first_version,
        status="active",
        trained_through=first.trained_through,
        passed=True,
        hit_rate=0.3,
        baseline="popularity",
        baseline_hit_rate=0.2,
        quality_margin=0.02,
        training_mode=None,
        drift=None,
        recent_weighted_drift=None,
        drift_threshold=triggers.drift_threshold,
        refit_on=None,
    )
    assert (second_q.model_version, second_q.status, second_q.passed) == (second_version, "rejected", False)
    assert (second_q.hit_rate, second_q.baseline, second_q.baseline_hit_rate) == (0.29, "active", 0.3)
    assert (second_q.quality_margin, second_q.drift) == (0.005, 0.15)  # the gate's own margin wins
    assert (second_q.drift_threshold, second_q.refit_on) == (triggers.drift_threshold, "weighted_mean_drift")
    assert ungated_q.model_version == ungated_version
    assert (ungated_q.passed, ungated_q.hit_rate, ungated_q.baseline, ungated_q.baseline_hit_rate) == (
        None,
        None,
        None,
        None,
    )
    assert ungated_q.quality_margin == triggers.quality_margin  # from the stored config
    assert ungated_q.drift_threshold == triggers.drift_threshold


def test_profile_sample_is_deterministic_and_in_trait_order(
    store: Store, build_model: BuildModel, build_profile_batch: BuildBatch
) -> None:
    with pytest.raises(NotFoundError, match="no active model"):
        store.profile_sample()
    model = build_model(trait_ids=FIRST_TRAITS)
    version = store.save_model(model)
    customers = [f"c{i:02d}" for i in range(20)]
    batch = build_profile_batch(version, customers, trait_ids=FIRST_TRAITS, seed=4)
    store.promote(version, profiles=batch)

    sample = store.profile_sample(limit=5)
    by_md5 = sorted(customers, key=lambda c: hashlib.md5(c.encode()).hexdigest())
    assert sample.customer_ids == tuple(by_md5[:5])
    assert (sample.model_version, sample.n_profiled) == (version, 20)
    assert sample.trait_ids == FIRST_TRAITS
    assert sample.labels == tuple(model.traits.labels)
    rows = [customers.index(c) for c in sample.customer_ids]
    np.testing.assert_allclose(sample.profiles, batch.profiles[rows])
    assert sample.profiles.shape == (5, 3) and sample.profiles.dtype == np.float64
    assert sample.dominant_trait_ids.tolist() == [
        FIRST_TRAITS[int(np.argmax(batch.profiles[i]))] for i in rows
    ]
    again = store.profile_sample(version, limit=5)  # the same customers for the same data
    assert again.customer_ids == sample.customer_ids
    np.testing.assert_array_equal(again.profiles, sample.profiles)
    everyone = store.profile_sample(limit=100)
    assert sorted(everyone.customer_ids) == customers and everyone.profiles.shape == (20, 3)
    with pytest.raises(NotFoundError, match="does not exist"):
        store.profile_sample(999)
