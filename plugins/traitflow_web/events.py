"""Event posts (``POST /api/customers/{id}/events``, ``POST /api/events``): the routes over
``traitflow.online_update.update_from_events`` (validate, store, recompute, write).

Writes need more than reads. The auth manager must allow both:

* ``is_authorized_custom_view(method="POST", resource_name="Traitflow")``: the plugin's own view
  (with FAB: ``can_create`` on ``Traitflow``);
* ``is_authorized_asset(method="POST")``: what Airflow's own ``POST /api/v2/assets/events``
  needs, as posted events feed the pipeline's data. SimpleAuthManager answers custom-view checks
  for any method with "viewer or above", so this is the check that keeps viewers (and users) out
  there: it allows ``op`` and ``admin``.

Responses: 200 with the counts, rejects and profiles; 422 when no event of the request could be
stored (every one rejected: the rejects are listed and recorded all the same) or the body does
not have the documented shape; 409 when the events were stored but no customer could be profiled
because no model is promoted for their date yet (the next daily run after a promotion profiles
them); 413 for a body over ``MAX_BODY_BYTES``.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .api import CustomerId
from .auth import RESOURCE_NAME, WRITE, authorized_user, bearer
from .pool import StoreDep
from .schemas import (
    CustomerEvents,
    Error,
    EventsPosted,
    ManyCustomersEvents,
    json_response,
)

if TYPE_CHECKING:  # imported on the first post: traitflow is heavy (see the package docstring)
    from traitflow.online_update import EventUpdate
    from traitflow.online_update import UpdatedProfile as WrittenProfile
    from traitflow.store import Store

MAX_BODY_BYTES = 16 * 1024 * 1024  # 10,000 events of a few hundred bytes each, with room to spare
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def authorize_write(user: Any) -> None:
    """403 unless the auth manager lets ``user`` post to Traitflow (see the module docstring)."""
    from airflow.api_fastapi.app import get_auth_manager

    manager = get_auth_manager()
    if not (
        manager.is_authorized_custom_view(method="POST", resource_name=RESOURCE_NAME, user=user)
        and manager.is_authorized_asset(method="POST", user=user)
    ):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"Forbidden: posting events needs the POST permission on the {RESOURCE_NAME!r} view and on"
            " assets (with the simple auth manager: role op or admin)",
        )


async def require_write_access(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Any:
    """Authenticated and allowed to post events (granted decisions cached: see ``auth``)."""
    return await authorized_user(request, credentials, WRITE, authorize_write)


WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    409: {"model": Error},
    413: {"model": Error},
    422: {"model": EventsPosted, "description": "every event rejected, or a body of another shape"},
    503: {"model": Error},
}
events = APIRouter(prefix="/api", responses=WRITE_ERRORS)


def _run_id(user: Any) -> str:
    """Who posted and when, recorded with the stored rows."""
    name = user.get_name() if hasattr(user, "get_name") else str(user)
    return f"api:{_CONTROL.sub('?', str(name))[:64]}:{datetime.now(UTC).isoformat()}"


def _posted(store: Store, rows: list[dict[str, Any]], user: Any) -> Response:
    """Validate, store and profile ``rows``; the result as a response (200, 409 or 422)."""
    from traitflow.online_update import update_from_events

    update = update_from_events(store, rows, run_id=_run_id(user))
    if update.n_stored == 0:
        return json_response(_response(update), status.HTTP_422_UNPROCESSABLE_CONTENT)
    if update.unprofiled and not update.profiles:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"{update.n_stored} events stored ({update.n_inserted} new) and {update.n_rejected} rejected,"
            f" but no profile was updated: {update.unprofiled[0].reason}. The first daily run after a"
            " model is promoted profiles these customers.",
        )
    return json_response(_response(update))


def _response(update: EventUpdate) -> EventsPosted:
    """The answer to a post, validated from plain values in one call: pydantic-core builds the
    nested models, instead of a Python constructor call per reject, profile and trait."""
    return EventsPosted.model_validate(
        {
            "source": update.source,
            "n_received": update.n_received,
            "n_stored": update.n_stored,
            "n_inserted": update.n_inserted,
            "n_already_present": update.n_already_present,
            "n_rejected": update.n_rejected,
            "rejects": [{"row_number": r.row_number, "reason": r.reason} for r in update.rejects],
            "profiles": [_profile(p) for p in update.profiles],
            "unprofiled": [
                {"customer_id": u.customer_id, "as_of": u.as_of, "reason": u.reason}
                for u in update.unprofiled
            ],
        }
    )


def _profile(profile: WrittenProfile) -> dict[str, Any]:
    """An ``UpdatedProfile``'s fields."""
    names = dict(zip(profile.trait_ids, profile.labels, strict=True))
    return {
        "customer_id": profile.customer_id,
        "as_of": profile.as_of,
        "model_version": profile.model_version,
        "dominant_trait_id": profile.dominant_trait_id,
        "dominant_label": names.get(profile.dominant_trait_id),
        "n_events": profile.n_events,
        "cold_start": profile.cold_start,
        "n_known_tokens": profile.n_known_tokens,
        "confidence": profile.confidence,
        "traits": [
            {"trait_id": t, "label": names[t], "score": s}
            for t, s in zip(profile.trait_ids, profile.scores, strict=True)
        ],
    }


@events.post(
    "/customers/{customer_id:path}/events",
    response_model=EventsPosted,
    summary="Post a customer's events; returns the recomputed profile",
)
def post_customer_events(
    store: StoreDep,
    customer_id: CustomerId,
    body: CustomerEvents,
    user: Annotated[Any, Depends(require_write_access)],
) -> Response:
    rows = [{"customer_id": customer_id, **event.model_dump()} for event in body.events]
    return _posted(store, rows, user)


@events.post(
    "/events",
    response_model=EventsPosted,
    summary="Post events of many customers; returns their recomputed profiles",
)
def post_events(
    store: StoreDep, body: ManyCustomersEvents, user: Annotated[Any, Depends(require_write_access)]
) -> Response:
    return _posted(store, [event.model_dump() for event in body.events], user)


def validation_error(request: Request, exc: Exception) -> Response:  # noqa: ARG001 (handler signature)
    """FastAPI's 422 for a malformed request, its JSON ASCII-escaped: the errors echo the input,
    and a lone surrogate from the body (``"\\ud800"``) has no UTF-8 form."""
    assert isinstance(exc, RequestValidationError)
    body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True)
    return Response(body, status.HTTP_422_UNPROCESSABLE_CONTENT, media_type="application/json")


class BodySizeLimit:
    """ASGI middleware: 413 for a POST body over ``max_bytes``, by its Content-Length or, for a
    chunked body, as soon as the bytes read pass the limit (before the JSON is parsed)."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received, too_large = 0, False

        async def limited() -> Message:
            nonlocal received, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:  # the app sees a client that went away, and stops reading
                too_large = True
                return {"type": "http.disconnect"}
            return message

        async def unless_too_large(message: Message) -> None:
            if not too_large:  # the body is read before any response starts: nothing was sent yet
                await send(message)

        try:
            await self.app(scope, limited, unless_too_large)
        except Exception:
            if not too_large:
                raise
        if too_large:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse({"detail": self._too_large()}, status.HTTP_413_CONTENT_TOO_LARGE)
        await response(scope, receive, send)

    def _too_large(self) -> str:
        return f"request body larger than {self.max_bytes} bytes: post at most 10,000 events at a time"
