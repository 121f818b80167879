"""The ``env`` fixture of the job tests: a store schema, and a synthetic sample's daily files."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_jobs import START

from traitflow.store import Store
from traitflow.synthetic import SyntheticSpec, write_sample


@pytest.fixture
def env(store: Store, store_schema: str, database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Jobs open their own Store: point them at the test's schema."""
    monkeypatch.setenv("TRAITFLOW_DB_SCHEMA", store_schema)
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
    return {"url": database_url, "input": str(input_dir), "work": tmp_path / "work", "store": store}
