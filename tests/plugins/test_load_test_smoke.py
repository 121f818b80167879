"""bench/load_test.py at smoke size, so that it cannot rot: the data built through the library,
two clients against the plugin's app in-process (auth overridden), the daily update writing in a
thread, Redis killed mid-run. Checks what the load test checks (every request answered 200,
every posted event stored or rejected, reads go on without Redis) and that the report renders;
never timings.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def bench() -> Iterator[dict[str, ModuleType]]:
    sys.path.insert(0, str(BENCH_DIR))
    try:
        yield {name: importlib.import_module(name) for name in ("load_server", "load_report", "load_test")}
    finally:
        sys.path.remove(str(BENCH_DIR))


def test_the_load_test_runs_and_accounts_for_every_request_and_event(
    bench: dict[str, ModuleType],
    plugin: ModuleType,
    empty_db: Any,
    store_schema: str,
    database_url: str,
    redis_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from fastapi.testclient import TestClient
    from traitflow_web.auth import require_access
    from traitflow_web.events import require_write_access

    server, report_module, load_test = bench["load_server"], bench["load_report"], bench["load_test"]
    monkeypatch.setenv("TRAITFLOW_REDIS_URL", redis_server.url)
    workload = server.Workload(n_customers=300, n_events=12_000)
    data = server.build_data(database_url, store_schema, workload, tmp_path / "runs")
    assert data.customer_ids and data.products

    options = load_test.LoadOptions(
        concurrency=2,
        duration_s=2.0,
        warmup_s=0.5,
        prewarm_customers=20,
        kill_redis_after_s=1.0,
        daily_interval_s=0.2,
        workers=1,
    )
    job = server.DailyJob(database_url, store_schema, data.post_day, str(tmp_path / "daily"), 0.2, None)
    app = plugin.app
    app.dependency_overrides[require_access] = lambda: "load-test"
    app.dependency_overrides[require_write_access] = lambda: "load-test"
    try:
        report = load_test.measure(
            options,
            data,
            lambda: TestClient(app),
            empty_db,
            api_prefix="",
            kill_redis=redis_server.kill,
            daily=server.DailyRunner(job, process=False),
        )
    finally:
        app.dependency_overrides.clear()

    routes = {r["route"]: r for r in report["routes"]}
    assert all(routes[route]["n"] > 0 for route in ("profile", "post"))
    assert report["n_errors"] == 0 and report["transport_errors"] == {}, report["routes"]
    assert report["prewarm_statuses"] == {"200": 20}
    events = report["events"]
    assert events["n_posts"] > 0 and events["n_lost"] == 0
    assert events["n_sent"] == events["n_stored"] + events["n_rejected"] >= events["n_posts"]
    assert events["n_responses_disagreeing"] == 0 and events["n_posts_without_response"] == 0
    assert report["after_kill"]["reads"] > 0 and report["after_kill"]["read_errors"] == 0
    assert report["cache"]["outcomes"].get("fallback", 0) > 0  # reads after the kill went to PostgreSQL
    assert "failed" not in report["daily"] and not report["daily"].startswith("0 runs")
    verdicts = {t["target"]: t["verdict"] for t in report["targets"]}
    assert verdicts["errors"] == verdicts["lost events"] == "met"
    assert verdicts["cache hit rate"] == "n/a"  # Redis was killed: no hit rate target

    report.update(started="smoke", commit="test", command="load_test.py (smoke)")
    json_path, md_path = report_module.write(report, tmp_path / "results", "load-smoke")
    assert json.loads(json_path.read_text())["events"] == events
    markdown = md_path.read_text()
    assert "| profile |" in markdown and "| lost events | 0 | 0 | met |" in markdown
    cpu = report["cpu"]
    assert cpu["wall"] > 0 and cpu["load generator"] > 0  # the clients ran in this process
    assert "CPU over the measured" in markdown and "steal" in markdown
