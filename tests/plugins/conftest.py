"""Plugin tests: Airflow configured like tests/dags/conftest.py, the plugin loaded like Airflow loads it.

Airflow reads its configuration when ``airflow`` is first imported. In a full run tests/dags is
collected first and its conftest has already set up a temp ``AIRFLOW_HOME`` (marked by
``_TRAITFLOW_AIRFLOW_HOME``): reuse it. When tests/plugins runs alone (or first), set up the same
environment here, before anything imports Airflow.

The fixtures shared by the endpoint tests are here too: ``plugin_env`` (point the plugin at a
database schema), ``empty_db`` (a migrated, empty one), ``client`` (the app, auth overridden),
``airflow_app`` (Airflow's api-server app with the plugin, real auth) and ``role_token`` (a JWT
for a SimpleAuthManager role).
"""

from __future__ import annotations

import atexit
import importlib.machinery
import importlib.util
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # imported in the fixture, where the Starlette/httpx deprecation is filtered
    from fastapi.testclient import TestClient

REPO = Path(__file__).resolve().parents[2]
DAGS_DIR = REPO / "dags"
PLUGINS_DIR = REPO / "plugins"
PLUGIN_FILE = PLUGINS_DIR / "traitflow_plugin.py"
PLUGIN_MODULE = "traitflow_plugin"  # Airflow names a plugins-folder module after its file


def _configure_airflow() -> Path:
    if existing := os.environ.get("_TRAITFLOW_AIRFLOW_HOME"):
        return Path(existing)  # tests/dags/conftest.py (or an earlier import of this file) did it
    if "airflow" in sys.modules:
        raise pytest.UsageError(
            "airflow was imported before tests/plugins/conftest.py could configure it; "
            "import nothing from airflow at collection time."
        )
    home = Path(tempfile.mkdtemp(prefix="traitflow-airflow-"))
    (home / "plugins").mkdir()
    # The same environment as tests/dags/conftest.py:airflow_env (kept in step by hand; the
    # plugins folder stays empty there too: these tests load the plugin explicitly).
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "plugins"),
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH": str(home / "bundles"),
            "_TRAITFLOW_AIRFLOW_HOME": str(home),
        }
    )
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    # As tests/dags/conftest.py does (it skips this when it finds the env var set by us).
    if str(DAGS_DIR) not in sys.path:
        sys.path.append(str(DAGS_DIR))
    return home


AIRFLOW_HOME = _configure_airflow()
# Airflow puts its plugins folder on sys.path when it starts
# (settings.prepare_syspath_for_config_and_plugins), and the plugin file imports its package
# (traitflow_web) from there. The configured plugins folder of these tests is empty: add the repo's.
if str(PLUGINS_DIR) not in sys.path:
    sys.path.append(str(PLUGINS_DIR))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Silence two third-party deprecations for the tests in this folder only, neither ours to fix:
    Starlette 1.x deprecates driving TestClient with httpx (Airflow's pins), and Airflow reads
    plugins/.airflowignore with a pathspec class that pathspec deprecates."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`"))
            item.add_marker(pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning"))


def load_plugin_module() -> ModuleType:
    """Import plugins/traitflow_plugin.py the way Airflow's plugin loader does (SourceFileLoader)."""
    module = sys.modules.get(PLUGIN_MODULE)
    if module is not None and Path(module.__file__ or "").resolve() == PLUGIN_FILE:
        return module
    loader = importlib.machinery.SourceFileLoader(PLUGIN_MODULE, str(PLUGIN_FILE))
    spec = importlib.util.spec_from_loader(PLUGIN_MODULE, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[PLUGIN_MODULE] = module
    loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def plugin() -> ModuleType:
    """The plugin module (imported once per session)."""
    return load_plugin_module()


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Airflow's migrated SQLite metadata DB (token checks read the revoked-token table)."""
    from airflow.utils import db

    db.upgradedb()
    return AIRFLOW_HOME / "airflow.db"


@pytest.fixture
def plugin_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[str, str], None]:
    """``plugin_env(url, schema)``: point the plugin at ``schema`` on ``url`` (the DAGs' settings,
    no connection) and drop its pooled connections."""
    from traitflow_web.pool import POOL

    def point(url: str, schema: str) -> None:
        monkeypatch.setenv("TRAITFLOW_DATABASE_URL", url)
        monkeypatch.setenv("TRAITFLOW_DB_SCHEMA", schema)
        monkeypatch.delenv("AIRFLOW_CONN_TRAITFLOW_DB", raising=False)
        monkeypatch.setenv("TRAITFLOW_DATA_DIR", str(tmp_path / "data"))  # never the repo's data/
        POOL.clear()

    return point


@pytest.fixture
def empty_db(
    plugin: ModuleType,
    store: Any,
    store_schema: str,
    database_url: str,
    plugin_env: Callable[[str, str], None],
) -> Iterator[Any]:
    """A migrated, empty schema the plugin is pointed at (via TRAITFLOW_DATABASE_URL/_DB_SCHEMA)."""
    from traitflow_web.pool import POOL

    plugin_env(database_url, store_schema)
    yield store
    POOL.clear()  # close pooled connections before the schema is dropped


@pytest.fixture
def client(plugin: ModuleType) -> Iterator[TestClient]:
    """The plugin app with Airflow auth replaced by a fixed user (test_traitflow_plugin.py tests auth)."""
    from fastapi.testclient import TestClient
    from traitflow_web.auth import require_access, require_page_access
    from traitflow_web.events import require_write_access

    app = plugin.app
    app.dependency_overrides[require_access] = lambda: "analyst"
    app.dependency_overrides[require_page_access] = lambda: "analyst"
    app.dependency_overrides[require_write_access] = lambda: "analyst"
    try:
        with TestClient(app) as test_client:
            yield test_client
    finally:
        app.dependency_overrides.clear()


@pytest.fixture
def airflow_app(plugin: ModuleType, airflow_db: Path) -> Iterator[Any]:
    """Airflow's own api-server app (``create_app(apps="core")``) with this plugin registered."""
    from airflow import plugins_manager
    from airflow.api_fastapi import app as api_app

    instance = plugin.TraitflowPlugin()
    cached = (
        plugins_manager.get_flask_plugins,
        plugins_manager.get_fastapi_plugins,
        plugins_manager._get_extra_operators_links_plugins,
        plugins_manager._get_ui_plugins,
    )

    def reset() -> None:
        for function in cached:
            function.cache_clear()
        api_app.purge_cached_app()

    patch = pytest.MonkeyPatch()
    patch.setattr(plugins_manager, "_get_plugins", lambda: ([instance], {}))
    # Airflow generates a short HMAC secret when none is configured (PyJWT warns about it).
    patch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", secrets.token_hex(64))
    reset()
    try:
        yield api_app.create_app(apps="core")
    finally:
        patch.undo()
        reset()


@pytest.fixture
def role_token() -> Callable[[str | None], str]:
    """``role_token(role)``: a SimpleAuthManager JWT for a user with ``role`` (None: no role); use
    with ``airflow_app``."""

    def token(role: str | None) -> str:
        from airflow.api_fastapi.app import get_auth_manager
        from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

        user = SimpleAuthManagerUser(username=f"user-{role}", role=role)
        return get_auth_manager().generate_jwt(user)

    return token
