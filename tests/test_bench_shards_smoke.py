"""bench/bench_shards.py at smoke size, in-process (the shard tasks in spawned processes): the
structure of its result and the identical tables of every shard count, never timings."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from traitflow.config import PipelineConfig

BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"
SMALL = PipelineConfig.from_mapping({"k": 4, "vector_size": 16, "epochs": 2, "workers": 1})


@pytest.fixture
def bench_shards(monkeypatch):
    # Kept on sys.path for the test: the spawned shard processes import the module by name.
    monkeypatch.syspath_prepend(str(BENCH_DIR))
    return importlib.import_module("bench_shards")


def _schemas(url: str, prefix: str) -> list[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (prefix.replace("_", r"\_") + "%",)
        ).fetchall()
    return [r[0] for r in rows]


def test_shard_counts_run_in_parallel_processes_and_write_identical_tables(bench_shards, database_url):
    import workloads

    events, _ = workloads.synthetic_events(workloads.TIERS["smoke"].spec)
    result = bench_shards.measure_shards(events, [1, 3], database_url, SMALL)
    assert result["checksums_equal"] and [r["n_shards"] for r in result["runs"]] == [1, 3]
    customers = result["runs"][0]["weekly_shards"]["rows"]
    day = result["runs"][0]["daily_shards"]["rows"]
    assert 0 < day < customers <= result["n_customers"]
    for run in result["runs"]:
        n = run["n_shards"]
        weekly, daily = run["weekly_shards"], run["daily_shards"]
        assert sorted(s["shard"] for s in weekly["shards"]) == list(range(n))
        assert len(daily["shards"]) == n
        assert weekly["rows"] == run["promote"]["rows"] == customers
        assert daily["rows"] == run["daily_commit"]["rows"] == run["daily_select"]["rows"] == day
        assert all(s["peak_rss_mib"] > 0 and s["job_wall_s"] > 0 for s in weekly["shards"] + daily["shards"])
        assert run["checksums"] == result["runs"][0]["checksums"]
        assert run["weekly_total"]["speedup_vs_1"] > 0 and "speedup_vs_1" in daily
    assert result["runs"][0]["daily_shards"]["speedup_vs_1"] == pytest.approx(1.0)
    assert "| 3 | daily_shards |" in bench_shards.render(result)
    assert _schemas(database_url, result["schema_prefix"]) == []  # dropped


def test_different_tables_fail_loudly(bench_shards):
    runs = [
        {"n_shards": 1, "checksums": {"customer_profiles": "a"}},
        {"n_shards": 2, "checksums": {"customer_profiles": "b"}},
    ]
    with pytest.raises(bench_shards.ShardChecksumError, match="N=2"):
        bench_shards.check_checksums(runs)
