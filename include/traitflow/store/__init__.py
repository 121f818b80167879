"""PostgreSQL store: versioned schema, idempotent bulk writes (binary COPY), versioned models, reads.

Quick use::

    from traitflow.store import Store

    with Store() as store:          # TRAITFLOW_DATABASE_URL, else the embedded server
        store.upgrade()             # create / migrate the schema (idempotent)
        store.ingest_events(result, source="events.csv", run_id="manual")
        version = store.save_model(model)
        store.promote(version)
        store.write_profiles(batch)
        store.top_customers(trait_id=7, n=10)
"""

from __future__ import annotations

from .core import Store
from .db import (
    Timeouts,
    connect,
    embedded_url,
    mask_url,
    normalize_url,
    resolve_url,
    stop_embedded,
    validate_schema,
)
from .errors import (
    DatabaseConnectionLostError,
    DatabaseTimeoutError,
    MigrationError,
    ModelRejectedError,
    ModelStateError,
    NotFoundError,
    SchemaNotReadyError,
    StaleModelError,
    StoreError,
    StoreInputError,
)
from .ingest import IngestReport
from .profile_shards import ShardsNotReadyError
from .profiles import WriteReport
from .shard_members import PlanNotFoundError, ShardMembership, ShardRef

__all__ = [
    "DatabaseConnectionLostError",
    "DatabaseTimeoutError",
    "IngestReport",
    "MigrationError",
    "ModelRejectedError",
    "ModelStateError",
    "NotFoundError",
    "PlanNotFoundError",
    "SchemaNotReadyError",
    "ShardMembership",
    "ShardRef",
    "ShardsNotReadyError",
    "StaleModelError",
    "Store",
    "StoreError",
    "StoreInputError",
    "Timeouts",
    "WriteReport",
    "connect",
    "embedded_url",
    "mask_url",
    "normalize_url",
    "resolve_url",
    "stop_embedded",
    "validate_schema",
]
