"""``traitflow`` command line: run the pipeline on files without Airflow, and query the store."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from traitflow.config import ConfigError, PipelineConfig, data_dir

if TYPE_CHECKING:
    from traitflow.model import TraitflowModel

log = logging.getLogger("traitflow")


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def parse_utc(value: str) -> datetime:
    """An ISO date or datetime; naive values are taken as UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date/datetime: {value!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model parameters (defaults from traitflow.config)")
    group.add_argument("--k", type=_positive_int, help="number of traits (default 16)")
    group.add_argument("--vector-size", type=_positive_int, help="embedding size (default 64)")
    group.add_argument("--epochs", type=_positive_int, help="Word2Vec epochs (default 10)")
    group.add_argument("--window", type=_positive_int, help="Word2Vec window (default 5)")
    group.add_argument("--ns-exponent", type=float, help="negative sampling exponent (default 0.75)")
    group.add_argument("--seed", type=int, help="Word2Vec seed (default 42)")
    group.add_argument("--workers", type=_positive_int, help="Word2Vec worker threads (default 2)")
    group.add_argument("--session-timeout-minutes", type=float, help="inactivity timeout (default 30)")


TRIGGER_KEYS = ("new_vocab_threshold", "drift_threshold", "quality_margin", "training_window_days")


def _add_trigger_flags(parser: argparse.ArgumentParser) -> None:
    defaults = PipelineConfig().triggers
    group = parser.add_argument_group("retrain thresholds (defaults from traitflow.config)")
    group.add_argument(
        "--new-vocab-threshold",
        type=float,
        help=f"retrain when more than this share of tokens is new (default {defaults.new_vocab_threshold})",
    )
    group.add_argument(
        "--drift-threshold",
        type=float,
        help=f"refit traits above this aligned drift (default {defaults.drift_threshold})",
    )
    group.add_argument(
        "--quality-margin",
        type=float,
        help=f"reject a candidate this much worse in hit rate (default {defaults.quality_margin})",
    )
    group.add_argument(
        "--training-window-days",
        type=_positive_int,
        help=f"days of events before --as-of to train on (default {defaults.training_window_days})",
    )


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    flat = {
        key: getattr(args, key)
        for key in (
            "k",
            "vector_size",
            "epochs",
            "window",
            "ns_exponent",
            "seed",
            "workers",
            "session_timeout_minutes",
            *TRIGGER_KEYS,
        )
        if getattr(args, key, None) is not None
    }
    return PipelineConfig.from_mapping(flat)


def _load_events(
    paths: Sequence[str],
    mapping: str,
    max_reject_share: float | None = None,
    names: dict[str, str] | None = None,
):
    """The valid events of ``paths``; with ``names``, fills it with product_id -> name (the file's
    most frequent name; a later file overrides an earlier one, as ingestion does)."""
    import pandas as pd

    from traitflow.events import DEFAULT_MAX_REJECT_SHARE, read_events

    share = DEFAULT_MAX_REJECT_SHARE if max_reject_share is None else max_reject_share
    frames, n_rejected = [], 0
    for path in paths:
        started = time.perf_counter()
        result = read_events(path, mapping, max_reject_share=share)
        log.info(
            "read %s: %d events, %d rejected (%.1fs)",
            path,
            len(result.events),
            len(result.rejects),
            time.perf_counter() - started,
        )
        if len(result.rejects):
            reasons = result.rejects["reason"].value_counts().to_dict()
            log.warning("rejected rows in %s by reason: %s", path, reasons)
        frames.append(result.events)
        n_rejected += len(result.rejects)
        if names is not None:
            named = result.product_names()
            names.update(zip(named["product_id"].astype(str), named["product_name"].astype(str), strict=True))
    events = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if events.empty:
        raise CliError(f"no valid events in {', '.join(paths)} ({n_rejected} rejected)")
    return events


def cmd_sample(args: argparse.Namespace) -> None:
    from traitflow.synthetic import SyntheticSpec, write_sample

    spec = SyntheticSpec(
        n_customers=args.customers,
        n_products=args.products,
        n_events=args.events,
        n_segments=args.segments,
        days=args.days,
        seed=args.seed,
    )
    paths = write_sample(Path(args.out), spec, days_per_file=1 if args.per_day else None)
    print(f"wrote {len(paths)} files to {args.out}")


def cmd_train(args: argparse.Namespace) -> None:
    from traitflow.pipeline import train

    config = config_from_args(args)
    names: dict[str, str] = {}
    events = _load_events(args.events, args.mapping, args.max_reject_share, names)
    trained_through = (
        args.trained_through or (events["event_time"].max() + _one_microsecond()).to_pydatetime()
    )
    started = time.perf_counter()
    model = train(events, config, trained_through, Path(args.out) / "work", product_names=names)
    # The names of the traits' top products travel with the model folder (for `inspect`).
    top = {p for products in model.traits.top_products for p in products}
    model.metrics["product_names"] = {p: names[p] for p in sorted(top) if p in names}
    model.save(Path(args.out))
    log.info("trained in %.1fs", time.perf_counter() - started)
    _print_traits(model)
    print(f"model saved to {args.out}")


def _one_microsecond():
    import pandas as pd

    return pd.Timedelta(microseconds=1)


def cmd_profile(args: argparse.Namespace) -> None:
    import pandas as pd

    from traitflow.model import TraitflowModel
    from traitflow.pipeline import profile_customers

    model = TraitflowModel.load(args.model)
    events = _load_events(args.events, args.mapping, args.max_reject_share)
    as_of = args.as_of or (events["event_time"].max() + _one_microsecond()).to_pydatetime()
    batch = profile_customers(events, model, as_of)
    frame = pd.DataFrame(batch.profiles, columns=[f"trait_{i}" for i in batch.trait_ids])
    frame.insert(0, "customer_id", batch.customer_ids)
    frame.insert(1, "n_events", batch.n_events)
    frame.insert(2, "cold_start", batch.cold_start)
    out = Path(args.out)
    frame.to_parquet(out, index=False) if out.suffix == ".parquet" else frame.to_csv(out, index=False)
    print(f"{len(frame)} profiles as of {as_of.isoformat()} written to {out}; stats: {batch.stats}")


def cmd_inspect(args: argparse.Namespace) -> None:
    from traitflow.model import TraitflowModel

    model = TraitflowModel.load(args.model)
    if args.json:
        from traitflow.store.cli import print_json

        print_json(model_traits_json(model))
        return
    _print_traits(model)


def model_traits_json(model: TraitflowModel) -> dict[str, Any]:
    """``{"traits": [{trait_id, position, label, top_products, top_categories, top_product_names,
    size, population_share}], ...}`` for a saved model: the shape ``traitflow traits --json`` prints
    for the store's model. ``size`` counts the training customers whose dominant trait it is
    (None for a model saved without that count); ``population_share`` is the trait's weight in
    the mean training profile; ``top_product_names`` holds None where the model folder has no
    name (``train`` keeps the names its input file gave the top products)."""
    traits = model.traits
    sizes = model.metrics.get("trait_sizes") or [None] * traits.n_traits
    names = model.metrics.get("product_names") or {}
    return {
        "model_version": model.version,
        "trained_through": model.trained_through,
        "n_tokens": len(model.tokens),
        "vector_size": model.tokens.vector_size,
        "size_counts": "training customers by dominant trait",
        "traits": [
            {
                "trait_id": int(trait_id),
                "position": position,
                "label": label,
                "top_products": list(products),
                "top_categories": list(categories),
                "top_product_names": [names.get(p) for p in products],
                "size": size,
                "population_share": float(share),
            }
            for position, (trait_id, label, products, categories, size, share) in enumerate(
                zip(
                    traits.trait_ids,
                    traits.labels,
                    traits.top_products,
                    traits.top_categories,
                    sizes,
                    traits.population_profile,
                    strict=True,
                )
            )
        ],
    }


def _print_traits(model) -> None:
    print(f"{len(model.tokens)} tokens x {model.tokens.vector_size} dims, {model.traits.n_traits} traits")
    for trait_id, label, products in zip(
        model.traits.trait_ids, model.traits.labels, model.traits.top_products, strict=True
    ):
        print(f"  trait {trait_id:>3}  {label:<40}  top products: {', '.join(products[:3])}")


def _int_list(value: str) -> tuple[int, ...]:
    try:
        numbers = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {value!r}") from None
    if not numbers or min(numbers) < 1:
        raise argparse.ArgumentTypeError(f"need integers >= 1, got {value!r}")
    return numbers


def _fraction(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0.0 < number < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {number}")
    return number


def _quiet_gensim(args: argparse.Namespace) -> None:
    """Commands that train many models keep per-epoch progress lines out of the report."""
    if not args.verbose:
        logging.getLogger("gensim").setLevel(logging.WARNING)
        logging.getLogger("traitflow.item2vec").setLevel(logging.WARNING)


def cmd_evaluate(args: argparse.Namespace) -> None:
    import pandas as pd

    from traitflow.evaluate import evaluate, format_report, write_json

    _quiet_gensim(args)
    config = config_from_args(args)
    events = _load_events(args.events, args.mapping, args.max_reject_share)
    segments = None
    if args.segments:
        if not Path(args.segments).is_file():
            raise CliError(f"segments file not found: {args.segments}")
        segments = pd.read_csv(args.segments, dtype={"customer_id": str})
    report = evaluate(
        events,
        config,
        split_at=args.split_date,
        split_fraction=args.split_fraction,
        segments=segments,
        k_range=() if args.no_k_selection else args.k_range,
        stability=not args.no_stability,
        min_customers=args.min_customers,
        work_dir=Path(args.work_dir) if args.work_dir else None,
        target=args.target,
        n_resamples=args.bootstrap,
    )
    print(format_report(report))
    if args.json_out:
        print(f"report written to {write_json(report, args.json_out)}")


def cmd_tune(args: argparse.Namespace) -> None:
    import json

    from traitflow.tuning import format_result, search

    _quiet_gensim(args)
    config = config_from_args(args)
    events = _load_events(args.events, args.mapping, args.max_reject_share)
    grid = None
    if args.grid:
        try:
            grid = json.loads(args.grid)
        except json.JSONDecodeError as error:
            raise CliError(f"--grid must be JSON like '{{\"window\": [2, 5]}}': {error}") from None
        if not isinstance(grid, dict) or not all(isinstance(v, list) for v in grid.values()):
            raise CliError("--grid must be a JSON object of parameter name -> list of values")
    result = search(
        events,
        config,
        grid=grid,
        sample_fraction=args.sample_fraction,
        n_trials=args.n_trials,
        random_state=args.random_state,
        workers=args.tune_workers,
    )
    print(format_result(result))
    if args.json_out:
        out = Path(args.json_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result.to_dict(), indent=2))
        print(f"results written to {out}")


@contextlib.contextmanager
def _db_schema(schema: str | None) -> Iterator[None]:
    """The jobs open their own Store from ``TRAITFLOW_DB_SCHEMA``: set it for the command's duration."""
    if schema is None:
        yield
        return
    before = os.environ.get("TRAITFLOW_DB_SCHEMA")
    os.environ["TRAITFLOW_DB_SCHEMA"] = schema
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TRAITFLOW_DB_SCHEMA", None)
        else:
            os.environ["TRAITFLOW_DB_SCHEMA"] = before


def _run_id(kind: str) -> str:
    return f"cli-{kind}-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def _as_of(args: argparse.Namespace, command: str) -> datetime:
    """``--as-of``, else just after the newest stored event (printed, so the choice is visible)."""
    from traitflow.chains import just_after, newest_event_time

    if args.as_of is not None:
        print(f"{command}: as of {args.as_of.isoformat()}")
        return args.as_of
    newest = newest_event_time(args.database_url)
    if newest is None:
        raise CliError("no events stored: run `traitflow ingest FILE --mapping M` first")
    as_of = just_after(newest)
    print(
        f"{command}: as of {as_of.isoformat()} -- just after the newest stored event "
        f"({newest.isoformat()}); pass --as-of to choose"
    )
    return as_of


STEP_NAMES = {
    "check_new_vocab": "new-vocabulary check",
    "quality_gate": "quality gate",
    "check_drift": "drift",
}


def cmd_retrain(args: argparse.Namespace) -> int:
    from traitflow.chains import run_weekly_chain, run_work_dir
    from traitflow.runs import TuningRequest

    params = config_from_args(args).to_flat()
    with _db_schema(args.schema):
        as_of = _as_of(args, "retrain")
        run_id = _run_id("retrain")
        work_dir = run_work_dir("cli_retrain", run_id)
        print(f"work dir: {work_dir}")
        outcome = run_weekly_chain(
            args.database_url,
            as_of,
            work_dir,
            params,
            args.force,
            run_id=run_id,
            tuning=TuningRequest(args.tune_sample_fraction, args.tune_trials) if args.tune else None,
            on_decision=lambda d: print(f"{STEP_NAMES.get(d.step, d.step)}: {d.branch} -- {d.reason}"),
        )
    active = f"model version {outcome.active_version}" if outcome.active_version else "no model"
    if outcome.status == "promoted":
        print(
            f"result: promoted model version {outcome.model_version} "
            f"({outcome.n_profiles} profiles as of {as_of.isoformat()}) in {outcome.seconds:.1f}s"
        )
    elif outcome.status == "skipped" and outcome.report.get("build_corpus", {}).get("empty_reason"):
        print(f"result: skipped, {outcome.report['build_corpus']['empty_reason']} -- {active} stays active")
    elif outcome.status == "skipped":
        print(f"result: skipped, no retrain needed -- {active} stays active (--force retrains anyway)")
    else:
        rejected = outcome.report.get("reject_candidate", {}).get("model_version")
        stored = f" (stored as rejected model version {rejected})" if rejected else ""
        print(f"result: candidate rejected by the quality gate{stored} -- {active} stays active")
    print(f"report stored: traitflow reports --kind weekly (run {outcome.run_id})")
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    from traitflow.chains import run_daily_update, run_work_dir

    with _db_schema(args.schema):
        as_of = _as_of(args, "update")
        since = args.since if args.since is not None else as_of - timedelta(days=1)
        run_id = _run_id("update")
        outcome = run_daily_update(
            args.database_url, since, as_of, run_work_dir("cli_update", run_id), run_id=run_id
        )
    print(f"customers with events in [{since.isoformat()}, {as_of.isoformat()}): {outcome.n_customers}")
    if outcome.model_version is None:
        raise CliError(f"no profiles updated: {outcome.reason}")
    print(f"profiles written: {outcome.n_profiles} with model version {outcome.model_version}")
    report = outcome.report
    if outcome.n_profiles:
        print(
            f"oov rate {report['oov_rate']:.3f}, cold-start share {report['cold_start_share']:.3f}, "
            f"profile shift from the training population (JS) {report['profile_shift_js']:.4f}"
        )
    elif outcome.reason:
        print(outcome.reason)
    with _db_schema(args.schema):
        _print_stale(args.database_url, since, as_of)
    return 0


def _print_stale(database_url: str | None, since: datetime, as_of: datetime) -> None:
    """An update covers customers with events in [since, as_of) only: say when earlier events are
    in no current profile yet (e.g. the days between a model's training end and the update) and
    which ``--since`` covers them."""
    from traitflow.store import Store

    with Store(database_url) as store:
        stale = store.stale_profiles(since)
    if stale.n_customers == 0 or stale.earliest is None:
        return
    first_day = stale.earliest.astimezone(UTC).date().isoformat()
    print(
        f"note: {stale.n_customers} customers have events before {since.isoformat()} that no current "
        f"profile includes; to update them too: traitflow update --since {first_day} "
        f"--as-of {as_of.isoformat()}"
    )


def build_parser() -> argparse.ArgumentParser:
    from traitflow.store.cli import add_commands, add_reject_share_flag, database_flags

    parser = argparse.ArgumentParser(prog="traitflow", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sample = sub.add_parser("sample", help="generate synthetic events with planted segments")
    sample.add_argument("--out", default=str(data_dir() / "sample"), help="output folder")
    sample.add_argument("--customers", type=_positive_int, default=1000)
    sample.add_argument("--products", type=_positive_int, default=500)
    sample.add_argument("--events", type=_positive_int, default=50_000)
    sample.add_argument("--segments", type=_positive_int, default=6)
    sample.add_argument("--days", type=_positive_int, default=30)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--per-day", action="store_true", help="one events file per day")
    sample.set_defaults(func=cmd_sample)

    train = sub.add_parser("train", help="train a model on event files and save it to a folder")
    train.add_argument("events", nargs="+", help="CSV/Parquet event files")
    train.add_argument("--mapping", default="canonical", help="preset name or mapping file")
    train.add_argument("--out", required=True, help="model folder")
    train.add_argument("--trained-through", type=parse_utc, help="use events before this instant")
    add_reject_share_flag(train)
    _add_config_flags(train)
    train.set_defaults(func=cmd_train)

    profile = sub.add_parser("profile", help="profile customers with a saved model")
    profile.add_argument("events", nargs="+")
    profile.add_argument("--model", required=True, help="model folder written by 'train'")
    profile.add_argument("--mapping", default="canonical")
    profile.add_argument("--as-of", type=parse_utc, help="use events before this instant")
    profile.add_argument("--out", required=True, help="output .csv or .parquet")
    add_reject_share_flag(profile)
    profile.set_defaults(func=cmd_profile)

    inspect = sub.add_parser("inspect", help="show a saved model's traits")
    inspect.add_argument("model", help="model folder")
    inspect.add_argument("--json", action="store_true", help="print the traits as JSON")
    inspect.set_defaults(func=cmd_inspect)

    evaluate = sub.add_parser(
        "evaluate",
        help="time-split hold-out evaluation: category hit rate/NDCG vs baselines, stability, choice of k",
    )
    evaluate.add_argument("events", nargs="+", help="CSV/Parquet event files")
    evaluate.add_argument("--mapping", default="canonical", help="preset name or mapping file")
    split = evaluate.add_mutually_exclusive_group()
    split.add_argument("--split-date", type=parse_utc, help="train on events before this instant")
    split.add_argument(
        "--split-fraction",
        type=_fraction,
        default=0.8,
        help="split where this share of the events has happened (default 0.8)",
    )
    add_reject_share_flag(evaluate)
    evaluate.add_argument("--segments", help="CSV with customer_id,segment (synthetic ground truth)")
    evaluate.add_argument(
        "--k-range", type=_int_list, default=(4, 8, 16, 24), help="k values to compare (default 4,8,16,24)"
    )
    evaluate.add_argument("--no-k-selection", action="store_true", help="skip the k comparison")
    evaluate.add_argument("--no-stability", action="store_true", help="skip the retrain stability check")
    evaluate.add_argument(
        "--min-customers",
        type=_positive_int,
        default=20,
        help="fewest customers with history and purchases (or carts) after the split (default 20)",
    )
    evaluate.add_argument(
        "--target",
        choices=("purchase", "cart", "any"),
        help="what is predicted after the split: purchases (default; carts count too when too few "
        "customers purchase), carts, or any action",
    )
    evaluate.add_argument(
        "--bootstrap", type=int, default=1000, help="bootstrap resamples of customers for the 95%% intervals"
    )
    evaluate.add_argument("--json-out", help="also write the report as JSON to this file")
    evaluate.add_argument("--work-dir", help="keep corpora and models here (default: a temporary folder)")
    _add_config_flags(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)

    tune = sub.add_parser("tune", help="search Item2Vec parameters on held-out next-item hit rate")
    tune.add_argument("events", nargs="+", help="CSV/Parquet event files")
    tune.add_argument("--mapping", default="canonical", help="preset name or mapping file")
    add_reject_share_flag(tune)
    tune.add_argument(
        "--sample-fraction", type=float, default=0.1, help="share of customers to tune on (default 0.1)"
    )
    tune.add_argument(
        "--grid",
        help="JSON object of flat config keys -> values (default: ns_exponent, window, sample, epochs)",
    )
    tune.add_argument("--n-trials", type=_positive_int, help="random subset of the grid (default: all)")
    tune.add_argument("--random-state", type=int, default=0, help="sample, hold-out and subset seed")
    tune.add_argument(
        "--tune-workers", type=_positive_int, default=1, help="Word2Vec threads per trial (1: reproducible)"
    )
    tune.add_argument("--json-out", help="also write best params and the full table as JSON")
    _add_config_flags(tune)
    tune.set_defaults(func=cmd_tune)

    db_flags = database_flags()
    retrain = sub.add_parser(
        "retrain",
        parents=[db_flags],
        help="the weekly retrain on the stored events (what the traitflow_weekly_retrain DAG runs)",
        description=(
            "corpus -> new-vocabulary check -> candidate -> quality gate -> aligned drift -> refit or "
            "keep traits -> profiles -> promotion -> report, with the weekly DAG's code; each decision "
            "is printed with its reason. Exit 0 whenever the chain completes (promoted, skipped or "
            "rejected)."
        ),
    )
    retrain.add_argument(
        "--as-of",
        type=parse_utc,
        help="train on events before this instant (default: just after the newest stored event)",
    )
    retrain.add_argument(
        "--force", action="store_true", help="train a candidate even if the vocabulary has not moved"
    )
    retrain.add_argument("--tune", action="store_true", help="tune Item2Vec first (traitflow.tuning)")
    retrain.add_argument("--tune-trials", type=_positive_int, default=8, help="settings tried (default 8)")
    retrain.add_argument(
        "--tune-sample-fraction",
        type=_fraction,
        default=0.1,
        help="share of customers tuned on (default 0.1)",
    )
    _add_config_flags(retrain)
    _add_trigger_flags(retrain)
    retrain.set_defaults(func=cmd_retrain)

    update = sub.add_parser(
        "update",
        parents=[db_flags],
        help="the daily profile update on the stored events (what the traitflow_daily DAG runs)",
        description=(
            "Recompute the profiles of customers with events in [--since, --as-of) from their whole "
            "history, with the newest model trained through --as-of, and store a monitoring report."
        ),
    )
    update.add_argument(
        "--as-of",
        type=parse_utc,
        help="profile as of this instant (default: just after the newest stored event)",
    )
    update.add_argument(
        "--since",
        type=parse_utc,
        help=(
            "customers with events from this instant (default: --as-of - 1 day, the daily run); "
            "after a retrain, pass the model's training end to profile everyone with events since"
        ),
    )
    update.set_defaults(func=cmd_update)

    add_commands(sub, names={"profile": "customer"})
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # gensim logs its lifecycle (vocabulary scans, every epoch's progress, the model's repr) at
    # INFO; the pipeline's own progress lines say what a user needs. -v shows gensim's too.
    logging.getLogger("gensim").setLevel(logging.NOTSET if args.verbose else logging.WARNING)
    logging.getLogger("traitflow.item2vec").setLevel(logging.NOTSET)  # tune/evaluate raise it
    func: Callable[[argparse.Namespace], int | None] = args.func
    import psycopg

    from traitflow.store.errors import StoreError

    try:
        status = func(args)
    except (CliError, ConfigError, FileNotFoundError, ValueError, StoreError, psycopg.Error) as error:
        if args.verbose:
            raise
        from traitflow.redaction import redact, secrets_of

        secrets = secrets_of(getattr(args, "database_url", None))
        prefix = "database: " if isinstance(error, psycopg.Error) else ""
        print(f"traitflow: error: {prefix}{redact(str(error).strip(), secrets)}", file=sys.stderr)
        return 2
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
