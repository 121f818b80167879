"""Saving and loading a model bundle (``TraitflowModel``) as rows of ``model_versions``,
``trait_components``, ``trait_products`` and ``token_vectors``.

Arrays are stored in their own precision (token vectors and the population vector as ``real[]``,
everything float64 as ``double precision[]``) and written/read with binary COPY, so a loaded
model is bit-identical to the saved one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import psycopg

from traitflow.model import (
    MODEL_FORMAT_VERSION,
    Lineage,
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

# Dataclass fields save_model/load_model persist. A test compares these with the dataclasses, so a
# field added to the model bundle fails the store tests instead of being silently dropped.
PERSISTED_FIELDS: dict[str, frozenset[str]] = {
    "TraitflowModel": frozenset(
        {"trained_through", "config", "tokens", "traits", "metrics", "trait_match", "version", "lineage"}
    ),
    "Lineage": frozenset({"training_mode", "parent_version", "trained_since"}),
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


@dataclass(frozen=True)
class _CheckedArrays:
    """A model's arrays, checked to round-trip exactly (dtype, rank) and to agree in size."""

    vectors: np.ndarray  # float32 (n_tokens, vector_size)
    counts: np.ndarray  # int64 (n_tokens,)
    components: np.ndarray  # float64 (n_traits, width)
    center: np.ndarray  # float64 (vector_size,)
    trait_ids: np.ndarray  # int64 (n_traits,)
    population_profile: np.ndarray  # float64 (n_traits,)
    population_vector: np.ndarray  # float32 (vector_size,)


def _checked_arrays(model: TraitflowModel) -> _CheckedArrays:
    """``model``'s arrays, or ``StoreInputError`` saying which one cannot be stored as it is."""
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
    return _CheckedArrays(
        vectors, counts, components, center, trait_ids, population_profile, population_vector
    )


def save_model(conn: psycopg.Connection, model: TraitflowModel) -> int:
    """Insert ``model`` as a new ``staging`` version (inside the caller's transaction)."""
    require_transaction(conn)
    arrays = _checked_arrays(model)
    n_traits = len(arrays.trait_ids)
    lineage = model.lineage
    row = conn.execute(
        "INSERT INTO model_versions (trained_through, status, format_version, n_tokens, vector_size,"
        " n_traits, params, metrics, trait_match, center, population_profile, population_vector, l1_penalty,"
        " training_mode, parent_version, trained_since)"
        " VALUES (%s, 'staging', %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s::jsonb, %s, %s, %s::real[], %s,"
        " %s, %s, %s)"
        " RETURNING model_version",
        (
            utc(model.trained_through),
            MODEL_FORMAT_VERSION,
            len(model.tokens),
            arrays.vectors.shape[1],
            n_traits,
            dumps(model.config.to_dict()),
            dumps(model.metrics or {}),
            None if model.trait_match is None else dumps(model.trait_match),
            arrays.center.tolist(),  # Python floats hold float64 exactly
            arrays.population_profile.tolist(),
            arrays.population_vector.tolist(),  # float32 -> float64 -> real: exact both ways
            float(model.traits.l1_penalty),
            None if lineage is None else lineage.training_mode,
            None if lineage is None else lineage.parent_version,
            None if lineage is None or lineage.trained_since is None else utc(lineage.trained_since),
        ),
    ).fetchone()
    assert row is not None
    version = int(row[0])
    _insert_components(conn, version, model.traits, arrays)
    if model.traits.products is not None:
        _save_trait_products(conn, version, model.traits.products, n_traits)
    if len(model.tokens):
        _copy_token_vectors(conn, version, model.tokens, arrays)
    return version


def _insert_components(
    conn: psycopg.Connection, version: int, traits: TraitModel, arrays: _CheckedArrays
) -> None:
    """One ``trait_components`` row per trait, in component order (``position`` from 1)."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO trait_components (model_version, position, trait_id, label, top_products,"
            " top_categories, component) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    version,
                    i + 1,
                    int(arrays.trait_ids[i]),
                    str(traits.labels[i]),
                    [str(p) for p in traits.top_products[i]],
                    [str(c) for c in traits.top_categories[i]],
                    arrays.components[i].tolist(),
                )
                for i in range(len(arrays.trait_ids))
            ],
        )


def _copy_token_vectors(
    conn: psycopg.Connection, version: int, tokens: TokenTable, arrays: _CheckedArrays
) -> None:
    """The token table as ``token_vectors`` rows, in token order, by one binary COPY."""
    text_cols = {}
    for name in ("tokens", "actions", "product_ids", "categories"):
        text_cols[name] = as_text_array(pd.Series(getattr(tokens, name), dtype="object"), f"tokens.{name}")
        check_text(text_cols[name], f"tokens.{name}", required=name != "categories", max_chars=None)
    columns = [
        copybin.int4(np.full(len(tokens), version, dtype=np.int32)),
        copybin.int4(np.arange(1, len(tokens) + 1, dtype=np.int32)),
        copybin.text(text_cols["tokens"]),
        copybin.text(text_cols["actions"]),
        copybin.text(text_cols["product_ids"]),
        copybin.text(text_cols["categories"]),
        copybin.int8(arrays.counts),
        copybin.float4_array(arrays.vectors),
    ]
    copy_in(
        conn,
        "COPY token_vectors (model_version, position, token, action, product_id, category, count, vector)"
        " FROM STDIN (FORMAT binary)",
        columns,
    )


# ------------------------------------------------------------------------------------ loading


_MODEL_ROW = "SELECT * FROM model_versions WHERE model_version = %s"
_MODEL_ROW_FOR_UPDATE = "SELECT * FROM model_versions WHERE model_version = %s FOR UPDATE"


def model_row(conn: psycopg.Connection, version: int, *, lock: bool = False) -> dict[str, Any]:
    query = _MODEL_ROW_FOR_UPDATE if lock else _MODEL_ROW
    with conn.cursor(binary=True, row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute(query, (int(version),)).fetchone()
    if row is None:
        raise NotFoundError(f"model version {version} does not exist")
    return row


def load_model(conn: psycopg.Connection, version: int) -> TraitflowModel:
    """Rebuild a saved model; every array is bit-identical to what ``save_model`` received."""
    row = model_row(conn, version)
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
    tokens = _load_tokens(conn, int(version), int(row["vector_size"]), int(row["n_tokens"]))
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
        lineage=_lineage(row),
    )


def _lineage(row: dict[str, Any]) -> Lineage | None:
    if row["training_mode"] is None:
        return None
    parent = row["parent_version"]
    return Lineage(row["training_mode"], None if parent is None else int(parent), row["trained_since"])


def _load_tokens(conn: psycopg.Connection, version: int, vector_size: int, n_tokens: int) -> TokenTable:
    """The ``token_vectors`` rows of ``version`` as a token table, in token order."""
    if not n_tokens:
        empty = np.array([], dtype=object)
        return TokenTable(
            tokens=empty,
            actions=empty.copy(),
            product_ids=empty.copy(),
            categories=empty.copy(),
            counts=np.array([], dtype=np.int64),
            vectors=np.zeros((0, vector_size), dtype=np.float32),
        )
    meta = copy_out_csv(
        conn,
        "COPY (SELECT token, action, product_id, category, count FROM token_vectors"
        " WHERE model_version = %s ORDER BY position) TO STDOUT (FORMAT csv, FORCE_QUOTE *)",
        (version,),
        {"token": "str", "action": "str", "product_id": "str", "category": "str", "count": "int64"},
    )
    vectors = copybin.decode_fixed(
        copy_out(
            conn,
            "COPY (SELECT vector FROM token_vectors WHERE model_version = %s ORDER BY position)"
            " TO STDOUT (FORMAT binary)",
            (version,),
        ),
        [("vector", "float4[]", vector_size)],
    )["vector"]

    def text(name: str) -> np.ndarray:
        return np.asarray(meta.column(name).to_pylist(), dtype=object)

    return TokenTable(
        tokens=text("token"),
        actions=text("action"),
        product_ids=text("product_id"),
        categories=text("category"),
        counts=meta.column("count").to_numpy().astype(np.int64),
        vectors=vectors,
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
