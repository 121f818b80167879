"""The job tests' environments: ``store_env``, a store schema the jobs open themselves, and
``env``, the same with a synthetic sample's daily files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_jobs import START

from traitflow.store import Store
from traitflow.synthetic import SyntheticSpec, write_sample


@pytest.fixture
def store_env(
    store: Store, store_schema: str, database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> dict[str, Any]:
    """Jobs open their own Store: point them at the test's schema. No event files: the test
    ingests its own events."""
    monkeypatch.setenv("TRAITFLOW_DB_SCHEMA", store_schema)
    return {"url": database_url, "work": tmp_path / "work", "store": store}


@pytest.fixture
def env(store_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """``store_env`` with a synthetic sample's daily files in ``input``."""
    monkeypatch.setenv("TRAITFLOW_INPUT_ROOT", str(tmp_path))  # input_dir must lie inside it
    input_dir = tmp_path / "input"
    spec = SyntheticSpec(
        n_customers=300,
        n_products=200,
        n_categories=12,
        n_segments=4,
        n_events=12_000,
        start=START,
        days=12,
        seed=3,
    )
    write_sample(input_dir, spec, days_per_file=1)
    return {**store_env, "input": str(input_dir)}
