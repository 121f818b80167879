"""The Traitflow Airflow plugin: registration, every endpoint on a real PostgreSQL, and auth
through Airflow's own api-server app (SimpleAuthManager JWTs, Bearer header and UI cookie).

The endpoint tests call the plugin's FastAPI app with auth overridden; ``TestAirflowApp`` builds
Airflow's ``create_app(apps="core")`` with this plugin registered and goes through real auth.
"""

from __future__ import annotations

import html
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from traitflow_web.api import DEFAULT_MIN_EVENTS
from traitflow_web.pool import POOL

from traitflow.model import Lineage

if TYPE_CHECKING:  # imported in fixtures, where the Starlette/httpx deprecation is filtered
    from fastapi.testclient import TestClient

PLUGINS_DIR = Path(__file__).resolve().parents[2] / "plugins"
PLUGIN_FILE = PLUGINS_DIR / "traitflow_plugin.py"

TRAITS = (3, 7, 11)
# Hand-made profiles (rows sum to 1) so sizes, rankings and similarities are known exactly.
CUSTOMERS = ["c1", "c2", "c3", "c4", "c5", "c6", 'Zoë "7" ü']
PROFILES = np.array(
    [
        [0.70, 0.20, 0.10],  # dominant 3
        [0.10, 0.80, 0.10],  # 7
        [0.60, 0.30, 0.10],  # 3
        [0.20, 0.20, 0.60],  # 11
        [0.90, 0.05, 0.05],  # 3
        [0.65, 0.30, 0.05],  # 3
        [0.30, 0.30, 0.40],  # 11
    ]
)
EVENTS = [40, 12, 25, 7, 60, 30, 9]  # all at or above the default minimum evidence (3 events)
KNOWN_TOKENS = [38, 12, 20, 7, 55, 0, 9]
AS_OF = datetime(2024, 1, 10, tzinfo=UTC)
EARLIER = datetime(2024, 1, 9, tzinfo=UTC)
C1_EARLIER = np.array([[0.10, 0.10, 0.80]])  # c1 on EARLIER: dominant 11


@dataclass
class Seeded:
    active: int
    rejected: int
    model: Any  # the active TraitflowModel
    batch: Any  # the ProfileBatch written with the promotion
    schema: str


@pytest.fixture
def seeded(empty_db: Any, store_schema: str, build_model: Any, build_profile_batch: Any) -> Seeded:
    store = empty_db
    model = build_model(trait_ids=TRAITS)
    model.lineage = Lineage("full")
    active = store.save_model(model)
    batch = build_profile_batch(active, CUSTOMERS, trait_ids=TRAITS, profiles=PROFILES, as_of=AS_OF)
    batch.n_events[:], batch.n_known_tokens[:] = EVENTS, KNOWN_TOKENS
    store.promote(active, profiles=batch)
    store.write_profiles(  # an older profile of c1: history only, the current row stays at AS_OF
        build_profile_batch(active, ["c1"], trait_ids=TRAITS, profiles=C1_EARLIER, as_of=EARLIER)
    )
    store.update_model_metadata(active, drift={"weighted_mean_drift": 0.12, "measured": True})
    candidate = build_model(trait_ids=(3, 7, 12), seed=1, trained_through=datetime(2024, 1, 14, tzinfo=UTC))
    candidate.lineage = Lineage("incremental", active, datetime(2024, 1, 7, tzinfo=UTC))
    rejected = store.save_model(candidate)
    store.reject_model(rejected, "hit rate below the active model")
    store.write_run_report("weekly", "2024-01-07", {"promoted": True, "model_version": active})
    store.write_run_report("daily", "2024-01-09", {"n_profiles": 1, "oov_rate": 0.01})
    store.write_run_report("daily", "2024-01-10", {"n_profiles": 7, "oov_rate": 0.02})
    return Seeded(active=active, rejected=rejected, model=model, batch=batch, schema=store_schema)


# ------------------------------------------------------------------------------ registration


def test_plugin_registers_the_app_and_a_nav_view(plugin: ModuleType) -> None:
    from airflow.api_fastapi.app import RESERVED_URL_PREFIXES
    from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse
    from fastapi import FastAPI

    cls = plugin.TraitflowPlugin
    assert cls.name == "traitflow"
    [entry] = cls.fastapi_apps
    assert entry["app"] is plugin.app and isinstance(entry["app"], FastAPI)
    assert entry["url_prefix"] == "/traitflow"
    assert not any(entry["url_prefix"].startswith(p) for p in RESERVED_URL_PREFIXES)
    paths = {route.path for route in plugin.app.routes}
    assert {
        "/",
        "/api/traits",
        "/api/traits/{trait_id}/top",
        "/api/customers/{customer_id:path}",
        "/api/customers/{customer_id:path}/history",
        "/api/customers/{customer_id:path}/similar",
        "/api/customers/{customer_id:path}/products",
        "/api/models",
        "/api/reports",
        "/api/status",
        "/static",
    } <= paths

    [view] = cls.external_views
    parsed = ExternalViewResponse.model_validate(view)  # the schema /api/v2/plugins serves to the UI
    assert parsed.destination == "nav"
    assert parsed.category == "browse"
    assert parsed.url_route == "traitflow"
    assert parsed.href == "/traitflow/"
    assert parsed.icon == "/traitflow/static/icon.svg"


def test_airflow_plugin_loader_finds_the_plugin(plugin: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow._shared.plugins_manager import _load_plugins_from_plugin_directory

    # The loader re-executes the file and replaces sys.modules["traitflow_plugin"]: restore it.
    monkeypatch.setitem(sys.modules, "traitflow_plugin", plugin)
    plugins, errors = _load_plugins_from_plugin_directory(plugins_folder=str(PLUGINS_DIR))
    assert errors == {}
    assert [p.name for p in plugins] == ["traitflow"]
    assert plugins[0].fastapi_apps[0]["url_prefix"] == "/traitflow"


def test_airflow_plugin_discovery_loads_each_file_once() -> None:
    """Airflow's own discovery (``plugins_manager._get_plugins``) on the repo's plugins folder, in a
    fresh process: exactly one Traitflow plugin, no import errors, and the ``traitflow_web``
    modules imported once each, as the package (``.airflowignore``), never as plugin modules."""
    code = (
        "import json, sys\n"
        "from airflow import plugins_manager\n"
        "from airflow._shared.plugins_manager import PluginsDirectorySource\n"
        "plugins, errors = plugins_manager._get_plugins()\n"
        "from_folder = [(p.name, str(p.source)) for p in plugins"
        " if isinstance(p.source, PluginsDirectorySource)]\n"
        f"folder = {str(PLUGINS_DIR)!r}\n"
        "files = sorted((m.__file__, name) for name, m in list(sys.modules.items())"
        " if (getattr(m, '__file__', None) or '').startswith(folder))\n"
        "print(json.dumps({'plugins': from_folder, 'errors': errors, 'files': files}))\n"
    )
    env = {**os.environ, "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS_DIR)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["plugins"] == [["traitflow", "$PLUGINS_FOLDER/traitflow_plugin.py"]]
    assert result["errors"] == {}
    modules = {Path(file).relative_to(PLUGINS_DIR).as_posix(): name for file, name in result["files"]}
    package = sorted(f"traitflow_web/{p.name}" for p in (PLUGINS_DIR / "traitflow_web").glob("*.py"))
    assert len(package) > 1
    assert sorted(modules) == sorted(["traitflow_plugin.py", *package])  # each file once
    assert modules["traitflow_plugin.py"] == "traitflow_plugin"
    assert all(modules[f].startswith("traitflow_web") for f in package)


def test_import_does_no_database_work_and_stays_light(tmp_path: Path) -> None:
    """Every Airflow process imports plugins: no DB/connection lookup and no numpy/pandas/psycopg."""
    code = (
        "import importlib.machinery, importlib.util, json, sys\n"
        f"loader = importlib.machinery.SourceFileLoader('traitflow_plugin', {str(PLUGIN_FILE)!r})\n"
        "spec = importlib.util.spec_from_loader('traitflow_plugin', loader)\n"
        "mod = importlib.util.module_from_spec(spec); sys.modules['traitflow_plugin'] = mod\n"
        "loader.exec_module(mod)\n"
        "heavy = ['traitflow.store', 'pandas', 'numpy', 'psycopg', 'airflow.api_fastapi.core_api.security']\n"
        "print(json.dumps({'loaded': [m for m in heavy if m in sys.modules],"
        " 'pool_key': sys.modules['traitflow_web.pool'].POOL._key}))\n"
    )
    env = {
        **os.environ,
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS_DIR),  # Airflow puts it on sys.path
        # Unreachable everywhere: an import that touched the database would hang or fail.
        "TRAITFLOW_DATABASE_URL": "postgresql://nobody@192.0.2.1:1/none?connect_timeout=1",
        "AIRFLOW_CONN_TRAITFLOW_DB": "postgresql://nobody@192.0.2.1:1/none",
        "TRAITFLOW_DATA_DIR": str(tmp_path),
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"loaded": [], "pool_key": None}


# -------------------------------------------------------------------------------- endpoints


def test_traits_lists_labels_products_and_sizes(client: TestClient, seeded: Seeded) -> None:
    response = client.get("/api/traits")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["model_version"] == seeded.active
    assert body["n_customers"] == len(CUSTOMERS)
    traits = body["traits"]
    assert [t["trait_id"] for t in traits] == list(TRAITS)
    assert [t["position"] for t in traits] == [1, 2, 3]
    assert [t["label"] for t in traits] == seeded.model.traits.labels
    assert [t["top_products"] for t in traits] == seeded.model.traits.top_products
    assert [t["top_categories"] for t in traits] == seeded.model.traits.top_categories
    assert {t["trait_id"]: t["size"] for t in traits} == {3: 4, 7: 1, 11: 2}
    assert {t["trait_id"]: t["share"] for t in traits} == pytest.approx({3: 4 / 7, 7: 1 / 7, 11: 2 / 7})


def test_traits_of_another_model_version(client: TestClient, seeded: Seeded) -> None:
    body = client.get("/api/traits", params={"model_version": seeded.rejected}).json()
    assert body["model_version"] == seeded.rejected
    assert [t["trait_id"] for t in body["traits"]] == [3, 7, 12]
    assert body["traits"][2]["label"].startswith("trait 12 ")
    assert [t["size"] for t in body["traits"]] == [0, 0, 0]  # nobody is profiled with it
    assert body["n_customers"] == 0
    assert all(t["share"] is None for t in body["traits"])

    missing = client.get("/api/traits", params={"model_version": 999})
    assert missing.status_code == 404
    assert missing.json() == {"detail": "model version 999 does not exist"}
    for bad in ("0", "-1", "abc"):
        response = client.get("/api/traits", params={"model_version": bad})
        assert response.status_code == 422, bad
        assert response.json()["detail"][0]["loc"] == ["query", "model_version"]


def test_top_customers_ordered_by_score(client: TestClient, seeded: Seeded) -> None:
    response = client.get("/api/traits/3/top", params={"n": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["trait_id"] == 3
    assert body["model_version"] == seeded.active
    assert body["label"] == seeded.model.traits.labels[0]
    assert [c["customer_id"] for c in body["customers"]] == ["c5", "c1", "c6"]
    assert [c["rank"] for c in body["customers"]] == [1, 2, 3]
    assert [c["score"] for c in body["customers"]] == pytest.approx([0.90, 0.70, 0.65])
    assert {c["as_of"] for c in body["customers"]} == {"2024-01-10T00:00:00Z"}

    everyone = client.get("/api/traits/3/top").json()["customers"]  # default n=10 > 7 customers
    assert [c["customer_id"] for c in everyone] == ["c5", "c1", "c6", "c3", 'Zoë "7" ü', "c4", "c2"]
    assert client.get("/api/traits/11/top", params={"n": 1}).json()["customers"][0]["customer_id"] == "c4"
    assert client.get("/api/traits/3/top", params={"n": 1000}).status_code == 200


def _write_thin(store: Any, seeded: Seeded, build_profile_batch: Any) -> None:
    """Customer ``thin``: one event, a profile that would top trait 3 and equals c1's neighbour c5."""
    batch = build_profile_batch(
        seeded.active, ["thin"], trait_ids=TRAITS, profiles=PROFILES[4:5], as_of=AS_OF
    )
    batch.n_events[:], batch.n_known_tokens[:], batch.cold_start[:] = 1, 1, "few_tokens"
    store.write_profiles(batch)


def test_top_customers_leave_out_thin_evidence_unless_asked(
    client: TestClient, seeded: Seeded, empty_db: Any, build_profile_batch: Any
) -> None:
    _write_thin(empty_db, seeded, build_profile_batch)
    body = client.get("/api/traits/3/top", params={"n": 2}).json()
    assert body["min_events"] == 3
    assert [c["customer_id"] for c in body["customers"]] == ["c5", "c1"]
    first = body["customers"][0]
    assert (first["n_events"], first["n_known_tokens"], first["cold_start"]) == (60, 55, "few_tokens")
    assert first["confidence"] == pytest.approx(55 / 58)
    everyone = client.get("/api/traits/3/top", params={"n": 2, "min_events": 1}).json()
    assert everyone["min_events"] == 1
    assert [c["customer_id"] for c in everyone["customers"]] == ["c5", "thin"]  # same score: by id
    thin = everyone["customers"][1]
    assert (thin["n_events"], thin["cold_start"]) == (1, "few_tokens")
    assert thin["confidence"] == pytest.approx(1 / 4)
    for bad in (-1, "few"):
        response = client.get("/api/traits/3/top", params={"min_events": bad})
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["query", "min_events"]


def test_similar_customers_leave_out_thin_evidence_unless_asked(
    client: TestClient, seeded: Seeded, empty_db: Any, build_profile_batch: Any
) -> None:
    _write_thin(empty_db, seeded, build_profile_batch)
    default = client.get("/api/customers/c5/similar", params={"n": 10}).json()
    assert default["min_events"] == 3 and "thin" not in [s["customer_id"] for s in default["similar"]]
    everyone = client.get("/api/customers/c5/similar", params={"n": 1, "min_events": 1}).json()
    [nearest] = everyone["similar"]
    assert (nearest["customer_id"], nearest["similarity"]) == ("thin", pytest.approx(1.0))
    assert (nearest["n_events"], nearest["n_known_tokens"], nearest["cold_start"]) == (1, 1, "few_tokens")
    assert client.get("/api/customers/c5/similar", params={"min_events": -1}).status_code == 422


def test_the_default_minimum_evidence_is_the_library_default(plugin: ModuleType) -> None:
    from traitflow.profile_batch import MIN_EVIDENCE_EVENTS

    assert DEFAULT_MIN_EVENTS == MIN_EVIDENCE_EVENTS


def test_top_customers_validation_and_unknown_trait(client: TestClient, seeded: Seeded) -> None:
    for n in (0, -5, 1001, "many"):
        response = client.get("/api/traits/3/top", params={"n": n})
        assert response.status_code == 422, n
        [error] = response.json()["detail"]
        assert error["loc"] == ["query", "n"]
    assert client.get("/api/traits/x/top").status_code == 422
    unknown = client.get("/api/traits/99/top")
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": f"trait 99 does not exist in model {seeded.active}"}


def test_customer_profile_with_labels(client: TestClient, seeded: Seeded) -> None:
    response = client.get("/api/customers/c2")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["customer_id"] == "c2"
    assert body["model_version"] == seeded.active
    assert body["as_of"] == "2024-01-10T00:00:00Z"
    assert body["dominant_trait_id"] == 7
    assert body["dominant_label"] == seeded.model.traits.labels[1]
    assert body["n_events"] == int(seeded.batch.n_events[1])
    assert body["cold_start"] == seeded.batch.cold_start[1]
    assert (body["n_known_tokens"], body["confidence"]) == (12, pytest.approx(12 / 15))
    assert [t["trait_id"] for t in body["traits"]] == list(TRAITS)
    assert [t["label"] for t in body["traits"]] == seeded.model.traits.labels
    assert [t["score"] for t in body["traits"]] == pytest.approx(PROFILES[1].tolist())
    assert body["embedding"] is None

    with_vector = client.get("/api/customers/c2", params={"embedding": "true"}).json()
    assert with_vector["embedding"] == pytest.approx(seeded.batch.embeddings[1].tolist())


def test_customer_ids_are_path_encoded_and_validated(client: TestClient, seeded: Seeded) -> None:
    from urllib.parse import quote

    odd = CUSTOMERS[-1]
    body = client.get(f"/api/customers/{quote(odd, safe='')}").json()
    assert body["customer_id"] == odd
    assert body["dominant_trait_id"] == 11

    unknown = client.get("/api/customers/nobody")
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": "customer 'nobody' has no profile"}
    too_long = client.get("/api/customers/" + "x" * 257)
    assert too_long.status_code == 422
    assert too_long.json()["detail"][0]["loc"] == ["path", "customer_id"]
    # NUL (which PostgreSQL text cannot hold) and other control characters: 422 on every route.
    # (A newline never reaches a route: the router's path pattern stops at it, so that is a 404.)
    for bad in ("c0290\x00", "a\tb", "\x7f", "x\ry"):
        for suffix in ("", "/history", "/similar", "/products"):
            response = client.get(f"/api/customers/{quote(bad, safe='')}{suffix}")
            assert response.status_code == 422, (bad, suffix, response.text)
            assert response.json()["detail"][0]["loc"] == ["path", "customer_id"]


def test_customer_ids_with_slashes_reach_every_customer_route(
    client: TestClient, seeded: Seeded, empty_db: Any, build_profile_batch: Any
) -> None:
    from urllib.parse import quote

    slashed = "shop/42"  # c2's profile: its nearest neighbour is c2, at similarity 1
    empty_db.write_profiles(
        build_profile_batch(seeded.active, [slashed], trait_ids=TRAITS, profiles=PROFILES[1:2], as_of=AS_OF)
    )
    for path in (slashed, quote(slashed, safe="")):
        profile = client.get(f"/api/customers/{path}")
        assert profile.status_code == 200, profile.text
        assert profile.json()["customer_id"] == slashed and profile.json()["dominant_trait_id"] == 7
        history = client.get(f"/api/customers/{path}/history").json()
        assert history["customer_id"] == slashed and len(history["history"]) == 1
        similar = client.get(f"/api/customers/{path}/similar", params={"n": 1}).json()
        assert similar["customer_id"] == slashed
        nearest = [(s["customer_id"], s["similarity"]) for s in similar["similar"]]
        assert nearest == [("c2", pytest.approx(1.0))]
        products = client.get(f"/api/customers/{path}/products", params={"n": 2}).json()
        assert products["customer_id"] == slashed and len(products["products"]) == 2
    assert client.get("/api/customers/shop/43").status_code == 404


def test_customer_history_oldest_first(client: TestClient, seeded: Seeded) -> None:
    body = client.get("/api/customers/c1/history").json()
    assert body["customer_id"] == "c1"
    history = body["history"]
    assert [h["as_of"] for h in history] == ["2024-01-09T00:00:00Z", "2024-01-10T00:00:00Z"]
    assert [h["dominant_trait_id"] for h in history] == [11, 3]
    labels = seeded.model.traits.labels
    assert [h["dominant_label"] for h in history] == [labels[2], labels[0]]
    assert [t["score"] for t in history[0]["traits"]] == pytest.approx(C1_EARLIER[0].tolist())
    assert [t["label"] for t in history[1]["traits"]] == labels

    assert len(client.get("/api/customers/c2/history").json()["history"]) == 1
    missing = client.get("/api/customers/nobody/history")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "customer 'nobody' has no profile history"}


def test_similar_customers_by_cosine(client: TestClient, seeded: Seeded) -> None:
    me = PROFILES[0]
    others = PROFILES[1:]
    cosine = others @ me / (np.linalg.norm(others, axis=1) * np.linalg.norm(me))
    order = np.argsort(-cosine, kind="stable")[:3]
    expected_ids = [CUSTOMERS[1:][i] for i in order]

    response = client.get("/api/customers/c1/similar", params={"n": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["customer_id"] == "c1"
    assert body["model_version"] == seeded.active
    similar = body["similar"]
    assert [s["customer_id"] for s in similar] == expected_ids
    assert [s["similarity"] for s in similar] == pytest.approx(cosine[order].tolist())
    assert [s["rank"] for s in similar] == [1, 2, 3]
    labels = dict(zip(TRAITS, seeded.model.traits.labels, strict=True))
    assert all(s["dominant_label"] == labels[s["dominant_trait_id"]] for s in similar)
    assert "c1" not in [s["customer_id"] for s in client.get("/api/customers/c1/similar").json()["similar"]]

    assert client.get("/api/customers/c1/similar", params={"n": 0}).status_code == 422
    assert client.get("/api/customers/nobody/similar").status_code == 404


def test_customer_products_are_the_served_ranking(client: TestClient, seeded: Seeded) -> None:
    from traitflow_web.api import MAX_PRODUCTS

    from traitflow.model_cache import MODELS
    from traitflow.recommend import MAX_N, build_catalog, rank_products

    assert MAX_PRODUCTS == MAX_N
    expected = rank_products(build_catalog(seeded.model), PROFILES[0], seeded.batch.embeddings[0], 4)
    loads, catalogs = MODELS.loads, MODELS.catalogs_built
    response = client.get("/api/customers/c1/products", params={"n": 4})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["customer_id"] == "c1" and body["model_version"] == seeded.active
    assert body["as_of"] == "2024-01-10T00:00:00Z" and body["new_only"] is False
    assert (body["n_events"], body["n_known_tokens"]) == (EVENTS[0], KNOWN_TOKENS[0])
    assert body["confidence"] == pytest.approx(KNOWN_TOKENS[0] / (KNOWN_TOKENS[0] + 3))
    assert body["cold_start"] == seeded.batch.cold_start[0]
    assert [p["product_id"] for p in body["products"]] == [p.product_id for p in expected]
    assert [p["score"] for p in body["products"]] == pytest.approx([p.score for p in expected])
    assert [p["rank"] for p in body["products"]] == [1, 2, 3, 4]
    assert all(p["name"] is None for p in body["products"])  # no names ingested
    assert not any(p["had_events"] for p in body["products"])  # no events ingested
    # The model and its catalog come from the process's cache: at most one load and one catalog
    # build for any number of requests.
    for _ in range(3):
        assert client.get("/api/customers/c2/products").status_code == 200
    assert MODELS.loads - loads <= 1 and MODELS.catalogs_built - catalogs <= 1
    default = client.get("/api/customers/c2/products").json()
    assert len(default["products"]) == 10

    for bad in (0, MAX_N + 1, "x"):
        assert client.get("/api/customers/c1/products", params={"n": bad}).status_code == 422
    assert client.get("/api/customers/c1/products", params={"new_only": "maybe"}).status_code == 422
    missing = client.get("/api/customers/nobody/products")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "customer 'nobody' has no profile"}


def test_customer_products_new_only_leaves_out_what_the_customer_had(
    client: TestClient, seeded: Seeded, empty_db: Any
) -> None:
    import pandas as pd

    from traitflow.event_schema import empty_rejects

    everything = client.get("/api/customers/c1/products", params={"n": 500}).json()["products"]
    owned = [everything[0]["product_id"], everything[2]["product_id"]]
    events = pd.DataFrame(
        {
            "customer_id": ["c1", "c1"],
            "event_time": pd.to_datetime(["2024-01-05", "2024-01-06"], utc=True),
            "action": ["purchase", "view"],
            "product_id": owned,
            "category": pd.array([None, None], dtype="str"),
            "price": np.nan,
            "session_id": pd.array([None, None], dtype="str"),
        }
    )
    empty_db.ingest_events(SimpleNamespace(events=events, rejects=empty_rejects()), "test-products", "t")
    response = client.get("/api/customers/c1/products", params={"n": 500, "new_only": "true"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["new_only"] is True
    expected = [p["product_id"] for p in everything if p["product_id"] not in owned]
    assert [p["product_id"] for p in body["products"]] == expected
    assert [p["rank"] for p in body["products"]] == list(range(1, len(expected) + 1))
    assert not any(p["had_events"] for p in body["products"])
    # Without new_only the same ranking comes back, the owned products marked.
    marked = client.get("/api/customers/c1/products", params={"n": 500}).json()["products"]
    assert [p["product_id"] for p in marked] == [p["product_id"] for p in everything]
    assert [p["product_id"] for p in marked if p["had_events"]] == owned


def test_customer_products_without_an_active_model(client: TestClient, empty_db: Any) -> None:
    response = client.get("/api/customers/c1/products")
    assert response.status_code == 404
    assert response.json() == {"detail": "there is no active model yet"}


def test_customer_products_of_a_model_without_product_ranking_are_409(
    client: TestClient, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    import traitflow.recommend
    from traitflow.recommend import NoProductRankingError

    def no_ranking(store: Any, version: int) -> Any:
        raise NoProductRankingError(f"model version {version} was saved without trait product distributions")

    monkeypatch.setattr(traitflow.recommend, "load_catalog", no_ranking)
    response = client.get("/api/customers/c1/products")
    assert response.status_code == 409  # the page shows this as a note, not an error
    assert response.json() == {
        "detail": f"model version {seeded.active} was saved without trait product distributions"
    }


def test_models_with_status_metrics_drift_and_trait_match(client: TestClient, seeded: Seeded) -> None:
    body = client.get("/api/models").json()
    assert body["active_model_version"] == seeded.active
    models = body["models"]
    assert [m["model_version"] for m in models] == [seeded.rejected, seeded.active]  # newest first
    rejected, active = models
    assert rejected["status"] == "rejected"
    assert rejected["status_reason"] == "hit rate below the active model"
    assert rejected["promoted_at"] is None
    assert rejected["trained_through"] == "2024-01-14T00:00:00Z"
    assert active["status"] == "active"
    assert active["promoted_at"] is not None
    assert active["trained_through"] == "2024-01-07T00:00:00Z"
    assert active["n_traits"] == 3
    assert active["vector_size"] == 5
    assert active["n_tokens"] == 8
    assert active["metrics"] == {"hit_rate": 0.25, "nested": {"n": 3, "list": [1, 2.5, "x"]}}
    assert active["drift"] == {"weighted_mean_drift": 0.12, "measured": True}
    assert active["trait_match"] == {"matched": [[3, 3]], "new": []}
    # Lineage: how each model's vectors were trained and from which model.
    assert active["training_mode"] == "full"
    assert active["parent_version"] is None and active["trained_since"] is None
    assert (rejected["training_mode"], rejected["parent_version"]) == ("incremental", seeded.active)
    assert rejected["trained_since"] == "2024-01-07T00:00:00Z"


def test_reports_newest_first_filtered_and_limited(client: TestClient, seeded: Seeded) -> None:
    reports = client.get("/api/reports").json()["reports"]
    assert [(r["kind"], r["run_key"]) for r in reports] == [
        ("daily", "2024-01-10"),
        ("daily", "2024-01-09"),
        ("weekly", "2024-01-07"),
    ]
    assert reports[0]["report"] == {"n_profiles": 7, "oov_rate": 0.02}
    daily = client.get("/api/reports", params={"kind": "daily"}).json()["reports"]
    assert [r["run_key"] for r in daily] == ["2024-01-10", "2024-01-09"]
    assert [r["run_key"] for r in client.get("/api/reports", params={"limit": 1}).json()["reports"]] == [
        "2024-01-10"
    ]
    assert client.get("/api/reports", params={"kind": "monthly"}).json() == {"reports": []}
    for params in ({"limit": 0}, {"limit": 201}, {"kind": ""}):
        assert client.get("/api/reports", params=params).status_code == 422, params


def test_status_counts_rows(client: TestClient, seeded: Seeded) -> None:
    body = client.get("/api/status").json()
    assert body["db_schema"] == seeded.schema
    assert body["schema_version"] >= 1
    assert body["active_model_version"] == seeded.active
    assert body["latest_profile_as_of"] == "2024-01-10T00:00:00Z"
    counts = body["table_counts"]
    assert counts["customer_profiles"] == len(CUSTOMERS)
    assert counts["customer_profile_history"] == len(CUSTOMERS) + 1
    assert counts["model_versions"] == 2
    assert counts["run_reports"] == 3


def test_page_renders_traits_with_escaped_labels(client: TestClient, seeded: Seeded) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page = response.text
    assert f"Active model {seeded.active}, trained through 2024-01-07 00:00Z, 3 traits" in page
    for label in seeded.model.traits.labels:
        assert html.escape(label, quote=True) in page  # e.g. 'trait 3 ✨ &quot;quoted&quot;, {braces}'
        assert label not in page  # never raw: labels are arbitrary text
    assert '<tr data-trait-id="3">' in page
    assert '<td class="num">4</td>' in page  # size of trait 3
    for products in seeded.model.traits.top_products:  # each trait's top products, escaped
        assert f'<td class="tags">{html.escape(", ".join(products), quote=True)}</td>' in page
    assert 'id="lookup"' in page  # the customer lookup form
    # The lookup's product list and its toggle, filled by app.js from the products route.
    assert 'id="products-list"' in page
    assert '<input type="checkbox" id="products-new-only"' in page
    assert '<label for="products-new-only">new to this customer only</label>' in page
    assert 'id="reports"' in page  # the run reports table
    assert '<script src="static/app.js" defer></script>' in page

    script = client.get("/static/app.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert "api/customers/" in script.text
    assert "/products?n=10&new_only=${" in script.text
    assert "innerHTML" not in script.text  # API text is only ever set as textContent
    assert client.get("/static/app.css").status_code == 200
    assert client.get("/static/icon.svg").headers["content-type"].startswith("image/svg+xml")
    assert client.get("/static/../traitflow_plugin.py").status_code == 404


def test_empty_database(client: TestClient, empty_db: Any) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert "No active model yet" in page.text
    assert client.get("/api/traits").json() == {
        "detail": "there is no active model yet (run `traitflow retrain`, or pass a model version)"
    }
    assert client.get("/api/traits/3/top").status_code == 404
    assert client.get("/api/models").json() == {"active_model_version": None, "models": []}
    assert client.get("/api/reports").json() == {"reports": []}


def test_database_problems_are_503_with_a_reason(
    client: TestClient,
    plugin: ModuleType,
    database_url: str,
    make_store: Any,
    plugin_env: Callable[[str, str], None],
) -> None:
    fresh = make_store(fresh=True)  # a schema that was never migrated
    plugin_env(database_url, fresh.schema)
    response = client.get("/api/traits")
    assert response.status_code == 503
    assert "needs migrations" in response.json()["detail"]
    assert "traitflow db upgrade" in response.json()["detail"]
    models = client.get("/api/models")  # reads model_versions and their trait matches
    assert models.status_code == 503 and "needs migrations" in models.json()["detail"]

    plugin_env("postgresql://nobody:s3cret@127.0.0.1:1/none?connect_timeout=2", "x")
    response = client.get("/api/customers/c1")
    assert response.status_code == 503
    detail = response.json()["detail"]
    assert detail.startswith("cannot connect to postgresql://nobody:***@127.0.0.1:1/none")
    assert "s3cret" not in detail
    page = client.get("/")  # the page still renders, with the reason
    assert page.status_code == 200
    assert "cannot connect to" in page.text
    POOL.clear()


def test_connection_traitflow_db_wins_over_the_env_var(
    client: TestClient, plugin: ModuleType, seeded: Seeded, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:

    import traitflow_common
    from traitflow import connections

    monkeypatch.setenv("AIRFLOW_CONN_TRAITFLOW_DB", database_url)
    monkeypatch.setenv("TRAITFLOW_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/wrong")
    POOL.clear()
    assert connections.database_url() == traitflow_common.database_url()
    body = client.get("/api/traits").json()
    assert body["model_version"] == seeded.active
    POOL.clear()


def test_database_url_without_the_connection_is_the_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    from traitflow import connections

    monkeypatch.delenv("AIRFLOW_CONN_TRAITFLOW_DB", raising=False)
    monkeypatch.setenv("TRAITFLOW_DATABASE_URL", "postgresql://tf@db.example/traitflow")
    assert connections.database_url() == "postgresql://tf@db.example/traitflow"
    monkeypatch.setenv("TRAITFLOW_DATABASE_URL", " ")
    assert connections.database_url() is None  # the embedded server

    # The library imports Airflow only when the lookup runs.
    code = "import sys, traitflow.connections; print('airflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"


def test_url_from_connection() -> None:
    from airflow.sdk import Connection

    from traitflow.connections import url_from_connection

    conn = Connection(
        conn_id="traitflow_db",
        conn_type="postgres",
        host="db.example",
        login="ana@corp",
        password="p:w/d@#",
        port=5433,
        schema="traitflow",
        extra=json.dumps({"sslmode": "require", "connect_timeout": 5, "verbose": True}),
    )
    assert url_from_connection(conn) == (
        "postgresql://ana%40corp:p%3Aw%2Fd%40%23@db.example:5433/traitflow?connect_timeout=5&sslmode=require"
    )
    assert url_from_connection(Connection(conn_id="traitflow_db", conn_type="postgres")) == (
        "postgresql://localhost/"
    )
    with pytest.raises(ValueError, match="must be a Postgres connection"):
        url_from_connection(Connection(conn_id="traitflow_db", conn_type="http"))


def test_pool_reuses_connections_and_drops_broken_ones(
    client: TestClient, plugin: ModuleType, seeded: Seeded
) -> None:
    pool = POOL
    for _ in range(3):
        assert client.get("/api/traits").status_code == 200
    assert len(pool._idle) == 1  # sequential requests share one connection
    [store] = pool._idle
    pid = store.connection.info.backend_pid
    assert client.get("/api/customers/nobody").status_code == 404  # not a DB failure: kept
    assert pool._idle == [store]
    store.connection.close()  # e.g. the server restarted: the Store reconnects on next use
    assert client.get("/api/models").status_code == 200
    assert pool._idle[0].connection.info.backend_pid != pid


def test_idle_stores_are_taken_and_kept_without_io_only_while_the_settings_are_fresh() -> None:
    from traitflow_web.pool import StorePool

    pool = StorePool(max_idle=1, ttl_seconds=60.0)
    key = ("postgresql://db/x", "traitflow")
    assert pool.take_idle() is None  # the settings were never read: acquire() reads them
    pool._key, pool._key_read_at = key, time.monotonic()
    assert pool.keep("a", key, reusable=True)
    assert not pool.keep("b", key, reusable=True)  # max_idle reached: the caller closes it
    assert not pool.keep("c", ("postgresql://db/other", "traitflow"), reusable=True)  # settings changed
    assert not pool.keep("d", key, reusable=False)  # a database error: closed
    assert pool.take_idle() == ("a", key)
    assert pool.take_idle() is None  # none idle
    assert pool.keep("a", key, reusable=True)
    pool._key_read_at -= 61.0
    assert pool.take_idle() is None  # stale settings: acquire() reads them again


# ------------------------------------------------------------- through Airflow's api-server app


def test_airflow_mounts_the_app_and_enforces_its_auth(
    airflow_app: Any, seeded: Seeded, role_token: Callable[[str | None], str]
) -> None:
    from fastapi.testclient import TestClient

    with TestClient(airflow_app) as api:
        anonymous = api.get("/traitflow/api/traits")
        assert anonymous.status_code == 401
        assert anonymous.json() == {"detail": "Not authenticated"}

        viewer = {"Authorization": f"Bearer {role_token('viewer')}"}
        response = api.get("/traitflow/api/traits", headers=viewer)
        assert response.status_code == 200, response.text
        assert [t["label"] for t in response.json()["traits"]] == seeded.model.traits.labels
        assert api.get("/traitflow/api/traits/3/top", params={"n": 0}, headers=viewer).status_code == 422
        assert api.get("/traitflow/api/customers/nobody", headers=viewer).status_code == 404
        products = api.get("/traitflow/api/customers/c1/products", params={"n": 3}, headers=viewer)
        assert products.status_code == 200, products.text
        assert len(products.json()["products"]) == 3

        no_role = api.get("/traitflow/api/models", headers={"Authorization": f"Bearer {role_token(None)}"})
        assert no_role.status_code == 403
        assert "Traitflow" in no_role.json()["detail"]
        forged = api.get("/traitflow/api/models", headers={"Authorization": "Bearer not-a-jwt"})
        assert forged.status_code == 403
        assert forged.json() == {"detail": "Invalid JWT token"}

        # The browser: unauthenticated -> login page and back; the UI's cookie is enough.
        login = api.get("/traitflow/", follow_redirects=False)
        assert login.status_code == 303
        assert login.headers["location"] == "/auth/login?next=%2Ftraitflow%2F"
        assert api.get("/traitflow/static/app.js").status_code == 200  # static assets are public
        metrics = api.get("/traitflow/metrics")  # scrapers cannot log in: aggregates only
        assert metrics.status_code == 200 and "traitflow_store_up" in metrics.text
        api.cookies.set("_token", role_token("viewer"))
        page = api.get("/traitflow/")
        assert page.status_code == 200
        assert html.escape(seeded.model.traits.labels[0], quote=True) in page.text
        assert api.get("/traitflow/api/customers/c1").json()["dominant_trait_id"] == 3


def test_airflow_serves_the_nav_entry_to_the_ui(
    airflow_app: Any, role_token: Callable[[str | None], str]
) -> None:
    from fastapi.testclient import TestClient

    with TestClient(airflow_app) as api:
        response = api.get("/api/v2/plugins", headers={"Authorization": f"Bearer {role_token('viewer')}"})
    assert response.status_code == 200
    [entry] = [p for p in response.json()["plugins"] if p["name"] == "traitflow"]
    assert entry["fastapi_apps"] == [
        {"app": "fastapi.applications.FastAPI", "url_prefix": "/traitflow", "name": "Traitflow traits API"}
    ]
    [view] = entry["external_views"]
    assert view["destination"] == "nav"
    assert view["url_route"] == "traitflow"
    assert view["href"] == "/traitflow/"
    assert view["category"] == "browse"
