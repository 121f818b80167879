"""The DAGs' chains on the stored events, run from the command line: ``retrain`` and ``update``."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from traitflow.cli.common import (
    CliError,
    add_config_flags,
    add_increment_flags,
    add_trigger_flags,
    bounded_int,
    config_from_args,
    fraction,
    parse_utc,
)
from traitflow.config import MAX_SHARDS


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``retrain`` and ``update``."""
    _add_retrain(sub)
    _add_update(sub)


def _add_retrain(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from traitflow.store.cli import database_flags

    retrain = sub.add_parser(
        "retrain",
        parents=[database_flags()],
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
    retrain.add_argument("--tune-trials", type=bounded_int(1), default=8, help="settings tried (default 8)")
    retrain.add_argument(
        "--tune-sample-fraction",
        type=fraction,
        default=0.1,
        help="share of customers tuned on (default 0.1)",
    )
    _add_shards_flag(retrain)
    add_config_flags(retrain)
    add_trigger_flags(retrain)
    add_increment_flags(retrain)
    retrain.set_defaults(func=cmd_retrain)


def _add_update(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from traitflow.store.cli import database_flags

    update = sub.add_parser(
        "update",
        parents=[database_flags()],
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
    _add_shards_flag(update)
    update.set_defaults(func=cmd_update)


def _add_shards_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--shards",
        type=bounded_int(1, MAX_SHARDS),
        default=1,
        help="compute the profiles in this many customer shards, one after the other, as the "
        "DAG's n_shards mapped tasks do (default 1; the rows are the same for any number)",
    )


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
            n_shards=args.shards,
        )
    training = (outcome.report.get("train_candidate") or {}).get("training")
    if training:
        parent = f" from model version {training['parent_version']}" if training["parent_version"] else ""
        print(f"training: {training['mode']}{parent} -- {training['reason']}")
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
            args.database_url,
            since,
            as_of,
            run_work_dir("cli_update", run_id),
            run_id=run_id,
            n_shards=args.shards,
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
