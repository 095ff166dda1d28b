"""Events (DOMAIN.md, "Events"): NVRPP fields, payload limits, schema errors, batches."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.domain.commands import RecordEvent
from core.domain.errors import Conflict, DomainError, FieldError, Invalid, NotFound, TooLarge
from core.domain.events import (
    MAX_BATCH_EVENTS,
    MAX_PAYLOAD_BYTES,
    MAX_PAYLOAD_DEPTH,
    check_batch_size,
    new_event,
    payload_depth,
    prefix_errors,
)
from core.domain.fields import are_plain_names, check_name, is_plain_name
from core.domain.model import Event
from core.domain.schemas import CompiledSchema, compile_schema, json_depth

NOW = datetime(2026, 1, 1, tzinfo=UTC)
NVRPP = ["name", "version", "release", "platform_id", "package"]
ANY = compile_schema({})
STRICT = compile_schema(
    {
        "type": "object",
        "required": ["artifact"],
        "properties": {
            "artifact": {"type": "string"},
            "size": {"type": "integer", "minimum": 0},
            "tags": {"type": "array", "items": {"type": "string"}},
            "a/b": {"type": "string"},
            "m~n": {"type": "string"},
        },
        "additionalProperties": False,
    }
)


def record(**changes: Any) -> RecordEvent:
    fields: dict[str, Any] = {
        "name": "app",
        "version": "1.0",
        "release": "1",
        "platform_id": "x86_64",
        "package": "rpm",
        "description": "built",
        "payload": {"artifact": "app-1.0-1.x86_64.rpm"},
        "success": True,
        "event_receiver_id": "R1",
    }
    fields.update(changes)
    return RecordEvent(**fields)


def make(cmd: RecordEvent, schema: CompiledSchema = ANY) -> Event:
    return new_event(cmd, id="E1", tenant_id="T1", now=NOW, schema=schema)


def refused(cmd: RecordEvent, schema: CompiledSchema = ANY) -> Invalid:
    with pytest.raises(Invalid) as caught:
        make(cmd, schema)
    return caught.value


def fields_of(error: DomainError) -> list[str]:
    return [e.field for e in error.errors]


def nested_payload(depth: int) -> dict[str, Any]:
    """A payload of exactly `depth` levels: the payload object itself is level 1."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


# --- new_event ------------------------------------------------------------------------------


def test_a_valid_event_is_stored_exactly_as_given() -> None:
    cmd = record(
        name=" App ",
        version="1.0 ",
        release="\t1",
        platform_id="X86_64",
        package="Rpm",
        description="  ",
        payload={"artifact": "a", "size": 3},
        success=False,
    )
    assert make(cmd, STRICT) == Event(
        id="E1",
        tenant_id="T1",
        name=" App ",
        version="1.0 ",
        release="\t1",
        platform_id="X86_64",
        package="Rpm",
        description="  ",
        payload={"artifact": "a", "size": 3},
        success=False,
        event_receiver_id="R1",
        created_at=NOW,
    )


def test_the_empty_schema_accepts_any_payload_and_the_default_payload() -> None:
    assert make(record(payload={})).payload == {}
    cmd = RecordEvent(
        name="a",
        version="1",
        release="1",
        platform_id="p",
        package="k",
        success=True,
        event_receiver_id="R1",
    )
    assert make(cmd).payload == {}
    assert make(cmd).description == ""
    assert make(record(payload={"x": [1, {"y": None}], "z": True})).payload["z"] is True


@pytest.mark.parametrize("field", NVRPP)
@pytest.mark.parametrize("length", [1, 254, 255])
def test_nvrpp_fields_up_to_255_characters_are_accepted(field: str, length: int) -> None:
    assert getattr(make(record(**{field: "v" * length})), field) == "v" * length


@pytest.mark.parametrize("field", NVRPP)
def test_an_nvrpp_field_of_256_characters_is_refused(field: str) -> None:
    error = refused(record(**{field: "v" * 256}))
    assert error.errors == (FieldError(f"/{field}", "must be at most 255 characters"),)


@pytest.mark.parametrize("field", NVRPP)
@pytest.mark.parametrize("blank", ["", " ", "\t", " \n ", "\u2003"])
def test_a_blank_nvrpp_field_is_refused(field: str, blank: str) -> None:
    error = refused(record(**{field: blank}))
    assert error.errors == (FieldError(f"/{field}", "must not be blank"),)


@pytest.mark.parametrize("length", [0, 4095, 4096])
def test_descriptions_up_to_4096_characters_are_accepted(length: int) -> None:
    assert make(record(description="d" * length)).description == "d" * length


def test_a_description_of_4097_characters_is_refused() -> None:
    assert fields_of(refused(record(description="d" * 4097))) == ["/description"]


def test_every_payload_error_is_reported_with_its_pointer() -> None:
    payload = {"size": -1, "tags": ["ok", 2, "ok", None], "a/b": 1, "m~n": 2, "extra": 0}
    error = refused(record(payload=payload), STRICT)
    assert fields_of(error) == [
        "/payload",
        "/payload",
        "/payload/a~1b",
        "/payload/m~0n",
        "/payload/size",
        "/payload/tags/1",
        "/payload/tags/3",
    ]
    messages = {e.field: e.message for e in error.errors[2:]}
    assert messages["/payload/size"] == "-1 is less than the minimum of 0"
    assert messages["/payload/tags/1"] == '2 is not of type "string"'
    assert '"artifact" is a required property' in [e.message for e in error.errors]


def test_field_errors_and_payload_errors_come_together_in_one_refusal() -> None:
    error = refused(
        record(name="", package="p" * 256, description="d" * 4097, payload={"size": "x"}), STRICT
    )
    assert fields_of(error) == ["/name", "/package", "/description", "/payload", "/payload/size"]


def test_every_nvrpp_field_is_reported_at_once() -> None:
    error = refused(record(**dict.fromkeys(NVRPP, " ")))
    assert fields_of(error) == [f"/{f}" for f in NVRPP]


# --- payload depth --------------------------------------------------------------------------


@pytest.mark.parametrize(("payload", "depth"), [({}, 1), ({"a": 1}, 1), ({"a": [1]}, 2)])
def test_the_payload_object_itself_is_level_one(payload: dict[str, Any], depth: int) -> None:
    assert payload_depth(payload) == depth


def test_a_payload_of_64_levels_is_accepted() -> None:
    payload = nested_payload(MAX_PAYLOAD_DEPTH)
    assert MAX_PAYLOAD_DEPTH == 64
    assert payload_depth(payload) == 64
    assert make(record(payload=payload)).payload == payload


def test_a_payload_of_64_levels_ending_in_lists_is_accepted() -> None:
    inner: Any = 1
    for _ in range(63):
        inner = [inner]
    make(record(payload={"a": inner}))


def test_a_payload_of_65_levels_is_refused() -> None:
    error = refused(record(payload=nested_payload(65)))
    assert error.errors == (FieldError("/payload", "must nest at most 64 levels"),)


def test_a_payload_of_10000_levels_is_refused_without_crashing() -> None:
    error = refused(record(name="", payload=nested_payload(10_000)))
    assert fields_of(error) == ["/name", "/payload"]


def test_a_deep_payload_is_not_checked_against_the_schema() -> None:
    error = refused(record(payload=nested_payload(65)), STRICT)
    assert fields_of(error) == ["/payload"]


# --- payload size ---------------------------------------------------------------------------


def payload_of_size(size: int) -> dict[str, Any]:
    payload = {"a": "x" * (size - len(b'{"a":""}'))}
    assert len(msgspec.json.encode(payload)) == size
    return payload


def test_a_payload_of_exactly_1_mib_is_accepted() -> None:
    assert MAX_PAYLOAD_BYTES == 1024 * 1024
    make(record(payload=payload_of_size(MAX_PAYLOAD_BYTES)))


def test_one_byte_more_is_too_large() -> None:
    with pytest.raises(TooLarge) as caught:
        make(record(payload=payload_of_size(MAX_PAYLOAD_BYTES + 1)))
    assert fields_of(caught.value) == ["/payload"]


def test_the_size_is_measured_in_encoded_bytes() -> None:
    with pytest.raises(TooLarge):
        make(record(payload={"a": "\u20ac" * (MAX_PAYLOAD_BYTES // 3 + 1)}))


def test_too_large_wins_over_field_errors() -> None:
    with pytest.raises(TooLarge):
        make(record(name="", payload=payload_of_size(MAX_PAYLOAD_BYTES + 1)), STRICT)


# --- batches --------------------------------------------------------------------------------


def test_an_empty_batch_is_invalid() -> None:
    with pytest.raises(Invalid) as caught:
        check_batch_size(0)
    assert caught.value.errors == (FieldError("/events", "must contain 1 to 1000 events"),)


@pytest.mark.parametrize("n", [1, 2, 999, MAX_BATCH_EVENTS])
def test_batches_of_1_to_1000_events_are_accepted(n: int) -> None:
    check_batch_size(n)


@pytest.mark.parametrize("n", [MAX_BATCH_EVENTS + 1, 10**6])
def test_a_batch_over_1000_events_is_too_large(n: int) -> None:
    with pytest.raises(TooLarge) as caught:
        check_batch_size(n)
    assert fields_of(caught.value) == ["/events"]


def test_prefix_errors_puts_every_field_under_its_event() -> None:
    error = refused(record(name="", payload={"a/b": 1, "size": -1}), STRICT)
    prefixed = prefix_errors(error, 3)
    assert type(prefixed) is Invalid
    assert prefixed.detail == error.detail
    assert fields_of(prefixed) == [
        "/events/3/name",
        "/events/3/payload",
        "/events/3/payload/a~1b",
        "/events/3/payload/size",
    ]
    assert [e.message for e in prefixed.errors] == [e.message for e in error.errors]


@pytest.mark.parametrize("kind", [Invalid, TooLarge, Conflict, NotFound])
def test_prefix_errors_keeps_the_kind_of_refusal(kind: type[DomainError]) -> None:
    prefixed = prefix_errors(kind("refused", [FieldError("/payload", "too big")]), 0)
    assert type(prefixed) is kind
    assert prefixed.errors == (FieldError("/events/0/payload", "too big"),)


def test_prefix_errors_of_a_whole_payload_error_and_plain_names() -> None:
    error = Invalid("x", [FieldError("", "root"), FieldError("event_receiver_id", "unknown")])
    assert fields_of(prefix_errors(error, 12)) == ["/events/12", "/events/12/event_receiver_id"]


def test_prefix_errors_names_the_event_when_the_refusal_names_no_field() -> None:
    prefixed = prefix_errors(NotFound("No such receiver"), 7)
    assert prefixed.errors == (FieldError("/events/7", "No such receiver"),)


def test_a_real_batch_reports_pointers_under_each_event() -> None:
    commands = [record(), record(payload={"size": "x"}), record(release=" ")]
    reported: list[FieldError] = []
    for index, cmd in enumerate(commands):
        try:
            make(cmd, STRICT)
        except Invalid as exc:
            reported.extend(prefix_errors(exc, index).errors)
    assert [e.field for e in reported] == [
        "/events/1/payload",
        "/events/1/payload/size",
        "/events/2/release",
    ]


@given(st.text(max_size=300) | st.sampled_from([" ", "\t\n", "\u3000", "a" * 255, "a" * 256]))
def test_the_quick_name_check_agrees_with_the_rule(value: str) -> None:
    found: list[FieldError] = []
    check_name(found, "/name", value)
    assert is_plain_name(value) == (not found)


_NAMES = st.text(max_size=300) | st.sampled_from(
    ["", " ", "\t\n", "\u3000", "a" * 255, "a" * 256, "a\x00", "\x00", "rpm"]
)


@given(st.lists(_NAMES, min_size=1, max_size=5))
def test_the_quick_check_of_several_names_agrees_with_the_rule(values: list[str]) -> None:
    found: list[FieldError] = []
    for value in values:
        check_name(found, "/name", value)
    assert are_plain_names(*values) == (not found)


@given(
    st.recursive(st.none() | st.integers(), lambda c: st.lists(c) | st.dictionaries(st.text(), c))
)
def test_the_flat_shortcut_of_the_depth_agrees_with_the_walk(value: object) -> None:
    def depth(v: object) -> int:
        if isinstance(v, dict):
            return 1 + max((depth(c) for c in v.values()), default=0)
        if isinstance(v, list):
            return 1 + max((depth(c) for c in v), default=0)
        return 0

    assert json_depth(value, 1000) == depth(value)
