"""``traitflow`` command line: run the pipeline on files without Airflow, and query the store."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from traitflow.cli import evaluation, files, report, scheduled
from traitflow.cli.common import CliError
from traitflow.config import ConfigError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    from traitflow.store.cli import add_commands

    parser = argparse.ArgumentParser(prog="traitflow", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    files.add_parsers(sub)
    evaluation.add_parsers(sub)
    scheduled.add_parsers(sub)
    report.add_parsers(sub)

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
