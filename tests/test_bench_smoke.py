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

PIPELINE_STAGES = {"corpus", "item2vec", "aggregation", "nmf_fit", "labels", "trait_products", "projection"}
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
# The incremental weekly retrain (bench/incremental_stages.py): its parent, then the update.
PARENT_STAGES = {
    "parent_pg_read_events",
    "parent_corpus",
    "parent_item2vec",
    "parent_aggregate",
    "parent_nmf",
    "parent_labels",
    "parent_trait_products",
    "parent_pg_save_model",
}
INCREMENTAL_STAGES = {
    "inc_pg_read_events",
    "inc_corpus",
    "inc_item2vec",
    "inc_drift",
    "inc_align",
    "inc_aggregate",
    "inc_labels",
    "inc_trait_products",
    "inc_project",
    "inc_write_weekly",
    "inc_pg_save_model",
    "inc_pg_promote",
}
# Traits kept (drift below the increment's threshold) or refitted and matched to the parent's.
TRAIT_STAGES = {False: {"inc_carry_over"}, True: {"inc_nmf", "inc_match"}}
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


# Structure, not speed: a cheaper model keeps the test at a few seconds.
SMOKE_CONFIG = PipelineConfig.from_mapping({"epochs": 2, "nmf_max_iter": 50, "k": 4})


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
            config=SMOKE_CONFIG,
            scaling=True,
            incremental=True,
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
    incremental = PARENT_STAGES | INCREMENTAL_STAGES | TRAIT_STAGES[saved["incremental"]["refit"]]
    assert EXPECTED_STAGES | POSTGRES_STAGES | hooks | {"nmf_refit"} | incremental == set(stages)
    for stage in stages.values():
        assert stage["wall_s"] > 0, stage["name"]
        assert stage["cpu_s"] >= 0, stage["name"]
        assert stage["peak_rss_mib"] > 0, stage["name"]
    assert stages["corpus"]["n_units"] == saved["workload"]["events"]
    assert saved["unlisted_pipeline_stages_wall_s"] == {}  # every stage of the retrain is a bench stage
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
    headings = ("## Stages", "## Comparisons", "## Incremental vs full", "## Single-customer", "## Scaling")
    for heading in (*headings, "## Limits", "## Targets"):
        assert heading in text
    for stage in EXPECTED_STAGES:
        assert f"| {stage} |" in text


def test_cache_is_reused(bench_run, smoke_report):
    _, _, tmp = smoke_report
    workloads = sys.modules["workloads"]
    spec = workloads.TIERS["smoke"].spec
    events, hit = workloads.synthetic_events(spec, tmp / "cache")
    assert hit and len(events) > 0


def test_incremental_retrain_is_measured_beside_the_full_one(smoke_report):
    report, _, _ = smoke_report
    stages = {s["name"]: s for s in report["stages"]}
    totals = report["totals"]
    refit = report["incremental"]["refit"]
    assert set(totals["parent"]["stages"]) == PARENT_STAGES
    assert set(totals["weekly_incremental"]["stages"]) == INCREMENTAL_STAGES | TRAIT_STAGES[refit]
    assert report["summary"]["weekly_incremental_wall_s"] == pytest.approx(
        totals["weekly_incremental"]["wall_s"]
    )
    assert totals["weekly_incremental"]["wall_s"] > 0 and totals["parent"]["wall_s"] > 0
    events, customers = report["workload"]["events"], report["workload"]["customers"]
    # The parent reads the window minus its last week; the update reads all of it and promotes
    # a profile for every customer, as the full retrain does.
    assert 0 < stages["parent_pg_read_events"]["n_units"] < events
    assert stages["inc_pg_read_events"]["n_units"] == events
    assert stages["inc_pg_promote"]["n_units"] == stages["pg_promote"]["n_units"] == customers


def test_incremental_comparison_holds_real_figures(smoke_report):
    report, _, _ = smoke_report
    inc, summary = report["incremental"], report["summary"]
    config = SMOKE_CONFIG
    assert inc["plan"].startswith("continue v")  # plan_training chose the incremental path
    assert (
        inc["increment"]["n_sessions"] > 0 and inc["increment"]["epochs"] == config.increment.increment_epochs
    )
    hit = inc["next_item_hit@10"]
    assert hit["n_pairs"] > 0 and 0 < hit["full"] <= 1 and 0 <= hit["incremental"] <= 1
    assert hit["ratio"] == pytest.approx(hit["incremental"] / hit["full"])
    assert hit["ratio_ci95"][0] <= hit["ratio"] <= hit["ratio_ci95"][1]
    assert summary["incremental_hit_rate_ratio"] == hit["ratio"]
    lift = inc["profile_lift"]
    assert set(lift["lift_hit@10"]) == {"full", "incremental", "parent"} and lift["n_customers"] >= 20
    for measured in lift["lift_hit@10"].values():
        assert measured["ci95"][0] <= measured["lift"] <= measured["ci95"][1]
    lifts = lift["lift_hit@10"]
    # Same customers, same popularity: the paired ratio is the ratio of the two lifts.
    assert lift["ratio"] == pytest.approx(lifts["incremental"]["lift"] / lifts["full"]["lift"])
    assert lift["ratio_ci95"][0] <= lift["ratio"] <= lift["ratio_ci95"][1]
    drift = inc["drift"]
    assert drift["threshold"] == config.increment.increment_drift_threshold
    assert drift["vs_threshold"] == pytest.approx(drift["recent_weighted"] / drift["threshold"])
    assert inc["refit"] == (drift["recent_weighted"] > drift["threshold"])
    assert 0 <= inc["trait_ids_kept"] <= 1 and inc["n_parent_traits"] == config.traits.n_traits
    if not inc["refit"]:  # components carried over: every trait keeps its id
        assert inc["trait_ids_kept"] == 1.0
    keys = {t["key"] for t in report["targets"] if t["status"] != "not measured"}
    assert {"incremental_hit_rate_ratio", "incremental_trait_ids_kept", "weekly_incremental_wall_s"} <= keys


def test_limits_are_extrapolated_from_the_scaling_points(smoke_report):
    report, _, _ = smoke_report
    limits, points = report["limits"], report["scaling"]["points"]
    assert all(p["daily_wall_s"] > 0 for p in points)  # the daily run is measured at every size
    largest = max(points, key=lambda p: p["events"])
    rows = {r["what"]: r for r in limits["rows"]}
    expected = set(largest["stages_wall_s"]) | set(largest["daily_stages_wall_s"])
    expected |= {"weekly retrain (sum)", "daily run (sum)"}
    expected |= {f"{name} peak RSS" for name in largest["stages_peak_rss_mib"]}
    assert set(rows) == expected
    reached = [r["limit_events"] for r in limits["rows"] if r["limit_events"] is not None]
    assert reached == sorted(reached) and all(n >= limits["largest_events"] for n in reached)
    assert limits["first"]["limit_events"] == reached[0]
    assert rows["weekly retrain (sum)"]["at_largest"] == pytest.approx(sum(largest["stages_wall_s"].values()))


def test_limit_crossing_of_known_power_laws(bench_run):
    limits = sys.modules["limits"]
    sizes = [1e3, 1e4, 1e5]
    # Stage "a" grows linearly (1 ms per event: 900 s at 9e5), "b" quadratically and is the first.
    point = {
        "stages_wall_s": {},
        "daily_stages_wall_s": {},
        "stages_peak_rss_mib": {},
        "stages_rss_growth_mib": {},
    }
    points = []
    for n in sizes:
        walls = {"a": 1e-3 * n, "b": 1e-8 * n * n}
        # Stage "c": 1,100 MiB resident at the largest size, 100 of them before any workload.
        rss = {"stages_peak_rss_mib": {"c": 100 + 1e-2 * n}, "stages_rss_growth_mib": {"c": 0.0}}
        points.append({**point, **rss, "events": n, "stages_wall_s": walls})
    result = limits.extrapolate_limits({"points": points}, fixed_rss_mib=100.0)
    rows = {r["what"]: r for r in result["rows"]}
    assert rows["a"]["exponent"] == pytest.approx(1.0)
    assert rows["a"]["limit_events"] == pytest.approx(9e5, rel=1e-6)
    assert rows["b"]["limit_events"] == pytest.approx(3e5, rel=1e-6)
    # The sum crosses where 1e-3 n + 1e-8 n^2 = 900.
    total = rows["weekly retrain (sum)"]["limit_events"]
    assert 1e-3 * total + 1e-8 * total**2 == pytest.approx(900.0, rel=1e-6)
    assert result["first"]["what"] == "weekly retrain (sum)"
    # The resident memory beyond the fixed 100 MiB grows with the events: 16 GiB at 1.6284M.
    assert rows["c peak RSS"]["limit_events"] == pytest.approx((16 * 1024 - 100) / 1e-2, rel=1e-6)
    assert limits.crossing(lambda n: 1.0, 2.0, 1.0) is None  # never reaches the budget


def test_incremental_flag_and_l_tier(bench_run):
    parser = bench_run.build_parser()
    assert parser.parse_args(["--tier", "L", "--incremental"]).incremental
    assert not parser.parse_args([]).incremental
    tier = sys.modules["workloads"].TIERS["L"]
    assert (tier.spec.n_events, tier.spec.n_customers, tier.spec.n_products) == (
        30_000_000,
        3_000_000,
        300_000,
    )
    assert tier.scaling_sizes == (1_000_000, 3_000_000, 10_000_000, 30_000_000)
