"""Commands on files, without a database: ``sample``, ``train``, ``profile``, ``inspect``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from traitflow.cli.common import (
    add_config_flags,
    bounded_int,
    config_from_args,
    load_events,
    log,
    one_microsecond,
    parse_utc,
)
from traitflow.config import data_dir

if TYPE_CHECKING:
    from traitflow.model import TraitflowModel


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``sample``, ``train``, ``profile`` and ``inspect``."""
    from traitflow.store.cli import add_reject_share_flag

    sample = sub.add_parser("sample", help="generate synthetic events with planted segments")
    sample.add_argument("--out", default=str(data_dir() / "sample"), help="output folder")
    sample.add_argument("--customers", type=bounded_int(1), default=1000)
    sample.add_argument("--products", type=bounded_int(1), default=500)
    sample.add_argument("--events", type=bounded_int(1), default=50_000)
    sample.add_argument("--segments", type=bounded_int(1), default=6)
    sample.add_argument("--days", type=bounded_int(1), default=30)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--per-day", action="store_true", help="one events file per day")
    sample.set_defaults(func=cmd_sample)

    train = sub.add_parser("train", help="train a model on event files and save it to a folder")
    train.add_argument("events", nargs="+", help="CSV/Parquet event files")
    train.add_argument("--mapping", default="canonical", help="preset name or mapping file")
    train.add_argument("--out", required=True, help="model folder")
    train.add_argument("--trained-through", type=parse_utc, help="use events before this instant")
    add_reject_share_flag(train)
    add_config_flags(train)
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
    events = load_events(args.events, args.mapping, args.max_reject_share, names)
    trained_through = args.trained_through or (events["event_time"].max() + one_microsecond()).to_pydatetime()
    started = time.perf_counter()
    model = train(events, config, trained_through, Path(args.out) / "work", product_names=names)
    # The names of the traits' top products travel with the model folder (for `inspect`).
    top = {p for products in model.traits.top_products for p in products}
    model.metrics["product_names"] = {p: names[p] for p in sorted(top) if p in names}
    model.save(Path(args.out))
    log.info("trained in %.1fs", time.perf_counter() - started)
    _print_traits(model)
    print(f"model saved to {args.out}")


def cmd_profile(args: argparse.Namespace) -> None:
    import pandas as pd

    from traitflow.model import TraitflowModel
    from traitflow.pipeline import profile_customers
    from traitflow.store.naming import trait_column

    model = TraitflowModel.load(args.model)
    events = load_events(args.events, args.mapping, args.max_reject_share)
    as_of = args.as_of or (events["event_time"].max() + one_microsecond()).to_pydatetime()
    batch = profile_customers(events, model, as_of)
    frame = pd.DataFrame(batch.profiles, columns=[trait_column(i) for i in batch.trait_ids])
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


def _print_traits(model: TraitflowModel) -> None:
    print(f"{len(model.tokens)} tokens x {model.tokens.vector_size} dims, {model.traits.n_traits} traits")
    for trait_id, label, products in zip(
        model.traits.trait_ids, model.traits.labels, model.traits.top_products, strict=True
    ):
        print(f"  trait {trait_id:>3}  {label:<40}  top products: {', '.join(products[:3])}")
