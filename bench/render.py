"""The benchmark report as Markdown (from the report dict, or the JSON ``run_bench`` writes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from traitflow.formatting import text_table

_TOTALS = (
    ("**weekly retrain (sum)**", "weekly_retrain"),
    ("**weekly retrain, refit path (sum)**", "weekly_retrain_refit"),
    ("**daily run (sum)**", "daily_run"),
    ("**parent: full retrain of the week before (sum)**", "parent"),
    ("**weekly retrain, incremental (sum)**", "weekly_incremental"),
)


def _fmt(value: Any, digits: int = 3) -> str:
    """A cell: three significant digits, fewer decimals from 100 on, thousands separators."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0:
            return "0"
        magnitude = abs(value)
        if magnitude >= 1000:
            return f"{value:,.0f}"
        if magnitude >= 100:
            return f"{value:.1f}"
        return f"{value:.{digits}g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    return text_table(header, rows, style="markdown", cell=_fmt)


def _limit(target: dict[str, Any]) -> str:
    if target["op"] == "between":
        return f"{target['limit'][0]} to {target['limit'][1]}"
    return f"{target['op']} {target['limit']}"


def _heading(report: dict[str, Any]) -> list[str]:
    w, host = report["workload"], report["host"]
    return [
        f"# Traitflow benchmark: tier {report['tier']}",
        "",
        f"{w['events']:,} events, {w['customers']:,} customers, {w['products']:,} products "
        f"({w['source']}); {report['started_at']}; commit {host['commit']}; "
        f"{host['cpus']} CPUs; load average at start/end "
        f"{host['loadavg_start']} / {host.get('loadavg_end')}.",
        "",
    ]


def _stages(report: dict[str, Any]) -> list[str]:
    rows: list[list[Any]] = []
    for s in report["stages"]:
        throughput = s["throughput_per_s"]
        rate = f"{_fmt(throughput)} {s['units']}/s" if throughput else "-"
        wall = _fmt(s["wall_s"]) + (f" (median of {s['repeats']})" if s["repeats"] > 1 else "")
        rows.append(
            [
                s["name"],
                s["group"],
                wall,
                s["cpu_s"],
                s["cpu_per_wall"],
                s["peak_rss_mib"],
                s["rss_growth_mib"],
                rate,
            ]
        )
    for label, key in _TOTALS:
        total = report["totals"].get(key)
        if total:
            cpu_per_wall = total["cpu_s"] / total["wall_s"]
            rows.append(
                [label, "", total["wall_s"], total["cpu_s"], cpu_per_wall, total["peak_rss_mib"], "", ""]
            )
    header = ["stage", "group", "wall s", "CPU s", "CPU/wall", "peak RSS MiB", "RSS growth MiB", "throughput"]
    return [
        "## Stages",
        "",
        *_table(header, rows),
        "",
        f"Process peak RSS (ru_maxrss): {_fmt(report['process_peak_rss_mib'])} MiB.",
        "",
    ]


def _baseline_rows(report: dict[str, Any], base: dict[str, Any]) -> list[list[Any]]:
    walls = report["stage_walls"]
    rows: list[list[Any]] = [
        [
            f"aggregation + projection vs seed-literal ({base['events']:,} events, "
            f"{base['customers']:,} customers)",
            base["traitflow_s"],
            base["seed_s"],
            f"{base['speedup']:.1f}x faster (CPU time {base['speedup_cpu']:.1f}x)",
        ],
        [
            "  aggregation only",
            walls.get("tf_aggregation"),
            walls.get("seed_aggregation"),
            f"{base['aggregation_speedup']:.1f}x faster",
        ],
        [
            "  projection only",
            walls.get("tf_projection"),
            walls.get("seed_projection"),
            f"{base['projection_speedup']:.1f}x faster",
        ],
    ]
    persist = base.get("with_persistence")
    if persist:
        rows.append(
            [
                "aggregation + projection + persistence vs seed-literal",
                persist["traitflow_s"],
                persist["seed_s"],
                f"{persist['speedup']:.1f}x faster",
            ]
        )
    for name, write in base.get("writes", {}).items():
        rows.append(
            [
                f"writes: {write['vs']} vs {name}",
                write["traitflow_s"],
                write["seed_s"],
                f"{write['seed_s'] / write['traitflow_s']:.1f}x faster",
            ]
        )
    return rows


def _comparisons(report: dict[str, Any]) -> list[str]:
    rows: list[list[Any]] = []
    summary = report["summary"]
    if summary.get("item2vec_overhead") is not None:
        rows.append(
            [
                "Item2Vec: pipeline vs standalone gensim",
                summary["item2vec_s"],
                summary["gensim_s"],
                f"{summary['item2vec_overhead']:.3f}x (pipeline / gensim, median of paired runs; "
                f"CPU time {summary['item2vec_overhead_cpu']:.3f}x)",
            ]
        )
    base = report.get("baseline")
    if base:
        rows += _baseline_rows(report, base)
    if not rows:
        return []
    return ["## Comparisons", "", *_table(["comparison", "Traitflow s", "reference s", "ratio"], rows), ""]


def _latency(report: dict[str, Any]) -> list[str]:
    latency = report.get("latency")
    if not latency:
        return []
    rows = [
        [name, p["n"], p["p50_ms"], p["p95_ms"], p["p99_ms"], p["mean_ms"]]
        for name, p in latency["paths"].items()
    ]
    return [
        f"## Single-customer profile latency ({latency['customers']:,} customers, median "
        f"{_fmt(latency['events_per_customer_median'])} events each; online vs library max abs "
        f"diff {latency['online_vs_library_max_abs_diff']:.1e})",
        "",
        *_table(["path", "n", "p50 ms", "p95 ms", "p99 ms", "mean ms"], rows),
        "",
    ]


def _scaling(report: dict[str, Any]) -> list[str]:
    scaling = report.get("scaling")
    if not scaling:
        return []
    stage_names = list(scaling["stage_exponents"])
    header = ["events", "customers", "retrain wall s", "CPU s", "peak RSS MiB"]
    header += [f"{s} s" for s in stage_names] + ["NMF iterations"]
    rows = [
        [
            p["events"],
            p["customers"],
            p["retrain_wall_s"],
            p["retrain_cpu_s"],
            p["peak_rss_mib"],
            *[p["stages_wall_s"].get(s) for s in stage_names],
            p.get("nmf_n_iter"),
        ]
        for p in scaling["points"]
    ]
    per_stage = ", ".join(f"{s} {_fmt(b)}" for s, b in scaling["stage_exponents"].items())
    return [
        "## Scaling (full retrain on customer slices)",
        "",
        *_table(header, rows),
        "",
        f"Fitted exponent (log-log least squares): retrain wall {_fmt(scaling['exponent'])}, "
        f"CPU {_fmt(scaling.get('exponent_cpu'))}; per stage (wall): {per_stage}.",
        "",
    ]


def _interval(values: Sequence[float] | None) -> str:
    return f"[{_fmt(values[0])}, {_fmt(values[1])}]" if values else "-"


def _incremental(report: dict[str, Any]) -> list[str]:
    inc = report.get("incremental")
    if not inc:
        return []
    hit, lift, drift = inc["next_item_hit@10"], inc["profile_lift"], inc["drift"]
    totals = report["totals"]
    full_s, inc_s = totals["weekly_retrain"].get("wall_s"), totals["weekly_incremental"].get("wall_s")
    rows: list[list[Any]] = [
        ["weekly retrain wall s", full_s, inc_s, f"{inc_s / full_s:.3f}x" if full_s and inc_s else "-"],
        [
            "  of which trait_products",
            report["stage_walls"].get("trait_products"),
            report["stage_walls"].get("inc_trait_products"),
            "",
        ],
        [
            f"next-item hit@10 ({hit['n_pairs']:,} held-out pairs)",
            hit["full"],
            hit["incremental"],
            f"{_fmt(hit['ratio'])}x, 95% {_interval(hit['ratio_ci95'])}",
        ],
    ]
    if "skipped" in lift:
        rows.append(["profile lift over popularity (hit@10)", "-", "-", f"not measured: {lift['skipped']}"])
    else:
        lifts = lift["lift_hit@10"]
        full, incremental, parent = lifts["full"], lifts["incremental"], lifts["parent"]
        rows.append(
            [
                f"profile lift over popularity, hit@10 ({lift['n_customers']:,} customers, "
                f"target {lift['target']} in the week; 95% bootstrap)",
                f"{_fmt(full['lift'])} {_interval(full['ci95'])}",
                f"{_fmt(incremental['lift'])} {_interval(incremental['ci95'])}",
                f"{_fmt(lift['ratio'])}x, 95% {_interval(lift['ratio_ci95'])} "
                f"(parent, out of time: {_fmt(parent['lift'])} "
                f"{_interval(parent['ci95'])})",
            ]
        )
    rows.append(
        [
            "drift from the parent after alignment (weighted mean)",
            drift["full_retrain_weighted_mean"],
            drift["weighted_mean"],
            "-",
        ]
    )
    rows.append(
        [
            "recent-weighted drift (what the increment's refit decision compares)",
            "-",
            drift["recent_weighted"],
            f"threshold {_fmt(drift['threshold'])}",
        ]
    )
    rows.append(["trait ids of the parent kept", "-", inc["trait_ids_kept"], f"of {inc['n_parent_traits']}"])
    increment = inc["increment"]
    return [
        "## Incremental vs full weekly retrain (same week)",
        "",
        f"Plan: {inc['plan']}. Traits: {inc['refit_reason']}. Increment: {increment['n_sessions']:,} "
        f"sessions, {increment['n_words']:,} tokens, {increment['n_new_tokens']:,} new tokens, "
        f"{increment['epochs']} epochs.",
        "",
        *_table(["measure", "full", "incremental", "comparison"], rows),
        "",
    ]


def _limits(report: dict[str, Any]) -> list[str]:
    limits = report.get("limits")
    if not limits:
        return []
    rows = [
        [r["what"], r["budget"], r["exponent"], r["at_largest"], r["limit_events"]] for r in limits["rows"]
    ]
    first = limits["first"]
    verdict = (
        f"First limit beyond {limits['largest_events']:,} events: {first['what']} ({first['budget']}) "
        f"at about {first['limit_events']:,.0f} events."
        if first
        else f"No stage reaches its budget below {1e13:.0e} events."
    )
    return [
        "## Limits (extrapolated from the scaling points)",
        "",
        *_table(["stage", "budget", "exponent", "at largest size", "reaches budget at events"], rows),
        "",
        verdict,
        "",
    ]


def _targets(report: dict[str, Any]) -> list[str]:
    rows = [[t["target"], _limit(t), t["value"], t["status"]] for t in report["targets"]]
    return ["## Targets", "", *_table(["target", "limit", "measured", "status"], rows), ""]


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables (works on the JSON written by ``run_bench``)."""
    sections = (_heading, _stages, _comparisons, _incremental, _latency, _scaling, _limits, _targets)
    return "\n".join(line for section in sections for line in section(report))
