"""The Store reads behind the UI plugin: trait labels, trait matches, labelled profile history."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import pytest

from traitflow.model import TraitflowModel
from traitflow.profile_batch import ProfileBatch
from traitflow.store import Store
from traitflow.store.naming import trait_column, trait_id_of_column
from traitflow.store.serving import LabelledHistoryEntry, LabelledTraitScore

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
