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
