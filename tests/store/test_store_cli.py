"""The store's CLI commands, run in-process against the test schema."""

from __future__ import annotations

import argparse
import importlib.util
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from traitflow.model import Lineage, TraitflowModel
from traitflow.profile_batch import ProfileBatch
from traitflow.store import Store, migrations
from traitflow.store.cli import MODEL_COLUMNS, add_commands, main

REPO = Path(__file__).resolve().parents[2]


def test_db_url_masks_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "url", "--database-url", "postgres://admin:hunter2@db.example:5432/prod"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == "postgresql://admin:***@db.example:5432/prod" and "hunter2" not in out


def test_db_upgrade_is_idempotent(store_cli: Callable[..., tuple[int, str, str]]) -> None:
    code, out, _ = store_cli("db", "upgrade")
    assert code == 0 and f"already up to date (version {migrations.latest_version()})" in out


def test_ingest_a_file(store_cli: Callable[..., tuple[int, str, str]], tmp_path: Path, store: Store) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "customer_id,event_time,action,product_id,category,price,session_id\n"
        "c1,2024-03-01T10:00:00Z,view,p1,,,\n"
        "c1,2024-03-01T10:05:00Z,purchase,p1,shoes,9.5,s1\n"
        ",2024-03-01T10:00:00Z,view,p1,,,\n",
        encoding="utf-8",
    )
    code, out, err = store_cli("ingest", str(path), "--mapping", "canonical", "--run-id", "cli-test")
    assert code == 0, err
    assert "read 3 rows -> 2 new events, 0 already present, 1 rejected" in out
    code, out, _ = store_cli("ingest", str(path), "--mapping", "canonical", "--json")
    assert code == 0 and json.loads(out)["skipped"] is True
    assert store.table_counts()["events"] == 2
    code, _, err = store_cli("ingest", str(tmp_path / "missing.csv"), "--mapping", "canonical")
    assert code == 1 and err.startswith("traitflow: error:")


def test_profile_traits_top_similar_reports(
    store_cli: Callable[..., tuple[int, str, str]],
    profiled: tuple[TraitflowModel, ProfileBatch],
    store: Store,
) -> None:
    version = profiled[0].version
    store.write_run_report("daily", "2024-01-10", {"customers": 3, "oov_rate": 0.02})
    code, out, _ = store_cli("profile", "o'hara 🛒")
    assert code == 0 and "dominant trait 3" in out and "0.600" in out
    code, out, _ = store_cli("profile", "alice", "--json")
    data = json.loads(out)
    assert [t["trait_id"] for t in data["traits"]] == [3, 7, 11] and data["model_version"] == version
    code, out, _ = store_cli("profile", "alice", "--history")
    assert code == 0 and "trait_11" in out
    code, out, _ = store_cli("traits", "--json")
    traits = json.loads(out)
    assert traits["model_version"] == version and [t["trait_id"] for t in traits["traits"]] == [3, 7, 11]
    assert [t["size"] for t in traits["traits"]] == [2, 1, 0]
    code, out, _ = store_cli("top", "7", "-n", "1", "--json")
    assert [r["customer_id"] for r in json.loads(out)] == ["bob"]
    code, out, _ = store_cli("similar", "alice", "-n", "1", "--json")
    assert [r["customer_id"] for r in json.loads(out)] == ["bob"]  # o'hara (closer) has one event
    code, out, _ = store_cli("reports", "--kind", "daily")
    assert code == 0 and "2024-01-10" in out and "oov_rate" in out


def test_top_and_similar_show_thin_profiles_only_when_asked(
    store_cli: Callable[..., tuple[int, str, str]], profiled: tuple[TraitflowModel, ProfileBatch]
) -> None:
    code, out, _ = store_cli("top", "3", "--json")
    assert code == 0 and [r["customer_id"] for r in json.loads(out)] == ["alice", "bob"]
    code, out, _ = store_cli("top", "3", "--min-events", "1", "--json")
    rows = json.loads(out)
    assert [r["customer_id"] for r in rows] == ["alice", "o'hara 🛒", "bob"]
    assert [(r["n_events"], r["n_known_tokens"]) for r in rows] == [(30, 25), (1, 1), (12, 10)]
    assert rows[1]["confidence"] == pytest.approx(1 / 4) and rows[0]["confidence"] == pytest.approx(25 / 28)
    code, out, _ = store_cli("similar", "alice", "-n", "1", "--min-events", "1")
    assert code == 0 and "o'hara" in out and "cold_start" in out and "confidence" in out
    code, out, _ = store_cli("profile", "alice")
    assert "evidence: 25 of 30 events with a known token, confidence 0.89" in out
    with pytest.raises(SystemExit):
        store_cli("top", "3", "--min-events", "-1")


def test_clear_errors_and_exit_codes(
    store_cli: Callable[..., tuple[int, str, str]], profiled: tuple[TraitflowModel, ProfileBatch]
) -> None:
    code, out, err = store_cli("profile", "nobody")
    assert (code, out) == (1, "") and "customer 'nobody' has no profile" in err
    code, _, err = store_cli("top", "99")
    assert code == 1 and "trait 99 does not exist" in err
    code, _, err = store_cli("traits", "--model-version", "42")
    assert code == 1 and "model version 42 does not exist" in err
    assert main(["traits", "--database-url", "mysql://x/y"]) == 1


def test_unmigrated_schema_and_unreachable_server(
    capsys: pytest.CaptureFixture[str], database_url: str
) -> None:
    assert main(["traits", "--database-url", database_url, "--schema", "tf_never_created"]) == 1
    assert "traitflow db upgrade" in capsys.readouterr().err
    assert main(["reports", "--database-url", "postgresql://u:pw@127.0.0.1:1/x?connect_timeout=2"]) == 1
    err = capsys.readouterr().err
    assert "cannot connect to postgresql://u:***@127.0.0.1:1/x" in err and "pw@" not in err


def test_models_lists_the_lineage_of_each_version(
    store_cli: Callable[..., tuple[int, str, str]], store: Store, build_model: Callable[..., TraitflowModel]
) -> None:
    full = build_model(trained_through=datetime(2024, 1, 7, tzinfo=UTC))
    full.lineage = Lineage("full")
    first = store.save_model(full)
    store.promote(first)
    increment = build_model(trained_through=datetime(2024, 1, 14, tzinfo=UTC))
    increment.lineage = Lineage("incremental", first, datetime(2024, 1, 7, tzinfo=UTC))
    increment.metrics["quality_gate"] = {"candidate_hit_rate": 0.25}
    second = store.save_model(increment)
    store.reject_model(second, "clearly worse")
    unrecorded = store.save_model(build_model(trained_through=datetime(2024, 1, 21, tzinfo=UTC)))
    code, out, _ = store_cli("models", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [r["model_version"] for r in rows] == [unrecorded, second, first]  # newest first
    assert [(r["training_mode"], r["parent_version"]) for r in rows] == [
        (None, None),
        ("incremental", first),
        ("full", None),
    ]
    assert rows[1]["trained_since"].startswith("2024-01-07T00:00:00")
    assert rows[1]["hit_rate"] == 0.25 and rows[1]["status_reason"] == "clearly worse"
    code, out, _ = store_cli("models")
    header, *lines = out.splitlines()
    assert "training_mode" in header and "parent_version" in header
    assert "incremental" in lines[1] and "full" in lines[2]


def test_models_shows_both_drifts_with_the_threshold_of_the_mode(
    store_cli: Callable[..., tuple[int, str, str]],
    store: Store,
    save_drifted_versions: Callable[[Store], Any],
) -> None:
    saved = save_drifted_versions(store)
    code, out, _ = store_cli("models", "--json")
    assert code == 0
    rows = {r["model_version"]: r for r in json.loads(out)}
    shown = {
        version: (r["drift"], r["recent_weighted_drift"], r["drift_threshold"], r["refit_on"])
        for version, r in rows.items()
    }
    assert shown == saved.expected
    code, out, _ = store_cli("models")
    header, *lines = out.splitlines()
    assert header.split() == MODEL_COLUMNS
    # The rows end with drift, recent_weighted_drift, drift_threshold, refit_on, status_reason.
    text = {int(line.split()[0]): line.split()[-5:] for line in lines}
    assert text == {
        saved.incremental: ["0.01", "0.04", "0.03", "recent_weighted_drift", "None"],
        saved.full: ["0.15", "NaN", "0.20", "weighted_mean_drift", "None"],
    }


def test_add_commands_mounts_under_other_names() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("profile")  # the host CLI already has one
    with pytest.raises(ValueError, match="already has command"):
        add_commands(sub)
    add_commands(sub, names={"profile": "customer"})
    args = parser.parse_args(["customer", "c1", "--history"])
    assert args.func.__name__ == "cmd_profile" and args.history and args.customer_id == "c1"


def test_benchmark_smoke(database_url: str, tmp_path: Path) -> None:
    """bench/bench_store_writes.py runs in-process at a small size and writes its JSON."""
    spec = importlib.util.spec_from_file_location(
        "bench_store_writes", REPO / "bench" / "bench_store_writes.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(
        [
            "--rows",
            "500",
            "--traits",
            "4",
            "--dim",
            "8",
            "--database-url",
            database_url,
            "--out",
            str(tmp_path),
        ]
    )
    assert set(result["phases"]) == {"insert", "rerun", "update", "backfill"}
    assert result["phases"]["insert"]["report"]["history_inserted"] == 500
    assert result["phases"]["rerun"]["report"]["profiles_written"] == 0
    assert result["phases"]["update"]["report"]["profiles_written"] == 500
    assert result["phases"]["backfill"]["report"]["profiles_written"] == 0
    assert result["table_counts"] == {
        "customer_profiles": 500,
        "customer_profile_history": 1500,
    }
    saved = json.loads(Path(result["json_path"]).read_text())
    assert saved["rows"] == 500 and saved["phases"]["insert"]["rows_per_s"] > 0
