"""The quickstart's sample is dated relative to the day it runs (scripts/quickstart.py)."""

from __future__ import annotations

import importlib.util
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "quickstart.py"


@pytest.fixture(scope="module")
def quickstart():
    spec = importlib.util.spec_from_file_location("quickstart_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("day", range(1, 15))  # two weeks: every weekday, twice
def test_the_sample_ends_yesterday_and_the_retrain_is_a_sunday(quickstart, day: int) -> None:
    now = datetime(2026, 12, day, 15, 30, tzinfo=UTC)
    timeline = quickstart.sample_timeline(now, days_after_retrain=3)
    assert timeline.end == datetime(2026, 12, day, tzinfo=UTC)  # [start, end): ends with yesterday
    assert timeline.retrain.weekday() == 6 and timeline.retrain.hour == 0
    assert timeline.retrain - timeline.start == timedelta(days=quickstart.DAYS_BEFORE_RETRAIN)
    assert timedelta(days=3) <= timeline.end - timeline.retrain < timedelta(days=10)


def test_the_timeline_survives_its_recorded_form(quickstart) -> None:
    timeline = quickstart.sample_timeline(datetime(2026, 12, 2, 6, 0, tzinfo=UTC))
    assert timeline.to_env().splitlines() == [
        "TRAITFLOW_START_DATE=2026-11-19",
        "TRAITFLOW_SAMPLE_END=2026-12-02",
    ]
    assert quickstart.Timeline.from_env(timeline.to_env()) == timeline
