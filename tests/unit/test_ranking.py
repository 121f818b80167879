"""Known answers for product rankings: per-customer metrics, targets, the trait product mixture."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from traitflow.config import PipelineConfig
from traitflow.product_eval import product_index, product_ranking
from traitflow.ranking import (
    blended_scores,
    cooccurrence_matrix,
    embedding_similarity,
    fold_in_profiles,
    item_targets,
    per_customer_metrics,
    product_vectors,
    profile_product_scores,
    profile_product_scores_prenormalized,
    sparse_scores,
    trait_item_distribution,
    unit_item_vectors,
)
from traitflow.trait_products import characteristic_products, fit_trait_products

T0 = pd.Timestamp("2026-01-01", tz="UTC")


def _events(rows: list[tuple[str, float, str, str]]) -> pd.DataFrame:
    """Events from (customer, hours after T0, action, product)."""
    customers, hours, actions, products = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            "customer_id": list(customers),
            "event_time": [T0 + pd.Timedelta(hours=h) for h in hours],
            "action": list(actions),
            "product_id": list(products),
            "category": pd.array([None] * len(rows), dtype="str"),
            "price": np.nan,
            "session_id": pd.array([None] * len(rows), dtype="str"),
        }
    )


def test_per_customer_metrics_on_a_hand_made_example():
    scores = np.array([[0.9, 0.1, 0.5, 0.3], [0.1, 0.2, 0.3, 0.4]])
    # Customer 0 bought item 2 (ranked 2nd); customer 1 bought item 0 (ranked 4th) and an item
    # unseen before the split (column 4: no method ranks it).
    relevant = sp.csr_matrix(np.array([[0, 0, 1, 0, 0], [1, 0, 0, 0, 1]]))
    out = per_customer_metrics(
        lambda a, b: scores[a:b], relevant, ks=(1, 2), recall_k=4, ndcg_k=3, batch_size=1
    )
    np.testing.assert_array_equal(out["hit@1"], [0, 0])
    np.testing.assert_array_equal(out["hit@2"], [1, 0])
    np.testing.assert_allclose(out["recall@4"], [1.0, 0.5])  # the unseen item can never be recalled
    np.testing.assert_allclose(out["ndcg@3"], [1 / math.log2(3), 0.0])


def test_excluded_items_leave_the_ranking():
    scores = np.array([[0.9, 0.8, 0.1]])
    relevant = sp.csr_matrix(np.array([[0, 0, 1]]))
    plain = per_customer_metrics(lambda a, b: scores[a:b], relevant, ks=(1, 2), recall_k=None, ndcg_k=2)
    assert plain["hit@2"][0] == 0
    # Without items 0 and 1 (already bought), item 2 is ranked first.
    exclude = sp.csr_matrix(np.array([[1, 1, 0]]))
    out = per_customer_metrics(
        lambda a, b: scores[a:b], relevant, exclude=exclude, ks=(1, 2), recall_k=None, ndcg_k=2
    )
    assert out["hit@1"][0] == 1 and out["ndcg@2"][0] == pytest.approx(1.0)


def test_item_targets_for_all_and_for_new_products():
    history = _events([("a", 0, "purchase", "x"), ("a", 1, "view", "y"), ("b", 0, "purchase", "x")])
    future = _events(
        [
            ("a", 10, "purchase", "x"),  # a repeat
            ("a", 10, "purchase", "z"),  # new to a (never seen before the split by anyone)
            ("b", 10, "purchase", "x"),  # a repeat only: b has nothing new
            ("b", 10, "view", "y"),  # not a target action
            ("c", 10, "purchase", "x"),  # no history: not a test customer
        ]
    )
    index = pd.Index(["x", "y"])
    every = item_targets(history, future, index, ("purchase",))
    assert every.customer_ids.tolist() == ["a", "b"] and every.exclude is None
    assert every.relevant.toarray().tolist() == [[1, 0, 1], [1, 0, 0]] and every.n_unseen_items == 1
    new = item_targets(history, future, index, ("purchase",), new_only=True)
    assert new.customer_ids.tolist() == ["a"]
    assert new.relevant.toarray().tolist() == [[0, 0, 1]]
    assert new.exclude.toarray().tolist() == [[1, 1]]  # bought x and viewed y before the split


def test_product_cooccurrence_counts_baskets():
    history = _events([("a", 0, "purchase", "x"), ("a", 0, "purchase", "y"), ("b", 0, "purchase", "x")])
    matrix = cooccurrence_matrix(history, PipelineConfig().sessions, pd.Index(["x", "y"])).toarray()
    np.testing.assert_allclose(matrix, [[1, 0.5], [1, 1]])  # x in 2 baskets, one with y


def test_sparse_scores_break_ties_below_every_real_score():
    score = sparse_scores(sp.csr_matrix(np.array([[0.0, 0.2, 0.0]])), np.array([5.0, 1.0, 9.0]))(0, 1)[0]
    assert score[1] > score[2] > score[0] > 0  # the customer's own item first, then by popularity


def test_trait_item_distribution_average_and_em_step():
    # a holds trait 0 and buys x, b holds trait 1 and buys y, c holds both halves and buys x.
    profiles = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    usage = sp.csr_matrix(np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]]))  # volumes do not matter
    average = trait_item_distribution(profiles, usage, em_steps=0)
    np.testing.assert_allclose(average, [[1.0, 0.0], [1 / 3, 2 / 3]])
    # EM: c's x is explained by trait 0 (P(x|0) = 1) three times as well as by trait 1 (1/3),
    # so trait 0 takes 3/4 of it and trait 1 only 1/4: P(.|1) = (0.25 x + 1 y) / 1.25.
    refined = trait_item_distribution(profiles, usage, em_steps=1)
    np.testing.assert_allclose(refined, [[1.0, 0.0], [0.2, 0.8]])
    smoothed = trait_item_distribution(profiles, usage, em_steps=0, smoothing=0.5)
    overall = np.array([2 / 3, 1 / 3])  # mean customer distribution
    np.testing.assert_allclose(smoothed, 0.5 * average + 0.5 * overall)


def test_fit_trait_products_keeps_top_products_and_names_characteristic_ones():
    history = _events(
        [("a", 0, "purchase", p) for p in ("common", "garden", "garden", "rake")]
        + [("b", 0, "purchase", p) for p in ("common", "candle", "candle", "vase")]
    )
    profiles = np.array([[1.0, 0.0], [0.0, 1.0]])
    customers = np.array(["a", "b"], dtype=object)
    as_of = T0 + pd.Timedelta(days=1)
    products = fit_trait_products(history, customers, profiles, PipelineConfig().aggregation, as_of, top_n=3)
    assert products.product_ids.tolist() == sorted(products.product_ids)
    by_id = dict(zip(products.product_ids, products.weights.T, strict=True))
    np.testing.assert_allclose(by_id["garden"], [0.5, 0.0])
    np.testing.assert_allclose(by_id["common"], [0.25, 0.25])
    top = characteristic_products(products, top_n=2)
    assert top == [["garden", "rake"], ["candle", "vase"]]  # "common" is bought by both traits


def test_product_vectors_are_count_weighted_token_means():
    index = pd.Index(["p", "q", "r"])
    # p has a view token (count 1) and a purchase token (count 3); q one token; r none.
    vectors = product_vectors(
        np.array(["p", "p", "q", "gone"], dtype=object),
        np.array([1, 3, 2, 5]),
        np.array([[4.0, 0.0], [0.0, 4.0], [1.0, 1.0], [9.0, 9.0]]),
        index,
    )
    np.testing.assert_allclose(vectors, [[1.0, 3.0], [1.0, 1.0], [0.0, 0.0]])


def test_embedding_similarity_measures_deviation_from_the_centre():
    center = np.array([1.0, 1.0])
    products = np.array([[2.0, 1.0], [1.0, 3.0], [0.0, 0.0]])  # east, north, no vector
    customers = np.array([[3.0, 1.0], [1.0, 1.5]])  # east of the centre, north of it
    scores = embedding_similarity(customers, products, center)(0, 2)
    np.testing.assert_allclose(scores, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], atol=1e-12)


def test_blended_scores_reorder_the_mixture_by_similarity():
    mixture = np.array([[0.5, 0.4, 0.1, 0.0]])
    similarity = np.array([[0.0, 0.5, 0.0, 1.0]])
    blend = blended_scores(lambda a, b: mixture[a:b], lambda a, b: similarity[a:b], gamma=1.0)(0, 1)[0]
    np.testing.assert_allclose(blend[:3], np.log([0.5, 0.4, 0.1]) + np.array([0.0, 0.5, 0.0]))
    assert blend[1] > blend[0] > blend[2]  # log(0.4) + 0.5 > log(0.5)
    assert blend[3] == pytest.approx(np.log(0.01 / 4) + 1.0)  # unexplained: floored, then similarity
    plain = blended_scores(lambda a, b: mixture[a:b], lambda a, b: similarity[a:b], gamma=0.0)(0, 1)[0]
    assert list(np.argsort(-plain)) == [0, 1, 2, 3]  # gamma 0 is the mixture's order


def test_profile_product_scores_tilt_the_mixture_towards_the_customers_vector():
    profiles = np.array([[1.0, 0.0], [0.0, 1.0]])
    distribution = np.array([[0.5, 0.5, 0.0], [0.0, 0.2, 0.8]])  # trait 0 ties products 0 and 1
    customers = np.array([[0.0, 1.0], [1.0, 0.0]])
    items = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])  # product 2 has no vector
    tilted = profile_product_scores(profiles, distribution, customers, items, similarity_weight=2.0)(0, 2)
    # log P(p | c) + 2 cos(x_c, v_p): customer 0 points at product 1, customer 1 at product 0
    floor = np.log(0.01 / 3)
    expected = np.array([[np.log(0.5), np.log(0.5) + 2.0, floor], [floor + 2.0, np.log(0.2), np.log(0.8)]])
    np.testing.assert_allclose(tilted, expected)
    assert list(np.argsort(-tilted[0])) == [1, 0, 2]  # the tie is broken by the vector
    mixture = profile_product_scores(profiles, distribution, customers, items, similarity_weight=0.0)(0, 2)
    np.testing.assert_allclose(mixture, profiles @ distribution)
    np.testing.assert_allclose(profile_product_scores(profiles, distribution)(0, 2), profiles @ distribution)
    with pytest.raises(ValueError, match=r"similarity_weight must be >= 0, got -1\.0"):
        profile_product_scores(profiles, distribution, customers, items, similarity_weight=-1.0)
    with pytest.raises(ValueError, match="customer_vectors 1"):
        profile_product_scores(profiles, distribution, customers[:1], items)
    with pytest.raises(ValueError, match="item_vectors 2"):
        profile_product_scores(profiles, distribution, customers, items[:2])


def test_prenormalized_item_vectors_score_as_the_raw_ones():
    """The served ranking scales the items once (``unit_item_vectors``); the evaluation passes
    them raw: the scores must agree, items without a vector included."""
    rng = np.random.default_rng(7)
    n, k, n_items, d = 9, 4, 60, 8
    profiles = rng.dirichlet(np.ones(k), n)
    distribution = rng.dirichlet(np.full(n_items, 0.3), k)
    customers = rng.standard_normal((n, d)).astype(np.float32)
    items = rng.standard_normal((n_items, d)) * rng.uniform(0.01, 50.0, (n_items, 1))
    items[::7] = 0.0  # products without a token
    units = unit_item_vectors(items)
    np.testing.assert_allclose(np.linalg.norm(units, axis=1), np.where(np.arange(n_items) % 7, 1.0, 0.0))
    for weight in (0.0, 0.5, 3.0):
        raw = profile_product_scores(profiles, distribution, customers, items, weight)(0, n)
        scaled = profile_product_scores_prenormalized(profiles, distribution, customers, units, weight)
        np.testing.assert_allclose(scaled(2, n), raw[2:], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="item_vectors 59"):
        profile_product_scores_prenormalized(profiles, distribution, customers, units[1:])


def test_fold_in_moves_profiles_towards_what_the_customer_bought():
    distribution = np.array([[1.0, 0.0], [0.5, 0.5]])  # trait 0 buys x only, trait 1 x and y alike
    profiles = np.full((3, 2), 0.5)
    # a buys only y (only trait 1 explains it), b only x (trait 0 explains it twice as well), c nothing
    usage = sp.csr_matrix(np.array([[0.0, 4.0], [1.0, 0.0], [0.0, 0.0]]))
    refined = fold_in_profiles(profiles, usage, distribution, steps=1)
    np.testing.assert_allclose(refined, [[0.0, 1.0], [2 / 3, 1 / 3], [0.5, 0.5]])
    np.testing.assert_allclose(fold_in_profiles(profiles, usage, distribution, steps=0), profiles)
    # b's further steps keep moving towards trait 0, never past a distribution
    further = fold_in_profiles(profiles, usage, distribution, steps=5)
    assert further[1, 0] > refined[1, 0]
    np.testing.assert_allclose(further.sum(axis=1), 1.0)


def test_product_ranking_reports_lifts_of_further_scorers():
    history = _events(
        [
            ("a", 0, "purchase", "x"),
            ("a", 1, "purchase", "y"),
            ("b", 0, "purchase", "y"),
            ("c", 0, "purchase", "y"),
            ("c", 1, "purchase", "z"),
        ]
    )
    future = _events([("a", 50, "purchase", "z"), ("b", 50, "purchase", "x"), ("c", 50, "purchase", "x")])
    customers = np.array(["a", "b", "c"], dtype=object)
    profiles = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    index = product_index(history)  # x, y, z
    truth = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])  # what each buys after T
    report = product_ranking(
        history,
        future,
        customer_ids=customers,
        profiles=profiles,
        config=PipelineConfig(),
        split_at=T0 + pd.Timedelta(hours=10),
        actions=("purchase",),
        extra_scorers=[("oracle", lambda rows: lambda a, b: truth[rows][a:b])],
        n_resamples=50,
    )
    section = report["product_ranking"]
    assert list(index) == ["x", "y", "z"]
    assert section["methods"]["oracle"]["ndcg@10"] == 1.0  # each customer's purchase ranked first
    # popularity ranks y (3 buyers), then x and z (1 each, index order): a's z third, b's and c's x second
    popularity = (1 / math.log2(4) + 2 / math.log2(3)) / 3
    assert section["methods"]["popularity"]["ndcg@10"] == pytest.approx(popularity)
    assert section["lifts_vs_popularity"]["oracle"]["ndcg@10"] == pytest.approx(1 / popularity)
    low, high = section["lifts_vs_popularity_ci95"]["oracle"]["ndcg@10"]
    assert low <= 1 / popularity <= high
