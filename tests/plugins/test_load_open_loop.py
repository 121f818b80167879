"""The load test's open loop without a server: the Poisson schedule (known mean rate and gaps)
and the coordinated-omission accounting (latency from the scheduled send, late sends, requests
never sent), against a fake HTTP client whose answers take a scripted time."""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def clients() -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCH_DIR))
    try:
        import load_clients

        yield load_clients
    finally:
        sys.path.remove(str(BENCH_DIR))


def test_the_schedule_is_a_poisson_process_of_the_rate(clients: ModuleType) -> None:
    rng = np.random.default_rng(7)
    times = clients.poisson_schedule(50.0, 100.0, 300.0, rng)  # 10,000 sends expected
    assert np.all(np.diff(times) > 0) and times[0] > 100.0 and times[-1] < 300.0
    # count ~ Poisson(10,000): sd 100, so 4 sd either side
    assert abs(len(times) - 10_000) < 400
    gaps = np.diff(times)
    assert abs(gaps.mean() - 0.02) < 0.02 * 0.05
    assert abs(gaps.std() / gaps.mean() - 1.0) < 0.05  # exponential gaps: coefficient of variation 1
    # the clients' schedules together: 32 processes of R / 32 make one of R
    merged = np.concatenate(
        [clients.poisson_schedule(200.0 / 32, 0.0, 100.0, np.random.default_rng(i)) for i in range(32)]
    )
    assert abs(len(merged) - 20_000) < 4 * np.sqrt(20_000)
    with pytest.raises(ValueError, match="positive"):
        clients.poisson_schedule(0.0, 0.0, 1.0, rng)
    assert len(clients.poisson_schedule(5.0, 1.0, 1.0, rng)) == 0


class ScriptedHttp:
    """Answers 200 to every GET after the scripted number of seconds (0 once the script ends)."""

    def __init__(self, seconds: list[float]) -> None:
        self.seconds = iter(seconds)

    def get(self, path: str) -> Any:
        time.sleep(next(self.seconds, 0.0))
        return type("Response", (), {"status_code": 200})()


def _client(clients: ModuleType, http: ScriptedHttp, begin: float) -> Any:
    plan = clients.LoadPlan(
        concurrency=1,
        duration_s=1.0,
        warmup_s=0.0,
        mix=clients.Mix.parse("profile=1"),
        zipf_exponent=0.0,
        customer_ids=("c1",),
        products=(),
        post_day=datetime(2026, 1, 1, tzinfo=UTC),
    )
    return clients._Client(plan, http, 0, itertools.count(1), begin)


def test_a_stall_counts_for_every_request_scheduled_behind_it(clients: ModuleType) -> None:
    begin = time.perf_counter() + 0.05
    offsets = [0.0, 0.1, 0.2, 0.3, 0.5]
    client = _client(clients, ScriptedHttp([0.4]), begin)  # the first answer takes 0.4 s
    samples = client.run_schedule([begin + t for t in offsets], cutoff=begin + 10).samples
    assert [s.at for s in samples] == pytest.approx(offsets)  # when each was due, not when it went
    # Sent when the stall ended (0.4 s), answered at once: each waited 0.4 s - its own offset.
    # A closed-loop count would say [0.4, 0, 0, 0, 0] and hide the queue behind the stall.
    expected = [0.4, 0.3, 0.2, 0.1, 0.0]
    assert [s.seconds for s in samples] == pytest.approx(expected, abs=0.05)
    assert [s.late for s in samples] == pytest.approx([0.0, 0.3, 0.2, 0.1, 0.0], abs=0.05)
    assert all(s.status == 200 for s in samples)


def test_requests_still_unsent_at_the_cutoff_are_errors_with_their_wait(clients: ModuleType) -> None:
    begin = time.perf_counter() + 0.05
    client = _client(clients, ScriptedHttp([0.5]), begin)
    schedule = [begin + t for t in (0.0, 0.1, 0.2)]
    samples = client.run_schedule(schedule, cutoff=begin + 0.3).samples
    assert [s.status for s in samples] == [200, clients.NOT_SENT, clients.NOT_SENT]
    assert [s.seconds for s in samples[1:]] == pytest.approx([0.2, 0.1])  # cutoff - due: a lower bound
