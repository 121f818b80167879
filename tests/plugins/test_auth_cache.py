"""The plugin's cache of granted authorization decisions (``traitflow_web.auth.DecisionCache``):
known answers with fake clocks, then through Airflow's api-server app with real JWTs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest

POST_BODY = {
    "events": [
        {
            "event_time": "2024-01-08T10:00:00Z",
            "action": "view",
            "product_id": "p1",
            "category": "shoes",
            "price": 10.0,
            "session_id": "s1",
        }
    ]
}


class Clocks:
    """A monotonic and a wall clock that move together, by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_700_000_000.0 + self.now


def _cache(plugin: ModuleType, clocks: Clocks, ttl: float = 10.0, max_entries: int = 1024) -> Any:
    from traitflow_web.auth import DecisionCache

    return DecisionCache(ttl, max_entries, clock=clocks.monotonic, wall_clock=clocks.wall)


def test_a_decision_lasts_the_ttl_for_its_token_and_permission_only(plugin: ModuleType) -> None:
    from traitflow_web.auth import READ, WRITE

    clocks = Clocks()
    cache = _cache(plugin, clocks)
    cache.put("token-a", READ, "alice", None)
    assert cache.get("token-a", READ) == "alice"
    assert cache.get("token-a", WRITE) is None  # a granted read grants no write
    assert cache.get("token-b", READ) is None
    clocks.now += 9.9
    assert cache.get("token-a", READ) == "alice"
    clocks.now += 0.1  # 10 s: expired, and forgotten
    assert cache.get("token-a", READ) is None
    assert len(cache) == 0


def test_a_decision_never_outlives_its_token(plugin: ModuleType) -> None:
    from traitflow_web.auth import READ

    clocks = Clocks()
    cache = _cache(plugin, clocks)
    cache.put("short", READ, "bob", expires_at=clocks.wall() + 2.0)
    cache.put("expired", READ, "carol", expires_at=clocks.wall() - 1.0)
    assert cache.get("expired", READ) is None and len(cache) == 1
    clocks.now += 1.9
    assert cache.get("short", READ) == "bob"
    clocks.now += 0.1
    assert cache.get("short", READ) is None


def test_the_cache_is_bounded_and_holds_no_token(plugin: ModuleType) -> None:
    from traitflow_web.auth import READ

    clocks = Clocks()
    cache = _cache(plugin, clocks, max_entries=3)
    for n in range(5):
        cache.put(f"secret-token-{n}", READ, f"user-{n}", None)
    assert len(cache) == 3
    kept = [cache.get(f"secret-token-{n}", READ) for n in range(5)]
    assert kept == [None, None, "user-2", "user-3", "user-4"]  # the oldest went first
    assert "secret-token" not in repr(cache._entries)  # keys are SHA-256 digests


def test_a_zero_ttl_keeps_nothing(plugin: ModuleType) -> None:
    from traitflow_web.auth import READ

    cache = _cache(plugin, Clocks(), ttl=0.0)
    cache.put("token", READ, "dave", None)
    assert len(cache) == 0


# ------------------------------------------------------------- through Airflow's api-server app


@pytest.fixture
def decisions(plugin: ModuleType, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Clocks]]:
    """The plugin's process-wide cache, empty, on hand-moved clocks; and the clocks."""
    from traitflow_web.auth import DECISIONS

    clocks = Clocks()
    monkeypatch.setattr(DECISIONS, "ttl_seconds", 10.0)
    monkeypatch.setattr(DECISIONS, "_clock", clocks.monotonic)
    DECISIONS.clear()
    yield DECISIONS, clocks
    DECISIONS.clear()


@pytest.fixture
def auth_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often the auth manager validated a token and answered a custom-view check."""
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    calls = {"token": 0, "view": 0}
    validate, check = SimpleAuthManager.get_user_from_token, SimpleAuthManager.is_authorized_custom_view

    async def counted_validate(self: Any, token: str) -> Any:
        calls["token"] += 1
        return await validate(self, token)

    def counted_check(self: Any, **kwargs: Any) -> bool:
        calls["view"] += 1
        return bool(check(self, **kwargs))

    monkeypatch.setattr(SimpleAuthManager, "get_user_from_token", counted_validate)
    monkeypatch.setattr(SimpleAuthManager, "is_authorized_custom_view", counted_check)
    return calls


def test_repeated_reads_are_validated_once_until_the_decision_expires(
    airflow_app: Any,
    empty_db: Any,
    role_token: Callable[[str | None], str],
    decisions: tuple[Any, Clocks],
    auth_calls: dict[str, int],
) -> None:
    from fastapi.testclient import TestClient

    _, clocks = decisions
    viewer = {"Authorization": f"Bearer {role_token('viewer')}"}
    with TestClient(airflow_app) as api:
        for _ in range(3):
            assert api.get("/traitflow/api/customers/nobody", headers=viewer).status_code == 404
        assert auth_calls == {"token": 1, "view": 1}
        clocks.now += 10.0
        assert api.get("/traitflow/api/customers/nobody", headers=viewer).status_code == 404
        assert auth_calls == {"token": 2, "view": 2}


def test_refusals_are_not_cached_and_a_cached_read_never_lets_a_viewer_post(
    airflow_app: Any,
    empty_db: Any,
    role_token: Callable[[str | None], str],
    decisions: tuple[Any, Clocks],
    auth_calls: dict[str, int],
) -> None:
    from fastapi.testclient import TestClient

    cache, _ = decisions
    viewer = {"Authorization": f"Bearer {role_token('viewer')}"}
    no_role = {"Authorization": f"Bearer {role_token(None)}"}
    with TestClient(airflow_app) as api:
        assert api.get("/traitflow/api/customers/nobody", headers=viewer).status_code == 404
        for _ in range(2):
            denied = api.post("/traitflow/api/customers/hana/events", json=POST_BODY, headers=viewer)
            assert denied.status_code == 403 and "op or admin" in denied.json()["detail"]
            assert api.get("/traitflow/api/models", headers=no_role).status_code == 403
        assert auth_calls["token"] == 5  # one read cached; every refusal validated again
        assert len(cache) == 1
        forged = {"Authorization": "Bearer not-a-jwt"}
        assert api.get("/traitflow/api/models", headers=forged).status_code == 403
    assert empty_db.table_counts()["events"] == 0


def test_a_revoked_token_is_refused_once_its_decision_expires(
    airflow_app: Any,
    empty_db: Any,
    role_token: Callable[[str | None], str],
    decisions: tuple[Any, Clocks],
) -> None:
    from airflow.api_fastapi.app import get_auth_manager
    from fastapi.testclient import TestClient

    _, clocks = decisions
    token = role_token("viewer")
    viewer = {"Authorization": f"Bearer {token}"}
    with TestClient(airflow_app) as api:
        assert api.get("/traitflow/api/customers/nobody", headers=viewer).status_code == 404
        get_auth_manager().revoke_token(token)  # a logout
        assert api.get("/traitflow/api/customers/nobody", headers=viewer).status_code == 404  # cached
        clocks.now += 10.0
        refused = api.get("/traitflow/api/customers/nobody", headers=viewer)
        assert refused.status_code == 403 and refused.json() == {"detail": "Invalid JWT token"}
