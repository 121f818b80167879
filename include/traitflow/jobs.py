"""Task-sized jobs the Airflow DAGs call: plain arguments in, small JSON-able dicts out.

Every function opens its own ``Store`` (a task may run on any worker), passes large data between
tasks only as files under the run's ``work_dir`` and returns ids, paths and counts for XCom.
No Airflow imports: the DAG files adapt these to tasks.

Time semantics (backfill safety): a run for the interval [start, end) reads only events before
``end`` and profiles ``as_of=end`` with the newest promoted model trained through ``end`` or
earlier (``Store.model_version_for``), so re-running the interval writes the same rows. A weekly
retrain trained through ``end`` writes every profile as of ``end`` under the new model in the
same transaction that promotes it; a daily run for the same instant computes identical rows for
its customers, so the two converge whichever finishes first.

Races: a weekly run takes one event snapshot when it starts (``build_corpus``:
``Store.event_snapshot``), carried in its XComs, and every weekly read (corpus, trait fit,
recomputed profiles) is pinned to it, so a daily ingest committing meanwhile cannot give a model
whose tokens and profiles come from different data. A daily write checks, under the writers'
locks, that its model is still the one selected for its date (``StaleModelError`` otherwise) and
recomputes once with the newer model (``update_profiles``): it never replaces a newer promoted
model's rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from traitflow.alignment import align_tokens
from traitflow.config import PipelineConfig, ThinDataError, confine, input_root, mapping_root
from traitflow.drift import measure_drift as _measure_drift
from traitflow.drift import new_vocab_ratio
from traitflow.model import TraitflowModel, load_tokens, save_tokens
from traitflow.pipeline import build_corpus as _build_corpus
from traitflow.pipeline import fit_model, profile_customers, train_tokens
from traitflow.profile_batch import COLD_START_NONE, ProfileBatch
from traitflow.quality import compare_hit_rates, compare_with_popularity
from traitflow.store import StaleModelError, Store

log = logging.getLogger(__name__)

EVENT_FILE_SUFFIXES = (".csv", ".csv.gz", ".parquet")
HOLDOUT_FRACTION = 0.1
# Fixed, not the Word2Vec seed: a candidate and the active model must be judged on sessions
# neither was trained on, whatever seeds they were trained with.
HOLDOUT_SEED = 20240607


def _open(database_url: str | None) -> Store:
    store = Store(database_url)
    store.upgrade()
    return store


def _config(params: Mapping[str, Any] | None) -> PipelineConfig:
    return PipelineConfig.from_mapping(dict(params or {}))


def _iso(value: datetime) -> str:
    return pd.Timestamp(value).tz_convert("UTC").isoformat()


def _utc(value: datetime | str) -> datetime:
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.to_pydatetime()


# ---------------------------------------------------------------------------------------- daily


_FILE_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})")


def event_files_through(input_dir: str | Path, day: datetime) -> tuple[list[Path], list[Path]]:
    """Event files dated ``day`` or earlier (a ``YYYY-MM-DD`` in the name), and files with no date.

    Returns (dated files in date order, undated files).
    """
    folder = Path(input_dir).resolve()  # the store records files by resolved path
    if not folder.is_dir():
        raise FileNotFoundError(f"input folder {folder} does not exist")
    last = _utc(day).strftime("%Y-%m-%d")
    dated, undated = [], []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or not path.name.endswith(EVENT_FILE_SUFFIXES):
            continue
        match = _FILE_DATE.search(path.name)
        if match is None:
            undated.append(path)
        elif match.group(1) <= last:
            dated.append(path)
    return sorted(dated, key=lambda p: (_FILE_DATE.search(p.name).group(1), p.name)), undated


def ingest_interval(
    database_url: str | None,
    input_dir: str | None,
    mapping: str,
    start: datetime,
    end: datetime,
    run_id: str,
    max_reject_share: float | None = None,
) -> dict[str, Any]:
    """Ingest the event files of the interval's day and any earlier-dated file not ingested yet.

    Catching up earlier files makes the day's result independent of the order days are run in
    (a backfill may run newest first). Ingestion is idempotent: a file already recorded under its
    path is not read again, and re-reading one adds no rows. Files are treated as immutable once
    delivered: a corrected file needs a new name (or ``traitflow ingest --force``).

    A file with more than ``max_reject_share`` of its rows rejected (default
    ``events.DEFAULT_MAX_REJECT_SHARE``) raises ``events.MostlyRejectedError`` with nothing of it
    stored: the task fails, and files before it stay ingested (one transaction per file).

    ``input_dir`` and a mapping file come from run parameters, so both must lie inside their
    configured roots (``TRAITFLOW_INPUT_ROOT``, ``TRAITFLOW_MAPPING_ROOT``; see
    ``traitflow.config.confine``); a mapping preset name needs no file.
    """
    if not input_dir:
        return {"skipped": True, "reason": "no input_dir configured; events are expected in the table"}
    input_dir = str(confine(input_dir, input_root(), "input_dir", "TRAITFLOW_INPUT_ROOT"))
    mapping = confined_mapping(mapping)
    files, undated = event_files_through(input_dir, start)
    for path in files:  # a file may be a symlink that leads out of the root
        confine(path, input_root(), "event file", "TRAITFLOW_INPUT_ROOT")
    if undated:
        log.warning(
            "ignoring event files without a YYYY-MM-DD date in the name: %s", [p.name for p in undated]
        )
    totals: dict[str, Any] = {"skipped": False, "n_files_seen": len(files), "ignored_undated": len(undated)}
    with _open(database_url) as store:
        already = store.ingested_sources([str(path) for path in files])
        pending = [path for path in files if str(path) not in already]
        for path in pending:
            report = store.ingest_file(path, mapping, run_id, max_reject_share=max_reject_share).to_dict()
            for key, value in report.items():
                if isinstance(value, int) and not isinstance(value, bool):
                    totals[key] = totals.get(key, 0) + value
    totals["files"] = [str(path) for path in pending]
    totals["n_files"] = len(pending)
    if not any(_utc(start).strftime("%Y-%m-%d") in path.name for path in files):
        log.warning("no event file for %s in %s", _iso(start), input_dir)
    return totals


def confined_mapping(mapping: str) -> str:
    """A preset name as it is; a mapping file path only inside ``mapping_root()`` (resolved)."""
    from traitflow.events import PRESETS

    if mapping in PRESETS:
        return mapping
    return str(confine(mapping, mapping_root(), "mapping file", "TRAITFLOW_MAPPING_ROOT"))


def _dated_sources(
    input_dir: str | Path | None, start: datetime, end: datetime
) -> tuple[list[str], list[str]]:
    """(sources of the files dated ``start``'s day, sources of files dated ``end``'s day or later).

    Sources as the store records them (resolved paths). Files are delivered per day: a daily run
    for [start, end) treats the day's files as what arrived in its interval, and files dated
    after it as not delivered yet, whatever order the days actually run in.
    """
    if not input_dir:
        return [], []
    folder = confine(input_dir, input_root(), "input_dir", "TRAITFLOW_INPUT_ROOT")
    if not folder.is_dir():
        raise FileNotFoundError(f"input folder {folder} does not exist")
    day, first_later = _utc(start).strftime("%Y-%m-%d"), _utc(end).strftime("%Y-%m-%d")
    on_day, later = [], []
    for path in sorted(folder.iterdir()):
        match = _FILE_DATE.search(path.name)
        if not path.is_file() or not path.name.endswith(EVENT_FILE_SUFFIXES) or match is None:
            continue
        if match.group(1) == day:
            on_day.append(str(path))
        elif match.group(1) >= first_later:
            later.append(str(path))
    return on_day, later


def select_customers(
    database_url: str | None, start: datetime, end: datetime, work_dir: str, input_dir: str | None = None
) -> dict[str, Any]:
    """Customers with events in [start, end), written to a Parquet file.

    With ``input_dir``: also the customers with events in the files dated ``start``'s day, whatever
    their event times (late events: a Jan-8 event in the Jan-9 file updates its customer on
    Jan 9), and nothing from files dated after the interval, so forward, reverse and shuffled
    backfills select the same customers.
    """
    on_day, later = _dated_sources(input_dir, start, end)
    with _open(database_url) as store:
        customer_ids = store.customers_with_events(
            _utc(start), _utc(end), delivered_in=on_day, exclude_sources=later
        )
    path = Path(work_dir) / "customers.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"customer_id": pd.Series(customer_ids, dtype="str")}).to_parquet(path, index=False)
    return {"customers_path": str(path), "n_customers": len(customer_ids)}


def _read_customer_ids(path: str | Path) -> np.ndarray:
    return pd.read_parquet(path)["customer_id"].to_numpy(dtype=object)


def update_profiles(
    database_url: str | None,
    as_of: datetime,
    customers_path: str,
    run_id: str,
    params: Mapping[str, Any] | None = None,
    input_dir: str | None = None,
) -> dict[str, Any]:
    """Recompute the listed customers' embeddings and profiles from their whole history before
    ``as_of``, with the model selected for ``as_of``, and write them in one transaction.

    With ``input_dir``, events from files dated ``as_of``'s day or later are left out (not
    delivered yet for this interval; see ``select_customers``). If a newer model is promoted for
    ``as_of`` between picking the model and writing (a weekly run finishing meanwhile), the write
    is refused (``StaleModelError``) and the batch recomputed once with the newer model; should
    that happen again, the run skips with the reason (the promotion's own recompute and the
    refresh DAG cover these customers).
    """
    as_of = _utc(as_of)
    customer_ids = _read_customer_ids(customers_path)
    _, later = _dated_sources(input_dir, as_of - timedelta(days=1), as_of)
    with _open(database_url) as store:
        version = store.model_version_for(as_of)
        if version is None:
            return {
                "model_version": None,
                "n_profiles": 0,
                "reason": f"no promoted model trained before {_iso(as_of)}: run the weekly retrain first",
            }
        if len(customer_ids) == 0:
            return {"model_version": version, "n_profiles": 0, "reason": "no customers with events"}
        events = store.read_events(end=as_of, customer_ids=list(customer_ids), exclude_sources=later)
        stale_versions: list[int] = []
        while True:
            batch = profile_customers(events, store.load_model(version), as_of, customer_ids=customer_ids)
            batch.model_version = version
            try:
                store.write_profiles(batch, require_selected_model=True)
                break
            except StaleModelError as stale:
                stale_versions.append(version)
                if stale.selected is None or len(stale_versions) > 1:
                    return {
                        "model_version": None,
                        "n_profiles": 0,
                        "stale_versions": stale_versions,
                        "reason": f"skipped: {stale}",
                    }
                log.warning("%s; recomputing with model %s", stale, stale.selected)
                version = stale.selected
    result: dict[str, Any] = {
        "model_version": version,
        "n_profiles": len(batch),
        "as_of": _iso(as_of),
        "stats": batch.stats,
        "mean_profile": batch.profiles.mean(axis=0).tolist(),
        "trait_ids": batch.trait_ids.tolist(),
    }
    if stale_versions:
        result["recomputed"] = f"model {stale_versions[0]} was replaced by {version} for this date meanwhile"
    return result


def _js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) between two distributions."""
    p = np.asarray(p, dtype=np.float64) / max(float(np.sum(p)), 1e-12)
    q = np.asarray(q, dtype=np.float64) / max(float(np.sum(q)), 1e-12)
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nonzero = a > 0
        return float(np.sum(a[nonzero] * np.log2(a[nonzero] / m[nonzero])))

    return 0.5 * kl(p) + 0.5 * kl(q)


def monitor_daily(
    database_url: str | None, as_of: datetime, run_id: str, update_result: Mapping[str, Any]
) -> dict[str, Any]:
    """OOV rate, cold-start share and profile-distribution shift of the day, stored as a run report."""
    report: dict[str, Any] = {"as_of": _iso(as_of), "run_id": run_id, **dict(update_result)}
    version = update_result.get("model_version")
    stats = update_result.get("stats") or {}
    n_profiles = int(update_result.get("n_profiles") or 0)
    if version is not None and n_profiles:
        cold = stats.get("cold_start", {})
        report["oov_rate"] = stats.get("oov_rate")
        report["cold_start_share"] = 1.0 - cold.get(COLD_START_NONE, 0) / n_profiles
        with _open(database_url) as store:
            population = store.load_model(version).traits.population_profile
            # Today's customers against the population the model was fitted on: a rising value
            # means behaviour is moving away from what the traits describe.
            report["profile_shift_js"] = _js_divergence(np.array(update_result["mean_profile"]), population)
            store.write_run_report("daily", _iso(as_of), report)
    else:
        with _open(database_url) as store:
            store.write_run_report("daily", _iso(as_of), report)
    return {key: report[key] for key in report if key not in ("mean_profile", "stats")}


# --------------------------------------------------------------------------------------- weekly


def build_corpus(
    database_url: str | None,
    trained_through: datetime,
    work_dir: str,
    params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Sessions of the training window -> corpus file (held-out sessions set aside) + new-vocab ratio.

    Takes the run's event snapshot first (``event_snapshot`` in the result): the later weekly
    reads (``train_candidate`` when tuning, ``_fit_candidate``, ``recompute_profiles``) pass it
    on, so the whole run sees the events committed when it started. The new-vocabulary ratio
    counts the tokens of the sessions written to the corpus only (what a model can learn).

    A window without events is a result, not an error: ``n_events`` 0 and ``empty_reason``, no
    corpus paths, so ``should_retrain`` skips with that reason.
    """
    config = _config(params)
    end = _utc(trained_through)
    start = end - timedelta(days=config.triggers.training_window_days)
    with _open(database_url) as store:
        snapshot = store.event_snapshot()
        events = store.read_events(start=start, end=end, snapshot=snapshot)
        active_version = store.model_version_for(end)
        active_tokens = store.load_model(active_version).tokens.tokens if active_version is not None else None
    if events.empty:
        # A data condition, not a fault: no retry can add events, so the run takes the skip
        # branch (``should_retrain``) with this reason instead of failing.
        return {
            "window_start": _iso(start),
            "trained_through": _iso(end),
            "n_events": 0,
            "empty_reason": f"no events in the training window [{_iso(start)}, {_iso(end)})",
            "active_version": active_version,
            "event_snapshot": snapshot,
        }
    corpus = _build_corpus(
        events,
        config.sessions,
        Path(work_dir) / "corpus",
        holdout_fraction=HOLDOUT_FRACTION,
        random_state=HOLDOUT_SEED,
    )
    vocabulary = corpus.vocabulary()
    # The tokens a model can learn from this corpus: those of the sessions written to it (held-out
    # sessions and ones too short to train on are left out, so no model ever knows their tokens,
    # and counting them would make the ratio positive on unchanged data).
    learnable = np.unique(np.fromfile(corpus.corpus_path, dtype=np.int64, sep=" "))
    ratio = new_vocab_ratio(vocabulary.tokens[learnable], active_tokens)
    return {
        "corpus_path": str(corpus.corpus_path),
        "vocabulary_path": str(corpus.vocabulary_path),
        "holdout_path": str(corpus.holdout_path),
        "tokens_path": str(Path(work_dir) / "candidate" / "tokens.npz"),
        "window_start": _iso(start),
        "trained_through": _iso(end),
        "n_events": len(events),
        "n_sessions": corpus.stats.n_sessions,
        "n_vocabulary": len(vocabulary.tokens),
        "new_vocab_ratio": ratio,
        "active_version": active_version,
        "event_snapshot": snapshot,
    }


def should_retrain(corpus_info: Mapping[str, Any], force_retrain: bool, threshold: float) -> tuple[bool, str]:
    """(retrain?, why). An empty window (``build_corpus``'s ``empty_reason``) never retrains,
    even when forced: there is nothing to train on."""
    if corpus_info.get("empty_reason"):
        return False, f"skip: {corpus_info['empty_reason']}"
    if force_retrain:
        return True, "force_retrain requested"
    if corpus_info.get("active_version") is None:
        return True, "no promoted model yet"
    ratio = float(corpus_info["new_vocab_ratio"])
    if ratio > threshold:
        return True, f"new-vocabulary ratio {ratio:.3f} > {threshold}"
    return False, f"new-vocabulary ratio {ratio:.3f} <= {threshold}"


def _remember(candidate_info: Mapping[str, Any], name: str, result: dict[str, Any]) -> dict[str, Any]:
    """Keep a step's result beside the candidate, so ``promote`` can store it with the model."""
    path = Path(candidate_info["tokens_path"]).parent / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return result


def _recall(candidate_info: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    path = Path(candidate_info["tokens_path"]).parent / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _corpus(corpus_info: Mapping[str, Any]):
    from traitflow.pipeline import Corpus
    from traitflow.sessions import CorpusStats

    return Corpus(
        corpus_path=Path(corpus_info["corpus_path"]),
        vocabulary_path=Path(corpus_info["vocabulary_path"]),
        holdout_path=Path(corpus_info["holdout_path"]),
        stats=CorpusStats(0, int(corpus_info["n_sessions"]), 0, 0, int(corpus_info["n_vocabulary"])),
    )


def train_candidate(
    database_url: str | None,
    corpus_info: Mapping[str, Any],
    work_dir: str,
    params: Mapping[str, Any] | None = None,
    *,
    tune: bool = False,
    tune_sample_fraction: float = 0.1,
    tune_trials: int = 8,
) -> dict[str, Any]:
    """Train Item2Vec on the corpus; the candidate's token vectors go to ``tokens_path``.

    With ``tune=True`` a small search (``traitflow.tuning``, ``tune_trials`` combinations on a
    ``tune_sample_fraction`` sample of the window's customers) picks ns_exponent, window, sample
    and epochs first; the choice and its table are stored with the model version. Off by
    default: a setting that predicts the next item better can make the traits worse, so check
    a tuned model with ``traitflow evaluate`` before relying on it.
    """
    params = dict(params or {})
    if tune:
        from traitflow.tuning import search

        start, end = _utc(corpus_info["window_start"]), _utc(corpus_info["trained_through"])
        with _open(database_url) as store:
            events = store.read_events(start=start, end=end, snapshot=corpus_info.get("event_snapshot"))
        result = search(
            events,
            _config(params),
            sample_fraction=tune_sample_fraction,
            n_trials=tune_trials,
            work_dir=Path(work_dir) / "tuning",
        )
        params.update(result.best_params)
        _remember(corpus_info, "tuning", result.to_dict())
    tokens = train_tokens(_corpus(corpus_info), _config(params))
    save_tokens(tokens, corpus_info["tokens_path"])
    return {**dict(corpus_info), "n_tokens": len(tokens), "params": params, "tuned": tune}


def quality_gate(
    database_url: str | None, candidate_info: Mapping[str, Any], params: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The candidate must not be clearly worse than the active model on held-out next-item hit rate.

    "Clearly": the paired difference (candidate - active) is below ``-quality_margin`` even at the
    upper end of its 95% interval, so a few hundred held-out pairs of sampling noise cannot
    reject a retrain of the same behaviour. Without an active model the candidate must instead
    be clearly better than the popularity baseline (``quality.compare_with_popularity``): the
    lower end of the 95% interval of the paired difference above 0.
    """
    config = _config(params if params is not None else candidate_info.get("params"))
    holdout = pd.read_parquet(candidate_info["holdout_path"])
    sessions = holdout["session"].to_numpy()
    session_tokens = holdout["token"].to_numpy(dtype=object)
    candidate = load_tokens(candidate_info["tokens_path"])
    margin = config.triggers.quality_margin
    active_version = candidate_info.get("active_version")
    if active_version is None:
        # A first model has nothing to be compared with but must still beat recommending the
        # most popular items: clearly (the whole 95% interval of the paired difference above 0),
        # or an untrained or broken model becomes the first active one.
        baseline = compare_with_popularity(candidate, sessions, session_tokens)
        passed = baseline["lower"] > 0.0
        verdict = "passes" if passed else "fails: not clearly better than popularity"
        reason = (
            f"first model: hit@10 candidate {baseline['candidate_hit_rate']:.4f}"
            f" vs popularity {baseline['popularity_hit_rate']:.4f}"
            f" (difference {baseline['difference']:+.4f}, 95% interval [{baseline['lower']:+.4f},"
            f" {baseline['upper']:+.4f}], {baseline['n_pairs']} held-out pairs): {verdict}"
        )
        return _remember(
            candidate_info,
            "quality_gate",
            {**baseline, "baseline": "popularity", "margin": margin, "passed": passed, "reason": reason},
        )
    with _open(database_url) as store:
        active = store.load_model(active_version).tokens
    comparison = compare_hit_rates(candidate, active, sessions, session_tokens)
    upper = comparison["difference"] + 1.96 * comparison["standard_error"]
    passed = upper >= -margin
    verdict = "passes" if passed else "fails: clearly worse than the active model"
    reason = (
        f"hit@10 candidate {comparison['candidate_hit_rate']:.4f}"
        f" vs active {comparison['active_hit_rate']:.4f}"
        f" (difference {comparison['difference']:+.4f} +- {1.96 * comparison['standard_error']:.4f},"
        f" margin {margin}, {comparison['n_pairs']} held-out pairs): {verdict}"
    )
    return _remember(
        candidate_info, "quality_gate", {**comparison, "margin": margin, "passed": passed, "reason": reason}
    )


def reject_candidate(
    database_url: str | None, candidate_info: Mapping[str, Any], gate_result: Mapping[str, Any]
) -> dict[str, Any]:
    """Store the candidate as a ``rejected`` model version with its gate result; the active model
    stays as it is.

    The candidate has token vectors only, so its traits are fitted (fresh NMF, as ``refit_traits``)
    to make it a complete, inspectable version; ``metrics["quality_gate"]`` holds the gate result.
    Idempotent: the run key is a fingerprint of the candidate's token file, so a retried task
    returns the version the first attempt stored. Data too thin for the trait fit leaves no row
    (``model_version`` None, ``not_saved`` says why): the gate's decision stands either way.
    """
    reason = str(gate_result.get("reason", "quality gate failed"))
    result: dict[str, Any] = {"promoted": False, "reason": reason}
    try:
        fitted = _fit_candidate(database_url, candidate_info, None, refit=True)
    except ThinDataError as error:
        return {**result, "model_version": None, "not_saved": str(error)}
    model = TraitflowModel.load(fitted["model_dir"])
    model.metrics["quality_gate"] = {key: value for key, value in gate_result.items() if key != "branch"}
    digest = hashlib.sha256(Path(candidate_info["tokens_path"]).read_bytes()).hexdigest()
    key = f"rejected-sha256:{digest}"
    with _open(database_url) as store:
        version = store.record_rejected(model, reason, run_key=key)
    return {**result, "model_version": version, "run_key": key}


def measure_drift(database_url: str | None, candidate_info: Mapping[str, Any]) -> dict[str, Any]:
    """Drift of the candidate from the active model after Procrustes alignment."""
    active_version = candidate_info.get("active_version")
    if active_version is None:
        return _remember(candidate_info, "drift", {"measured": False, "reason": "no active model"})
    with _open(database_url) as store:
        active = store.load_model(active_version).tokens
    report = _measure_drift(load_tokens(candidate_info["tokens_path"]), active)
    return _remember(candidate_info, "drift", {"measured": True, **report.to_dict()})


def should_refit(drift_info: Mapping[str, Any], threshold: float) -> tuple[bool, str]:
    if not drift_info.get("measured"):
        return True, f"refit: {drift_info.get('reason', 'drift not measured')}"
    drift = float(drift_info["weighted_mean_drift"])
    if drift > threshold:
        return True, f"weighted mean drift {drift:.3f} > {threshold}"
    return False, f"weighted mean drift {drift:.3f} <= {threshold}: keep the trait components"


def _fit_candidate(
    database_url: str | None, candidate_info: Mapping[str, Any], params: Mapping[str, Any] | None, refit: bool
) -> dict[str, Any]:
    # The parameters the candidate was trained with (tuned ones included) are the model's.
    config = _config(candidate_info.get("params", params))
    tokens = load_tokens(candidate_info["tokens_path"])
    start, end = _utc(candidate_info["window_start"]), _utc(candidate_info["trained_through"])
    previous = None
    with _open(database_url) as store:
        events = store.read_events(start=start, end=end, snapshot=candidate_info.get("event_snapshot"))
        if candidate_info.get("active_version") is not None:
            previous = store.load_model(candidate_info["active_version"])
            tokens = align_tokens(tokens, previous.tokens)
        # Names stored at ingestion, so labels read as products rather than their ids.
        names = store.product_names(np.unique(np.asarray(tokens.product_ids, dtype=object)))
    if previous is None and not refit:
        raise ValueError("cannot keep trait components: there is no active model")
    model = fit_model(
        events, tokens, config, end, previous=previous, refit_traits=refit, product_names=names
    )
    # Stored with the model: which committed events it was built from.
    model.metrics["event_snapshot"] = candidate_info.get("event_snapshot")
    model_dir = Path(candidate_info["tokens_path"]).parent / "model"
    model.save(model_dir)
    return {
        **dict(candidate_info),
        "model_dir": str(model_dir),
        "refit": refit,
        "trait_match": model.trait_match,
    }


def refit_traits(
    database_url: str | None, candidate_info: Mapping[str, Any], params: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Fit NMF anew; traits matching the active model's keep their ids."""
    return _fit_candidate(database_url, candidate_info, params, refit=True)


def keep_traits(database_url: str | None, candidate_info: Mapping[str, Any]) -> dict[str, Any]:
    """Keep the active model's components (the candidate's space is aligned to it)."""
    return _fit_candidate(database_url, candidate_info, None, refit=False)


def recompute_profiles(
    database_url: str | None, candidate_info: Mapping[str, Any], as_of: datetime, work_dir: str
) -> dict[str, Any]:
    """Profiles of every customer as of ``as_of`` under the candidate, written to a file.

    Reads the events of the run's snapshot (``build_corpus``), like the model's fit.
    """
    model = TraitflowModel.load(candidate_info["model_dir"])
    as_of = _utc(as_of)
    with _open(database_url) as store:
        events = store.read_events(end=as_of, snapshot=candidate_info.get("event_snapshot"))
    batch = profile_customers(events, model, as_of)
    path = batch.save(Path(work_dir) / "profiles.npz")
    return {"profiles_path": str(path), "n_profiles": len(batch), "as_of": _iso(as_of), "stats": batch.stats}


def candidate_key(candidate_info: Mapping[str, Any], profiles_info: Mapping[str, Any]) -> str:
    """A fingerprint of what ``promote`` publishes: SHA-256 over the candidate's model files (by
    relative path) and its profiles file. A retried task reads the same files, hence the same key."""
    digest = hashlib.sha256()
    model_dir = Path(candidate_info["model_dir"])
    files = [(f"model/{p.relative_to(model_dir).as_posix()}", p) for p in sorted(model_dir.rglob("*"))]
    files = [(name, path) for name, path in files if path.is_file()]
    files.append(("profiles", Path(profiles_info["profiles_path"])))
    for name, path in files:
        digest.update(name.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return f"candidate-sha256:{digest.hexdigest()}"


def promote(
    database_url: str | None, candidate_info: Mapping[str, Any], profiles_info: Mapping[str, Any]
) -> dict[str, Any]:
    """In one transaction: save the candidate, write its profiles and make it the active model.

    Idempotent: the candidate's fingerprint (``candidate_key``) is stored with the version, so a
    retry of this task after its COMMIT publishes nothing again and returns the same version.
    """
    model = TraitflowModel.load(candidate_info["model_dir"])
    batch = ProfileBatch.load(profiles_info["profiles_path"])
    model.metrics["quality_gate"] = _recall(candidate_info, "quality_gate")
    tuning = _recall(candidate_info, "tuning")
    if tuning is not None:
        model.metrics["tuning"] = {
            key: tuning[key] for key in ("best_params", "best", "gensim_defaults", "sample")
        }
    key = candidate_key(candidate_info, profiles_info)
    with _open(database_url) as store:
        version = store.publish(model, batch, drift=_recall(candidate_info, "drift"), run_key=key)
    return {"model_version": version, "n_profiles": len(batch), "promoted": True, "run_key": key}


def weekly_report(database_url: str | None, run_id: str, results: Mapping[str, Any]) -> dict[str, Any]:
    """Store what the weekly run decided and why (written on every path through the DAG)."""
    report = {"run_id": run_id, **{key: value for key, value in results.items() if value is not None}}
    key = str(results.get("trained_through") or run_id)
    with _open(database_url) as store:
        store.write_run_report("weekly", key, report)
    return report


def refresh_all_profiles(database_url: str | None, work_dir: str, run_id: str) -> dict[str, Any]:
    """After a promotion: recompute every customer's profile as of the newest profile date, with
    the model selected for that date, so current profiles never mix models."""
    with _open(database_url) as store:
        as_of = store.latest_profile_as_of()
        if as_of is None:
            return {"n_profiles": 0, "reason": "no profiles yet"}
        version = store.model_version_for(as_of)
        if version is None:
            return {"n_profiles": 0, "reason": f"no model for {_iso(as_of)}"}
        behind = store.connection.execute(
            "SELECT count(*) FROM customer_profiles WHERE as_of <> %s OR model_version <> %s",
            (as_of, version),
        ).fetchone()[0]
        if behind == 0:
            # The weekly run wrote every profile under this model as of this date already.
            return {
                "n_profiles": 0,
                "model_version": version,
                "as_of": _iso(as_of),
                "reason": "already current",
            }
        model = store.load_model(version)
        events = store.read_events(end=as_of)
        batch = profile_customers(events, model, as_of)
        batch.model_version = version
        try:
            store.write_profiles(batch, require_selected_model=True)
        except StaleModelError as stale:
            # A newer promotion wrote its own profiles and triggers its own refresh run.
            skipped = f"skipped: {stale}"
            return {"n_profiles": 0, "model_version": None, "as_of": _iso(as_of), "reason": skipped}
    return {"n_profiles": len(batch), "model_version": version, "as_of": _iso(as_of)}
