"""Configuration: one place for every tunable, with validation up front.

Every stage takes its own frozen dataclass so that a DAG Param form, the CLI and the tests all
build the same objects. ``PipelineConfig.from_mapping`` accepts a flat dict (as Airflow Params
deliver them) and rejects unknown keys with a precise message. Each field's allowed values and
help text are declared once, as field metadata (``traitflow.bounds``): ``__post_init__`` checks
them and ``PipelineConfig.json_schema`` renders them for the DAG trigger forms.

Light on purpose (standard library only): the DAG files import this module at parse time.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from traitflow.bounds import BoundedField, bounded_fields, bounds, violation

DEFAULT_ACTION_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "wishlist": 2.0,
    "cart": 3.0,
    "remove_from_cart": 0.5,
    "purchase": 5.0,
}


class ConfigError(ValueError):
    """A configuration value is missing, malformed or out of range."""


class ThinDataError(ValueError):
    """The data is too thin for the requested fit (e.g. fewer customers than traits): retrying
    the same data cannot succeed, so schedulers should fail at once instead of retrying."""


def check_bounds(instance: Any) -> None:
    """``ConfigError`` naming the first field of ``instance`` outside its declared bounds
    (``traitflow.bounds``); every stage dataclass calls this first in ``__post_init__``."""
    problem = violation(instance)
    if problem is not None:
        raise ConfigError(problem)


_SEED_MAX = 2**31 - 1  # seeds stay signed 32-bit integers, which gensim and scikit-learn both take


@dataclass(frozen=True)
class SessionParams:
    """How events become sessions and tokens."""

    timeout_minutes: float = field(
        default=30.0,
        metadata=bounds(
            exclusive_minimum=0, maximum=1440, description="Inactivity gap (minutes) that ends a session."
        ),
    )
    token_scheme: str = "{action}_{product_id}"
    # Shorter sessions carry no co-occurrence signal for training.
    min_session_tokens: int = field(default=2, metadata=bounds(minimum=1))

    def __post_init__(self) -> None:
        check_bounds(self)
        if "{product_id}" not in self.token_scheme:
            raise ConfigError("token_scheme must contain '{product_id}'")
        unknown = self.token_scheme.replace("{action}", "").replace("{product_id}", "")
        if "{" in unknown or "}" in unknown:
            raise ConfigError(
                f"token_scheme may only use {{action}} and {{product_id}}: {self.token_scheme!r}"
            )


@dataclass(frozen=True)
class Item2VecParams:
    """gensim Word2Vec hyperparameters (corpus_file mode)."""

    vector_size: int = field(
        default=64, metadata=bounds(minimum=1, maximum=1024, description="Embedding dimension.")
    )
    window: int = field(
        default=5, metadata=bounds(minimum=1, maximum=100, description="Word2Vec context window.")
    )
    # 5 trains 1.4-1.8x faster than 10 at equal quality; the increment_drift_threshold was
    # measured at 5 and moves with it (docs/method-variants.md, "Item2Vec defaults").
    negative: int = field(
        default=5, metadata=bounds(minimum=0, maximum=100, description="Negative samples per token.")
    )
    ns_exponent: float = field(
        default=0.75,
        metadata=bounds(
            minimum=-2,
            maximum=2,
            description="Exponent of the negative-sampling distribution (0.75 = word2vec default).",
        ),
    )
    sample: float = field(
        default=1e-3,
        metadata=bounds(
            minimum=0, maximum=1, description="Down-sampling threshold for very popular tokens (0 = off)."
        ),
    )
    min_count: int = field(
        default=1,
        metadata=bounds(
            minimum=1, maximum=10000, description="Ignore tokens seen fewer times in the training window."
        ),
    )
    epochs: int = field(default=10, metadata=bounds(minimum=1, maximum=500, description="Training epochs."))
    sg: int = field(default=1, metadata=bounds(choices=(0, 1), description="0 = CBOW, 1 = skip-gram."))
    workers: int = field(default=2, metadata=bounds(minimum=1, maximum=64, description="Training threads."))
    seed: int = field(
        default=42, metadata=bounds(minimum=0, maximum=_SEED_MAX, description="Word2Vec random seed.")
    )
    alpha: float = field(default=0.025, metadata=bounds(exclusive_minimum=0))
    min_alpha: float = 0.0001

    def __post_init__(self) -> None:
        check_bounds(self)


@dataclass(frozen=True)
class AggregationParams:
    """How a customer's tokens become one vector."""

    action_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_ACTION_WEIGHTS))
    # 30 days: on the Online Retail II export (split at 80% of events) it raised the profile's
    # hit@10 on products new to the customer from 1.49x to 1.63x popularity at k=16 (the interval's
    # lower bound above 1.5) and left planted-segment ARI unchanged; docs/method-variants.md.
    recency_half_life_days: float | None = field(
        default=30.0,
        metadata=bounds(
            exclusive_minimum=0,
            description="Half-life (days) of the recency weight of events; empty = no decay.",
        ),
    )
    # Below this the customer is embedded from category averages (cold start).
    min_tokens: int = field(default=3, metadata=bounds(minimum=1))

    def __post_init__(self) -> None:
        check_bounds(self)
        for action, weight in self.action_weights.items():
            if weight < 0:
                raise ConfigError(f"action weight for {action!r} must be >= 0, got {weight}")


@dataclass(frozen=True)
class TraitParams:
    """NMF settings."""

    n_traits: int = field(
        default=16, metadata=bounds(minimum=1, maximum=256, description="Number of traits (NMF components).")
    )
    # scikit-learn's own defaults. The tail beyond them buys nothing measurable: on 20K customers
    # (k=16) tol=1e-5/max_iter=500 ran 314 iterations for the same profiles (matched trait
    # correlation 1.000) as 200 here; on 80K customers with ~10 events each, 500 vs 200
    # iterations gave the same reconstruction error to 4 digits and matched traits >= 0.92
    # (mean 0.986), in half the time.
    max_iter: int = field(
        default=200, metadata=bounds(minimum=1, maximum=100000, description="NMF iteration limit.")
    )
    tol: float = field(default=1e-4, metadata=bounds(exclusive_minimum=0))
    random_state: int = field(
        default=0, metadata=bounds(minimum=0, maximum=_SEED_MAX, description="NMF seed.")
    )
    # nndsvd is deterministic (refits of the same data give the same traits) and recovered planted
    # segments best in our measurements (see traitflow.traits).
    init: str = field(default="nndsvd", metadata=bounds(choices=("nndsvd", "nndsvda", "nndsvdar", "random")))
    # Optional L1 penalty on customer loadings, relative to the RMS of the NMF input; the same
    # penalty is applied when projecting, so profiles stay consistent with the fit.
    sparsity: float = field(
        default=0.0,
        metadata=bounds(
            minimum=0,
            maximum=10,
            description="Relative L1 penalty on customer loadings; higher = customers lean on fewer traits.",
        ),
    )
    # Learn the components on at most this many customers (uniform sample, random_state); all
    # customers are projected exactly afterwards. Bounds the weekly NMF cost at the M tier.
    max_fit_customers: int = 200_000

    def __post_init__(self) -> None:
        check_bounds(self)
        if self.max_fit_customers < self.n_traits:
            raise ConfigError(f"max_fit_customers must be >= n_traits, got {self.max_fit_customers}")


@dataclass(frozen=True)
class TriggerParams:
    """Thresholds of the weekly retrain branches and the quality gate."""

    new_vocab_threshold: float = field(
        default=0.05,
        metadata=bounds(
            minimum=0,
            maximum=1,
            description="Retrain when more than this share of the window's tokens is new to the model.",
        ),
    )
    drift_threshold: float = field(
        default=0.1,
        metadata=bounds(
            minimum=0, maximum=1, description="Refit traits when the aligned embedding drift exceeds this."
        ),
    )
    quality_margin: float = field(
        default=0.02,
        metadata=bounds(
            minimum=0,
            maximum=1,
            description="Reject a candidate more than this much worse (hit rate) than the active model.",
        ),
    )
    training_window_days: int = field(
        default=90,
        metadata=bounds(minimum=1, maximum=3650, description="Days of events the weekly corpus covers."),
    )

    def __post_init__(self) -> None:
        check_bounds(self)


TRAINING_MODES = ("auto", "full", "incremental")


@dataclass(frozen=True)
class IncrementParams:
    """How the weekly retrain trains a candidate: from scratch (full) or continuing the active
    model (incremental, ``traitflow.item2vec_incremental``).

    ``auto`` trains incrementally when that is possible and no rule asks for a full retrain
    (``traitflow.jobs.weekly.plan_training``): a full retrain at least every
    ``full_retrain_every_weeks`` weeks, and after an incremental candidate was rejected or its
    drift made the traits refit.
    """

    training_mode: str = field(
        default="auto",
        metadata=bounds(
            choices=TRAINING_MODES,
            description=(
                "auto: continue the active model when possible, full retrain on schedule, after a "
                "rejected increment or a refit; full: train from scratch; incremental: continue "
                "the active model whenever it is compatible."
            ),
        ),
    )
    full_retrain_every_weeks: int = field(
        default=4,
        metadata=bounds(
            minimum=1,
            maximum=520,
            description="auto mode: train from scratch once the last full retrain is this many weeks old.",
        ),
    )
    increment_epochs: int = field(
        default=5,
        metadata=bounds(minimum=1, maximum=500, description="Epochs of an incremental update."),
    )
    increment_alpha: float = field(
        default=0.01,
        metadata=bounds(
            exclusive_minimum=0, maximum=1, description="Start learning rate of an incremental update."
        ),
    )
    replay_fraction: float = field(
        default=0.2,
        metadata=bounds(
            minimum=0,
            maximum=1,
            description="Share of the window's older sessions replayed in an incremental update.",
        ),
    )
    # An increment starts from the parent's vectors and moves them far less than a full retrain,
    # so its drift is judged on its own scale, and on the drift weighted by the increment corpus's
    # token counts (``drift.DriftReport.recent_weighted_drift``). The default sits between the
    # largest drift of increments on unchanged behaviour and the smallest under a planted shift of
    # a third of the products, with about the same factor to each, over several seeds and workload
    # sizes (bench/increment_drift.py, docs/method-variants.md).
    increment_drift_threshold: float = field(
        default=0.015,
        metadata=bounds(
            minimum=0,
            maximum=1,
            description=(
                "Refit traits when an incremental candidate's aligned drift, weighted by the"
                " increment's token counts, exceeds this."
            ),
        ),
    )

    def __post_init__(self) -> None:
        check_bounds(self)


@dataclass(frozen=True)
class PipelineConfig:
    """Everything one pipeline run needs, grouped by stage."""

    sessions: SessionParams = field(default_factory=SessionParams)
    item2vec: Item2VecParams = field(default_factory=Item2VecParams)
    aggregation: AggregationParams = field(default_factory=AggregationParams)
    traits: TraitParams = field(default_factory=TraitParams)
    triggers: TriggerParams = field(default_factory=TriggerParams)
    increment: IncrementParams = field(default_factory=IncrementParams)

    # Flat parameter names (as shown in the Airflow trigger form) -> (section, field).
    FLAT_KEYS: ClassVar[dict[str, tuple[str, str]]] = {
        "session_timeout_minutes": ("sessions", "timeout_minutes"),
        "vector_size": ("item2vec", "vector_size"),
        "window": ("item2vec", "window"),
        "negative": ("item2vec", "negative"),
        "ns_exponent": ("item2vec", "ns_exponent"),
        "sample": ("item2vec", "sample"),
        "min_count": ("item2vec", "min_count"),
        "epochs": ("item2vec", "epochs"),
        "workers": ("item2vec", "workers"),
        "seed": ("item2vec", "seed"),
        "recency_half_life_days": ("aggregation", "recency_half_life_days"),
        "k": ("traits", "n_traits"),
        "nmf_max_iter": ("traits", "max_iter"),
        "nmf_random_state": ("traits", "random_state"),
        "nmf_sparsity": ("traits", "sparsity"),
        "new_vocab_threshold": ("triggers", "new_vocab_threshold"),
        "drift_threshold": ("triggers", "drift_threshold"),
        "quality_margin": ("triggers", "quality_margin"),
        "training_window_days": ("triggers", "training_window_days"),
        "training_mode": ("increment", "training_mode"),
        "full_retrain_every_weeks": ("increment", "full_retrain_every_weeks"),
        "increment_epochs": ("increment", "increment_epochs"),
        "increment_alpha": ("increment", "increment_alpha"),
        "replay_fraction": ("increment", "replay_fraction"),
        "increment_drift_threshold": ("increment", "increment_drift_threshold"),
    }

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, ignore: tuple[str, ...] = ()) -> PipelineConfig:
        """Build a config from flat keys (see ``FLAT_KEYS``); unknown keys are an error."""
        unknown = sorted(set(values) - set(cls.FLAT_KEYS) - set(ignore))
        if unknown:
            raise ConfigError(f"unknown config keys: {unknown}; known: {sorted(cls.FLAT_KEYS)}")
        sections: dict[str, dict[str, Any]] = {}
        for key, value in values.items():
            if key in ignore or (value is None and key != "recency_half_life_days"):
                continue
            section, name = cls.FLAT_KEYS[key]
            sections.setdefault(section, {})[name] = value
        base = cls()
        return cls(
            **{
                section: dataclasses.replace(getattr(base, section), **overrides)
                for section, overrides in sections.items()
            }
        )

    @classmethod
    def bounded_field(cls, key: str) -> BoundedField:
        """The field behind the flat key ``key`` with its type and declared ``Bounds``."""
        section, name = cls.FLAT_KEYS[key]
        for declared in bounded_fields(typing.get_type_hints(cls)[section]):
            if declared.name == name:
                return declared
        raise ConfigError(f"config key {key!r} ({section}.{name}) declares no bounds")

    @classmethod
    def json_schema(cls, key: str) -> dict[str, Any]:
        """JSON schema of the flat key ``key`` from its field's declared ``Bounds``, plus its
        ``description``: what a DAG trigger form validates the value with."""
        declared = cls.bounded_field(key)
        return {**declared.json_schema(), "description": declared.bounds.description}

    def to_flat(self) -> dict[str, Any]:
        """The inverse of ``from_mapping``: flat keys with this config's values."""
        return {key: getattr(getattr(self, s), f) for key, (s, f) in self.FLAT_KEYS.items()}

    def to_dict(self) -> dict[str, Any]:
        """Nested, JSON-serialisable form (stored with every model version)."""
        out = dataclasses.asdict(self)
        out["aggregation"]["action_weights"] = dict(self.aggregation.action_weights)
        return out


# Fewest customers per trait before a fit is called thin (a warning with a suggested k), and the
# floor below which it is refused: NMF with k traits on fewer than 2k customers gives traits made
# of one or two customers each, which describe individuals, not behaviour shared by a group.
CUSTOMERS_PER_TRAIT = 20
MIN_CUSTOMERS_PER_TRAIT = 2


@dataclass(frozen=True)
class TraitCountCheck:
    """Whether ``n_customers`` support ``k`` traits (``check_trait_count``).

    verdict : "ok", "thin" (fit, with a warning) or "refuse"
    suggested_k : the k these customers support (``max(2, n_customers // 20)``, at most ``k``)
    message : a sentence with the numbers, empty when the verdict is "ok"
    """

    n_customers: int
    k: int
    verdict: str
    suggested_k: int
    message: str


def check_trait_count(n_customers: int, k: int) -> TraitCountCheck:
    """The rule for fitting ``k`` traits on ``n_customers`` customers with history.

    At least ``CUSTOMERS_PER_TRAIT`` (20) customers per trait is fine; fewer is thin (fit anyway,
    with a warning and a suggested k); fewer than ``MIN_CUSTOMERS_PER_TRAIT * k`` customers, or
    fewer than 2 customers in all, is refused.
    """
    suggested = max(2, min(k, n_customers // CUSTOMERS_PER_TRAIT))
    if n_customers < max(2, MIN_CUSTOMERS_PER_TRAIT * k):
        floor = max(2, MIN_CUSTOMERS_PER_TRAIT * k)
        hint = (
            f"; use k={suggested} or fewer"
            if n_customers >= MIN_CUSTOMERS_PER_TRAIT * suggested
            else f"; traits need at least {MIN_CUSTOMERS_PER_TRAIT * 2} customers with history"
        )
        message = (
            f"{n_customers} customers with history cannot support k={k} traits (need at least {floor}){hint}"
        )
        return TraitCountCheck(n_customers, k, "refuse", suggested, message)
    if n_customers < CUSTOMERS_PER_TRAIT * k:
        message = (
            f"only {n_customers} customers with history for k={k} traits "
            f"({n_customers / k:.1f} per trait, fewer than {CUSTOMERS_PER_TRAIT}): the traits may "
            f"describe a handful of customers each; k={suggested} would give about "
            f"{n_customers // suggested} per trait"
        )
        return TraitCountCheck(n_customers, k, "thin", suggested, message)
    return TraitCountCheck(n_customers, k, "ok", k, "")


def env_str(name: str, default: str | None = None) -> str | None:
    """A non-empty environment string, else ``default``."""
    value = os.environ.get(name, "").strip()
    return value or default


def env_int(name: str, default: int) -> int:
    raw = env_str(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be an integer, got {raw!r}") from None


def env_path(name: str, default: Path) -> Path:
    raw = env_str(name)
    return Path(raw).expanduser() if raw else default


def data_dir() -> Path:
    """Where the project keeps generated data, models and the embedded Postgres (``TRAITFLOW_DATA_DIR``)."""
    return env_path("TRAITFLOW_DATA_DIR", Path.cwd() / "data")


def database_url() -> str | None:
    """``TRAITFLOW_DATABASE_URL`` if set; ``None`` means: use the embedded Postgres."""
    return env_str("TRAITFLOW_DATABASE_URL")


def db_schema() -> str:
    """The Postgres schema Traitflow owns (``TRAITFLOW_DB_SCHEMA``, default ``traitflow``)."""
    schema = env_str("TRAITFLOW_DB_SCHEMA", "traitflow")
    assert schema is not None
    if not schema.isidentifier() or not schema.islower():
        raise ConfigError(f"TRAITFLOW_DB_SCHEMA must be a lower-case identifier, got {schema!r}")
    return schema


# What a daily run does when its ``input_dir`` holds no event file dated its day.
# Customer shards of a profile computation (``traitflow.shards``): the DAGs' ``n_shards`` maximum.
MAX_SHARDS = 64

MISSING_INPUT_FAIL = "fail"  # store the reason in the run report, fail the run without retries
MISSING_INPUT_SKIP = "skip"  # store the reason in the run report, end the run skipped (green)
MISSING_INPUT_IGNORE = "ignore"  # log a warning and update from the events table
MISSING_INPUT_POLICIES = (MISSING_INPUT_FAIL, MISSING_INPUT_SKIP, MISSING_INPUT_IGNORE)


def missing_input_policy() -> str:
    """The deployment's ``MISSING_INPUT_POLICIES`` entry (``TRAITFLOW_MISSING_INPUT``, default
    "fail": a day without its delivery is an incident to see, and the failed run is the one to
    clear once the file has arrived; later days do not pick up its customers)."""
    policy = (env_str("TRAITFLOW_MISSING_INPUT", MISSING_INPUT_FAIL) or "").lower()
    if policy not in MISSING_INPUT_POLICIES:
        raise ConfigError(f"TRAITFLOW_MISSING_INPUT must be one of {MISSING_INPUT_POLICIES}, got {policy!r}")
    return policy


def history_retention_months() -> int:
    """Months of profile history the daily run keeps before the current month
    (``TRAITFLOW_HISTORY_RETENTION_MONTHS``, default 0 = keep everything); older months are
    dropped whole (``traitflow.store.partitions``)."""
    months = env_int("TRAITFLOW_HISTORY_RETENTION_MONTHS", 0)
    if months < 0:
        raise ConfigError(
            f"TRAITFLOW_HISTORY_RETENTION_MONTHS must be >= 0 (0 = keep everything), got {months}"
        )
    return months


def input_root() -> Path:
    """The folder the daily DAG may read event files from (``TRAITFLOW_INPUT_ROOT``, default the
    data dir): an ``input_dir`` run parameter outside it is refused."""
    return env_path("TRAITFLOW_INPUT_ROOT", data_dir())


def mapping_root() -> Path:
    """The folder column-mapping files may be read from by the DAGs (``TRAITFLOW_MAPPING_ROOT``,
    default ``input_root()``); presets need no file."""
    return env_path("TRAITFLOW_MAPPING_ROOT", input_root())


def confine(path: str | Path, root: Path, what: str, variable: str) -> Path:
    """``path`` resolved (symlinks too), if it lies inside ``root``; else ``ConfigError``.

    For paths that come from run parameters (a DAG form anyone with trigger rights fills in):
    ``..`` components are refused outright, and the resolved path must stay within the resolved
    root, so neither ``../`` nor a symlink leads elsewhere. The error names the path and the
    root, never anything read from the path.
    """
    given = Path(path).expanduser()
    if ".." in given.parts:
        raise ConfigError(f"{what} {str(path)!r} must not contain '..' components")
    resolved, base = given.resolve(), root.expanduser().resolve()
    if not resolved.is_relative_to(base):
        raise ConfigError(
            f"{what} {str(path)!r} is outside the allowed folder {base} (set {variable} to allow another)"
        )
    return resolved
