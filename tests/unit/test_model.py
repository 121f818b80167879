"""The model bundle round-trips bit-identically through a directory."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pytest

from traitflow.config import AggregationParams, Item2VecParams, PipelineConfig, TraitParams
from traitflow.model import MODEL_FORMAT_VERSION, TraitflowModel
from traitflow.pipeline import fit_model, profile_customers, train
from traitflow.synthetic import SyntheticSpec, generate

TOKEN_ARRAYS = ("tokens", "actions", "product_ids", "categories", "counts", "vectors")
TRAIT_ARRAYS = ("components", "center", "trait_ids", "population_profile", "population_vector")
PRODUCT_ARRAYS = ("trait_product_ids", "trait_product_weights")  # optional: models with trait products
SPEC = SyntheticSpec(n_customers=120, n_products=60, n_categories=5, n_segments=3, n_events=3_000, seed=4)


def _assert_identical(a: TraitflowModel, b: TraitflowModel) -> None:
    for owner, names in (("tokens", TOKEN_ARRAYS), ("traits", TRAIT_ARRAYS)):
        for name in names:
            x, y = getattr(getattr(a, owner), name), getattr(getattr(b, owner), name)
            assert x.dtype == y.dtype and x.shape == y.shape, (owner, name, x.dtype, y.dtype)
            if x.dtype == object:
                assert x.tolist() == y.tolist(), (owner, name)
                assert all(type(v) is str for v in y), (owner, name)
            else:
                assert x.tobytes() == y.tobytes(), (owner, name)  # bit for bit: -0.0, subnormals, ...
    for name in ("labels", "top_products", "top_categories"):
        assert getattr(a.traits, name) == getattr(b.traits, name), name
    assert a.traits.l1_penalty == b.traits.l1_penalty
    assert (a.traits.products is None) == (b.traits.products is None)
    if a.traits.products is not None:
        assert a.traits.products.product_ids.tolist() == b.traits.products.product_ids.tolist()
        assert all(type(p) is str for p in b.traits.products.product_ids)
        assert a.traits.products.weights.tobytes() == b.traits.products.weights.tobytes()
        assert a.traits.products.weights.shape == b.traits.products.weights.shape
    assert a.config == b.config
    assert a.trained_through == b.trained_through
    assert a.trained_through.utcoffset() == b.trained_through.utcoffset()
    assert a.metrics == b.metrics
    assert a.trait_match == b.trait_match
    assert a.version == b.version


def test_hand_made_model_with_awkward_values_round_trips_bit_identically(build_model, tmp_path):
    model = build_model()
    model.version = 42
    model.config = PipelineConfig(
        item2vec=Item2VecParams(vector_size=5, sample=0.0, alpha=0.1 + 0.2),
        aggregation=AggregationParams(
            action_weights={"view": 0.1, "purchase": 1e-300}, recency_half_life_days=1 / 3
        ),
        traits=TraitParams(n_traits=3, sparsity=0.05, init="random"),
    )
    loaded = TraitflowModel.load(model.save(tmp_path / "m"))
    _assert_identical(model, loaded)
    # Saving what was loaded gives the same model again.
    _assert_identical(model, TraitflowModel.load(loaded.save(tmp_path / "again")))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    data = generate(SPEC)
    config = PipelineConfig(
        item2vec=Item2VecParams(vector_size=8, epochs=3, workers=1), traits=TraitParams(n_traits=3)
    )
    model = train(data.events, config, SPEC.start + timedelta(days=SPEC.days), tmp_path_factory.mktemp("m"))
    refit = fit_model(data.events, model.tokens, config, model.trained_through, previous=model)
    return data, model, refit


@pytest.mark.parametrize("which", ["trained", "refit"])
def test_trained_model_round_trips_and_projects_identically(trained, which, tmp_path):
    data, model, refit = trained
    model = {"trained": model, "refit": refit}[which]
    if which == "refit":
        assert model.trait_match is not None and model.trait_match["n_matched"] == 3
    loaded = TraitflowModel.load(model.save(tmp_path / which))
    _assert_identical(model, loaded)
    a = profile_customers(data.events, model, model.trained_through)
    b = profile_customers(data.events, loaded, loaded.trained_through)
    assert a.profiles.tobytes() == b.profiles.tobytes()
    assert a.embeddings.tobytes() == b.embeddings.tobytes()


def test_save_writes_the_documented_files(build_model, tmp_path):
    directory = build_model().save(tmp_path / "nested" / "model")
    assert sorted(p.name for p in directory.iterdir()) == ["arrays.npz", "meta.json"]
    meta = json.loads((directory / "meta.json").read_text())
    assert meta["format_version"] == MODEL_FORMAT_VERSION
    with np.load(directory / "arrays.npz", allow_pickle=False) as npz:  # no pickled objects inside
        assert set(npz.files) == set(TOKEN_ARRAYS) | set(TRAIT_ARRAYS) | set(PRODUCT_ARRAYS)


def test_load_rejects_what_is_not_a_model(build_model, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a saved Traitflow model"):
        TraitflowModel.load(tmp_path / "absent")
    directory = build_model().save(tmp_path / "m")
    meta = json.loads((directory / "meta.json").read_text())
    meta["format_version"] = MODEL_FORMAT_VERSION + 1
    (directory / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="unsupported model format"):
        TraitflowModel.load(directory)


def test_a_model_without_trait_products_round_trips(build_model, tmp_path):
    model = build_model()
    assert model.traits.products is not None
    loaded = TraitflowModel.load(model.save(tmp_path / "with"))
    np.testing.assert_array_equal(loaded.traits.products.weights, model.traits.products.weights)
    model.traits.products = None  # saved by a version that did not estimate them
    assert TraitflowModel.load(model.save(tmp_path / "without")).traits.products is None


def test_a_trained_model_carries_its_traits_product_distributions(trained):
    _, model, refit = trained
    for fitted in (model, refit):
        products = fitted.traits.products
        assert products is not None and products.weights.shape == (3, len(products.product_ids))
        assert list(products.product_ids) == sorted(products.product_ids)
        assert np.all(products.weights >= 0) and np.all(products.weights.sum(axis=1) <= 1 + 1e-9)
        # The top products shown for each trait are among the products its distribution keeps.
        for j, top in enumerate(fitted.traits.top_products):
            kept = set(products.product_ids[products.weights[j] > 0])
            assert top and set(top) <= kept
