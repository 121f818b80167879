"""Tests for traitflow.events: presets, mappings, validation and rejects, file handling."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from traitflow import event_schema
from traitflow.config import ConfigError
from traitflow.events import (
    PRESETS,
    REASON_PRECEDENCE,
    ColumnMapping,
    EventsFileError,
    LoadResult,
    iter_events,
    load_mapping,
    mapping_from_dict,
    read_events,
    validate_events,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CANONICAL = PRESETS["canonical"]
HEADER = list(event_schema.CANONICAL_COLUMNS)


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def assert_canonical(result: LoadResult, n_read: int) -> None:
    """Shapes and dtypes of both frames, and nothing lost: every row read is an event or a reject."""
    events, rejects = result.events, result.rejects
    assert list(events.columns) == HEADER
    assert list(rejects.columns) == list(event_schema.REJECT_COLUMNS)
    assert {c: str(events[c].dtype) for c in HEADER} == {
        "customer_id": "str",
        "event_time": event_schema.TIME_DTYPE,
        "action": "str",
        "product_id": "str",
        "category": "str",
        "price": "float64",
        "session_id": "str",
    }
    assert [str(rejects[c].dtype) for c in event_schema.REJECT_COLUMNS] == ["str", "int64", "str", "str"]
    assert set(events["action"]) <= set(event_schema.ACTIONS)
    assert set(rejects["reason"]) <= set(event_schema.REJECT_REASONS)
    assert result.n_read == len(events) + len(rejects) == n_read


def canonical_row(**overrides: str) -> dict[str, str]:
    row = {
        "customer_id": "c1",
        "event_time": "2024-01-01T00:00:00Z",
        "action": "view",
        "product_id": "p1",
        "category": "cat",
        "price": "1.5",
        "session_id": "s1",
    }
    return row | overrides


def frame(rows: list[dict[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=HEADER, dtype="str")


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=HEADER)
        writer.writeheader()
        writer.writerows(rows)
    return path


# --- presets on hand-made fixture files ------------------------------------------------------


def test_canonical_preset_converts_offsets_to_utc_and_normalizes() -> None:
    result = read_events(FIXTURES / "events_canonical.csv")
    assert_canonical(result, 4)
    assert result.rejects.empty
    ev = result.events
    assert ev["customer_id"].tolist() == ["c1", "c1", "c2", "c2"]  # " c1 " stripped
    assert ev["event_time"].tolist() == [
        utc("2024-03-10 07:30:00"),
        utc("2024-03-10 07:31:00"),
        utc("2024-03-10 08:00:00"),  # no offset: taken as UTC
        utc("2024-03-10 13:05:00.250"),
    ]
    assert ev["action"].tolist() == ["view", "purchase", "wishlist", "remove_from_cart"]
    assert ev["price"].tolist()[:2] == [59.9, 59.9]
    assert np.isnan(ev["price"][2]) and ev["price"][3] == 12.0
    assert ev["category"].isna().tolist() == [False, False, True, False]
    assert ev["session_id"].isna().tolist() == [False, False, True, False]


def test_rees46_preset_parses_utc_suffix_and_falls_back_to_category_id() -> None:
    result = read_events(FIXTURES / "events_rees46.csv", "rees46")
    assert_canonical(result, 4)
    ev = result.events
    assert ev["customer_id"].tolist() == ["541312140", "554748717", "519107250", "550050854"]
    assert ev["product_id"].tolist() == ["44600062", "3900821", "17200506", "1307067"]
    assert ev["event_time"].tolist() == [utc(f"2019-10-01 00:00:0{s}") for s in (0, 1, 4, 7)]
    assert ev["action"].tolist() == ["view", "cart", "remove_from_cart", "purchase"]
    assert ev["category"].tolist() == [
        "2103807459595387724",  # category_code blank -> category_id
        "appliances.environment.water_heater",
        "furniture.living_room.sofa",
        "computers.notebook",
    ]
    assert ev["price"].tolist() == [35.79, 33.2, 543.1, 251.74]
    assert ev["session_id"][0] == "72d76fde-8bb3-4e00-8c23-a032dfed738c"


def test_taobao_preset_reads_headerless_unix_seconds_and_synonyms() -> None:
    result = read_events(FIXTURES / "events_taobao.csv", "taobao")
    assert_canonical(result, 4)
    ev = result.events
    assert ev["customer_id"].tolist() == ["1", "1", "100", "100"]
    assert ev["product_id"].tolist() == ["2268318", "2333346", "2971043", "2971043"]
    assert ev["category"].tolist() == ["2520377", "2520771", "4869428", "4869428"]
    assert ev["action"].tolist() == ["view", "wishlist", "purchase", "cart"]
    assert ev["event_time"].tolist() == [
        utc("2017-11-24 17:21:10"),
        utc("2017-11-25 01:21:25"),
        utc("2017-11-26 13:46:39"),
        utc("2017-11-25 13:47:00"),
    ]
    assert ev["price"].isna().all() and ev["session_id"].isna().all()


def test_retailrocket_preset_keeps_millisecond_precision() -> None:
    result = read_events(FIXTURES / "events_retailrocket.csv", "retailrocket")
    assert_canonical(result, 4)
    ev = result.events
    assert ev["customer_id"].tolist() == ["257597", "992329", "121688", "121688"]
    assert ev["product_id"].tolist() == ["355908", "248676", "10572", "10572"]
    assert ev["action"].tolist() == ["view", "view", "cart", "purchase"]
    assert ev["event_time"].tolist() == [
        utc("2015-06-02 05:02:12.117"),
        utc("2015-06-02 05:50:14.164"),
        utc("2015-06-02 05:12:35.914"),
        utc("2015-06-02 05:17:56.276"),
    ]
    assert ev["category"].isna().all()


def test_unix_times_are_exact_to_the_microsecond() -> None:
    mapping = mapping_from_dict(
        {"columns": {c: c for c in event_schema.REQUIRED_COLUMNS}, "time_format": "unix_s"}
    )
    raw = frame(
        [canonical_row(event_time="1511544070.000001"), canonical_row(event_time="1511544070.123456")]
    )
    times = validate_events(raw[list(event_schema.REQUIRED_COLUMNS)], mapping, source="t").events[
        "event_time"
    ]
    assert times.tolist() == [utc("2017-11-24 17:21:10.000001"), utc("2017-11-24 17:21:10.123456")]


def test_unix_epochs_out_of_range_do_not_overflow() -> None:
    times = ["1e9", "99999999999999999999", "-5", "abc", "1511544070", ""]
    raw = pd.DataFrame(
        {"user_id": "u", "item_id": "i", "category_id": "", "behavior": "pv", "timestamp": times}
    )
    result = validate_events(raw, PRESETS["taobao"], source="tb")
    assert_canonical(result, 6)
    assert result.events["event_time"].tolist() == [utc("2001-09-09 01:46:40"), utc("2017-11-24 17:21:10")]
    assert result.rejects[["row_number", "reason"]].values.tolist() == [
        [2, event_schema.REASON_TIME_RANGE],
        [3, event_schema.REASON_TIME_RANGE],
        [4, event_schema.REASON_BAD_TIME],
        [6, event_schema.REASON_MISSING_TIME],
    ]


# --- rejects -----------------------------------------------------------------------------------

NOW = pd.Timestamp.now(tz="UTC")
REJECT_CASES = [
    (canonical_row(customer_id="  "), event_schema.REASON_MISSING_CUSTOMER),
    (canonical_row(product_id=""), event_schema.REASON_MISSING_PRODUCT),
    (canonical_row(event_time=" "), event_schema.REASON_MISSING_TIME),
    (canonical_row(event_time="yesterday"), event_schema.REASON_BAD_TIME),
    (canonical_row(event_time="2024-02-30T00:00:00Z"), event_schema.REASON_BAD_TIME),
    (canonical_row(event_time="1989-12-31T23:59:59Z"), event_schema.REASON_TIME_RANGE),
    (canonical_row(event_time=(NOW + pd.Timedelta(days=2)).isoformat()), event_schema.REASON_TIME_RANGE),
    (canonical_row(action="click"), event_schema.REASON_UNKNOWN_ACTION),
    (canonical_row(action=""), event_schema.REASON_UNKNOWN_ACTION),
    (canonical_row(customer_id="x" * (event_schema.MAX_ID_LENGTH + 1)), event_schema.REASON_OVERSIZED),
    (canonical_row(product_id="😀" * (event_schema.MAX_ID_LENGTH + 1)), event_schema.REASON_OVERSIZED),
    (canonical_row(category="c" * (event_schema.MAX_TEXT_LENGTH + 1)), event_schema.REASON_OVERSIZED),
    (canonical_row(session_id="s" * (event_schema.MAX_TEXT_LENGTH + 1)), event_schema.REASON_OVERSIZED),
    (canonical_row(customer_id="a\x00b"), event_schema.REASON_CONTROL_CHARS),
    (canonical_row(product_id="p\tq"), event_schema.REASON_CONTROL_CHARS),
    (canonical_row(category="x\x7fy"), event_schema.REASON_CONTROL_CHARS),
    (canonical_row(price="12,50"), event_schema.REASON_BAD_PRICE),
    (canonical_row(price="nan"), event_schema.REASON_BAD_PRICE),
    (canonical_row(price="inf"), event_schema.REASON_BAD_PRICE),
]


@pytest.mark.parametrize(("row", "reason"), REJECT_CASES, ids=[r for _, r in REJECT_CASES])
def test_each_bad_row_is_rejected_with_its_reason(row: dict[str, str], reason: str) -> None:
    good = canonical_row(customer_id="ok")
    result = validate_events(frame([good, row]), CANONICAL, source="unit", first_row_number=10)
    assert_canonical(result, 2)
    assert result.events["customer_id"].tolist() == ["ok"]
    rejects = result.rejects.to_dict("records")
    assert rejects == [
        {"source": "unit", "row_number": 11, "raw": json.dumps(row, ensure_ascii=False), "reason": reason}
    ]


# Produced only by order-line mapping options; covered in test_events_order_lines.py.
ORDER_LINE_REASONS = {
    event_schema.REASON_BAD_QUANTITY,
    event_schema.REASON_NON_PRODUCT,
    event_schema.REASON_CANCELLATION,
    event_schema.REASON_NON_POSITIVE_QUANTITY,
}


def test_reject_cases_cover_every_reason() -> None:
    value_level = set(event_schema.REJECT_REASONS) - set(event_schema.LINE_REJECT_REASONS)
    duplicates = {
        event_schema.REASON_DUPLICATE,
        event_schema.REASON_CONFLICTING_DUPLICATE,
    }  # test_events_duplicates.py
    assert {r for _, r in REJECT_CASES} | duplicates | ORDER_LINE_REASONS == value_level
    assert set(REASON_PRECEDENCE) == value_level


def test_exact_duplicates_are_compared_after_normalization() -> None:
    rows = [
        canonical_row(),
        canonical_row(customer_id=" c1", action="VIEW", event_time="2024-01-01T01:00:00+01:00", price="1.50"),
        canonical_row(price="2"),  # same key, differs in one field: a conflicting duplicate
        canonical_row(),
    ]
    result = validate_events(frame(rows), CANONICAL, source="unit")
    assert_canonical(result, 4)
    assert result.events["price"].tolist() == [1.5]
    assert result.rejects[["row_number", "reason"]].values.tolist() == [
        [2, event_schema.REASON_DUPLICATE],
        [3, event_schema.REASON_CONFLICTING_DUPLICATE],
        [4, event_schema.REASON_DUPLICATE],
    ]


def test_duplicate_of_a_rejected_row_is_not_a_duplicate() -> None:
    rows = [canonical_row(price="oops"), canonical_row(price="oops"), canonical_row()]
    result = validate_events(frame(rows), CANONICAL, source="unit")
    assert result.rejects["reason"].tolist() == [event_schema.REASON_BAD_PRICE] * 2
    assert len(result.events) == 1


def test_first_reason_in_precedence_order_wins() -> None:
    rows = [
        canonical_row(customer_id="", product_id="", event_time="bad", action="bad"),
        canonical_row(product_id="", event_time="", price="x"),
        canonical_row(customer_id="x\n" + "x" * 300, event_time="bad"),
        canonical_row(customer_id="x" * 300, event_time="bad"),
        canonical_row(event_time="1900-01-01T00:00:00Z", action="bad"),
        canonical_row(action="bad", price="x"),
    ]
    result = validate_events(frame(rows), CANONICAL, source="unit")
    assert result.rejects["reason"].tolist() == [
        event_schema.REASON_MISSING_CUSTOMER,
        event_schema.REASON_MISSING_PRODUCT,
        event_schema.REASON_CONTROL_CHARS,
        event_schema.REASON_OVERSIZED,
        event_schema.REASON_TIME_RANGE,
        event_schema.REASON_UNKNOWN_ACTION,
    ]


def test_raw_keeps_the_mapped_fields_unstripped_and_no_other_column() -> None:
    raw = frame([canonical_row(customer_id=" ", action=" VIEW ")])
    raw["ssn"] = "078-05-1120"  # a column the mapping never asked for
    result = validate_events(raw, CANONICAL, source="unit", first_row_number=7)
    assert json.loads(result.rejects["raw"][0]) == canonical_row(customer_id=" ", action=" VIEW ")
    assert result.rejects["row_number"].tolist() == [7]
    assert "078-05-1120" not in result.rejects.to_csv()


# --- hostile values ----------------------------------------------------------------------------

HOSTILE_IDS = [
    'quote"inside',
    "'single'",
    "semi;colon;",
    "comma,inside",
    "back\\slash\\n",
    "emoji😀🛒",
    "Robert'); DROP TABLE events;--",
    "NA",
    "null",
    "ünïcödé ℵ",
    "x" * event_schema.MAX_ID_LENGTH,
]


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet"])
def test_hostile_ids_round_trip_or_are_rejected(tmp_path: Path, suffix: str) -> None:
    rows = [canonical_row(customer_id=h, product_id=h[::-1], session_id=h) for h in HOSTILE_IDS]
    rows += [
        canonical_row(customer_id="big" + "x" * 10_000),
        canonical_row(product_id="line\nbreak"),
        canonical_row(customer_id="nul\x00byte"),
    ]
    path = tmp_path / f"hostile{suffix}"
    if suffix == ".parquet":
        frame(rows).to_parquet(path)
    else:
        write_csv(tmp_path / "hostile.csv", rows)
        if suffix == ".csv.gz":
            path.write_bytes(gzip.compress((tmp_path / "hostile.csv").read_bytes()))
    result = read_events(path)
    assert_canonical(result, len(rows))
    assert result.events["customer_id"].tolist() == HOSTILE_IDS
    assert result.events["product_id"].tolist() == [h[::-1] for h in HOSTILE_IDS]
    assert result.events["session_id"].tolist() == HOSTILE_IDS
    assert result.rejects["reason"].tolist() == [
        event_schema.REASON_OVERSIZED,
        event_schema.REASON_CONTROL_CHARS,
        event_schema.REASON_CONTROL_CHARS,
    ]
    assert json.loads(result.rejects["raw"][2])["customer_id"] == "nul\x00byte"


# --- user mappings -----------------------------------------------------------------------------

SHOP_MAPPING = {
    "name": "shop",
    "columns": {
        "customer_id": "Kunde",
        "event_time": "Zeit",
        "action": "Aktion",
        "product_id": "Artikel",
        "price": "Preis",
    },
    "time_format": "%d.%m.%Y %H:%M",
    "action_synonyms": {" Ansicht ": "view", "KAUF": "purchase"},
}
SHOP_CSV = (
    "Kunde;Zeit;Aktion;Artikel;Preis\nk1;05.02.2024 13:45;ansicht;a1;9.99\nk1;05.02.2024 13:50;Kauf;a1;\n"
)


def check_shop_result(result: LoadResult) -> None:
    assert_canonical(result, 2)
    ev = result.events
    assert ev["action"].tolist() == ["view", "purchase"]
    assert ev["event_time"].tolist() == [utc("2024-02-05 13:45"), utc("2024-02-05 13:50")]
    assert ev["price"][0] == 9.99 and np.isnan(ev["price"][1])
    assert ev["category"].isna().all()


def test_generic_mapping_from_dict() -> None:
    mapping = mapping_from_dict(SHOP_MAPPING)
    assert mapping.action_synonyms == {"ansicht": "view", "kauf": "purchase"}
    raw = pd.read_csv(io.StringIO(SHOP_CSV), sep=";", dtype=str, keep_default_na=False)
    check_shop_result(validate_events(raw, mapping, source="shop"))


def test_generic_mapping_from_yaml_and_json_files(tmp_path: Path) -> None:
    (tmp_path / "shop.yaml").write_text(
        """
columns:
  customer_id: Kunde
  event_time: Zeit
  action: Aktion
  product_id: Artikel
  price: Preis
time_format: "%d.%m.%Y %H:%M"
action_synonyms: {" Ansicht ": view, KAUF: purchase}
""",
        encoding="utf-8",
    )
    (tmp_path / "shop.json").write_text(json.dumps(SHOP_MAPPING), encoding="utf-8")
    from_yaml = load_mapping(str(tmp_path / "shop.yaml"))
    assert from_yaml.name == "shop"  # from the file name
    assert from_yaml == load_mapping(str(tmp_path / "shop.json")) == mapping_from_dict(SHOP_MAPPING)
    data = tmp_path / "shop.csv"
    data.write_text(SHOP_CSV.replace(";", ","), encoding="utf-8")
    check_shop_result(read_events(data, str(tmp_path / "shop.yaml")))


def test_presets_load_by_name() -> None:
    assert {name: load_mapping(name).name for name in PRESETS} == {n: n for n in PRESETS}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"columns": {"customer_id": "u"}}, r"required columns \['event_time', 'action', 'product_id'\]"),
        ({"columns": {**CANONICAL.columns, "brand": "b"}}, r"unknown canonical columns \['brand'\]"),
        ({"columns": CANONICAL.columns, "colour": 1}, r"unknown column mapping keys \['colour'\]"),
        ({"columns": {**CANONICAL.columns, "price": ""}}, "source column for 'price'"),
        ({"columns": CANONICAL.columns, "time_format": "unix_ns"}, "time_format must be one of"),
        ({"columns": CANONICAL.columns, "time_format": "%Y-%Q"}, "'Q' is a bad directive"),
        ({"columns": CANONICAL.columns, "action_synonyms": {"pv": "look"}}, "'pv' -> 'look'"),
        ({"columns": CANONICAL.columns, "action_synonyms": {"View": "cart"}}, "cannot remap canonical"),
        ({"columns": CANONICAL.columns, "action_synonyms": {"pv": "view", "PV": "cart"}}, "both"),
        ({"columns": CANONICAL.columns, "header": ["customer_id"]}, r"not in header"),
        ({"columns": CANONICAL.columns, "header": "customer_id"}, "header must be a list"),
        ({"columns": PRESETS["retailrocket"].columns, "category_fallback_column": "c"}, "needs a mapped"),
        ({"name": "", "columns": CANONICAL.columns}, "name must be a non-empty string"),
        ({}, "needs 'columns'"),
    ],
)
def test_invalid_mappings_are_refused_precisely(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        mapping_from_dict(data)


def test_load_mapping_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a preset"):
        load_mapping("rees47")
    with pytest.raises(ConfigError, match="not found"):
        load_mapping(str(tmp_path / "nope.yaml"))
    (tmp_path / "list.yaml").write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="mapping at top level"):
        load_mapping(str(tmp_path / "list.yaml"))
    (tmp_path / "bad.json").write_text('{"columns": {"customer_id": "u"}}', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.json: .*required columns"):
        load_mapping(str(tmp_path / "bad.json"))


def test_mapping_is_copied_not_shared() -> None:
    columns = dict(CANONICAL.columns)
    mapping = ColumnMapping(name="m", columns=columns)
    columns["customer_id"] = "changed"
    assert mapping.columns["customer_id"] == "customer_id"


# --- Parquet, chunking, files ------------------------------------------------------------------


def test_parquet_round_trip_with_typed_columns(tmp_path: Path) -> None:
    expected = read_events(FIXTURES / "events_canonical.csv").events
    expected.to_parquet(tmp_path / "canonical.parquet")  # typed: timestamps, float prices, nulls
    result = read_events(tmp_path / "canonical.parquet")
    assert_canonical(result, 4)
    pd.testing.assert_frame_equal(result.events, expected)

    ints = pd.DataFrame({"visitorid": [7, 8], "itemid": [1, 2], "event": ["view", "addtocart"]})
    ints["timestamp"] = [1433221332117, 1433224214164]
    ints.to_parquet(tmp_path / "rr.parquet")
    ev = read_events(tmp_path / "rr.parquet", "retailrocket").events
    assert ev["customer_id"].tolist() == ["7", "8"]
    assert ev["action"].tolist() == ["view", "cart"]
    assert ev["event_time"][1] == utc("2015-06-02 05:50:14.164")


def messy_rows() -> list[dict[str, str]]:
    """Valid rows, rejects, and duplicates whose first occurrence is several rows earlier."""
    rows = []
    for i in range(23):
        # customer x product repeats every 6 rows, so 6 events and 17 duplicates across chunks
        rows.append(canonical_row(customer_id=f"c{i % 3}", product_id=f"p{i % 2}"))
        if i % 6 == 0:
            rows.append(canonical_row(action="zoom", customer_id=f"c{i}"))
    return rows


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_chunked_reading_equals_one_shot(tmp_path: Path, suffix: str) -> None:
    rows = messy_rows()
    path = tmp_path / f"events{suffix}"
    if suffix == ".csv":
        write_csv(path, rows)
    else:
        frame(rows).to_parquet(path)
    whole = read_events(path)
    assert_canonical(whole, len(rows))
    assert len(whole.events) == 6
    assert whole.rejects["reason"].value_counts().to_dict() == {
        event_schema.REASON_DUPLICATE: 17,
        event_schema.REASON_UNKNOWN_ACTION: 4,
    }
    zoom = whole.rejects["reason"] == event_schema.REASON_UNKNOWN_ACTION
    assert whole.rejects.loc[zoom, "row_number"].tolist() == [2, 9, 16, 23]
    for chunksize in (1, 2, 5, 7, len(rows), 1000):
        parts = list(iter_events(path, chunksize=chunksize))
        assert len(parts) == -(-len(rows) // chunksize)
        chunked = LoadResult(
            pd.concat([p.events for p in parts], ignore_index=True),
            pd.concat([p.rejects for p in parts], ignore_index=True),
        )
        pd.testing.assert_frame_equal(chunked.events, whole.events)
        pd.testing.assert_frame_equal(chunked.rejects, whole.rejects)
        pd.testing.assert_frame_equal(read_events(path, chunksize=chunksize).rejects, whole.rejects)


def test_blank_lines_become_rejects_with_file_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "blank.csv"
    path.write_text(",".join(HEADER) + "\nc1,2024-01-01,view,p1,,,\n\nc2,2024-01-01,view,p1,,,\n")
    result = read_events(path)
    assert_canonical(result, 3)
    # A blank line has one (empty) field where the header has seven.
    assert result.rejects[["row_number", "raw", "reason"]].values.tolist() == [
        [2, '""', event_schema.REASON_MALFORMED_ROW]
    ]


def test_header_only_and_empty_headerless_files_give_empty_frames(tmp_path: Path) -> None:
    (tmp_path / "header.csv").write_text(",".join(HEADER) + "\n")
    (tmp_path / "empty.csv").write_text("")
    assert_canonical(read_events(tmp_path / "header.csv"), 0)
    assert_canonical(read_events(tmp_path / "empty.csv", "taobao"), 0)
    assert sum(part.n_read for part in iter_events(tmp_path / "empty.csv", "taobao", chunksize=10)) == 0


def test_file_errors_name_the_file_and_columns(tmp_path: Path) -> None:
    with pytest.raises(EventsFileError, match=r"events file not found: .*missing\.csv"):
        read_events(tmp_path / "missing.csv")
    (tmp_path / "events.xlsx").write_text("x")
    with pytest.raises(EventsFileError, match=r"events\.xlsx: unsupported file type"):
        iter_events(tmp_path / "events.xlsx")  # raised on the call, not on first iteration
    wrong = {**PRESETS["retailrocket"].columns, "customer_id": "user_id", "session_id": "user_session"}
    with pytest.raises(EventsFileError, match=r"needs columns \['user_id', 'user_session'\]"):
        read_events(FIXTURES / "events_retailrocket.csv", mapping_from_dict({"columns": wrong}))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(EventsFileError, match="expected a header row"):
        read_events(tmp_path / "empty.csv")
    with pytest.raises(EventsFileError, match=r"source-x: .*needs columns"):
        validate_events(pd.DataFrame({"a": ["1"]}), CANONICAL, source="source-x")


@pytest.mark.parametrize(
    ("body", "rejected"),
    [
        ("c1,2024-01-01,view,p1,,,\nc1,2024-01-01,view,p1,,,,extra\n", 2),  # a later row too long
        ("c1,2024-01-01,view,p1,,,,extra\nc1,2024-01-01,view,p1,,,\n", 1),  # the first: pandas only warns
        ("c1,2024-01-01,view,p1,,\nc1,2024-01-01,view,p1,,,\n", 1),  # too few: pandas would pad
    ],
)
def test_malformed_lines_are_rejects_and_the_rest_loads(tmp_path: Path, body: str, rejected: int) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(",".join(HEADER) + "\n" + body)
    bad_line = body.splitlines()[rejected - 1]
    for chunksize in (None, 1):
        result = read_events(path, chunksize=chunksize)
        assert_canonical(result, 2)
        assert result.events["customer_id"].tolist() == ["c1"]
        assert result.rejects.to_dict("records") == [
            {
                "source": str(path),
                "row_number": rejected,
                "raw": json.dumps(bad_line),
                "reason": event_schema.REASON_MALFORMED_ROW,
            }
        ]


def test_non_utf8_lines_are_rejects_and_broken_gzip_raises(tmp_path: Path) -> None:
    (tmp_path / "latin1.csv").write_bytes(
        (",".join(HEADER) + "\nJosé,2024-01-01,view,p,,,\nc2,2024-01-01,view,p,,,\n").encode("latin-1")
    )
    result = read_events(tmp_path / "latin1.csv")
    assert_canonical(result, 2)
    assert result.events["customer_id"].tolist() == ["c2"]
    assert result.rejects[["row_number", "reason"]].values.tolist() == [
        [1, event_schema.REASON_INVALID_ENCODING]
    ]
    raw = result.rejects["raw"][0]
    assert raw == '"Jos\\udce9,2024-01-01,view,p,,,"'  # the byte 0xE9, escaped
    assert json.loads(raw).encode("utf-8", "surrogateescape") == "José,2024-01-01,view,p,,,".encode("latin-1")
    (tmp_path / "latin1_header.csv").write_bytes("Kunde_é,x\n".encode("latin-1"))
    with pytest.raises(EventsFileError, match=r"latin1_header\.csv: header line is not UTF-8"):
        read_events(tmp_path / "latin1_header.csv")
    (tmp_path / "broken.csv.gz").write_bytes(gzip.compress(b"customer_id,event_time\n" * 50)[:30])
    for chunksize in (None, 1):
        with pytest.raises(EventsFileError, match=r"broken\.csv\.gz: cannot decode"):
            read_events(tmp_path / "broken.csv.gz", chunksize=chunksize)
