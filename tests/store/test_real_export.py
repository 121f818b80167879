"""The real Online Retail II export (examples/data), as a first-time user runs it: the loader's
counts, then ``db upgrade -> ingest -> retrain --as-of -> update --as-of [--since] -> traits ->
customer -> traits --json`` in a fresh schema.

Known answers are the file's (examples/data/README.md): 525,461 invoice lines, of which the
``online_retail`` preset keeps 393,638 events of 4,285 customers and rejects 131,823. Model flags
are small (k stays 16) so the chain runs in seconds; the assertions are about counts, coverage and
what is shown, not model quality beyond the first-model gate.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from traitflow.events import ONLINE_RETAIL_NON_PRODUCT, read_events
from traitflow.store import Store

pytestmark = pytest.mark.slow

EXPORT = Path(__file__).resolve().parents[2] / "examples" / "data" / "online_retail_ii_2009_2010.parquet"
N_READ = 525_461
N_EVENTS = 393_638
REJECTS = {
    "missing_customer_id": 107_927,
    "exact_duplicate": 12_608,
    "cancellation": 9_394,
    "non_product": 1_815,
    # The same product on two lines of one customer's minute at another price or on another
    # invoice: the first line is the event, the second a conflicting duplicate.
    "conflicting_duplicate": 79,
}
N_CUSTOMERS = 4_285
MODEL_FLAGS = ("--k", "16", "--vector-size", "16", "--epochs", "3", "--workers", "1")
NATURAL_KEY = ["customer_id", "event_time", "action", "product_id"]


def test_loader_counts_on_the_real_file() -> None:
    result = read_events(EXPORT, "online_retail")

    assert result.n_read == N_READ
    assert len(result.events) == N_EVENTS and len(result.rejects) == N_READ - N_EVENTS
    assert result.rejects["reason"].value_counts().to_dict() == REJECTS
    assert result.events["customer_id"].nunique() == N_CUSTOMERS
    assert not result.events.duplicated(NATURAL_KEY).any()  # the store's key is unique already
    # No postage, fee or manual line is left as a product: 'M'/'m' ("Manual") are the manual codes.
    products = pd.Series(result.events["product_id"].unique())
    assert not products.isin(ONLINE_RETAIL_NON_PRODUCT.codes).any()
    names = result.product_names()
    assert not names["product_name"].str.strip().str.lower().isin(["manual", "postage", "discount"]).any()
    assert set(names["product_id"]) <= set(products)


def _scalar(store: Store, query: str, *params: object) -> object:
    return store.connection.execute(query, params).fetchone()[0]


def test_real_export_from_ingest_to_served_profiles(
    cli: Callable[..., tuple[int, str, str]], store: Store
) -> None:
    code, out, err = cli("db", "upgrade")
    assert code == 0, err

    # ingest: every row read is an event stored, an event already present, or a reject by reason.
    code, out, err = cli("ingest", str(EXPORT), "--mapping", "online_retail")
    assert code == 0, err
    n_stored = N_EVENTS
    assert f"read {N_READ} rows -> {n_stored} new events, 0 already present" in out
    assert f"{N_READ - N_EVENTS} rejected" in out
    by_reason = ", ".join(f"{reason} {n}" for reason, n in REJECTS.items())  # most frequent first
    table = f"{store.schema}.rejected_events"
    assert f"rejected by reason: {by_reason} (rows with their reason in {table})" in out
    rejected = store.connection.execute("SELECT reason, count(*) FROM rejected_events GROUP BY reason")
    assert dict(rejected.fetchall()) == REJECTS
    assert _scalar(store, "SELECT count(*) FROM events") == n_stored
    assert _scalar(store, "SELECT count(DISTINCT customer_id) FROM events") == N_CUSTOMERS
    assert not _scalar(store, "SELECT count(*) FROM events WHERE product_id = ANY(%s)", ["M", "m", "POST"])
    assert _scalar(store, "SELECT count(*) FROM product_names") == _scalar(
        store, "SELECT count(DISTINCT product_id) FROM events"
    )

    # retrain through 2010-12-01: one model promoted, every customer with history profiled.
    code, out, err = cli("retrain", "--as-of", "2010-12-01", *MODEL_FLAGS)
    assert code == 0, err
    assert "new-vocabulary check: train_candidate -- no promoted model yet" in out
    assert "): passes" in out  # the first model beats popularity on held-out pairs
    before = _scalar(store, "SELECT count(DISTINCT customer_id) FROM events WHERE event_time < '2010-12-01Z'")
    assert f"result: promoted model version 1 ({before} profiles as of 2010-12-01T00:00:00+00:00)" in out
    assert _scalar(store, "SELECT count(*) FROM model_versions WHERE status = 'active'") == 1
    assert _scalar(store, "SELECT count(*) FROM customer_profiles") == before

    # The daily update of 2010-12-09 covers that day's customers, and names the --since that
    # covers the rest of the days after the model (customers first seen then included).
    code, out, err = cli("update", "--as-of", "2010-12-10")
    assert code == 0, err
    day = _scalar(
        store,
        "SELECT count(DISTINCT customer_id) FROM events WHERE event_time >= '2010-12-09Z' "
        "AND event_time < '2010-12-10Z'",
    )
    assert f"customers with events in [2010-12-09T00:00:00+00:00, 2010-12-10T00:00:00+00:00): {day}" in out
    assert f"profiles written: {day} with model version 1" in out
    assert "--since 2010-12-01 --as-of 2010-12-10T00:00:00+00:00" in out
    assert _scalar(store, "SELECT count(*) FROM customer_profiles") < N_CUSTOMERS

    code, out, err = cli("update", "--since", "2010-12-01", "--as-of", "2010-12-10")
    assert code == 0, err
    assert "note:" not in out
    current = store.connection.execute(
        "SELECT count(*), count(*) FILTER (WHERE as_of = '2010-12-10Z'), count(DISTINCT model_version) "
        "FROM customer_profiles"
    ).fetchone()
    after = _scalar(store, "SELECT count(DISTINCT customer_id) FROM events WHERE event_time >= '2010-12-01Z'")
    assert current == (N_CUSTOMERS, after, 1)  # every customer with history has a current profile
    # Customers whose every event is after the model's training end: profiled from known tokens.
    new = store.connection.execute(
        "SELECT count(*), count(*) FILTER (WHERE p.n_known_tokens > 0) FROM customer_profiles p "
        "WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.customer_id = p.customer_id "
        "AND e.event_time < '2010-12-01Z')"
    ).fetchone()
    assert new[0] == N_CUSTOMERS - before and new[1] > 0.9 * new[0]

    # traits: labels read as product names, distinct across the 16 traits.
    code, out, err = cli("traits", "--json")
    assert code == 0, err
    traits = json.loads(out)["traits"]
    assert len(traits) == 16 and sum(t["size"] for t in traits) == N_CUSTOMERS
    names = store.product_names([p for t in traits for p in t["top_products"]])
    labels = [t["label"] for t in traits]
    assert len(set(labels)) == 16
    for trait in traits:
        assert trait["top_product_names"] == [names[p] for p in trait["top_products"]]
        # product names may hold " + " themselves (GIN + TONIC DIET METAL SIGN)
        assert any(trait["label"].startswith(name) for name in trait["top_product_names"])
    code, out, err = cli("traits")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "model version 1: 16 traits (size: current profiles by dominant trait)"
    assert lines[1].split() == ["trait", "size", "label", "top", "products"]  # no empty categories
    assert len(lines) == 18 and all(label in out for label in labels)

    code, out, err = cli("customer", "13085")
    assert code == 0, err
    assert "customer 13085  as of 2010-12-01 00:00  model 1" in out
    dominant = next(line for line in out.splitlines() if line.startswith("dominant trait "))
    assert dominant.split(": ", 1)[1] in labels
