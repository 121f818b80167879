"""What crosses a task boundary: the run's context and every job's result, as frozen dataclasses.

A job (``traitflow.jobs``) has the shape ``(context, input) -> output``: ``RunContext`` says which
run and interval it works for and where, the input is the previous job's result. Between Airflow
tasks the results travel as XCom: ``to_xcom()`` gives a dict of JSON types (lists, not tuples;
ISO strings, not datetimes) and ``from_xcom`` rebuilds the same value, refusing unknown or missing
keys so a renamed field fails loudly instead of reading as None. The CLI chains
(``traitflow.chains``) pass the values themselves.

No numpy, pandas or Airflow here: the DAG helpers import this module inside tasks.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Self

from traitflow.config import MISSING_INPUT_IGNORE, MISSING_INPUT_POLICIES, ConfigError


def utc(value: datetime | str) -> datetime:
    """``value`` (a datetime or ISO string, naive = UTC) as a timezone-aware UTC ``datetime``."""
    if type(value) is datetime and value.tzinfo is UTC and not value.fold:
        return value  # already what the conversion below builds (datetimes are immutable)
    stamp = datetime.fromisoformat(value) if isinstance(value, str) else value
    stamp = stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)
    # A plain datetime: Airflow hands pendulum ones, which compare equal but repr differently.
    return datetime(*stamp.timetuple()[:6], stamp.microsecond, tzinfo=UTC)


def iso(value: datetime) -> str:
    return utc(value).isoformat()


class RunSkipped(Exception):  # noqa: N818 - a skip, not an error
    """A data condition under which a run has nothing to do (no event file for its day, no
    promoted model yet, no customers): no retry can change it. The job has stored the reason in
    the run report; the DAG ends the task ``skipped`` (a green run) with the same reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _checked(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` as keyword arguments of ``cls``; an unknown key raises here, a missing required one
    when ``cls`` is built."""
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown XCom keys {sorted(unknown)}")
    return dict(data)


class _XComForm:
    """XCom form of a dataclass whose fields are JSON values (numbers, strings, None, dicts and
    lists of them), datetimes (ISO strings in XCom; the class's ``__post_init__`` turns them back)
    or other results of this module (their own XCom form, nested): one field, one key."""

    def to_xcom(self) -> dict[str, Any]:
        return {f.name: _to_xcom_value(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_xcom(cls, data: Mapping[str, Any]) -> Self:
        values = _checked(cls, data)
        kind: type = cls
        for name, result_type in _nested_results(kind).items():
            if values.get(name) is not None:
                values[name] = result_type.from_xcom(values[name])
        return cls(**values)


def _to_xcom_value(value: Any) -> Any:
    if isinstance(value, _XComForm):
        return value.to_xcom()
    if isinstance(value, datetime):
        return iso(value)
    return value


@functools.cache
def _nested_results(cls: type) -> dict[str, type[_XComForm]]:
    """``{field name: result class}`` of the fields of ``cls`` that hold another result (``T`` or
    ``T | None``)."""
    hints = typing.get_type_hints(cls)
    nested: dict[str, type[_XComForm]] = {}
    for spec in fields(cls):
        for option in typing.get_args(hints[spec.name]) or (hints[spec.name],):
            if isinstance(option, type) and issubclass(option, _XComForm):
                nested[spec.name] = option
    return nested


# --------------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class RunContext:
    """Which run a job works for: its id, its interval [start, end) (UTC), its folder and database.

    ``database_url`` (None: the embedded PostgreSQL) may hold a password: it is left out of
    ``repr``, of equality and of the XCom form, and ``from_xcom`` gives a context without it.
    ``schema`` is the store's PostgreSQL schema; None means ``traitflow.config.db_schema()``.
    """

    run_id: str
    start: datetime
    end: datetime
    work_dir: str
    database_url: str | None = field(default=None, repr=False, compare=False)
    schema: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", utc(self.start))
        object.__setattr__(self, "end", utc(self.end))
        if self.start >= self.end:
            raise ValueError(f"empty run interval: start {iso(self.start)} >= end {iso(self.end)}")

    def to_xcom(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "start": iso(self.start),
            "end": iso(self.end),
            "work_dir": self.work_dir,
            "schema": self.schema,
        }

    @classmethod
    def from_xcom(cls, data: Mapping[str, Any]) -> RunContext:
        if "database_url" in data:
            raise ValueError("RunContext: a database URL never travels in XCom")
        return cls(**_checked(cls, data))


@dataclass(frozen=True)
class EventInput(_XComForm):
    """Where the daily run's event files come from: a folder (None: the events are in the table
    already), a column mapping (preset name or file), the refusal threshold for bad files and
    what to do when the folder has no file dated the run's day (``MISSING_INPUT_POLICIES``)."""

    input_dir: str | None
    mapping: str = "canonical"
    max_reject_share: float | None = None
    on_missing: str = MISSING_INPUT_IGNORE

    def __post_init__(self) -> None:
        if self.on_missing not in MISSING_INPUT_POLICIES:
            raise ConfigError(f"on_missing must be one of {MISSING_INPUT_POLICIES}, got {self.on_missing!r}")


@dataclass(frozen=True)
class TuningRequest(_XComForm):
    """Search Item2Vec parameters before training: ``trials`` combinations on a
    ``sample_fraction`` sample of the window's customers (``traitflow.tuning.search``)."""

    sample_fraction: float = 0.1
    trials: int = 8


# ------------------------------------------------------------------------------------ daily


@dataclass(frozen=True)
class IngestResult(_XComForm):
    """Totals of one ingest task over the files it read (``Store.ingest_file`` counts summed).

    skipped : no input folder configured (``reason`` says so); nothing was read
    files : the files read by this run (resolved paths); ``n_files_seen`` counts the ones due,
        read before or now; ``ignored_undated`` the ones without a date in their name
    """

    skipped: bool
    reason: str | None = None
    n_files_seen: int = 0
    ignored_undated: int = 0
    files: list[str] = field(default_factory=list)
    n_files: int = 0
    n_read: int = 0
    n_inserted: int = 0
    n_already_present: int = 0
    n_rejected: int = 0
    n_conflicting: int = 0
    n_rejects_recorded: int = 0
    n_product_names: int = 0


@dataclass(frozen=True)
class CustomerSelection(_XComForm):
    """The customers a daily run updates, in a Parquet file (column ``customer_id``).

    exclude_sources : the event files not delivered yet for the run's interval (dated its end's
        day or later): their events are left out of the run's reads
    """

    customers_path: str
    n_customers: int
    exclude_sources: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class UpdateResult(_XComForm):
    """What a daily profile update wrote for the instant ``as_of`` (ISO, the interval end).

    model_version : the model used; None when nothing was written (``reason`` says why)
    stats, mean_profile, trait_ids : the batch's statistics and mean trait profile (monitoring);
        None when nothing was computed
    stale_versions : models found replaced for this date while computing (race with a promotion)
    recomputed : set when the batch was recomputed with a newer model
    """

    as_of: str
    model_version: int | None
    n_profiles: int
    reason: str | None = None
    stats: dict[str, Any] | None = None
    mean_profile: list[float] | None = None
    trait_ids: list[int] | None = None
    stale_versions: list[int] = field(default_factory=list)
    recomputed: str | None = None


@dataclass(frozen=True)
class HistoryResult(_XComForm):
    """The daily history maintenance at ``as_of`` (ISO): the profile history's monthly
    partitions created ahead and those dropped by retention (``traitflow.store.partitions``).

    retention_months : months kept before ``as_of``'s month (0: everything kept)
    cutoff : the oldest instant kept (ISO; None with retention 0)
    created : partitions created (names, oldest first); months_ahead : how far ahead they go
    dropped : ``{partition: rows}`` of the months dropped; rows_dropped : their total
    """

    as_of: str
    retention_months: int
    months_ahead: int
    cutoff: str | None
    created: list[str] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    rows_dropped: int = 0


@dataclass(frozen=True)
class DailyReport:
    """The daily run report (``run_reports`` kind "daily"): the update's result plus its monitors.

    Stored and passed on flat: the update's fields beside ``run_id`` and the monitors (None
    without profiles): ``oov_rate``, ``cold_start_share`` (share of customers with at least one
    cold-start flag) and ``profile_shift_js`` (JS divergence of the day's mean profile from the
    model's training population). ``outcome`` is "updated" when profiles were written, else
    "skipped" or "failed" (the run's state), with the update's ``reason`` saying why.
    ``history``: the history maintenance, added to the stored report by the step after the
    monitor (``jobs.maintain_history``); the key is absent until then.
    """

    run_id: str
    update: UpdateResult
    oov_rate: float | None = None
    cold_start_share: float | None = None
    profile_shift_js: float | None = None
    outcome: str = "updated"
    history: HistoryResult | None = None

    def to_xcom(self) -> dict[str, Any]:
        report = {
            **self.update.to_xcom(),
            "run_id": self.run_id,
            "oov_rate": self.oov_rate,
            "cold_start_share": self.cold_start_share,
            "profile_shift_js": self.profile_shift_js,
            "outcome": self.outcome,
        }
        if self.history is not None:
            report["history"] = self.history.to_xcom()
        return report

    @classmethod
    def from_xcom(cls, data: Mapping[str, Any]) -> DailyReport:
        update_keys = {f.name for f in fields(UpdateResult)}
        update = UpdateResult.from_xcom({k: v for k, v in data.items() if k in update_keys})
        own = _checked(cls, {k: v for k, v in data.items() if k not in update_keys})
        if own.get("history") is not None:
            own["history"] = HistoryResult.from_xcom(own["history"])
        return cls(update=update, **own)


# ----------------------------------------------------------------------------------- weekly


@dataclass(frozen=True)
class CorpusFiles(_XComForm):
    """A training corpus on disk (``traitflow.pipeline.Corpus``) with its ``CorpusStats`` counts."""

    corpus_path: str
    vocabulary_path: str
    holdout_path: str
    n_events: int
    n_sessions: int
    n_sessions_written: int
    n_tokens_written: int
    n_vocabulary: int
    increment_path: str | None = None
    n_increment_sessions: int | None = None
    n_increment_tokens: int | None = None


@dataclass(frozen=True)
class TrainingPlan(_XComForm):
    """How the candidate is trained (``traitflow.jobs.weekly.plan_training``) and from what.

    mode : "full" (from scratch) or "incremental" (continues ``parent_version``'s vectors on the
        sessions with events since ``trained_since``, plus a replayed sample of older ones)
    requested : the ``training_mode`` asked for ("auto", "full" or "incremental")
    reason : why ``mode`` was chosen, with its numbers
    increment : what the incremental update did (new tokens and how they were initialised)
    """

    mode: str
    requested: str
    reason: str
    parent_version: int | None = None
    trained_since: datetime | None = None
    increment: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("full", "incremental"):
            raise ValueError(f"TrainingPlan.mode must be 'full' or 'incremental', got {self.mode!r}")
        if (self.mode == "incremental") != (self.parent_version is not None):
            raise ValueError("an incremental plan needs a parent_version, a full one has none")
        if self.trained_since is not None:
            object.__setattr__(self, "trained_since", utc(self.trained_since))


@dataclass(frozen=True)
class CorpusInfo(_XComForm):
    """The weekly run's training window and corpus.

    event_snapshot : the ``pg_snapshot`` every later read of the run is pinned to
    active_version : the model selected for ``trained_through`` before this run (None: none yet)
    corpus, new_vocab_ratio : None when the window has no events (``empty_reason`` says so)
    plan : how a candidate would be trained (None when the window has no events)
    """

    window_start: datetime
    trained_through: datetime
    n_events: int
    active_version: int | None
    event_snapshot: str
    corpus: CorpusFiles | None = None
    new_vocab_ratio: float | None = None
    empty_reason: str | None = None
    plan: TrainingPlan | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "window_start", utc(self.window_start))
        object.__setattr__(self, "trained_through", utc(self.trained_through))


@dataclass(frozen=True)
class TuningSummary(_XComForm):
    """The parameter search behind a tuned candidate, as stored in the model's metrics["tuning"]."""

    best_params: dict[str, Any]
    best: dict[str, Any] | None
    gensim_defaults: dict[str, Any]
    sample: dict[str, Any]


@dataclass(frozen=True)
class Candidate(_XComForm):
    """A trained candidate: its token vectors and the configuration it was trained with.

    config : flat ``PipelineConfig`` values, tuned ones included; the quality gate and the trait
        fit use these, so a candidate is judged and completed with the settings that made it
    training : how it was trained (the corpus's plan, or full when tuning overrode it)
    """

    corpus: CorpusInfo
    tokens_path: str
    n_tokens: int
    config: dict[str, Any]
    tuning: TuningSummary | None = None
    training: TrainingPlan | None = None


@dataclass(frozen=True)
class GateResult(_XComForm):
    """The quality gate's verdict on a candidate (stored in the model's metrics["quality_gate"]).

    baseline : "active" (paired hit@10 comparison with the active model) or "popularity" (a
        first model against recommending the most popular items)
    active_hit_rate / popularity_hit_rate : the hit rate of whichever baseline was used
    lower, upper : the 95% interval of ``difference`` (popularity comparison only)
    """

    passed: bool
    reason: str
    baseline: str
    margin: float
    candidate_hit_rate: float
    difference: float
    standard_error: float
    n_pairs: int
    active_hit_rate: float | None = None
    popularity_hit_rate: float | None = None
    lower: float | None = None
    upper: float | None = None


@dataclass(frozen=True)
class DriftResult(_XComForm):
    """Drift of a candidate from the active model after Procrustes alignment
    (``traitflow.drift.DriftReport``); ``measured`` False without an active model (``reason``).

    increment_threshold : for an incremental candidate, the drift above which its traits are
        refitted (its ``increment_drift_threshold``), used instead of the run's ``drift_threshold``
    recent_weighted_drift : for an incremental candidate, the drift weighted by the tokens' counts
        in its increment corpus; what ``increment_threshold`` is compared with
    """

    measured: bool
    reason: str | None = None
    mean_drift: float | None = None
    weighted_mean_drift: float | None = None
    p95_drift: float | None = None
    max_drift: float | None = None
    n_shared_tokens: int | None = None
    n_candidate_tokens: int | None = None
    n_active_tokens: int | None = None
    min_count: int | None = None
    increment_threshold: float | None = None
    recent_weighted_drift: float | None = None


@dataclass(frozen=True)
class FittedCandidate(_XComForm):
    """A candidate made a complete model (traits fitted or kept), saved under ``model_dir``."""

    candidate: Candidate
    model_dir: str
    refit: bool
    trait_match: dict[str, Any] | None = None


@dataclass(frozen=True)
class ShardPlan(_XComForm):
    """A run's profiles computed in ``n_shards`` customer shards (``traitflow.shards``), staged
    under ``run_key`` and committed together.

    as_of : the profiles' instant (ISO)
    plan_id, shard_sizes : the shard membership the plan task wrote (``Store.plan_shards``) and
        its customers per shard; plan_id None: no membership (nothing to compute, or a weekly
        recompute in one shard, which reads every customer)
    model_version, exclude_sources : daily: the model selected for ``as_of`` (None: none yet)
        and the event files not delivered yet for the interval (``CustomerSelection``)
    fitted, event_snapshot : weekly: the candidate every customer is profiled with, and the
        run's event snapshot
    model_version, model_key : weekly: the candidate's ``staging`` version, saved by the plan task
        under its fingerprint (``jobs.candidate_key``), which the shards and ``promote`` read
    reason : set when there is nothing to compute (no model yet, no customers); shards skip
    """

    run_key: str
    n_shards: int
    as_of: str
    plan_id: int | None = None
    shard_sizes: list[int] = field(default_factory=list)
    model_version: int | None = None
    exclude_sources: list[str] = field(default_factory=list)
    fitted: FittedCandidate | None = None
    event_snapshot: str | None = None
    model_key: str | None = None
    reason: str | None = None

    def shards(self) -> list[int]:
        """The shard numbers, one mapped task each."""
        return list(range(self.n_shards))


@dataclass(frozen=True)
class ShardResult(_XComForm):
    """One customer shard's staged batch: its row count (0 and ``skipped`` when the plan had
    nothing to compute)."""

    shard: int
    n_profiles: int
    skipped: bool = False


@dataclass(frozen=True)
class PromotionResult(_XComForm):
    """The promoted model version, its profiles and the run key that makes a retry a no-op.

    n_superseded : older staging versions rejected as superseded by this one (``Store.superseded_by``)
    """

    model_version: int
    n_profiles: int
    run_key: str
    promoted: bool = True
    n_superseded: int = 0


@dataclass(frozen=True)
class RejectionResult(_XComForm):
    """A candidate the gate refused, stored as a ``rejected`` model version.

    model_version : None when the data was too thin to fit its traits (``not_saved`` says why)
    n_superseded : older staging versions rejected as superseded by this one (``Store.superseded_by``)
    """

    reason: str
    model_version: int | None
    run_key: str | None = None
    not_saved: str | None = None
    promoted: bool = False
    n_superseded: int = 0


@dataclass(frozen=True)
class WeeklyReport:
    """The weekly run report (``run_reports`` kind "weekly", keyed by ``trained_through``).

    steps : each task's XCom by task id (branch tasks: their decision ``{"branch", "reason",
        ...}``); tasks that did not run are left out
    runner : "cli" for ``traitflow retrain``; None for the DAG
    """

    run_id: str
    trained_through: datetime
    steps: dict[str, Any]
    runner: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "trained_through", utc(self.trained_through))

    def to_xcom(self) -> dict[str, Any]:
        report = {"run_id": self.run_id, **self.steps, "trained_through": iso(self.trained_through)}
        if self.runner is not None:
            report["runner"] = self.runner
        return report

    @classmethod
    def from_xcom(cls, data: Mapping[str, Any]) -> WeeklyReport:
        steps = {k: v for k, v in data.items() if k not in ("run_id", "trained_through", "runner")}
        return cls(data["run_id"], data["trained_through"], steps, data.get("runner"))


# ---------------------------------------------------------------------------------- refresh


@dataclass(frozen=True)
class RefreshResult(_XComForm):
    """Profiles rewritten after a promotion; ``reason`` says why none were (e.g. already current)."""

    n_profiles: int
    model_version: int | None = None
    as_of: str | None = None
    reason: str | None = None
