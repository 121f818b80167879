"""What every job module shares: opening the run's Store."""

from __future__ import annotations

from traitflow.runs import RunContext
from traitflow.store import Store


def open_store(context: RunContext) -> Store:
    """The run's Store, migrated: a task may be the first to reach a fresh database."""
    store = Store(context.database_url, context.schema)
    store.upgrade()
    return store
