"""Fixtures for the command-line tests of the store folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from traitflow.cli import main
from traitflow.store import Store


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
    ``retrain`` and ``update`` read them; the data dir is under tmp_path. (test_store_cli.py
    overrides this with a variant that passes ``--database-url`` and ``--schema`` instead.)"""
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
