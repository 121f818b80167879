"""The pipeline stages composed: corpus -> Item2Vec -> customer vectors -> traits -> profiles.

Each function takes canonical events (already validated) and plain config objects, so the CLI,
the Airflow jobs and the benchmarks share one code path.

``train``, ``fit_model``, ``profile_customers`` and ``profiles_from_embeddings`` run their named
stages through ``run_stage`` (a ``StageRunner``; by default ``run_directly``, which only calls
the stage). The benchmark passes a runner that times each stage; the stages, in order:

* ``train``: ``corpus``, ``item2vec``, then those of ``fit_model``;
* ``fit_model``: ``aggregate``; then ``nmf`` (and ``match`` with a ``previous`` model), or
  ``carry_over`` with ``refit_traits=False``; then ``labels``, ``trait_products``;
* ``profile_customers``: ``aggregate``, then those of ``profiles_from_embeddings``: ``project``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
import pandas as pd

from traitflow.aggregate import CustomerEmbeddings, customer_embeddings
from traitflow.config import ConfigError, PipelineConfig, SessionParams, ThinDataError, check_trait_count
from traitflow.item2vec import FallbackVectors, train_item2vec
from traitflow.model import TokenTable, TraitflowModel, TraitModel
from traitflow.profile_batch import COLD_START_NONE, ProfileBatch
from traitflow.sessions import CorpusStats, Vocabulary, build_vocabulary, sessionize, write_corpus
from traitflow.shards import buckets_of
from traitflow.trait_products import characteristic_products, fit_trait_products
from traitflow.traits import (
    REFIT_ANCHOR,
    ProjectionSetup,
    TraitFit,
    fit_traits,
    label_traits,
    match_traits,
    project,
)

log = logging.getLogger(__name__)

_Result = TypeVar("_Result")


class StageRunner(Protocol):
    """Runs one named pipeline stage: calls ``stage()`` and returns what it returned.

    A runner may call ``stage`` more than once (a benchmark repeating a measurement): a stage
    only reads its inputs, so every call returns an equal result.
    """

    def __call__(self, name: str, stage: Callable[[], _Result]) -> _Result: ...


def run_directly(name: str, stage: Callable[[], _Result]) -> _Result:  # noqa: ARG001 (the StageRunner protocol)
    """The default ``StageRunner``: the stage and nothing around it."""
    return stage()


def events_before(events: pd.DataFrame, end: datetime) -> pd.DataFrame:
    """Events strictly before ``end`` (a run for date D never sees what happened after it)."""
    return events[events["event_time"] < pd.Timestamp(end)]


@dataclass(frozen=True)
class IncrementSelection:
    """Which training sessions an incremental update trains on: every session with an event at or
    after ``since`` (new to the model being continued) and a ``replay_fraction`` sample of the
    others (drawn with ``random_state``), so the update also revisits older behaviour."""

    since: datetime
    replay_fraction: float
    random_state: int


@dataclass(frozen=True)
class Corpus:
    """A training corpus on disk: one line of token codes per session, plus the vocabulary.

    increment_path, increment_stats : the incremental update's corpus (``IncrementSelection``),
        same token codes; None unless one was asked for
    n_increment_new_sessions : of its sessions, those with events at or after ``since``
    """

    corpus_path: Path
    vocabulary_path: Path
    holdout_path: Path | None
    stats: CorpusStats
    increment_path: Path | None = None
    increment_stats: CorpusStats | None = None
    n_increment_new_sessions: int | None = None

    def vocabulary(self) -> Vocabulary:
        return Vocabulary.from_frame(pd.read_parquet(self.vocabulary_path))


def holdout_sessions(sessionized: pd.DataFrame, fraction: float, salt: int) -> np.ndarray:
    """bool (n_sessions,): the sessions to hold out, chosen by a stable hash of each session's identity.

    A session is identified by its customer and its first event's time, not by its index in this
    corpus (which shifts whenever the window moves or an earlier event arrives), so the same
    session is held out in every corpus that contains it: a model trained on one week's corpus
    has never seen the sessions held out of the next week's, and the quality gate compares the
    candidate and the active model on sessions neither was trained on. ``salt`` picks another
    (equally stable) draw. ``sessionized`` is ``sessions.sessionize`` output (sessions 0..n-1 in
    row order).
    """
    sessions = sessionized["session"].to_numpy()
    first = np.flatnonzero(np.r_[True, sessions[1:] != sessions[:-1]])
    identity = pd.DataFrame(
        {
            "customer_id": sessionized["customer_id"].to_numpy(dtype=object)[first],
            "start_us": pd.to_datetime(sessionized["event_time"].to_numpy()[first], utc=True)
            .as_unit("us")
            .asi8,
        }
    )
    key = f"{int(salt) & 0xFFFFFFFFFFFFFFFF:016x}"  # hash_key: 16 characters
    hashes = pd.util.hash_pandas_object(identity, index=False, hash_key=key).to_numpy(dtype=np.uint64)
    # The top 53 bits as a uniform number in [0, 1).
    return (hashes >> np.uint64(11)).astype(np.float64) / float(1 << 53) < fraction


def build_corpus(
    events: pd.DataFrame,
    params: SessionParams,
    work_dir: Path,
    *,
    holdout_fraction: float = 0.0,
    random_state: int = 0,
    increment: IncrementSelection | None = None,
) -> Corpus:
    """Sessionize ``events`` and write ``corpus.txt`` and ``vocabulary.parquet`` into ``work_dir``.

    With ``holdout_fraction > 0`` that share of sessions (chosen by ``holdout_sessions`` with
    ``random_state`` as salt: the same session is held out of every corpus it is in) is left out
    of the corpus and written to ``holdout.parquet`` (columns ``session``, ``token``, in session
    order) for evaluating next-item prediction on sessions the model has not seen. The
    vocabulary is that of the training sessions only, like the model's tokens: a token seen
    only in held-out sessions is not part of what the model learns.
    """
    if events.empty:
        raise ValueError("cannot build a corpus from zero events")
    if not 0.0 <= holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
    work_dir.mkdir(parents=True, exist_ok=True)
    sessionized = sessionize(events, params)
    holdout_path = None
    if holdout_fraction > 0:
        held_out = holdout_sessions(sessionized, holdout_fraction, random_state)
        in_holdout = held_out[sessionized["session"].to_numpy()]
        holdout_path = work_dir / "holdout.parquet"
        sessionized.loc[in_holdout, ["session", "token"]].to_parquet(holdout_path, index=False)
        sessionized = sessionized[~in_holdout]
        if sessionized.empty:
            raise ThinDataError("every session was held out: too few sessions for a training corpus")
    vocabulary, codes = build_vocabulary(sessionized)
    corpus_path = work_dir / "corpus.txt"
    stats = write_corpus(sessionized, codes, corpus_path, params)
    vocabulary_path = work_dir / "vocabulary.parquet"
    vocabulary.to_frame().to_parquet(vocabulary_path, index=False)
    log.info(
        "corpus: %d events -> %d sessions (%d written), %d tokens",
        stats.n_events,
        stats.n_sessions,
        stats.n_sessions_written,
        stats.n_vocabulary,
    )
    corpus = Corpus(corpus_path, vocabulary_path, holdout_path, stats)
    if increment is None:
        return corpus
    chosen, is_new = increment_sessions(sessionized, increment)
    rows = chosen[sessionized["session"].to_numpy()]
    increment_path = work_dir / "increment.txt"
    increment_stats = write_corpus(sessionized[rows], codes[rows], increment_path, params)
    log.info(
        "increment corpus: %d new + %d replayed sessions (%d written)",
        int(is_new.sum()),
        int((chosen & ~is_new).sum()),
        increment_stats.n_sessions_written,
    )
    return dataclasses.replace(
        corpus,
        increment_path=increment_path,
        increment_stats=increment_stats,
        n_increment_new_sessions=int(is_new.sum()),
    )


def increment_sessions(
    sessionized: pd.DataFrame, increment: IncrementSelection
) -> tuple[np.ndarray, np.ndarray]:
    """(chosen, new): bool arrays of shape (max session + 1,) over the session numbers of
    ``sessionized`` (``sessions.sessionize`` output, possibly with held-out sessions removed):
    ``new`` marks the sessions whose last event is at or after ``increment.since``, ``chosen``
    those plus the replayed sample of the other sessions. Numbers absent from ``sessionized``
    are neither."""
    sessions = sessionized["session"].to_numpy()
    n = int(sessions.max()) + 1 if len(sessions) else 0
    # Rows are ordered by session then time: a session's last row holds its last event.
    last_rows = np.flatnonzero(np.r_[sessions[1:] != sessions[:-1], True]) if len(sessions) else sessions
    last_time = pd.to_datetime(sessionized["event_time"].iloc[last_rows], utc=True)
    present = np.zeros(n, dtype=bool)
    present[sessions[last_rows]] = True
    new = np.zeros(n, dtype=bool)
    new[sessions[last_rows]] = (last_time >= pd.Timestamp(increment.since)).to_numpy()
    draw = np.random.default_rng(increment.random_state).random(n) < increment.replay_fraction
    return new | (present & ~new & draw), new


def train_tokens(corpus: Corpus, config: PipelineConfig) -> TokenTable:
    return train_item2vec(corpus.corpus_path, corpus.vocabulary(), config.item2vec)


def fit_model(
    events: pd.DataFrame,
    tokens: TokenTable,
    config: PipelineConfig,
    trained_through: datetime,
    *,
    previous: TraitflowModel | None = None,
    refit_traits: bool = True,
    warm_start: bool = True,
    anchor: float = REFIT_ANCHOR,
    product_names: Mapping[str, str] | None = None,
    run_stage: StageRunner = run_directly,
) -> TraitflowModel:
    """Fit (or carry over) the traits for ``tokens`` and return the complete model.

    With a ``previous`` model, ``tokens`` must already be aligned to its space
    (``triggers.align_tokens``). ``refit_traits=False`` keeps the previous components, centre and
    ids; otherwise NMF is refitted and traits matched to the previous ones keep their ids. A
    refit with the same number of traits starts from the previous components, pulled towards
    them with strength ``anchor`` (``traits.fit_traits``), so refits of unchanged behaviour keep
    their traits; ``warm_start=False`` fits from scratch (``config.traits.init``).
    Events at or after ``trained_through`` are ignored; ``previous`` is never modified.
    ``product_names`` (product_id -> name) lets labels name products (``traits.label_traits``).
    ``run_stage`` runs each stage (see the module's docstring).
    """
    events = events_before(events, trained_through)
    embeddings = run_stage(
        "aggregate",
        lambda: customer_embeddings(
            events, tokens, config.aggregation, config.sessions, as_of=trained_through
        ),
    )
    train_rows = embeddings.cold_start == COLD_START_NONE
    training_vectors = embeddings.vectors[train_rows]
    metrics: dict = {"n_training_customers": int(train_rows.sum()), "embedding": embeddings.stats}
    if previous is not None and not refit_traits:
        fitted = _carry_over_traits(previous, training_vectors, run_stage)
    else:
        fitted = _refit_traits(
            training_vectors,
            tokens,
            config,
            previous,
            warm_start=warm_start,
            anchor=anchor,
            run_stage=run_stage,
        )
    traits, training_profiles = fitted.traits, fitted.training_profiles
    metrics.update(fitted.metrics)
    # Training customers per trait (by dominant trait, in component order): what `inspect` shows
    # as a saved model's trait sizes.
    dominant = training_profiles.argmax(axis=1) if len(training_profiles) else np.empty(0, dtype=np.int64)
    metrics["trait_sizes"] = np.bincount(dominant, minlength=traits.n_traits).tolist()
    run_stage("labels", lambda: label_traits(traits, tokens, product_names=product_names))
    # Products are ranked for a profile through what the customers holding each trait bought
    # (see traitflow.trait_products); the traits' top products are the most characteristic ones.
    traits.products = run_stage(
        "trait_products",
        lambda: fit_trait_products(
            events,
            embeddings.customer_ids[train_rows],
            training_profiles,
            config.aggregation,
            trained_through,
        ),
    )
    traits.top_products = characteristic_products(traits.products)
    _label_by_shown_products(traits, product_names or {})
    metrics["max_trait_id"] = int(
        max(traits.trait_ids.max(), previous.metrics.get("max_trait_id", 0) if previous else 0)
    )
    return TraitflowModel(
        trained_through=trained_through,
        config=config,
        tokens=tokens,
        traits=traits,
        metrics=metrics,
        trait_match=fitted.trait_match,
    )


@dataclass(frozen=True)
class _FittedTraits:
    """A model's traits before labels and products, with their training customers' profiles.

    metrics : the entries this step adds to the model's metrics (``traits``, ``thin_data``)
    trait_match : how refitted traits were matched to the previous model's (None: no matching)
    """

    traits: TraitModel
    training_profiles: np.ndarray  # float64, shape (n_training_customers, n_traits)
    metrics: dict
    trait_match: dict | None = None


def _carry_over_traits(
    previous: TraitflowModel, training_vectors: np.ndarray, run_stage: StageRunner
) -> _FittedTraits:
    """The previous model's components, centre and ids, with the population of this training set."""
    traits = copy.deepcopy(previous.traits)  # labels and population are updated here and by the caller
    traits.population_vector = training_vectors.mean(axis=0).astype(np.float32)
    training_profiles = run_stage("carry_over", lambda: project(traits, training_vectors))
    traits.population_profile = training_profiles.mean(axis=0)
    return _FittedTraits(traits, training_profiles, {"traits": {"refit": False}})


def _refit_traits(
    training_vectors: np.ndarray,
    tokens: TokenTable,
    config: PipelineConfig,
    previous: TraitflowModel | None,
    *,
    warm_start: bool,
    anchor: float,
    run_stage: StageRunner,
) -> _FittedTraits:
    """NMF on the training vectors (anchored on ``previous``'s components when their shape fits
    and ``warm_start``); traits matched to ``previous``'s keep their ids."""
    metrics: dict = {}
    check = check_trait_count(len(training_vectors), config.traits.n_traits)
    if check.verdict == "refuse":
        raise ConfigError(check.message)
    if check.verdict == "thin":
        log.warning("%s", check.message)
        metrics["thin_data"] = check.message
    warm = (
        warm_start
        and previous is not None
        and previous.traits.components.shape == (config.traits.n_traits, 2 * tokens.vector_size)
    )
    previous_components = previous.traits.components if warm and previous is not None else None
    fit = run_stage(
        "nmf",
        lambda: fit_traits(
            training_vectors, config.traits, previous_components=previous_components, anchor=anchor
        ),
    )
    traits = fit.traits
    metrics["traits"] = {
        "refit": True,
        "reconstruction_error": fit.reconstruction_error,
        "n_iter": fit.n_iter,
        "init": fit.init,
        **({"anchor": anchor} if warm else {}),
    }
    trait_match = None
    if previous is not None:
        traits.trait_ids, trait_match = run_stage(
            "match", lambda: _match_previous(previous, fit, training_vectors)
        )
    return _FittedTraits(traits, fit.profiles, metrics, trait_match)


def _match_previous(
    previous: TraitflowModel, fit: TraitFit, training_vectors: np.ndarray
) -> tuple[np.ndarray, dict]:
    """(trait ids, match report) of the refitted traits, matched to ``previous``'s on the same customers."""
    previous_profiles = project(previous.traits, training_vectors)
    next_id = int(max(previous.traits.trait_ids.max(), previous.metrics.get("max_trait_id", 0))) + 1
    return match_traits(previous_profiles, fit.profiles, previous.traits.trait_ids, next_id=next_id)


def _label_by_shown_products(traits: TraitModel, product_names: Mapping[str, str]) -> None:
    """Traits that ``label_traits`` named by products (no distinctive category) are named by the
    first of the products they show instead, by name where known; a label another trait already
    has takes one more product until it differs, as ``label_traits`` does."""
    labels = zip(traits.labels, traits.top_categories, strict=True)
    taken = {label for label, categories in labels if categories}
    for j, categories in enumerate(traits.top_categories):
        if categories:
            continue
        terms = [product_names.get(p, p) for p in traits.top_products[j]]
        n_terms = min(2, len(terms))
        label = " + ".join(terms[:n_terms])
        while label in taken and n_terms < len(terms):
            n_terms += 1
            label = " + ".join(terms[:n_terms])
        if terms:
            traits.labels[j] = label
        taken.add(traits.labels[j])


def train(
    events: pd.DataFrame,
    config: PipelineConfig,
    trained_through: datetime,
    work_dir: Path,
    *,
    product_names: Mapping[str, str] | None = None,
    run_stage: StageRunner = run_directly,
) -> TraitflowModel:
    """Train a model from scratch on events before ``trained_through``.

    ``product_names`` (product_id -> name) lets labels name products. ``run_stage`` runs each
    stage (see the module's docstring).
    """
    training_events = events_before(events, trained_through)
    corpus = run_stage("corpus", lambda: build_corpus(training_events, config.sessions, work_dir))
    tokens = run_stage("item2vec", lambda: train_tokens(corpus, config))
    model = fit_model(
        training_events, tokens, config, trained_through, product_names=product_names, run_stage=run_stage
    )
    model.metrics["corpus"] = corpus.stats.__dict__
    return model


def profile_customers(
    events: pd.DataFrame,
    model: TraitflowModel,
    as_of: datetime,
    *,
    customer_ids: np.ndarray | None = None,
    fallback: FallbackVectors | None = None,
    run_stage: StageRunner = run_directly,
) -> ProfileBatch:
    """Profiles as of ``as_of`` from events before it, for the customers in ``events`` (and
    ``customer_ids``; those without events get the population profile, flagged no_history).
    ``fallback``: ``item2vec.fallback_vectors(model.tokens)`` when the caller keeps it (built
    here otherwise). ``run_stage`` runs each stage (see the module's docstring)."""
    started = time.perf_counter()
    usable = events_before(events, as_of)
    embeddings = run_stage(
        "aggregate",
        lambda: customer_embeddings(
            usable,
            model.tokens,
            model.config.aggregation,
            model.config.sessions,
            as_of=as_of,
            customer_ids=customer_ids,
            fallback=fallback,
        ),
    )
    batch = profiles_from_embeddings(model, embeddings, as_of, run_stage=run_stage)
    log.info(
        "profiles: %d customers from %d events as of %s (%.1fs)",
        len(batch.profiles),
        len(usable),
        pd.Timestamp(as_of).isoformat(),
        time.perf_counter() - started,
    )
    return batch


def project_by_bucket(
    traits: TraitModel, vectors: np.ndarray, buckets: np.ndarray, setup: ProjectionSetup | None = None
) -> np.ndarray:
    """``project`` of each customer bucket (``traitflow.shards``) on its own: a customer's profile
    is then bit-identical whichever other buckets share its batch (any number of shards).

    vectors : ndarray, shape (n, d); buckets : ndarray of int, shape (n,). Returns (n, k) float64.
    setup : ``ProjectionSetup.of(traits.components)`` when the caller keeps it (a cached model's);
    built here otherwise, once for all buckets.
    """
    setup = setup if setup is not None else ProjectionSetup.of(traits.components)
    if len(vectors) == 1:  # one customer is one bucket (the event update's usual batch)
        return project(traits, vectors, setup)
    out = np.empty((len(vectors), traits.n_traits), dtype=np.float64)
    order = np.argsort(buckets, kind="stable")  # rows of a bucket keep their (customer id) order
    bounds = np.flatnonzero(np.diff(buckets[order])) + 1
    for rows in np.split(order, bounds):
        if len(rows):
            out[rows] = project(traits, vectors[rows], setup)
    return out


def profiles_from_embeddings(
    model: TraitflowModel,
    embeddings: CustomerEmbeddings,
    as_of: datetime,
    *,
    run_stage: StageRunner = run_directly,
    setup: ProjectionSetup | None = None,
) -> ProfileBatch:
    """The profiles of the customers of ``embeddings`` (``customer_embeddings`` with ``model``'s
    tokens, as of ``as_of``): projected where a customer has a vector, the population's otherwise.
    ``setup``: ``ProjectionSetup.of(model.traits.components)`` when the caller keeps it."""
    profiles = np.empty((len(embeddings.customer_ids), model.traits.n_traits), dtype=np.float64)
    known = embeddings.has_vector
    ids = embeddings.customer_ids[known]
    # One customer's bucket does not matter (``project_by_bucket`` projects one row alone).
    buckets = buckets_of(ids) if len(ids) > 1 else np.zeros(len(ids), dtype=np.int64)
    profiles[known] = run_stage(
        "project", lambda: project_by_bucket(model.traits, embeddings.vectors[known], buckets, setup)
    )
    profiles[~known] = model.traits.population_profile
    vectors = embeddings.vectors.copy()
    vectors[~known] = model.traits.population_vector
    stats = dict(embeddings.stats)
    stats["n_customers"] = len(profiles)
    return ProfileBatch(
        as_of=as_of,
        model_version=model.version,
        customer_ids=embeddings.customer_ids,
        embeddings=vectors,
        profiles=profiles,
        trait_ids=model.traits.trait_ids.copy(),
        n_events=embeddings.n_events,
        cold_start=embeddings.cold_start,
        stats=stats,
        n_known_tokens=embeddings.n_known_tokens,
    )
