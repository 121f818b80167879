"""The measured runs: the weekly retrain and the daily run, composed of the pipeline's own stages,
and the extra stages (``StageHook``) that plug in around them.

The weekly retrain runs ``jobs.weekly.weekly_corpus``, ``pipeline.train_tokens``,
``pipeline.fit_model`` and ``pipeline.profiles_from_embeddings`` as the weekly job does, with a
``PipelineTimer`` as their ``run_stage``: each pipeline stage becomes a bench stage.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import baseline
import pandas as pd
from measure import DAILY, REFERENCE, REFIT, WEEKLY, Bench

from traitflow.aggregate import CustomerEmbeddings
from traitflow.config import PipelineConfig
from traitflow.jobs.weekly import weekly_corpus
from traitflow.model import TokenTable, TraitflowModel, TraitProducts
from traitflow.pipeline import (
    Corpus,
    fit_model,
    profile_customers,
    profiles_from_embeddings,
    train_tokens,
)
from traitflow.profile_batch import COLD_START_NONE, ProfileBatch
from traitflow.traits import TraitFit, fit_traits

_Result = TypeVar("_Result")


@dataclass
class Context:
    """What the stages produce and hand on (and what hooks may read)."""

    config: PipelineConfig
    events: pd.DataFrame
    work_dir: Path
    trained_through: datetime
    options: dict[str, Any] = field(default_factory=dict)
    corpus: Corpus | None = None
    tokens: TokenTable | None = None
    embeddings: CustomerEmbeddings | None = None
    model: TraitflowModel | None = None
    weekly_batch: ProfileBatch | None = None
    daily_window: tuple[datetime, datetime] | None = None
    daily_batch: ProfileBatch | None = None
    baseline_rows: dict[str, Any] | None = None
    baseline_batch: ProfileBatch | None = None


@dataclass
class StageHook:
    """An extra timed stage (the Postgres stages of ``pg_stages`` are hooks).

    ``after`` is where it runs and what it counts towards:

    * "load": after ``load`` (``ctx.events`` is the whole workload);
    * "weekly_start": before ``corpus``, counts towards the weekly retrain (also in scaling runs);
    * "weekly": after ``projection``, counts towards the weekly retrain; ``ctx.model`` is the
      trained model and ``ctx.weekly_batch`` every customer's profile;
    * "daily_start" / "daily": before ``daily_select`` / after ``daily_profile``, count towards the
      daily run; ``ctx.daily_window`` is (day_start, day_end), ``ctx.daily_batch`` the profiles;
    * "baseline": after the seed-literal aggregation + projection; ``ctx.baseline_rows`` holds
      the seed's profiles, ``ctx.baseline_batch`` Traitflow's for the same customers. A hook with
      ``compare_with`` is the seed's side of the Traitflow hook it names (persistence ratio).

    ``fn`` returns the number of ``units`` it handled; ``setup`` (untimed) runs just before it.
    """

    name: str
    after: str
    fn: Callable[[Context], int]
    units: str = "rows"
    compare_with: str | None = None
    setup: Callable[[Context], None] | None = None


HOOK_GROUPS = {
    "load": "load",
    "weekly_start": "weekly",
    "weekly": "weekly",
    "daily_start": "daily",
    "daily": "daily",
    "baseline": "baseline",
}

# Extra stages registered by other modules (``Options.hooks`` replaces them); ``run_bench`` adds
# the Postgres stages after them unless ``Options.postgres`` is False.
STAGE_HOOKS: list[StageHook] = []


def run_hooks(
    bench: Bench,
    ctx: Context,
    after: str,
    hooks: Sequence[StageHook],
    *,
    prefix: str = "",
    group: str | None = None,
) -> None:
    """The hooks placed at ``after``, as stages ``prefix + name`` of ``group`` (default: the
    group ``after`` counts towards)."""
    group = group or HOOK_GROUPS[after]
    for hook in hooks:
        if hook.after == after:
            if hook.setup is not None:
                hook.setup(ctx)
            bench.measure(
                prefix + hook.name, group, lambda h=hook: h.fn(ctx), units=hook.units, n_units=lambda n: n
            )


def _fit_extra(fit: TraitFit) -> dict[str, Any]:
    return {"n_iter": int(fit.n_iter), "reconstruction_error": fit.reconstruction_error}


class PipelineTimer:
    """The benchmark's ``pipeline.StageRunner``: a pipeline stage it knows runs as the bench stage
    of the same meaning (``aggregate`` as ``aggregation``, ``nmf`` as ``nmf_fit``, ``project`` as
    ``projection``...) and hands its result on through ``ctx``; any other pipeline stage (none of
    the full retrain's: a stage added to the pipeline and not yet here) runs unmeasured, its wall
    time kept in ``bench.unlisted_wall_s``.

    ``gensim_repeats`` > 0 runs ``item2vec`` that many times, alternating with the standalone
    gensim reference; ``refit`` adds ``nmf_refit`` right after ``nmf_fit``.
    """

    def __init__(self, bench: Bench, ctx: Context, *, gensim_repeats: int = 0, refit: bool = True) -> None:
        self.bench, self.ctx = bench, ctx
        self.gensim_repeats, self.refit = gensim_repeats, refit
        self._stages: dict[str, Callable[[Callable[[], Any]], Any]] = {
            "corpus": self._corpus,
            "item2vec": self._item2vec,
            "aggregate": self._aggregation,
            "nmf": self._nmf_fit,
            "labels": self._labels,
            "trait_products": self._trait_products,
            "project": self._projection,
        }

    def __call__(self, name: str, stage: Callable[[], _Result]) -> _Result:
        measured = self._stages.get(name)
        if measured is not None:
            return measured(stage)
        started = time.perf_counter()
        result = stage()
        self.bench.unlisted_wall_s[name] = time.perf_counter() - started
        return result

    def _corpus(self, stage: Callable[[], Corpus]) -> Corpus:
        self.ctx.corpus = self.bench.measure(
            "corpus",
            WEEKLY,
            stage,
            units="events",
            n_units=len(self.ctx.events),
            extra=lambda c: {"corpus": dict(c.stats.__dict__)},
        )
        return self.ctx.corpus

    def _item2vec(self, stage: Callable[[], TokenTable]) -> TokenTable:
        corpus, item2vec = self.ctx.corpus, self.ctx.config.item2vec
        assert corpus is not None
        tokens_written = corpus.stats.n_tokens_written
        if self.gensim_repeats > 1:  # untimed warm-up: page cache, gensim's first-call set-up, CPU clocks
            baseline.gensim_standalone(corpus.corpus_path, item2vec)
        for repeat in range(max(1, self.gensim_repeats)):
            order = ("pipeline", "gensim") if repeat % 2 == 0 else ("gensim", "pipeline")
            for which in order:
                if which == "pipeline":
                    self.ctx.tokens = self.bench.measure(
                        "item2vec",
                        WEEKLY,
                        stage,
                        units="corpus tokens",
                        n_units=tokens_written,
                        extra=lambda t: {"vocabulary": len(t), "epochs": item2vec.epochs},
                    )
                elif self.gensim_repeats:
                    self.bench.measure(
                        "gensim_standalone",
                        REFERENCE,
                        lambda: baseline.gensim_standalone(corpus.corpus_path, item2vec),
                        units="corpus tokens",
                        n_units=tokens_written,
                        extra=lambda n: {"vocabulary": n},
                    )
        assert self.ctx.tokens is not None
        return self.ctx.tokens

    def _aggregation(self, stage: Callable[[], CustomerEmbeddings]) -> CustomerEmbeddings:
        self.ctx.embeddings = self.bench.measure(
            "aggregation",
            WEEKLY,
            stage,
            units="events",
            n_units=len(self.ctx.events),
            extra=lambda e: {"customers": len(e.customer_ids), "oov_rate": e.stats["oov_rate"]},
        )
        return self.ctx.embeddings

    def _nmf_fit(self, stage: Callable[[], TraitFit]) -> TraitFit:
        fit = self.bench.measure(
            "nmf_fit", WEEKLY, stage, units="customers", n_units=lambda f: len(f.profiles), extra=_fit_extra
        )
        if self.refit:
            self._nmf_refit(fit)
        return fit

    def _nmf_refit(self, fit: TraitFit) -> None:
        """Steady state of the weekly DAG: refit starting from the previous model's components
        (here the ones just fitted: unchanged behaviour, the cheapest case)."""
        embeddings = self.ctx.embeddings
        assert embeddings is not None
        # fit_model's training customers: those with a history (not cold-start).
        training_vectors = embeddings.vectors[embeddings.cold_start == COLD_START_NONE]
        previous = fit.traits.components.copy()
        self.bench.measure(
            "nmf_refit",
            REFIT,
            lambda: fit_traits(training_vectors, self.ctx.config.traits, previous_components=previous),
            units="customers",
            n_units=len(training_vectors),
            extra=_fit_extra,
        )

    def _labels(self, stage: Callable[[], None]) -> None:
        assert self.ctx.tokens is not None
        self.bench.measure("labels", WEEKLY, stage, units="tokens", n_units=len(self.ctx.tokens))

    def _trait_products(self, stage: Callable[[], TraitProducts]) -> TraitProducts:
        return self.bench.measure(
            "trait_products",
            WEEKLY,
            stage,
            units="events",
            n_units=len(self.ctx.events),
            extra=lambda p: {"products_kept": len(p.product_ids)},
        )

    def _projection(self, stage: Callable[[], Any]) -> Any:
        return self.bench.measure("projection", WEEKLY, stage, units="customers", n_units=len)


def retrain(
    bench: Bench,
    ctx: Context,
    *,
    gensim_repeats: int = 0,
    hooks: Sequence[StageHook] = (),
    refit: bool = True,
) -> None:
    """corpus -> item2vec (+ standalone gensim) -> aggregation -> nmf_fit -> labels -> trait_products
    -> projection: the pipeline's functions as the weekly job chains them (every customer's profile
    last). The corpus holds out the weekly job's share of sessions (``HOLDOUT_FRACTION``, the same
    sessions as the incremental retrain's corpus) for its quality gate."""
    timer = PipelineTimer(bench, ctx, gensim_repeats=gensim_repeats, refit=refit)
    config = ctx.config
    run_hooks(bench, ctx, "weekly_start", hooks)
    corpus = timer("corpus", lambda: weekly_corpus(ctx.events, config, ctx.work_dir))
    tokens = timer("item2vec", lambda: train_tokens(corpus, config))
    ctx.model = fit_model(ctx.events, tokens, config, ctx.trained_through, run_stage=timer)
    assert ctx.embeddings is not None
    ctx.weekly_batch = profiles_from_embeddings(
        ctx.model, ctx.embeddings, ctx.trained_through, run_stage=timer
    )
    run_hooks(bench, ctx, "weekly", hooks)


def daily_run(
    bench: Bench, ctx: Context, day_start: datetime, day_end: datetime, hooks: Sequence[StageHook] = ()
) -> None:
    """Customers with events in [day_start, day_end), profiled from their whole history."""
    events, model = ctx.events, ctx.model
    assert model is not None
    ctx.daily_window = (day_start, day_end)
    run_hooks(bench, ctx, "daily_start", hooks)

    def select() -> pd.DataFrame:
        times = events["event_time"]
        in_day = (times >= pd.Timestamp(day_start)) & (times < pd.Timestamp(day_end))
        touched = pd.unique(events["customer_id"][in_day])
        return events[events["customer_id"].isin(touched) & (times < pd.Timestamp(day_end))]

    history = bench.measure(
        "daily_select",
        DAILY,
        select,
        units="events",
        n_units=len,
        extra=lambda h: {"day": day_start.date().isoformat(), "history_events": len(h)},
    )
    ctx.daily_batch = bench.measure(
        "daily_profile",
        DAILY,
        lambda: profile_customers(history, model, day_end),
        units="customers",
        n_units=lambda b: len(b.customer_ids),
        extra=lambda b: {"customers": len(b.customer_ids), "history_events": len(history)},
    )
    run_hooks(bench, ctx, "daily", hooks)
