"""bench/defaults_sweep.py at smoke size, in-process, so that it cannot rot.

Checks structure and ranges only (every measure filled, the tables render); never timings.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from traitflow.config import IncrementParams, Item2VecParams
from traitflow.synthetic import generate

BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def defaults_sweep():
    sys.path.insert(0, str(BENCH_DIR))
    try:
        return importlib.import_module("defaults_sweep")
    finally:
        sys.path.remove(str(BENCH_DIR))


@pytest.fixture(scope="module")
def smoke_data(defaults_sweep):
    return generate(defaults_sweep.TIERS["smoke"].spec)


def test_settings_rows_carry_every_measure(defaults_sweep, smoke_data, tmp_path):
    data = defaults_sweep.load_dataset("smoke", smoke_data.events, smoke_data.segments, tmp_path)
    rows = list(defaults_sweep.sweep(data, ["default", "epochs=3"], workers=1))

    assert [row["setting"] for row in rows] == ["default", "epochs=3"]
    for row in rows:
        assert 0.0 <= row["hit_at_10"] <= 1.0 and 0.0 <= row["hit_at_10_reseed"] <= 1.0
        assert -1.0 <= row["ari"] <= 1.0
        assert 0.0 <= row["reseed"]["ids_kept"] <= 1.0
        assert 0.0 <= row["reseed"]["same_dominant"] <= 1.0
        for view in ("product_lift", "product_lift_new"):
            low, high = row[view]["ci95"]
            assert low <= row[view]["lift"] <= high
    # The default setting is the reference of the others.
    assert rows[0]["vs_default"] is None
    assert 0.0 <= rows[1]["vs_default"]["ids_kept"] <= 1.0

    table = defaults_sweep.markdown(rows).splitlines()
    assert len(table) == 2 + len(rows)
    assert all(line.count("|") == table[0].count("|") for line in table)


def test_incremental_rows_follow_the_settings(defaults_sweep, tmp_path):
    spec = defaults_sweep.TIERS["smoke"].spec
    events, cut = defaults_sweep.incremental_events(spec)
    settings = (IncrementParams(increment_epochs=2),)
    serial = Item2VecParams(workers=1, epochs=2)

    rows = list(defaults_sweep.compare_incremental(events, cut, serial, settings, tmp_path))

    assert [row["model"] for row in rows[:2]] == ["parent (weeks before)", "full"]
    assert len(rows) == 2 + len(settings)
    assert rows[2]["increment_epochs"] == 2
    assert all(0.0 <= row["hit_at_10"] <= 1.0 for row in rows)
    assert len(defaults_sweep.incremental_markdown(rows).splitlines()) == 2 + len(rows)
