"""Store exceptions: one base class so the CLI and the DAGs can report them uniformly."""

from __future__ import annotations


class StoreError(RuntimeError):
    """A store operation failed for a reason the caller can act on (message says how)."""


class SchemaNotReadyError(StoreError):
    """The database schema is missing or behind this code: run ``traitflow db upgrade``."""


class MigrationError(StoreError):
    """A migration could not be applied, or the database does not match the migration files."""


class StoreInputError(StoreError, ValueError):
    """Data handed to the store violates the storage contract (e.g. NUL characters, bad shapes)."""


class ModelStateError(StoreError):
    """A model-version transition is not allowed (e.g. promoting a rejected model)."""


class NotFoundError(StoreError, LookupError):
    """A requested model version, customer or trait does not exist."""
