"""Config bounds are declared once on the dataclass fields; the dataclass check, the JSON schema
of the DAG trigger form (validated with jsonschema, as Airflow's Param does) and the CLI flags
generated from them agree on them."""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
from typing import Any

import jsonschema
import pytest
from jsonschema import FormatChecker

from traitflow.bounds import bounded_fields
from traitflow.cli.common import INCREMENT_KEYS, TRIGGER_KEYS, add_increment_flags, add_trigger_flags
from traitflow.config import (
    AggregationParams,
    ConfigError,
    Item2VecParams,
    PipelineConfig,
    SessionParams,
    TraitParams,
    TriggerParams,
)

FLAT_KEYS = sorted(PipelineConfig.FLAT_KEYS)
FLAG_KEYS = [*TRIGGER_KEYS, *INCREMENT_KEYS]  # the flat keys whose CLI flags are generated


def _edges(schema: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """Values just outside and just inside every bound ``schema`` declares."""
    integer = "integer" in (schema["type"] if isinstance(schema["type"], list) else [schema["type"]])

    def below(bound: float) -> float:
        return bound - 1 if integer else math.nextafter(bound, -math.inf)

    def above(bound: float) -> float:
        return bound + 1 if integer else math.nextafter(bound, math.inf)

    outside: list[Any] = []
    inside: list[Any] = []
    if "minimum" in schema:
        outside.append(below(schema["minimum"]))
        inside.append(schema["minimum"])
    if "exclusiveMinimum" in schema:
        outside.append(schema["exclusiveMinimum"])
        inside.append(above(schema["exclusiveMinimum"]))
    if "maximum" in schema:
        outside.append(above(schema["maximum"]))
        inside.append(schema["maximum"])
    if "enum" in schema:  # every choice is inside, something of the same type that is none is not
        inside.extend(choice for choice in schema["enum"] if choice is not None)
        outside.append(max(inside) + 1 if integer else "|".join(map(str, inside)))
    return outside, inside


def _form_accepts(key: str, value: Any) -> bool:
    schema = {k: v for k, v in PipelineConfig.json_schema(key).items() if k != "description"}
    try:
        jsonschema.validate(value, schema, format_checker=FormatChecker())  # what Param.resolve runs
    except jsonschema.ValidationError:
        return False
    return True


def _dataclass_accepts(key: str, value: Any) -> bool:
    try:
        config = PipelineConfig.from_mapping({key: value})
    except ConfigError:
        return False
    assert config.to_flat()[key] == value
    return True


def _flag_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_trigger_flags(parser)
    add_increment_flags(parser)
    return parser


def _flag_accepts(key: str, value: Any) -> bool:
    try:
        args = _flag_parser().parse_args([f"--{key.replace('_', '-')}", str(value)])
    except argparse.ArgumentError:
        return False
    assert getattr(args, key) == value
    return True


@pytest.mark.parametrize("key", FLAT_KEYS)
def test_every_flat_key_declares_bounds_and_help_text(key: str) -> None:
    schema = PipelineConfig.json_schema(key)
    assert schema["description"].strip(), key
    outside, inside = _edges(schema)
    assert outside and inside, f"{key} declares no bound"
    assert _form_accepts(key, PipelineConfig().to_flat()[key])


@pytest.mark.parametrize("key", FLAT_KEYS)
def test_dataclass_form_schema_and_generated_flag_agree_at_every_bound(key: str) -> None:
    outside, inside = _edges(PipelineConfig.json_schema(key))
    checks = [_dataclass_accepts, _form_accepts, *([_flag_accepts] if key in FLAG_KEYS else [])]
    for accepts in checks:
        for value in outside:
            assert not accepts(key, value), (accepts.__name__, key, value)
        for value in inside:
            assert accepts(key, value), (accepts.__name__, key, value)


@pytest.mark.parametrize("key", FLAT_KEYS)
def test_dataclass_and_form_schema_agree_on_types(key: str) -> None:
    integer = PipelineConfig.json_schema(key)["type"] == "integer"
    wrong = ["7", True, *([2.5] if integer else [])]
    for value in wrong:
        assert not _dataclass_accepts(key, value), (key, value)
        assert not _form_accepts(key, value), (key, value)


def test_only_the_recency_half_life_may_be_empty() -> None:
    assert _form_accepts("recency_half_life_days", None)
    config = PipelineConfig.from_mapping({"recency_half_life_days": None})
    assert config.aggregation.recency_half_life_days is None
    with pytest.raises(ConfigError, match=r"n_traits must be an integer, got None"):
        TraitParams(n_traits=None)  # type: ignore[arg-type]
    assert not _form_accepts("k", None)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Item2VecParams(vector_size=0), r"vector_size must be an integer in \[1, 1024\], got 0"),
        (lambda: Item2VecParams(vector_size=8.0), r"vector_size must be an integer, got 8\.0"),
        (lambda: Item2VecParams(ns_exponent=2.5), r"ns_exponent must be in \[-2, 2\], got 2\.5"),
        (lambda: Item2VecParams(sg=2), r"sg must be one of \(0, 1\), got 2"),
        (lambda: Item2VecParams(alpha=0.0), r"alpha must be > 0, got 0\.0"),
        (lambda: SessionParams(timeout_minutes=0), r"timeout_minutes must be in \(0, 1440\], got 0"),
        (lambda: SessionParams(min_session_tokens=0), r"min_session_tokens must be an integer >= 1, got 0"),
        (lambda: AggregationParams(recency_half_life_days=0.0), r"recency_half_life_days must be > 0"),
        (lambda: AggregationParams(min_tokens=0), r"min_tokens must be an integer >= 1, got 0"),
        (lambda: TraitParams(init="svd"), r"init must be one of \('nndsvd', .*'random'\), got 'svd'"),
        (lambda: TraitParams(tol=-1e-4), r"tol must be > 0"),
        (
            lambda: TriggerParams(new_vocab_threshold=1.5),
            r"new_vocab_threshold must be in \[0, 1\], got 1\.5",
        ),
    ],
)
def test_messages_name_the_field_the_bound_and_the_value(build: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build()


def test_checks_beyond_single_field_bounds_remain() -> None:
    with pytest.raises(ConfigError, match="max_fit_customers must be >= n_traits"):
        TraitParams(n_traits=8, max_fit_customers=4)
    with pytest.raises(ConfigError, match="action weight for 'view' must be >= 0"):
        AggregationParams(action_weights={"view": -1.0})
    with pytest.raises(ConfigError, match="product_id"):
        SessionParams(token_scheme="{action}")


def test_bounded_fields_read_type_and_nullability_from_the_annotation() -> None:
    fields = {f.name: f for f in bounded_fields(AggregationParams)}
    assert (fields["recency_half_life_days"].json_type, fields["recency_half_life_days"].nullable) == (
        "number",
        True,
    )
    assert (fields["min_tokens"].json_type, fields["min_tokens"].nullable) == ("integer", False)
    init = {f.name: f for f in bounded_fields(TraitParams)}["init"]
    assert init.json_schema() == {"type": "string", "enum": ["nndsvd", "nndsvda", "nndsvdar", "random"]}


def test_config_module_imports_no_heavy_modules() -> None:
    """The DAG files import traitflow.config at parse time."""
    code = "import sys, traitflow.config; print(sorted({'numpy', 'pandas'} & set(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("key", FLAG_KEYS)
def test_generated_flags_show_the_form_description_and_keep_the_config_default(key: str) -> None:
    (action,) = [a for a in _flag_parser()._actions if a.dest == key]
    assert action.option_strings == [f"--{key.replace('_', '-')}"]
    default = PipelineConfig().to_flat()[key]
    assert action.help == f"{PipelineConfig.json_schema(key)['description']} (default {default})"
    assert action.default is None  # unset flags leave the config default to PipelineConfig


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--increment-alpha", "0"], r"argument --increment-alpha: must be in \(0, 1\], got 0\.0"),
        (["--replay-fraction", "half"], r"argument --replay-fraction: not a number: 'half'"),
        (
            ["--full-retrain-every-weeks", "521"],
            r"argument --full-retrain-every-weeks: must be an integer in \[1, 520\], got 521",
        ),
        (["--training-window-days", "7.5"], r"argument --training-window-days: not an integer: '7\.5'"),
        (
            ["--training-mode", "fast"],
            r"argument --training-mode: must be one of \('auto', 'full', 'incremental'\), got 'fast'",
        ),
    ],
)
def test_generated_flags_refuse_with_the_config_message(argv: list[str], message: str) -> None:
    with pytest.raises(argparse.ArgumentError, match=message):
        _flag_parser().parse_args(argv)
