from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from traitflow.config import ConfigError, SessionParams
from traitflow.event_schema import as_canonical
from traitflow.sessions import (
    build_vocabulary,
    session_starts,
    sessionize,
    sort_events,
    tokenize,
    write_corpus,
)


def _events(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame["event_time"] = pd.to_datetime(frame["event_time"], unit="s", utc=True)
    return as_canonical(frame)


def test_tokenize_seed_example():
    tokens = tokenize(np.array(["view"]), np.array(["prod_001"]), "{action}_{product_id}")
    assert tokens.tolist() == ["view_prod_001"]


def test_tokenize_custom_scheme_and_length_mismatch():
    assert tokenize(["cart", "view"], ["7", "8"], "p{product_id}:{action}").tolist() == ["p7:cart", "p8:view"]
    with pytest.raises(ValueError, match="rows"):
        tokenize(["view"], ["1", "2"], "{action}_{product_id}")


def test_token_scheme_is_validated():
    with pytest.raises(ConfigError, match="product_id"):
        SessionParams(token_scheme="{action}")
    with pytest.raises(ConfigError, match="only use"):
        SessionParams(token_scheme="{action}_{product_id}_{price}")


def test_seed_session_segmentation():
    events = _events(
        [
            {"customer_id": "u1", "event_time": t, "action": "view", "product_id": "p"}
            for t in (1000, 1005, 3000)
        ]
    )
    out = sessionize(events, SessionParams(timeout_minutes=30))
    assert out["session"].tolist() == [0, 0, 1]


def test_sessions_split_by_customer_and_sorted_by_time():
    events = _events(
        [
            {"customer_id": "b", "event_time": 10, "action": "view", "product_id": "x"},
            {"customer_id": "a", "event_time": 20, "action": "view", "product_id": "y"},
            {"customer_id": "a", "event_time": 5, "action": "cart", "product_id": "z"},
            {"customer_id": "b", "event_time": 11, "action": "view", "product_id": "x"},
        ]
    )
    out = sessionize(events, SessionParams())
    assert out["customer_id"].tolist() == ["a", "a", "b", "b"]
    assert out["product_id"].tolist() == ["z", "y", "x", "x"]
    assert out["session"].tolist() == [0, 0, 1, 1]
    assert out["token"].tolist() == ["cart_z", "view_y", "view_x", "view_x"]


def test_provided_session_ids_are_honoured():
    # Same customer: a 2-hour gap inside one source session stays one session; an id change
    # 10 seconds later starts a new one; rows without ids fall back to the timeout.
    events = _events(
        [
            {"customer_id": "u", "event_time": 0, "action": "view", "product_id": "1", "session_id": "s1"},
            {"customer_id": "u", "event_time": 7200, "action": "view", "product_id": "2", "session_id": "s1"},
            {"customer_id": "u", "event_time": 7210, "action": "view", "product_id": "3", "session_id": "s2"},
            {"customer_id": "u", "event_time": 7220, "action": "view", "product_id": "4", "session_id": None},
            {
                "customer_id": "u",
                "event_time": 20000,
                "action": "view",
                "product_id": "5",
                "session_id": None,
            },
        ]
    )
    starts = session_starts(sort_events(events), timeout_minutes=30)
    assert starts.tolist() == [True, False, True, False, True]


def test_vocabulary_and_corpus(tmp_path: Path):
    events = _events(
        [
            {"customer_id": "u", "event_time": 0, "action": "view", "product_id": "a b", "category": "c1"},
            {"customer_id": "u", "event_time": 10, "action": "view", "product_id": "x", "category": "c2"},
            {"customer_id": "u", "event_time": 20, "action": "view", "product_id": "a b", "category": "c1"},
            {"customer_id": "v", "event_time": 0, "action": "cart", "product_id": "x", "category": "c2"},
        ]
    )
    out = sessionize(events, SessionParams())
    vocabulary, codes = build_vocabulary(out)
    assert vocabulary.tokens.tolist() == ["view_a b", "view_x", "cart_x"]
    assert vocabulary.counts.tolist() == [2, 1, 1]
    assert vocabulary.categories.tolist() == ["c1", "c2", "c2"]
    stats = write_corpus(out, codes, tmp_path / "corpus.txt", SessionParams(min_session_tokens=2))
    # The whitespace inside "a b" cannot split a token: the corpus holds integer codes.
    assert (tmp_path / "corpus.txt").read_text() == "0 1 0\n"
    assert stats.n_sessions == 2 and stats.n_sessions_written == 1 and stats.n_tokens_written == 3


def test_tokenize_arrow_matches_tokenize_and_handles_arrow_input():
    import pyarrow as pa

    from traitflow.sessions import tokenize_arrow

    actions, products = ["view", "cart", "view"], ["é1", "2", "日本"]
    for scheme in ("{action}_{product_id}", "p{product_id}:{action}", "{product_id}{action}"):
        arrow = tokenize_arrow(pa.array(actions), pd.Series(products, dtype="str"), scheme)
        assert arrow.type == pa.large_string()
        assert arrow.to_pylist() == tokenize(actions, products, scheme).tolist()


def test_corpus_text_is_one_line_per_session_of_space_separated_codes():
    from traitflow.sessions import _corpus_bytes

    rng = np.random.default_rng(0)
    codes = rng.integers(0, 10**9, 5_000)
    last = rng.random(5_000) < 0.2
    last[-1] = True
    pairs = zip(codes.tolist(), last.tolist(), strict=True)
    expected = "".join(f"{code}{chr(10) if end else ' '}" for code, end in pairs)
    assert bytes(_corpus_bytes(codes, last)).decode("ascii") == expected
    assert bytes(_corpus_bytes(codes[:0], last[:0])) == b""


def test_vocabulary_follows_first_appearance_and_keeps_missing_categories_empty():
    events = _events(
        [
            {"customer_id": "b", "event_time": 0, "action": "view", "product_id": "2", "category": "x"},
            {"customer_id": "b", "event_time": 1, "action": "view", "product_id": "3", "category": None},
            {"customer_id": "a", "event_time": 5, "action": "cart", "product_id": "1", "category": "é"},
            {"customer_id": "a", "event_time": 9, "action": "view", "product_id": "2", "category": "later"},
        ]
    )
    vocabulary, codes = build_vocabulary(sessionize(events, SessionParams()))
    # sorted by customer: a's cart_1, view_2, then b's view_2, view_3
    assert vocabulary.tokens.tolist() == ["cart_1", "view_2", "view_3"]
    assert codes.tolist() == [0, 1, 1, 2] and codes.dtype == np.int64
    assert vocabulary.categories.tolist() == ["é", "later", ""]  # the first occurrence's category
    assert vocabulary.counts.tolist() == [1, 2, 1]


def test_arrow_strings_gives_one_large_string_array_from_chunked_or_object_input():
    import pyarrow as pa

    from traitflow.sessions import arrow_strings

    parts = [pd.Series(["a", None], dtype="str"), pd.Series(["é"], dtype="str")]
    chunked = pd.concat(parts, ignore_index=True)
    for values in (chunked, chunked.astype(object), pa.chunked_array([["a", None], ["é"]])):
        array = arrow_strings(values)
        assert isinstance(array, pa.Array) and array.type == pa.large_string()
        assert array.to_pylist() == ["a", None, "é"]
