"""Request bodies: JSON decoded straight into the core's command Structs, strictly.

`Body[Command]` is a Litestar DTO that does nothing but run one precompiled
msgspec decoder over the raw bytes (no intermediate dicts, no lax coercion:
`"true"` is not a boolean here) and describe the Struct in the OpenAPI
document. A body that is not JSON, or not of the command's shape, is a 400
whose `errors` name the offending field as a JSON pointer.

Nesting: msgspec's decoder counts its own recursion against the interpreter's limit
and stops with `RecursionError` before the C stack could overflow; that is a 422 here
(the body nests too deeply), like a payload or schema deeper than the domain's limits,
which are checked next without recursion (`core.domain.schemas.json_depth`), before
anything that recurses (the schema compiler, canonical JSON) sees them.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Generator
from typing import Any, ClassVar, TypeVar

import msgspec
from litestar.dto import AbstractDTO, DTOFieldDefinition
from litestar.openapi.spec import Reference, Schema
from litestar.typing import FieldDefinition

from core.domain.errors import FieldError, Invalid
from entrypoints.http.problems import BadRequest

T = TypeVar("T")

_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\[\.\.\.\]")
_FIELD = re.compile(r"(?:missing required|contains unknown) field `([^`]+)`")


class Body(AbstractDTO[T]):
    """Decode a request body into `T` (a msgspec Struct) with msgspec, strictly."""

    _decoder: ClassVar[msgspec.json.Decoder[Any]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        model_type = getattr(cls, "model_type", None)
        if model_type is not None:
            cls._decoder = msgspec.json.Decoder(model_type)

    def decode_bytes(self, value: bytes) -> Any:
        return decode(self._decoder, value)

    def decode_builtins(self, value: dict[str, Any]) -> Any:
        try:
            return msgspec.convert(value, self.model_type)
        except msgspec.ValidationError as exc:
            raise shape_error(exc) from None

    def data_to_encodable_type(self, data: T | Collection[T]) -> Any:
        return data  # pragma: no cover - bodies are only decoded (return_dto=None)

    @classmethod
    def generate_field_definitions(
        cls, model_type: type[Any]
    ) -> Generator[DTOFieldDefinition, None, None]:
        yield from ()  # pragma: no cover - no transfer model is generated

    @classmethod
    def detect_nested_field(cls, field_definition: FieldDefinition) -> bool:
        return False  # pragma: no cover - no transfer model is generated

    @classmethod
    def create_for_field_definition(
        cls,
        field_definition: FieldDefinition,
        handler_id: str,
        backend_cls: Any = None,
    ) -> None:
        """No transfer model, no codegen: the Struct is decoded as it is."""

    @classmethod
    def create_openapi_schema(
        cls, field_definition: FieldDefinition, handler_id: str, schema_creator: Any
    ) -> Reference | Schema:
        schema: Reference | Schema = schema_creator.for_field_definition(
            FieldDefinition.from_annotation(cls.model_type)
        )
        return schema


def decode(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    """`body` decoded by `decoder`; a 400 `BadRequest` naming the field when it cannot be,
    a 422 when it nests deeper than the decoder may recurse."""
    try:
        return decoder.decode(body)
    except RecursionError:
        raise Invalid(
            "The request body is nested too deeply.",
            [FieldError("", "nests arrays and objects too deeply to be read")],
        ) from None
    except msgspec.ValidationError as exc:
        raise shape_error(exc) from None
    except msgspec.DecodeError as exc:
        raise BadRequest(
            "The request body is not valid JSON.", [FieldError("", str(exc))]
        ) from None


def shape_error(exc: msgspec.ValidationError) -> BadRequest:
    field, message = pointer_and_message(str(exc))
    return BadRequest(
        "The request body does not have the expected shape.", [FieldError(field, message)]
    )


def pointer_and_message(text: str) -> tuple[str, str]:
    """msgspec's "Expected `str`, got `int` - at `$.events[0].name`" as
    ("/events/0/name", "Expected `str`, got `int`").

    A missing or unknown field is named at the field, not at its object.
    """
    match = _AT.match(text)
    if match is None:  # pragma: no cover - the pattern matches every string
        return "", text
    message = match.group("message")
    steps = [
        _escape(name) if name else index or "-"
        for name, index in _STEP.findall(match.group("path") or "")
    ]
    named = _FIELD.search(message)
    if named is not None:
        steps.append(_escape(named.group(1)))
    return "".join("/" + step for step in steps), message


def _escape(step: str) -> str:
    """RFC 6901: `~` and `/` escaped inside a pointer's reference token."""
    return step.replace("~", "~0").replace("/", "~1")
