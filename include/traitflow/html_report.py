"""``traitflow report``: one self-contained HTML file for people who never open Airflow.

The same views as the Traits page, drawn as static images with matplotlib and embedded in the
file (base64 PNG): trait sizes with shares, trait sizes over time, held-out quality and drift
across model versions with their thresholds, and a 2-D map of a sample of customers coloured by
dominant trait; then the trait table (labels, sizes, top products) and, when given, the product
ranking of an evaluation report (``traitflow evaluate --json-out``). Reads through the Store only;
nothing in the file is fetched from anywhere when it is opened.
"""

from __future__ import annotations

import base64
import html
import io
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from traitflow import __version__
from traitflow.projection import trait_map

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from traitflow.store import Store
    from traitflow.store.serving import ModelQuality, ProfileSample, TraitSizeHistory

# One colour per trait position, so a trait keeps its colour across the charts of a report.
_PALETTE = (
    "#f58231", "#e6194b", "#ff9aa2", "#3cb44b", "#ffe119", "#9a6324",
    "#4363d8", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c", "#008080",
    "#e6beff", "#800000", "#aaffc3", "#808000",
)  # fmt: skip
_MAP_SAMPLE = 500


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows, read once.

    traits : ``Store.traits()`` of the active model (one row per trait: trait_id, label,
        top_products, top_categories, size)
    sizes : trait sizes at the newest profile times
    quality : held-out quality and drift per model version, oldest first
    sample : current profiles of a deterministic customer sample (None without a model)
    evaluation : a ``traitflow evaluate`` JSON report, when one was given
    """

    generated_at: datetime
    traits: pd.DataFrame
    sizes: TraitSizeHistory
    quality: list[ModelQuality]
    sample: ProfileSample | None
    evaluation: dict[str, Any] | None


def gather(store: Store, evaluation: Path | None = None, max_times: int = 90) -> ReportData:
    """Read the report's data from ``store`` (and the evaluation JSON file, if given)."""
    active = store.active_model_version()
    return ReportData(
        generated_at=datetime.now(UTC),
        traits=store.traits() if active is not None else pd.DataFrame(),
        sizes=store.trait_size_history(max_times),
        quality=store.model_quality(),
        sample=store.profile_sample(limit=_MAP_SAMPLE) if active is not None else None,
        evaluation=json.loads(evaluation.read_text()) if evaluation is not None else None,
    )


def write_report(store: Store, path: Path, evaluation: Path | None = None) -> Path:
    """Write the HTML report of ``store``'s active model to ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(gather(store, evaluation)), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------ charts


def _figure(draw: Callable[[Axes], None], width: float = 7.0, height: float = 3.6) -> str:
    """``draw`` on a fresh figure -> an ``<img>`` with the PNG inline."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display backend

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    draw(figure.add_subplot())
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # A label character the font lacks (an emoji in a product name) is drawn as a box.
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        figure.savefig(buffer, format="png")
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="chart" src="data:image/png;base64,{encoded}">'


def _name(trait_id: int, label: Any) -> str:
    return f"{trait_id} · {label}" if label else str(trait_id)


def _colour(position: int) -> str:
    return _PALETTE[position % len(_PALETTE)]


def _trait_sizes_chart(traits: pd.DataFrame) -> str:
    total = max(int(traits["size"].sum()), 1)

    def draw(ax: Axes) -> None:
        names = [_name(t, label) for t, label in zip(traits["trait_id"], traits["label"], strict=True)]
        y = np.arange(len(traits))[::-1]
        ax.barh(y, traits["size"], color=[_colour(i) for i in range(len(traits))])
        for row, size in zip(y, traits["size"], strict=True):
            ax.annotate(f" {size / total:.1%}", (size, row), va="center", fontsize=8)
        ax.set_yticks(y, names, fontsize=8)
        ax.set_xlabel("customers (dominant trait)")
        ax.set_title("Trait sizes and shares", fontsize=10)

    return _figure(draw, height=max(2.5, 0.3 * len(traits) + 1))


def _sizes_over_time_chart(sizes: TraitSizeHistory) -> str:
    def draw(ax: Axes) -> None:
        times = pd.DatetimeIndex(sizes.times).tz_convert("UTC").tz_localize(None).to_numpy()
        stacks = [series.sizes for series in sizes.series]
        labels = [_name(series.trait_id, series.label) for series in sizes.series]
        colours = [_colour(i) for i in range(len(stacks))]
        ax.stackplot(times, *stacks, labels=labels, colors=colours, alpha=0.8)
        ax.set_ylabel("customers")
        ax.set_title("Trait sizes over time (dominant trait of each customer's newest profile)", fontsize=10)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside, not over, the areas
        ax.tick_params(axis="x", labelsize=8, rotation=30)

    return _figure(draw)


def _quality_chart(quality: list[ModelQuality]) -> str:
    def draw(ax: Axes) -> None:
        x = np.arange(len(quality))
        hit = [q.hit_rate if q.hit_rate is not None else np.nan for q in quality]
        floor = [
            q.baseline_hit_rate - q.quality_margin
            if q.baseline_hit_rate is not None and q.quality_margin is not None
            else np.nan
            for q in quality
        ]
        # The figure each version's refit decision compared with its threshold.
        compared = [
            q.recent_weighted_drift if q.refit_on == "recent_weighted_drift" else q.drift for q in quality
        ]
        drift = [value if value is not None else np.nan for value in compared]
        threshold = [q.drift_threshold if q.drift_threshold is not None else np.nan for q in quality]
        ax.bar(x - 0.2, hit, width=0.4, color="#4363d8", label="held-out hit@10")
        ax.scatter(x - 0.2, floor, marker="_", s=400, color="#e6194b", label="gate: baseline - margin")
        ax.bar(x + 0.2, drift, width=0.4, color="#f58231", label="drift (recent-weighted for an increment)")
        ax.scatter(
            x + 0.2, threshold, marker="_", s=400, color="black", label="refit threshold (of the mode)"
        )
        ax.set_xticks(x, [f"v{q.model_version} ({q.status})" for q in quality], fontsize=8)
        ax.set_title("Quality gate and drift per model version", fontsize=10)
        ax.legend(fontsize=7)

    return _figure(draw)


def _map_chart(sample: ProfileSample) -> str:
    projected = trait_map(sample.profiles)

    def draw(ax: Axes) -> None:
        for position, (trait_id, label) in enumerate(zip(sample.trait_ids, sample.labels, strict=True)):
            mine = sample.dominant_trait_ids == trait_id
            points = projected.coordinates[mine]
            ax.scatter(points[:, 0], points[:, 1], s=8, color=_colour(position), label=_name(trait_id, label))
            pure_x, pure_y = projected.trait_axes[position]
            ax.scatter(pure_x, pure_y, marker="^", s=60, color=_colour(position), edgecolor="k")
        share = projected.explained
        ax.set_xlabel(f"component 1 ({share[0]:.0%} of the variance)")
        ax.set_ylabel(f"component 2 ({share[1]:.0%})")
        ax.set_title(
            f"{len(sample.customer_ids)} customers by dominant trait (triangles: pure traits)", fontsize=10
        )
        ax.legend(fontsize=7, markerscale=2, loc="upper left", bbox_to_anchor=(1.01, 1))

    return _figure(draw, height=4.5)


# -------------------------------------------------------------------------------------- html


def _traits_table(traits: pd.DataFrame) -> str:
    total = max(int(traits["size"].sum()), 1)
    rows = []
    for row in traits.to_dict("records"):
        size, products = int(row["size"]), ", ".join(map(str, list(row["top_products"])[:5]))
        rows.append(
            f"<tr><td>{int(row['trait_id'])}</td><td>{html.escape(str(row['label'] or ''))}</td>"
            f"<td class=num>{size:,}</td><td class=num>{size / total:.1%}</td>"
            f"<td>{html.escape(products)}</td></tr>"
        )
    return (
        "<table><tr><th>trait</th><th>label</th><th>customers</th><th>share</th>"
        f"<th>top products</th></tr>{''.join(rows)}</table>"
    )


def _interval(value: Any) -> str:
    return f"[{value[0]:.3f}, {value[1]:.3f}]" if isinstance(value, list) and len(value) == 2 else ""


def _evaluation_section(evaluation: dict[str, Any]) -> str:
    parts = []
    for key, title in (
        ("product_ranking", "all products"),
        ("product_ranking_new", "products new to the customer"),
    ):
        section = evaluation.get(key)
        if not isinstance(section, dict) or not section.get("methods"):
            continue
        intervals = section.get("methods_ci95", {})
        rows = "".join(
            f"<tr><td>{html.escape(method)}</td><td class=num>{metrics.get('hit@10', float('nan')):.3f}</td>"
            f"<td>{_interval(intervals.get(method, {}).get('hit@10'))}</td></tr>"
            for method, metrics in section["methods"].items()
        )
        lift = section.get("profile_lift_vs_popularity", {}).get("hit@10")
        lift_ci = _interval(section.get("profile_lift_vs_popularity_ci95", {}).get("hit@10"))
        lift_text = f"<p>Profile lift over popularity (hit@10): {lift:.2f} {lift_ci}</p>" if lift else ""
        parts.append(
            f"<h3>Product ranking: {title}</h3><table><tr><th>method</th><th>hit@10</th>"
            f"<th>95% interval</th></tr>{rows}</table>{lift_text}"
        )
    if not parts:
        return "<p>The evaluation report has no product ranking.</p>"
    return "".join(parts)


_STYLE = (
    "body{font-family:sans-serif;max-width:60rem;margin:2rem auto;color:#222}"
    "table{border-collapse:collapse;margin:1rem 0}td,th{border-bottom:1px solid #ddd;padding:.25rem .6rem;"
    "text-align:left;font-size:.9rem}td.num{text-align:right}img{max-width:100%}"
    ".muted{color:#666;font-size:.85rem}"
)


def render(data: ReportData) -> str:
    """The report as one HTML document (charts inline)."""
    stamp = f"{data.generated_at:%Y-%m-%d %H:%M} UTC · traitflow {__version__}"
    sections = [f"<h1>Traitflow report</h1><p class=muted>{stamp}</p>"]
    if data.traits.empty:
        sections.append(
            "<p>No promoted model yet: run the weekly retrain (or <code>traitflow retrain</code>) first.</p>"
        )
    else:
        version = int(data.traits["model_version"].iloc[0])
        sections += [
            f"<h2>Traits of the active model (version {version})</h2>",
            _trait_sizes_chart(data.traits),
            _traits_table(data.traits),
        ]
    if data.sizes.times:
        sections += ["<h2>Over time</h2>", _sizes_over_time_chart(data.sizes)]
    if data.quality:
        sections += ["<h2>Model versions</h2>", _quality_chart(data.quality)]
    if data.sample is not None and len(data.sample.customer_ids) >= 2:
        sections += ["<h2>Customers in trait space</h2>", _map_chart(data.sample)]
    if data.evaluation is not None:
        sections += ["<h2>Evaluation</h2>", _evaluation_section(data.evaluation)]
    body = "\n".join(sections)
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>Traitflow report</title>"
        f"<style>{_STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )
