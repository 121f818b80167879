"""``traitflow`` command line: run the pipeline on files without Airflow, and query the store."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from traitflow.config import ConfigError, PipelineConfig, data_dir

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
        )
        if getattr(args, key, None) is not None
    }
    return PipelineConfig.from_mapping(flat)


def _load_events(paths: Sequence[str], mapping: str):
    import pandas as pd

    from traitflow.events import read_events

    frames, n_rejected = [], 0
    for path in paths:
        started = time.perf_counter()
        result = read_events(path, mapping)
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
    events = _load_events(args.events, args.mapping)
    trained_through = (
        args.trained_through or (events["event_time"].max() + _one_microsecond()).to_pydatetime()
    )
    started = time.perf_counter()
    model = train(events, config, trained_through, Path(args.out) / "work")
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
    events = _load_events(args.events, args.mapping)
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

    _print_traits(TraitflowModel.load(args.model))


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
    """Commands that train many models keep gensim's per-epoch INFO lines out of the report."""
    if not args.verbose:
        logging.getLogger("gensim").setLevel(logging.WARNING)


def cmd_evaluate(args: argparse.Namespace) -> None:
    import pandas as pd

    from traitflow.evaluate import evaluate, format_report, write_json

    _quiet_gensim(args)
    config = config_from_args(args)
    events = _load_events(args.events, args.mapping)
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
    events = _load_events(args.events, args.mapping)
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


def build_parser() -> argparse.ArgumentParser:
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
    _add_config_flags(train)
    train.set_defaults(func=cmd_train)

    profile = sub.add_parser("profile", help="profile customers with a saved model")
    profile.add_argument("events", nargs="+")
    profile.add_argument("--model", required=True, help="model folder written by 'train'")
    profile.add_argument("--mapping", default="canonical")
    profile.add_argument("--as-of", type=parse_utc, help="use events before this instant")
    profile.add_argument("--out", required=True, help="output .csv or .parquet")
    profile.set_defaults(func=cmd_profile)

    inspect = sub.add_parser("inspect", help="show a saved model's traits")
    inspect.add_argument("model", help="model folder")
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

    from traitflow.store.cli import add_commands

    add_commands(sub, names={"profile": "customer"})
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    func: Callable[[argparse.Namespace], int | None] = args.func
    try:
        status = func(args)
    except (CliError, ConfigError, FileNotFoundError, ValueError) as error:
        if args.verbose:
            raise
        print(f"traitflow: error: {error}", file=sys.stderr)
        return 2
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
