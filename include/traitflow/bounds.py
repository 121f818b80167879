"""Bounds of config fields, declared once as dataclass field metadata.

A field declares its allowed values and help text with ``field(default=..., metadata=bounds(...))``
(see ``traitflow.config``). The same declaration gives the check a dataclass runs in
``__post_init__`` (``violation``) and the JSON schema a DAG trigger form validates with
(``BoundedField.json_schema``), so the library, the CLI and a form accept the same values.

Standard library only: the DAG files import this at parse time.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import typing
from dataclasses import dataclass
from typing import Any

BOUNDS = "traitflow.bounds"  # the dataclass field-metadata key holding a field's ``Bounds``
_JSON_TYPES: dict[type, str] = {int: "integer", float: "number", str: "string"}
_KIND_NAMES = {"integer": "an integer", "number": "a number", "string": "a string"}


@dataclass(frozen=True)
class Bounds:
    """The allowed values of one config field and its help text (the form's description).

    ``minimum``/``exclusive_minimum``/``maximum`` mean what they mean in JSON schema;
    ``choices`` lists every allowed value instead. Upper limits are sane maxima, so a typo in a
    form fails at trigger time, not hours into training.
    """

    minimum: float | None = None
    exclusive_minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] = ()
    description: str = ""


def bounds(
    *,
    minimum: float | None = None,
    exclusive_minimum: float | None = None,
    maximum: float | None = None,
    choices: tuple[Any, ...] = (),
    description: str = "",
) -> dict[str, Bounds]:
    """Field metadata declaring a field's ``Bounds``: ``field(default=..., metadata=bounds(...))``."""
    return {BOUNDS: Bounds(minimum, exclusive_minimum, maximum, tuple(choices), description)}


@dataclass(frozen=True)
class BoundedField:
    """A dataclass field with declared ``Bounds``; its JSON type and whether None is allowed come
    from the field's annotation (``int``, ``float`` or ``str``, optionally ``| None``)."""

    name: str
    json_type: str
    nullable: bool
    bounds: Bounds

    def problem(self, value: Any) -> str | None:
        """What ``value`` must be instead (for an error message), or None when it is allowed."""
        if value is None and self.nullable:
            return None
        kind = _KIND_NAMES[self.json_type]
        if not self._has_type(value):
            return f"{kind} or None" if self.nullable else kind
        if self.bounds.choices:
            return None if value in self.bounds.choices else f"one of {self.bounds.choices}"
        low, above, high = self.bounds.minimum, self.bounds.exclusive_minimum, self.bounds.maximum
        if (
            (low is None or value >= low)
            and (above is None or value > above)
            and (high is None or value <= high)
        ):
            return None
        prefix = f"{kind} " if self.json_type == "integer" else ""
        if above is not None:
            return f"{prefix}in ({above}, {high}]" if high is not None else f"{prefix}> {above}"
        if low is not None:
            return f"{prefix}in [{low}, {high}]" if high is not None else f"{prefix}>= {low}"
        return f"{prefix}<= {high}"

    def _has_type(self, value: Any) -> bool:
        if isinstance(value, bool):  # JSON schema's integer and number exclude booleans
            return False
        if self.json_type == "integer":
            return isinstance(value, int)
        if self.json_type == "number":
            return isinstance(value, numbers.Real)
        return isinstance(value, str)

    def json_schema(self) -> dict[str, Any]:
        """The JSON schema a form value is validated with (Airflow uses ``jsonschema``)."""
        schema: dict[str, Any] = {"type": ["null", self.json_type] if self.nullable else self.json_type}
        limits = {
            "minimum": self.bounds.minimum,
            "exclusiveMinimum": self.bounds.exclusive_minimum,
            "maximum": self.bounds.maximum,
        }
        schema.update({keyword: limit for keyword, limit in limits.items() if limit is not None})
        if self.bounds.choices:
            schema["enum"] = [*self.bounds.choices, *([None] if self.nullable else [])]
        return schema


@functools.cache
def bounded_fields(cls: type) -> tuple[BoundedField, ...]:
    """The fields of dataclass ``cls`` that declare ``Bounds``, in declaration order."""
    hints = typing.get_type_hints(cls)
    declared = []
    for spec in dataclasses.fields(cls):
        if BOUNDS in spec.metadata:
            types = typing.get_args(hints[spec.name]) or (hints[spec.name],)
            (base,) = [t for t in types if t is not type(None)]
            nullable = type(None) in types
            declared.append(BoundedField(spec.name, _JSON_TYPES[base], nullable, spec.metadata[BOUNDS]))
    return tuple(declared)


def violation(instance: Any) -> str | None:
    """A message naming the first field of dataclass ``instance`` outside its declared
    ``Bounds``, or None when every bounded field is within them."""
    kind: type = type(instance)
    for declared in bounded_fields(kind):
        value = getattr(instance, declared.name)
        problem = declared.problem(value)
        if problem is not None:
            return f"{declared.name} must be {problem}, got {value!r}"
    return None
