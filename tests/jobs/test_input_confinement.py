"""Run parameters cannot reach files outside the configured roots, and rejects keep no unmapped column."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from traitflow import jobs
from traitflow.config import ConfigError, confine
from traitflow.runs import EventInput, RunContext
from traitflow.store import Store

DAY = datetime(2026, 1, 5, tzinfo=UTC)
END = datetime(2026, 1, 6, tzinfo=UTC)
UNREACHABLE = "postgresql://nobody@127.0.0.1:1/none"  # a refused path never gets this far
SECRET_KEY = "internal_api_token_4f2a"
RUN = RunContext("run", DAY, END, "/nonexistent/work", UNREACHABLE)


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """root/sample (allowed) and secret_dir beside root (not allowed), with a mapping file in each."""
    root, secret = tmp_path / "root", tmp_path / "secret_dir"
    (root / "sample").mkdir(parents=True)
    secret.mkdir()
    (secret / "events_2026-01-05.csv").write_text("customer_id,event_time,action,product_id\n")
    (secret / "mapping.json").write_text(json.dumps({SECRET_KEY: "x", "columns": {}}))
    (root / "mapping.json").write_text(json.dumps({"columns": {"customer_id": "user"}}))
    monkeypatch.setenv("TRAITFLOW_INPUT_ROOT", str(root))
    monkeypatch.delenv("TRAITFLOW_MAPPING_ROOT", raising=False)
    monkeypatch.chdir(root)
    return {"root": root, "secret": secret, "tmp": tmp_path}


@pytest.mark.parametrize(
    "input_dir",
    ["sample/../../secret_dir", "{secret}", "{root}/sample/../../secret_dir", "{root}/link_out"],
    ids=["relative_dotdot", "absolute_outside", "absolute_dotdot", "symlink_out"],
)
def test_input_dir_outside_the_root_is_refused(layout: dict[str, Path], input_dir: str) -> None:
    (layout["root"] / "link_out").symlink_to(layout["secret"], target_is_directory=True)
    given = input_dir.format(root=layout["root"], secret=layout["secret"])
    with pytest.raises(ConfigError, match="input_dir") as failure:
        jobs.ingest_interval(RUN, EventInput(given, "canonical"))
    message = str(failure.value)
    assert "TRAITFLOW_INPUT_ROOT" in message or "'..'" in message
    assert "events_2026-01-05" not in message  # nothing read from the folder


def test_an_event_file_that_links_out_of_the_root_is_refused(layout: dict[str, Path]) -> None:
    link = layout["root"] / "sample" / "events_2026-01-05.csv"
    link.symlink_to(layout["secret"] / "events_2026-01-05.csv")
    with pytest.raises(ConfigError, match=r"event file .* is outside the allowed folder"):
        jobs.ingest_interval(RUN, EventInput("sample", "canonical"))


def test_a_mapping_file_outside_the_root_is_refused_without_reading_it(layout: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="TRAITFLOW_MAPPING_ROOT") as failure:
        jobs.ingest_interval(RUN, EventInput("sample", str(layout["secret"] / "mapping.json")))
    assert SECRET_KEY not in str(failure.value)
    with pytest.raises(ConfigError, match=r"'\.\.' components"):
        jobs.confined_mapping("../secret_dir/mapping.json")


def test_paths_inside_the_roots_and_presets_are_accepted(
    layout: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = layout["root"]
    assert confine("sample", root, "input_dir", "X") == (root / "sample").resolve()
    assert confine(root / "sample", root, "input_dir", "X") == (root / "sample").resolve()
    assert jobs.confined_mapping("canonical") == "canonical"
    assert jobs.confined_mapping(str(root / "mapping.json")) == str((root / "mapping.json").resolve())
    monkeypatch.setenv("TRAITFLOW_MAPPING_ROOT", str(layout["secret"]))  # a root of their own
    assert jobs.confined_mapping(str(layout["secret"] / "mapping.json")).endswith("mapping.json")
    with pytest.raises(ConfigError):
        jobs.confined_mapping(str(root / "mapping.json"))


def test_a_stored_reject_keeps_only_the_mapped_columns(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "events_2026-01-05.csv"
    path.write_text(
        "customer_id,event_time,action,product_id,category,price,session_id,ssn\n"
        "c1,2026-01-05T10:00:00Z,view,p1,cat,,s1,078-05-1120\n"
        "c2,2026-01-05T10:00:00Z,teleport,p1,cat,,s1,219-09-9999\n"  # unknown action: a reject
        ",2026-01-05T10:00:00Z,view,p2,cat,,s1,457-55-5462\n"  # no customer: a reject
    )
    report = store.ingest_file(path, "canonical", "run")
    assert (report.n_inserted, report.n_rejected) == (1, 2)
    rows = store.connection.execute(
        "SELECT row_number, raw, reason FROM rejected_events ORDER BY row_number"
    ).fetchall()
    assert [(r[0], r[2]) for r in rows] == [(2, "unknown_action"), (3, "missing_customer_id")]
    mapped = ["customer_id", "event_time", "action", "product_id", "category", "price", "session_id"]
    for _, raw, _ in rows:
        assert list(json.loads(raw)) == mapped
        assert "ssn" not in raw and "-55-" not in raw and "-09-" not in raw
