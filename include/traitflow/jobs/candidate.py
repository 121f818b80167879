"""The weekly DAG's jobs from the trait fit on: complete the candidate, reject it or profile every
customer with it and promote it, and the run report.

A retrain trained through ``end`` writes every profile as of ``end`` under the new model in the
same transaction that promotes it; a daily run for the same instant computes identical rows for
its customers, so the two converge whichever finishes first.

The fitted candidate is a directory in the run's folder until ``plan_recompute`` saves it as a
``staging`` model version (``Store.save_candidate``); from there on the profile shards and
``promote`` read it from PostgreSQL by version, so they need no file of the run's folder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from traitflow.alignment import align_tokens
from traitflow.config import PipelineConfig, ThinDataError
from traitflow.jobs._common import open_store
from traitflow.model import Lineage, TraitflowModel, load_tokens
from traitflow.pipeline import fit_model, profile_customers
from traitflow.runs import (
    Candidate,
    DriftResult,
    FittedCandidate,
    GateResult,
    PromotionResult,
    RejectionResult,
    RunContext,
    ShardPlan,
    ShardResult,
    WeeklyReport,
    iso,
    utc,
)
from traitflow.shards import check_n_shards
from traitflow.store import ShardRef


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
    Older ``staging`` versions (candidates of runs that never promoted them) are rejected as
    superseded by it, counted in ``n_superseded``. Idempotent: the run key is a fingerprint of
    the candidate's token file, so a retried task returns the version the first attempt stored.
    Data too thin for the trait fit leaves no row (``model_version`` None, ``not_saved`` says
    why): the gate's decision stands either way.
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
        superseded = store.superseded_by(version)
    return RejectionResult(
        reason=gate.reason, model_version=version, run_key=key, n_superseded=len(superseded)
    )


def plan_recompute(context: RunContext, fitted: FittedCandidate, n_shards: int = 1) -> ShardPlan:
    """The shard plan of profiling every customer as of the run's end under the fitted candidate,
    reading the run's event snapshot.

    The candidate is saved as a ``staging`` model version under its fingerprint
    (``candidate_key``; ``Store.save_candidate``, so a retry finds the version it saved), and the
    plan carries that version: the last read of the candidate's model directory. With
    ``n_shards`` > 1, every customer with an event before the end in the snapshot (like the
    model's fit) is assigned to a shard (``traitflow.shards``), once for the run, in the database
    (``Store.plan_shards``: a retry replaces the run's plan). One shard reads every customer: no
    membership is written, and the run's earlier plan and staged shards are deleted."""
    run_key = f"weekly:{context.run_id}"
    n_shards = check_n_shards(n_shards)
    as_of = context.end
    snapshot = fitted.candidate.corpus.event_snapshot
    plan = ShardPlan(run_key, n_shards, iso(as_of), fitted=fitted, event_snapshot=snapshot)
    key = candidate_key(plan)
    model = TraitflowModel.load(fitted.model_dir)
    with open_store(context) as store:
        plan = replace(plan, model_version=store.save_candidate(model, run_key=key), model_key=key)
        if n_shards == 1:
            store.discard_staged(run_key)
            return plan
        customer_ids = store.customers_with_events(None, as_of, snapshot=snapshot)
        membership = store.plan_shards(run_key, n_shards, customer_ids)
    return replace(plan, plan_id=membership.plan_id, shard_sizes=list(membership.shard_sizes))


def _candidate_version(plan: ShardPlan) -> int:
    if plan.model_version is None:
        raise ValueError("a weekly shard plan needs its candidate's model version (plan_recompute)")
    return plan.model_version


def recompute_profiles(context: RunContext, plan: ShardPlan, shard: int) -> ShardResult:
    """Profiles of shard ``shard``'s customers (its members in the plan's ``shard_members``, and
    only theirs; every customer with one shard) under the candidate's staging version, read from
    the database, staged for ``promote`` (``Store.stage_profiles``: a retry replaces the shard's
    batch). No file of the run's folder is read."""
    version = _candidate_version(plan)
    if plan.plan_id is None and plan.n_shards > 1:
        raise ValueError("a weekly plan of several shards needs its plan_id")
    as_of = utc(plan.as_of)
    members = None if plan.plan_id is None else ShardRef(plan.plan_id, shard)
    with open_store(context) as store:
        model = store.load_model(version)
        events = store.read_events(end=as_of, snapshot=plan.event_snapshot, shard=members)
        batch = profile_customers(events, model, as_of)
        store.stage_profiles(plan.run_key, shard, plan.n_shards, batch, plan_id=plan.plan_id)
    return ShardResult(shard=shard, n_profiles=len(batch))


def candidate_key(plan: ShardPlan) -> str:
    """A fingerprint of what ``promote`` publishes: SHA-256 over the candidate's model files (by
    relative path) and what its profiles are computed from (as_of and event snapshot; the
    profiles are a function of these and the model, whatever the shard count). A retried task
    reads the same files, hence the same key."""
    if plan.fitted is None:
        raise ValueError("a weekly shard plan needs its fitted candidate")
    digest = hashlib.sha256()
    model_dir = Path(plan.fitted.model_dir)
    files = [(f"model/{p.relative_to(model_dir).as_posix()}", p) for p in sorted(model_dir.rglob("*"))]
    for name, path in files:
        if not path.is_file():
            continue
        digest.update(name.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    digest.update(f"profiles as of {plan.as_of} from snapshot {plan.event_snapshot}".encode())
    return f"candidate-sha256:{digest.hexdigest()}"


def promote(context: RunContext, plan: ShardPlan, gate: GateResult, drift: DriftResult) -> PromotionResult:
    """In one transaction: record the gate, drift and tuning results with the candidate's staging
    version, write the profiles of every staged shard, delete the staged batches and make the
    candidate the active model (``Store.publish_candidate``; a missing shard raises
    ``ShardsNotReadyError``, nothing written). No file of the run's folder is read.

    Older ``staging`` versions (candidates of runs that never promoted them) are rejected as
    superseded in that transaction, counted in ``n_superseded``; a candidate superseded so
    raises ``ModelRejectedError`` (no retry can promote it). Idempotent: a retry of this task
    after its COMMIT finds the version promoted, publishes nothing again and returns the same
    version and counts.
    """
    version = _candidate_version(plan)
    if plan.model_key is None:
        raise ValueError("a weekly shard plan needs its candidate's key (plan_recompute)")
    metrics = {"quality_gate": gate.to_xcom()}
    tuning = plan.fitted.candidate.tuning if plan.fitted is not None else None
    if tuning is not None:
        metrics["tuning"] = tuning.to_xcom()
    with open_store(context) as store:
        n_profiles = store.publish_candidate(
            version, plan.run_key, plan.n_shards, utc(plan.as_of), metrics=metrics, drift=drift.to_xcom()
        )
        superseded = store.superseded_by(version)
    return PromotionResult(
        model_version=version, n_profiles=n_profiles, run_key=plan.model_key, n_superseded=len(superseded)
    )


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
