"""The command-line path from an export to profiles: ingest -> retrain -> update -> traits ->
customer, in a fresh schema, with the weekly and daily chains the DAGs run (``traitflow.chains``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from traitflow.store import Store
from traitflow.synthetic import SyntheticSpec, write_sample

SPEC = SyntheticSpec(n_customers=300, n_products=150, n_categories=12, n_segments=4, n_events=12_000, days=20)
MODEL_FLAGS = ("--k", "6", "--vector-size", "16", "--epochs", "3", "--workers", "1")



@pytest.fixture
def events_csv(tmp_path: Path) -> Path:
    write_sample(tmp_path / "sample", SPEC)
    return tmp_path / "sample" / "events.csv"


def test_ingest_retrain_update_traits_customer(
    cli: Callable[..., tuple[int, str, str]],
    events_csv: Path,
    store: Store,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    events = pd.read_csv(events_csv, parse_dates=["event_time"])
    n_customers = events["customer_id"].nunique()

    code, out, err = cli("ingest", str(events_csv), "--mapping", "canonical")
    assert code == 0, err
    code, out, err = cli("traits")
    assert code == 1 and "no active model yet (run `traitflow retrain`" in err

    code, out, err = cli("retrain", *MODEL_FLAGS)
    assert code == 0, err
    newest = events["event_time"].max()
    assert f"retrain: as of {(newest + pd.Timedelta(microseconds=1)).isoformat()}" in out
    assert "just after the newest stored event" in out
    assert "new-vocabulary check: train_candidate -- no promoted model yet" in out
    gate = next(line for line in out.splitlines() if line.startswith("quality gate: "))
    assert gate.startswith("quality gate: measure_drift -- first model: hit@10 candidate")
    assert "vs popularity" in gate
    assert gate.endswith("held-out pairs): passes")
    assert "drift: refit_traits -- refit: no active model" in out
    assert f"result: promoted model version 1 ({n_customers} profiles" in out
    assert store.active_model_version() == 1
    # Progress lines from the pipeline; gensim's own INFO lines only with -v (below).
    messages = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert any(name == "traitflow.item2vec" and "epoch 3/3 done" in text for name, _, text in messages)
    assert any(name == "traitflow.pipeline" and text.startswith("profiles: ") for name, _, text in messages)
    assert not [m for m in messages if m[0].startswith("gensim") and m[1] < logging.WARNING]
    profiles = store.connection.execute(
        "SELECT count(*), count(DISTINCT model_version), min(model_version) FROM customer_profiles"
    ).fetchone()
    assert profiles == (n_customers, 1, 1)  # every customer with history, under the new model
    weekly = store.run_reports("weekly")
    assert len(weekly) == 1 and weekly[0]["report"]["check_new_vocab"]["branch"] == "train_candidate"
    assert weekly[0]["report"]["promote"]["model_version"] == 1

    # A day before the model's training end has no model to use (backfill safety), and says so.
    code, out, err = cli("update", "--as-of", newest.normalize().isoformat())
    assert code == 2 and "no profiles updated: no promoted model trained before" in err
    # The daily update of the day up to the newest event (the default).
    as_of = newest + pd.Timedelta(microseconds=1)
    day = events[(events["event_time"] >= as_of - pd.Timedelta(days=1)) & (events["event_time"] < as_of)]
    code, out, err = cli("update")
    assert code == 0, err
    assert f"customers with events in [{(as_of - pd.Timedelta(days=1)).isoformat()}" in out
    assert f"profiles written: {day['customer_id'].nunique()} with model version 1" in out
    assert "oov rate" in out and "profile shift" in out
    assert store.run_reports("daily")[0]["report"]["n_profiles"] == day["customer_id"].nunique()
    # The same day in 4 customer shards rewrites nothing: the rows are the same.
    before = store.table_checksums()
    code, out, err = cli("update", "--shards", "4")
    assert code == 0, err
    after = store.table_checksums()
    for table in ("customer_profiles", "customer_profile_history", "profile_shards"):
        assert after[table] == before[table], table
    code, out, err = cli("update", "--shards", "65")
    assert code == 2 and "must be <= 64" in err

    code, out, err = cli("traits", "--json")
    assert code == 0, err
    traits = json.loads(out)
    assert traits["model_version"] == 1 and len(traits["traits"]) == 6
    assert sum(t["size"] for t in traits["traits"]) == n_customers
    assert all(t["label"] and t["top_products"] and t["top_categories"] for t in traits["traits"])

    customer = str(events["customer_id"].iat[0])
    code, out, err = cli("customer", customer)
    assert code == 0, err
    assert f"customer {customer}" in out and "model 1" in out and "dominant trait" in out

    # Nothing new: the second retrain keeps the model, and says why.
    code, out, err = cli("retrain", *MODEL_FLAGS)
    assert code == 0, err
    assert "new-vocabulary check: skip_retrain -- new-vocabulary ratio" in out and "<= 0.05" in out
    assert "result: skipped, no retrain needed -- model version 1 stays active" in out
    assert "quality gate" not in out
    assert store.active_model_version() == 1
    # Same trained_through = same week: the rerun's report replaces the first, as in the DAG.
    (weekly,) = store.run_reports("weekly")
    assert weekly["report"]["check_new_vocab"]["branch"] == "skip_retrain"
    assert "promote" not in weekly["report"]

    # --force trains a candidate that faces the gate against model 1; -v shows gensim's lines.
    caplog.clear()
    code, out, err = cli("-v", "retrain", "--force", *MODEL_FLAGS)
    assert code == 0, err
    assert "new-vocabulary check: train_candidate -- force_retrain requested" in out
    assert "quality gate: measure_drift -- hit@10 candidate" in out or "quality gate: reject_candidate" in out
    promoted = "result: promoted model version 2" in out
    assert promoted or "result: candidate rejected by the quality gate -- model version 1 stays" in out
    assert store.active_model_version() == (2 if promoted else 1)
    assert any(r.name.startswith("gensim") and r.levelno == logging.INFO for r in caplog.records)


def test_retrain_and_update_refuse_clearly(
    cli: Callable[..., tuple[int, str, str]], events_csv: Path, store: Store
) -> None:
    code, _, err = cli("retrain")
    assert code == 2 and "no events stored: run `traitflow ingest" in err
    cli("ingest", str(events_csv), "--mapping", "canonical")
    code, _, err = cli("update")
    assert code == 2 and "no profiles updated: no promoted model" in err and "weekly retrain" in err
    # 300 customers cannot carry 200 traits: refused with the numbers, nothing promoted.
    code, _, err = cli("retrain", "--k", "200", "--vector-size", "8", "--epochs", "1")
    assert code == 2 and "cannot support k=200 traits (need at least 400)" in err
    assert store.active_model_version() is None


def test_inspect_json_has_the_traits_shape(
    cli: Callable[..., tuple[int, str, str]], events_csv: Path, tmp_path: Path
) -> None:
    model_dir = tmp_path / "model"
    code, _, err = cli("train", str(events_csv), "--out", str(model_dir), *MODEL_FLAGS)
    assert code == 0, err
    code, out, err = cli("inspect", str(model_dir), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert len(data["traits"]) == 6 and data["vector_size"] == 16
    first = data["traits"][0]
    assert {"trait_id", "label", "top_products", "top_categories", "size", "population_share"} <= set(first)
    meta = json.loads((model_dir / "meta.json").read_text())
    n_training = meta["metrics"]["n_training_customers"]
    assert sum(t["size"] for t in data["traits"]) == n_training
    assert sum(t["population_share"] for t in data["traits"]) == pytest.approx(1.0)
