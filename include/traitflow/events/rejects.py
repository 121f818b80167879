"""Rejected rows: their raw text as JSON, and the refusal of a file that is mostly rejects."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from traitflow import event_schema
from traitflow.events.errors import MostlyRejectedError
from traitflow.events.mapping import ColumnMapping

DEFAULT_MAX_REJECT_SHARE = 0.5
MIN_REJECTS_TO_REFUSE = 10
_REFUSAL_TOP_REASONS, _REFUSAL_ROW_EXAMPLES = 3, 5


@dataclass
class RejectTally:
    """Rows read and rejects by reason (with their first row numbers) over a file's chunks."""

    n_read: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[int]] = field(default_factory=dict)

    def add(self, n_read: int, rejects: pd.DataFrame) -> None:
        self.n_read += n_read
        counted = rejects[rejects["reason"] != event_schema.REASON_DUPLICATE]
        for label, rows in counted.groupby("reason", sort=False)["row_number"]:
            reason = str(label)
            self.counts[reason] = self.counts.get(reason, 0) + len(rows)
            kept = self.examples.setdefault(reason, [])
            kept.extend(rows.iloc[: _REFUSAL_ROW_EXAMPLES - len(kept)].tolist())

    def refuse_if_mostly_rejected(self, where: str, mapping: str, max_reject_share: float) -> None:
        n_rejected = sum(self.counts.values())
        if n_rejected < MIN_REJECTS_TO_REFUSE or n_rejected <= max_reject_share * self.n_read:
            return
        top = sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))[:_REFUSAL_TOP_REASONS]
        reasons = "; ".join(
            f"{reason} x{count} (rows {', '.join(map(str, self.examples[reason]))}"
            f"{', ...' if count > len(self.examples[reason]) else ''})"
            for reason, count in top
        )
        raise MostlyRejectedError(
            f"{where}: refused, {n_rejected} of {self.n_read} rows rejected "
            f"({n_rejected / self.n_read:.0%}, above max_reject_share {max_reject_share:g}); "
            f"is column mapping {mapping!r} right for this file? Top reasons: {reasons}. "
            "Nothing from this file was loaded.",
            dict(self.counts),
            self.n_read,
        )


def check_share(max_reject_share: float) -> float:
    if not 0.0 <= max_reject_share <= 1.0:
        raise ValueError(f"max_reject_share must be in [0, 1], got {max_reject_share}")
    return float(max_reject_share)


# JSON string escapes, as json.dumps writes them: the short forms, else \u00XX.
_JSON_ESCAPES = {"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _json_string_bodies(values: pa.Array) -> pa.Array:
    """Each string escaped as inside a JSON string literal, exactly as ``json.dumps`` with
    ``ensure_ascii=False`` does it (backslash, quote and the control characters U+0000-U+001F)."""
    out = pc.replace_substring(pc.replace_substring(values, "\\", "\\\\"), '"', '\\"')
    if pc.any(pc.match_substring_regex(out, r"[\x00-\x1f]")).as_py():  # rare: 32 passes only then
        for code in range(0x20):
            char = chr(code)
            out = pc.replace_substring(out, char, _JSON_ESCAPES.get(char, f"\\u{code:04x}"))
    return out


def mapped_columns(raw: pd.DataFrame, mapping: ColumnMapping) -> list[str]:
    """The columns of ``raw`` the (resolved) mapping reads, in file order.

    A reject keeps only these: a file's other columns (an email, a national id) were never asked
    for and must not be copied into ``rejected_events``.
    """
    wanted = set(mapping.source_columns)
    return [c for c in raw.columns if str(c) in wanted]


def raw_json(rows: pd.DataFrame) -> pd.Series:
    """Each row as a JSON object of its text fields, equal to ``json.dumps(row, ensure_ascii=False)``.

    Built column by column with Arrow string kernels: a file can reject most of its rows
    (order-line exports reject a quarter), and a per-row ``json.dumps`` cost seconds per 100K rows.
    ``rows`` holds strings only ('' for missing), as ``_text`` makes them.
    """
    if not len(rows):
        return pd.Series([], dtype="str")
    pieces: list[pa.Array | str] = []
    for i, column in enumerate(rows.columns):
        key = json.dumps(str(column), ensure_ascii=False)
        pieces.append(("{" if i == 0 else '", ') + key + ': "')
        pieces.append(_json_string_bodies(pa.array(rows[column].to_numpy(dtype=object), pa.large_string())))
    pieces.append('"}')
    scalars = [pa.scalar(p, pa.large_string()) if isinstance(p, str) else p for p in pieces]
    joined = pc.binary_join_element_wise(*scalars, pa.scalar("", pa.large_string()))
    return pd.Series(joined.to_pandas(), dtype="str")
