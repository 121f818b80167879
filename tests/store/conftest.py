"""Fixtures for the command-line tests of the store folder."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from traitflow.cli import main
from traitflow.model import TraitflowModel
from traitflow.profile_batch import ProfileBatch
from traitflow.store import Store
from traitflow.store.cli import main as store_main


@pytest.fixture
def cli(
    store: Store,
    store_schema: str,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> Callable[..., tuple[int, str, str]]:
    """``traitflow <args>`` in-process against the test's fresh schema, returning (exit code,
    stdout, stderr). The database and schema come from the environment, as the jobs behind
    ``retrain`` and ``update`` read them; the data dir is under tmp_path. ``store_cli`` passes
    ``--database-url`` and ``--schema`` instead."""
    monkeypatch.setenv("TRAITFLOW_DB_SCHEMA", store_schema)
    monkeypatch.setenv("TRAITFLOW_DATABASE_URL", database_url)
    monkeypatch.setenv("TRAITFLOW_DATA_DIR", str(tmp_path / "data"))

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = main(list(args))
        except SystemExit as exc:  # the store commands exit 1 with their message on stderr
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def store_cli(
    store: Store, database_url: str, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """Run the store's commands (``traitflow.store.cli``) in-process as ``traitflow <args>
    --database-url <test db> --schema <test schema>``, returning (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        code = store_main([*args, "--database-url", database_url, "--schema", store.schema])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def profiled(
    store: Store, build_model: Callable[..., TraitflowModel], build_profile_batch: Callable[..., ProfileBatch]
) -> tuple[TraitflowModel, ProfileBatch]:
    """The test schema with an active model (``build_model()``, traits 3, 7, 11) and the current
    profiles written with its promotion, as of 2024-01-10: alice (0.7, 0.2, 0.1; 30 events),
    bob (0.1, 0.8, 0.1; 12 events) and o'hara 🛒 (0.6, 0.3, 0.1; one event), in that order."""
    model = build_model()
    version = store.save_model(model)
    profiles = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1]])
    batch = build_profile_batch(
        version, ["alice", "bob", "o'hara 🛒"], as_of=datetime(2024, 1, 10, tzinfo=UTC), profiles=profiles
    )
    batch.n_events[:], batch.n_known_tokens[:] = [30, 12, 1], [25, 10, 1]
    store.promote(version, profiles=batch)
    return model, batch
