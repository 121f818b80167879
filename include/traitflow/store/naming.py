"""Names of the per-trait score columns: ``trait_<trait_id>`` in profile frames and exports."""

from __future__ import annotations

TRAIT_COLUMN_PREFIX = "trait_"


def trait_column(trait_id: int) -> str:
    """Name of the column holding ``trait_id``'s score (``profile_history``, profile exports)."""
    return f"{TRAIT_COLUMN_PREFIX}{int(trait_id)}"


def trait_id_of_column(column: str) -> int | None:
    """The trait id whose score ``column`` holds (inverse of ``trait_column``); None for any
    other column of the frame."""
    if not column.startswith(TRAIT_COLUMN_PREFIX):
        return None
    digits = column.removeprefix(TRAIT_COLUMN_PREFIX)
    return int(digits) if digits.isdigit() else None
