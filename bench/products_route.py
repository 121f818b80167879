"""Latency of the served product ranking: ``traitflow.recommend.rank_products`` and the route
``GET /api/customers/{id}/products`` in-process (the plugin's FastAPI app through a TestClient,
Airflow auth replaced by a fixed user), on a store holding a model of ``--products`` products.

The model is random but shaped like a retrained one: one purchase token per product (d=64),
k=16 traits each keeping its 500 most likely products; ``--customers`` current profiles and 20
stored events per customer (read back by every route call: ``new_only`` leaves them out, otherwise
they are marked ``had_events``). Builds a throw-away schema, measures
``--calls`` calls per variant (20 of the catalog build) after 20 warm-up calls (the model and its
catalog then cached), prints p50 / p90 / p99 in milliseconds and drops the schema:

    .venv/bin/python bench/products_route.py --database-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pandas as pd

from traitflow.config import PipelineConfig, TraitParams
from traitflow.event_schema import empty_rejects
from traitflow.model import TokenTable, TraitflowModel, TraitModel, TraitProducts
from traitflow.profile_batch import ProfileBatch
from traitflow.recommend import build_catalog, rank_products
from traitflow.store import Store

K, DIM, KEEP, EVENTS_PER_CUSTOMER = 16, 64, 500, 20
AS_OF = datetime(2024, 1, 10, tzinfo=UTC)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database-url", default=os.environ.get("TRAITFLOW_DATABASE_URL"))
    p.add_argument("--products", type=int, default=4000)
    p.add_argument("--customers", type=int, default=1000)
    p.add_argument("--calls", type=int, default=200)
    return p.parse_args(argv)


def build_model(n_products: int, rng: np.random.Generator) -> TraitflowModel:
    products = np.array([f"P{i:05d}" for i in range(n_products)], dtype=object)
    weights = rng.dirichlet(np.full(n_products, 0.1), K)
    cut = np.sort(weights, axis=1)[:, -KEEP][:, None]
    weights = np.where(weights >= cut, weights, 0.0)
    used = weights.any(axis=0)
    return TraitflowModel(
        trained_through=AS_OF - timedelta(days=3),
        config=PipelineConfig(traits=TraitParams(n_traits=K)),
        tokens=TokenTable(
            tokens=np.array([f"purchase_{p}" for p in products], dtype=object),
            actions=np.array(["purchase"] * n_products, dtype=object),
            product_ids=products,
            categories=np.array([""] * n_products, dtype=object),
            counts=rng.integers(1, 500, n_products).astype(np.int64),
            vectors=rng.standard_normal((n_products, DIM)).astype(np.float32),
        ),
        traits=TraitModel(
            components=rng.random((K, 2 * DIM)),
            center=np.zeros(DIM),
            trait_ids=np.arange(K, dtype=np.int64),
            labels=[f"trait {t}" for t in range(K)],
            top_products=[[] for _ in range(K)],
            top_categories=[[] for _ in range(K)],
            population_profile=np.full(K, 1.0 / K),
            population_vector=np.zeros(DIM, dtype=np.float32),
            products=TraitProducts(products[used], weights[:, used]),
        ),
    )


def fill(store: Store, model: TraitflowModel, n_customers: int, rng: np.random.Generator) -> list[str]:
    version = store.save_model(model)
    customers = [f"c{i:06d}" for i in range(n_customers)]
    batch = ProfileBatch(
        as_of=AS_OF,
        model_version=version,
        customer_ids=np.asarray(customers, dtype=object),
        embeddings=rng.standard_normal((n_customers, DIM)).astype(np.float32),
        profiles=rng.dirichlet(np.ones(K), n_customers),
        trait_ids=model.traits.trait_ids,
        n_events=np.full(n_customers, EVENTS_PER_CUSTOMER, dtype=np.int64),
        cold_start=np.asarray(["none"] * n_customers, dtype=object),
        n_known_tokens=np.full(n_customers, EVENTS_PER_CUSTOMER, dtype=np.int64),
    )
    store.promote(version, profiles=batch)
    n = n_customers * EVENTS_PER_CUSTOMER
    events = pd.DataFrame(
        {
            "customer_id": np.repeat(customers, EVENTS_PER_CUSTOMER),
            "event_time": AS_OF - pd.to_timedelta(np.tile(np.arange(EVENTS_PER_CUSTOMER), n_customers), "h"),
            "action": "purchase",
            "product_id": rng.choice(model.tokens.product_ids, n).astype(object),
            "category": pd.array([None] * n, dtype="str"),
            "price": np.nan,
            "session_id": pd.array([None] * n, dtype="str"),
        }
    )
    store.ingest_events(SimpleNamespace(events=events, rejects=empty_rejects()), "bench-products", "bench")
    return customers


def timed(call: Callable[[int], object], calls: int) -> np.ndarray:
    for i in range(20):
        call(i)
    seconds = np.empty(calls)
    for i in range(calls):
        started = time.perf_counter()
        call(i)
        seconds[i] = time.perf_counter() - started
    return seconds * 1000


def report(name: str, ms: np.ndarray) -> None:
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    print(f"{name:<44} p50 {p50:7.2f} ms  p90 {p90:7.2f} ms  p99 {p99:7.2f} ms  ({len(ms)} calls)")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rng = np.random.default_rng(0)
    schema = f"bench_products_{uuid.uuid4().hex[:8]}"
    store = Store(args.database_url, schema)
    try:
        store.upgrade()
        model = build_model(args.products, rng)
        customers = fill(store, model, args.customers, rng)
        os.environ["TRAITFLOW_DATABASE_URL"] = args.database_url
        os.environ["TRAITFLOW_DB_SCHEMA"] = schema
        os.environ.pop("TRAITFLOW_REDIS_URL", None)  # profiles read from PostgreSQL
        from fastapi.testclient import TestClient
        from traitflow_web.app import app
        from traitflow_web.auth import require_access

        loaded = store.load_model(int(model.version or 0))
        profiles = store.current_profiles(customers[: args.calls + 20])
        picks = [profiles[c] for c in customers[: args.calls + 20]]
        print(f"{args.products} products, k={K}, d={DIM}, {args.customers} customers")
        report("build_catalog (once per model)", timed(lambda _: build_catalog(loaded), 20))
        catalog = build_catalog(loaded)
        report(
            "rank_products (library, built catalog)",
            timed(
                lambda i: rank_products(
                    catalog, np.array([t["score"] for t in picks[i]["traits"]]), picks[i]["embedding"], 10
                ),
                args.calls,
            ),
        )
        app.dependency_overrides[require_access] = lambda: "bench"
        with TestClient(app) as client:
            for new_only in (False, True):
                params = {"n": 10, "new_only": str(new_only).lower()}

                def call(i: int, params: dict[str, object] = params) -> None:
                    response = client.get(f"/api/customers/{customers[i]}/products", params=params)
                    assert response.status_code == 200, response.text

                report(f"GET .../products?n=10&new_only={str(new_only).lower()}", timed(call, args.calls))
            report(
                "GET /api/customers/{id} (the profile alone)",
                timed(lambda i: client.get(f"/api/customers/{customers[i]}").raise_for_status(), args.calls),
            )
    finally:
        store.drop_schema()
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
