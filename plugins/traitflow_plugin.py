"""Traitflow's Airflow 3.3 plugin: a "Traits" page in the Airflow UI and a read-only JSON API.

What it registers (``TraitflowPlugin``)
---------------------------------------
* ``fastapi_apps``: one FastAPI app mounted by the api-server under ``/traitflow`` (below
  ``[api] base_url`` when Airflow is served under a sub-path):

  ===============================================  ==========================================
  ``GET /traitflow/``                               the HTML page (traits, customer lookup,
                                                    models, run reports); static assets under
                                                    ``/traitflow/static/``
  ``GET /traitflow/api/traits?model_version=``      traits of the active (or given) model:
                                                    labels, top products/categories, size
  ``GET /traitflow/api/traits/{id}/top?n=``         top customers of a trait (n in 1..1000)
  ``GET /traitflow/api/customers/{id}``             current profile with labels (404 if never
                                                    profiled); ``?embedding=true`` adds the vector
  ``GET /traitflow/api/customers/{id}/history``     every stored profile, oldest first
  ``GET /traitflow/api/customers/{id}/similar?n=``  nearest current profiles (cosine, same model)
                                                    (ids may contain "/", raw or as %2F; an id
                                                    ending in "/history" or "/similar" is not
                                                    addressable)
  ``GET /traitflow/api/models``                     model versions: status, trained_through,
                                                    metrics, drift, trait_match
  ``GET /traitflow/api/reports?kind=&limit=``       newest run reports (limit in 1..200)
  ``GET /traitflow/api/status``                     schema version, active model, exact row
                                                    counts (counts every table: not for polling)
  ``GET /traitflow/docs``, ``/traitflow/openapi.json``  the app's own OpenAPI docs (no data)
  ===============================================  ==========================================

  Bad parameters give FastAPI's 422 JSON (``{"detail": [{"loc": [...], "msg": ...}]}``); other
  errors are ``{"detail": "<message>"}``: 404 unknown customer/trait/model (or no active model
  yet), 503 database unreachable or schema not migrated (``traitflow db upgrade``).
  A customer id containing ``/`` cannot be addressed in a path (the server decodes ``%2F``
  before routing); no current input format produces such ids.
* ``external_views``: a nav entry "Traits" under *Browse* (``destination="nav"``,
  ``url_route="traitflow"``): the UI shows the page in an iframe at ``/plugin/traitflow``.

Authentication and authorization (Airflow 3.3.2, checked in its source)
-----------------------------------------------------------------------
The api-server mounts plugin apps with a bare ``app.mount(url_prefix, subapp)``
(``airflow.api_fastapi.app.init_plugins``): Airflow adds **no** authentication to them. The
root app's middlewares do run for mounted apps, and ``JWTRefreshMiddleware`` refreshes the UI's
``_token`` cookie, but it never rejects a request. Left alone, every route of a plugin app is
public. So this app depends, on every route except ``/static`` and the OpenAPI docs, on:

1. ``airflow.api_fastapi.core_api.security.get_user``, the exact function the ``/api/v2`` and
   ``/ui`` routes use: an ``Authorization: Bearer <JWT>`` header (a token from
   ``POST /auth/token``) wins; otherwise the ``_token`` cookie the Airflow UI sets (httponly,
   path = the base_url path, so the browser sends it to ``/traitflow`` too, including inside the
   UI's iframe). Missing token -> 401, expired -> 401, invalid/revoked -> 403.
2. The configured auth manager's ``is_authorized_custom_view(method="GET",
   resource_name="Traitflow", user=user)``, the hook Airflow provides for plugin views.
   SimpleAuthManager (the default) allows role ``viewer`` and above; with FAB, give the roles
   that should see customer profiles the ``can_read`` permission on the ``Traitflow`` resource.

The HTML page redirects an unauthenticated browser to the auth manager's login page and back.
No credentials of its own, no new auth scheme.

Database
--------
Resolved like the DAGs resolve it (``dags/traitflow_common``): the Airflow Connection
``traitflow_db``, else ``TRAITFLOW_DATABASE_URL``, else the embedded PostgreSQL under
``TRAITFLOW_DATA_DIR``; schema ``TRAITFLOW_DB_SCHEMA`` (default ``traitflow``). The URL is
looked up on the first request and re-read every ``URL_TTL_SECONDS`` (connection edits apply
without a restart). Each request borrows a ``traitflow.store.Store`` from a small pool of idle
connections (at most ``MAX_IDLE_STORES``); a Store is used by one request at a time.

Import cost: the api-server, the scheduler, the dag-processor and every task process import
this file (plugins are loaded for macros and listeners too). Top level therefore imports only
FastAPI/pydantic and Airflow's plugin base class; the store (numpy, pandas, psycopg, pyarrow)
and Airflow's security module are imported on the first request. No database or connection
lookup happens at import.

Every query runs through the ``Store`` read API; the few it lacks (trait labels for history
rows, ``trait_match`` of model versions, one trait's label) are parameterized SQL below.
"""

from __future__ import annotations

import html
import logging
import math
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, status
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

log = logging.getLogger(__name__)

CONN_ID = "traitflow_db"
URL_PREFIX = "/traitflow"
RESOURCE_NAME = "Traitflow"  # custom-view resource checked with the auth manager
URL_ROUTE = "traitflow"  # the UI shows the page at /plugin/<URL_ROUTE>
URL_TTL_SECONDS = 60.0
MAX_IDLE_STORES = 4
MAX_TOP_N = 1000
MAX_REPORTS = 200
MAX_ID_LENGTH = 256  # customer_id CHECK constraint in the schema
MAX_TRAIT_ID = 2**63 - 1  # trait_id is a bigint

UI_DIR = Path(__file__).resolve().parent / "traitflow_ui"


def _airflow_root_path() -> str:
    """Path part of ``[api] base_url`` ending in '/' (``/`` unless Airflow runs under a sub-path).

    The same derivation as ``airflow.api_fastapi.app.API_ROOT_PATH`` (not imported: that module
    pulls in the whole api-server).
    """
    base = conf.get("api", "base_url", fallback="") or ""
    path = urlsplit(base).path or "/"
    return path if path.endswith("/") else path + "/"


# ------------------------------------------------------------------------------ database access


def database_url() -> str | None:
    """Connection ``traitflow_db``, else ``TRAITFLOW_DATABASE_URL``, else None (= embedded server)."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    from traitflow.config import env_str
    from traitflow.connections import url_from_connection

    try:
        conn = Connection.get(CONN_ID)
    except AirflowNotFoundException:
        return env_str("TRAITFLOW_DATABASE_URL")
    return url_from_connection(conn)


class StorePool:
    """Idle ``Store`` objects for the current (url, schema), reused by later requests.

    ``acquire`` hands a Store to one request; ``release`` keeps it (up to ``max_idle``) unless
    the request failed with a database error or the settings changed meanwhile.
    """

    def __init__(self, max_idle: int = MAX_IDLE_STORES, ttl_seconds: float = URL_TTL_SECONDS) -> None:
        self.max_idle = max_idle
        self.ttl_seconds = ttl_seconds
        self._lock = threading.Lock()
        self._create_lock = threading.Lock()  # the embedded server must not be started twice at once
        self._idle: list[Any] = []
        self._key: tuple[str | None, str] | None = None
        self._key_read_at = 0.0

    def settings(self) -> tuple[str | None, str]:
        """(database URL or None for the embedded server, schema); cached for ``ttl_seconds``."""
        from traitflow.config import db_schema

        with self._lock:
            now = time.monotonic()
            if self._key is None or now - self._key_read_at > self.ttl_seconds:
                key = (database_url(), db_schema())
                if key != self._key:
                    self._close_idle()
                self._key, self._key_read_at = key, now
            return self._key

    def acquire(self) -> tuple[Any, tuple[str | None, str]]:
        key = self.settings()
        with self._lock:
            if self._idle and self._key == key:
                return self._idle.pop(), key
        from traitflow.store import Store

        with self._create_lock:
            return Store(key[0], key[1]), key

    def release(self, store: Any, key: tuple[str | None, str], reusable: bool) -> None:
        with self._lock:
            if reusable and key == self._key and len(self._idle) < self.max_idle:
                self._idle.append(store)
                return
        store.close()

    def _close_idle(self) -> None:
        idle, self._idle = self._idle, []
        for store in idle:
            store.close()

    def clear(self) -> None:
        """Close idle connections and forget the settings (shutdown, tests)."""
        with self._lock:
            self._close_idle()
            self._key = None


POOL = StorePool()


def _http_error(exc: BaseException) -> HTTPException | None:
    """The HTTP error for a store/database failure, or None for anything else (a bug -> 500)."""
    import psycopg

    from traitflow.store import NotFoundError, StoreError

    if isinstance(exc, HTTPException):
        return exc
    if isinstance(exc, NotFoundError):
        return HTTPException(status.HTTP_404_NOT_FOUND, str(exc))
    if isinstance(exc, StoreError):  # cannot connect, schema not migrated (SchemaNotReadyError), ...
        return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc))
    if isinstance(exc, psycopg.OperationalError):
        return HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"Traitflow database unavailable: {str(exc).strip()}"
        )
    return None


def _is_db_failure(exc: BaseException) -> bool:
    import psycopg

    from traitflow.store import NotFoundError, StoreError

    return isinstance(exc, psycopg.Error | StoreError) and not isinstance(exc, NotFoundError)


def acquire_store() -> tuple[Any, tuple[str | None, str]]:
    """A pooled Store; settings/connection problems (bad URL, server down) become 503."""
    try:
        return POOL.acquire()
    except Exception as exc:
        log.warning("Traitflow plugin cannot open the database: %s", exc)
        detail = _http_error(exc) or HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"Traitflow database is not configured correctly: {exc}"
        )
        raise detail from exc


@contextmanager
def borrow_store() -> Iterator[Any]:
    """A pooled Store for one request, returned to the pool unless a database error happened."""
    store, key = acquire_store()
    reusable = False
    try:
        yield store
        reusable = True
    except Exception as exc:
        reusable = not (_is_db_failure(exc) or _is_db_failure(exc.__cause__))
        raise
    finally:
        POOL.release(store, key, reusable)


def get_store() -> Iterator[Any]:
    """FastAPI dependency: a pooled ``Store``; store errors raised by the endpoint become 404/503."""
    with borrow_store() as store:
        try:
            yield store
        except Exception as exc:
            translated = _http_error(exc)
            if translated is None or translated is exc:
                raise
            raise translated from exc


StoreDep = Annotated[Any, Depends(get_store)]


# --------------------------------------------------------------------------------- auth


_bearer = HTTPBearer(auto_error=False, description="A JWT from Airflow's POST /auth/token")


async def current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Any:
    """The Airflow user of this request: Airflow's own ``get_user`` (Bearer header, else UI cookie)."""
    from airflow.api_fastapi.core_api.security import get_user

    return await get_user(request=request, _oauth_token=None, bearer_credentials=credentials)


def _authorize(user: Any) -> None:
    from airflow.api_fastapi.app import get_auth_manager

    if not get_auth_manager().is_authorized_custom_view(method="GET", resource_name=RESOURCE_NAME, user=user):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"Forbidden: reading Traitflow data needs the GET permission on the {RESOURCE_NAME!r} view",
        )


def require_access(user: Annotated[Any, Depends(current_user)]) -> Any:
    """Authenticated and allowed to read the ``Traitflow`` custom view (sync: runs in a thread,
    as auth managers may query their database)."""
    _authorize(user)
    return user


# ------------------------------------------------------------------------------ responses


class Error(BaseModel):
    detail: str


class Trait(BaseModel):
    trait_id: int
    position: int = Field(description="1-based position of the trait in the model's profile vectors")
    label: str
    top_products: list[str]
    top_categories: list[str]
    size: int = Field(description="customers whose current profile (this model) has this dominant trait")
    share: float | None = Field(description="size / customers profiled with this model")


class Traits(BaseModel):
    model_version: int
    n_customers: int = Field(description="customers whose current profile uses this model")
    traits: list[Trait]


class Evidence(BaseModel):
    """What a served profile rests on: shown beside it, so a guess is not read as a fact."""

    n_events: int
    n_known_tokens: int | None = Field(
        default=None, description="events whose token the model knows; null if not recorded"
    )
    confidence: float | None = Field(
        default=None, description="n_known_tokens / (n_known_tokens + 3): the customer's share of the profile"
    )
    cold_start: str = Field(description="none | few_tokens | no_history")


class TopCustomer(Evidence):
    rank: int
    customer_id: str
    score: float | None
    as_of: datetime


class TopCustomers(BaseModel):
    trait_id: int
    label: str
    model_version: int
    min_events: int = Field(description="customers with fewer events were left out")
    customers: list[TopCustomer]


class TraitScore(BaseModel):
    trait_id: int
    label: str | None
    score: float | None


class Profile(BaseModel):
    customer_id: str
    as_of: datetime
    updated_at: datetime
    model_version: int
    dominant_trait_id: int
    dominant_label: str | None
    n_events: int
    cold_start: str = Field(description="none | few_tokens | no_history")
    n_known_tokens: int | None = Field(
        default=None, description="events whose token the model knows; null if not recorded"
    )
    confidence: float | None = Field(
        default=None, description="n_known_tokens / (n_known_tokens + 3): the customer's share of the profile"
    )
    traits: list[TraitScore] = Field(description="in the model's trait order")
    embedding: list[float] | None = Field(default=None, description="only with ?embedding=true")


class HistoryEntry(BaseModel):
    as_of: datetime
    model_version: int
    dominant_trait_id: int
    dominant_label: str | None
    n_events: int
    cold_start: str
    n_known_tokens: int | None = None
    traits: list[TraitScore]


class History(BaseModel):
    customer_id: str
    history: list[HistoryEntry]


class SimilarCustomer(Evidence):
    rank: int
    customer_id: str
    similarity: float | None = Field(description="cosine similarity of the trait profiles")
    dominant_trait_id: int
    dominant_label: str | None
    as_of: datetime


class Similar(BaseModel):
    customer_id: str
    model_version: int
    min_events: int = Field(description="customers with fewer events were left out")
    similar: list[SimilarCustomer]


class ModelVersion(BaseModel):
    model_version: int
    status: str
    status_reason: str | None
    trained_through: datetime
    created_at: datetime
    promoted_at: datetime | None
    retired_at: datetime | None
    n_tokens: int
    vector_size: int
    n_traits: int
    metrics: dict[str, Any]
    drift: dict[str, Any] | None
    trait_match: dict[str, Any] | None


class ModelVersions(BaseModel):
    active_model_version: int | None
    models: list[ModelVersion]


class RunReport(BaseModel):
    kind: str
    run_key: str
    created_at: datetime
    updated_at: datetime
    report: dict[str, Any]


class RunReports(BaseModel):
    reports: list[RunReport]


class Status(BaseModel):
    db_schema: str
    schema_version: int
    active_model_version: int | None
    latest_profile_as_of: datetime | None
    table_counts: dict[str, int]


def _py(value: Any) -> Any:
    """Plain Python for numpy/pandas scalars; NaN/NaT -> None (JSON has no NaN)."""
    if value is None:
        return None
    if hasattr(value, "to_pydatetime"):  # pandas Timestamp (NaT included)
        return None if value != value else value.to_pydatetime()
    if hasattr(value, "item") and not isinstance(value, list | dict | str):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _records(frame: Any) -> list[dict[str, Any]]:
    return [{k: _py(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


_EVIDENCE_FIELDS = ("n_events", "n_known_tokens", "confidence", "cold_start")


def _evidence(record: dict[str, Any]) -> dict[str, Any]:
    """The evidence fields of a record (``Evidence`` keyword arguments)."""
    return {name: record[name] for name in _EVIDENCE_FIELDS}


def _labels(store: Any, versions: list[int]) -> dict[int, dict[int, str]]:
    """{model_version: {trait_id: label}} for some model versions."""
    labels: dict[int, dict[int, str]] = {v: {} for v in versions}
    if versions:
        rows = store.connection.execute(
            "SELECT model_version, trait_id, label FROM trait_components WHERE model_version = ANY(%s)",
            (versions,),
        ).fetchall()
        for version, trait_id, label in rows:
            labels[int(version)][int(trait_id)] = label
    return labels


# ---------------------------------------------------------------------------------- app

Limit = Annotated[int, Query(ge=1, le=MAX_TOP_N, description=f"how many (1..{MAX_TOP_N})")]
# traitflow.profile_batch.MIN_EVIDENCE_EVENTS, repeated here because this module imports no traitflow
# code at top level (import cost, see the module docstring); a test checks that they agree.
DEFAULT_MIN_EVENTS = 3
MinEvents = Annotated[
    int,
    Query(
        ge=0,
        le=2**31 - 1,
        description="leave out customers with fewer events (their profile is a guess); 0 keeps everyone",
    ),
]
ModelVersionQuery = Annotated[
    int | None, Query(ge=1, le=2**31 - 1, description="a model version; default: the active model")
]
# Stored ids never hold control characters (the loaders reject them), and PostgreSQL text cannot
# hold NUL at all: such an id is a bad request, not a lookup.
CustomerId = Annotated[
    str,
    PathParam(
        min_length=1,
        max_length=MAX_ID_LENGTH,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="a customer id as in the events (no control characters)",
    ),
]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Error}, 503: {"model": Error}}

api = APIRouter(prefix="/api", dependencies=[Depends(require_access)], responses=NOT_FOUND)


@api.get("/traits", response_model=Traits, summary="Traits of a model with labels and sizes")
def get_traits(store: StoreDep, model_version: ModelVersionQuery = None) -> Traits:
    records = _records(store.traits(model_version))  # 404: unknown version / no active model
    if not records:  # a saved model always has components
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"model version {model_version} has no traits")
    version = int(records[0]["model_version"])
    total = sum(int(r["size"]) for r in records)
    traits = [
        Trait(
            trait_id=r["trait_id"],
            position=r["position"],
            label=r["label"],
            top_products=list(r["top_products"]),
            top_categories=list(r["top_categories"]),
            size=r["size"],
            share=r["size"] / total if total else None,
        )
        for r in records
    ]
    return Traits(model_version=version, n_customers=total, traits=traits)


@api.get("/traits/{trait_id}/top", response_model=TopCustomers, summary="Top customers of a trait")
def get_top_customers(
    store: StoreDep,
    trait_id: Annotated[int, PathParam(ge=0, le=MAX_TRAIT_ID)],
    n: Limit = 10,
    model_version: ModelVersionQuery = None,
    min_events: MinEvents = DEFAULT_MIN_EVENTS,
) -> TopCustomers:
    version = model_version or store.active_model_version()
    if version is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "there is no active model yet")
    # 404 for an unknown trait
    frame = store.top_customers(trait_id, n=n, model_version=version, min_events=min_events)
    row = store.connection.execute(
        "SELECT label FROM trait_components WHERE model_version = %s AND trait_id = %s",
        (version, trait_id),
    ).fetchone()
    customers = [
        TopCustomer(rank=i, customer_id=r["customer_id"], score=r["score"], as_of=r["as_of"], **_evidence(r))
        for i, r in enumerate(_records(frame), start=1)
    ]
    return TopCustomers(
        trait_id=trait_id,
        label=row[0] if row else "",
        model_version=version,
        min_events=min_events,
        customers=customers,
    )


# Customer ids may contain "/": the routes take the rest of the path (``:path``), and the two with a
# suffix are declared first, so ".../history" and ".../similar" are matched before the plain one.
@api.get("/customers/{customer_id:path}/history", response_model=History, summary="Profile history")
def get_customer_history(store: StoreDep, customer_id: CustomerId) -> History:
    frame = store.profile_history(customer_id)
    if not len(frame):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"customer {customer_id!r} has no profile history")
    records = _records(frame)
    labels = _labels(store, sorted({int(r["model_version"]) for r in records}))
    history = []
    for r in records:
        names = labels[int(r["model_version"])]
        # A trait the model of that date did not have is NaN in the frame (None here): skip it.
        traits = [
            TraitScore(trait_id=int(col[6:]), label=names.get(int(col[6:])), score=value)
            for col, value in r.items()
            if col.startswith("trait_") and value is not None
        ]
        history.append(
            HistoryEntry(
                as_of=r["as_of"],
                model_version=r["model_version"],
                dominant_trait_id=r["dominant_trait_id"],
                dominant_label=names.get(int(r["dominant_trait_id"])),
                n_events=r["n_events"],
                cold_start=r["cold_start"],
                n_known_tokens=r["n_known_tokens"],
                traits=traits,
            )
        )
    return History(customer_id=customer_id, history=history)


@api.get("/customers/{customer_id:path}/similar", response_model=Similar, summary="Customers like this one")
def get_similar_customers(
    store: StoreDep, customer_id: CustomerId, n: Limit = 10, min_events: MinEvents = DEFAULT_MIN_EVENTS
) -> Similar:
    profile = store.current_profile(customer_id)
    if profile is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"customer {customer_id!r} has no profile")
    names = {t["trait_id"]: t["label"] for t in profile["traits"]}
    similar = [
        SimilarCustomer(
            rank=i,
            customer_id=r["customer_id"],
            similarity=r["similarity"],
            dominant_trait_id=r["dominant_trait_id"],
            dominant_label=names.get(r["dominant_trait_id"]),
            as_of=r["as_of"],
            **_evidence(r),
        )
        for i, r in enumerate(_records(store.similar_customers(customer_id, n=n, min_events=min_events)), 1)
    ]
    version = profile["model_version"]
    return Similar(customer_id=customer_id, model_version=version, min_events=min_events, similar=similar)


@api.get("/customers/{customer_id:path}", response_model=Profile, summary="Current profile of a customer")
def get_customer(
    store: StoreDep,
    customer_id: CustomerId,
    embedding: Annotated[bool, Query(description="include the customer embedding")] = False,
) -> Profile:
    profile = store.current_profile(customer_id)
    if profile is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"customer {customer_id!r} has no profile")
    vector = profile.pop("embedding")
    profile["traits"] = [TraitScore(**{k: _py(v) for k, v in t.items()}) for t in profile["traits"]]
    profile["embedding"] = [_py(x) for x in vector.tolist()] if embedding and vector is not None else None
    return Profile(**{k: _py(v) if k not in ("traits", "embedding") else v for k, v in profile.items()})


@api.get("/models", response_model=ModelVersions, summary="Model versions, newest first")
def get_models(store: StoreDep) -> ModelVersions:
    rows = store.connection.execute("SELECT model_version, trait_match FROM model_versions").fetchall()
    matches = dict(rows)
    models = []
    for r in _records(store.model_versions()):
        r["metrics"] = r["metrics"] or {}
        r["trait_match"] = matches.get(r["model_version"])
        models.append(ModelVersion(**r))
    active = next((m.model_version for m in models if m.status == "active"), None)
    return ModelVersions(active_model_version=active, models=models)


@api.get("/reports", response_model=RunReports, summary="Newest run reports")
def get_reports(
    store: StoreDep,
    kind: Annotated[
        str | None, Query(min_length=1, max_length=64, description="e.g. daily or weekly; default: all")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_REPORTS, description=f"1..{MAX_REPORTS}")] = 20,
) -> RunReports:
    return RunReports(reports=[RunReport(**r) for r in store.run_reports(kind=kind, limit=limit)])


@api.get("/status", response_model=Status, summary="Schema version, active model, exact row counts")
def get_status(store: StoreDep) -> Status:
    return Status(
        db_schema=store.schema,
        schema_version=store.schema_version(),
        active_model_version=store.active_model_version(),
        latest_profile_as_of=store.latest_profile_as_of(),
        table_counts=store.table_counts(),
    )


# Served with the page: scripts and styles only from this app, nothing inline, no framing by
# other sites (the Airflow UI frames it from the same origin).
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'self'; base-uri 'none'; form-action 'self'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@cache
def _index_template() -> str:
    return (UI_DIR / "index.html").read_text(encoding="utf-8")


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _page_content() -> tuple[str, str]:
    """(model summary, traits table rows) as escaped HTML; the page still renders without a DB."""
    try:
        with borrow_store() as store:
            active = store.active_model_version()
            if active is None:
                return "No active model yet: run the traitflow_weekly_retrain DAG.", ""
            models = _records(store.model_versions())
            traits = _records(store.traits(active))
    except Exception as exc:
        error = _http_error(exc)
        if error is None:
            raise
        return f'<span class="error">{_esc(error.detail)}</span>', ""
    model = next(m for m in models if m["model_version"] == active)
    summary = (
        f"Active model {active}, trained through {model['trained_through']:%Y-%m-%d %H:%M}Z, "
        f"{model['n_traits']} traits, {model['n_tokens']:,} tokens."
    )
    total = sum(int(t["size"]) for t in traits)
    rows = []
    for t in traits:
        share = f"{100 * t['size'] / total:.1f}%" if total else "–"
        cells = [
            f'<td class="num">{_esc(t["trait_id"])}</td>',
            f"<td>{_esc(t['label'])}</td>",
            f'<td class="num">{t["size"]:,}</td>',
            f"<td>{share}</td>",
            f'<td class="tags">{_esc(", ".join(t["top_products"]))}</td>',
            f'<td class="tags">{_esc(", ".join(c for c in t["top_categories"] if c))}</td>',
        ]
        rows.append(f'<tr data-trait-id="{_esc(t["trait_id"])}">{"".join(cells)}</tr>')
    return _esc(summary), "\n".join(rows)


class LoginRequiredError(Exception):
    """Raised by ``require_page_access`` for a browser without a session: redirect to login."""


async def require_page_access(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Any:
    try:
        user = await current_user(request, credentials)
    except HTTPException as exc:
        if exc.status_code == status.HTTP_401_UNAUTHORIZED:
            raise LoginRequiredError from exc
        raise
    await run_in_threadpool(_authorize, user)
    return user


def _login_redirect(request: Request, exc: Exception) -> Response:
    from airflow.api_fastapi.app import get_auth_manager

    here = request.scope.get("root_path", "").rstrip("/") + "/"  # path only: Airflow checks next
    return RedirectResponse(get_auth_manager().get_url_login(next_url=here), status.HTTP_303_SEE_OTHER)


def index(user: Annotated[Any, Depends(require_page_access)]) -> HTMLResponse:
    """The page: traits of the active model rendered here, the rest fetched by static/app.js."""
    summary, rows = _page_content()
    page = _index_template().replace("<!--MODEL_SUMMARY-->", summary).replace("<!--TRAITS_ROWS-->", rows)
    return HTMLResponse(page, headers=PAGE_HEADERS)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> Any:
    yield
    POOL.clear()  # the api-server enters mounted FastAPI apps' lifespans


def create_app() -> FastAPI:
    """The plugin's FastAPI app (no I/O: safe to build at import)."""
    app = FastAPI(
        title="Traitflow",
        summary="Read-only API over Traitflow's customer trait profiles (Airflow plugin)",
        description=(
            "Authenticate like the Airflow API: `Authorization: Bearer <token from POST /auth/token>` "
            "or the Airflow UI session cookie. Needs GET on the `Traitflow` custom view."
        ),
        version="1",
        lifespan=_lifespan,
    )
    app.include_router(api)
    app.add_api_route("/", index, methods=["GET"], include_in_schema=False, response_class=HTMLResponse)
    app.add_exception_handler(LoginRequiredError, _login_redirect)
    app.mount("/static", StaticFiles(directory=UI_DIR / "static"), name="static")

    @app.middleware("http")
    async def no_store(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        path = request.url.path.removeprefix(request.scope.get("root_path", ""))
        if path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")  # customer data
        return response

    return app


app = create_app()
_root = _airflow_root_path()

TRAITS_VIEW: Mapping[str, Any] = {
    "name": "Traits",
    "href": f"{_root}{URL_PREFIX.strip('/')}/",
    "icon": f"{_root}{URL_PREFIX.strip('/')}/static/icon.svg",
    "url_route": URL_ROUTE,
    "destination": "nav",
    "category": "browse",
}


class TraitflowPlugin(AirflowPlugin):
    """Traits view + read API (see the module docstring)."""

    name = "traitflow"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Traitflow traits API"}]  # noqa: RUF012
    external_views = [dict(TRAITS_VIEW)]  # noqa: RUF012
