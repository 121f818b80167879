"""The benchmark harness (bench/run.py and its modules) at smoke size, in-process, so that it cannot rot.

Checks structure only (every stage ran and took time, the report renders, hooks run); never
timings, which depend on the machine and its load.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path

import psycopg
import pytest

from traitflow.config import PipelineConfig

BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"

PIPELINE_STAGES = {"corpus", "item2vec", "aggregation", "nmf_fit", "labels", "projection"}
EXPECTED_STAGES = PIPELINE_STAGES | {
    "load",
    "gensim_standalone",
    "daily_select",
    "daily_profile",
    "tf_aggregation",
    "tf_projection",
    "seed_aggregation",
    "seed_projection",
}
POSTGRES_STAGES = {
    "pg_ingest",
    "pg_read_events",
    "pg_save_model",
    "pg_promote",
    "pg_daily_read",
    "pg_daily_write",
    "tf_write",
    "seed_insert",
}


@pytest.fixture(scope="module")
def bench_run():
    sys.path.insert(0, str(BENCH_DIR))
    try:
        return importlib.import_module("run")
    finally:
        sys.path.remove(str(BENCH_DIR))


@pytest.fixture(scope="module")
def smoke_report(bench_run, tmp_path_factory, database_url):
    tmp = tmp_path_factory.mktemp("bench")
    calls: dict[str, int] = {}

    def hook(name: str):
        def fn(ctx) -> int:
            batch = {"weekly": ctx.weekly_batch, "daily": ctx.daily_batch}.get(name)
            rows = len(batch.customer_ids) if batch is not None else len(ctx.baseline_rows["customer_ids"])
            calls.setdefault(name, rows)  # the main run comes first; scaling slices follow
            return rows

        return fn

    hooks = [
        bench_run.StageHook("write_weekly", "weekly", hook("weekly")),
        bench_run.StageHook("write_daily", "daily", hook("daily")),
        bench_run.StageHook("seed_count", "baseline", hook("baseline")),
    ]
    report = bench_run.run_bench(
        bench_run.Options(
            tier="smoke",
            results_dir=tmp / "results",
            cache_dir=tmp / "cache",
            latency_customers=20,
            # Structure, not speed: a cheaper model keeps the test at a few seconds.
            config=PipelineConfig.from_mapping({"epochs": 2, "nmf_max_iter": 50, "k": 4}),
            scaling=True,
            hooks=hooks,
            database_url=database_url,
        )
    )
    return report, calls, tmp


def test_every_stage_ran_and_took_time(smoke_report):
    report, _, tmp = smoke_report
    saved = json.loads(Path(report["paths"]["json"]).read_text())
    assert Path(report["paths"]["json"]).parent == tmp / "results"
    stages = {s["name"]: s for s in saved["stages"]}
    hooks = {"write_weekly", "write_daily", "seed_count"}
    assert EXPECTED_STAGES | POSTGRES_STAGES | hooks | {"nmf_refit"} == set(stages)
    for stage in stages.values():
        assert stage["wall_s"] > 0, stage["name"]
        assert stage["cpu_s"] >= 0, stage["name"]
        assert stage["peak_rss_mib"] > 0, stage["name"]
    assert stages["corpus"]["n_units"] == saved["workload"]["events"]
    assert saved["totals"]["weekly_retrain"]["wall_s"] > 0
    weekly = {"write_weekly", "pg_read_events", "pg_save_model", "pg_promote"} | PIPELINE_STAGES
    assert weekly == set(saved["totals"]["weekly_retrain"]["stages"])
    assert saved["totals"]["daily_run"]["stages"] == [
        "pg_daily_read",
        "daily_select",
        "daily_profile",
        "write_daily",
        "pg_daily_write",
    ]
    if "nmf_refit" in stages:  # the library's warm-started refit: the weekly total's other path
        refit_total = saved["totals"]["weekly_retrain_refit"]
        assert "nmf_refit" in refit_total["stages"] and "nmf_fit" not in refit_total["stages"]


def test_comparisons_latency_and_scaling_are_filled(smoke_report, bench_run):
    report, _, _ = smoke_report
    summary = report["summary"]
    for key in ("item2vec_overhead", "agg_proj_speedup", "single_customer_p50_ms"):
        assert summary[key] is not None and summary[key] > 0, key
    # At smoke sizes fixed costs dominate: the fitted exponent can be anything, even negative.
    assert math.isfinite(summary["scaling_exponent"]) and math.isfinite(summary["scaling_exponent_cpu"])
    # The online single-customer path must agree with the batch library path it is compared with.
    assert report["latency"]["online_vs_library_max_abs_diff"] < 1e-4
    points = report["scaling"]["points"]
    assert len(points) == 3 and points[-1]["reused_main_run"]
    assert all(p["retrain_wall_s"] > 0 for p in points)
    assert [t["key"] for t in report["targets"]] == [t.key for t in sys.modules["targets"].TARGETS]


def test_hooks_receive_the_batches(smoke_report):
    report, calls, _ = smoke_report
    assert calls["weekly"] == report["workload"]["customers"]
    assert 0 < calls["daily"] <= calls["weekly"]
    assert calls["baseline"] == report["baseline"]["customers"]
    assert list(report["baseline"]["writes"]) == ["seed_insert"]  # hooks with compare_with only


def test_postgres_stages_wrote_what_the_pipeline_produced(smoke_report, database_url):
    report, calls, _ = smoke_report
    stages = {s["name"]: s for s in report["stages"]}
    events, customers = report["workload"]["events"], report["workload"]["customers"]
    assert stages["pg_ingest"]["n_units"] == events
    assert stages["pg_read_events"]["n_units"] == events  # read back what was ingested
    assert stages["pg_promote"]["n_units"] == customers
    assert stages["pg_daily_write"]["n_units"] == calls["daily"]
    assert stages["pg_daily_read"]["n_units"] >= calls["daily"]  # whole histories of the day's customers
    baseline = report["baseline"]
    assert stages["tf_write"]["n_units"] == stages["seed_insert"]["n_units"] == baseline["customers"]
    persist = baseline["with_persistence"]
    assert persist["write_stages"] == ["tf_write", "seed_insert"]
    assert persist["speedup"] == pytest.approx(persist["seed_s"] / persist["traitflow_s"])
    assert report["summary"]["agg_proj_persist_speedup"] == persist["speedup"]
    # Every scaling point ran the Postgres stages of the weekly retrain too.
    for point in report["scaling"]["points"]:
        assert {"pg_read_events", "pg_save_model", "pg_promote"} <= set(point["stages_wall_s"])
    # The throw-away schemas are gone.
    with psycopg.connect(database_url) as conn:
        left = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (f"bench_{report['postgres_run_id']}%",)
        ).fetchall()
    assert left == []


def test_markdown_renders_from_the_saved_json(smoke_report, bench_run):
    report, _, _ = smoke_report
    saved = json.loads(Path(report["paths"]["json"]).read_text())
    text = bench_run.render_markdown(saved)
    assert text == Path(report["paths"]["markdown"]).read_text()
    for heading in ("## Stages", "## Comparisons", "## Single-customer", "## Scaling", "## Targets"):
        assert heading in text
    for stage in EXPECTED_STAGES:
        assert f"| {stage} |" in text


def test_cache_is_reused(bench_run, smoke_report):
    _, _, tmp = smoke_report
    workloads = sys.modules["workloads"]
    spec = workloads.TIERS["smoke"].spec
    events, hit = workloads.synthetic_events(spec, tmp / "cache")
    assert hit and len(events) > 0
