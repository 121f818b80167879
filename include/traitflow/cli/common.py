"""What the ``traitflow`` commands share: argument types, model and trigger flags, event loading."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from traitflow.bounds import BoundedField
from traitflow.config import PipelineConfig

if TYPE_CHECKING:
    import pandas as pd

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


def bounded_int(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer from ``minimum`` to ``maximum`` (inclusive; no upper limit when
    ``maximum`` is None). Its errors name the bound and the value, e.g. "must be between 1 and 64,
    got 0"."""
    if maximum is not None and maximum < minimum:
        raise ValueError(f"maximum {maximum} is below minimum {minimum}")
    allowed = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
        if number < minimum or (maximum is not None and number > maximum):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {number}")
        return number

    return parse


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model parameters (defaults from traitflow.config)")
    group.add_argument("--k", type=bounded_int(1), help="number of traits (default 16)")
    group.add_argument("--vector-size", type=bounded_int(1), help="embedding size (default 64)")
    group.add_argument("--epochs", type=bounded_int(1), help="Word2Vec epochs (default 10)")
    group.add_argument("--window", type=bounded_int(1), help="Word2Vec window (default 5)")
    group.add_argument("--ns-exponent", type=float, help="negative sampling exponent (default 0.75)")
    group.add_argument("--seed", type=int, help="Word2Vec seed (default 42)")
    group.add_argument("--workers", type=bounded_int(1), help="Word2Vec worker threads (default 2)")
    group.add_argument("--session-timeout-minutes", type=float, help="inactivity timeout (default 30)")


TRIGGER_KEYS = ("new_vocab_threshold", "drift_threshold", "quality_margin", "training_window_days")
INCREMENT_KEYS = (
    "training_mode",
    "full_retrain_every_weeks",
    "increment_epochs",
    "increment_alpha",
    "replay_fraction",
    "increment_drift_threshold",
)


def add_trigger_flags(parser: argparse.ArgumentParser) -> None:
    """The weekly retrain's thresholds (``TriggerParams``)."""
    group = parser.add_argument_group("retrain thresholds (defaults from traitflow.config)")
    for key in TRIGGER_KEYS:
        add_config_flag(group, key)


def add_increment_flags(parser: argparse.ArgumentParser) -> None:
    """``--training-mode`` and the incremental update's settings (``IncrementParams``)."""
    group = parser.add_argument_group("training mode (defaults from traitflow.config)")
    for key in INCREMENT_KEYS:
        add_config_flag(group, key)


def add_config_flag(group: argparse._ArgumentGroup, key: str) -> None:
    """``--<key>`` (underscores as dashes) for the flat config key ``key``, generated from its
    field's declared bounds: the values, help text and default of the DAG trigger form's Param.
    The flag defaults to None, so ``config_from_args`` leaves the config default in place."""
    declared = PipelineConfig.bounded_field(key)
    default = PipelineConfig().to_flat()[key]
    group.add_argument(
        "--" + key.replace("_", "-"),
        type=config_value(declared),
        choices=declared.bounds.choices or None,
        help=f"{declared.bounds.description} (default {default})".replace("%", "%%"),
    )


_CONVERTERS: dict[str, tuple[Callable[[str], Any], str]] = {
    "integer": (int, "an integer"),
    "number": (float, "a number"),
    "string": (str, "a string"),
}


def config_value(declared: BoundedField) -> Callable[[str], Any]:
    """An argparse type: a value of the config field ``declared`` within its declared bounds,
    refused with the config's own message (e.g. "must be in (0, 1], got 0.0")."""
    convert, kind = _CONVERTERS[declared.json_type]

    def parse(value: str) -> Any:
        try:
            parsed = convert(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {kind}: {value!r}") from None
        problem = declared.problem(parsed)
        if problem is not None:
            raise argparse.ArgumentTypeError(f"must be {problem}, got {parsed!r}")
        return parsed

    return parse


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
            *INCREMENT_KEYS,
        )
        if getattr(args, key, None) is not None
    }
    return PipelineConfig.from_mapping(flat)


def int_list(value: str) -> tuple[int, ...]:
    """An argparse type: comma-separated integers >= 1 (e.g. ``--k-range 4,8,16``)."""
    parse = bounded_int(1)
    numbers = tuple(parse(part) for part in value.split(",") if part.strip())
    if not numbers:
        raise argparse.ArgumentTypeError(f"need at least one integer, got {value!r}")
    return numbers


def fraction(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0.0 < number < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {number}")
    return number


def non_negative(value: str) -> float:
    """An argparse type: a finite number >= 0."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0.0 <= number < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {number}")
    return number


def quiet_gensim(args: argparse.Namespace) -> None:
    """Commands that train many models keep per-epoch progress lines out of the report."""
    if not args.verbose:
        logging.getLogger("gensim").setLevel(logging.WARNING)
        logging.getLogger("traitflow.item2vec").setLevel(logging.WARNING)


def load_events(
    paths: Sequence[str],
    mapping: str,
    max_reject_share: float | None = None,
    names: dict[str, str] | None = None,
) -> pd.DataFrame:
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


def one_microsecond() -> pd.Timedelta:
    import pandas as pd

    return pd.Timedelta(microseconds=1)
