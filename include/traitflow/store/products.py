"""Product names: upserted with an ingestion, read back for labels, the CLI and the UI; and the
products a customer had events on.

The names come from a loader's ``LoadResult.products`` (counts per product and name; see
``traitflow.event_schema.PRODUCT_NAME_COLUMNS``), reduced to each product's most frequent name over the
whole ingested file. Writes run inside the caller's transaction and never commit.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
import psycopg

from traitflow import event_schema

from . import copybin
from ._util import copy_in, require_transaction
from .ingest import as_text_array, check_text


def upsert_product_names(conn: psycopg.Connection, counts: pd.DataFrame, source: str, run_id: str) -> int:
    """Store each product's most frequent name in ``counts``; returns rows inserted or renamed.

    A product already named keeps its row untouched when the name is the same, so re-ingesting
    a file changes nothing (not even ``source`` or ``updated_at``).
    """
    require_transaction(conn)
    names = event_schema.most_frequent_names(counts)
    if not len(names):
        return 0
    ids = as_text_array(names["product_id"], "product_id")
    labels = as_text_array(names["product_name"], "product_name")
    check_text(ids, "product_id", required=True, max_chars=event_schema.MAX_ID_LENGTH)
    check_text(labels, "product_name", required=True, max_chars=event_schema.MAX_TEXT_LENGTH)
    conn.execute("DROP TABLE IF EXISTS pg_temp._tf_stage_names")
    conn.execute(
        'CREATE TEMP TABLE _tf_stage_names (product_id text COLLATE "C", product_name text) ON COMMIT DROP'
    )
    columns = [copybin.text(ids), copybin.text(labels)]
    copy_in(conn, "COPY _tf_stage_names FROM STDIN (FORMAT binary)", columns)
    cur = conn.execute(
        "INSERT INTO product_names AS p (product_id, product_name, source, run_id)"
        " SELECT product_id, product_name, %s, %s FROM _tf_stage_names"
        " ON CONFLICT (product_id) DO UPDATE"
        " SET product_name = EXCLUDED.product_name, source = EXCLUDED.source, run_id = EXCLUDED.run_id,"
        " updated_at = now()"
        " WHERE p.product_name IS DISTINCT FROM EXCLUDED.product_name",
        (source, run_id),
    )
    return cur.rowcount


def product_names(conn: psycopg.Connection, product_ids: Iterable[str]) -> dict[str, str]:
    """``{product_id: name}`` for the given ids that have a stored name (others are absent)."""
    wanted = sorted({str(p) for p in product_ids})
    if not wanted:
        return {}
    rows = conn.execute(
        "SELECT product_id, product_name FROM product_names WHERE product_id = ANY(%s)", (wanted,)
    ).fetchall()
    return {str(product_id): str(name) for product_id, name in rows}


def customer_product_ids(conn: psycopg.Connection, customer_id: str) -> list[str]:
    """The distinct products ``customer_id`` has stored events on, sorted (empty if none): an
    index range scan of the events' natural key, which leads with ``customer_id``."""
    rows = conn.execute(
        "SELECT DISTINCT product_id FROM events WHERE customer_id = %s ORDER BY 1", (str(customer_id),)
    ).fetchall()
    return [str(row[0]) for row in rows]
