"""The weekly DAG's jobs up to the branch on drift: corpus, new-vocabulary check, candidate,
quality gate and drift.

Races: a weekly run takes one event snapshot when it starts (``build_corpus``:
``Store.event_snapshot``), carried in its ``CorpusInfo``, and every weekly read (corpus, tuning,
trait fit, recomputed profiles) is pinned to it, so a daily ingest committing meanwhile cannot give
a model whose tokens and profiles come from different data.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from traitflow.config import PipelineConfig
from traitflow.drift import FIGURE_NAMES, new_vocab_ratio, refit_figure
from traitflow.drift import measure_drift as _measure_drift
from traitflow.jobs._common import open_store
from traitflow.model import TokenTable, TraitflowModel, load_tokens, save_tokens
from traitflow.pipeline import Corpus, IncrementSelection, train_tokens
from traitflow.pipeline import build_corpus as _build_corpus
from traitflow.quality import compare_hit_rates, compare_with_popularity
from traitflow.runs import (
    Candidate,
    CorpusFiles,
    CorpusInfo,
    DriftResult,
    GateResult,
    RunContext,
    TrainingPlan,
    TuningRequest,
    TuningSummary,
    iso,
    utc,
)
from traitflow.sessions import CorpusStats, Vocabulary

HOLDOUT_FRACTION = 0.1
# Fixed, not the Word2Vec seed: a candidate and the active model must be judged on sessions
# neither was trained on, whatever seeds they were trained with.
HOLDOUT_SEED = 20240607
CANDIDATE_FOLDER = "candidate"
# Settings an incremental update must share with the model it continues: the vectors' size and
# meaning (the objective and the tokens they embed).
COMPATIBLE_SETTINGS = (
    ("item2vec", "vector_size"),
    ("item2vec", "sg"),
    ("sessions", "token_scheme"),
)


def _last_full(models: pd.DataFrame, version: int) -> tuple[int, datetime]:
    """(version, trained_through) of the full retrain ``version`` descends from (itself if full;
    a model without a recorded mode counts as full). ``models``: ``Store.model_versions``."""
    modes = dict(zip(models["model_version"], models["training_mode"], strict=True))
    parents = dict(zip(models["model_version"], models["parent_version"], strict=True))
    trained = dict(zip(models["model_version"], models["trained_through"], strict=True))
    seen: set[int] = set()
    while modes[version] == "incremental" and version not in seen:
        seen.add(version)  # lineage rows only point to older versions; the guard is for corrupt data
        version = int(parents[version])
    return version, utc(pd.Timestamp(trained[version]).to_pydatetime())


def _full_reason(
    active: TraitflowModel, models: pd.DataFrame, config: PipelineConfig, end: datetime
) -> str | None:
    """Why ``auto`` mode must retrain from scratch rather than continue ``active``, or None."""
    assert active.version is not None
    rejected = models[
        (models["status"] == "rejected")
        & (models["training_mode"] == "incremental")
        & (models["parent_version"] == active.version)
    ]
    if len(rejected):
        return (
            f"the incremental candidate v{int(rejected['model_version'].max())} from v{active.version}"
            " was rejected by the quality gate"
        )
    incremental = active.lineage is not None and active.lineage.training_mode == "incremental"
    if incremental and (active.metrics.get("training") or {}).get("refit"):
        return f"v{active.version} was an increment whose drift refitted the traits"
    full_version, full_through = _last_full(models, active.version)
    weeks = config.increment.full_retrain_every_weeks
    if end - full_through >= timedelta(weeks=weeks):
        age = (end - full_through) / timedelta(weeks=1)
        return (
            f"the last full retrain (v{full_version}) is {age:.1f} weeks old"
            f" (full_retrain_every_weeks={weeks})"
        )
    return None


def plan_training(
    active: TraitflowModel | None,
    models: pd.DataFrame,
    config: PipelineConfig,
    window_start: datetime,
    end: datetime,
) -> TrainingPlan:
    """Full or incremental training for a candidate trained through ``end`` on the window from
    ``window_start``, with ``active`` the model it would continue (``models``:
    ``Store.model_versions``, for its lineage and rejected candidates).

    Incremental needs an active model with the same ``COMPATIBLE_SETTINGS``, trained through a
    point inside the window and before ``end``. Then ``incremental`` trains incrementally;
    ``auto`` too unless ``_full_reason`` names a reason for a full retrain (schedule, a rejected
    increment, an increment that refitted the traits); ``full`` always retrains from scratch.
    """
    requested = config.increment.training_mode
    if requested == "full":
        return TrainingPlan("full", requested, "training_mode=full requested")
    if active is None or active.version is None:
        return TrainingPlan("full", requested, "no active model to continue")
    since = utc(active.trained_through)
    settings = [
        (name, getattr(getattr(active.config, section), name), getattr(getattr(config, section), name))
        for section, name in COMPATIBLE_SETTINGS
    ]
    differing = [f"{name} {old!r} -> {new!r}" for name, old, new in settings if old != new]
    reason = None
    if differing:
        reason = f"v{active.version} is not compatible: {', '.join(differing)}"
    elif since < window_start:
        reason = (
            f"v{active.version} was trained through {iso(since)},"
            f" before the window starts ({iso(window_start)})"
        )
    elif since >= end:
        reason = f"v{active.version} was trained through {iso(since)}: no newer sessions"
    elif requested == "auto":
        reason = _full_reason(active, models, config, end)
    if reason is not None:
        return TrainingPlan("full", requested, reason)
    return TrainingPlan(
        "incremental",
        requested,
        f"continue v{active.version} on the sessions since {iso(since)}"
        f" (+{config.increment.replay_fraction:.0%} of older ones replayed)",
        parent_version=active.version,
        trained_since=since,
    )


def weekly_corpus(
    events: pd.DataFrame, config: PipelineConfig, work_dir: Path, increment: IncrementSelection | None = None
) -> Corpus:
    """The weekly retrain's corpus of ``events`` under ``work_dir``: ``HOLDOUT_FRACTION`` of the
    sessions held out (the same sessions for every model trained on the window, by
    ``HOLDOUT_SEED``), and with ``increment`` the increment's sessions apart."""
    return _build_corpus(
        events,
        config.sessions,
        work_dir,
        holdout_fraction=HOLDOUT_FRACTION,
        random_state=HOLDOUT_SEED,
        increment=increment,
    )


def build_corpus(context: RunContext, config: PipelineConfig) -> CorpusInfo:
    """Sessions of the training window ending at the run's end -> corpus file (held-out sessions
    set aside) + new-vocabulary ratio.

    Takes the run's event snapshot first (``CorpusInfo.event_snapshot``): the later weekly reads
    pass it on, so the whole run sees the events committed when it started. The new-vocabulary
    ratio counts the tokens of the sessions written to the corpus only (what a model can learn).

    A window without events is a result, not an error: ``n_events`` 0 and ``empty_reason``, no
    corpus, so ``should_retrain`` skips with that reason.
    """
    end = context.end
    start = end - timedelta(days=config.triggers.training_window_days)
    with open_store(context) as store:
        snapshot = store.event_snapshot()
        events = store.read_events(start=start, end=end, snapshot=snapshot)
        active_version = store.model_version_for(end)
        active = store.load_model(active_version) if active_version is not None else None
        models = store.model_versions()
    active_tokens = active.tokens.tokens if active is not None else None
    if events.empty:
        # A data condition, not a fault: no retry can add events, so the run takes the skip
        # branch (``should_retrain``) with this reason instead of failing.
        reason = f"no events in the training window [{iso(start)}, {iso(end)})"
        return CorpusInfo(
            window_start=start,
            trained_through=end,
            n_events=0,
            active_version=active_version,
            event_snapshot=snapshot,
            empty_reason=reason,
        )
    plan = plan_training(active, models, config, start, end)
    increment = None
    if plan.mode == "incremental":
        assert plan.trained_since is not None
        increment = IncrementSelection(
            plan.trained_since, config.increment.replay_fraction, config.item2vec.seed
        )
    corpus = weekly_corpus(events, config, Path(context.work_dir) / "corpus", increment)
    if corpus.increment_stats is not None and corpus.increment_stats.n_sessions_written == 0:
        plan = TrainingPlan("full", plan.requested, "no session to train an increment on")
    vocabulary = corpus.vocabulary()
    # The tokens a model can learn from this corpus: those of the sessions written to it (held-out
    # sessions and ones too short to train on are left out, so no model ever knows their tokens,
    # and counting them would make the ratio positive on unchanged data).
    learnable = np.unique(np.fromfile(corpus.corpus_path, dtype=np.int64, sep=" "))
    files = CorpusFiles(
        corpus_path=str(corpus.corpus_path),
        vocabulary_path=str(corpus.vocabulary_path),
        holdout_path=str(corpus.holdout_path),
        n_events=corpus.stats.n_events,
        n_sessions=corpus.stats.n_sessions,
        n_sessions_written=corpus.stats.n_sessions_written,
        n_tokens_written=corpus.stats.n_tokens_written,
        n_vocabulary=len(vocabulary.tokens),
        **_increment_files(corpus, plan),
    )
    return CorpusInfo(
        window_start=start,
        trained_through=end,
        n_events=len(events),
        active_version=active_version,
        event_snapshot=snapshot,
        corpus=files,
        new_vocab_ratio=new_vocab_ratio(vocabulary.tokens[learnable], active_tokens),
        plan=plan,
    )


def _increment_files(corpus: Corpus, plan: TrainingPlan) -> dict[str, Any]:
    """The ``CorpusFiles`` fields of the increment corpus (none unless the plan trains one)."""
    if plan.mode != "incremental" or corpus.increment_path is None or corpus.increment_stats is None:
        return {}
    return {
        "increment_path": str(corpus.increment_path),
        "n_increment_sessions": corpus.increment_stats.n_sessions_written,
        "n_increment_tokens": corpus.increment_stats.n_tokens_written,
    }


def should_retrain(corpus: CorpusInfo, force_retrain: bool, threshold: float) -> tuple[bool, str]:
    """(retrain?, why). An empty window (``empty_reason``) never retrains, even when forced:
    there is nothing to train on."""
    if corpus.empty_reason:
        return False, f"skip: {corpus.empty_reason}"
    if force_retrain:
        return True, "force_retrain requested"
    if corpus.active_version is None:
        return True, "no promoted model yet"
    ratio = float(corpus.new_vocab_ratio or 0.0)
    if ratio > threshold:
        return True, f"new-vocabulary ratio {ratio:.3f} > {threshold}"
    return False, f"new-vocabulary ratio {ratio:.3f} <= {threshold}"


def _corpus(files: CorpusFiles) -> Corpus:
    stats = CorpusStats(
        n_events=files.n_events,
        n_sessions=files.n_sessions,
        n_sessions_written=files.n_sessions_written,
        n_tokens_written=files.n_tokens_written,
        n_vocabulary=files.n_vocabulary,
    )
    return Corpus(Path(files.corpus_path), Path(files.vocabulary_path), Path(files.holdout_path), stats)


def _tuned(
    context: RunContext, corpus: CorpusInfo, config: PipelineConfig, tuning: TuningRequest
) -> tuple[PipelineConfig, TuningSummary]:
    """``config`` with the parameters a search on the window's events picked, and the search."""
    from traitflow.tuning import search

    with open_store(context) as store:
        events = store.read_events(
            start=corpus.window_start, end=corpus.trained_through, snapshot=corpus.event_snapshot
        )
    result = search(
        events,
        config,
        sample_fraction=tuning.sample_fraction,
        n_trials=tuning.trials,
        work_dir=Path(context.work_dir) / "tuning",
    )
    found = result.to_dict()
    summary = TuningSummary(
        best_params=found["best_params"],
        best=found["best"],
        gensim_defaults=found["gensim_defaults"],
        sample=found["sample"],
    )
    return PipelineConfig.from_mapping({**config.to_flat(), **result.best_params}), summary


def train_candidate(
    context: RunContext, corpus: CorpusInfo, config: PipelineConfig, tuning: TuningRequest | None = None
) -> Candidate:
    """Train Item2Vec on the corpus; the candidate's token vectors go to the run's candidate folder.

    Trained as the corpus's plan says (``plan_training``): from scratch, or continuing the active
    model (``traitflow.item2vec_incremental``; the plan then records what the update did).

    With ``tuning`` a small search (``traitflow.tuning``) picks ns_exponent, window, sample and
    epochs first, and the candidate is trained from scratch with them; the candidate carries the
    resulting config and the search's summary, stored with the model version. Off by default: a
    setting that predicts the next item better can make the traits worse, so check a tuned model
    with ``traitflow evaluate`` before relying on it.
    """
    if corpus.corpus is None or corpus.plan is None:
        raise ValueError(f"no corpus to train on: {corpus.empty_reason}")
    summary = None
    plan = corpus.plan
    if tuning is not None:
        config, summary = _tuned(context, corpus, config, tuning)
        if plan.mode == "incremental":
            plan = TrainingPlan("full", plan.requested, "tuned parameters are trained from scratch")
    if plan.mode == "incremental":
        tokens, plan = _train_increment(context, corpus.corpus, plan, config)
    else:
        tokens = train_tokens(_corpus(corpus.corpus), config)
    tokens_path = Path(context.work_dir) / CANDIDATE_FOLDER / "tokens.npz"
    save_tokens(tokens, tokens_path)
    return Candidate(
        corpus=corpus,
        tokens_path=str(tokens_path),
        n_tokens=len(tokens),
        config=config.to_flat(),
        tuning=summary,
        training=plan,
    )


def _train_increment(
    context: RunContext, files: CorpusFiles, plan: TrainingPlan, config: PipelineConfig
) -> tuple[TokenTable, TrainingPlan]:
    """The plan's parent continued on the increment corpus; the plan with the update's stats."""
    from traitflow.item2vec_incremental import train_increment

    assert plan.parent_version is not None and files.increment_path is not None
    tokens, stats = train_increment(
        Path(files.increment_path),
        Path(files.corpus_path),
        _corpus(files).vocabulary(),
        _active_tokens(context, plan.parent_version),
        config.item2vec,
        config.increment,
    )
    return tokens, dataclasses.replace(plan, increment=stats.to_dict())


def _active_tokens(context: RunContext, version: int) -> TokenTable:
    with open_store(context) as store:
        return store.load_model(version).tokens


def quality_gate(context: RunContext, candidate: Candidate) -> GateResult:
    """The candidate must not be clearly worse than the active model on held-out next-item hit rate.

    "Clearly": the paired difference (candidate - active) is below ``-quality_margin`` (of the
    candidate's config) even at the upper end of its 95% interval, so a few hundred held-out pairs
    of sampling noise cannot reject a retrain of the same behaviour. Without an active model the
    candidate must instead be clearly better than the popularity baseline
    (``quality.compare_with_popularity``): the lower end of the 95% interval above 0.
    """
    assert candidate.corpus.corpus is not None  # a candidate is trained on a corpus
    margin = PipelineConfig.from_mapping(candidate.config).triggers.quality_margin
    holdout = pd.read_parquet(candidate.corpus.corpus.holdout_path)
    sessions = holdout["session"].to_numpy()
    session_tokens = holdout["token"].to_numpy(dtype=object)
    tokens = load_tokens(candidate.tokens_path)
    active_version = candidate.corpus.active_version
    if active_version is None:
        # A first model has nothing to be compared with but must still beat recommending the
        # most popular items: clearly (the whole 95% interval of the paired difference above 0),
        # or an untrained or broken model becomes the first active one.
        baseline = compare_with_popularity(tokens, sessions, session_tokens)
        passed = baseline["lower"] > 0.0
        verdict = "passes" if passed else "fails: not clearly better than popularity"
        reason = (
            f"first model: hit@10 candidate {baseline['candidate_hit_rate']:.4f}"
            f" vs popularity {baseline['popularity_hit_rate']:.4f}"
            f" (difference {baseline['difference']:+.4f}, 95% interval [{baseline['lower']:+.4f},"
            f" {baseline['upper']:+.4f}], {baseline['n_pairs']} held-out pairs): {verdict}"
        )
        return GateResult(passed=passed, reason=reason, baseline="popularity", margin=margin, **baseline)
    comparison = compare_hit_rates(tokens, _active_tokens(context, active_version), sessions, session_tokens)
    upper = comparison["difference"] + 1.96 * comparison["standard_error"]
    passed = upper >= -margin
    verdict = "passes" if passed else "fails: clearly worse than the active model"
    reason = (
        f"hit@10 candidate {comparison['candidate_hit_rate']:.4f}"
        f" vs active {comparison['active_hit_rate']:.4f}"
        f" (difference {comparison['difference']:+.4f} +- {1.96 * comparison['standard_error']:.4f},"
        f" margin {margin}, {comparison['n_pairs']} held-out pairs): {verdict}"
    )
    return GateResult(passed=passed, reason=reason, baseline="active", margin=margin, **comparison)


def measure_drift(context: RunContext, candidate: Candidate) -> DriftResult:
    """Drift of the candidate from the active model after Procrustes alignment; an incremental
    candidate also gets the drift weighted by its increment corpus's token counts and carries its
    ``increment_drift_threshold`` for ``should_refit``."""
    active_version = candidate.corpus.active_version
    if active_version is None:
        return DriftResult(measured=False, reason="no active model")
    files = candidate.corpus.corpus
    tokens = load_tokens(candidate.tokens_path)
    active = _active_tokens(context, active_version)
    incremental = candidate.training is not None and candidate.training.mode == "incremental"
    if incremental and files is not None and files.increment_path is not None:
        threshold = PipelineConfig.from_mapping(candidate.config).increment.increment_drift_threshold
        vocabulary = _corpus(files).vocabulary()
        return increment_drift(tokens, active, Path(files.increment_path), vocabulary, threshold)
    return DriftResult(measured=True, **_measure_drift(tokens, active).to_dict())


def increment_drift(
    tokens: TokenTable, parent: TokenTable, increment_path: Path, vocabulary: Vocabulary, threshold: float
) -> DriftResult:
    """Drift of an incremental model from its parent, with the recent-weighted drift (tokens
    weighted by their counts in the increment corpus at ``increment_path``, coded by
    ``vocabulary``) that ``should_refit`` compares with ``threshold``."""
    from traitflow.item2vec_incremental import increment_token_counts

    recent_counts = increment_token_counts(increment_path, vocabulary)
    report = _measure_drift(tokens, parent, recent_counts=recent_counts)
    return DriftResult(measured=True, increment_threshold=threshold, **report.to_dict())


def should_refit(drift: DriftResult, threshold: float) -> tuple[bool, str]:
    """(refit the traits?, why): without a measured drift always; else when the weighted mean drift
    is above ``threshold``, or, for an incremental candidate, when its recent-weighted drift (the
    weighted mean without one) is above the drift's ``increment_threshold`` (``refit_figure``)."""
    name = "drift_threshold"
    if drift.increment_threshold is not None:
        threshold, name = drift.increment_threshold, "increment_drift_threshold"
    incremental = drift.increment_threshold is not None
    figure = refit_figure(drift.weighted_mean_drift, drift.recent_weighted_drift, incremental=incremental)
    if not drift.measured or figure is None:
        return True, f"refit: {drift.reason or 'drift not measured'}"
    value, signal = getattr(drift, figure), FIGURE_NAMES[figure]
    if value > threshold:
        return True, f"{signal} {value:.3f} > {name} {threshold}"
    return False, f"{signal} {value:.3f} <= {name} {threshold}: keep the trait components"
