"""The plugin's FastAPI app (built at import, without I/O) and its nav entry in the Airflow UI."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from airflow.configuration import conf
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .api import api
from .auth import LoginRequiredError, login_redirect
from .charts import charts
from .events import BodySizeLimit, events, validation_error
from .metrics import TimeRequests, metrics
from .page import UI_DIR, index
from .pool import POOL

URL_PREFIX = "/traitflow"
URL_ROUTE = "traitflow"  # the UI shows the page at /plugin/<URL_ROUTE>


def airflow_root_path() -> str:
    """Path part of ``[api] base_url`` ending in '/' (``/`` unless Airflow runs under a sub-path).

    The same derivation as ``airflow.api_fastapi.app.API_ROOT_PATH`` (not imported: that module
    pulls in the whole api-server).
    """
    base = conf.get("api", "base_url", fallback="") or ""
    path = urlsplit(base).path or "/"
    return path if path.endswith("/") else path + "/"


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:  # noqa: ARG001 (the lifespan protocol passes the app)
    yield
    POOL.clear()  # the api-server enters mounted FastAPI apps' lifespans


class NoStoreForApi:
    """ASGI middleware: ``Cache-Control: no-store`` on API responses (they hold customer data)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "").removeprefix(scope.get("root_path", ""))
        if scope["type"] != "http" or not path.startswith("/api/"):
            await self.app(scope, receive, send)
            return

        async def no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, no_store)


def api_docs() -> HTMLResponse:
    """Swagger UI from the app's own static files (``static/vendor/swagger-ui``): no CDN. The URLs
    are relative to ``/traitflow/docs``, so they hold under any ``[api] base_url``."""
    return get_swagger_ui_html(
        openapi_url="openapi.json",
        title="Traitflow API",
        swagger_js_url="static/vendor/swagger-ui/swagger-ui-bundle.js",
        swagger_css_url="static/vendor/swagger-ui/swagger-ui.css",
        swagger_favicon_url="static/icon.svg",
        swagger_ui_parameters={"validatorUrl": None},  # the default validator is an external service
    )


def create_app() -> FastAPI:
    """The plugin's FastAPI app (no I/O: safe to build at import)."""
    app = FastAPI(
        title="Traitflow",
        summary="API over Traitflow's customer trait profiles and event posts (Airflow plugin)",
        description=(
            "Authenticate like the Airflow API: `Authorization: Bearer <token from POST /auth/token>` "
            "or the Airflow UI session cookie. Reads need GET on the `Traitflow` custom view; event "
            "posts need POST on it and on assets (simple auth manager: role op or admin)."
        ),
        version="1",
        lifespan=_lifespan,
        docs_url=None,  # served by api_docs, without a CDN
        redoc_url=None,
    )
    app.include_router(api)
    app.include_router(charts)
    app.include_router(events)
    app.add_api_route("/docs", api_docs, methods=["GET"], include_in_schema=False)
    # Prometheus scrapes without an Airflow login: aggregates only (see metrics.py)
    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    app.add_api_route("/", index, methods=["GET"], include_in_schema=False, response_class=HTMLResponse)
    app.add_exception_handler(LoginRequiredError, login_redirect)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.mount("/static", StaticFiles(directory=UI_DIR / "static"), name="static")
    app.add_middleware(NoStoreForApi)
    app.add_middleware(BodySizeLimit)
    app.add_middleware(TimeRequests)  # added last: outermost, so it times the whole request
    return app


def traits_view(root_path: str) -> Mapping[str, Any]:
    """The nav entry "Traits" under Browse; the UI shows the page in an iframe at /plugin/traitflow."""
    return {
        "name": "Traits",
        "href": f"{root_path}{URL_PREFIX.strip('/')}/",
        "icon": f"{root_path}{URL_PREFIX.strip('/')}/static/icon.svg",
        "url_route": URL_ROUTE,
        "destination": "nav",
        "category": "browse",
    }


app = create_app()
TRAITS_VIEW = traits_view(airflow_root_path())
