"""Known answers for ``fit_trait_products``: the vectorised fit against the same definition written
out with dicts and loops (action weights with recency decay, per-customer shares, the profile-
weighted average, one EM step, each trait's ``top_n``), on string ids whose sorted order is not
their order of appearance."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd
import pytest

from traitflow import ranking
from traitflow.config import AggregationParams
from traitflow.trait_products import fit_trait_products

AS_OF = pd.Timestamp("2026-03-01", tz="UTC")
PARAMS = AggregationParams(recency_half_life_days=10.0)
# Sorted order differs from order of appearance; the last two compare differently as UTF-16 and
# as code points (UTF-8 byte order, what Arrow sorts by, is code point order).
PRODUCTS = ["p9", "p10", "P2", "b", "é-lamp", "a", "z", "m", "ｚ", "😀", "q1", "q0"]
CUSTOMERS = ["zoe", "amy", "mia", "bob", "kim", "eve"]  # kim has no events
OUTSIDERS = ["zed", "abe"]  # events, but not among the customers fitted


def _events(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """``n`` random events of CUSTOMERS (but kim) and OUTSIDERS, unknown actions among them."""
    actions = [*PARAMS.action_weights, "teleport"]
    who = [c for c in CUSTOMERS if c != "kim"] + OUTSIDERS
    return pd.DataFrame(
        {
            "customer_id": rng.choice(who, n).tolist(),
            "event_time": AS_OF - pd.to_timedelta(rng.uniform(0, 40, n), unit="D"),
            "action": rng.choice(actions, n).tolist(),
            "product_id": rng.choice(PRODUCTS, n).tolist(),
            "category": pd.array([None] * n, dtype="str"),
            "price": np.nan,
            "session_id": pd.array([None] * n, dtype="str"),
        }
    )


def _reference(
    events: pd.DataFrame, customers: list[str], profiles: np.ndarray, top_n: int
) -> tuple[list[str], np.ndarray]:
    """(kept products sorted, weights (k, kept)) by the definition, one customer and item at a time."""
    usage: dict[str, dict[str, float]] = {c: defaultdict(float) for c in customers}
    for customer, time, action, product in events[
        ["customer_id", "event_time", "action", "product_id"]
    ].itertuples(index=False):
        if customer in usage:
            age_days = max((AS_OF - time) / pd.Timedelta(days=1), 0.0)
            weight = PARAMS.action_weights.get(action, 0.0) * 0.5 ** (
                age_days / PARAMS.recency_half_life_days
            )
            usage[customer][product] += weight
    shares = {}  # customers with some weight: item -> share of their weight
    for c, items in usage.items():
        total = sum(items.values())
        if total > 0:
            shares[c] = {p: v / total for p, v in items.items()}
    k = profiles.shape[1]
    weight_of = dict(zip(customers, profiles, strict=True))
    average: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(k))
    for c, items in shares.items():
        for p, share in items.items():
            average[p] = average[p] + weight_of[c] * share
    held = sum(weight_of[c] for c in shares)
    average = {p: mass / held for p, mass in average.items()}
    refined: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(k))
    for c, items in shares.items():
        for p, share in items.items():
            responsibility = weight_of[c] * average[p]
            refined[p] = refined[p] + share * responsibility / responsibility.sum()
    products = sorted(refined)
    weights = np.array([refined[p] for p in products]).T  # (k, P)
    weights /= weights.sum(axis=1, keepdims=True)
    for row in weights:
        cut = sorted(row, reverse=True)[top_n - 1] if top_n < len(row) else 0.0
        row[(row < cut) | (row <= 0)] = 0.0
    kept = weights.any(axis=0)
    return [p for p, keep in zip(products, kept, strict=True) if keep], weights[:, kept]


@pytest.mark.parametrize("top_n", [3, 5, 100])
@pytest.mark.parametrize("block", [7, 1_000_000])  # EM in many blocks of pairs, and in one
def test_fit_trait_products_matches_the_definition(top_n, block, monkeypatch):
    monkeypatch.setattr(ranking, "_EM_BLOCK", block)
    rng = np.random.default_rng(7)
    events = _events(rng, 200)
    customers = sorted(CUSTOMERS)
    profiles = rng.gamma(0.5, size=(len(customers), 3)) + 0.01
    fitted = fit_trait_products(
        events, np.array(customers, dtype=object), profiles, PARAMS, AS_OF, top_n=top_n
    )
    products, weights = _reference(events, customers, profiles, top_n)
    assert fitted.product_ids.dtype == object and fitted.product_ids.tolist() == products
    assert products != [p for p in dict.fromkeys(events["product_id"]) if p in products]  # order is sorted
    if top_n < len(PRODUCTS):
        assert ((fitted.weights > 0).sum(axis=1) == top_n).all()  # every trait truncated to top_n
    # Float rounding only: the sums run in another order.
    np.testing.assert_allclose(fitted.weights, weights, rtol=1e-12, atol=1e-15)


def test_fit_trait_products_ignores_outsiders_and_keeps_customers_without_events():
    rng = np.random.default_rng(3)
    events = _events(rng, 120)
    customers = np.array(sorted(CUSTOMERS), dtype=object)
    profiles = rng.gamma(0.5, size=(len(customers), 2)) + 0.01
    fitted = fit_trait_products(events, customers, profiles, PARAMS, AS_OF)
    # Outsiders' events change nothing; kim (no events) weighs in no trait's distribution.
    inside = events[events["customer_id"].isin(CUSTOMERS)]
    alone = fit_trait_products(inside, customers, profiles, PARAMS, AS_OF)
    assert fitted.product_ids.tolist() == alone.product_ids.tolist()
    np.testing.assert_array_equal(fitted.weights, alone.weights)
    kim = customers.tolist().index("kim")
    moved = profiles.copy()
    moved[kim] *= 50.0
    np.testing.assert_array_equal(
        fit_trait_products(events, customers, moved, PARAMS, AS_OF).weights, fitted.weights
    )
