"""``traitflow report``: a self-contained HTML report of the active model (``traitflow.html_report``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from traitflow.config import data_dir


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``report``."""
    from traitflow.store.cli import database_flags

    report = sub.add_parser(
        "report",
        parents=[database_flags()],
        help="write a self-contained HTML report (charts, traits, latest evaluation)",
    )
    report.add_argument(
        "--out",
        type=Path,
        default=data_dir() / "report.html",
        help="HTML file to write (default: %(default)s)",
    )
    report.add_argument("--evaluation", type=Path, help="a `traitflow evaluate --json-out` file to include")
    report.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from traitflow.html_report import write_report
    from traitflow.store import Store

    if args.evaluation is not None and not args.evaluation.is_file():
        raise FileNotFoundError(f"evaluation report {args.evaluation} does not exist")
    with Store(args.database_url, args.schema) as store:
        store.upgrade()
        path = write_report(store, args.out, evaluation=args.evaluation)
    print(f"report written: {path.resolve()}")
    return 0
