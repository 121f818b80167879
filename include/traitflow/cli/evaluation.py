"""Commands that measure models on held-out events: ``evaluate`` and ``tune``."""

from __future__ import annotations

import argparse
from pathlib import Path

from traitflow.cli.common import (
    CliError,
    add_config_flags,
    bounded_int,
    config_from_args,
    fraction,
    int_list,
    load_events,
    non_negative,
    parse_utc,
    quiet_gensim,
)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``evaluate`` and ``tune``."""
    from traitflow.store.cli import add_reject_share_flag

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
        type=fraction,
        default=0.8,
        help="split where this share of the events has happened (default 0.8)",
    )
    add_reject_share_flag(evaluate)
    evaluate.add_argument("--segments", help="CSV with customer_id,segment (synthetic ground truth)")
    evaluate.add_argument(
        "--k-range", type=int_list, default=(4, 8, 16, 24), help="k values to compare (default 4,8,16,24)"
    )
    evaluate.add_argument("--no-k-selection", action="store_true", help="skip the k comparison")
    evaluate.add_argument("--no-stability", action="store_true", help="skip the retrain stability check")
    evaluate.add_argument(
        "--min-customers",
        type=bounded_int(1),
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
        "--similarity-weight",
        type=non_negative,
        help="weight of the Item2Vec similarity that tilts the profile's product ranking "
        "(default: traitflow.ranking.SIMILARITY_WEIGHT; 0 ranks by the traits' mixture alone)",
    )
    evaluate.add_argument(
        "--bootstrap",
        type=bounded_int(1),
        default=1000,
        help="bootstrap resamples of customers for the 95%% intervals",
    )
    evaluate.add_argument("--json-out", help="also write the report as JSON to this file")
    evaluate.add_argument("--work-dir", help="keep corpora and models here (default: a temporary folder)")
    add_config_flags(evaluate)
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
    tune.add_argument("--n-trials", type=bounded_int(1), help="random subset of the grid (default: all)")
    tune.add_argument("--random-state", type=int, default=0, help="sample, hold-out and subset seed")
    tune.add_argument(
        "--tune-workers", type=bounded_int(1), default=1, help="Word2Vec threads per trial (1: reproducible)"
    )
    tune.add_argument("--json-out", help="also write best params and the full table as JSON")
    add_config_flags(tune)
    tune.set_defaults(func=cmd_tune)


def cmd_evaluate(args: argparse.Namespace) -> None:
    import pandas as pd

    from traitflow.evaluate import evaluate, format_report, write_json
    from traitflow.ranking import SIMILARITY_WEIGHT

    quiet_gensim(args)
    config = config_from_args(args)
    names: dict[str, str] = {}
    events = load_events(args.events, args.mapping, args.max_reject_share, names=names)
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
        product_names=names,
        similarity_weight=SIMILARITY_WEIGHT if args.similarity_weight is None else args.similarity_weight,
    )
    print(format_report(report))
    if args.json_out:
        print(f"report written to {write_json(report, args.json_out)}")


def cmd_tune(args: argparse.Namespace) -> None:
    import json

    from traitflow.tuning import format_result, search

    quiet_gensim(args)
    config = config_from_args(args)
    events = load_events(args.events, args.mapping, args.max_reject_share)
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
