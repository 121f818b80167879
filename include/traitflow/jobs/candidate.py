"""The weekly DAG's jobs from the trait fit on: complete the candidate, reject it or profile every
customer with it and promote it, and the run report.

A retrain trained through ``end`` writes every profile as of ``end`` under the new model in the
same transaction that promotes it; a daily run for the same instant computes identical rows for
its customers, so the two converge whichever finishes first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from traitflow.alignment import align_tokens
from traitflow.config import PipelineConfig, ThinDataError
from traitflow.jobs._common import open_store
from traitflow.model import Lineage, TraitflowModel, load_tokens
from traitflow.pipeline import fit_model, profile_customers
from traitflow.profile_batch import ProfileBatch
from traitflow.runs import (
    Candidate,
    DriftResult,
    FittedCandidate,
    GateResult,
    ProfilesResult,
    PromotionResult,
    RejectionResult,
    RunContext,
    WeeklyReport,
    iso,
)


def _fit_candidate(context: RunContext, candidate: Candidate, refit: bool) -> FittedCandidate:
    """The candidate as a complete model (saved beside its tokens), fitted with the config it was
    trained with: traits fitted anew (``refit``) or the active model's kept."""
    corpus = candidate.corpus
    tokens = load_tokens(candidate.tokens_path)
    previous = None
    with open_store(context) as store:
        events = store.read_events(
            start=corpus.window_start, end=corpus.trained_through, snapshot=corpus.event_snapshot
        )
        if corpus.active_version is not None:
            previous = store.load_model(corpus.active_version)
            tokens = align_tokens(tokens, previous.tokens)
        # Names stored at ingestion, so labels read as products rather than their ids.
        names = store.product_names(np.unique(np.asarray(tokens.product_ids, dtype=object)))
    if previous is None and not refit:
        raise ValueError("cannot keep trait components: there is no active model")
    config = PipelineConfig.from_mapping(candidate.config)
    model = fit_model(
        events,
        tokens,
        config,
        corpus.trained_through,
        previous=previous,
        refit_traits=refit,
        product_names=names,
    )
    # Stored with the model: which committed events it was built from, and how it was trained.
    model.metrics["event_snapshot"] = corpus.event_snapshot
    training = candidate.training
    if training is not None:
        model.lineage = Lineage(training.mode, training.parent_version, training.trained_since)
        model.metrics["training"] = {**training.to_xcom(), "refit": refit}
    model_dir = Path(candidate.tokens_path).parent / "model"
    model.save(model_dir)
    return FittedCandidate(
        candidate=candidate, model_dir=str(model_dir), refit=refit, trait_match=model.trait_match
    )


def refit_traits(context: RunContext, candidate: Candidate) -> FittedCandidate:
    """Fit NMF anew; traits matching the active model's keep their ids."""
    return _fit_candidate(context, candidate, refit=True)


def keep_traits(context: RunContext, candidate: Candidate) -> FittedCandidate:
    """Keep the active model's components (the candidate's space is aligned to it)."""
    return _fit_candidate(context, candidate, refit=False)


def reject_candidate(context: RunContext, candidate: Candidate, gate: GateResult) -> RejectionResult:
    """Store the candidate as a ``rejected`` model version with its gate result; the active model
    stays as it is.

    The candidate has token vectors only, so its traits are fitted (fresh NMF, as ``refit_traits``)
    to make it a complete, inspectable version; ``metrics["quality_gate"]`` holds the gate result.
    Idempotent: the run key is a fingerprint of the candidate's token file, so a retried task
    returns the version the first attempt stored. Data too thin for the trait fit leaves no row
    (``model_version`` None, ``not_saved`` says why): the gate's decision stands either way.
    """
    try:
        fitted = _fit_candidate(context, candidate, refit=True)
    except ThinDataError as error:
        return RejectionResult(reason=gate.reason, model_version=None, not_saved=str(error))
    model = TraitflowModel.load(fitted.model_dir)
    model.metrics["quality_gate"] = gate.to_xcom()
    digest = hashlib.sha256(Path(candidate.tokens_path).read_bytes()).hexdigest()
    key = f"rejected-sha256:{digest}"
    with open_store(context) as store:
        version = store.record_rejected(model, gate.reason, run_key=key)
    return RejectionResult(reason=gate.reason, model_version=version, run_key=key)


def recompute_profiles(context: RunContext, fitted: FittedCandidate) -> ProfilesResult:
    """Profiles of every customer as of the run's end under the fitted candidate, written to
    ``profiles.npz`` in the run's folder.

    Reads the events of the run's snapshot (``build_corpus``), like the model's fit.
    """
    model = TraitflowModel.load(fitted.model_dir)
    as_of = context.end
    with open_store(context) as store:
        events = store.read_events(end=as_of, snapshot=fitted.candidate.corpus.event_snapshot)
    batch = profile_customers(events, model, as_of)
    path = batch.save(Path(context.work_dir) / "profiles.npz")
    return ProfilesResult(
        fitted=fitted, profiles_path=str(path), n_profiles=len(batch), as_of=iso(as_of), stats=batch.stats
    )


def candidate_key(profiles: ProfilesResult) -> str:
    """A fingerprint of what ``promote`` publishes: SHA-256 over the candidate's model files (by
    relative path) and its profiles file. A retried task reads the same files, hence the same key."""
    digest = hashlib.sha256()
    model_dir = Path(profiles.fitted.model_dir)
    files = [(f"model/{p.relative_to(model_dir).as_posix()}", p) for p in sorted(model_dir.rglob("*"))]
    files = [(name, path) for name, path in files if path.is_file()]
    files.append(("profiles", Path(profiles.profiles_path)))
    for name, path in files:
        digest.update(name.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return f"candidate-sha256:{digest.hexdigest()}"


def promote(
    context: RunContext, profiles: ProfilesResult, gate: GateResult, drift: DriftResult
) -> PromotionResult:
    """In one transaction: save the candidate with its gate, drift and tuning results, write its
    profiles and make it the active model.

    Idempotent: the candidate's fingerprint (``candidate_key``) is stored with the version, so a
    retry of this task after its COMMIT publishes nothing again and returns the same version.
    """
    model = TraitflowModel.load(profiles.fitted.model_dir)
    batch = ProfileBatch.load(profiles.profiles_path)
    model.metrics["quality_gate"] = gate.to_xcom()
    tuning = profiles.fitted.candidate.tuning
    if tuning is not None:
        model.metrics["tuning"] = tuning.to_xcom()
    key = candidate_key(profiles)
    with open_store(context) as store:
        version = store.publish(model, batch, drift=drift.to_xcom(), run_key=key)
    return PromotionResult(model_version=version, n_profiles=len(batch), run_key=key)


def weekly_report(context: RunContext, steps: Mapping[str, Any], runner: str | None = None) -> WeeklyReport:
    """Store what the weekly run decided and why (written on every path through the DAG), keyed
    by the run's end: a rerun of the same week replaces its report."""
    report = WeeklyReport(
        run_id=context.run_id,
        trained_through=context.end,
        steps={task_id: value for task_id, value in steps.items() if value is not None},
        runner=runner,
    )
    with open_store(context) as store:
        store.write_run_report("weekly", iso(context.end), report.to_xcom())
    return report
