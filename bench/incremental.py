"""Full retrain vs incremental update of Item2Vec on a synthetic workload: time and quality.

A model is trained from scratch on the first ``weeks - 1`` weeks; the last week then arrives and
the model for the whole window is trained (a) from scratch and (b) incrementally for a few
settings of ``increment_alpha`` / ``increment_epochs`` / ``replay_fraction``
(``traitflow.item2vec_incremental``). Each is timed (gensim training only, corpus excluded) and
scored on next-item hit@10 over the held-out sessions of the whole window, overall and on the
held-out sessions of the new week, with the aligned drift from the first model.

    python bench/incremental.py --customers 5000 --events 300000

Prints one JSON line per trained model.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from traitflow.config import IncrementParams, Item2VecParams, SessionParams
from traitflow.drift import measure_drift
from traitflow.item2vec import train_item2vec
from traitflow.item2vec_incremental import train_increment
from traitflow.model import TokenTable
from traitflow.pipeline import IncrementSelection, build_corpus
from traitflow.quality import next_item_hit_rate
from traitflow.synthetic import SyntheticSpec, generate

SETTINGS = tuple(
    IncrementParams(increment_alpha=alpha, increment_epochs=epochs, replay_fraction=replay)
    for alpha, epochs, replay in ((0.01, 5, 0.2), (0.025, 5, 0.2), (0.025, 10, 0.2), (0.025, 5, 0.0))
)


def holdout_hit_rate(tokens: TokenTable, holdout: pd.DataFrame) -> float:
    """Next-item hit@10 of ``tokens`` on a held-out sessions frame (``session``, ``token``); NaN
    when it holds no session."""
    if holdout.empty:
        return float("nan")
    tokens_of_sessions = holdout["token"].to_numpy(dtype=object)
    return next_item_hit_rate(tokens, holdout["session"].to_numpy(), tokens_of_sessions)["hit_rate"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--products", type=int, default=2000)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--weeks", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1, help="1: reproducible vectors")
    args = parser.parse_args()
    spec = SyntheticSpec(
        n_customers=args.customers,
        n_products=args.products,
        n_categories=40,
        n_segments=8,
        n_events=args.events,
        days=7 * args.weeks,
        seed=1,
    )
    events = generate(spec).events
    cut = spec.start + timedelta(weeks=args.weeks - 1)
    with tempfile.TemporaryDirectory() as tmp:
        for row in compare_incremental(
            events, cut, Item2VecParams(workers=args.workers), SETTINGS, Path(tmp)
        ):
            print(json.dumps(row), flush=True)


def compare_incremental(
    events: pd.DataFrame,
    cut: datetime,
    params: Item2VecParams,
    settings: Sequence[IncrementParams],
    work: Path,
) -> Iterator[dict[str, object]]:
    """One row per trained model: the parent (events before ``cut``), the full retrain on every
    event, and an incremental update of the parent per entry of ``settings``; each timed (gensim
    only) and scored on next-item hit@10 over the window's held-out sessions, overall and on those
    of the new week, with the aligned drift from the parent."""
    sessions = SessionParams()
    # The same sessions are held out of every corpus (holdout_sessions hashes their identity).
    earlier = events[events["event_time"] < cut]
    before = build_corpus(earlier, sessions, work / "before", holdout_fraction=0.1, random_state=7)
    parent = train_item2vec(before.corpus_path, before.vocabulary(), params)
    window = build_corpus(events, sessions, work / "window", holdout_fraction=0.1, random_state=7)
    assert window.holdout_path is not None
    holdout = pd.read_parquet(window.holdout_path)
    last_week = _new_week_holdout(events, window.holdout_path, sessions, cut)

    def report(name: str, tokens: TokenTable, seconds: float, **extra: object) -> dict[str, object]:
        return {
            "model": name,
            "seconds": round(seconds, 2),
            "n_tokens": len(tokens),
            "hit_at_10": round(holdout_hit_rate(tokens, holdout), 4),
            "hit_at_10_new_week": round(holdout_hit_rate(tokens, last_week), 4),
            "drift_from_parent": round(measure_drift(tokens, parent).weighted_mean_drift, 4),
            **extra,
        }

    yield report("parent (weeks before)", parent, 0.0)
    started = time.perf_counter()
    full = train_item2vec(window.corpus_path, window.vocabulary(), params)
    yield report("full", full, time.perf_counter() - started)
    for setting in settings:
        alpha, epochs, replay = setting.increment_alpha, setting.increment_epochs, setting.replay_fraction
        corpus = build_corpus(
            events,
            sessions,
            work / f"inc-{alpha}-{epochs}-{replay}",
            holdout_fraction=0.1,
            random_state=7,
            increment=IncrementSelection(cut, replay, 0),
        )
        assert corpus.increment_path is not None
        started = time.perf_counter()
        tokens, stats = train_increment(
            corpus.increment_path, corpus.corpus_path, corpus.vocabulary(), parent, params, setting
        )
        yield report(
            f"incremental alpha={alpha} epochs={epochs} replay={replay}",
            tokens,
            time.perf_counter() - started,
            increment_alpha=alpha,
            increment_epochs=epochs,
            replay_fraction=replay,
            new_tokens=stats.n_new_tokens,
            increment_words=stats.n_words,
            window_words=corpus.stats.n_tokens_written,
        )


def _new_week_holdout(
    events: pd.DataFrame, holdout_path: Path, sessions: SessionParams, cut: object
) -> pd.DataFrame:
    """The held-out sessions (``holdout.parquet`` rows) whose first event is in the new week."""
    from traitflow.sessions import sessionize

    sessionized = sessionize(events, sessions)
    first = sessionized.groupby("session", sort=False)["event_time"].min()
    new = first.index[first >= pd.Timestamp(cut)].to_numpy()
    holdout = pd.read_parquet(holdout_path)
    return holdout[np.isin(holdout["session"].to_numpy(), new)]


if __name__ == "__main__":
    main()
