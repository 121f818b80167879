"""Store and database failures as HTTP errors: 404 for what does not exist, 503 for a database
that cannot serve (unreachable, schema not migrated); anything else is a bug (500)."""

from __future__ import annotations

from fastapi import HTTPException, status


def http_error(exc: BaseException) -> HTTPException | None:
    """The HTTP error for a store/database failure, or None for anything else (a bug -> 500)."""
    import psycopg

    from traitflow.store import NotFoundError, StoreError

    if isinstance(exc, HTTPException):
        return exc
    if isinstance(exc, NotFoundError):
        return HTTPException(status.HTTP_404_NOT_FOUND, str(exc))
    if isinstance(exc, StoreError):  # cannot connect, schema not migrated (SchemaNotReadyError), ...
        return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc))
    if isinstance(exc, psycopg.OperationalError):
        return HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"Traitflow database unavailable: {str(exc).strip()}"
        )
    return None


def is_db_failure(exc: BaseException | None) -> bool:
    """Whether ``exc`` says the connection may be unusable (anything but a plain "not found")."""
    import psycopg

    from traitflow.store import NotFoundError, StoreError

    return isinstance(exc, psycopg.Error | StoreError) and not isinstance(exc, NotFoundError)
