"""Event receivers (DOMAIN.md, "Event receivers"): fields, fingerprint, idempotent registration."""

from __future__ import annotations

import hashlib
import json
import random
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
import rfc8785
from hypothesis import assume, given
from hypothesis import strategies as st

from core.domain.commands import RegisterReceiver
from core.domain.errors import Conflict, FieldError, Invalid, TooLarge
from core.domain.model import Receiver
from core.domain.receivers import decide_registration, fingerprint, new_receiver
from core.domain.schemas import MAX_SCHEMA_BYTES

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["artifact"],
    "properties": {"artifact": {"type": "string"}, "size": {"type": "number"}},
}


def register(**changes: Any) -> RegisterReceiver:
    fields: dict[str, Any] = {
        "name": "build",
        "type": "ci.build",
        "version": "1.0.0",
        "description": "Build results",
        "schema": SCHEMA,
    }
    fields.update(changes)
    return RegisterReceiver(**fields)


def make(cmd: RegisterReceiver, id: str = "R1") -> Receiver:
    receiver, _ = new_receiver(cmd, id=id, tenant_id="T1", now=NOW)
    return receiver


def invalid_fields(cmd: RegisterReceiver) -> list[str]:
    with pytest.raises(Invalid) as caught:
        new_receiver(cmd, id="R1", tenant_id="T1", now=NOW)
    return [e.field for e in caught.value.errors]


# --- new_receiver ---------------------------------------------------------------------------


def test_a_valid_registration_makes_a_receiver_and_its_compiled_schema() -> None:
    receiver, compiled = new_receiver(register(), id="R1", tenant_id="T1", now=NOW)
    assert receiver == Receiver(
        id="R1",
        tenant_id="T1",
        name="build",
        type="ci.build",
        version="1.0.0",
        description="Build results",
        schema=SCHEMA,
        fingerprint=fingerprint("build", "ci.build", "1.0.0", SCHEMA),
        created_at=NOW,
    )
    assert compiled.errors({"artifact": "a.rpm"}) == []
    assert [e.field for e in compiled.errors({"size": "big"})] == ["/payload", "/payload/size"]


def test_values_are_stored_as_given_not_trimmed() -> None:
    receiver = make(register(name="  build ", type="\tci.build", version="1.0 ", description=" d "))
    assert (receiver.name, receiver.type, receiver.version, receiver.description) == (
        "  build ",
        "\tci.build",
        "1.0 ",
        " d ",
    )
    assert receiver.fingerprint == fingerprint("  build ", "\tci.build", "1.0 ", SCHEMA)


@pytest.mark.parametrize("field", ["name", "type", "version"])
@pytest.mark.parametrize("length", [1, 254, 255])
def test_names_up_to_255_characters_are_accepted(field: str, length: int) -> None:
    receiver = make(register(**{field: "n" * length}))
    assert getattr(receiver, field) == "n" * length


@pytest.mark.parametrize("field", ["name", "type", "version"])
def test_a_name_of_256_characters_is_refused(field: str) -> None:
    assert invalid_fields(register(**{field: "n" * 256})) == [f"/{field}"]


@pytest.mark.parametrize("field", ["name", "type", "version"])
def test_255_characters_counts_characters_not_bytes(field: str) -> None:
    assert getattr(make(register(**{field: "\u00e9" * 255})), field) == "\u00e9" * 255


@pytest.mark.parametrize("field", ["name", "type", "version"])
@pytest.mark.parametrize("blank", ["", " ", "   ", "\t\n", "\u00a0", "\u3000 "])
def test_blank_or_whitespace_only_names_are_refused(field: str, blank: str) -> None:
    assert invalid_fields(register(**{field: blank})) == [f"/{field}"]


@pytest.mark.parametrize("field", ["name", "type", "version"])
def test_255_characters_of_text_with_whitespace_around_is_still_measured_untrimmed(
    field: str,
) -> None:
    assert invalid_fields(register(**{field: " " + "n" * 255})) == [f"/{field}"]


@pytest.mark.parametrize("length", [0, 1, 4095, 4096])
def test_descriptions_up_to_4096_characters_are_accepted(length: int) -> None:
    assert make(register(description="d" * length)).description == "d" * length


def test_a_description_of_4097_characters_is_refused() -> None:
    assert invalid_fields(register(description="d" * 4097)) == ["/description"]


def test_a_whitespace_description_is_fine() -> None:
    assert make(register(description="   ")).description == "   "


def test_every_field_error_is_reported_at_once() -> None:
    cmd = register(name=" ", type="t" * 256, version="", description="d" * 4097, schema={"type": 1})
    with pytest.raises(Invalid) as caught:
        new_receiver(cmd, id="R1", tenant_id="T1", now=NOW)
    assert [e.field for e in caught.value.errors] == [
        "/name",
        "/type",
        "/version",
        "/description",
        "/schema",
    ]


def test_an_unsupported_dialect_is_reported_with_the_other_field_errors() -> None:
    fields = invalid_fields(register(name="", schema={"$schema": "https://example.com/s"}))
    assert fields == ["/name", "/schema/$schema"]


def test_a_remote_ref_is_refused() -> None:
    with pytest.raises(Invalid) as caught:
        new_receiver(
            register(schema={"$ref": "https://example.com/s.json"}), id="R", tenant_id="T", now=NOW
        )
    (error,) = caught.value.errors
    assert error.field == "/schema"
    assert "never fetches (https://example.com/s.json)" in error.message


def test_a_schema_over_256_kib_is_too_large() -> None:
    big = {"description": "x" * MAX_SCHEMA_BYTES}
    with pytest.raises(TooLarge) as caught:
        new_receiver(register(name="", schema=big), id="R", tenant_id="T", now=NOW)
    assert [e.field for e in caught.value.errors] == ["/schema"]


def test_a_schema_of_exactly_256_kib_is_accepted() -> None:
    schema = {"description": "x" * (MAX_SCHEMA_BYTES - len(b'{"description":""}'))}
    assert len(msgspec.json.encode(schema)) == MAX_SCHEMA_BYTES
    assert make(register(schema=schema)).schema == schema


@pytest.mark.parametrize("number", [2**53, -(2**53), 10**30])
def test_a_schema_that_jcs_cannot_canonicalize_is_refused(number: int) -> None:
    with pytest.raises(Invalid) as caught:
        new_receiver(register(schema={"maximum": number}), id="R", tenant_id="T", now=NOW)
    (error,) = caught.value.errors
    assert error.field == "/schema"
    assert "RFC 8785" in error.message


def test_the_largest_safe_integer_is_fine() -> None:
    make(register(schema={"maximum": 2**53 - 1, "minimum": -(2**53 - 1)}))


# --- fingerprint ----------------------------------------------------------------------------

KNOWN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["artifact"],
    "properties": {"size": {"type": "number", "maximum": 1.5e21}, "artifact": {"type": "string"}},
}
KNOWN_CANONICAL = (
    b'{"name":"build","schema":{"properties":{"artifact":{"type":"string"},'
    b'"size":{"maximum":1.5e+21,"type":"number"}},"required":["artifact"],"type":"object"},'
    b'"type":"ci.build","version":"1.0.0"}'
)
KNOWN_FINGERPRINT = "0539219928bd74a0f91b98c2686f06fc354e7053df73d5a2f97cb098c6c905ca"


def test_a_known_fingerprint_vector() -> None:
    """Pinned: a change here changes every stored fingerprint on every backend."""
    assert fingerprint("build", "ci.build", "1.0.0", KNOWN_SCHEMA) == KNOWN_FINGERPRINT
    assert hashlib.sha256(KNOWN_CANONICAL).hexdigest() == KNOWN_FINGERPRINT
    assert rfc8785.dumps(
        {"name": "build", "type": "ci.build", "version": "1.0.0", "schema": KNOWN_SCHEMA}
    ) == (KNOWN_CANONICAL)


def test_the_fingerprint_is_lowercase_hex_sha256() -> None:
    value = fingerprint("a", "b", "c", {})
    assert len(value) == 64
    assert value == value.lower()
    int(value, 16)


def test_fingerprint_follows_jcs_number_rules() -> None:
    assert fingerprint("a", "b", "c", {"maximum": 1}) == fingerprint(
        "a", "b", "c", {"maximum": 1.0}
    )
    assert fingerprint("a", "b", "c", {"maximum": 1}) != fingerprint(
        "a", "b", "c", {"maximum": "1"}
    )


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=6,
)
schemas = st.dictionaries(st.text(max_size=6), json_values, max_size=4)
texts = st.text(max_size=12)


def shuffled(value: Any, rnd: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {k: shuffled(v, rnd) for k, v in items}
    if isinstance(value, list):
        return [shuffled(v, rnd) for v in value]
    return value


@given(
    name=texts,
    type_=texts,
    version=texts,
    schema=schemas,
    rnd=st.randoms(use_true_random=False),
    indent=st.none() | st.integers(0, 4) | st.sampled_from(["\t", "  \n"]),
    separators=st.sampled_from([(",", ":"), (", ", ": "), (" ,\n", " :\t")]),
    ensure_ascii=st.booleans(),
)
def test_the_fingerprint_ignores_key_order_and_whitespace(
    name: str,
    type_: str,
    version: str,
    schema: dict[str, Any],
    rnd: random.Random,
    indent: int | str | None,
    separators: tuple[str, str],
    ensure_ascii: bool,
) -> None:
    text = json.dumps(
        shuffled(schema, rnd), indent=indent, separators=separators, ensure_ascii=ensure_ascii
    )
    reparsed = json.loads(text)
    assert fingerprint(name, type_, version, reparsed) == fingerprint(name, type_, version, schema)
    decoded = msgspec.json.decode(text.encode())
    assert fingerprint(name, type_, version, decoded) == fingerprint(name, type_, version, schema)


@given(
    name=texts,
    type_=texts,
    version=texts,
    schema=schemas,
    part=st.sampled_from(["name", "type_", "version", "schema"]),
    data=st.data(),
)
def test_the_fingerprint_changes_when_any_part_changes(
    name: str, type_: str, version: str, schema: dict[str, Any], part: str, data: st.DataObject
) -> None:
    parts: dict[str, Any] = {"name": name, "type_": type_, "version": version, "schema": schema}
    changed = dict(parts)
    changed[part] = data.draw(schemas if part == "schema" else texts, label=part)
    assume(rfc8785.dumps(changed[part]) != rfc8785.dumps(parts[part]))
    assert fingerprint(**changed) != fingerprint(**parts)


@given(a=texts, b=texts)
def test_the_parts_do_not_bleed_into_each_other(a: str, b: str) -> None:
    if a != b:
        assert fingerprint(a, b, "v", {}) != fingerprint(b, a, "v", {})
    if b:
        assert fingerprint(a + b, "", "v", {}) != fingerprint(a, b, "v", {})


# --- decide_registration --------------------------------------------------------------------


def test_a_new_triple_registers_the_candidate() -> None:
    candidate = make(register())
    assert decide_registration(None, candidate) is candidate


def test_the_same_registration_again_answers_the_existing_receiver() -> None:
    existing = make(register(), id="R1")
    again = make(register(), id="R2")
    decided = decide_registration(existing, again)
    assert decided is existing
    assert decided.id == "R1"


def test_the_same_schema_with_other_key_order_is_the_same_registration() -> None:
    existing = make(register(), id="R1")
    reordered = json.loads(json.dumps(shuffled(SCHEMA, random.Random(3)), indent=2))
    assert reordered == SCHEMA
    again = make(register(schema=reordered), id="R2")
    assert decide_registration(existing, again) is existing


def conflict(existing: Receiver, candidate: Receiver) -> Conflict:
    with pytest.raises(Conflict) as caught:
        decide_registration(existing, candidate)
    return caught.value


def test_another_schema_under_the_same_triple_is_a_conflict() -> None:
    existing = make(register(), id="R1")
    candidate = make(register(schema={**SCHEMA, "required": []}), id="R2")
    refused = conflict(existing, candidate)
    assert [e.field for e in refused.errors] == ["/schema"]
    assert "schema" in refused.detail
    assert "new version" in refused.detail
    assert "R1" in refused.detail


def test_another_description_under_the_same_triple_is_a_conflict() -> None:
    existing = make(register(), id="R1")
    refused = conflict(existing, make(register(description="other"), id="R2"))
    assert refused.errors == (
        FieldError("/description", "differs from the registered description"),
    )
    assert "description" in refused.detail


def test_both_differences_are_named() -> None:
    existing = make(register(), id="R1")
    refused = conflict(existing, make(register(description="x", schema={}), id="R2"))
    assert [e.field for e in refused.errors] == ["/schema", "/description"]
    assert "schema and description" in refused.detail


def test_deciding_between_different_triples_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="same triple"):
        decide_registration(make(register()), make(register(version="2")))
