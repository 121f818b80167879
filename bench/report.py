"""The benchmark report: the host it ran on, the totals and summary figures of a run, the JSON
and Markdown files, and re-rendering a saved report."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

from comparisons import ONLINE_PATH
from limits import extrapolate_limits
from measure import DAILY, INCREMENTAL, PARENT, WEEKLY, Bench
from render import render_markdown
from scaling import fit_exponent
from targets import evaluate_targets

from traitflow.formatting import dumps


def git_commit() -> str:
    """The repository's short HEAD commit, ``-dirty`` with uncommitted changes to tracked files."""
    try:
        root = Path(__file__).resolve().parent.parent
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def host_info(imports_s: float) -> dict[str, Any]:
    """The machine and code a run measured (``loadavg_end`` is added when the run ends)."""
    return {
        "imports_s": imports_s,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "commit": git_commit(),
        "loadavg_start": loadavg(),
    }


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _refit_total(bench: Bench, weekly: dict[str, Any]) -> dict[str, Any]:
    """The weekly total with ``nmf_refit`` in place of ``nmf_fit`` (empty without a refit stage)."""
    if not weekly or "nmf_refit" not in bench.results or "nmf_fit" not in bench.results:
        return {}
    fit, refit = bench.results["nmf_fit"], bench.results["nmf_refit"]
    others = [bench.results[n] for n in weekly["stages"] if n != "nmf_fit"]
    return {
        "stages": [s.name for s in others] + ["nmf_refit"],
        "wall_s": weekly["wall_s"] - fit.wall_s + refit.wall_s,
        "cpu_s": weekly["cpu_s"] - fit.cpu_s + refit.cpu_s,
        "peak_rss_mib": max([refit.peak_rss_mib] + [s.peak_rss_mib for s in others]),
    }


def _paired_ratio(bench: Bench, name: str, reference: str, kind: str) -> float | None:
    """Median over repeats of ``name`` / ``reference``, each pair measured back to back (robust
    against the background load drifting between repeats)."""
    if name not in bench.results or reference not in bench.results:
        return None
    ours, theirs = getattr(bench.results[name], kind), getattr(bench.results[reference], kind)
    return float(statistics.median(a / b for a, b in zip(ours, theirs, strict=False) if b > 0))


def _incremental_summary(totals: dict[str, Any], incremental: dict[str, Any] | None) -> dict[str, Any]:
    """The incremental retrain's figures the targets are judged on (None where not measured)."""
    group = totals.get("weekly_incremental") or {}
    hit = (incremental or {}).get("next_item_hit@10") or {}
    lift = (incremental or {}).get("profile_lift") or {}
    return {
        "weekly_incremental_wall_s": group.get("wall_s"),
        "weekly_incremental_peak_rss_gib": group["peak_rss_mib"] / 1024 if group else None,
        "incremental_hit_rate_ratio": hit.get("ratio"),
        "incremental_profile_lift_ratio": lift.get("ratio"),
        "incremental_trait_ids_kept": incremental["trait_ids_kept"] if incremental else None,
        "incremental_drift_vs_threshold": incremental["drift"]["vs_threshold"] if incremental else None,
    }


def _summary(
    bench: Bench, totals: dict[str, Any], latency: dict | None, base: dict | None, scaling: dict | None
) -> dict[str, Any]:
    """The figures the targets are judged on (the incremental ones: ``_incremental_summary``)."""
    weekly, weekly_refit, daily = (
        totals["weekly_retrain"],
        totals["weekly_retrain_refit"],
        totals["daily_run"],
    )
    persist = base.get("with_persistence") if base else None
    return {
        "weekly_retrain_wall_s": weekly.get("wall_s"),
        # The stages the recorded M reference timed: it predates the trait_products stage.
        "weekly_retrain_reference_stages_wall_s": weekly["wall_s"]
        - (bench.results["trait_products"].wall_s if "trait_products" in bench.results else 0.0)
        if weekly
        else None,
        "weekly_retrain_peak_rss_gib": weekly["peak_rss_mib"] / 1024 if weekly else None,
        "weekly_retrain_refit_wall_s": weekly_refit.get("wall_s"),
        "daily_run_wall_s": daily.get("wall_s"),
        "single_customer_p50_ms_batch_path": next(iter(latency["paths"].values()))["p50_ms"]
        if latency
        else None,
        "single_customer_p50_ms": latency["paths"][ONLINE_PATH]["p50_ms"] if latency else None,
        "agg_proj_speedup": base["speedup"] if base else None,
        "agg_proj_persist_speedup": persist["speedup"] if persist else None,
        "item2vec_s": bench.results["item2vec"].wall_s if "item2vec" in bench.results else None,
        "gensim_s": bench.results["gensim_standalone"].wall_s
        if "gensim_standalone" in bench.results
        else None,
        "item2vec_overhead": _paired_ratio(bench, "item2vec", "gensim_standalone", "walls"),
        "item2vec_overhead_cpu": _paired_ratio(bench, "item2vec", "gensim_standalone", "cpus"),
        "scaling_exponent": scaling["exponent"] if scaling else None,
        "scaling_exponent_cpu": scaling["exponent_cpu"] if scaling else None,
    }


def build_report(
    bench: Bench,
    *,
    head: dict[str, Any],
    latency: dict[str, Any] | None,
    base: dict[str, Any] | None,
    scaling: dict[str, Any] | None,
    tail: dict[str, Any],
    incremental: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The report of a run: ``head`` (tier, started_at, command, host, workload, config) first,
    then the stages, totals, summary and side measurements (``limits``: extrapolated from the
    scaling points; ``incremental``: ``incremental_stages.compare_with_full``), ``tail`` (hooks,
    Postgres run id) and the targets last."""
    weekly = bench.group_total(WEEKLY)
    totals = {
        "weekly_retrain": weekly,
        "weekly_retrain_refit": _refit_total(bench, weekly),
        "daily_run": bench.group_total(DAILY),
        "weekly_incremental": bench.group_total(INCREMENTAL),
        "parent": bench.group_total(PARENT),
    }
    report: dict[str, Any] = {
        **head,
        "stages": [s.to_dict() for s in bench.results.values()],
        "stage_walls": {name: s.wall_s for name, s in bench.results.items()},
        "totals": totals,
        "summary": {
            **_summary(bench, totals, latency, base, scaling),
            **_incremental_summary(totals, incremental),
        },
        "baseline": base,
        "latency": latency,
        "scaling": scaling,
        "limits": extrapolate_limits(scaling, head["host"].get("rss_after_imports_mib", 0.0))
        if scaling
        else None,
        "incremental": incremental,
        "process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "profiles": sorted(bench.profiles),
        "unlisted_pipeline_stages_wall_s": dict(bench.unlisted_wall_s),
        **tail,
    }
    report["targets"] = evaluate_targets(report)
    return report


def write_report(report: dict[str, Any], base_path: Path) -> dict[str, str]:
    """Write ``<base_path>.json`` and ``.md`` (rendered from the JSON as written); their paths."""
    text = dumps(report, indent=2)
    json_path, markdown_path = base_path.with_suffix(".json"), base_path.with_suffix(".md")
    json_path.write_text(text)
    markdown_path.write_text(render_markdown(json.loads(text)))
    return {"json": str(json_path), "markdown": str(markdown_path)}


def rerender(path: Path) -> str:
    """Re-render a saved JSON report (targets re-evaluated, CPU scaling exponent filled in for
    reports written before it existed); writes the .md next to it and returns the text."""
    report = json.loads(path.read_text())
    scaling = report.get("scaling")
    if scaling and scaling.get("exponent_cpu") is None:
        points = scaling["points"]
        scaling["exponent_cpu"] = fit_exponent(
            [p["events"] for p in points], [p["retrain_cpu_s"] for p in points]
        )
    report["summary"]["scaling_exponent_cpu"] = scaling["exponent_cpu"] if scaling else None
    report["targets"] = evaluate_targets(report)
    path.write_text(dumps(report, indent=2))
    text = render_markdown(report)
    path.with_suffix(".md").write_text(text)
    return text


def spec_dict(spec: Any) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in spec.__dict__.items()}
