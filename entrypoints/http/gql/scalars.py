"""The schema's two scalars: `JSON` (EPR's) and `Time`.

- `JSON` accepts, as input, any JSON value, or a string holding a JSON document
  (EPR's server took only the latter, its Python client sends objects: both work);
  its output is the value itself, never a string of it.
- `Time` is an RFC 3339 date-time with a time zone; output in UTC.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
from graphql import (
    GraphQLScalarType,
    GraphQLSchema,
    StringValueNode,
    ValueNode,
    value_from_ast_untyped,
)

__all__ = ["install", "json_value", "time_value"]


def json_value(value: Any) -> Any:
    """A JSON scalar's input: a JSON-encoded string is decoded, anything else kept."""
    if isinstance(value, str):
        try:
            return msgspec.json.decode(value)
        except msgspec.DecodeError:
            raise ValueError("JSON must be a JSON value or a string holding one") from None
    return value


def _json_literal(node: ValueNode, variables: dict[str, Any] | None = None) -> Any:
    if isinstance(node, StringValueNode):
        return json_value(node.value)
    return value_from_ast_untyped(node, variables)


def _json_output(value: Any) -> Any:
    return value


def time_value(value: Any) -> datetime:
    """A Time scalar's input: an RFC 3339 date-time with a time zone."""
    if isinstance(value, str):
        try:
            parsed = msgspec.convert(value, datetime)
        except msgspec.ValidationError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed
    raise ValueError("Time must be an RFC 3339 date-time with a time zone")


def _time_literal(node: ValueNode, variables: dict[str, Any] | None = None) -> datetime:
    if isinstance(node, StringValueNode):
        return time_value(node.value)
    raise ValueError("Time must be an RFC 3339 date-time with a time zone")


def _time_output(value: Any) -> str:
    if not isinstance(value, datetime):  # pragma: no cover - resolvers hand out datetimes
        raise TypeError("Time serializes datetimes only")
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _give(
    schema: GraphQLSchema,
    name: str,
    output: Callable[[Any], Any],
    value: Callable[[Any], Any],
    literal: Callable[..., Any],
) -> None:
    scalar = schema.type_map[name]
    assert isinstance(scalar, GraphQLScalarType), name
    # graphql-core 3.3 reads the coerce_* names, and keeps the older ones for literals
    scalar.serialize = scalar.coerce_output_value = output  # type: ignore[method-assign, assignment]
    scalar.parse_value = scalar.coerce_input_value = value  # type: ignore[method-assign, assignment]
    scalar.parse_literal = literal  # type: ignore[method-assign]


def install(schema: GraphQLSchema) -> None:
    """Give the SDL's scalars their behaviour."""
    _give(schema, "JSON", _json_output, json_value, _json_literal)
    _give(schema, "Time", _time_output, time_value, _time_literal)
