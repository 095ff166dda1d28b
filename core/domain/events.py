"""Events: validation of a recorded event against the rules and its receiver's schema."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

import msgspec

from core.domain import commands, errors
from core.domain.errors import FieldError
from core.domain.fields import are_plain_names, check_description, check_name
from core.domain.model import Event
from core.domain.schemas import CompiledSchema, json_depth

MAX_PAYLOAD_BYTES = 1024 * 1024
MAX_PAYLOAD_DEPTH = 64
MAX_BATCH_EVENTS = 1000

PAYLOAD_FIELD = "/payload"
EVENTS_FIELD = "/events"
NVRPP_FIELDS = ("name", "version", "release", "platform_id", "package")

_E = TypeVar("_E", bound=errors.DomainError)


def payload_depth(payload: Any) -> int:
    """Nesting depth of a payload (the payload object itself is 1), capped at MAX + 1."""
    return json_depth(payload, MAX_PAYLOAD_DEPTH)


def new_event(
    cmd: commands.RecordEvent, *, id: str, tenant_id: str, now: datetime, schema: CompiledSchema
) -> Event:
    """A new event from a command, checked against the rules and its receiver's schema.

    A payload over MAX_PAYLOAD_BYTES raises `errors.TooLarge` at once. Everything
    else (the NVRPP fields, the description, the nesting depth, every schema
    error of the payload) is collected into one `errors.Invalid`. The depth is
    checked before the size, which cannot be measured safely on a payload
    nested thousands of levels deep: such a payload is refused as too deep.
    Values are stored exactly as given.
    """
    problems: list[FieldError] = []
    if not are_plain_names(
        cmd.name, cmd.version, cmd.release, cmd.platform_id, cmd.package
    ):  # the common case skips building a pointer per field
        for field in NVRPP_FIELDS:
            check_name(problems, f"/{field}", getattr(cmd, field))
    check_description(problems, "/description", cmd.description)
    if payload_depth(cmd.payload) > MAX_PAYLOAD_DEPTH:
        problems.append(FieldError(PAYLOAD_FIELD, f"must nest at most {MAX_PAYLOAD_DEPTH} levels"))
    else:
        size = len(msgspec.json.encode(cmd.payload))
        if size > MAX_PAYLOAD_BYTES:
            raise errors.TooLarge(
                f"The payload is {size} bytes of JSON; at most {MAX_PAYLOAD_BYTES} are accepted",
                [FieldError(PAYLOAD_FIELD, f"must be at most {MAX_PAYLOAD_BYTES} bytes of JSON")],
            )
        problems.extend(schema.errors(cmd.payload, PAYLOAD_FIELD))
    errors.raise_if(problems, "The event is invalid")
    return Event(
        id=id,
        tenant_id=tenant_id,
        name=cmd.name,
        version=cmd.version,
        release=cmd.release,
        platform_id=cmd.platform_id,
        package=cmd.package,
        description=cmd.description,
        payload=cmd.payload,
        success=cmd.success,
        event_receiver_id=cmd.event_receiver_id,
        created_at=now,
    )


def check_batch_size(n: int) -> None:
    """A batch holds 1 to MAX_BATCH_EVENTS events."""
    if n < 1:
        raise errors.Invalid(
            "The batch is empty",
            [FieldError(EVENTS_FIELD, f"must contain 1 to {MAX_BATCH_EVENTS} events")],
        )
    if n > MAX_BATCH_EVENTS:
        raise errors.TooLarge(
            f"The batch holds {n} events; at most {MAX_BATCH_EVENTS} are accepted",
            [FieldError(EVENTS_FIELD, f"must contain 1 to {MAX_BATCH_EVENTS} events")],
        )


def prefix_errors(exc: _E, index: int) -> _E:
    """The same refusal for the event at `index` of a batch: every field under /events/<index>.

    A refusal that names no field gets one, "/events/<index>", carrying its detail.
    """
    base = f"{EVENTS_FIELD}/{index}"
    if not exc.errors:
        # A refusal without field errors still has to say which event it is about.
        return type(exc)(exc.detail, [FieldError(base, exc.detail)])
    return type(exc)(exc.detail, [FieldError(_join(base, e.field), e.message) for e in exc.errors])


def _join(base: str, field: str) -> str:
    if not field or field.startswith("/"):
        return base + field
    return f"{base}/{field}"
