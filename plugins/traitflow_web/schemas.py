"""Response models of the JSON API (its OpenAPI schema) and the conversion of store values into
plain Python for them."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any

from fastapi.responses import Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictFloat, StrictInt


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


class RankedProduct(BaseModel):
    rank: int
    product_id: str
    name: str | None = Field(description="stored at ingestion; null if unknown")
    score: float = Field(
        description="log P(product | profile's traits) + 3 cos(customer vector, product vector)"
    )
    had_events: bool = Field(description="the customer has stored events on it (never with new_only)")


class CustomerProducts(Evidence):
    customer_id: str
    model_version: int = Field(description="the model of the customer's current profile")
    as_of: datetime
    new_only: bool = Field(description="products the customer had events on were left out")
    products: list[RankedProduct] = Field(description="best first")


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
    # Lineage: "full" or "incremental" (None: not recorded) and, for an increment, the model it
    # continued and that model's trained_through.
    training_mode: str | None = None
    parent_version: int | None = None
    trained_since: datetime | None = None


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


class TraitSizes(BaseModel):
    trait_id: int
    label: str | None = Field(description="from the newest promoted model that has the trait")
    sizes: list[int] = Field(description="customers with this dominant trait at each of the times")


class TraitSizeHistory(BaseModel):
    """Trait sizes over time: at each profile time, every profiled customer counts once, under the
    dominant trait of their newest profile at or before it."""

    times: list[datetime] = Field(description="profile times (as_of), oldest first")
    traits: list[TraitSizes]


class ModelQuality(BaseModel):
    model_version: int
    status: str
    trained_through: datetime
    passed: bool | None = Field(description="the quality gate's verdict; null if the model was not gated")
    hit_rate: float | None = Field(description="held-out hit@10 of the model (quality gate)")
    baseline: str | None = Field(description="what the gate compared with: active | popularity")
    baseline_hit_rate: float | None
    quality_margin: float | None = Field(description="how much below the baseline the gate tolerates")
    training_mode: str | None = Field(description="full | incremental; null if not recorded (judged as full)")
    drift: float | None = Field(description="weighted mean aligned drift from the model it replaced")
    recent_weighted_drift: float | None = Field(
        description="an increment's drift weighted by its corpus's token counts; null for a full retrain"
    )
    drift_threshold: float | None = Field(
        description="traits are refitted above this drift: increment_drift_threshold for an increment,"
        " else drift_threshold"
    )
    refit_on: str | None = Field(
        description="the drift compared with drift_threshold: weighted_mean_drift | recent_weighted_drift;"
        " null if not measured"
    )


class ModelQualities(BaseModel):
    models: list[ModelQuality] = Field(description="oldest first, rejected versions included")


class MapPoint(BaseModel):
    customer_id: str
    x: float
    y: float
    dominant_trait_id: int


class MapTrait(BaseModel):
    trait_id: int
    label: str
    x: float = Field(description="where a profile made of this trait alone lands")
    y: float


class TraitMap(BaseModel):
    """Current profiles of a deterministic sample of customers on the first two principal
    components of their trait profiles (``traitflow.projection.trait_map``)."""

    model_version: int
    n_profiled: int = Field(description="customers with a current profile of this model")
    explained: list[float] = Field(description="share of the sample's profile variance on each axis")
    traits: list[MapTrait]
    points: list[MapPoint]


class Status(BaseModel):
    db_schema: str
    schema_version: int
    active_model_version: int | None
    latest_profile_as_of: datetime | None
    table_counts: dict[str, int]


# ---------------------------------------------------------------- event posts (plugin events.py)

# traitflow.online_update.MAX_EVENTS, repeated (this package imports no traitflow code at top
# level); a test checks that they agree.
MAX_POSTED_EVENTS = 10_000


def _encodable(value: str) -> str:
    """JSON may carry lone surrogates ("\\ud800"): no UTF-8 text, so no stored text either."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from None
    return value


Text = Annotated[str, AfterValidator(_encodable)]


class PostedEvent(BaseModel):
    """One event of a customer in the canonical shape. Fields are text as in an event file; a
    missing or invalid value makes the event a reject with the loaders' reason, not an error."""

    model_config = ConfigDict(extra="forbid")

    event_time: Text | None = Field(default=None, description="ISO 8601; without an offset: UTC")
    action: Text | None = Field(
        default=None, description="view | wishlist | cart | remove_from_cart | purchase"
    )
    product_id: Text | None = None
    category: Text | None = None
    price: StrictInt | StrictFloat | Text | None = Field(default=None, description="a number (or its text)")
    session_id: Text | None = None


class CustomerEvent(PostedEvent):
    customer_id: Text | None = None


class CustomerEvents(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[PostedEvent] = Field(min_length=1, max_length=MAX_POSTED_EVENTS)


class ManyCustomersEvents(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[CustomerEvent] = Field(min_length=1, max_length=MAX_POSTED_EVENTS)


class EventReject(BaseModel):
    row_number: int = Field(description="1-based position of the event in the request")
    reason: str = Field(description="a reject reason of the event loaders")


class UpdatedProfile(BaseModel):
    customer_id: str
    as_of: datetime = Field(description="end of the UTC day of the customer's newest event")
    model_version: int
    dominant_trait_id: int
    dominant_label: str | None
    n_events: int
    cold_start: str = Field(description="none | few_tokens | no_history")
    n_known_tokens: int | None
    confidence: float | None
    traits: list[TraitScore] = Field(description="in the model's trait order")


class UnprofiledCustomer(BaseModel):
    customer_id: str
    as_of: datetime
    reason: str


class EventsPosted(BaseModel):
    """``n_received = n_stored + n_rejected``; ``n_stored = n_inserted + n_already_present``."""

    source: str = Field(description="names this request's events and rejects in the store")
    n_received: int
    n_stored: int
    n_inserted: int = Field(description="events new to the store")
    n_already_present: int = Field(description="events stored by an earlier post or file")
    n_rejected: int
    rejects: list[EventReject]
    profiles: list[UpdatedProfile] = Field(description="recomputed and written, by customer id")
    unprofiled: list[UnprofiledCustomer] = Field(description="events stored, profile not updated")


def json_response(model: BaseModel, status_code: int = 200) -> Response:
    """``model`` as its JSON response, built by the route: a route that returns the model itself
    has FastAPI validate it against the route's ``response_model`` once more, in one more trip to
    the thread pool."""
    return Response(model.model_dump_json(), status_code, media_type="application/json")


def plain(value: Any) -> Any:
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


def records(frame: Any) -> list[dict[str, Any]]:
    """The rows of a store frame as dicts of plain values."""
    return [{k: plain(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


_EVIDENCE_FIELDS = ("n_events", "n_known_tokens", "confidence", "cold_start")


def evidence(record: dict[str, Any]) -> dict[str, Any]:
    """The evidence fields of a record (``Evidence`` keyword arguments)."""
    return {name: record[name] for name in _EVIDENCE_FIELDS}
