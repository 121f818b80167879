"""Item2Vec hyperparameter search on held-out next-item hit rate.

``search`` samples a share of the customers (all their events), builds one corpus with a share of
its sessions held out (``pipeline.build_corpus(holdout_fraction=...)``), and trains Word2Vec once
per parameter combination of a small grid (or a random subset of it). The held-out sessions are
split in two halves: *validation* picks the best combination, *test* reports it, so the reported
gain is not inflated by the selection. Two reference rows are always trained as well: gensim's
own defaults (window 5, ns_exponent 0.75, sample 1e-3, epochs 5) and this project's configured
values. With ``workers=1`` (the default here) every number is reproducible.

The result's ``best_params`` are flat ``PipelineConfig`` keys (``ns_exponent``, ``window``,
``sample``, ``epochs``), ready for ``PipelineConfig.from_mapping`` or a DAG's params.

The default grid includes ``epochs=5``: on synthetic planted workloads (1,000-2,000 customers,
40K-80K events) fewer epochs won clearly -- epochs 5 beat 10, and 30/50 were never competitive.

Caveat, measured: next-item hit rate is not trait quality. On a 60-category planted workload
the combination this search picks (ns_exponent 1.0, window 2, epochs 10: next-item hit rate
0.661 -> 0.697) *lowered* profile category hit@10 from 0.820 to 0.760 and dominant-trait ARI
from 0.63 to 0.59 (``traitflow.evaluate``). Check tuned parameters with ``traitflow evaluate``
before adopting them for the traits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import tempfile
import time
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from traitflow.config import ConfigError, PipelineConfig
from traitflow.item2vec import train_item2vec
from traitflow.model import TokenTable
from traitflow.quality import next_item_hit_rate

if TYPE_CHECKING:
    from traitflow.pipeline import Corpus

log = logging.getLogger(__name__)

DEFAULT_GRID: dict[str, tuple[Any, ...]] = {
    "ns_exponent": (-0.5, 0.0, 0.75, 1.0),
    "window": (2, 3, 5),
    "sample": (0.0, 1e-3, 1e-5),
    "epochs": (5, 10, 30, 50),
}
# gensim.models.Word2Vec's own defaults for the searched parameters (our config uses epochs=10).
GENSIM_DEFAULTS: dict[str, Any] = {"window": 5, "ns_exponent": 0.75, "sample": 1e-3, "epochs": 5}
TUNED_KEYS: tuple[str, ...] = ("ns_exponent", "window", "sample", "epochs")
HOLDOUT_FRACTION = 0.2
TOP_N = 10


class TuningError(ValueError):
    """The events or the grid cannot support a search."""


@dataclass
class TuningResult:
    """Outcome of ``search``.

    best_params : flat PipelineConfig keys of the best combination by validation hit rate (the
        searched keys and ns_exponent/window/sample/epochs; reference rows compete too)
    table : one row per trained combination: the searched keys, ``role`` ("grid",
        "gensim_defaults", "config_defaults"), ``validation_hit_rate``, ``test_hit_rate``,
        ``seconds``; sorted by validation hit rate, best first
    sample : sizes of the sample and its held-out pairs
    undefined : why nothing was picked, or None. The hit rate is zero on every trial when the
        held-out sessions have no next item any model could place in its top N (e.g. every
        held-out pair involves a token unseen in training); then the metric is undefined on this
        data, ``best_params`` is empty and the configured values stay as they are.
    """

    best_params: dict[str, Any]
    table: pd.DataFrame
    sample: dict[str, Any]
    undefined: str | None = None

    def row(self, role: str) -> dict[str, Any]:
        """The first table row with ``role`` (e.g. "gensim_defaults"), as a dict."""
        rows = self.table[self.table["role"] == role]
        if rows.empty:
            raise KeyError(f"no row with role {role!r}")
        return _string_keys(rows.iloc[0].to_dict())

    @property
    def best(self) -> dict[str, Any]:
        return _string_keys(self.table.iloc[0].to_dict())

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "best_params": self.best_params,
            "undefined": self.undefined,
            "best": None if self.undefined else _plain(self.best),
            "gensim_defaults": _plain(self.row("gensim_defaults")),
            "config_defaults": _plain(self.row("config_defaults")),
            "sample": self.sample,
            "table": [_plain(_string_keys(r)) for r in self.table.to_dict("records")],
        }


def _string_keys(row: Mapping[Hashable, Any]) -> dict[str, Any]:
    """A table row keyed by its column labels (all strings)."""
    return {str(k): v for k, v in row.items()}


def _plain(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}


def sample_customers(events: pd.DataFrame, fraction: float, *, random_state: int = 0) -> pd.DataFrame:
    """All events of a random ``fraction`` of the customers (at least one customer)."""
    if not 0.0 < fraction <= 1.0:
        raise TuningError(f"sample fraction must be in (0, 1], got {fraction}")
    customers = np.sort(pd.unique(events["customer_id"].to_numpy(dtype=object)))
    if len(customers) == 0:
        raise TuningError("no events to tune on")
    n = max(1, round(len(customers) * fraction))
    chosen = np.random.default_rng(random_state).choice(len(customers), n, replace=False)
    return events[events["customer_id"].isin(customers[chosen])]


def grid_trials(
    grid: Mapping[str, Sequence[Any]], *, n_trials: int | None = None, random_state: int = 0
) -> list[dict[str, Any]]:
    """Every combination of ``grid`` (in key order), or ``n_trials`` of them drawn without
    replacement (kept in grid order)."""
    unknown = sorted(set(grid) - set(PipelineConfig.FLAT_KEYS))
    if unknown:
        raise TuningError(
            f"unknown parameters in the grid: {unknown}; known: {sorted(PipelineConfig.FLAT_KEYS)}"
        )
    if any(len(values) == 0 for values in grid.values()):
        raise TuningError("every grid parameter needs at least one value")
    keys = list(grid)
    trials = [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]
    if n_trials is not None and n_trials < len(trials):
        if n_trials < 1:
            raise TuningError(f"n_trials must be >= 1, got {n_trials}")
        picked = np.sort(np.random.default_rng(random_state).choice(len(trials), n_trials, replace=False))
        trials = [trials[i] for i in picked]
    return trials


def search(
    events: pd.DataFrame,
    base_config: PipelineConfig | None = None,
    *,
    grid: Mapping[str, Sequence[Any]] | None = None,
    sample_fraction: float = 0.1,
    n_trials: int | None = None,
    holdout_fraction: float = HOLDOUT_FRACTION,
    random_state: int = 0,
    workers: int = 1,
    top_n: int = TOP_N,
    max_pairs: int = 20_000,
    work_dir: Path | None = None,
) -> TuningResult:
    """Grid (or random) search of Item2Vec parameters on held-out next-item hit rate@``top_n``.

    Parameters
    ----------
    events : canonical events
    base_config : everything not searched (vector_size, negative, sessions, ...); default config
    grid : flat PipelineConfig key -> values; default ``DEFAULT_GRID``
    sample_fraction : share of customers used (all their events)
    n_trials : draw this many grid combinations at random (None: the whole grid)
    holdout_fraction : share of the sample's sessions held out (half validation, half test)
    workers : Word2Vec threads for every trial (1: reproducible)

    Returns a ``TuningResult``.
    """
    from traitflow.pipeline import build_corpus

    base_config = base_config or PipelineConfig()
    trials = grid_trials(grid or DEFAULT_GRID, n_trials=n_trials, random_state=random_state)
    sample = sample_customers(events, sample_fraction, random_state=random_state)
    with _work_folder(work_dir) as folder:
        corpus = build_corpus(
            sample,
            base_config.sessions,
            folder,
            holdout_fraction=holdout_fraction,
            random_state=random_state,
        )
        if corpus.holdout_path is None:
            raise TuningError("holdout_fraction must be > 0 to score the trials")
        holdout = pd.read_parquet(corpus.holdout_path)
        halves = _split_holdout(holdout, random_state)
        base_flat = {k: v for k, v in base_config.to_flat().items() if k in TUNED_KEYS}
        reported = list(dict.fromkeys([*TUNED_KEYS, *(grid or DEFAULT_GRID)]))
        runs = [("grid", t) for t in trials] + [
            ("gensim_defaults", GENSIM_DEFAULTS),
            ("config_defaults", base_flat),
        ]
        rows = _trial_rows(
            runs,
            base_config,
            corpus,
            halves,
            reported,
            workers=workers,
            top_n=top_n,
            max_pairs=max_pairs,
            random_state=random_state,
        )
    table = _ranked(pd.DataFrame(rows))
    best_params, undefined = _best_params(table, reported, top_n)
    summary = {
        "n_customers": int(sample["customer_id"].nunique()),
        "n_events": len(sample),
        "n_training_sessions": corpus.stats.n_sessions_written,
        "n_validation_sessions": len(np.unique(halves["validation"][0])),
        "n_test_sessions": len(np.unique(halves["test"][0])),
        "sample_fraction": sample_fraction,
        "holdout_fraction": holdout_fraction,
        "top_n": top_n,
        "n_trials": len(trials),
    }
    return TuningResult(best_params=best_params, table=table, sample=summary, undefined=undefined)


@contextlib.contextmanager
def _work_folder(work_dir: Path | None) -> Iterator[Path]:
    """``work_dir``, or a temporary folder removed afterwards."""
    if work_dir is not None:
        yield work_dir
        return
    with tempfile.TemporaryDirectory(prefix="traitflow-tune-") as temporary:
        yield Path(temporary)


def _trial_rows(
    runs: Sequence[tuple[str, Mapping[str, Any]]],
    base_config: PipelineConfig,
    corpus: Corpus,
    halves: dict[str, tuple[np.ndarray, np.ndarray]],
    reported: list[str],
    *,
    workers: int,
    top_n: int,
    max_pairs: int,
    random_state: int,
) -> list[dict[str, Any]]:
    """One row per (role, trial): its ``reported`` settings, both halves' hit rates and the
    training time; settings that repeat an earlier row's Item2Vec parameters are trained once."""
    vocabulary = corpus.vocabulary()
    rows = []
    trained: dict[Any, tuple[dict[str, float], float]] = {}  # Item2VecParams -> scores, seconds
    for role, trial in runs:
        config = _config(base_config, {**trial, "workers": workers})
        values = {key: _flat_value(config, key) for key in reported}
        if config.item2vec not in trained:  # a reference row may repeat a grid row
            started = time.perf_counter()
            try:
                tokens = train_item2vec(corpus.corpus_path, vocabulary, config.item2vec)
            except ValueError as error:
                raise TuningError(
                    f"cannot train on the sample: {error}; use a larger --sample-fraction"
                ) from None
            scores = _hit_rates(tokens, halves, top_n=top_n, max_pairs=max_pairs, random_state=random_state)
            trained[config.item2vec] = scores, time.perf_counter() - started
            log.info("tune %s %s: %s", role, values, scores)
        scores, seconds = trained[config.item2vec]
        rows.append({**values, "role": role, **scores, "seconds": seconds})
    return rows


def _hit_rates(
    tokens: TokenTable,
    halves: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    top_n: int,
    max_pairs: int,
    random_state: int,
) -> dict[str, float]:
    """``<half>_hit_rate`` of ``tokens`` on each held-out half (validation, test)."""
    return {
        f"{half}_hit_rate": next_item_hit_rate(
            tokens, sessions, session_tokens, top_n=top_n, max_pairs=max_pairs, random_state=random_state
        )["hit_rate"]
        for half, (sessions, session_tokens) in halves.items()
    }


def _ranked(table: pd.DataFrame) -> pd.DataFrame:
    """The trial rows, best validation hit rate first; ties: fewer epochs (cheaper), then grid order."""
    table["_order"] = np.arange(len(table))
    sort_keys = ["validation_hit_rate", *(["epochs"] if "epochs" in table else []), "_order"]
    table = table.sort_values(sort_keys, ascending=[False, *([True] if "epochs" in table else []), True])
    return table.drop(columns="_order").reset_index(drop=True)


def _best_params(table: pd.DataFrame, reported: list[str], top_n: int) -> tuple[dict[str, Any], str | None]:
    """The first row's settings, validated as a config, or none and the reason when the hit rate
    is 0 on every row (the metric says nothing on this data)."""
    if not (table["validation_hit_rate"] > 0).any():
        undefined = (
            f"held-out next-item hit rate@{top_n} is 0 on every one of the {len(table)} trained settings: "
            "the metric is undefined on this data (too few sessions or repeat pairs); nothing picked, "
            "the configured values stay"
        )
        log.warning("tune: %s", undefined)
        return {}, undefined
    # Reference rows compete too: the search never recommends something worse on validation.
    best_params = {key: _native(table.iloc[0][key]) for key in reported}
    PipelineConfig.from_mapping(best_params)  # validated: the DAG can pass it along as is
    return best_params, None


def _native(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _flat_value(config: PipelineConfig, key: str) -> Any:
    section, name = PipelineConfig.FLAT_KEYS[key]
    return getattr(getattr(config, section), name)


def _config(base: PipelineConfig, flat: Mapping[str, Any]) -> PipelineConfig:
    """``base`` with flat-key overrides (unlike ``from_mapping``, keeps base's other values)."""
    sections: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        section, name = PipelineConfig.FLAT_KEYS[key]
        sections.setdefault(section, {})[name] = value
    try:
        return dataclasses.replace(
            base, **{s: dataclasses.replace(getattr(base, s), **o) for s, o in sections.items()}
        )
    except (TypeError, ConfigError) as error:
        raise TuningError(f"invalid parameters {dict(flat)}: {error}") from None


def _split_holdout(holdout: pd.DataFrame, random_state: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Held-out sessions split in halves (by session): {"validation": (sessions, tokens), "test": ...}."""
    sessions = holdout["session"].to_numpy()
    unique = np.unique(sessions)
    if len(unique) < 2:
        raise TuningError(
            f"only {len(unique)} held-out sessions: use a larger --sample-fraction or more events"
        )
    in_test = np.random.default_rng(random_state + 1).random(len(unique)) < 0.5
    test_rows = in_test[np.searchsorted(unique, sessions)]
    tokens = holdout["token"].to_numpy(dtype=object)
    halves = {"validation": ~test_rows, "test": test_rows}
    out = {}
    for name, rows in halves.items():
        session_rows, token_rows = sessions[rows], tokens[rows]
        same = session_rows[1:] == session_rows[:-1]
        if not (same & (token_rows[1:] != token_rows[:-1])).any():
            raise TuningError(
                f"the {name} half of the held-out sessions has no consecutive pair of distinct tokens: "
                "use a larger --sample-fraction or more events"
            )
        out[name] = (session_rows, token_rows)
    return out


def format_result(result: TuningResult, *, max_rows: int = 15) -> str:
    """A readable table of the best trials and the two reference rows."""
    table = result.table
    shown = pd.concat([table.head(max_rows), table[table["role"] != "grid"]]).drop_duplicates()
    keys = [k for k in table.columns if k not in ("role", "validation_hit_rate", "test_hit_rate", "seconds")]
    header = [
        *keys,
        "role",
        f"val hit@{result.sample['top_n']}",
        f"test hit@{result.sample['top_n']}",
        "seconds",
    ]
    cells = [header] + [
        [
            *(f"{row[k]:g}" if isinstance(row[k], float) else str(row[k]) for k in keys),
            row["role"],
            f"{row['validation_hit_rate']:.4f}",
            f"{row['test_hit_rate']:.4f}",
            f"{row['seconds']:.1f}",
        ]
        for _, row in shown.iterrows()
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [
        f"Item2Vec tuning on {result.sample['n_customers']} customers ({result.sample['n_events']} events), "
        f"{result.sample['n_trials']} trials; held-out sessions: {result.sample['n_validation_sessions']} "
        f"validation, {result.sample['n_test_sessions']} test"
    ]
    for i, row in enumerate(cells):
        lines.append("  " + "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
        if i == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    if result.undefined:
        lines.append(f"no pick: {result.undefined}")
        return "\n".join(lines)
    best, gensim = result.best, result.row("gensim_defaults")
    lines.append(
        f"best: {result.best_params} -- test hit rate {best['test_hit_rate']:.4f} vs gensim defaults "
        f"{gensim['test_hit_rate']:.4f} and configured {result.row('config_defaults')['test_hit_rate']:.4f}"
    )
    return "\n".join(lines)
