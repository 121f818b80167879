"""Built-in column mappings of public e-commerce exports, and loading a mapping by name or file."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import yaml

from traitflow import event_schema
from traitflow.config import ConfigError
from traitflow.events.mapping import CancellationRule, ColumnMapping, NonProductRule, mapping_from_dict

# Online Retail (UCI, I and II): stock codes of lines that are no product. Found by inspecting the
# codes that are not 5 digits + optional letters, with their descriptions: postage and carriage
# (POST, DOT "dotcom postage", C2/C3), manual entries (M, m), discount (D), samples (S), bad debt
# (B), bank and Amazon fees, adjustments, cancer-charity commission (CRUK), cushion pads at a
# token 0.001 (PADS), gift vouchers and test codes. DCGS... codes are real (dotcom shop) products.
ONLINE_RETAIL_NON_PRODUCT = NonProductRule(
    codes=(
        "POST",
        "DOT",
        "C2",
        "C3",
        "M",
        "m",
        "D",
        "S",
        "B",
        "CRUK",
        "PADS",
        "GIFT",
        "BANK CHARGES",
        "AMAZONFEE",
    ),
    patterns=(r"ADJUST\d*", r"TEST\d+", r"gift_\d+_\d+"),
)


PRESETS: dict[str, ColumnMapping] = {
    "canonical": ColumnMapping(name="canonical", columns={c: c for c in event_schema.CANONICAL_COLUMNS}),
    # Kaggle "eCommerce behavior data from multi category store"; category_code is often blank.
    "rees46": ColumnMapping(
        name="rees46",
        columns={
            "customer_id": "user_id",
            "event_time": "event_time",
            "action": "event_type",
            "product_id": "product_id",
            "category": "category_code",
            "price": "price",
            "session_id": "user_session",
        },
        category_fallback_column="category_id",
    ),
    # Tianchi Taobao UserBehavior.csv: no header row.
    "taobao": ColumnMapping(
        name="taobao",
        columns={
            "customer_id": "user_id",
            "product_id": "item_id",
            "category": "category_id",
            "action": "behavior",
            "event_time": "timestamp",
        },
        header=("user_id", "item_id", "category_id", "behavior", "timestamp"),
        time_format="unix_s",
        action_synonyms={"pv": "view", "fav": "wishlist", "buy": "purchase"},
    ),
    # Kaggle RetailRocket events.csv; categories live in a separate item_properties file.
    "retailrocket": ColumnMapping(
        name="retailrocket",
        columns={
            "customer_id": "visitorid",
            "event_time": "timestamp",
            "action": "event",
            "product_id": "itemid",
        },
        time_format="unix_ms",
        action_synonyms={"addtocart": "cart", "transaction": "purchase"},
    ),
    # UCI Online Retail (InvoiceNo, UnitPrice, CustomerID) and Online Retail II (Invoice, Price,
    # Customer ID): invoice lines, every one a purchase or a cancellation, no category. The invoice
    # is the session (one basket). Dates are ISO in exports of the .xlsx, month-first in others.
    "online_retail": ColumnMapping(
        name="online_retail",
        columns={
            "customer_id": ("CustomerID", "Customer ID"),
            "event_time": "InvoiceDate",
            "product_id": "StockCode",
            "price": ("UnitPrice", "Price"),
            "session_id": ("InvoiceNo", "Invoice"),
            "quantity": "Quantity",
            "product_name": "Description",
        },
        time_format=("iso", "%m/%d/%Y %H:%M"),
        default_action="purchase",
        integral_float_ids=True,
        cancellation=CancellationRule(invoice_column=("InvoiceNo", "Invoice"), invoice_prefix="C"),
        non_product=ONLINE_RETAIL_NON_PRODUCT,
    ),
}


def load_mapping(path_or_name: str | Path) -> ColumnMapping:
    """A preset by name (see ``PRESETS``), or a mapping read from a .yaml/.yml/.json file."""
    if path_or_name in PRESETS:
        return PRESETS[path_or_name]
    path = Path(path_or_name)
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise ConfigError(
            f"unknown column mapping {path_or_name!r}: not a preset {sorted(PRESETS)} "
            "nor a .yaml/.yml/.json file"
        )
    if not path.is_file():
        raise ConfigError(f"column mapping file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot parse column mapping: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: a column mapping file must hold a mapping at top level")
    try:
        return mapping_from_dict({"name": path.stem, **data})
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def resolve_mapping(mapping: ColumnMapping | str) -> ColumnMapping:
    """A mapping given as itself, or by preset name or file path (``load_mapping``)."""
    return load_mapping(mapping) if isinstance(mapping, str) else mapping
