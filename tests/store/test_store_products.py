"""Product names: stored with an ingestion (same transaction), read back, idempotent; CLI display."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import psycopg
import pytest

from traitflow import event_schema
from traitflow.events import LoadResult, read_events
from traitflow.model import TraitflowModel
from traitflow.store import Store, StoreInputError
from traitflow.store.cli import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RETAIL_II = FIXTURES / "events_online_retail_ii.csv"
RETAIL_I = FIXTURES / "events_online_retail.csv"
NAMES = {
    "22041": 'RECORD FRAME 7" SINGLE SIZE',
    "79323P": "PINK CHERRY LIGHTS",
    "85048": "15CM CHRISTMAS GLASS BALL 20 LIGHTS",
}


def name_counts(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(event_schema.PRODUCT_NAME_COLUMNS))
    return frame.astype({"product_id": "str", "product_name": "str", "n_rows": "int64"})


def test_ingesting_an_order_line_file_stores_product_names(store: Store) -> None:
    # chunksize 4: the names of 85048 are split over chunks (2 x "15CM...", 1 x "ILLUMINATED...").
    report = store.ingest_file(RETAIL_II, "online_retail", run_id="r1", chunksize=4)
    assert report.n_read == 15 == report.n_inserted + report.n_already_present + report.n_rejected
    assert (report.n_inserted, report.n_rejected, report.n_product_names) == (6, 9, 3)
    assert store.product_names([*NAMES, "21232", "nope"]) == NAMES  # 21232 has no name in the file
    assert store.product_names([]) == {}
    counts = store.table_counts()
    assert counts["product_names"] == 3 and counts["events"] + counts["rejected_events"] == 15
    stored = store.connection.execute("SELECT DISTINCT source, run_id FROM product_names").fetchall()
    assert stored == [(str(RETAIL_II.resolve()), "r1")]


def test_re_ingesting_changes_nothing(store: Store) -> None:
    store.ingest_file(RETAIL_II, "online_retail", run_id="r1")
    before = store.table_checksums()
    assert store.ingest_file(RETAIL_II, "online_retail", run_id="r2").skipped
    forced = store.ingest_file(RETAIL_II, "online_retail", run_id="r3", force=True, chunksize=5)
    assert (forced.n_inserted, forced.n_already_present, forced.n_product_names) == (0, 6, 0)
    assert store.table_checksums() == before
    # The same lines in the other spelling: same events and names, only its rejects are new.
    other = store.ingest_file(RETAIL_I, "online_retail", run_id="r4")
    assert (other.n_inserted, other.n_product_names, other.n_rejects_recorded) == (0, 0, 9)
    after = store.table_checksums()
    assert after["product_names"] == before["product_names"] and after["events"] == before["events"]


def test_the_latest_ingestion_that_names_a_product_decides(store: Store) -> None:
    loaded = read_events(RETAIL_II, "online_retail")
    store.ingest_events(loaded, source="first", run_id="r1")
    renamed = LoadResult(
        event_schema.empty_events(),
        event_schema.empty_rejects(),
        name_counts([("85048", "GLASS BALL LIGHTS", 1), ("new", "NEW THING", 2), ("new", "NEW THING!", 1)]),
    )
    report = store.ingest_events(renamed, source="second", run_id="r2")
    assert report.n_product_names == 2
    assert store.product_names(["85048", "new", "79323P"]) == {
        "85048": "GLASS BALL LIGHTS",
        "new": "NEW THING",
        "79323P": "PINK CHERRY LIGHTS",
    }


def test_an_unstorable_name_rolls_back_the_whole_ingestion(store: Store) -> None:
    loaded = read_events(RETAIL_II, "online_retail")
    bad = LoadResult(loaded.events, loaded.rejects, name_counts([("85048", "nul\x00name", 5)]))
    with pytest.raises(StoreInputError, match=r"product_name.*NUL"):
        store.ingest_events(bad, source="bad", run_id="r1")
    counts = store.table_counts()
    assert counts["events"] == counts["rejected_events"] == counts["product_names"] == 0
    with pytest.raises(psycopg.errors.CheckViolation):  # the table's own guard, for direct SQL
        store.connection.execute("INSERT INTO product_names VALUES ('p', '', 's', 'r')")


def test_traits_command_shows_names_next_to_top_products(
    store: Store,
    database_url: str,
    build_model: Callable[..., TraitflowModel],
    capsys: pytest.CaptureFixture[str],
) -> None:
    version = store.save_model(build_model())  # top products start with "p1", "a,b"
    store.promote(version)
    counts = name_counts([("p1", "Blue Mug", 1), ("a,b", "Tea; Pot", 1)])
    named = LoadResult(event_schema.empty_events(), event_schema.empty_rejects(), counts)
    store.ingest_events(named, source="names", run_id="r1")
    args = ["traits", "--database-url", database_url, "--schema", store.schema]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "p1 (Blue Mug), a,b (Tea; Pot)" in out
    assert main([*args, "--json"]) == 0
    traits = json.loads(capsys.readouterr().out)["traits"]
    for trait in traits:
        expected = [{"p1": "Blue Mug", "a,b": "Tea; Pot"}.get(p) for p in trait["top_products"]]
        assert trait["top_product_names"] == expected
    assert traits[0]["top_product_names"][:2] == ["Blue Mug", "Tea; Pot"]
