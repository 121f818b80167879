"""The chart endpoints (``/api/charts``) and the API docs, on a real PostgreSQL: two promoted
models and a rejected one, profiles at three times. Auth is overridden (``client``);
test_traitflow_plugin.py tests it through Airflow's own app."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from traitflow.projection import trait_map

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

TRAITS = (3, 7, 11)
D1, D2, D3 = (datetime(2024, 1, d, tzinfo=UTC) for d in (7, 8, 14))
# Dominant trait of each customer at D1 (first model), D2 (a daily update of c1 and c2) and D3
# (the second model, everyone).
AT_D1 = {"c1": 3, "c2": 3, "c3": 7, "c4": 11, "c5": 3, "c6": 7}
AT_D2 = {"c1": 7, "c2": 11}
AT_D3 = {"c1": 7, "c2": 3, "c3": 7, "c4": 7, "c5": 3, "c6": 11}


@dataclass(frozen=True)
class Charted:
    first: int
    second: int
    rejected: int
    second_model: Any


def _profiles(dominant: dict[str, int]) -> np.ndarray:
    rows = []
    for i, trait in enumerate(dominant.values()):
        row = np.full(len(TRAITS), 0.1 + 0.01 * i)  # no two customers alike: the map spreads them
        row[TRAITS.index(trait)] = 0.7
        rows.append(row / row.sum())
    return np.array(rows)


def _batch(build_profile_batch: Any, version: int, dominant: dict[str, int], as_of: datetime) -> Any:
    return build_profile_batch(version, list(dominant), profiles=_profiles(dominant), as_of=as_of)


@pytest.fixture
def charted(empty_db: Any, build_model: Any, build_profile_batch: Any) -> Charted:
    store = empty_db
    first_model = build_model(trained_through=D1)
    first_model.metrics = {
        "quality_gate": {
            "passed": True, "baseline": "popularity", "candidate_hit_rate": 0.4, "popularity_hit_rate": 0.25,
            "margin": 0.02,
        }
    }  # fmt: skip
    first = store.save_model(first_model)
    store.promote(first, profiles=_batch(build_profile_batch, first, AT_D1, D1))
    store.write_profiles(_batch(build_profile_batch, first, AT_D2, D2))
    second_model = build_model(seed=1, trained_through=D3)
    second_model.metrics = {
        "quality_gate": {
            "passed": True, "baseline": "active", "candidate_hit_rate": 0.42, "active_hit_rate": 0.4,
            "margin": 0.02,
        }
    }  # fmt: skip
    second = store.save_model(second_model)
    store.update_model_metadata(second, drift={"measured": True, "weighted_mean_drift": 0.07})
    store.promote(second, profiles=_batch(build_profile_batch, second, AT_D3, D3))
    rejected_model = build_model(seed=2, trained_through=D3)
    rejected_model.metrics = {
        "quality_gate": {
            "passed": False, "baseline": "active", "candidate_hit_rate": 0.3, "active_hit_rate": 0.42,
            "margin": 0.02,
        }
    }  # fmt: skip
    rejected = store.save_model(rejected_model)
    store.reject_model(rejected, "hit rate clearly below the active model")
    return Charted(first, second, rejected, second_model)


def _sizes(*snapshots: dict[str, int]) -> dict[int, list[int]]:
    """Per trait, its size in each snapshot of the customers' newest profiles."""
    state: dict[str, int] = {}
    sizes: dict[int, list[int]] = {t: [] for t in TRAITS}
    for snapshot in snapshots:
        state.update(snapshot)
        for trait in TRAITS:
            sizes[trait].append(sum(1 for t in state.values() if t == trait))
    return sizes


def test_chart_routes_are_registered(plugin: ModuleType) -> None:
    paths = {route.path for route in plugin.app.routes}
    assert {"/api/charts/trait-sizes", "/api/charts/model-quality", "/api/charts/trait-map", "/docs"} <= paths
    assert "/redoc" not in paths  # it would load ReDoc from a CDN


def test_trait_sizes_over_time(client: TestClient, charted: Charted) -> None:
    response = client.get("/api/charts/trait-sizes")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert [datetime.fromisoformat(t) for t in body["times"]] == [D1, D2, D3]
    expected = _sizes(AT_D1, AT_D2, AT_D3)
    assert {t["trait_id"]: t["sizes"] for t in body["traits"]} == expected
    assert expected == {3: [3, 1, 2], 7: [2, 3, 3], 11: [1, 2, 1]}  # the fixture's story, spelled out
    labels = dict(zip(TRAITS, charted.second_model.traits.labels, strict=True))
    assert all(t["label"] == labels[t["trait_id"]] for t in body["traits"])

    newest = client.get("/api/charts/trait-sizes", params={"times": 1}).json()
    assert [datetime.fromisoformat(t) for t in newest["times"]] == [D3]
    assert {t["trait_id"]: t["sizes"] for t in newest["traits"]} == {3: [2], 7: [3], 11: [1]}
    assert client.get("/api/charts/trait-sizes", params={"times": 0}).status_code == 422
    assert client.get("/api/charts/trait-sizes", params={"times": 366}).status_code == 422


def test_model_quality_with_thresholds(client: TestClient, charted: Charted) -> None:
    response = client.get("/api/charts/model-quality")
    assert response.status_code == 200, response.text
    first, second, rejected = response.json()["models"]
    assert [m["model_version"] for m in (first, second, rejected)] == [
        charted.first,
        charted.second,
        charted.rejected,
    ]
    assert [m["status"] for m in (first, second, rejected)] == ["retired", "active", "rejected"]
    assert first["baseline"] == "popularity"
    assert (first["hit_rate"], first["baseline_hit_rate"], first["drift"]) == (0.4, 0.25, None)
    assert (second["hit_rate"], second["baseline_hit_rate"], second["drift"]) == (0.42, 0.4, 0.07)
    assert (rejected["passed"], rejected["hit_rate"], rejected["baseline_hit_rate"]) == (False, 0.3, 0.42)
    threshold = charted.second_model.config.triggers.drift_threshold
    assert {m["drift_threshold"] for m in (first, second, rejected)} == {threshold}
    assert {m["quality_margin"] for m in (first, second, rejected)} == {0.02}


def test_model_quality_shows_both_drifts_with_the_threshold_of_the_mode(
    client: TestClient, empty_db: Any, save_drifted_versions: Any
) -> None:
    saved = save_drifted_versions(empty_db)
    response = client.get("/api/charts/model-quality")
    assert response.status_code == 200, response.text
    models = response.json()["models"]
    shown = {
        m["model_version"]: (m["drift"], m["recent_weighted_drift"], m["drift_threshold"], m["refit_on"])
        for m in models
    }
    assert shown == saved.expected
    assert [m["training_mode"] for m in models] == ["full", "incremental"]


def test_trait_map_of_a_deterministic_sample(client: TestClient, charted: Charted) -> None:
    response = client.get("/api/charts/trait-map", params={"n": 4})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model_version"], body["n_profiled"]) == (charted.second, len(AT_D3))
    assert [(t["trait_id"], t["label"]) for t in body["traits"]] == list(
        zip(TRAITS, charted.second_model.traits.labels, strict=True)
    )
    points = body["points"]
    assert len(points) == 4
    assert all(p["dominant_trait_id"] == AT_D3[p["customer_id"]] for p in points)
    assert client.get("/api/charts/trait-map", params={"n": 4}).json() == body  # same sample, same map

    # The coordinates are traitflow.projection.trait_map of the sampled profiles.
    profiles = dict(zip(AT_D3, _profiles(AT_D3), strict=True))
    projected = trait_map(np.array([profiles[p["customer_id"]] for p in points]))
    np.testing.assert_allclose([[p["x"], p["y"]] for p in points], projected.coordinates, atol=1e-5)
    np.testing.assert_allclose([[t["x"], t["y"]] for t in body["traits"]], projected.trait_axes, atol=1e-5)
    assert body["explained"] == pytest.approx(projected.explained.tolist())

    everyone = client.get("/api/charts/trait-map").json()
    assert sorted(p["customer_id"] for p in everyone["points"]) == sorted(AT_D3)
    older = client.get("/api/charts/trait-map", params={"model_version": charted.first}).json()
    assert (older["model_version"], older["points"]) == (charted.first, [])  # nobody is on it any more
    assert client.get("/api/charts/trait-map", params={"model_version": 999}).status_code == 404
    assert client.get("/api/charts/trait-map", params={"n": 0}).status_code == 422


def test_charts_of_an_empty_database(client: TestClient, empty_db: Any) -> None:
    assert client.get("/api/charts/trait-sizes").json() == {"times": [], "traits": []}
    assert client.get("/api/charts/model-quality").json() == {"models": []}
    response = client.get("/api/charts/trait-map")
    assert response.status_code == 404
    assert "no active model" in response.json()["detail"]


# External resources: none. The page's CSP would block them, and the plugin runs on closed networks.
EXTERNAL = re.compile(
    r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?(?:https?:)?//""", re.I
)


def test_api_docs_are_served_without_a_cdn(client: TestClient, empty_db: Any) -> None:
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert '"static/vendor/swagger-ui/swagger-ui-bundle.js"' in docs.text
    assert '"static/vendor/swagger-ui/swagger-ui.css"' in docs.text
    assert "url: 'openapi.json'" in docs.text  # relative: the docs work under any base_url
    for asset in ("swagger-ui/swagger-ui-bundle.js", "swagger-ui/swagger-ui.css", "chart.js/chart.umd.js"):
        assert client.get(f"/static/vendor/{asset}").status_code == 200, asset
    assert client.get("/openapi.json").json()["paths"]["/api/charts/trait-map"]
    assert client.get("/redoc").status_code == 404


def test_no_page_references_an_external_url(client: TestClient, empty_db: Any) -> None:
    pages = {
        path: client.get(path)
        for path in ("/", "/docs", "/static/app.css", "/static/app.js", "/static/charts.js")
    }
    for path, response in pages.items():
        assert response.status_code == 200, path
        assert not EXTERNAL.search(response.text), (path, EXTERNAL.search(response.text))
        assert "http://" not in response.text and "https://" not in response.text, path
    assert '<script src="static/vendor/chart.js/chart.umd.js" defer></script>' in pages["/"].text
    # The pattern itself catches what it must.
    for html in (
        '<script src="https://cdn.example/x.js">',
        "<link href='//cdn.example/a.css'>",
        "url(http://x)",
    ):
        assert EXTERNAL.search(html), html


def test_the_page_has_a_canvas_for_every_chart(client: TestClient, empty_db: Any) -> None:
    page = client.get("/").text
    charts_js = client.get("/static/charts.js").text
    for canvas in (
        "chart-sizes",
        "chart-size-history",
        "chart-quality",
        "chart-drift",
        "chart-profile",
        "chart-map",
    ):
        assert f'<canvas id="{canvas}"' in page, canvas
        assert f'draw("{canvas}"' in charts_js, canvas
    # Chart.js before the scripts that use it (deferred scripts run in document order).
    assert (
        page.index("vendor/chart.js/chart.umd.js")
        < page.index("static/charts.js")
        < page.index("static/app.js")
    )


def test_the_report_summary_reads_the_weekly_steps_the_chain_stores(
    client: TestClient, empty_db: Any
) -> None:
    """app.js summarizes a weekly report by the DAG's task ids (``chains.WEEKLY_STEPS``)."""
    from traitflow.chains import WEEKLY_STEPS

    script = client.get("/static/app.js").text
    found = re.search(r"const WEEKLY_DECISIONS = \[([^\]]*)\]", script)
    assert found is not None
    decisions = re.findall(r'"(\w+)"', found.group(1))
    assert decisions == ["check_new_vocab", "quality_gate", "check_drift"]
    outcomes = set(re.findall(r"report\.(\w+)", script[script.index("function weeklyOutcome") :][:400]))
    assert outcomes == {"promote", "reject_candidate", "skip_retrain"}
    assert set(decisions) | outcomes <= set(WEEKLY_STEPS)
