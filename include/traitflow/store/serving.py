"""Reads behind the UI plugin's API: trait labels, trait matches and labelled profile history.

The rest of what the plugin serves comes from the general reads (``reads.traits``,
``reads.top_customers``, ...); these are the lookups that only a labelled view needs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
import psycopg

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
