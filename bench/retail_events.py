"""The canonical events frame of the Online Retail II export (examples/data), for bench scripts.

Customer ID float -> int string, rows without a customer dropped, cancellations (Invoice 'C...')
and Quantity <= 0 dropped, non-product StockCodes (postage, fees, adjustments, tests, gift
vouchers) dropped, action 'purchase', event_time = InvoiceDate as UTC, exact duplicates dropped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from traitflow.event_schema import as_canonical

RETAIL_PATH = Path(__file__).resolve().parents[1] / "examples" / "data" / "online_retail_ii_2009_2010.parquet"
NON_PRODUCT_CODES = (
    "POST",
    "DOT",
    "M",
    "D",
    "C2",
    "BANK CHARGES",
    "AMAZONFEE",
    "PADS",
    "CRUK",
    "S",
    "B",
    "m",
)
NON_PRODUCT_PREFIXES = ("ADJUST", "TEST", "gift_")


def retail_events(path: Path = RETAIL_PATH) -> pd.DataFrame:
    """Canonical purchase events, sorted by time (see the module docstring for the filters)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the Online Retail II parquet belongs at this path")
    raw = pd.read_parquet(path)
    codes = raw["StockCode"].astype(str)
    keep = (
        raw["Customer ID"].notna()
        & ~raw["Invoice"].astype(str).str.startswith("C")
        & (raw["Quantity"] > 0)
        & ~codes.isin(NON_PRODUCT_CODES)
        & ~codes.str.startswith(NON_PRODUCT_PREFIXES)
    ).to_numpy()
    raw = raw[keep]
    frame = pd.DataFrame(
        {
            "customer_id": raw["Customer ID"].astype(np.int64).astype(str).to_numpy(),
            "event_time": pd.to_datetime(raw["InvoiceDate"]).dt.tz_localize("UTC").to_numpy(),
            "action": "purchase",
            "product_id": codes[keep].to_numpy(),
        }
    )
    events = as_canonical(frame).drop_duplicates(ignore_index=True)
    return events.sort_values("event_time", kind="stable", ignore_index=True)
