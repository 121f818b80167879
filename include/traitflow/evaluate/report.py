"""An evaluation report as text (``format_report``) and as JSON (``write_json``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from traitflow.formatting import dumps, format_cell, text_table


def _cell(value: Any, digits: int = 3) -> str:
    """``formatting.format_cell``, except integers (trait ids, k) as they are: labels, no
    thousands separators."""
    if isinstance(value, int | np.integer):
        return str(value)
    return format_cell(value, digits)


def _ranking_lines(section: dict[str, Any]) -> list[str]:
    """Methods x metrics with 95% intervals, then the profile's lifts over popularity."""
    metrics = list(next(iter(section["methods"].values())))
    intervals = section.get("methods_ci95", {})

    def cell(method: str, metric: str) -> str:
        value = _cell(section["methods"][method][metric])
        low_high = intervals.get(method, {}).get(metric)
        return f"{value} [{_cell(low_high[0])}, {_cell(low_high[1])}]" if low_high else value

    lines = text_table(
        ["method", *metrics], [[m, *(cell(m, k) for k in metrics)] for m in section["methods"]], cell=_cell
    )
    profile_ci = section.get("profile_lift_vs_popularity_ci95", {})
    lines.append(_lift_line("profile", section["profile_lift_vs_popularity"], profile_ci))
    intervals = section.get("lifts_vs_popularity_ci95", {})
    for method, lift in section.get("lifts_vs_popularity", {}).items():
        lines.append(_lift_line(method, lift, intervals.get(method, {})))
    method = section.get("profile_method")
    if method and method["name"] == "traits_x_similarity":
        lines.append(
            f"  profile: the traits' mixture tilted by the Item2Vec similarity (weight "
            f"{_cell(method['similarity_weight'], 2)}); profile_traits: the mixture alone"
        )
    return lines


def _lift_line(method: str, lift: dict[str, float], intervals: dict[str, list[float]]) -> str:
    """``"  <method> vs popularity: hit@5 x1.23 [1.10, 1.35], ..."``."""
    return f"  {method} vs popularity: " + ", ".join(
        f"{m} x{_cell(v, 2)}"
        + (f" [{_cell(intervals[m][0], 2)}, {_cell(intervals[m][1], 2)}]" if m in intervals else "")
        for m, v in lift.items()
    )


def _header_lines(report: dict[str, Any]) -> list[str]:
    split = report.get("split", {})
    lines = [f"Traitflow evaluation -- split at {split.get('at')} ({split.get('method', 'given')})"]
    if "n_history_events" in split:
        lines.append(
            f"  history: {split['n_history_events']} events, {split['n_history_customers']} customers; "
            f"after the split: {split['n_future_events']} events, {split['n_future_customers']} customers"
        )
    model = report.get("model")
    if model:
        lines.append(
            f"  model: k={model['k']}, {model['n_tokens']} tokens x {model['vector_size']} dims, "
            f"{model['n_training_customers']} training customers, "
            f"NMF reconstruction error {_cell(model['reconstruction_error'])}"
        )
        lines += [f"  trait {t['trait_id']}: {t['label']}" for t in model.get("traits", [])]
    return lines


def _category_lines(report: dict[str, Any]) -> list[str]:
    ranking = report.get("category_ranking") or {}
    if "skipped" in ranking:
        return ["", f"Category ranking: skipped ({ranking['skipped']})"]
    if not ranking:
        return [""]
    target = "purchases" if ranking["target"] == "purchase" else "carts + purchases (too few purchases)"
    return [
        "",
        f"Category ranking: {ranking['n_customers']} customers with history and {target} after the "
        f"split; {ranking['n_categories']} categories, "
        f"{_cell(ranking['mean_relevant_categories'], 2)} bought per customer",
        *_ranking_lines(ranking),
    ]


def _product_lines(report: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for key, title in (
        ("product_ranking", "Product ranking (all products)"),
        ("product_ranking_new", "Product ranking (products new to the customer)"),
    ):
        section = report.get(key)
        if not section:
            continue
        lines.append("")
        if "skipped" in section:
            lines.append(f"{title}: skipped ({section['skipped']})")
            continue
        lines.append(
            f"{title}: {section['n_customers']} customers with history and "
            f"{'/'.join(section['target_actions'])} after the split; {section['n_products']} products, "
            f"{_cell(section['mean_relevant_products'], 2)} targets per customer"
        )
        lines += _ranking_lines(section)
    return lines


def _next_item_and_segment_lines(report: dict[str, Any]) -> list[str]:
    next_item = report.get("next_item") or {}
    lines = [""]
    if "skipped" in next_item:
        lines.append(f"Item2Vec next-item: skipped ({next_item['skipped']})")
    elif next_item:
        lines.append(
            f"Item2Vec next-item hit rate@10 on post-split sessions: {_cell(next_item['hit_rate@10'])} "
            f"(10 most frequent tokens: {_cell(next_item['popular_tokens_hit_rate@10'])}; "
            f"{next_item['n_pairs']} pairs, coverage {_cell(next_item['coverage'])})"
        )
    segments = report.get("segments")
    if segments:
        lines.append(
            f"Planted segments: silhouette {_cell(segments['silhouette'])}, dominant-trait ARI "
            f"{_cell(segments['ari_dominant_trait'])} ({segments['n_customers']} customers, "
            f"{segments['n_segments']} segments)"
        )
    return lines


def _purity_lines(report: dict[str, Any]) -> list[str]:
    purity = report.get("purity")
    if not purity:
        return []
    if "skipped" in purity:
        return [f"Trait purity: skipped ({purity['skipped']})"]
    return [
        "",
        f"Trait purity (top {purity['top_n']} products in one category): mean {_cell(purity['mean'])}",
        *text_table(
            ["trait", "purity", "top category", "label"],
            [[t["trait_id"], t["purity"], t["top_category"], t["label"]] for t in purity["traits"]],
            cell=_cell,
        ),
    ]


def _stability_lines(report: dict[str, Any]) -> list[str]:
    stab = report.get("stability")
    if not stab:
        return []
    if "skipped" in stab:
        return ["", f"Stability: skipped ({stab['skipped']})"]
    return [
        "",
        f"Stability across a retrain (seed {stab['seed']}, window through "
        f"{stab['retrained_through']}, {stab['n_new_events']} new events): "
        f"{stab['n_matched']}/{stab['n_traits']} trait ids kept, {stab['n_matched_at_0.9']} with "
        f"similarity >= 0.9 (lowest {_cell(stab['min_similarity'])})",
        f"  {stab['n_customers_without_new_events']} customers without new events: mean L1 change "
        f"{_cell(stab['mean_l1'])} (p90 {_cell(stab['p90_l1'])}), "
        f"mean cosine {_cell(stab['mean_cosine'])}, "
        f"same dominant trait {_cell(stab['same_dominant_trait'])}",
    ]


def _k_selection_lines(report: dict[str, Any]) -> list[str]:
    selection = report.get("k_selection")
    if not selection:
        return []
    columns = ["k", "reconstruction_error", "purity", "silhouette", "hit@10"]
    columns += ["product_hit@10", "product_ndcg@10"]
    present = [c for c in columns if any(c in row for row in selection)]
    return [
        "",
        "Choice of k (same tokens, NMF refitted per k):",
        *text_table(present, [[row.get(c) for c in present] for row in selection], cell=_cell),
    ]


def format_report(report: dict[str, Any]) -> str:
    """A readable text rendering of an ``evaluate`` / ``evaluate_model`` report."""
    lines = [
        *_header_lines(report),
        *_category_lines(report),
        *_product_lines(report),
        *_next_item_and_segment_lines(report),
        *_purity_lines(report),
        *_stability_lines(report),
        *_k_selection_lines(report),
    ]
    return "\n".join(lines)


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    """Write ``report`` as JSON (``formatting.dumps``: NaN as null), UTF-8."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(report, indent=2), encoding="utf-8")
    return path
