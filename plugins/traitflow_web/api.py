"""The read-only JSON API (``/api``): every route needs Airflow auth and reads through the Store."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from .auth import require_access
from .metrics import count_cache_read, count_similar_read
from .pool import StoreDep
from .schemas import (
    CustomerProducts,
    Error,
    History,
    HistoryEntry,
    ModelVersion,
    ModelVersions,
    Profile,
    RankedProduct,
    RunReport,
    RunReports,
    Similar,
    SimilarCustomer,
    Status,
    TopCustomer,
    TopCustomers,
    Trait,
    Traits,
    evidence,
    json_response,
    plain,
    records,
)

MAX_TOP_N = 1000
MAX_REPORTS = 200
MAX_ID_LENGTH = 256  # customer_id CHECK constraint in the schema
MAX_TRAIT_ID = 2**63 - 1  # trait_id is a bigint
# traitflow.recommend.MAX_N, repeated (no traitflow import at top level); a test checks that they agree.
MAX_PRODUCTS = 500

Limit = Annotated[int, Query(ge=1, le=MAX_TOP_N, description=f"how many (1..{MAX_TOP_N})")]
# traitflow.profile_batch.MIN_EVIDENCE_EVENTS, repeated here because this package imports no traitflow
# code at top level (import cost, see the package docstring); a test checks that they agree.
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


def current_profile(store: Any, customer_id: str) -> dict[str, Any] | None:
    """``Store.current_profile`` through the Redis profile cache (``traitflow.profile_cache``: off
    without ``TRAITFLOW_REDIS_URL``, falls back to PostgreSQL when Redis fails); counted in metrics."""
    from traitflow.profile_cache import cached_current_profile

    read = cached_current_profile(store, customer_id)
    count_cache_read(read.outcome)
    return read.profile


@api.get("/traits", response_model=Traits, summary="Traits of a model with labels and sizes")
def get_traits(store: StoreDep, model_version: ModelVersionQuery = None) -> Traits:
    rows = records(store.traits(model_version))  # 404: unknown version / no active model
    if not rows:  # a saved model always has components
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"model version {model_version} has no traits")
    version = int(rows[0]["model_version"])
    total = sum(int(r["size"]) for r in rows)
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
        for r in rows
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
    label = store.trait_labels([version])[version].get(trait_id, "")
    customers = [
        TopCustomer(rank=i, customer_id=r["customer_id"], score=r["score"], as_of=r["as_of"], **evidence(r))
        for i, r in enumerate(records(frame), start=1)
    ]
    return TopCustomers(
        trait_id=trait_id, label=label, model_version=version, min_events=min_events, customers=customers
    )


# Customer ids may contain "/": the routes take the rest of the path (``:path``), and those with a
# suffix are declared first, so ".../history", ".../similar" and ".../products" are matched before
# the plain one.
@api.get("/customers/{customer_id:path}/history", response_model=History, summary="Profile history")
def get_customer_history(store: StoreDep, customer_id: CustomerId) -> History:
    entries = store.labelled_profile_history(customer_id)
    if not entries:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"customer {customer_id!r} has no profile history")
    return History(customer_id=customer_id, history=[HistoryEntry(**asdict(e)) for e in entries])


@api.get("/customers/{customer_id:path}/similar", response_model=Similar, summary="Customers like this one")
async def get_similar_customers(
    store: StoreDep, customer_id: CustomerId, n: Limit = 10, min_events: MinEvents = DEFAULT_MIN_EVENTS
) -> Response:
    """Async like ``get_customer``: an answer cached in Redis (``profile_cache.cached_similar_hit``,
    kept ``TRAITFLOW_REDIS_SIMILAR_TTL_SECONDS``) is one round trip on the event loop; the
    comparison with every profile runs in the thread pool and is cached."""
    from traitflow.profile_cache import HIT, SimilarQuestion, cached_similar, cached_similar_hit

    question = SimilarQuestion(customer_id, n, min_events)
    body = cached_similar_hit(store, question)
    outcome = HIT
    if body is None:
        body, outcome = await run_in_threadpool(
            cached_similar, store, question, lambda: _similar_answer(store, question)
        )
    count_similar_read(outcome)
    return Response(body, media_type="application/json")


def _similar_answer(store: Any, question: Any) -> bytes:
    """The ``Similar`` body of ``question`` (a ``profile_cache.SimilarQuestion``), as JSON bytes."""
    customer_id = question.customer_id
    profile = current_profile(store, customer_id)
    if profile is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"customer {customer_id!r} has no profile")
    names = {t["trait_id"]: t["label"] for t in profile["traits"]}
    rows = records(store.similar_customers(customer_id, n=question.n, min_events=question.min_events))
    similar = [
        SimilarCustomer(
            rank=i,
            customer_id=r["customer_id"],
            similarity=r["similarity"],
            dominant_trait_id=r["dominant_trait_id"],
            dominant_label=names.get(r["dominant_trait_id"]),
            as_of=r["as_of"],
            **evidence(r),
        )
        for i, r in enumerate(rows, 1)
    ]
    answer = Similar(
        customer_id=customer_id,
        model_version=profile["model_version"],
        min_events=question.min_events,
        similar=similar,
    )
    return answer.model_dump_json().encode("utf-8")


@api.get(
    "/customers/{customer_id:path}/products",
    response_model=CustomerProducts,
    summary="Products the customer's profile ranks highest",
    responses={409: {"model": Error}},
)
def get_customer_products(
    store: StoreDep,
    customer_id: CustomerId,
    n: Annotated[int, Query(ge=1, le=MAX_PRODUCTS, description=f"how many (1..{MAX_PRODUCTS})")] = 10,
    new_only: Annotated[
        bool, Query(description="leave out products the customer already had events on")
    ] = False,
) -> Response:
    """The profile's product ranking (``traitflow.recommend``: what ``traitflow evaluate`` measures),
    with the model of the profile from the process's model cache."""
    from traitflow.recommend import NoProductRankingError, customer_products

    profile = current_profile(store, customer_id)
    if profile is None:
        if store.active_model_version() is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "there is no active model yet")
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"customer {customer_id!r} has no profile")
    try:
        result = customer_products(store, profile, n, new_only=new_only)
    except NoProductRankingError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    body = asdict(result)
    body["products"] = [RankedProduct(**p) for p in body["products"]]
    return json_response(CustomerProducts(**{k: plain(v) if k != "products" else v for k, v in body.items()}))


@api.get("/customers/{customer_id:path}", response_model=Profile, summary="Current profile of a customer")
async def get_customer(
    store: StoreDep,
    customer_id: CustomerId,
    embedding: Annotated[bool, Query(description="include the customer embedding")] = False,
) -> Response:
    """Async: a cached profile is one Redis round trip on the event loop (``cached_hit``); only a
    read that needs PostgreSQL goes to the thread pool. Under load the trips to a pool thread and
    back, each waiting for the interpreter lock behind busier requests, cost a cached read more
    than its own work."""
    from traitflow.profile_cache import HIT, cached_hit

    profile = cached_hit(store, customer_id)
    if profile is not None:
        count_cache_read(HIT)
    else:
        profile = await run_in_threadpool(current_profile, store, customer_id)
    if profile is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"customer {customer_id!r} has no profile")
    vector = profile.pop("embedding")
    fields = {k: plain(v) for k, v in profile.items() if k != "traits"}
    fields["traits"] = [{k: plain(v) for k, v in t.items()} for t in profile["traits"]]
    fields["embedding"] = [plain(x) for x in vector.tolist()] if embedding and vector is not None else None
    return json_response(Profile.model_validate(fields))  # one call builds the nested TraitScores


@api.get("/models", response_model=ModelVersions, summary="Model versions, newest first")
def get_models(store: StoreDep) -> ModelVersions:
    matches = store.trait_matches()
    models = []
    for r in records(store.model_versions()):
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
