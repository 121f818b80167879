"""``traitflow report``: a self-contained HTML file with the charts drawn, the trait table and the
evaluation's product ranking, from a real store."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from traitflow.html_report import gather, render
from traitflow.store import Store

PNG = b"\x89PNG\r\n\x1a\n"


def _publish_two_days(store: Store, build_model: Callable, build_profile_batch: Callable) -> None:
    model = build_model()
    customers = [f"c{i}" for i in range(40)]
    batch = build_profile_batch(None, customers)
    version = store.publish(model, batch)
    later = build_profile_batch(version, customers[:25], as_of=batch.as_of + timedelta(days=1), seed=1)
    store.write_profiles(later)


def _images(document: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([^"]+)"', document)]


def test_the_report_draws_every_chart_and_lists_the_traits(
    store: Store, build_model: Callable, build_profile_batch: Callable
) -> None:
    _publish_two_days(store, build_model, build_profile_batch)
    document = render(gather(store))
    images = _images(document)
    # sizes, sizes over time, model versions, customer map
    assert len(images) == 4
    assert all(image.startswith(PNG) and len(image) > 5_000 for image in images)
    for trait_id in (3, 7, 11):
        assert f"<td>{trait_id}</td>" in document
    assert "trait 3 ✨ &quot;quoted&quot;, {braces}" in document  # labels escaped, not dropped
    shares = [float(share) for share in re.findall(r"<td class=num>([0-9.]+)%</td>", document)]
    assert len(shares) == 3 and abs(sum(shares) - 100) < 0.2  # all 40 customers, each once
    assert not re.search(r"""(?:src|href)=["']?https?://""", document)  # nothing fetched on open


def test_an_empty_store_says_what_to_do_first(store: Store) -> None:
    document = render(gather(store))
    assert "No promoted model yet" in document
    assert _images(document) == []


def test_the_cli_writes_the_file_with_the_evaluation(
    store: Store,
    cli: Callable[..., tuple[int, str, str]],
    tmp_path: Path,
    build_model: Callable,
    build_profile_batch: Callable,
) -> None:
    _publish_two_days(store, build_model, build_profile_batch)
    evaluation = tmp_path / "evaluation.json"
    methods = {"profile": {"hit@10": 0.7}, "popularity": {"hit@10": 0.5}}
    evaluation.write_text(
        json.dumps(
            {
                "product_ranking": {
                    "methods": methods,
                    "methods_ci95": {"profile": {"hit@10": [0.65, 0.75]}},
                    "profile_lift_vs_popularity": {"hit@10": 1.4},
                    "profile_lift_vs_popularity_ci95": {"hit@10": [1.3, 1.5]},
                }
            }
        )
    )
    out = tmp_path / "out" / "report.html"
    code, stdout, _ = cli("report", "--out", str(out), "--evaluation", str(evaluation))
    assert code == 0 and str(out) in stdout
    document = out.read_text()
    assert "Product ranking: all products" in document
    assert "1.40 [1.300, 1.500]" in document and "[0.650, 0.750]" in document
    code, _, stderr = cli("report", "--out", str(out), "--evaluation", str(tmp_path / "missing.json"))
    assert code == 2 and "missing.json does not exist" in stderr
