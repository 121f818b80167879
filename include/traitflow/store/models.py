"""Versioned models: save, load (bit-identical), promote / reject, and pick the model for a date.

Lifecycle (``model_versions.status``)::

    staging --promote--> active --(another model promoted)--> retired --promote--> active
       \\--reject--> rejected

* At most one ``active`` model (partial unique index); promotion is one transaction that retires
  the previous active model and activates the new one, so readers see either the old or the new.
* ``model_version_for(as_of)`` = the newest *promoted* (active or retired) model with
  ``trained_through <= as_of``: a backfill of date D picks the same model whenever it runs.

Arrays are stored in their own precision (token vectors and the population vector as ``real[]``,
everything float64 as ``double precision[]``) and written/read with binary COPY, so a loaded
model is bit-identical to the saved one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from traitflow.model import (
    MODEL_FORMAT_VERSION,
    TokenTable,
    TraitflowModel,
    TraitModel,
    TraitProducts,
    config_from_dict,
)

from . import copybin
from ._util import copy_in, copy_out, copy_out_csv, dumps, require_transaction, utc
from .errors import ModelStateError, NotFoundError, StoreInputError
from .ingest import as_text_array, check_text

STATUSES = ("staging", "active", "retired", "rejected")
# Dataclass fields save_model/load_model persist. A test compares these with the dataclasses, so a
# field added to the model bundle fails the store tests instead of being silently dropped.
PERSISTED_FIELDS: dict[str, frozenset[str]] = {
    "TraitflowModel": frozenset(
        {"trained_through", "config", "tokens", "traits", "metrics", "trait_match", "version"}
    ),
    "TokenTable": frozenset(
        # _index, _arrow_tokens: look-up caches, rebuilt on first use after loading.
        {"tokens", "actions", "product_ids", "categories", "counts", "vectors", "_index", "_arrow_tokens"}
    ),
    "TraitModel": frozenset(
        {
            "components",
            "center",
            "trait_ids",
            "labels",
            "top_products",
            "top_categories",
            "population_profile",
            "population_vector",
            "l1_penalty",
            "products",
        }
    ),
}
PROMOTED = ("active", "retired")


# ------------------------------------------------------------------------------------ helpers


def _expect(array: Any, dtype: type, ndim: int, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype != np.dtype(dtype) or array.ndim != ndim:
        raise StoreInputError(
            f"{name} must be a {ndim}-D {np.dtype(dtype).name} array to round-trip exactly, "
            f"got {array.ndim}-D {array.dtype}"
        )
    return array


# ------------------------------------------------------------------------------------- saving


def save_model(conn: psycopg.Connection, model: TraitflowModel) -> int:
    """Insert ``model`` as a new ``staging`` version (inside the caller's transaction)."""
    require_transaction(conn)
    tokens, traits = model.tokens, model.traits
    vectors = _expect(tokens.vectors, np.float32, 2, "tokens.vectors")
    components = _expect(traits.components, np.float64, 2, "traits.components")
    center = _expect(traits.center, np.float64, 1, "traits.center")
    trait_ids = _expect(traits.trait_ids, np.int64, 1, "traits.trait_ids")
    population_profile = _expect(traits.population_profile, np.float64, 1, "traits.population_profile")
    population_vector = _expect(traits.population_vector, np.float32, 1, "traits.population_vector")
    counts = _expect(tokens.counts, np.int64, 1, "tokens.counts")
    # The embedding size is the token vectors'; NMF components may be wider (e.g. a split
    # positive/negative transform), so their width is stored with the components only.
    vector_size = vectors.shape[1]
    n_traits = components.shape[0]
    if vector_size < 1 or n_traits < 1 or components.shape[1] < 1:
        raise StoreInputError(
            f"empty model arrays: token vectors {vectors.shape}, components {components.shape}"
        )
    if len(center) != vector_size or len(population_vector) != vector_size:
        raise StoreInputError(
            f"center ({len(center)}) and population_vector ({len(population_vector)}) must have "
            f"vector_size = {vector_size} entries"
        )
    if len(trait_ids) != n_traits or len(population_profile) != n_traits:
        raise StoreInputError("trait_ids and population_profile must have n_traits entries")
    if len(np.unique(trait_ids)) != n_traits:
        raise StoreInputError(f"trait_ids must be unique, got {trait_ids.tolist()}")
    for name in ("labels", "top_products", "top_categories"):
        if len(getattr(traits, name)) != n_traits:
            raise StoreInputError(f"traits.{name} must have {n_traits} entries")

    row = conn.execute(
        "INSERT INTO model_versions (trained_through, status, format_version, n_tokens, vector_size,"
        " n_traits, params, metrics, trait_match, center, population_profile, population_vector, l1_penalty)"
        " VALUES (%s, 'staging', %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s::jsonb, %s, %s, %s::real[], %s)"
        " RETURNING model_version",
        (
            utc(model.trained_through),
            MODEL_FORMAT_VERSION,
            len(tokens),
            vector_size,
            n_traits,
            dumps(model.config.to_dict()),
            dumps(model.metrics or {}),
            None if model.trait_match is None else dumps(model.trait_match),
            center.tolist(),  # Python floats hold float64 exactly
            population_profile.tolist(),
            population_vector.tolist(),  # float32 -> float64 -> real: exact both ways
            float(traits.l1_penalty),
        ),
    ).fetchone()
    assert row is not None
    version = int(row[0])

    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO trait_components (model_version, position, trait_id, label, top_products,"
            " top_categories, component) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    version,
                    i + 1,
                    int(trait_ids[i]),
                    str(traits.labels[i]),
                    [str(p) for p in traits.top_products[i]],
                    [str(c) for c in traits.top_categories[i]],
                    components[i].tolist(),
                )
                for i in range(n_traits)
            ],
        )
    if traits.products is not None:
        _save_trait_products(conn, version, traits.products, n_traits)
    if len(tokens):
        text_cols = {}
        for name in ("tokens", "actions", "product_ids", "categories"):
            text_cols[name] = as_text_array(
                pd.Series(getattr(tokens, name), dtype="object"), f"tokens.{name}"
            )
            check_text(text_cols[name], f"tokens.{name}", required=name != "categories", max_chars=None)
        columns = [
            copybin.int4(np.full(len(tokens), version, dtype=np.int32)),
            copybin.int4(np.arange(1, len(tokens) + 1, dtype=np.int32)),
            copybin.text(text_cols["tokens"]),
            copybin.text(text_cols["actions"]),
            copybin.text(text_cols["product_ids"]),
            copybin.text(text_cols["categories"]),
            copybin.int8(counts),
            copybin.float4_array(vectors),
        ]
        copy_in(
            conn,
            "COPY token_vectors (model_version, position, token, action, product_id, category, count, vector)"
            " FROM STDIN (FORMAT binary)",
            columns,
        )
    return version


# ------------------------------------------------------------------------------------ loading


_MODEL_ROW = "SELECT * FROM model_versions WHERE model_version = %s"
_MODEL_ROW_FOR_UPDATE = "SELECT * FROM model_versions WHERE model_version = %s FOR UPDATE"


def _model_row(conn: psycopg.Connection, version: int, *, lock: bool = False) -> dict[str, Any]:
    query = _MODEL_ROW_FOR_UPDATE if lock else _MODEL_ROW
    with conn.cursor(binary=True, row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute(query, (int(version),)).fetchone()
    if row is None:
        raise NotFoundError(f"model version {version} does not exist")
    return row


def load_model(conn: psycopg.Connection, version: int) -> TraitflowModel:
    """Rebuild a saved model; every array is bit-identical to what ``save_model`` received."""
    row = _model_row(conn, version)
    if row["format_version"] != MODEL_FORMAT_VERSION:
        raise ModelStateError(
            f"model {version} has format {row['format_version']}, expected {MODEL_FORMAT_VERSION}"
        )
    with conn.cursor(binary=True) as cur:
        comps = cur.execute(
            "SELECT trait_id, label, top_products, top_categories, component FROM trait_components"
            " WHERE model_version = %s ORDER BY position",
            (int(version),),
        ).fetchall()
    vector_size, n_tokens = int(row["vector_size"]), int(row["n_tokens"])
    if n_tokens:
        meta = copy_out_csv(
            conn,
            "COPY (SELECT token, action, product_id, category, count FROM token_vectors"
            " WHERE model_version = %s ORDER BY position) TO STDOUT (FORMAT csv, FORCE_QUOTE *)",
            (int(version),),
            {"token": "str", "action": "str", "product_id": "str", "category": "str", "count": "int64"},
        )
        vectors = copybin.decode_fixed(
            copy_out(
                conn,
                "COPY (SELECT vector FROM token_vectors WHERE model_version = %s ORDER BY position)"
                " TO STDOUT (FORMAT binary)",
                (int(version),),
            ),
            [("vector", "float4[]", vector_size)],
        )["vector"]

        def text(name: str) -> np.ndarray:
            return np.asarray(meta.column(name).to_pylist(), dtype=object)

        tokens = TokenTable(
            tokens=text("token"),
            actions=text("action"),
            product_ids=text("product_id"),
            categories=text("category"),
            counts=meta.column("count").to_numpy().astype(np.int64),
            vectors=vectors,
        )
    else:
        empty = np.array([], dtype=object)
        tokens = TokenTable(
            tokens=empty,
            actions=empty.copy(),
            product_ids=empty.copy(),
            categories=empty.copy(),
            counts=np.array([], dtype=np.int64),
            vectors=np.zeros((0, vector_size), dtype=np.float32),
        )
    width = len(comps[0][4]) if comps else 0
    traits = TraitModel(
        components=np.array([c[4] for c in comps], dtype=np.float64).reshape(len(comps), width),
        center=np.array(row["center"], dtype=np.float64),
        trait_ids=np.array([c[0] for c in comps], dtype=np.int64),
        labels=[c[1] for c in comps],
        top_products=[list(c[2]) for c in comps],
        top_categories=[list(c[3]) for c in comps],
        population_profile=np.array(row["population_profile"], dtype=np.float64),
        population_vector=np.array(row["population_vector"], dtype=np.float32),
        l1_penalty=float(row["l1_penalty"]),
        products=_load_trait_products(conn, int(version), len(comps)),
    )
    return TraitflowModel(
        trained_through=row["trained_through"],
        config=config_from_dict(row["params"]),
        tokens=tokens,
        traits=traits,
        metrics=row["metrics"] or {},
        trait_match=row["trait_match"],
        version=int(row["model_version"]),
    )


def _save_trait_products(
    conn: psycopg.Connection, version: int, products: TraitProducts, n_traits: int
) -> None:
    weights = _expect(products.weights, np.float64, 2, "traits.products.weights")
    if weights.shape != (n_traits, len(products.product_ids)):
        raise StoreInputError(
            f"traits.products.weights must have shape ({n_traits}, {len(products.product_ids)}), "
            f"got {weights.shape}"
        )
    conn.execute(
        "INSERT INTO trait_products (model_version, product_ids, weights) VALUES (%s, %s, %s)",
        (version, [str(p) for p in products.product_ids], weights.ravel().tolist()),
    )


def _load_trait_products(conn: psycopg.Connection, version: int, n_traits: int) -> TraitProducts | None:
    with conn.cursor(binary=True) as cur:
        row = cur.execute(
            "SELECT product_ids, weights FROM trait_products WHERE model_version = %s", (version,)
        ).fetchone()
    if row is None:
        return None
    product_ids = np.asarray(list(row[0]), dtype=object)
    weights = np.asarray(row[1], dtype=np.float64).reshape(n_traits, len(product_ids))
    return TraitProducts(product_ids, weights)


# ---------------------------------------------------------------------------------- lifecycle


def _lock_lifecycle(conn: psycopg.Connection) -> None:
    """Serialise status transitions of this schema's models (transaction-scoped), so two
    promotions cannot interleave."""
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('traitflow.model_lifecycle:' || current_schema(), 0))"
    )


def _retire_active(conn: psycopg.Connection) -> int | None:
    row = conn.execute(
        "UPDATE model_versions SET status = 'retired', retired_at = now()"
        " WHERE status = 'active' RETURNING model_version"
    ).fetchone()
    return None if row is None else int(row[0])


def _activate(conn: psycopg.Connection, version: int) -> None:
    conn.execute(
        "UPDATE model_versions SET status = 'active', promoted_at = now(), retired_at = NULL,"
        " status_reason = NULL WHERE model_version = %s",
        (int(version),),
    )


def promote(conn: psycopg.Connection, version: int) -> bool:
    """Make ``version`` the active model; returns False when it already was (a no-op)."""
    require_transaction(conn)
    _lock_lifecycle(conn)
    row = _model_row(conn, version, lock=True)
    status = row["status"]
    if status == "active":
        return False
    if status == "rejected":
        raise ModelStateError(f"model {version} was rejected ({row['status_reason']}); it cannot be promoted")
    _retire_active(conn)
    _activate(conn, version)
    return True


def reject_model(conn: psycopg.Connection, version: int, reason: str) -> bool:
    """Mark a staging model rejected (kept for inspection); returns False if it already was."""
    require_transaction(conn)
    _lock_lifecycle(conn)
    status = _model_row(conn, version, lock=True)["status"]
    if status == "rejected":
        return False
    if status != "staging":
        raise ModelStateError(f"only a staging model can be rejected; model {version} is {status}")
    conn.execute(
        "UPDATE model_versions SET status = 'rejected', status_reason = %s WHERE model_version = %s",
        (str(reason), int(version)),
    )
    return True


def published_version(conn: psycopg.Connection, run_key: str) -> int | None:
    """The version published under ``run_key`` (``Store.publish``), or None."""
    row = conn.execute(
        "SELECT model_version FROM model_versions WHERE run_key = %s", (str(run_key),)
    ).fetchone()
    return None if row is None else int(row[0])


def set_run_key(conn: psycopg.Connection, version: int, run_key: str) -> None:
    """Record the key a version was published under (unique: one version per key)."""
    if not isinstance(run_key, str) or not 1 <= len(run_key) <= 256 or "\x00" in run_key:
        raise StoreInputError(f"run_key must be 1-256 characters without NUL, got {run_key!r:.80}")
    conn.execute("UPDATE model_versions SET run_key = %s WHERE model_version = %s", (run_key, int(version)))


def active_model_version(conn: psycopg.Connection) -> int | None:
    row = conn.execute("SELECT model_version FROM model_versions WHERE status = 'active'").fetchone()
    return None if row is None else int(row[0])


def model_version_for(conn: psycopg.Connection, as_of: datetime) -> int | None:
    """Newest promoted (active or retired) model with ``trained_through <= as_of``, else None.

    "Newest" = latest ``trained_through`` (ties: highest version). Staging and rejected models
    are never chosen, and the current active status does not matter, so the answer for a date
    does not depend on when it is asked (backfills are reproducible).
    """
    row = conn.execute(
        "SELECT model_version FROM model_versions WHERE status IN ('active', 'retired')"
        " AND trained_through <= %s ORDER BY trained_through DESC, model_version DESC LIMIT 1",
        (utc(as_of),),
    ).fetchone()
    return None if row is None else int(row[0])


def update_model_metadata(
    conn: psycopg.Connection,
    version: int,
    *,
    metrics: dict[str, Any] | None = None,
    drift: dict[str, Any] | None = None,
    trait_match: dict[str, Any] | None = None,
) -> None:
    """Replace the given JSON fields (None = leave unchanged)."""
    require_transaction(conn)
    _model_row(conn, version, lock=True)
    updates = {"metrics": metrics, "drift": drift, "trait_match": trait_match}
    assignments = [
        sql.SQL("{} = %s::jsonb").format(sql.Identifier(name))
        for name, value in updates.items()
        if value is not None
    ]
    values = [dumps(value) for value in updates.values() if value is not None]
    if not assignments:
        return
    conn.execute(
        sql.SQL("UPDATE model_versions SET {} WHERE model_version = %s").format(
            sql.SQL(", ").join(assignments)
        ),
        [*values, int(version)],
    )


def list_models(conn: psycopg.Connection) -> pd.DataFrame:
    """All model versions (no arrays), newest first."""
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        rows = cur.execute(
            "SELECT model_version, status, trained_through, created_at, promoted_at, retired_at,"
            " status_reason, n_tokens, vector_size, n_traits, metrics, drift"
            " FROM model_versions ORDER BY model_version DESC"
        ).fetchall()
    columns = [
        "model_version", "status", "trained_through", "created_at", "promoted_at", "retired_at",
        "status_reason", "n_tokens", "vector_size", "n_traits", "metrics", "drift",
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def model_trait_ids(conn: psycopg.Connection, version: int) -> tuple[np.ndarray, list[str], int, str]:
    """(trait ids in position order, labels, vector_size, status) of a model."""
    row = _model_row(conn, version)
    comps = conn.execute(
        "SELECT trait_id, label FROM trait_components WHERE model_version = %s ORDER BY position",
        (int(version),),
    ).fetchall()
    return (
        np.array([c[0] for c in comps], dtype=np.int64),
        [c[1] for c in comps],
        int(row["vector_size"]),
        str(row["status"]),
    )
