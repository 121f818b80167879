"""The JSON bodies of the post and profile routes, built from plain values in one validation:
byte for byte the JSON of the same response models built field by field, with the known values
(no database: the library calls behind the routes return fixed answers)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

AS_OF = datetime(2024, 1, 9, 23, 59, 59, 999999, tzinfo=UTC)
EAST = timezone(timedelta(hours=2))


def _update() -> Any:
    """Every part of a post's answer: a reject, two profiles (one whose dominant trait has no
    label), an unprofiled customer; floats of several magnitudes, non-ASCII text, a None."""
    from traitflow.online_update import EventUpdate, Reject, Unprofiled, UpdatedProfile

    profiles = (
        UpdatedProfile(
            customer_id="alice/ü",
            as_of=AS_OF,
            model_version=4,
            trait_ids=(3, 7, 11),
            labels=("cat 1 🛒", "p4 · p5", "x"),
            scores=(0.1 + 0.2, 1e-7, 12345.678),
            dominant_trait_id=3,
            n_events=5,
            n_known_tokens=4,
            confidence=4 / 7,
            cold_start="none",
        ),
        UpdatedProfile(
            customer_id="bob",
            as_of=datetime(2024, 1, 9, 12, 0, tzinfo=EAST),
            model_version=4,
            trait_ids=(3,),
            labels=("only",),
            scores=(1.0,),
            dominant_trait_id=99,
            n_events=1,
            n_known_tokens=None,
            confidence=None,
            cold_start="no_history",
        ),
    )
    return EventUpdate(
        source="api:admin:2024-01-10T00:00:00+00:00",
        n_received=4,
        n_inserted=2,
        n_already_present=1,
        n_rejected=1,
        rejects=(Reject(row_number=2, reason="unknown_action"),),
        profiles=profiles,
        unprofiled=(Unprofiled(customer_id="carol", as_of=AS_OF, reason="no promoted model"),),
    )


def _posted_field_by_field(update: Any) -> Any:
    """The same answer, each nested model built by its constructor."""
    from traitflow_web.schemas import (
        EventReject,
        EventsPosted,
        TraitScore,
        UnprofiledCustomer,
        UpdatedProfile,
    )

    profiles = []
    for p in update.profiles:
        names = dict(zip(p.trait_ids, p.labels, strict=True))
        profiles.append(
            UpdatedProfile(
                customer_id=p.customer_id,
                as_of=p.as_of,
                model_version=p.model_version,
                dominant_trait_id=p.dominant_trait_id,
                dominant_label=names.get(p.dominant_trait_id),
                n_events=p.n_events,
                cold_start=p.cold_start,
                n_known_tokens=p.n_known_tokens,
                confidence=p.confidence,
                traits=[
                    TraitScore(trait_id=t, label=names[t], score=s)
                    for t, s in zip(p.trait_ids, p.scores, strict=True)
                ],
            )
        )
    return EventsPosted(
        source=update.source,
        n_received=update.n_received,
        n_stored=update.n_stored,
        n_inserted=update.n_inserted,
        n_already_present=update.n_already_present,
        n_rejected=update.n_rejected,
        rejects=[EventReject(row_number=r.row_number, reason=r.reason) for r in update.rejects],
        profiles=profiles,
        unprofiled=[
            UnprofiledCustomer(customer_id=u.customer_id, as_of=u.as_of, reason=u.reason)
            for u in update.unprofiled
        ],
    )


def test_the_post_answer_is_the_json_of_its_models(plugin: ModuleType) -> None:
    from traitflow_web.events import _response
    from traitflow_web.schemas import json_response

    update = _update()
    body = json_response(_response(update)).body
    assert body == json_response(_posted_field_by_field(update)).body
    answer = json.loads(body)
    assert answer["n_stored"] == 3 and answer["rejects"] == [{"row_number": 2, "reason": "unknown_action"}]
    alice, bob = answer["profiles"]
    assert alice["customer_id"] == "alice/ü" and alice["dominant_label"] == "cat 1 🛒"
    assert alice["as_of"] == "2024-01-09T23:59:59.999999Z"
    assert alice["traits"] == [
        {"trait_id": 3, "label": "cat 1 🛒", "score": 0.1 + 0.2},
        {"trait_id": 7, "label": "p4 · p5", "score": 1e-7},
        {"trait_id": 11, "label": "x", "score": 12345.678},
    ]
    assert bob["dominant_label"] is None and bob["confidence"] is None and bob["n_known_tokens"] is None
    assert bob["as_of"] == "2024-01-09T12:00:00+02:00"
    assert answer["unprofiled"] == [
        {"customer_id": "carol", "as_of": "2024-01-09T23:59:59.999999Z", "reason": "no promoted model"}
    ]


def _stored_profile() -> dict[str, Any]:
    """A current profile as the Store returns it: numpy scalars, a NaN, a float32 embedding."""
    return {
        "customer_id": "alice/ü",
        "as_of": AS_OF,
        "updated_at": datetime(2024, 1, 10, 2, 0, tzinfo=UTC),
        "model_version": np.int64(4),
        "dominant_trait_id": np.int64(7),
        "dominant_label": "p4 · p5",
        "n_events": np.int64(5),
        "cold_start": "none",
        "n_known_tokens": np.int64(4),
        "confidence": np.float64("nan"),
        "traits": [
            {"trait_id": np.int64(3), "label": "cat 1 🛒", "score": np.float32(0.25)},
            {"trait_id": np.int64(7), "label": "p4 · p5", "score": np.float64(0.75)},
        ],
        "embedding": np.array([0.5, -1.25, 3e-8], dtype=np.float32),
    }


def _profile_field_by_field(stored: dict[str, Any], embedding: bool) -> Any:
    from traitflow_web.schemas import Profile, TraitScore, plain

    vector = stored["embedding"]
    return Profile(
        **{k: plain(v) for k, v in stored.items() if k not in ("traits", "embedding")},
        traits=[TraitScore(**{k: plain(v) for k, v in t.items()}) for t in stored["traits"]],
        embedding=[plain(x) for x in vector.tolist()] if embedding else None,
    )


@pytest.fixture
def profile_client(
    client: TestClient, plugin: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    """``client`` whose profile reads find ``_stored_profile()`` in the cache (a fresh copy each)."""
    from traitflow_web.pool import get_store

    import traitflow.profile_cache as profile_cache

    class PlaceholderStore:
        schema = "traitflow"

    async def placeholder() -> Any:
        return PlaceholderStore()

    monkeypatch.setattr(profile_cache, "cached_hit", lambda store, customer_id: _stored_profile())
    plugin.app.dependency_overrides[get_store] = placeholder  # cleared by the client fixture
    yield client


@pytest.mark.parametrize("embedding", [False, True])
def test_the_profile_answer_is_the_json_of_its_models(profile_client: TestClient, embedding: bool) -> None:
    from traitflow_web.schemas import json_response

    response = profile_client.get("/api/customers/alice%2F%C3%BC", params={"embedding": embedding})
    assert response.status_code == 200
    assert response.content == json_response(_profile_field_by_field(_stored_profile(), embedding)).body
    answer = response.json()
    assert answer["model_version"] == 4 and answer["dominant_trait_id"] == 7 and answer["confidence"] is None
    assert answer["traits"] == [
        {"trait_id": 3, "label": "cat 1 🛒", "score": 0.25},
        {"trait_id": 7, "label": "p4 · p5", "score": 0.75},
    ]
    expected = [0.5, -1.25, float(np.float32(3e-8))] if embedding else None
    assert answer["embedding"] == expected
