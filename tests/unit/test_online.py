"""The single-customer path gives the batch path's profiles."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from traitflow.aggregate import customer_embeddings
from traitflow.config import AggregationParams, PipelineConfig
from traitflow.online import CustomerProfiler
from traitflow.online_update import resolved_embeddings
from traitflow.pipeline import profile_customers, train
from traitflow.profile_batch import COLD_START_FEW_TOKENS, COLD_START_NO_HISTORY
from traitflow.store.reads import CustomerHistories
from traitflow.synthetic import SyntheticSpec, generate

AS_OF = datetime(2026, 1, 15, tzinfo=UTC)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    data = generate(SyntheticSpec(n_customers=300, n_products=200, n_events=8_000, days=14, seed=5))
    config = PipelineConfig.from_mapping({"k": 6, "vector_size": 16, "epochs": 3, "workers": 1})
    model = train(data.events, config, AS_OF, tmp_path_factory.mktemp("online"))
    return data.events, model


def _customer_events(events, customer_id: str):
    frame = events[events["customer_id"] == customer_id]
    return (
        frame["action"].tolist(),
        frame["product_id"].tolist(),
        frame["category"].tolist(),
        frame["event_time"].to_numpy(dtype="datetime64[us]"),
    )


@pytest.mark.parametrize("half_life", [None, 3.0])
def test_single_customer_profiles_equal_the_batch_path(trained, half_life: float | None):
    events, model = trained
    if half_life is not None:
        aggregation = dataclasses.replace(model.config.aggregation, recency_half_life_days=half_life)
        model = dataclasses.replace(model, config=dataclasses.replace(model.config, aggregation=aggregation))
    # Unseen products fall back to their category: rename some of one customer's products.
    events = events.copy()
    first = events["customer_id"].iloc[0]
    unseen = (events["customer_id"] == first).to_numpy() & (np.arange(len(events)) % 2 == 0)
    events.loc[unseen, "product_id"] = "never-seen-" + events.loc[unseen, "product_id"]
    batch = profile_customers(events, model, AS_OF)
    profiler = CustomerProfiler(model)
    for row in range(0, len(batch), 7):
        actions, products, categories, times = _customer_events(events, batch.customer_ids[row])
        single = profiler.profile(actions, products, categories, times, as_of=AS_OF)
        # The same weighted mean (aggregate.weighted_means): the vectors agree to the bit; the
        # projections differ by solver (exact NNLS here, coordinate descent in the batch).
        np.testing.assert_array_equal(single.vector, batch.embeddings[row])
        np.testing.assert_allclose(single.profile, batch.profiles[row], atol=1e-4)
        assert single.cold_start == batch.cold_start[row]
        assert (single.n_events, single.n_known_tokens) == (batch.n_events[row], batch.n_known_tokens[row])


@pytest.mark.parametrize("half_life", [None, 3.0])
def test_the_event_update_path_embeds_several_customers_as_the_batch_path_does(trained, half_life):
    """``online_update.resolved_embeddings`` (histories as plain columns, each customer's events
    resolved by the profiler, one ``weighted_means``) equals ``customer_embeddings`` bit for bit,
    on a subset of the customers and in their sorted order."""
    events, model = trained
    if half_life is not None:
        aggregation = dataclasses.replace(model.config.aggregation, recency_half_life_days=half_life)
        model = dataclasses.replace(model, config=dataclasses.replace(model.config, aggregation=aggregation))
    events = events.sort_values(["customer_id", "event_time", "action", "product_id"], ignore_index=True)
    events.loc[::5, "product_id"] = "never-seen-" + events.loc[::5, "product_id"]  # category fallback
    events.loc[::11, "category"] = None  # and the action's fallback
    ids = np.unique(events["customer_id"].to_numpy(dtype=object))
    codes = np.searchsorted(ids, events["customer_id"].to_numpy(dtype=object))
    histories = CustomerHistories(
        customer_ids=ids,
        starts=np.searchsorted(codes, np.arange(len(ids) + 1)).astype(np.int64),
        event_us=events["event_time"].to_numpy(dtype="datetime64[us]").astype(np.int64),
        actions=events["action"].tolist(),
        product_ids=events["product_id"].tolist(),
        categories=[c if isinstance(c, str) else None for c in events["category"]],
    )
    chosen = ids[::3]
    online = resolved_embeddings(CustomerProfiler(model), histories, chosen, AS_OF)
    batch = customer_embeddings(
        events[events["customer_id"].isin(set(chosen))],
        model.tokens,
        model.config.aggregation,
        model.config.sessions,
        as_of=AS_OF,
    )
    assert online.customer_ids.tolist() == batch.customer_ids.tolist()
    np.testing.assert_array_equal(online.vectors, batch.vectors)
    np.testing.assert_array_equal(online.has_vector, batch.has_vector)
    np.testing.assert_array_equal(online.n_events, batch.n_events)
    np.testing.assert_array_equal(online.n_known_tokens, batch.n_known_tokens)
    assert online.cold_start.tolist() == batch.cold_start.tolist()
    assert len(set(batch.cold_start.tolist())) > 1  # few_tokens and none both occur


def test_cold_start_rules(trained):
    _, model = trained
    # Events without times: a profiler without recency weighting (the rules do not depend on it).
    aggregation = dataclasses.replace(model.config.aggregation, recency_half_life_days=None)
    model = dataclasses.replace(model, config=dataclasses.replace(model.config, aggregation=aggregation))
    profiler = CustomerProfiler(model)
    empty = profiler.profile([], [], [])
    assert empty.cold_start == COLD_START_NO_HISTORY
    np.testing.assert_array_equal(empty.profile, model.traits.population_profile)
    few = profiler.profile(["view"], [model.tokens.product_ids[0]], [model.tokens.categories[0]])
    assert few.cold_start == COLD_START_FEW_TOKENS
    assert few.profile.sum() == pytest.approx(1.0)
    nothing_known = profiler.profile(["teleport"] * 4, ["x"] * 4, [None] * 4)
    assert nothing_known.cold_start == COLD_START_NO_HISTORY
    assert (nothing_known.n_events, nothing_known.n_known_tokens, nothing_known.confidence) == (4, 0, 0.0)
    action, product = str(model.tokens.actions[0]), str(model.tokens.product_ids[0])
    known = profiler.profile([action] * 5, [product] * 5, [None] * 5)
    assert (known.n_events, known.n_known_tokens, known.confidence) == (5, 5, 0.625)


def test_recency_needs_times(trained):
    _, model = trained
    aggregation = AggregationParams(recency_half_life_days=2.0)
    model = dataclasses.replace(model, config=dataclasses.replace(model.config, aggregation=aggregation))
    with pytest.raises(ValueError, match="event_times"):
        CustomerProfiler(model).profile(["view"] * 3, ["p1"] * 3, ["c"] * 3)
    with pytest.raises(ValueError, match="same length"):
        CustomerProfiler(model).profile(["view"], [], [])


def test_profiler_round_trips_through_a_saved_model(trained, tmp_path: Path):
    events, model = trained
    loaded = type(model).load(model.save(tmp_path / "m"))
    args = _customer_events(events, events["customer_id"].iloc[3])
    a = CustomerProfiler(model).profile(*args, as_of=AS_OF)
    b = CustomerProfiler(loaded).profile(*args, as_of=AS_OF)
    np.testing.assert_array_equal(a.profile, b.profile)
