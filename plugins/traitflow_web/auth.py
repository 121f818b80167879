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
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

RESOURCE_NAME = "Traitflow"  # custom-view resource checked with the auth manager

_bearer = HTTPBearer(auto_error=False, description="A JWT from Airflow's POST /auth/token")


async def current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
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


def require_access(user: Annotated[Any, Depends(current_user)]) -> Any:
    """Authenticated and allowed to read the ``Traitflow`` custom view (sync: runs in a thread,
    as auth managers may query their database)."""
    authorize(user)
    return user


class LoginRequiredError(Exception):
    """Raised by ``require_page_access`` for a browser without a session: redirect to login."""


async def require_page_access(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
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
