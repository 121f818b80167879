"""Store subcommands for the ``traitflow`` CLI: ``add_commands(subparsers)`` registers them.

Commands: ``db upgrade``, ``db url``, ``ingest PATH --mapping M``, ``profile ID [--history]``,
``traits [--model-version N]``, ``top TRAIT_ID [-n N] [--min-events M]``,
``similar ID [-n N] [--min-events M]``, ``products ID [--n N] [--new-only]``,
``reports [--kind K]``. Each takes ``--database-url`` (default ``TRAITFLOW_DATABASE_URL``, else
the embedded server) and ``--schema``; each is a function ``(args) -> 0`` stored as ``args.func``.
Read commands accept ``--json``. On an expected failure (store, config, connection, not found)
a command prints ``traitflow: error: ...`` on stderr and raises ``SystemExit(1)``: a clear
message instead of a traceback, and a non-zero exit status whatever the caller does with the
return value. ``python -m traitflow.store.cli ...`` runs them standalone.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn

import pandas as pd
import psycopg

from traitflow import formatting
from traitflow.cli.common import bounded_int
from traitflow.config import ConfigError
from traitflow.profile_batch import MIN_EVIDENCE_EVENTS
from traitflow.recommend import MAX_N, check_n, customer_products
from traitflow.redaction import redact, secrets_of

from .core import Store
from .db import mask_url, resolve_url
from .errors import StoreError
from .serving import ModelQuality

Command = Callable[[argparse.Namespace], int]


def _handle_errors(func: Command) -> Command:
    @functools.wraps(func)
    def wrapper(args: argparse.Namespace) -> int:
        secrets = secrets_of(getattr(args, "database_url", None))
        try:
            return func(args)
        except (StoreError, ConfigError, ValueError, LookupError, FileNotFoundError) as exc:
            _fail(redact(exc, secrets))
        except psycopg.Error as exc:
            _fail(f"database: {redact(str(exc).strip(), secrets)}")

    return wrapper


def _fail(message: str) -> NoReturn:
    print(f"traitflow: error: {message}", file=sys.stderr)
    raise SystemExit(1)


def _store(args: argparse.Namespace) -> Store:
    return Store(args.database_url, args.schema)


def print_json(value: Any) -> None:
    """The CLI's one JSON printer (numpy values, datetimes), for every ``--json`` output."""
    print(formatting.dumps(value, indent=2))


def _print_frame(frame: pd.DataFrame, as_json: bool, max_colwidth: int | None = 60) -> None:
    if as_json:
        print_json(frame.to_dict(orient="records"))
    elif frame.empty:
        print("(no rows)")
    else:
        with pd.option_context("display.max_colwidth", max_colwidth, "display.width", 200):
            print(frame.to_string(index=False))


@_handle_errors
def cmd_db_upgrade(args: argparse.Namespace) -> int:
    with _store(args) as store:
        applied = store.upgrade()
        version = store.schema_version()
    done = f"applied migrations {applied}" if applied else "already up to date"
    print(f"schema {store.schema!r}: {done} (version {version})")
    return 0


@_handle_errors
def cmd_db_url(args: argparse.Namespace) -> int:
    print(mask_url(resolve_url(args.database_url)))
    return 0


@_handle_errors
def cmd_ingest(args: argparse.Namespace) -> int:
    run_id = args.run_id or "cli-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    with _store(args) as store:
        store.upgrade()  # idempotent; a write command should work on a fresh database
        report = store.ingest_file(
            args.path,
            args.mapping,
            run_id,
            force=args.force,
            chunksize=args.chunksize,
            max_reject_share=args.max_reject_share,
        )
        reasons = store.reject_counts(report.source) if report.n_rejected and not args.json else {}
        rejects_table = f"{store.schema}.rejected_events"
    if args.json:
        print_json(report.to_dict())
    elif report.skipped:
        print(f"{args.path}: already ingested (sha256 {report.file_sha256}); use --force to re-read it")
    else:
        print(
            f"{args.path}: read {report.n_read} rows -> {report.n_inserted} new events, "
            f"{report.n_already_present} already present, {report.n_rejected} rejected "
            f"(of which {report.n_conflicting} conflict with a stored event; "
            f"{report.seconds:.1f}s, run {run_id})"
        )
        if reasons:
            by_reason = ", ".join(f"{reason} {n}" for reason, n in reasons.items())
            print(f"rejected by reason: {by_reason} (rows with their reason in {rejects_table})")
        if report.n_already_present:
            print(
                "already present: identical to a stored event (a re-read or overlapping file): nothing added"
            )
    return 0


@_handle_errors
def cmd_profile(args: argparse.Namespace) -> int:
    with _store(args) as store:
        if args.history:
            _print_frame(store.profile_history(args.customer_id), args.json)
            return 0
        profile = store.current_profile(args.customer_id)
    if profile is None:
        _fail(f"customer {args.customer_id!r} has no profile")
    if args.json:
        print_json(profile)
        return 0
    print(
        f"customer {profile['customer_id']}  as of {profile['as_of']:%Y-%m-%d %H:%M}  "
        f"model {profile['model_version']}  events {profile['n_events']}  cold start {profile['cold_start']}"
    )
    if profile["n_known_tokens"] is not None:
        print(
            f"evidence: {profile['n_known_tokens']} of {profile['n_events']} events with a known token,"
            f" confidence {profile['confidence']:.2f}"
        )
    print(f"dominant trait {profile['dominant_trait_id']}: {profile['dominant_label']}")
    for trait in sorted(profile["traits"], key=lambda t: -t["score"]):
        print(f"  {trait['trait_id']:>4}  {trait['score']:.3f}  {trait['label']}")
    return 0


def traits_json(frame: pd.DataFrame) -> dict[str, Any]:
    """``{"model_version", "size_counts", "traits": [{trait_id, position, label, top_products,
    top_categories, top_product_names, size}]}`` from ``Store.traits``: the shape
    ``traitflow inspect MODEL --json`` prints for a saved model (there, sizes count training
    customers; product names are known only to the store)."""
    version = int(frame["model_version"].iloc[0]) if len(frame) else None
    return {
        "model_version": version,
        "size_counts": "current profiles by dominant trait",
        "traits": frame.drop(columns="model_version").to_dict(orient="records"),
    }


@_handle_errors
def cmd_traits(args: argparse.Namespace) -> int:
    with _store(args) as store:
        frame = store.traits(args.model_version)
        # Names stored at ingestion (order-line exports with a product_name column); None if unknown.
        names = store.product_names([p for products in frame["top_products"] for p in products])
    frame = frame.assign(top_product_names=frame["top_products"].map(lambda v: [names.get(p) for p in v]))
    if args.json:
        print_json(traits_json(frame))
        return 0
    if frame.empty:
        _print_frame(frame, False)
        return 0
    _print_trait_table(frame, names)
    return 0


def _print_trait_table(frame: pd.DataFrame, names: Mapping[str, str]) -> None:
    """One line per trait, labels left-aligned and never cut (a cut name would mislead); the model
    version once in a header, top categories only when the model has any."""
    print(
        f"model version {int(frame['model_version'].iloc[0])}: {len(frame)} traits "
        "(size: current profiles by dominant trait)"
    )
    with_categories = any(len(v) for v in frame["top_categories"])
    width = max(5, *(len(label) for label in frame["label"]))
    columns = "top categories; top products" if with_categories else "top products"
    print(f"{'trait':>5}  {'size':>6}  {'label':<{width}}  {columns}")
    for row in frame.to_dict(orient="records"):  # one row per trait (k rows)
        categories = f"{', '.join(row['top_categories'][:3])}; " if with_categories else ""
        products = ", ".join(_named(p, names) for p in row["top_products"][:3])
        print(f"{row['trait_id']:>5}  {row['size']:>6}  {row['label']:<{width}}  {categories}{products}")


def _named(product_id: str, names: Mapping[str, str]) -> str:
    """``85123A (WHITE HANGING HEART T-LIGHT HOLDER)``, or the bare id when no name is stored."""
    name = names.get(product_id)
    return f"{product_id} ({name})" if name else product_id


@_handle_errors
def cmd_top(args: argparse.Namespace) -> int:
    with _store(args) as store:
        _print_frame(
            store.top_customers(args.trait_id, args.n, args.model_version, min_events=args.min_events),
            args.json,
        )
    return 0


@_handle_errors
def cmd_similar(args: argparse.Namespace) -> int:
    with _store(args) as store:
        _print_frame(store.similar_customers(args.customer_id, args.n, min_events=args.min_events), args.json)
    return 0


@_handle_errors
def cmd_products(args: argparse.Namespace) -> int:
    n = check_n(args.n)
    with _store(args) as store:
        profile = store.current_profile(args.customer_id)
        if profile is None:
            if store.active_model_version() is None:
                _fail("there is no active model yet (run `traitflow retrain`)")
            _fail(f"customer {args.customer_id!r} has no profile")
        result = customer_products(store, profile, n, new_only=args.new_only)
    if args.json:
        print_json(dataclasses.asdict(result))
        return 0
    which = "products new to the customer" if result.new_only else "products"
    print(
        f"customer {result.customer_id}  model {result.model_version}  as of {result.as_of:%Y-%m-%d %H:%M}"
        f"  events {result.n_events}  cold start {result.cold_start}: top {len(result.products)} {which}"
    )
    frame = pd.DataFrame(
        [dataclasses.asdict(p) for p in result.products], columns=["rank", "product_id", "score", "name"]
    )
    _print_frame(frame.assign(score=frame["score"].round(3), name=frame["name"].fillna("")), False)
    return 0


MODEL_COLUMNS = [
    "model_version", "status", "superseded_by", "trained_through", "training_mode", "parent_version",
    "trained_since",
    "n_tokens", "n_traits", "hit_rate", "drift", "recent_weighted_drift", "drift_threshold", "refit_on",
    "status_reason",
]  # fmt: skip


def models_frame(versions: pd.DataFrame, quality: Sequence[ModelQuality]) -> pd.DataFrame:
    """``Store.model_versions`` as shown by ``traitflow models``, one row per version in its order:
    lineage (how the vectors were trained, from which parent), the gate's held-out hit rate, the
    weighted mean and recent-weighted drift with the refit threshold of the version's mode and
    which of the two was compared with it (``Store.model_quality``: ``ModelQuality``)."""
    drift_columns = ["drift", "recent_weighted_drift", "drift_threshold", "refit_on"]
    drift = pd.DataFrame(
        [[q.model_version] + [getattr(q, column) for column in drift_columns] for q in quality],
        columns=["model_version", *drift_columns],
    ).set_index("model_version")

    def number(value: Any, key: str) -> float | None:
        found = value.get(key) if isinstance(value, dict) else None
        return float(found) if isinstance(found, int | float) else None

    gates = versions["metrics"].map(lambda m: (m or {}).get("quality_gate"))
    frame = versions.drop(columns=["drift"]).assign(
        hit_rate=gates.map(lambda g: number(g, "candidate_hit_rate")),
        parent_version=versions["parent_version"].astype("Int64"),
        superseded_by=versions["superseded_by"].astype("Int64"),
    )
    return frame.join(drift, on="model_version")[MODEL_COLUMNS]


@_handle_errors
def cmd_models(args: argparse.Namespace) -> int:
    with _store(args) as store:
        frame = models_frame(store.model_versions(), store.model_quality())
    if args.json:
        rows = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
        print_json(rows)
        return 0
    _print_frame(frame, False)
    return 0


@_handle_errors
def cmd_reports(args: argparse.Namespace) -> int:
    with _store(args) as store:
        reports = store.run_reports(args.kind, args.limit)
    if args.json:
        print_json(reports)
    elif not reports:
        print("(no reports)")
    else:
        for r in reports:
            print(f"{r['updated_at']:%Y-%m-%d %H:%M:%S}  {r['kind']}  {r['run_key']}")
            print("  " + formatting.dumps(r["report"])[:500])
    return 0


def _min_events_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--min-events",
        type=bounded_int(0),
        default=MIN_EVIDENCE_EVENTS,
        help="leave out customers with fewer events: their profile is a guess"
        f" (default {MIN_EVIDENCE_EVENTS}; 0 shows everyone, with cold_start and confidence beside each)",
    )


def reject_share(text: str) -> float:
    """An argparse type for ``--max-reject-share``: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def add_reject_share_flag(parser: argparse.ArgumentParser) -> None:
    """``--max-reject-share`` for every command that reads event files."""
    parser.add_argument(
        "--max-reject-share",
        type=reject_share,
        default=None,
        help="refuse a file (loading nothing of it) when more than this share of its rows, and "
        "at least 10, are rejected; exact duplicates not counted (default 0.5; 1 never refuses)",
    )


def database_flags() -> argparse.ArgumentParser:
    """A parent parser with ``--database-url`` and ``--schema``, for every command that opens a Store."""
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument(
        "--database-url",
        default=None,
        help="PostgreSQL URL (default: $TRAITFLOW_DATABASE_URL, else the embedded server in the data dir)",
    )
    flags.add_argument(
        "--schema", default=None, help="PostgreSQL schema (default: $TRAITFLOW_DB_SCHEMA or traitflow)"
    )
    return flags


COMMANDS = ("db", "ingest", "profile", "traits", "top", "similar", "products", "reports")


def add_commands(subparsers: Any, *, names: Mapping[str, str] | None = None) -> None:
    """Register the store commands on an ``argparse`` subparsers object (``add_subparsers()``).

    ``names`` renames commands when mounting, e.g. ``{"profile": "customer"}`` if the host CLI
    already has a ``profile`` command (argparse refuses duplicate subcommand names).
    """
    names = dict(names or {})
    unknown = sorted(set(names) - set(COMMANDS))
    if unknown:
        raise ValueError(f"unknown store commands {unknown}; known: {list(COMMANDS)}")
    taken = sorted({names.get(c, c) for c in COMMANDS} & set(getattr(subparsers, "choices", {}) or {}))
    if taken:
        raise ValueError(
            f"the CLI already has command(s) {taken}; mount the store commands under other names, "
            f"e.g. add_commands(subparsers, names={{{taken[0]!r}: 'db-{taken[0]}'}})"
        )

    def name(command: str) -> str:
        return names.get(command, command)

    common = database_flags()
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON instead of a table")

    db = subparsers.add_parser(name("db"), help="database schema and connection")
    db_commands = db.add_subparsers(dest="db_command", metavar="{upgrade,url}")
    db_commands.required = True
    p = db_commands.add_parser("upgrade", parents=[common], help="create/migrate the schema (idempotent)")
    p.set_defaults(func=cmd_db_upgrade)
    p = db_commands.add_parser(
        "url", parents=[common], help="print the resolved database URL (password masked)"
    )
    p.set_defaults(func=cmd_db_url)

    p = subparsers.add_parser(
        name("ingest"), parents=[common, as_json], help="load an event file (CSV/Parquet)"
    )
    p.add_argument("path", help="event file")
    p.add_argument("--mapping", required=True, help="column-mapping preset name or mapping file")
    p.add_argument("--run-id", default=None, help="id recorded with the rows (default: cli-<UTC time>)")
    p.add_argument(
        "--force", action="store_true", help="re-read a file already ingested (adds nothing twice)"
    )
    p.add_argument("--chunksize", type=bounded_int(1), default=500_000, help="rows per chunk")
    add_reject_share_flag(p)
    p.set_defaults(func=cmd_ingest)

    p = subparsers.add_parser(name("profile"), parents=[common, as_json], help="a customer's trait profile")
    p.add_argument("customer_id")
    p.add_argument("--history", action="store_true", help="all stored profiles of the customer over time")
    p.set_defaults(func=cmd_profile)

    p = subparsers.add_parser(
        name("traits"), parents=[common, as_json], help="the traits of a model (default: active)"
    )
    p.add_argument("--model-version", type=int, default=None)
    p.set_defaults(func=cmd_traits)

    p = subparsers.add_parser(name("top"), parents=[common, as_json], help="top customers of a trait")
    p.add_argument("trait_id", type=int)
    p.add_argument("-n", type=bounded_int(1), default=10, help="how many (default 10)")
    p.add_argument("--model-version", type=int, default=None)
    _min_events_option(p)
    p.set_defaults(func=cmd_top)

    p = subparsers.add_parser(
        name("similar"), parents=[common, as_json], help="customers with the most similar profile"
    )
    p.add_argument("customer_id")
    p.add_argument("-n", type=bounded_int(1), default=10, help="how many (default 10)")
    _min_events_option(p)
    p.set_defaults(func=cmd_similar)

    p = subparsers.add_parser(
        name("products"),
        parents=[common, as_json],
        help="the products a customer's profile ranks highest (its traits' products, tilted towards"
        " the customer's own vector)",
    )
    p.add_argument("customer_id")
    p.add_argument(
        "--n", "-n", type=bounded_int(1, MAX_N), default=10, help=f"how many (1..{MAX_N}, default 10)"
    )
    p.add_argument(
        "--new-only", action="store_true", help="leave out products the customer already had events on"
    )
    p.set_defaults(func=cmd_products)

    p = subparsers.add_parser(
        name("models"),
        parents=[common, as_json],
        help="model versions, newest first, with lineage (full or incremental, parent), hit rate, and the"
        " weighted mean and recent-weighted drift with the refit threshold of the version's mode",
    )
    p.set_defaults(func=cmd_models)

    p = subparsers.add_parser(name("reports"), parents=[common, as_json], help="recent run reports")
    p.add_argument("--kind", default=None, help="only reports of this kind")
    p.add_argument("--limit", type=bounded_int(1), default=20)
    p.set_defaults(func=cmd_reports)


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point (``python -m traitflow.store.cli``), also used by the tests."""
    parser = argparse.ArgumentParser(prog="traitflow", description="Traitflow store commands")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_commands(subparsers)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SystemExit as exc:  # a command's clear failure (message already printed)
        return exc.code if isinstance(exc.code, int) else 1


if __name__ == "__main__":
    raise SystemExit(main())
