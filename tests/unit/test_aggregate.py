"""Customer embeddings on a hand-made TokenTable whose every expected vector is computed by hand.

Token table (d = 2)::

    row  token        action    category  count  vector
    0    view_a       view      X         1      [ 1,  0]
    1    view_b       view      X         3      [ 0,  1]
    2    cart_a       cart      X         2      [ 2,  2]
    3    view_c       view      Y         4      [-1,  0]
    4    purchase_c   purchase  Y         1      [ 0, -4]

Count-weighted fallbacks: category X = (1*[1,0] + 3*[0,1] + 2*[2,2]) / 6 = [5/6, 7/6];
category Y = (4*[-1,0] + 1*[0,-4]) / 5 = [-4/5, -4/5]; action view = [-3/8, 3/8].
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from traitflow.aggregate import assignment_matrix, customer_embeddings, event_weights
from traitflow.config import DEFAULT_ACTION_WEIGHTS, AggregationParams, SessionParams
from traitflow.event_schema import as_canonical, empty_events
from traitflow.item2vec import fallback_vectors
from traitflow.model import TokenTable
from traitflow.profile_batch import COLD_START_FEW_TOKENS, COLD_START_NO_HISTORY, COLD_START_NONE

AS_OF = datetime(2024, 3, 1, tzinfo=UTC)
# The hand-computed means below weigh events by action only.
NO_DECAY = AggregationParams(recency_half_life_days=None)
CATEGORY_X = np.array([5 / 6, 7 / 6])
CATEGORY_Y = np.array([-4 / 5, -4 / 5])


def _table() -> TokenTable:
    return TokenTable(
        tokens=np.array(["view_a", "view_b", "cart_a", "view_c", "purchase_c"], dtype=object),
        actions=np.array(["view", "view", "cart", "view", "purchase"], dtype=object),
        product_ids=np.array(["a", "b", "a", "c", "c"], dtype=object),
        categories=np.array(["X", "X", "X", "Y", "Y"], dtype=object),
        counts=np.array([1, 3, 2, 4, 1], dtype=np.int64),
        vectors=np.array([[1, 0], [0, 1], [2, 2], [-1, 0], [0, -4]], dtype=np.float32),
    )


def _events(rows: list[tuple[str, str, str, str | None, float]]) -> pd.DataFrame:
    """rows of (customer, action, product, category, days before AS_OF)."""
    return as_canonical(
        pd.DataFrame(
            {
                "customer_id": [r[0] for r in rows],
                "event_time": [AS_OF - timedelta(days=r[4]) for r in rows],
                "action": [r[1] for r in rows],
                "product_id": [r[2] for r in rows],
                "category": [r[3] for r in rows],
            }
        )
    )


TOY_EVENTS = [
    # c1: three known tokens
    ("c1", "view", "a", "X", 3.0),
    ("c1", "view", "b", "X", 2.0),
    ("c1", "cart", "a", "X", 1.0),
    # c2: two known tokens, one unseen product of category X, one token with no usable vector
    ("c2", "view", "c", "Y", 4.0),
    ("c2", "purchase", "c", "Y", 3.0),
    ("c2", "view", "new", "X", 2.0),
    ("c2", "wishlist", "b", None, 1.0),  # wishlist is unknown to the table, no category: zero row
    # c3: two events < min_tokens=3: embedded from category averages
    ("c3", "view", "a", "X", 2.0),
    ("c3", "view", "c", "Y", 1.0),
    # c5: one event that resolves to the zero row
    ("c5", "wishlist", "zzz", None, 1.0),
]


def _embed(params: AggregationParams | None = None, **kwargs) -> object:
    return customer_embeddings(
        _events(TOY_EVENTS),
        _table(),
        params or NO_DECAY,
        SessionParams(),
        as_of=AS_OF,
        customer_ids=np.array(["c4", "c1"], dtype=object),
        **kwargs,
    )


def test_weighted_mean_with_action_weights_equals_hand_computed_values():
    emb = _embed()
    np.testing.assert_array_equal(emb.customer_ids, ["c1", "c2", "c3", "c4", "c5"])
    assert emb.vectors.dtype == np.float32 and emb.vectors.shape == (5, 2)
    # c1: weights view 1, view 1, cart 3 -> (1*[1,0] + 1*[0,1] + 3*[2,2]) / 5
    np.testing.assert_allclose(emb.vectors[0], [7 / 5, 7 / 5], rtol=1e-6)
    # c2: view_c (1), purchase_c (5), category X for the unseen product (1); the zero-row event
    # gets weight 0 instead of its action weight 2 (it would pull the mean towards 0).
    expected_c2 = (1 * np.array([-1, 0]) + 5 * np.array([0, -4]) + 1 * CATEGORY_X) / 7
    np.testing.assert_allclose(emb.vectors[1], expected_c2, rtol=1e-6)
    np.testing.assert_allclose(emb.vectors[1], [-1 / 42, -113 / 42], rtol=1e-6)
    np.testing.assert_array_equal(emb.n_events, [3, 4, 2, 0, 1])
    np.testing.assert_array_equal(emb.has_vector, [True, True, True, False, False])


@pytest.mark.parametrize(
    ("weights", "expected_c1"),
    [
        ({"view": 1.0, "cart": 1.0}, [1.0, 1.0]),  # plain mean of [1,0], [0,1], [2,2]
        ({"view": 2.0, "cart": 0.0}, [0.5, 0.5]),  # carts ignored
        ({"view": 0.0, "cart": 7.0}, [2.0, 2.0]),  # only the cart counts
    ],
)
def test_action_weights_are_applied(weights, expected_c1):
    emb = _embed(AggregationParams(action_weights=weights, recency_half_life_days=None))
    np.testing.assert_allclose(emb.vectors[0], expected_c1, rtol=1e-6)


def test_unknown_tokens_get_zero_weight_rather_than_diluting_the_mean():
    with_noise = _embed()
    events = _events([r for r in TOY_EVENTS if not (r[0] == "c2" and r[1] == "wishlist")])
    without = customer_embeddings(events, _table(), NO_DECAY, SessionParams(), as_of=AS_OF)
    c2 = list(without.customer_ids).index("c2")
    np.testing.assert_array_equal(with_noise.vectors[1], without.vectors[c2])
    # An action with no configured weight weighs 0 as well.
    assert event_weights(_events([("x", "teleport", "a", "X", 1.0)]), NO_DECAY, None)[0] == 0.0


def test_customers_with_few_tokens_are_embedded_from_category_averages():
    emb = _embed()
    assert emb.cold_start[2] == COLD_START_FEW_TOKENS
    # c3 viewed a (X) and c (Y): the mean of the two category averages, not of the token vectors
    np.testing.assert_allclose(emb.vectors[2], (CATEGORY_X + CATEGORY_Y) / 2, rtol=1e-6)
    np.testing.assert_allclose(emb.vectors[2], [1 / 60, 11 / 60], rtol=1e-5)
    # With min_tokens=2 the same customer uses its own tokens: ([1,0] + [-1,0]) / 2
    emb2 = _embed(AggregationParams(min_tokens=2, recency_half_life_days=None))
    assert emb2.cold_start[2] == COLD_START_NONE
    np.testing.assert_allclose(emb2.vectors[2], [0.0, 0.0], atol=1e-7)


def test_requested_customers_without_events_have_no_history():
    emb = _embed()
    assert emb.cold_start[3] == COLD_START_NO_HISTORY
    assert not emb.has_vector[3] and emb.n_events[3] == 0
    np.testing.assert_array_equal(emb.vectors[3], [0.0, 0.0])
    # A customer whose only event has no usable vector is no better off (flagged the same way).
    assert emb.cold_start[4] == COLD_START_NO_HISTORY and emb.n_events[4] == 1
    np.testing.assert_array_equal(emb.vectors[4], [0.0, 0.0])
    np.testing.assert_array_equal(emb.cold_start[:2], [COLD_START_NONE, COLD_START_NONE])


def test_zero_events_with_requested_customers():
    emb = customer_embeddings(
        empty_events(),
        _table(),
        NO_DECAY,
        SessionParams(),
        as_of=AS_OF,
        customer_ids=np.array(["b", "a"], dtype=object),
    )
    np.testing.assert_array_equal(emb.customer_ids, ["a", "b"])
    np.testing.assert_array_equal(emb.cold_start, [COLD_START_NO_HISTORY] * 2)
    assert not emb.has_vector.any() and emb.stats["oov_rate"] == 0.0


def test_stats_report_oov_rate_and_lookup_sources():
    emb = _embed()
    # Not in the table: view_new (c2), wishlist_b (c2), wishlist_zzz (c5) -> 3 of 10 events.
    # c3's tokens are known (even though c3 is embedded from categories): they are not OOV.
    assert emb.stats["oov_rate"] == pytest.approx(0.3)
    assert emb.stats["n_events"] == 10
    assert emb.stats["lookup_sources"] == {"token": 5, "category_average": 3, "action_average": 0, "zero": 2}
    assert emb.stats["cold_start"] == {"few_tokens": 1, "no_history": 2, "none": 2}


def test_precomputed_fallback_gives_the_same_vectors():
    np.testing.assert_array_equal(_embed().vectors, _embed(fallback=fallback_vectors(_table())).vectors)


# ----------------------------------------------------------------------------------- recency


@pytest.mark.parametrize("half_life", [0.5, 7.0, 30.0])
def test_recency_half_life_halves_the_weight_per_half_life(half_life):
    params = AggregationParams(recency_half_life_days=half_life)
    ages = np.array([0.25, 0.25 + half_life, 0.25 + 2 * half_life, 0.25 + 2 * half_life, -1.0])
    actions = ["view", "view", "view", "purchase", "view"]
    events = _events([("c", a, "a", "X", age) for a, age in zip(actions, ages, strict=True)])
    weights = event_weights(events, params, AS_OF)
    assert weights[1] / weights[0] == pytest.approx(0.5, rel=1e-9)
    assert weights[2] / weights[0] == pytest.approx(0.25, rel=1e-9)
    assert weights[3] / weights[2] == pytest.approx(DEFAULT_ACTION_WEIGHTS["purchase"], rel=1e-9)
    assert weights[0] == pytest.approx(2 ** (-0.25 / half_life), rel=1e-9)
    assert weights[4] == 1.0  # an event after as_of is not up-weighted (age clipped at 0)


def test_recency_weighting_in_the_customer_mean():
    h = 7.0
    events = _events(
        [("c", "view", "a", "X", 0.0), ("c", "view", "b", "X", h), ("c", "cart", "a", "X", 2 * h)]
    )
    emb = customer_embeddings(
        events, _table(), AggregationParams(recency_half_life_days=h), SessionParams(), as_of=AS_OF
    )
    # weights 1, 1/2, 3/4 -> (1*[1,0] + 0.5*[0,1] + 0.75*[2,2]) / 2.25
    np.testing.assert_allclose(emb.vectors[0], np.array([2.5, 2.0]) / 2.25, rtol=1e-6)


def test_recency_weighting_keeps_the_mean_of_a_customer_whose_events_are_decades_old():
    # 40 years at a 30-day half-life is a weight of 2^-487: zero in float32. The mean is per
    # customer, so only the spacing of a customer's events matters.
    h, old = 30.0, 40 * 365.0
    rows = [
        ("c", "view", "a", "X", old),
        ("c", "view", "b", "X", old + h),
        ("c", "view", "a", "X", old + h),
        ("d", "view", "a", "X", 0.0),
        ("d", "view", "b", "X", 0.0),
        ("d", "view", "b", "X", h),
    ]
    emb = customer_embeddings(
        _events(rows), _table(), AggregationParams(recency_half_life_days=h), SessionParams(), as_of=AS_OF
    )
    # c's weights all underflow; rescaled to c's newest they are 1, 1/2, 1/2.
    np.testing.assert_allclose(emb.vectors[0], np.array([1.5, 0.5]) / 2, rtol=1e-6)
    np.testing.assert_allclose(emb.vectors[1], np.array([1.0, 1.5]) / 2.5, rtol=1e-6)
    assert list(emb.cold_start) == [COLD_START_NONE, COLD_START_NONE]


def test_a_customers_vector_does_not_depend_on_who_shares_the_batch():
    """Only a customer with weights that would underflow float32 is rescaled: another customer's
    vector is bit-identical with or without them in the batch (the event update path embeds a
    customer alone, the daily run with everyone)."""
    h = 30.0
    # Ages where dividing d's weights by d's largest (as a batch-wide rescale would) moves the
    # float32 mean by an ulp.
    recent = [("d", "view", "a", "X", 1.5), ("d", "cart", "a", "X", 73.2), ("d", "view", "b", "X", 82.1)]
    old = 40 * 365.0
    ancient = [
        ("c", "view", "a", "X", old),
        ("c", "view", "b", "X", old + h),
        ("c", "view", "a", "X", old + h),
    ]
    params = AggregationParams(recency_half_life_days=h)
    alone = customer_embeddings(_events(recent), _table(), params, SessionParams(), as_of=AS_OF)
    shared = customer_embeddings(_events(ancient + recent), _table(), params, SessionParams(), as_of=AS_OF)
    assert shared.customer_ids.tolist() == ["c", "d"]
    np.testing.assert_array_equal(shared.vectors[1], alone.vectors[0])
    np.testing.assert_allclose(shared.vectors[0], np.array([1.5, 0.5]) / 2, rtol=1e-6)  # rescaled


def test_recency_weighting_needs_as_of():
    with pytest.raises(ValueError, match="as_of"):
        event_weights(_events(TOY_EVENTS), AggregationParams(recency_half_life_days=1.0), None)


# ------------------------------------------------- Arrow string paths (no Python str per event)


def test_customer_order_and_codes_match_pandas_factorize_on_non_ascii_ids():
    from traitflow.sessions import arrow_strings, factorize_sorted

    ids = pd.Series(["ß", "b", "Z", "é", "b", "日本", "a", "Z", "😀", "ß"], dtype="str")
    codes, uniques = factorize_sorted(arrow_strings(ids))
    expected_codes, expected_uniques = pd.factorize(ids.astype(object), sort=True)
    assert uniques.tolist() == list(expected_uniques) == sorted(set(ids))  # Python's code point order
    np.testing.assert_array_equal(codes, expected_codes)


def test_arrow_and_object_inputs_resolve_every_token_the_same_way():
    from traitflow.item2vec import lookup
    from traitflow.sessions import arrow_strings, tokenize, tokenize_arrow

    events = _events(TOY_EVENTS)
    table, fallback = _table(), fallback_vectors(_table())
    force = np.zeros(len(events), dtype=bool)
    force[[0, 7]] = True
    as_objects = lookup(
        table,
        fallback,
        tokenize(events["action"], events["product_id"], "{action}_{product_id}"),
        events["category"].to_numpy(dtype=object),
        events["action"].to_numpy(dtype=object),
        force_category=force,
    )
    as_arrow = lookup(
        table,
        fallback,
        tokenize_arrow(events["action"], events["product_id"], "{action}_{product_id}"),
        arrow_strings(events["category"]),  # holds nulls (missing categories)
        arrow_strings(events["action"]),
        force_category=force,
    )
    np.testing.assert_array_equal(as_arrow.rows, as_objects.rows)
    np.testing.assert_array_equal(as_arrow.source, as_objects.source)
    np.testing.assert_array_equal(as_arrow.in_vocabulary, as_objects.in_vocabulary)
    # 7 known tokens, 2 of them forced to their category; view_new -> category X; 2 zero rows
    assert as_arrow.counts() == {"token": 5, "category_average": 3, "action_average": 0, "zero": 2}


def test_object_dtype_columns_embed_like_arrow_columns():
    events = _events(TOY_EVENTS)
    objects = events.astype({c: object for c in ("customer_id", "action", "product_id", "category")})
    args = (_table(), NO_DECAY, SessionParams())
    a = customer_embeddings(events, *args, as_of=AS_OF)
    b = customer_embeddings(objects, *args, as_of=AS_OF)
    np.testing.assert_array_equal(a.customer_ids, b.customer_ids)
    assert a.vectors.tobytes() == b.vectors.tobytes()
    assert a.stats == b.stats


def test_known_tokens_count_the_evidence_behind_each_embedding():
    emb = _embed()
    np.testing.assert_array_equal(emb.customer_ids, ["c1", "c2", "c3", "c4", "c5"])
    np.testing.assert_array_equal(emb.n_events, [3, 4, 2, 0, 1])
    # c2: view_new and wishlist_b are unknown; c3's two tokens are known although it is embedded
    # from category averages; c4 has no events; c5's only token is unknown.
    np.testing.assert_array_equal(emb.n_known_tokens, [3, 2, 2, 0, 0])
    assert emb.n_known_tokens.dtype == np.int64


@pytest.mark.parametrize("seed", range(40))
def test_the_assignment_matrix_is_scipys_coo_conversion_to_the_bit(seed: int) -> None:
    """Unsorted and sorted rows, repeated (row, column) pairs summed, rows without entries, none
    at all: the same CSR arrays as ``sp.csr_matrix((values, (codes, rows)))`` and the same
    float32 product with a lookup matrix."""
    rng = np.random.default_rng(seed)
    n_customers, n = int(rng.integers(1, 7)), int(rng.integers(0, 80))
    codes = rng.integers(0, n_customers, n)
    if seed % 2:
        codes = np.sort(codes)
    rows = rng.integers(0, 6 if seed % 3 == 0 else 300, n)  # few columns: many repeated pairs
    values = (rng.random(n) * (rng.random(n) > 0.2)).astype(np.float32)
    lookup = rng.normal(size=(300, 8)).astype(np.float32)
    built = assignment_matrix(codes, rows, values, (n_customers, 300))
    expected = sp.csr_matrix((values, (codes, rows)), shape=(n_customers, 300))
    for name in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(built, name), getattr(expected, name))
    np.testing.assert_array_equal(built @ lookup, expected @ lookup)
