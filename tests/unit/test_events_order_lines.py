"""Order-line exports: the ``online_retail`` preset and the mapping options it is built from.

Fixtures: ``events_online_retail_ii.csv`` (Online Retail II spelling: Invoice, Price, Customer ID,
ISO dates) and ``events_online_retail.csv`` (Online Retail spelling: InvoiceNo, UnitPrice,
CustomerID, month-first dates), the same 15 lines in both. CSV.gz and Parquet copies are made
from them per test; the Parquet copy has typed columns (float customer ids with nulls).
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from traitflow import event_schema
from traitflow.config import ConfigError
from traitflow.events import (
    PRESETS,
    REASON_PRECEDENCE,
    CancellationRule,
    ColumnMapping,
    EventsFileError,
    LoadResult,
    NonProductRule,
    iter_events,
    load_mapping,
    mapping_from_dict,
    read_events,
    validate_events,
)

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
SPELLINGS = {"ii": FIXTURES / "events_online_retail_ii.csv", "i": FIXTURES / "events_online_retail.csv"}
REAL_FILE = REPO / "examples" / "data" / "online_retail_ii_2009_2010.parquet"
RETAIL = PRESETS["online_retail"]


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def in_format(csv_path: Path, fmt: str, tmp_path: Path) -> Path:
    """The fixture as .csv, .csv.gz or a typed .parquet (pandas' inferred dtypes)."""
    if fmt == "csv":
        return csv_path
    if fmt == "csv.gz":
        out = tmp_path / f"{csv_path.stem}.csv.gz"
        out.write_bytes(gzip.compress(csv_path.read_bytes()))
        return out
    out = tmp_path / f"{csv_path.stem}.parquet"
    typed = pd.read_csv(csv_path)
    customer = "CustomerID" if "CustomerID" in typed else "Customer ID"
    assert typed[customer].dtype == np.float64  # ids stored as floats, nulls included, like the real file
    typed.to_parquet(out)
    return out


# The fixture's lines, by 1-based data row: what each one must become.
EXPECTED_EVENTS = pd.DataFrame(
    {
        "customer_id": ["13085", "13085", "12682", "12682", "13085.5", "14000"],
        "event_time": [
            utc("2009-12-01 07:45"),
            utc("2009-12-01 07:45"),
            utc("2009-12-01 11:00"),
            utc("2009-12-01 12:00"),
            utc("2009-12-01 12:05"),
            utc("2009-12-01 12:20"),
        ],
        "action": ["purchase"] * 6,
        "product_id": ["85048", "79323P", "22041", "85048", "21232", "85048"],
        "category": pd.Series([np.nan] * 6, dtype="str"),
        "price": [6.95, 6.75, 2.1, 6.95, 1.25, 6.95],
        "session_id": ["489434", "489434", "489452", "489453", "489454", "489457"],
    }
).astype({"event_time": event_schema.TIME_DTYPE, "customer_id": "str", "action": "str", "product_id": "str"})
EXPECTED_REJECTS = [
    [3, event_schema.REASON_DUPLICATE],  # same event as line 1 (only quantity and a trailing space differ)
    [4, event_schema.REASON_NON_PRODUCT],  # POST
    [5, event_schema.REASON_CANCELLATION],  # C489449
    [6, event_schema.REASON_MISSING_CUSTOMER],  # blank customer (and a negative quantity)
    [7, event_schema.REASON_NON_POSITIVE_QUANTITY],  # -3 on a normal invoice: a stock correction
    [9, event_schema.REASON_NON_PRODUCT],  # TEST001 (pattern)
    [10, event_schema.REASON_NON_PRODUCT],  # gift_0001_20 (pattern)
    [13, event_schema.REASON_NON_PRODUCT],  # M
    [14, event_schema.REASON_BAD_QUANTITY],  # "abc"
]
EXPECTED_NAMES = {
    "22041": 'RECORD FRAME 7" SINGLE SIZE',
    "79323P": "PINK CHERRY LIGHTS",
    "85048": "15CM CHRISTMAS GLASS BALL 20 LIGHTS",  # 2 event lines against 1 "ILLUMINATED GLASS BALL"
}


@pytest.mark.parametrize("fmt", ["csv", "csv.gz", "parquet"])
@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_online_retail_preset_reads_both_spellings_in_every_format(
    spelling: str, fmt: str, tmp_path: Path
) -> None:
    result = read_events(in_format(SPELLINGS[spelling], fmt, tmp_path), "online_retail")
    assert result.n_read == len(result.events) + len(result.rejects) == 15
    pd.testing.assert_frame_equal(result.events, EXPECTED_EVENTS[list(event_schema.CANONICAL_COLUMNS)])
    assert result.rejects[["row_number", "reason"]].values.tolist() == EXPECTED_REJECTS
    assert dict(result.product_names().itertuples(index=False)) == EXPECTED_NAMES
    counts = result.products.set_index(["product_id", "product_name"])["n_rows"].to_dict()
    assert counts == {
        ("22041", 'RECORD FRAME 7" SINGLE SIZE'): 1,
        ("79323P", "PINK CHERRY LIGHTS"): 1,
        ("85048", "15CM CHRISTMAS GLASS BALL 20 LIGHTS"): 2,
        ("85048", "ILLUMINATED GLASS BALL"): 1,
    }
    assert list(result.products.columns) == list(event_schema.PRODUCT_NAME_COLUMNS)
    assert [str(t) for t in result.products.dtypes] == ["str", "str", "int64"]


def test_rejects_keep_the_raw_line_under_the_files_own_column_names() -> None:
    result = read_events(SPELLINGS["i"], "online_retail")
    raw = json.loads(result.rejects["raw"].iloc[2])  # line 5, the cancellation
    assert raw["InvoiceNo"] == "C489449"
    assert raw["CustomerID"] == "13085.0"  # the raw text, before id normalization


def test_every_order_line_reason_has_a_precedence_after_parsing_and_before_duplicates() -> None:
    order_line = [
        event_schema.REASON_BAD_QUANTITY,
        event_schema.REASON_NON_PRODUCT,
        event_schema.REASON_CANCELLATION,
        event_schema.REASON_NON_POSITIVE_QUANTITY,
    ]
    positions = [REASON_PRECEDENCE.index(r) for r in order_line]
    assert positions == sorted(positions)
    assert REASON_PRECEDENCE.index(event_schema.REASON_BAD_PRICE) < positions[0]
    assert positions[-1] < REASON_PRECEDENCE.index(event_schema.REASON_DUPLICATE)
    assert {r for _, r in EXPECTED_REJECTS} >= set(order_line)


@pytest.mark.parametrize("chunksize", [1, 4, 7])
def test_chunked_reading_merges_product_names_exactly(chunksize: int) -> None:
    whole = read_events(SPELLINGS["ii"], "online_retail")
    chunked = read_events(SPELLINGS["ii"], "online_retail", chunksize=chunksize)
    pd.testing.assert_frame_equal(chunked.events, whole.events)
    pd.testing.assert_frame_equal(chunked.rejects, whole.rejects)
    pd.testing.assert_frame_equal(chunked.products, whole.products)
    parts = list(iter_events(SPELLINGS["ii"], "online_retail", chunksize=chunksize))
    merged = event_schema.merge_name_counts([p.products for p in parts])
    pd.testing.assert_frame_equal(merged, whole.products)


# --- column alternatives ------------------------------------------------------------------------


def test_first_present_alternative_wins() -> None:
    columns = {"customer_id": ["user", "uid"], "event_time": "t", "product_id": "p"}
    mapping = mapping_from_dict({"columns": columns, "default_action": "view"})
    both = pd.DataFrame({"uid": ["u2"], "user": ["u1"], "t": ["2024-01-01"], "p": ["p1"]})
    only_second = both.drop(columns="user")
    assert validate_events(both, mapping, source="s").events["customer_id"].tolist() == ["u1"]
    assert validate_events(only_second, mapping, source="s").events["customer_id"].tolist() == ["u2"]
    resolved = mapping.resolve(["uid", "t", "p"], "s")
    assert resolved.columns == {"customer_id": "uid", "event_time": "t", "product_id": "p"}
    assert mapping.source_columns == ["user", "uid", "t", "p"]


def test_no_alternative_present_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "lines.csv"
    path.write_text("Invoice,StockCode,Quantity,InvoiceDate,Price,Customer\n1,85048,1,2024-01-01,1.0,7\n")
    message = r"needs columns \[one of \('CustomerID', 'Customer ID'\), 'Description'\] that are missing"
    with pytest.raises(EventsFileError, match=message):
        read_events(path, "online_retail")
    with pytest.raises(EventsFileError, match=message):
        iter_events(path, "online_retail")


def test_headerless_csv_resolves_alternatives_against_its_header(tmp_path: Path) -> None:
    data = {
        "columns": {"customer_id": ["cid", "user"], "event_time": "t", "product_id": "p"},
        "header": ["user", "t", "p"],
        "default_action": "cart",
    }
    path = tmp_path / "headerless.csv"
    path.write_text("u1,2024-01-01,p1\n")
    events = read_events(path, mapping_from_dict(data)).events
    assert events[["customer_id", "action", "product_id"]].values.tolist() == [["u1", "cart", "p1"]]
    with pytest.raises(ConfigError, match=r"mapped columns \[one of \('cid', 'uid'\)\] are not in header"):
        mapping_from_dict({**data, "columns": {**data["columns"], "customer_id": ["cid", "uid"]}})


# --- single options -----------------------------------------------------------------------------

BASE = {"customer_id": "c", "event_time": "t", "product_id": "p"}


def lines(**columns: list[str]) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    # Distinct times, so that no line repeats another unless a test says so.
    times = [f"2024-01-01T00:00:{i:02d}Z" for i in range(n)]
    base = {"c": ["c1"] * n, "t": times, "p": [f"p{i}" for i in range(n)]}
    return pd.DataFrame(base | columns, dtype="str")


def test_default_action_without_and_with_an_action_column() -> None:
    without = mapping_from_dict({"columns": BASE, "default_action": "purchase"})
    result = validate_events(lines(c=["a", "b"]), without, source="s")
    assert result.events["action"].tolist() == ["purchase", "purchase"]
    assert str(result.events["action"].dtype) == "str"

    with_column = mapping_from_dict({"columns": {**BASE, "action": "a"}, "default_action": "view"})
    result = validate_events(lines(a=["cart", " ", "zoom"]), with_column, source="s")
    assert result.events["action"].tolist() == ["cart", "view"]  # blank -> the default
    assert result.rejects[["row_number", "reason"]].values.tolist() == [
        [3, event_schema.REASON_UNKNOWN_ACTION]
    ]


def test_integral_float_ids_only_when_asked_and_only_integral_ones() -> None:
    ids = ["13085.0", "13085", "13085.5", "7.", "-2.00", "1e5", "x.0", " 42.0 "]
    mapping = {"columns": {**BASE, "session_id": "s"}, "default_action": "view"}
    raw = lines(c=ids, p=ids, s=ids)
    on = validate_events(raw, mapping_from_dict({**mapping, "integral_float_ids": True}), source="s").events
    expected = ["13085", "13085", "13085.5", "7", "-2", "1e5", "x.0", "42"]
    assert on["customer_id"].tolist() == on["product_id"].tolist() == on["session_id"].tolist() == expected
    off = validate_events(raw, mapping_from_dict(mapping), source="s").events
    assert off["customer_id"].tolist() == [i.strip() for i in ids]


def test_quantity_cancellation_and_non_product_rules() -> None:
    mapping = mapping_from_dict(
        {
            "columns": {**BASE, "quantity": "q"},
            "default_action": "purchase",
            "cancellation": {"invoice_column": ["inv", "invoice"], "invoice_prefix": "R"},
            "non_product": {"codes": ["FEE"], "patterns": ["X-\\d+"]},
        }
    )
    raw = lines(
        p=["p1", "FEE", "X-12", "X-12a", "p2", "p3", "p4", "p5", "p6"],
        q=["1", "1", "1", "1", "-1", "0", "-2", "", "1.5e"],
        inv=["1", "1", "1", "1", "1", "1", "R9", "2", "3"],
    )
    result = validate_events(raw, mapping, source="s")
    assert result.events["product_id"].tolist() == ["p1", "X-12a", "p5"]  # a blank quantity is accepted
    assert result.rejects[["row_number", "reason"]].values.tolist() == [
        [2, event_schema.REASON_NON_PRODUCT],
        [3, event_schema.REASON_NON_PRODUCT],
        [5, event_schema.REASON_NON_POSITIVE_QUANTITY],
        [6, event_schema.REASON_NON_POSITIVE_QUANTITY],
        [7, event_schema.REASON_CANCELLATION],
        [9, event_schema.REASON_BAD_QUANTITY],
    ]


def test_product_names_skip_blank_and_unstorable_names() -> None:
    mapping = mapping_from_dict({"columns": {**BASE, "product_name": "n"}, "default_action": "view"})
    names = ["  Mug ", "", "bad\x00name", "x" * (event_schema.MAX_TEXT_LENGTH + 1), "Mug", "Cup"]
    raw = lines(p=["a", "b", "c", "d", "a", "a"], n=names)
    result = validate_events(raw, mapping, source="s")
    assert len(result.events) == 6  # a bad name never costs the event
    assert result.products.values.tolist() == [["a", "Cup", 1], ["a", "Mug", 2]]
    assert result.product_names().values.tolist() == [["a", "Mug"]]


def test_most_frequent_name_ties_go_to_the_smallest_name() -> None:
    counts = pd.DataFrame(
        {
            "product_id": ["b", "a", "a", "b"],
            "product_name": ["Zed", "Bee", "Ant", "Ant"],
            "n_rows": [3, 1, 1, 3],
        }
    )
    assert event_schema.most_frequent_names(counts).values.tolist() == [["a", "Ant"], ["b", "Ant"]]
    assert LoadResult(event_schema.empty_events(), event_schema.empty_rejects()).product_names().empty


def test_time_format_alternatives_per_value() -> None:
    formats = ["iso", "%d.%m.%Y"]
    mapping = mapping_from_dict({"columns": BASE, "default_action": "view", "time_format": formats})
    raw = lines(t=["2024-01-02 03:04", "05.06.2024", "June 5", "1989-01-01"])
    result = validate_events(raw, mapping, source="s")
    assert result.events["event_time"].tolist() == [utc("2024-01-02 03:04"), utc("2024-06-05")]
    assert result.rejects["reason"].tolist() == [event_schema.REASON_BAD_TIME, event_schema.REASON_TIME_RANGE]


# --- configuration ------------------------------------------------------------------------------


def test_the_readmes_order_line_yaml_is_the_preset(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Order-line exports") :]
    opening = section.index("```yaml\n") + len("```yaml\n")
    block = section[opening : section.index("```\n", opening)]
    (tmp_path / "online_retail.yaml").write_text(block, encoding="utf-8")
    assert load_mapping(str(tmp_path / "online_retail.yaml")) == RETAIL
    assert load_mapping("online_retail") is RETAIL


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"default_action": "return"}, "default_action 'return' is not one of"),
        ({"integral_float_ids": "yes"}, "integral_float_ids must be true or false"),
        ({"cancellation": {"invoice_prefix": "C"}}, "cancellation: .*invoice_column"),
        ({"cancellation": {"invoice_column": "i", "prefix": "C"}}, r"unknown cancellation keys \['prefix'\]"),
        ({"cancellation": {"invoice_column": "i", "invoice_prefix": " "}}, "prefix must be non-blank"),
        ({"cancellation": "C"}, "cancellation must be a mapping"),
        ({"non_product": {}}, "non_product needs at least one code or pattern"),
        ({"non_product": {"codes": "POST"}}, "non_product codes must be a list"),
        ({"non_product": {"patterns": ["(?=x)"]}}, "not a valid RE2 expression"),
        ({"non_product": {"patterns": ["(unclosed"]}}, "not a valid RE2 expression"),
        ({"time_format": []}, "time_format list must not be empty"),
        ({"time_format": ["iso", "unix_ns"]}, "time_format must be one of"),
        ({"columns": {**BASE, "price": []}}, "source column for 'price'"),
        ({"columns": {**BASE, "price": ["a", ""]}}, "source column for 'price'"),
        ({"columns": {**BASE, "colour": "c"}}, r"unknown canonical columns \['colour'\]"),
    ],
)
def test_invalid_order_line_options_are_refused_precisely(extra: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        mapping_from_dict({"columns": BASE, "default_action": "view", **extra})


def test_action_is_required_without_a_default() -> None:
    with pytest.raises(ConfigError, match=r"required columns \['action'\] are not mapped"):
        mapping_from_dict({"columns": BASE})


def test_rules_are_frozen_values() -> None:
    rule = NonProductRule(codes=["POST"], patterns=[" TEST\\d+ "])  # type: ignore[arg-type]
    assert rule == NonProductRule(codes=("POST",), patterns=("TEST\\d+",))
    mapping = ColumnMapping(
        name="m",
        columns=BASE,
        default_action="view",
        cancellation={"invoice_column": ["a", "b"]},  # type: ignore[arg-type]
    )
    assert mapping.cancellation == CancellationRule(invoice_column=("a", "b"), invoice_prefix="C")


# --- the real file ------------------------------------------------------------------------------


def test_the_real_online_retail_ii_file() -> None:
    """examples/data: 525,461 lines, each an event or a reject with its reason."""
    started = time.perf_counter()
    result = read_events(REAL_FILE, "online_retail")
    seconds = time.perf_counter() - started
    events, rejects = result.events, result.rejects
    assert result.n_read == len(events) + len(rejects) == 525_461
    assert rejects["reason"].value_counts().to_dict() == {
        event_schema.REASON_MISSING_CUSTOMER: 107_927,
        event_schema.REASON_DUPLICATE: 12_608,
        event_schema.REASON_CANCELLATION: 9_394,
        event_schema.REASON_NON_PRODUCT: 1_815,
        # Same customer, minute and product as a kept line: 54 at another price on the same
        # invoice, 25 on another invoice (session) at the same price.
        event_schema.REASON_CONFLICTING_DUPLICATE: 79,
    }
    assert len(events) == 393_638
    # 4,383 customers in the file; 98 of them have only cancellations or non-product lines.
    assert events["customer_id"].nunique() == 4_285
    assert events["product_id"].nunique() == 4_007
    assert not events["customer_id"].str.contains(".", regex=False).any()
    assert set(events["action"]) == {"purchase"}
    assert events["event_time"].min() == utc("2009-12-01 07:45") and events["event_time"].max() == utc(
        "2010-12-09 20:01"
    )
    names = result.product_names()
    assert len(names) == 4_007 and set(names["product_id"]) == set(events["product_id"])
    assert dict(names[names["product_id"] == "85123A"].values.tolist()) == {
        "85123A": "WHITE HANGING HEART T-LIGHT HOLDER"
    }
    assert seconds < 60, f"reading the real file took {seconds:.1f} s"


def test_raw_text_of_rejects_is_exactly_what_json_dumps_writes() -> None:
    """The vectorized reject JSON, on every control character, quotes, backslashes and non-ASCII."""
    rng = np.random.default_rng(3)
    alphabet = np.array([chr(c) for c in range(0x30)] + ['"', "\\", "é", "😀", "\u2028", "\x7f", "Z"])
    text = ["".join(rng.choice(alphabet, size=rng.integers(0, 9))) for _ in range(2_000)]
    raw = pd.DataFrame({"c": text, 'we"ird\\ key\n': text[::-1], "p": ["p1"] * len(text)}, dtype="str")
    columns = {**BASE, "category": 'we"ird\\ key\n'}  # mapped: a reject keeps only mapped columns
    mapping = mapping_from_dict(
        {"columns": columns, "default_action": "view", "non_product": {"codes": ["p1"]}}
    )
    rejects = validate_events(raw.assign(t="2024-01-01"), mapping, source="s").rejects
    assert len(rejects) == len(text)  # every line is a non-product line or lacks a customer
    expected = [json.dumps(r, ensure_ascii=False) for r in raw.assign(t="2024-01-01").to_dict("records")]
    assert rejects["raw"].tolist() == expected
