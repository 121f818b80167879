"""The served product ranking (``traitflow.recommend``): known answers on a hand-made model, and
the same ranking as the evaluation's ``ranking.profile_product_scores`` on a trained model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from traitflow.config import Item2VecParams, PipelineConfig, TraitParams
from traitflow.model import TokenTable, TraitflowModel, TraitModel, TraitProducts
from traitflow.pipeline import profile_customers, train
from traitflow.product_eval import ProfileVectors, stored_weights
from traitflow.ranking import SIMILARITY_WEIGHT, profile_product_scores, top_k
from traitflow.recommend import MAX_N, NoProductRankingError, build_catalog, check_n, rank_products
from traitflow.synthetic import SyntheticSpec, generate

# Trait 0 buys "a" and "b" alike (0.4 each) and "c" less; trait 1 buys "c" only. "d" has a token
# but no trait lists it. Each product's token vector is a unit axis.
PRODUCTS = ["a", "b", "c", "d"]
AXES = np.eye(4, dtype=np.float32)


def tiny_model() -> TraitflowModel:
    k, d = 2, 4
    return TraitflowModel(
        trained_through=datetime(2024, 1, 7, tzinfo=UTC),
        config=PipelineConfig(traits=TraitParams(n_traits=k)),
        tokens=TokenTable(
            tokens=np.array([f"view_{p}" for p in PRODUCTS], dtype=object),
            actions=np.array(["view"] * 4, dtype=object),
            product_ids=np.array(PRODUCTS, dtype=object),
            categories=np.array([""] * 4, dtype=object),
            counts=np.ones(4, dtype=np.int64),
            vectors=AXES,
        ),
        traits=TraitModel(
            components=np.ones((k, 2 * d)),
            center=np.zeros(d),
            trait_ids=np.array([1, 2], dtype=np.int64),
            labels=["one", "two"],
            top_products=[["a"], ["c"]],
            top_categories=[[], []],
            population_profile=np.full(k, 0.5),
            population_vector=np.zeros(d, dtype=np.float32),
            products=TraitProducts(
                np.array(["a", "b", "c"], dtype=object), np.array([[0.4, 0.4, 0.2], [0.0, 0.0, 1.0]])
            ),
        ),
    )


def test_the_customer_vector_breaks_the_mixtures_tie() -> None:
    catalog = build_catalog(tiny_model())
    profile = np.array([1.0, 0.0])
    towards_b = rank_products(catalog, profile, AXES[1], n=4)
    assert [p.product_id for p in towards_b] == ["b", "a", "c", "d"]
    floor = 0.01 / 4  # "d": no trait lists it, the mixture's floor at a hundredth of uniform
    expected = [np.log(0.4) + SIMILARITY_WEIGHT, np.log(0.4), np.log(0.2), np.log(floor)]
    assert [p.score for p in towards_b] == pytest.approx(expected)
    assert [p.rank for p in towards_b] == [1, 2, 3, 4] and all(p.name is None for p in towards_b)
    towards_a = rank_products(catalog, profile, AXES[0], n=2)
    assert [p.product_id for p in towards_a] == ["a", "b"]
    # A product no trait lists ranks by similarity among the floor, below the listed ones here.
    towards_d = rank_products(catalog, profile, AXES[3], n=4)
    assert [p.product_id for p in towards_d] == ["a", "b", "c", "d"]
    assert towards_d[-1].score == pytest.approx(np.log(floor) + SIMILARITY_WEIGHT)


def test_excluded_products_are_left_out_and_the_list_may_run_short() -> None:
    catalog = build_catalog(tiny_model())
    ranked = rank_products(catalog, np.array([1.0, 0.0]), AXES[1], n=3, exclude=["b", "unknown"])
    assert [p.product_id for p in ranked] == ["a", "c", "d"]
    assert [p.rank for p in ranked] == [1, 2, 3]
    everything_but_c = rank_products(catalog, np.array([0.0, 1.0]), AXES[2], n=10, exclude=["a", "b", "d"])
    assert [p.product_id for p in everything_but_c] == ["c"]


def test_n_and_shapes_are_checked() -> None:
    catalog = build_catalog(tiny_model())
    for bad in (0, MAX_N + 1, -1):
        with pytest.raises(ValueError, match=rf"n must be in 1\.\.{MAX_N}, got {bad}"):
            rank_products(catalog, np.array([1.0, 0.0]), AXES[0], n=bad)
    for bad in (True, 2.5, "3", None):
        with pytest.raises(ValueError, match="n must be an integer"):
            check_n(bad)
    assert check_n(np.int64(MAX_N)) == MAX_N
    with pytest.raises(ValueError, match="profile has 3 traits, the model 2"):
        rank_products(catalog, np.ones(3) / 3, AXES[0])
    with pytest.raises(ValueError, match="embedding has 3 dimensions, the model 4"):
        rank_products(catalog, np.array([1.0, 0.0]), np.ones(3))


def test_the_catalog_lays_out_the_stored_distribution_and_unit_vectors() -> None:
    model = tiny_model()
    model.tokens.vectors = AXES * np.array([[2.0], [0.5], [1.0], [0.0]], dtype=np.float32)  # "d": none
    catalog = build_catalog(model)
    assert catalog.product_ids.tolist() == PRODUCTS
    np.testing.assert_array_equal(catalog.distribution, [[0.4, 0.4, 0.2, 0.0], [0.0, 0.0, 1.0, 0.0]])
    np.testing.assert_array_equal(catalog.unit_vectors, np.diag([1.0, 1.0, 1.0, 0.0]))
    bare = tiny_model()
    bare.traits.products = None
    with pytest.raises(NoProductRankingError, match="without trait product distributions"):
        build_catalog(bare)


SPEC = SyntheticSpec(n_customers=120, n_products=80, n_events=3_000, seed=3)
CONFIG = PipelineConfig(item2vec=Item2VecParams(workers=1, vector_size=16), traits=TraitParams(n_traits=4))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[TraitflowModel, np.ndarray, np.ndarray]:
    data = generate(SPEC)
    end = SPEC.start + timedelta(days=SPEC.days)
    model = train(data.events, CONFIG, end, tmp_path_factory.mktemp("recommend"))
    batch = profile_customers(data.events, model, end)
    return model, batch.profiles, batch.embeddings


def test_served_ranking_is_the_evaluated_ranking(
    trained: tuple[TraitflowModel, np.ndarray, np.ndarray],
) -> None:
    """What the evaluation computes (stored distribution laid out over the products, the products'
    vectors from ``ProfileVectors``, ``profile_product_scores``, ``top_k``) for the same customers,
    written out here independently of the served catalog."""
    model, profiles, embeddings = trained
    stored = model.traits.products
    assert stored is not None
    ids = np.concatenate([stored.product_ids.astype(object), model.tokens.product_ids.astype(object)])
    index = pd.Index(np.sort(pd.unique(ids)))
    distribution = stored_weights((stored.product_ids, stored.weights), model.traits.n_traits, index)
    vectors = ProfileVectors(embeddings, model.tokens)
    scores = profile_product_scores(profiles, distribution, embeddings, vectors.product_vectors(index))(
        0, len(profiles)
    )
    n = 25
    expected = top_k(scores, n)
    catalog = build_catalog(model)
    for row in range(0, len(profiles), 7):
        served = rank_products(catalog, profiles[row], embeddings[row], n)
        assert [p.product_id for p in served] == index[expected[row]].tolist()
        assert [p.score for p in served] == pytest.approx(scores[row, expected[row]].tolist(), rel=1e-12)
    # The tilt matters on this model: some customer's list differs from the mixture's alone.
    mixture = top_k(profiles @ distribution, n)
    assert (mixture != expected).any()


def test_the_served_catalog_covers_every_stored_and_token_product(
    trained: tuple[TraitflowModel, np.ndarray, np.ndarray],
) -> None:
    model, profiles, embeddings = trained
    catalog = build_catalog(model)
    stored = model.traits.products
    assert stored is not None
    assert set(catalog.product_ids) == set(stored.product_ids) | set(model.tokens.product_ids)
    full = rank_products(catalog, profiles[0], embeddings[0], n=min(MAX_N, len(catalog.product_ids)))
    assert len(full) == min(MAX_N, len(catalog.product_ids))
    assert np.all(np.diff([p.score for p in full]) <= 0)
