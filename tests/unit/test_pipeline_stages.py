"""The pipeline's stage hook (``run_stage``): a runner sees every named stage, in order, one at a
time, and a run through a runner gives exactly the result of a run without one."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from traitflow.aggregate import customer_embeddings
from traitflow.config import Item2VecParams, PipelineConfig, TraitParams
from traitflow.model import TraitflowModel
from traitflow.pipeline import fit_model, profile_customers, profiles_from_embeddings, train
from traitflow.profile_batch import ProfileBatch
from traitflow.synthetic import SyntheticData, SyntheticSpec, generate

SPEC = SyntheticSpec(n_customers=150, n_events=2_000, seed=3)
# workers=1: a bit-reproducible Item2Vec, so two trainings can be compared byte for byte.
CONFIG = PipelineConfig(item2vec=Item2VecParams(workers=1, epochs=3), traits=TraitParams(n_traits=4))
END = SPEC.start + timedelta(days=SPEC.days)

FIT_STAGES = ["aggregate", "nmf", "labels", "trait_products"]

_Result = TypeVar("_Result")


class Recorder:
    """A ``StageRunner`` that logs each stage's start and end and what it returned."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []
        self.results: dict[str, Any] = {}

    def __call__(self, name: str, stage: Callable[[], _Result]) -> _Result:
        self.log.append(("start", name))
        result = stage()
        self.log.append(("end", name))
        self.results[name] = result
        return result

    @property
    def names(self) -> list[str]:
        """The stages in the order they ran; asserts that none ran inside another."""
        starts, ends = self.log[0::2], self.log[1::2]
        assert [kind for kind, _ in starts] == ["start"] * len(starts)
        assert [name for _, name in starts] == [name for _, name in ends]
        return [name for _, name in starts]


@pytest.fixture(scope="module")
def data() -> SyntheticData:
    return generate(SPEC)


@pytest.fixture(scope="module")
def trained(data: SyntheticData, tmp_path_factory: pytest.TempPathFactory) -> tuple[TraitflowModel, Recorder]:
    recorder = Recorder()
    model = train(data.events, CONFIG, END, tmp_path_factory.mktemp("hooked"), run_stage=recorder)
    return model, recorder


def _saved(model: TraitflowModel, directory: Path) -> tuple[str, dict[str, bytes]]:
    """The model as written to disk: meta.json's text and each array's bytes."""
    model.save(directory)
    with np.load(directory / "arrays.npz", allow_pickle=False) as arrays:
        return (directory / "meta.json").read_text(), {key: arrays[key].tobytes() for key in arrays.files}


def _assert_batches_identical(a: ProfileBatch, b: ProfileBatch) -> None:
    np.testing.assert_array_equal(a.customer_ids, b.customer_ids)
    assert a.profiles.tobytes() == b.profiles.tobytes()
    assert a.embeddings.tobytes() == b.embeddings.tobytes()
    np.testing.assert_array_equal(a.n_events, b.n_events)
    np.testing.assert_array_equal(a.cold_start, b.cold_start)
    np.testing.assert_array_equal(a.n_known_tokens, b.n_known_tokens)
    np.testing.assert_array_equal(a.trait_ids, b.trait_ids)
    assert a.stats == b.stats and a.as_of == b.as_of and a.model_version == b.model_version


def test_train_runs_its_stages_in_order_and_hands_on_their_results(trained):
    model, recorder = trained
    assert recorder.names == ["corpus", "item2vec", *FIT_STAGES]
    assert recorder.results["item2vec"] is model.tokens
    assert recorder.results["corpus"].stats.__dict__ == model.metrics["corpus"]
    assert recorder.results["trait_products"] is model.traits.products
    assert len(recorder.results["aggregate"].customer_ids) == SPEC.n_customers
    assert recorder.results["nmf"].traits is model.traits


def test_train_with_a_runner_gives_the_model_trained_without_one(data, trained, tmp_path):
    hooked, _ = trained
    plain = train(data.events, CONFIG, END, tmp_path / "plain")
    assert _saved(hooked, tmp_path / "hooked-model") == _saved(plain, tmp_path / "plain-model")


def test_refit_and_carry_over_run_their_own_stages(data, trained, tmp_path):
    model, _ = trained
    refit, kept = Recorder(), Recorder()
    refitted = fit_model(data.events, model.tokens, CONFIG, END, previous=model, run_stage=refit)
    carried = fit_model(
        data.events, model.tokens, CONFIG, END, previous=model, refit_traits=False, run_stage=kept
    )
    assert refit.names == ["aggregate", "nmf", "match", "labels", "trait_products"]
    assert kept.names == ["aggregate", "carry_over", "labels", "trait_products"]
    # Same inputs without a runner: the same models.
    plain_refit = fit_model(data.events, model.tokens, CONFIG, END, previous=model)
    plain_carried = fit_model(data.events, model.tokens, CONFIG, END, previous=model, refit_traits=False)
    assert _saved(refitted, tmp_path / "a") == _saved(plain_refit, tmp_path / "b")
    assert _saved(carried, tmp_path / "c") == _saved(plain_carried, tmp_path / "d")
    np.testing.assert_array_equal(refitted.traits.trait_ids, refit.results["match"][0])


def test_profile_customers_with_a_runner_gives_the_same_profiles(data, trained):
    model, _ = trained
    recorder = Recorder()
    history = data.events[data.events["customer_id"].isin(data.events["customer_id"].unique()[:40])]
    extra_ids = np.array(["nobody-1", "nobody-2"], dtype=object)  # no events: population profile
    hooked = profile_customers(history, model, END, customer_ids=extra_ids, run_stage=recorder)
    plain = profile_customers(history, model, END, customer_ids=extra_ids)
    assert recorder.names == ["aggregate", "project"]
    _assert_batches_identical(hooked, plain)
    assert len(recorder.results["project"]) == int(hooked.embeddings.shape[0] - 2)


def test_profiles_from_embeddings_is_the_second_half_of_profile_customers(data, trained):
    model, _ = trained
    embeddings = customer_embeddings(
        data.events, model.tokens, CONFIG.aggregation, CONFIG.sessions, as_of=END
    )
    recorder = Recorder()
    batch = profiles_from_embeddings(model, embeddings, END, run_stage=recorder)
    assert recorder.names == ["project"]
    _assert_batches_identical(batch, profile_customers(data.events, model, END))
