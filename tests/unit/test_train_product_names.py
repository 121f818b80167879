"""``traitflow train`` on an order-line file labels traits with the file's product names, and
``inspect --json`` shows them; without names, labels name product ids."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from traitflow.cli import main
from traitflow.config import PipelineConfig
from traitflow.pipeline import train
from traitflow.synthetic import SyntheticSpec, generate

SPEC = SyntheticSpec(n_customers=200, n_products=120, n_categories=8, n_segments=4, n_events=8_000, days=10)
FLAGS = ("--k", "4", "--vector-size", "16", "--epochs", "3", "--workers", "1")


def _name(product_id: str) -> str:
    return f"NAME OF {product_id.upper()}"


def _order_lines(events: pd.DataFrame) -> pd.DataFrame:
    """The synthetic events as Online Retail II invoice lines (one invoice per customer and day)."""
    customer_codes, _ = pd.factorize(events["customer_id"])
    day = events["event_time"].dt.strftime("%Y%m%d")
    return pd.DataFrame(
        {
            "Invoice": day + "-" + pd.Series(customer_codes).astype(str),
            "StockCode": events["product_id"],
            "Description": events["product_id"].map(_name),
            "Quantity": 1,
            "InvoiceDate": events["event_time"].dt.strftime("%Y-%m-%d %H:%M:%S"),
            "Price": events["price"],
            "Customer ID": (10_000 + customer_codes).astype(np.float64),
            "Country": "United Kingdom",
        }
    )


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    data = generate(SPEC).events
    return data.drop_duplicates(["customer_id", "event_time", "product_id"]).reset_index(drop=True)


def test_train_with_an_order_line_file_labels_traits_by_product_name(
    events: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "lines.csv"
    _order_lines(events).to_csv(path, index=False)
    assert main(["train", str(path), "--mapping", "online_retail", "--out", str(tmp_path / "m"), *FLAGS]) == 0
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "m"), "--json"]) in (0, None)
    traits = json.loads(capsys.readouterr().out)["traits"]

    assert len(traits) == 4 and len({t["label"] for t in traits}) == 4
    for trait in traits:
        # order lines have no category: the label joins product names, never bare ids
        assert trait["top_categories"] == []
        assert trait["label"].startswith("NAME OF ")
        assert all(term.startswith("NAME OF ") for term in trait["label"].split(" + "))
        assert trait["top_product_names"] == [_name(p) for p in trait["top_products"]]


def test_evaluate_with_an_order_line_file_reports_traits_by_product_name(
    events: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "lines.csv"
    _order_lines(events).to_csv(path, index=False)
    report_path = tmp_path / "report.json"
    options = ["--k-range", "4", "--no-stability", "--bootstrap", "50", "--json-out", str(report_path)]
    assert main(["evaluate", str(path), "--mapping", "online_retail", *FLAGS, *options]) == 0
    out = capsys.readouterr().out
    traits = json.loads(report_path.read_text())["model"]["traits"]

    assert [t["trait_id"] for t in traits] == [1, 2, 3, 4]
    for trait in traits:
        assert all(term.startswith("NAME OF ") for term in trait["label"].split(" + "))
        assert f"  trait {trait['trait_id']}: {trait['label']}" in out


def test_without_names_labels_name_product_ids(events: pd.DataFrame, tmp_path: Path) -> None:
    config = PipelineConfig.from_mapping({"k": 4, "vector_size": 16, "epochs": 3, "workers": 1})
    lines = events.assign(category="")
    end = (lines["event_time"].max() + pd.Timedelta(seconds=1)).to_pydatetime()
    names = {p: _name(p) for p in lines["product_id"]}
    named = train(lines, config, end, tmp_path / "a", product_names=names)
    bare = train(lines, config, end, tmp_path / "b")

    ids = set(lines["product_id"])
    assert all(term in ids for label in bare.traits.labels for term in label.split(" + "))
    # the same products, named
    assert [label.split(" + ") for label in named.traits.labels] == [
        [_name(p) for p in label.split(" + ")] for label in bare.traits.labels
    ]
