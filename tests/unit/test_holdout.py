"""The quality gate's hold-out: chosen by session identity, the same in every corpus."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from traitflow.config import SessionParams
from traitflow.pipeline import build_corpus, holdout_sessions
from traitflow.sessions import sessionize
from traitflow.synthetic import SyntheticSpec, generate

SPEC = SyntheticSpec(n_customers=300, n_products=200, n_events=20_000, days=30, seed=4)
FRACTION = 0.1
SALT = 20240607


def held_out_identities(events: pd.DataFrame) -> pd.Series:
    """{(customer_id, session start): held out?} for the sessions of ``events``."""
    sessionized = sessionize(events, SessionParams())
    held = holdout_sessions(sessionized, FRACTION, SALT)
    firsts = sessionized.groupby("session", sort=True).first()
    return pd.Series(held, index=pd.MultiIndex.from_arrays([firsts["customer_id"], firsts["event_time"]]))


def test_a_session_is_held_out_in_every_corpus_that_contains_it():
    events = generate(SPEC).events
    start = events["event_time"].min()
    # Two training windows a week apart: the second has new sessions at its end and lost its
    # first week, so every shared session has a different index in each.
    week1 = events[events["event_time"] < start + timedelta(days=21)]
    week2 = events[events["event_time"] >= start + timedelta(days=7)]
    first, second = held_out_identities(week1), held_out_identities(week2)
    # Sessions whole in both windows (a session cut by a window edge is another session).
    shared = first.index.intersection(second.index)
    assert len(shared) > 1000
    assert first[shared].equals(second[shared])
    assert 0 < first[shared].sum() < len(shared)
    # Held out in week 2 and trained on in week 1: none (an index-based draw leaks ~90% of them).
    assert int((second[shared] & ~first[shared]).sum()) == 0
    assert abs(second.mean() - FRACTION) < 0.02


def test_another_salt_draws_other_sessions_and_the_fraction_is_kept():
    sessionized = sessionize(generate(SPEC).events, SessionParams())
    one, other = holdout_sessions(sessionized, 0.2, 1), holdout_sessions(sessionized, 0.2, 2)
    assert abs(one.mean() - 0.2) < 0.02 and abs(other.mean() - 0.2) < 0.02
    assert not np.array_equal(one, other)
    np.testing.assert_array_equal(one, holdout_sessions(sessionized, 0.2, 1))
    assert not holdout_sessions(sessionized, 0.0, 1).any()


def test_the_corpus_vocabulary_holds_only_training_tokens(tmp_path: Path):
    events = generate(SPEC).events
    corpus = build_corpus(events, SessionParams(), tmp_path, holdout_fraction=0.3, random_state=SALT)
    holdout = pd.read_parquet(corpus.holdout_path)
    vocabulary = set(corpus.vocabulary().tokens)
    sessionized = sessionize(events, SessionParams())
    training_tokens = set(sessionized.loc[~sessionized["session"].isin(holdout["session"]), "token"])
    assert vocabulary == training_tokens
    assert set(holdout["token"]) - vocabulary  # some tokens appear only in held-out sessions


def test_holding_out_every_session_is_refused(tmp_path: Path):
    events = generate(SPEC).events.iloc[:1]  # one session, drawn with probability 0.999999
    with pytest.raises(ValueError, match="every session was held out"):
        build_corpus(events, SessionParams(), tmp_path, holdout_fraction=0.999999, random_state=SALT)
