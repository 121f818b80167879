"""Authentication and authorization: Airflow's own, applied to every route but the static files.

The api-server mounts plugin apps with a bare ``app.mount(url_prefix, subapp)``
(``airflow.api_fastapi.app.init_plugins``): Airflow adds **no** authentication to them. The
root app's middlewares do run for mounted apps, and ``JWTRefreshMiddleware`` refreshes the UI's
``_token`` cookie, but it never rejects a request. Left alone, every route of a plugin app is
public. So the app depends, on every route except ``/static`` and the OpenAPI docs, on:

1. ``airflow.api_fastapi.core_api.security.get_user``, the exact function the ``/api/v2`` and
   ``/ui`` routes use: an ``Authorization: Bearer <JWT>`` header (a token from
   ``POST /auth/token``) wins; otherwise the ``_token`` cookie the Airflow UI sets (httponly,
   path = the base_url path, so the browser sends it to ``/traitflow`` too, including inside the
   UI's iframe). Missing token -> 401, expired -> 401, invalid/revoked -> 403.
2. The configured auth manager's ``is_authorized_custom_view(method="GET",
   resource_name="Traitflow", user=user)``, the hook Airflow provides for plugin views.
   SimpleAuthManager (the default) allows role ``viewer`` and above; with FAB, give the roles
   that should see customer profiles the ``can_read`` permission on the ``Traitflow`` resource.

The HTML page redirects an unauthenticated browser to the auth manager's login page and back.
No credentials of its own, no new auth scheme.

Decision cache: validating a JWT costs the api-server a signature check and a query of Airflow's
revoked-token table on every request, more than a cached profile read itself. A granted decision
for a Bearer token is therefore kept per process for ``TRAITFLOW_AUTH_CACHE_SECONDS`` (default
``DEFAULT_AUTH_CACHE_SECONDS``; 0 turns it off), never past the token's own ``exp``, under the
SHA-256 of the token and the permission asked for (``READ`` or ``WRITE``: a viewer's granted read
never lets it post). Refusals and failures are not kept, so a token that is refused stays
refused. The cost: a token revoked (logout) or a user whose permissions were withdrawn keeps the
access it had for at most that many seconds. Requests authenticated by the UI's cookie are
checked every time (Airflow's ``JWTRefreshMiddleware`` validates the cookie anyway).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Annotated, Any, Final

from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

log = logging.getLogger(__name__)

RESOURCE_NAME = "Traitflow"  # custom-view resource checked with the auth manager
ENV_AUTH_CACHE: Final = "TRAITFLOW_AUTH_CACHE_SECONDS"
DEFAULT_AUTH_CACHE_SECONDS: Final = 10.0
MAX_CACHED_DECISIONS: Final = 1024
READ: Final = "read"  # GET on the Traitflow view
WRITE: Final = "write"  # POST on the Traitflow view and on assets (events.authorize_write)

bearer = HTTPBearer(auto_error=False, description="A JWT from Airflow's POST /auth/token")


async def current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Any:
    """The Airflow user of this request: Airflow's own ``get_user`` (Bearer header, else UI cookie)."""
    from airflow.api_fastapi.core_api.security import get_user

    return await get_user(request=request, _oauth_token=None, bearer_credentials=credentials)


def authorize(user: Any) -> None:
    """403 unless the auth manager lets ``user`` read the ``Traitflow`` custom view."""
    from airflow.api_fastapi.app import get_auth_manager

    if not get_auth_manager().is_authorized_custom_view(method="GET", resource_name=RESOURCE_NAME, user=user):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"Forbidden: reading Traitflow data needs the GET permission on the {RESOURCE_NAME!r} view",
        )


class DecisionCache:
    """Granted authorization decisions: (SHA-256 of a token, permission) -> (user, monotonic
    expiry). At most ``max_entries`` (the oldest insertion goes first); thread-safe. The token
    itself is never stored."""

    def __init__(
        self,
        ttl_seconds: float,
        max_entries: int = MAX_CACHED_DECISIONS,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._clock, self._wall_clock = clock, wall_clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[bytes, str], tuple[Any, float]] = OrderedDict()

    def get(self, token: str, permission: str) -> Any | None:
        """The user granted ``permission`` with ``token``, while the decision is fresh; else None."""
        key = (_digest(token), permission)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if self._clock() >= entry[1]:
                del self._entries[key]
                return None
            return entry[0]

    def put(self, token: str, permission: str, user: Any, expires_at: float | None) -> None:
        """Keep a granted decision for ``ttl_seconds``, or until ``expires_at`` (Unix time, the
        token's ``exp``) if that comes first."""
        lifetime = self.ttl_seconds
        if expires_at is not None:
            lifetime = min(lifetime, expires_at - self._wall_clock())
        if lifetime <= 0:
            return
        with self._lock:
            self._entries[(_digest(token), permission)] = (user, self._clock() + lifetime)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim (Unix time) of a token Airflow has just validated; None without one."""
    import jwt

    exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    return float(exp) if isinstance(exp, int | float) else None


def _cache_seconds() -> float:
    text = os.environ.get(ENV_AUTH_CACHE, "").strip()
    try:
        seconds = float(text) if text else DEFAULT_AUTH_CACHE_SECONDS
    except ValueError:
        log.error("%s=%r is not a number: authorization decisions are not cached", ENV_AUTH_CACHE, text)
        return 0.0
    return max(seconds, 0.0)


DECISIONS = DecisionCache(_cache_seconds())


async def authorized_user(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None,
    permission: str,
    check: Callable[[Any], None],
) -> Any:
    """The request's user once ``check(user)`` (raises 403) allows ``permission``: from
    ``DECISIONS`` for a Bearer token granted it recently, else Airflow's validation and the check
    (in a thread: auth managers may query their database), granted decisions kept."""
    token = credentials.credentials if credentials is not None and DECISIONS.ttl_seconds > 0 else None
    if token is not None and (user := DECISIONS.get(token, permission)) is not None:
        return user
    user = await current_user(request, credentials)
    await run_in_threadpool(check, user)
    if token is not None:
        DECISIONS.put(token, permission, user, token_expiry(token))
    return user


async def require_access(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Any:
    """Authenticated and allowed to read the ``Traitflow`` custom view."""
    return await authorized_user(request, credentials, READ, authorize)


class LoginRequiredError(Exception):
    """Raised by ``require_page_access`` for a browser without a session: redirect to login."""


async def require_page_access(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Any:
    """``require_access`` for the page: a missing session raises ``LoginRequiredError``, not 401."""
    try:
        user = await current_user(request, credentials)
    except HTTPException as exc:
        if exc.status_code == status.HTTP_401_UNAUTHORIZED:
            raise LoginRequiredError from exc
        raise
    await run_in_threadpool(authorize, user)
    return user


def login_redirect(request: Request, exc: Exception) -> Response:  # noqa: ARG001 (handler signature)
    """Exception handler for ``LoginRequiredError``: to the auth manager's login page and back."""
    from airflow.api_fastapi.app import get_auth_manager

    here = request.scope.get("root_path", "").rstrip("/") + "/"  # path only: Airflow checks next
    return RedirectResponse(get_auth_manager().get_url_login(next_url=here), status.HTTP_303_SEE_OTHER)
