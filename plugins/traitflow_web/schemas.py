"""Response models of the JSON API (its OpenAPI schema) and the conversion of store values into
plain Python for them."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


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
