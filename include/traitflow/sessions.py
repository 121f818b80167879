"""Sessionize events per customer, tokenize them, and write the Item2Vec training corpus.

Everything here is vectorized: one sort, one diff, no per-event Python.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from traitflow.config import SessionParams

_PLACEHOLDER = re.compile(r"(\{action\}|\{product_id\})")


def arrow_strings(values: pd.Series | np.ndarray | pa.Array | pa.ChunkedArray) -> pa.Array:
    """``values`` as one pyarrow ``large_string`` array (zero-copy for pandas' Arrow strings)."""
    array = values
    if not isinstance(array, pa.Array | pa.ChunkedArray):
        array = pa.array(pd.Series(values, copy=False))
    if isinstance(array, pa.ChunkedArray):  # pandas' Arrow strings may hold several chunks
        array = array.combine_chunks()
    return array if array.type == pa.large_string() else array.cast(pa.large_string())


def tokenize_arrow(
    actions: pd.Series | np.ndarray | pa.Array, product_ids: pd.Series | np.ndarray | pa.Array, scheme: str
) -> pa.Array:
    """``tokenize`` as a pyarrow ``large_string`` array: no Python string per event.

    Parameters
    ----------
    actions, product_ids : array-like of str, shape (n,)
    scheme : str -- e.g. ``"{action}_{product_id}"`` (see ``SessionParams.token_scheme``)
    """
    parts = {"{action}": arrow_strings(actions), "{product_id}": arrow_strings(product_ids)}
    n = len(parts["{action}"])
    if len(parts["{product_id}"]) != n:
        raise ValueError(f"actions has {n} rows but product_ids has {len(parts['{product_id}'])}")
    pieces = [
        parts[piece] if piece in parts else pa.scalar(piece, pa.large_string())
        for piece in _PLACEHOLDER.split(scheme)
        if piece
    ]
    if not any(isinstance(piece, pa.Array) for piece in pieces):  # a constant scheme
        pieces.append(pa.array([""] * n, pa.large_string()))
    return pc.binary_join_element_wise(*pieces, pa.scalar("", pa.large_string()))


def tokenize(actions: pd.Series | np.ndarray, product_ids: pd.Series | np.ndarray, scheme: str) -> np.ndarray:
    """Build tokens such as ``view_prod_001`` from parallel action and product arrays.

    Parameters
    ----------
    actions, product_ids : array-like of str, shape (n,)
    scheme : str -- e.g. ``"{action}_{product_id}"`` (see ``SessionParams.token_scheme``)

    Returns
    -------
    ndarray of object (str), shape (n,)
    """
    tokens = tokenize_arrow(actions, product_ids, scheme)
    return np.asarray(tokens.to_numpy(zero_copy_only=False), dtype=object)


def factorize_sorted(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(codes int64 (n,), sorted distinct values object (u,)): ``pd.factorize(sort=True)`` on Arrow
    strings, without a Python string per row (byte order = code point order for UTF-8)."""
    encoded = values.dictionary_encode()
    order = pc.array_sort_indices(encoded.dictionary).to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    codes = rank[encoded.indices.to_numpy(zero_copy_only=False)]
    uniques = encoded.dictionary.take(pa.array(order)).to_numpy(zero_copy_only=False)
    return codes, np.asarray(uniques, dtype=object)


def sort_events(events: pd.DataFrame) -> pd.DataFrame:
    """Events ordered by (customer_id, event_time), ties kept in input order; index reset."""
    customer_codes, _ = factorize_sorted(arrow_strings(events["customer_id"]))
    times = events["event_time"].to_numpy(dtype="datetime64[us]").astype(np.int64)
    order = np.lexsort((times, customer_codes))
    return events.iloc[order].reset_index(drop=True)


def session_starts(events: pd.DataFrame, timeout_minutes: float) -> np.ndarray:
    """Boolean mask of rows that start a new session, for events sorted by ``sort_events``.

    A row starts a session when the customer changes; or, when both it and the previous row carry
    a source ``session_id``, when that id changes (the source's sessions are honoured even across
    long gaps); otherwise when the gap to the previous event exceeds the inactivity timeout.

    Returns
    -------
    ndarray of bool, shape (n_events,)
    """
    n = len(events)
    if n == 0:
        return np.zeros(0, dtype=bool)
    customers = arrow_strings(events["customer_id"])
    times = events["event_time"].to_numpy(dtype="datetime64[us]").astype(np.int64)
    session_ids = arrow_strings(events["session_id"]) if "session_id" in events else None

    starts = np.empty(n, dtype=bool)
    starts[0] = True
    new_customer = _changed(customers)
    gap_exceeded = np.diff(times) > int(timeout_minutes * 60 * 1_000_000)
    if session_ids is None or session_ids.null_count == len(session_ids):
        boundary = gap_exceeded
    else:
        has_sid = session_ids.is_valid().to_numpy(zero_copy_only=False)
        both_sid = has_sid[1:] & has_sid[:-1]
        sid_changed = _changed(session_ids)  # null where either is missing: masked out below
        boundary = np.where(both_sid, sid_changed, gap_exceeded)
    starts[1:] = new_customer | boundary
    return starts


def _changed(values: pa.Array) -> np.ndarray:
    """bool (n-1,): row i+1 differs from row i (False where either is null)."""
    differs = pc.not_equal(values.slice(1), values.slice(0, len(values) - 1))
    return differs.fill_null(False).to_numpy(zero_copy_only=False)


def sessionize(events: pd.DataFrame, params: SessionParams) -> pd.DataFrame:
    """Sort events and add ``session`` (int64, 0..n_sessions-1, global) and ``token`` (str) columns."""
    ordered = sort_events(events)
    ordered["session"] = np.cumsum(session_starts(ordered, params.timeout_minutes)) - 1
    tokens = tokenize_arrow(ordered["action"], ordered["product_id"], params.token_scheme)
    ordered["token"] = pd.Series(tokens, index=ordered.index, dtype="str")  # zero-copy
    return ordered


@dataclass(frozen=True)
class Vocabulary:
    """Every distinct token seen in a set of sessionized events, with metadata.

    ``tokens[i]`` is written to the corpus as the integer ``i`` so that ids containing whitespace
    (which gensim would split) can never corrupt the training file.
    """

    tokens: np.ndarray  # object (str), shape (n_tokens,)
    actions: np.ndarray  # object (str), shape (n_tokens,)
    product_ids: np.ndarray  # object (str), shape (n_tokens,)
    categories: np.ndarray  # object (str), shape (n_tokens,); "" when unknown
    counts: np.ndarray  # int64, shape (n_tokens,)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "token": self.tokens,
                "action": self.actions,
                "product_id": self.product_ids,
                "category": self.categories,
                "count": self.counts,
            }
        )

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Vocabulary:
        return cls(
            tokens=frame["token"].to_numpy(dtype=object),
            actions=frame["action"].to_numpy(dtype=object),
            product_ids=frame["product_id"].to_numpy(dtype=object),
            categories=frame["category"].fillna("").to_numpy(dtype=object),
            counts=frame["count"].to_numpy(dtype=np.int64),
        )


def build_vocabulary(sessionized: pd.DataFrame) -> tuple[Vocabulary, np.ndarray]:
    """Vocabulary of ``sessionized`` and each event's token code.

    Returns
    -------
    vocabulary : Vocabulary with tokens in first-appearance order
    codes : ndarray of int64, shape (n_events,) -- index into ``vocabulary.tokens``
    """
    # Arrow's dictionary is in first-appearance order, like pd.factorize(sort=False).
    encoded = arrow_strings(sessionized["token"]).dictionary_encode()
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    n_tokens = len(encoded.dictionary)
    first = np.zeros(n_tokens, dtype=np.int64)
    # Reversed assignment leaves each token's first occurrence in place.
    first[codes[::-1]] = np.arange(len(codes) - 1, -1, -1)
    take = pa.array(first)

    def at_first(column: str) -> np.ndarray:
        values = arrow_strings(sessionized[column]).take(take)
        return np.asarray(values.to_numpy(zero_copy_only=False), dtype=object)

    categories = at_first("category")
    vocabulary = Vocabulary(
        tokens=np.asarray(encoded.dictionary.to_numpy(zero_copy_only=False), dtype=object),
        actions=at_first("action"),
        product_ids=at_first("product_id"),
        categories=np.where(pd.isna(categories), "", categories).astype(object),
        counts=np.bincount(codes, minlength=n_tokens).astype(np.int64),
    )
    return vocabulary, codes


@dataclass(frozen=True)
class CorpusStats:
    n_events: int
    n_sessions: int
    n_sessions_written: int
    n_tokens_written: int
    n_vocabulary: int


def _corpus_bytes(codes: np.ndarray, last_in_session: np.ndarray) -> memoryview | bytes:
    """ASCII text of ``codes`` (int64, (n,)), each followed by a newline where ``last_in_session``
    else a space: built by Arrow in C++, without a Python string per token."""
    if len(codes) == 0:
        return b""
    text = pa.large_string()
    words = pa.array(codes, pa.int64()).cast(text)
    separators = pc.if_else(pa.array(last_in_session), pa.scalar("\n", text), pa.scalar(" ", text))
    lines = pc.binary_join_element_wise(words, separators, pa.scalar("", text))
    _, offsets_buffer, data = lines.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64)[lines.offset : lines.offset + len(lines) + 1]
    return memoryview(data)[int(offsets[0]) : int(offsets[-1])]


def write_corpus(
    sessionized: pd.DataFrame, codes: np.ndarray, path: Path, params: SessionParams
) -> CorpusStats:
    """Write one line per session (token codes separated by spaces) for gensim's corpus_file mode.

    Sessions shorter than ``params.min_session_tokens`` are left out: a lone token has no context
    to learn from. Sessions are written whole; gensim itself splits lines over 10,000 tokens.
    """
    sessions = sessionized["session"].to_numpy()  # ascending, possibly with gaps (held-out sessions)
    lengths = np.bincount(sessions) if len(sessions) else np.zeros(0, dtype=np.int64)
    n_sessions = int(np.count_nonzero(lengths))
    keep = lengths[sessions] >= params.min_session_tokens
    kept_sessions, kept_codes = sessions[keep], codes[keep]
    last_in_session = np.ones(len(kept_sessions), dtype=bool)
    last_in_session[:-1] = kept_sessions[1:] != kept_sessions[:-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        handle.write(_corpus_bytes(kept_codes, last_in_session))
    return CorpusStats(
        n_events=len(sessionized),
        n_sessions=n_sessions,
        n_sessions_written=int(last_in_session.sum()),
        n_tokens_written=len(kept_codes),
        n_vocabulary=int(codes.max()) + 1 if len(codes) else 0,
    )
