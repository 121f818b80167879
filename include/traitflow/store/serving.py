"""Reads behind the UI plugin's API: trait labels, trait matches, labelled profile history and
the data of the page's charts (trait sizes over time, model quality, a sample of profiles).

The rest of what the plugin serves comes from the general reads (``reads.traits``,
``reads.top_customers``, ...); these are the lookups that only a labelled view or a chart needs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import psycopg

from traitflow.drift import refit_figure

from . import reads as _reads
from .naming import trait_id_of_column


@dataclass(frozen=True)
class LabelledTraitScore:
    """A trait's score in a profile, with the trait's label (None if the model has no such trait)."""

    trait_id: int
    label: str | None
    score: float


@dataclass(frozen=True)
class LabelledHistoryEntry:
    """One stored profile of a customer with the labels of the model it was computed with.

    ``traits`` holds the traits of that model in ascending trait id order.
    """

    as_of: datetime
    model_version: int
    dominant_trait_id: int
    dominant_label: str | None
    n_events: int
    cold_start: str
    n_known_tokens: int | None
    traits: tuple[LabelledTraitScore, ...]


def trait_labels(conn: psycopg.Connection, model_versions: Sequence[int]) -> dict[int, dict[int, str]]:
    """``{model_version: {trait_id: label}}``; a version without traits maps to ``{}``."""
    versions = sorted({int(v) for v in model_versions})
    labels: dict[int, dict[int, str]] = {v: {} for v in versions}
    if not versions:
        return labels
    rows = conn.execute(
        "SELECT model_version, trait_id, label FROM trait_components WHERE model_version = ANY(%s)",
        (versions,),
    ).fetchall()
    for version, trait_id, label in rows:
        labels[int(version)][int(trait_id)] = label
    return labels


def trait_matches(conn: psycopg.Connection) -> dict[int, dict[str, Any] | None]:
    """``{model_version: trait_match}`` of every model version (None where none was recorded)."""
    rows = conn.execute("SELECT model_version, trait_match FROM model_versions").fetchall()
    return {int(version): match for version, match in rows}


def _optional_int(value: Any) -> int | None:
    """An integer column value of a frame record; None for a missing one (None or NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return int(value)


def _labelled_scores(record: Mapping[Any, Any], labels: Mapping[int, str]) -> tuple[LabelledTraitScore, ...]:
    """The trait scores of one ``profile_history`` record; a trait the record's model did not
    have is NaN there and left out."""
    scores = []
    for column, value in record.items():
        trait_id = trait_id_of_column(str(column))
        if trait_id is None or value is None or math.isnan(value):
            continue
        scores.append(LabelledTraitScore(trait_id, labels.get(trait_id), float(value)))
    return tuple(scores)


def labelled_history(conn: psycopg.Connection, customer_id: str) -> list[LabelledHistoryEntry]:
    """Every stored profile of ``customer_id``, oldest first, labelled; ``[]`` if never profiled."""
    frame = _reads.profile_history(conn, customer_id)
    if not len(frame):
        return []
    records = frame.to_dict(orient="records")
    labels = trait_labels(conn, [int(r["model_version"]) for r in records])
    entries = []
    for r in records:
        names = labels[int(r["model_version"])]
        entries.append(
            LabelledHistoryEntry(
                as_of=pd.Timestamp(r["as_of"]).to_pydatetime(),
                model_version=int(r["model_version"]),
                dominant_trait_id=int(r["dominant_trait_id"]),
                dominant_label=names.get(int(r["dominant_trait_id"])),
                n_events=int(r["n_events"]),
                cold_start=str(r["cold_start"]),
                n_known_tokens=_optional_int(r["n_known_tokens"]),
                traits=_labelled_scores(r, names),
            )
        )
    return entries


# ------------------------------------------------------------------------------------ charts


@dataclass(frozen=True)
class TraitSizeSeries:
    """Customers whose profile had ``trait_id`` as dominant trait at each time of a
    ``TraitSizeHistory`` (aligned with its ``times``)."""

    trait_id: int
    label: str | None
    sizes: tuple[int, ...]


@dataclass(frozen=True)
class TraitSizeHistory:
    """Trait sizes at the newest profile times: at each time, every profiled customer counts once,
    under the dominant trait of their newest profile at or before that time."""

    times: tuple[datetime, ...]
    series: tuple[TraitSizeSeries, ...]


# Each history row holds from its as_of until the customer's next one: +1 for its dominant trait
# when it starts, -1 when it is replaced. The running sum per trait over all profile times is the
# trait's size at each time, in one pass over the history (no per-time scan of it).
_TRAIT_SIZES_SQL = """
WITH spans AS (
    SELECT dominant_trait_id AS trait_id, as_of,
           lead(as_of) OVER (PARTITION BY customer_id ORDER BY as_of) AS replaced_at
    FROM customer_profile_history
), changes AS (
    SELECT trait_id, at, sum(delta) AS delta
    FROM (SELECT trait_id, as_of AS at, 1 AS delta FROM spans
          UNION ALL
          SELECT trait_id, replaced_at, -1 FROM spans WHERE replaced_at IS NOT NULL) AS deltas
    GROUP BY trait_id, at
), times AS (
    SELECT DISTINCT at FROM changes
), sizes AS (
    SELECT t.at, r.trait_id,
           sum(coalesce(c.delta, 0)) OVER (PARTITION BY r.trait_id ORDER BY t.at) AS size
    FROM times t
    CROSS JOIN (SELECT DISTINCT trait_id FROM changes) AS r
    LEFT JOIN changes c ON c.trait_id = r.trait_id AND c.at = t.at
)
SELECT at, trait_id, size FROM sizes
WHERE at IN (SELECT at FROM times ORDER BY at DESC LIMIT %s)
ORDER BY trait_id, at
"""


def _newest_trait_labels(conn: psycopg.Connection) -> dict[int, str]:
    """``{trait_id: label}`` from the newest promoted model having the trait (else the newest any)."""
    rows = conn.execute(
        "SELECT DISTINCT ON (c.trait_id) c.trait_id, c.label FROM trait_components c"
        " JOIN model_versions m USING (model_version)"
        " ORDER BY c.trait_id, m.status IN ('active', 'retired') DESC, c.model_version DESC"
    ).fetchall()
    return {int(trait_id): label for trait_id, label in rows}


def trait_size_history(conn: psycopg.Connection, max_times: int) -> TraitSizeHistory:
    """Trait sizes at the newest ``max_times`` profile times, oldest first; traits with no
    customer at any of them are left out. Empty before the first profile write."""
    rows = conn.execute(_TRAIT_SIZES_SQL, (int(max_times),)).fetchall()
    times = sorted({at for at, _, _ in rows})
    by_trait: dict[int, list[int]] = {}
    for _, trait_id, size in rows:  # ordered by trait, then time: one value per time
        by_trait.setdefault(int(trait_id), []).append(int(size))
    labels = _newest_trait_labels(conn) if by_trait else {}
    series = tuple(
        TraitSizeSeries(trait_id, labels.get(trait_id), tuple(sizes))
        for trait_id, sizes in sorted(by_trait.items())
        if any(sizes)
    )
    return TraitSizeHistory(times=tuple(times), series=series)


@dataclass(frozen=True)
class ModelQuality:
    """A model version's held-out quality and drift, with the thresholds it was judged by.

    hit_rate : the quality gate's held-out hit@10 of the model (None if it was not gated)
    baseline, baseline_hit_rate : what the gate compared it with ("active" or "popularity")
    quality_margin : how much worse than the baseline the gate tolerates
    training_mode : "full", "incremental", or None (not recorded: judged as full)
    drift : weighted mean aligned drift from the model it replaced (None if not measured)
    recent_weighted_drift : the same drift weighted by the token counts of an increment's corpus
        (None for a full retrain, or when none of the shared tokens occurs in it)
    drift_threshold : the drift above which traits are refitted, for the version's mode: the
        ``increment_drift_threshold`` an increment was judged by, else the ``drift_threshold`` of
        the model's stored config
    refit_on : which of "weighted_mean_drift" and "recent_weighted_drift" was compared with
        ``drift_threshold`` (``traitflow.drift.refit_figure``); None if drift was not measured
    """

    model_version: int
    status: str
    trained_through: datetime
    passed: bool | None
    hit_rate: float | None
    baseline: str | None
    baseline_hit_rate: float | None
    quality_margin: float | None
    training_mode: str | None
    drift: float | None
    recent_weighted_drift: float | None
    drift_threshold: float | None
    refit_on: str | None


def _number(mapping: Mapping[str, Any] | None, key: str) -> float | None:
    value = (mapping or {}).get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _model_quality(row: tuple[Any, ...]) -> ModelQuality:
    version, status, trained_through, gate, drift, triggers, increment, training_mode = row
    gate = gate or {}
    baseline = gate.get("baseline")
    margin = _number(gate, "margin")
    weighted, recent = _number(drift, "weighted_mean_drift"), _number(drift, "recent_weighted_drift")
    incremental = training_mode == "incremental"
    if incremental:
        # The threshold the drift step recorded with the drift; the stored config's otherwise.
        threshold = _number(drift, "increment_threshold")
        if threshold is None:
            threshold = _number(increment, "increment_drift_threshold")
    else:
        threshold = _number(triggers, "drift_threshold")
    return ModelQuality(
        model_version=int(version),
        status=str(status),
        trained_through=trained_through,
        passed=gate.get("passed") if isinstance(gate.get("passed"), bool) else None,
        hit_rate=_number(gate, "candidate_hit_rate"),
        baseline=baseline if isinstance(baseline, str) else None,
        baseline_hit_rate=_number(gate, f"{baseline}_hit_rate") if isinstance(baseline, str) else None,
        quality_margin=margin if margin is not None else _number(triggers, "quality_margin"),
        training_mode=training_mode,
        drift=weighted,
        recent_weighted_drift=recent,
        drift_threshold=threshold,
        refit_on=refit_figure(weighted, recent, incremental=incremental),
    )


def model_quality(conn: psycopg.Connection) -> list[ModelQuality]:
    """Quality and drift of every model version, oldest first (rejected versions included)."""
    rows = conn.execute(
        "SELECT model_version, status, trained_through, metrics -> 'quality_gate', drift,"
        " params -> 'triggers', params -> 'increment', training_mode"
        " FROM model_versions ORDER BY model_version"
    ).fetchall()
    return [_model_quality(row) for row in rows]


@dataclass(frozen=True)
class ProfileSample:
    """Current profiles of one model for a deterministic sample of its customers.

    ``profiles`` (n, k) float64 in the model's trait order (``trait_ids``, ``labels``);
    ``dominant_trait_ids`` (n,) int64; ``n_profiled``: all current profiles of the model.
    """

    model_version: int
    trait_ids: tuple[int, ...]
    labels: tuple[str, ...]
    customer_ids: tuple[str, ...]
    dominant_trait_ids: np.ndarray
    profiles: np.ndarray
    n_profiled: int


def profile_sample(conn: psycopg.Connection, model_version: int | None, limit: int) -> ProfileSample:
    """Up to ``limit`` current profiles of ``model_version`` (default: the active model), the same
    customers for the same data: the first by md5 of the customer id, a stable pseudo-random order."""
    version = _reads._active_or(conn, model_version)  # NotFoundError: unknown / no active model
    components = conn.execute(
        "SELECT trait_id, label FROM trait_components WHERE model_version = %s ORDER BY position", (version,)
    ).fetchall()
    rows = conn.execute(
        "SELECT customer_id, dominant_trait_id, traits FROM customer_profiles WHERE model_version = %s"
        " ORDER BY md5(customer_id), customer_id LIMIT %s",
        (version, int(limit)),
    ).fetchall()
    count = conn.execute(
        "SELECT count(*) FROM customer_profiles WHERE model_version = %s", (version,)
    ).fetchone()
    k = len(components)
    return ProfileSample(
        model_version=version,
        trait_ids=tuple(int(t) for t, _ in components),
        labels=tuple(str(label) for _, label in components),
        customer_ids=tuple(str(r[0]) for r in rows),
        dominant_trait_ids=np.array([r[1] for r in rows], dtype=np.int64),
        profiles=np.array([r[2] for r in rows], dtype=np.float64).reshape(len(rows), k),
        n_profiled=int(count[0]) if count else 0,
    )
