"""Event posts through the plugin (``POST /api/customers/{id}/events``, ``POST /api/events``) on
a real PostgreSQL: the profile they write is the one the next daily run writes, rejects are
returned and stored, re-posts add nothing, hostile input is a 4xx, and only op/admin may post."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from traitflow import jobs
from traitflow.config import PipelineConfig
from traitflow.runs import RunContext

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

TRAITS = (3, 7, 11)
TRAINED_THROUGH = datetime(2024, 1, 7, tzinfo=UTC)
DAY = timedelta(days=1)
# Tokens build_model knows: cart_p1, purchase_p2, view_p4, cart_p5, wishlist_p7.
JAN8: list[dict[str, Any]] = [
    {"event_time": "2024-01-08T10:00:00Z", "action": "cart", "product_id": "p1", "category": "cat 1 🛒"},
    {"event_time": "2024-01-08T11:00:00Z", "action": "view", "product_id": "p4", "price": 9.5},
]
JAN9: list[dict[str, Any]] = [
    {"event_time": "2024-01-09T09:00:00+02:00", "action": "purchase", "product_id": "p2"},
    {"event_time": "2024-01-09T12:30:00", "action": "cart", "product_id": "p5", "session_id": "s1"},
    {"event_time": "2024-01-09T13:00:00Z", "action": "wishlist", "product_id": "p7"},
]


@pytest.fixture
def model_db(empty_db: Any, build_model: Any) -> Any:
    """The plugin's schema with one promoted model that weights events by recency (so a profile
    depends on its ``as_of``)."""
    model = build_model(trait_ids=TRAITS, trained_through=TRAINED_THROUGH)
    # Plain token vectors: build_model's include float32 extremes, whose averages overflow.
    vectors = np.random.default_rng(5).standard_normal(model.tokens.vectors.shape).astype(np.float32)
    tokens = dataclasses.replace(model.tokens, vectors=vectors)
    config = PipelineConfig.from_mapping({"k": 3, "recency_half_life_days": 2.0})
    version = empty_db.save_model(dataclasses.replace(model, tokens=tokens, config=config))
    empty_db.promote(version)
    return empty_db


def _post(client: TestClient, customer: str, events: list[dict[str, Any]]) -> Any:
    return client.post(f"/api/customers/{customer}/events", json={"events": events})


def _daily(store: Any, end: datetime, tmp_path: Path) -> Any:
    """The daily jobs for [end - 1 day, end) on the plugin's schema, as the DAG runs them."""
    context = RunContext("daily", end - DAY, end, str(tmp_path / "daily"), store.url, store.schema)
    plan = jobs.plan_update(context, jobs.select_customers(context))
    for shard in plan.shards():
        jobs.update_profiles(context, plan, shard)
    return jobs.commit_update(context, plan)


def test_a_post_writes_the_profile_the_next_daily_run_writes(
    client: TestClient, model_db: Any, tmp_path: Path
) -> None:
    first = _post(client, "alice", JAN8)
    assert first.status_code == 200, first.text
    assert first.json()["profiles"][0]["as_of"] == "2024-01-09T00:00:00Z"

    response = _post(client, "alice", JAN9)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["n_received"], body["n_stored"], body["n_inserted"], body["n_rejected"]) == (3, 3, 3, 0)
    [posted] = body["profiles"]
    assert posted["as_of"] == "2024-01-10T00:00:00Z"  # end of the day of the newest event
    assert posted["n_events"] == 5 and posted["cold_start"] == "none"
    version = model_db.active_model_version()
    assert posted["model_version"] == version
    stored = model_db.current_profile("alice")
    assert [t["score"] for t in stored["traits"]] == pytest.approx([t["score"] for t in posted["traits"]])

    daily = _daily(model_db, datetime(2024, 1, 10, tzinfo=UTC), tmp_path)
    assert daily.model_version == version and daily.n_profiles == 1
    after = model_db.current_profile("alice")
    assert after["model_version"] == posted["model_version"]
    assert after["as_of"] == stored["as_of"]
    scores = [t["score"] for t in after["traits"]]
    assert scores == pytest.approx([t["score"] for t in posted["traits"]], rel=1e-12, abs=1e-12)
    assert after["dominant_trait_id"] == posted["dominant_trait_id"]
    assert (after["n_events"], after["n_known_tokens"]) == (posted["n_events"], posted["n_known_tokens"])
    history = model_db.profile_history("alice")
    assert len(history) == 2  # Jan 9 and Jan 10: the daily run replaced the row of its as_of


def test_the_batch_form_profiles_every_customer_and_counts_add_up(client: TestClient, model_db: Any) -> None:
    events = [{"customer_id": "bob", **e} for e in JAN8] + [{"customer_id": "carol/x", **e} for e in JAN9]
    events.append({"customer_id": "dave", "event_time": "2024-01-09", "action": "fly", "product_id": "p1"})
    response = client.post("/api/events", json={"events": events})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["n_received"] == 6 == body["n_stored"] + body["n_rejected"]
    assert body["rejects"] == [{"row_number": 6, "reason": "unknown_action"}]
    assert [(p["customer_id"], p["as_of"]) for p in body["profiles"]] == [
        ("bob", "2024-01-09T00:00:00Z"),
        ("carol/x", "2024-01-10T00:00:00Z"),
    ]
    assert [p["n_events"] for p in body["profiles"]] == [2, 3]  # each day's profiles from their own events
    assert model_db.current_profile("carol/x")["n_events"] == 3
    assert model_db.reject_counts(body["source"]) == {"unknown_action": 1}


def test_rejects_are_returned_and_stored_and_a_repost_adds_nothing(client: TestClient, model_db: Any) -> None:
    events = [
        *JAN8,
        {"event_time": "yesterday", "action": "view", "product_id": "p1"},
        {"event_time": "2024-01-08T12:00:00Z", "action": "view"},
        {"event_time": "2999-01-01T00:00:00Z", "action": "view", "product_id": "p1"},
        JAN8[0],
    ]
    first = _post(client, "erin", events)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["rejects"] == [
        {"row_number": 3, "reason": "unparseable_event_time"},
        {"row_number": 4, "reason": "missing_product_id"},
        {"row_number": 5, "reason": "event_time_out_of_range"},
        {"row_number": 6, "reason": "exact_duplicate"},
    ]
    assert (body["n_received"], body["n_inserted"], body["n_rejected"]) == (6, 2, 4)
    assert body["source"].startswith("api:")
    assert sum(model_db.reject_counts(body["source"]).values()) == 4
    counts = model_db.table_counts()

    again = _post(client, "erin", events).json()
    assert (again["n_inserted"], again["n_already_present"], again["n_rejected"]) == (0, 2, 4)
    assert again["rejects"] == body["rejects"] and again["profiles"] == body["profiles"]
    assert model_db.table_counts() == counts

    # The same key with another price conflicts with the stored event: rejected, never replaced.
    changed = _post(client, "erin", [{**JAN8[1], "price": 10.0}]).json()
    assert changed["rejects"] == [{"row_number": 1, "reason": "conflicting_duplicate"}]
    assert model_db.reject_counts(changed["source"]) == {"conflicting_duplicate": 1}


def test_a_body_with_only_rejects_is_422_with_the_reasons(client: TestClient, model_db: Any) -> None:
    response = _post(client, "frank", [{"event_time": "2024-01-08", "action": "teleport", "product_id": "p"}])
    assert response.status_code == 422
    assert response.json()["rejects"] == [{"row_number": 1, "reason": "unknown_action"}]
    assert model_db.reject_counts(response.json()["source"]) == {"unknown_action": 1}


def test_without_a_model_the_events_are_stored_and_the_answer_is_409(
    client: TestClient, empty_db: Any
) -> None:
    response = _post(client, "gina", JAN8)
    assert response.status_code == 409
    assert "2 events stored" in response.json()["detail"]
    assert "no promoted model" in response.json()["detail"]
    assert empty_db.table_counts()["events"] == 2
    assert empty_db.current_profile("gina") is None


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/customers/a%00b/events", {"events": JAN8}),
        ("/api/customers/a%0Ab/events", {"events": JAN8}),
        ("/api/customers/alice/events", {"events": []}),
        ("/api/customers/alice/events", {"events": "all of them"}),
        ("/api/customers/alice/events", {"events": [{"event_time": 20240108, "action": "view"}]}),
        ("/api/customers/alice/events", {"events": [{**JAN8[0], "colour": "red"}]}),
        ("/api/customers/alice/events", {"events": [{**JAN8[0], "price": True}]}),
        ("/api/customers/alice/events", {"events": [None]}),
        ("/api/customers/alice/events", {"events": [JAN8[0]] * 10_001}),
        ("/api/customers/alice/events", [JAN8[0]]),
        ("/api/events", {"events": [{**JAN8[0], "customer_id": ["x"]}]}),
        ("/api/events", None),
    ],
)
def test_hostile_ids_and_bodies_are_4xx_with_a_reason(
    client: TestClient, model_db: Any, path: str, body: Any
) -> None:
    response = client.post(path, json=body)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["detail"]
    assert model_db.table_counts()["events"] == 0


def test_non_json_and_huge_bodies_are_4xx(client: TestClient, model_db: Any) -> None:
    from traitflow_web.events import MAX_BODY_BYTES

    headers = {"Content-Type": "application/json"}
    broken = client.post("/api/customers/alice/events", content=b'{"events": [', headers=headers)
    assert broken.status_code == 422 and broken.json()["detail"]
    surrogate = b'{"events": [{"event_time": "2024-01-08", "action": "view", "product_id": "\\ud800"}]}'
    lone = client.post("/api/customers/alice/events", content=surrogate, headers=headers)
    assert lone.status_code == 422 and "lone surrogates" in lone.text
    huge = client.post("/api/events", content=b" " * (MAX_BODY_BYTES + 1), headers=headers)
    assert huge.status_code == 413 and "10,000 events" in huge.json()["detail"]

    def chunks() -> Any:  # no Content-Length: counted while read
        for _ in range(MAX_BODY_BYTES // (1 << 20) + 1):
            yield b" " * (1 << 20)

    streamed = client.post("/api/events", content=chunks(), headers=headers)
    assert streamed.status_code == 413
    assert model_db.table_counts()["events"] == 0


def test_the_event_limit_is_the_library_limit() -> None:
    from traitflow_web.schemas import MAX_POSTED_EVENTS

    from traitflow.online_update import MAX_EVENTS

    assert MAX_POSTED_EVENTS == MAX_EVENTS


def test_only_op_and_admin_may_post_through_airflow_auth(
    airflow_app: Any, model_db: Any, role_token: Callable[[str | None], str]
) -> None:
    from fastapi.testclient import TestClient

    url = "/traitflow/api/customers/hana/events"
    with TestClient(airflow_app) as api:
        assert api.post(url, json={"events": JAN8}).status_code == 401
        for role in (None, "viewer", "user"):
            denied = api.post(
                url, json={"events": JAN8}, headers={"Authorization": f"Bearer {role_token(role)}"}
            )
            assert denied.status_code == 403, role
            assert "op or admin" in denied.json()["detail"]
        assert model_db.table_counts()["events"] == 0
        for role in ("op", "admin"):
            allowed = api.post(
                url, json={"events": JAN8}, headers={"Authorization": f"Bearer {role_token(role)}"}
            )
            assert allowed.status_code == 200, allowed.text
        viewer = {"Authorization": f"Bearer {role_token('viewer')}"}
        assert api.get("/traitflow/api/customers/hana", headers=viewer).json()["n_events"] == 2


def test_the_api_docs_describe_the_event_posts(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    single = paths["/api/customers/{customer_id}/events"]["post"]
    assert set(single["responses"]) >= {"200", "409", "413", "422", "503"}
    assert "requestBody" in single and "post" in paths["/api/events"]


def test_a_post_refreshes_the_cached_profile(
    client: TestClient, model_db: Any, redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from traitflow import profile_cache

    monkeypatch.setenv(profile_cache.ENV_URL, redis_server.url)
    try:
        assert _post(client, "erin", JAN8).status_code == 200
        cached = [client.get("/api/customers/erin").json() for _ in range(2)]  # a miss, then a hit
        assert cached[0] == cached[1] and cached[0]["n_events"] == 2
        assert _post(client, "erin", JAN9).status_code == 200
        fresh = client.get("/api/customers/erin").json()  # served from the refreshed cache
        assert fresh["n_events"] == 5 and fresh["as_of"] != cached[0]["as_of"]
        assert fresh == client.get("/api/customers/erin").json()
    finally:
        monkeypatch.delenv(profile_cache.ENV_URL)
        assert profile_cache.shared_cache() is None  # closes this test's client
