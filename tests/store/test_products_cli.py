"""``traitflow products CUSTOMER``: the served product ranking from the store, in-process."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from traitflow.model import TraitflowModel
from traitflow.profile_batch import ProfileBatch
from traitflow.recommend import build_catalog, rank_products
from traitflow.store import Store


@pytest.fixture
def shopped(
    store: Store, profiled: tuple[TraitflowModel, ProfileBatch], tmp_path: Path
) -> tuple[TraitflowModel, ProfileBatch]:
    """``profiled``, and alice had events on two products, one of them named at ingestion."""
    path = tmp_path / "events.csv"
    path.write_text(
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
        "1,{x},CURLY THING,1,1/2/2024 10:00,1.0,alice,UK\n"
        "1,p1,,2,1/2/2024 10:00,1.0,alice,UK\n",
        encoding="utf-8",
    )
    store.ingest_file(str(path), "online_retail", "test")
    return profiled


def test_products_rank_as_the_library_and_name_them(
    store_cli: Callable[..., tuple[int, str, str]], shopped: tuple[TraitflowModel, ProfileBatch], store: Store
) -> None:
    model, batch = shopped
    expected = rank_products(build_catalog(model), batch.profiles[0], batch.embeddings[0], 5)
    code, out, err = store_cli("products", "alice", "--n", "5", "--json")
    assert code == 0, err
    body = json.loads(out)
    assert body["customer_id"] == "alice" and body["model_version"] == model.version
    assert body["new_only"] is False and body["n_events"] == int(batch.n_events[0])
    assert [p["product_id"] for p in body["products"]] == [p.product_id for p in expected]
    assert [p["score"] for p in body["products"]] == pytest.approx([p.score for p in expected])
    names = store.product_names([p.product_id for p in expected])
    assert [p["name"] for p in body["products"]] == [names.get(p.product_id) for p in expected]
    assert "{x}" in [p.product_id for p in expected] and names["{x}"] == "CURLY THING"

    code, out, _ = store_cli("products", "alice", "-n", "5")
    assert code == 0 and "top 5 products" in out and "CURLY THING" in out and "None" not in out


def test_new_only_leaves_out_what_the_customer_had(
    store_cli: Callable[..., tuple[int, str, str]], shopped: tuple[TraitflowModel, ProfileBatch], store: Store
) -> None:
    assert store.customer_product_ids("alice") == ["p1", "{x}"]
    code, out, err = store_cli("products", "alice", "--n", "500", "--new-only", "--json")
    assert code == 0, err
    body = json.loads(out)
    ids = [p["product_id"] for p in body["products"]]
    assert body["new_only"] is True and ids and not {"p1", "{x}"} & set(ids)
    code, out, _ = store_cli("products", "alice", "--n", "500", "--json")
    assert {"p1", "{x}"} <= {p["product_id"] for p in json.loads(out)["products"]}
    assert {p["product_id"] for p in json.loads(out)["products"] if p["had_events"]} == {"p1", "{x}"}
    assert not any(p["had_events"] for p in body["products"])
    assert len(json.loads(out)["products"]) == len(ids) + 2  # every model product, the seen two back


def test_no_active_model(store_cli: Callable[..., tuple[int, str, str]]) -> None:
    code, _, err = store_cli("products", "alice")
    assert (
        code == 1
        and err.strip() == "traitflow: error: there is no active model yet (run `traitflow retrain`)"
    )


def test_unknown_customer_and_bad_n(
    store_cli: Callable[..., tuple[int, str, str]], profiled: tuple[TraitflowModel, ProfileBatch]
) -> None:
    code, _, err = store_cli("products", "nobody")
    assert code == 1 and err.strip() == "traitflow: error: customer 'nobody' has no profile"
    for bad in ("0", "501", "x"):
        with pytest.raises(SystemExit) as exited:
            store_cli("products", "alice", "--n", bad)
        assert exited.value.code == 2


def test_the_traitflow_cli_mounts_products(
    profiled: tuple[TraitflowModel, ProfileBatch],
    store: Store,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from traitflow.cli import main as traitflow

    args = ["products", "alice", "--database-url", database_url, "--schema", store.schema, "--json"]
    assert traitflow(args) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["customer_id"] == "alice" and body["as_of"].startswith("2024-01-10")
