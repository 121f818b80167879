"""The data of the page's charts (``/api/charts``): trait sizes over time, model quality with
the thresholds it was judged by, and a 2-D map of a sample of customers. Each route is one
named Store read; the charts of trait sizes and of a customer's history use the ``/api`` routes."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from .api import NOT_FOUND, ModelVersionQuery
from .auth import require_access
from .pool import StoreDep
from .schemas import (
    MapPoint,
    MapTrait,
    ModelQualities,
    ModelQuality,
    TraitMap,
    TraitSizeHistory,
    TraitSizes,
)

MAX_TIMES = 365
MAX_MAP_POINTS = 5000
COORDINATE_DIGITS = 5  # enough for a chart, and far shorter JSON than full float64 digits

charts = APIRouter(prefix="/api/charts", dependencies=[Depends(require_access)], responses=NOT_FOUND)


@charts.get("/trait-sizes", response_model=TraitSizeHistory, summary="Trait sizes over time")
def get_trait_sizes(
    store: StoreDep,
    times: Annotated[int, Query(ge=1, le=MAX_TIMES, description=f"newest times, 1..{MAX_TIMES}")] = 90,
) -> TraitSizeHistory:
    history = store.trait_size_history(max_times=times)
    return TraitSizeHistory(
        times=list(history.times),
        traits=[TraitSizes(trait_id=s.trait_id, label=s.label, sizes=list(s.sizes)) for s in history.series],
    )


@charts.get("/model-quality", response_model=ModelQualities, summary="Hit rate and drift per model version")
def get_model_quality(store: StoreDep) -> ModelQualities:
    return ModelQualities(models=[ModelQuality(**asdict(q)) for q in store.model_quality()])


@charts.get("/trait-map", response_model=TraitMap, summary="A 2-D map of a sample of customers")
def get_trait_map(
    store: StoreDep,
    n: Annotated[int, Query(ge=1, le=MAX_MAP_POINTS, description=f"customers (1..{MAX_MAP_POINTS})")] = 500,
    model_version: ModelVersionQuery = None,
) -> TraitMap:
    from traitflow.projection import trait_map

    sample = store.profile_sample(model_version, limit=n)  # 404: unknown version / no active model
    projected = trait_map(sample.profiles)
    xy = projected.coordinates.round(COORDINATE_DIGITS).tolist()
    axes = projected.trait_axes.round(COORDINATE_DIGITS).tolist()
    return TraitMap(
        model_version=sample.model_version,
        n_profiled=sample.n_profiled,
        explained=projected.explained.tolist(),
        traits=[
            MapTrait(trait_id=t, label=label, x=x, y=y)
            for t, label, (x, y) in zip(sample.trait_ids, sample.labels, axes, strict=True)
        ],
        points=[
            MapPoint(customer_id=c, x=x, y=y, dominant_trait_id=d)
            for c, (x, y), d in zip(sample.customer_ids, xy, sample.dominant_trait_ids.tolist(), strict=True)
        ],
    )
