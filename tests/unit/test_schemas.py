"""Receiver schemas (DOMAIN.md, "Event receivers"): drafts, size, remote refs, error pointers."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.domain.errors import FieldError, Invalid, TooLarge
from core.domain.schemas import (
    CANONICAL_DIALECTS,
    MAX_ERROR_MESSAGE_CHARS,
    MAX_SCHEMA_BYTES,
    MAX_SCHEMA_DEPTH,
    CompiledSchema,
    compile_schema,
    json_depth,
    json_pointer,
)

REFUSED = "remote $ref is refused: the registry never fetches ("


def refusal(schema: dict[str, Any]) -> FieldError:
    with pytest.raises(Invalid) as caught:
        compile_schema(schema)
    assert len(caught.value.errors) == 1
    return caught.value.errors[0]


def assert_never_fetched(compiled: CompiledSchema) -> None:
    assert compiled._retriever.attempts == []


def nested(key: str, depth: int, leaf: Any) -> Any:
    """`depth` levels of {key: ...} around `leaf` (built without recursion)."""
    value = leaf
    for _ in range(depth):
        value = {key: value}
    return value


# --- drafts ---------------------------------------------------------------------------------

DIALECT_SPELLINGS = [
    ("http://json-schema.org/draft-04/schema#", "4"),
    ("http://json-schema.org/draft-04/schema", "4"),
    ("https://json-schema.org/draft-04/schema#", "4"),
    ("https://json-schema.org/draft-04/schema", "4"),
    ("http://json-schema.org/draft-06/schema#", "6"),
    ("http://json-schema.org/draft-06/schema", "6"),
    ("https://json-schema.org/draft-06/schema#", "6"),
    ("https://json-schema.org/draft-06/schema", "6"),
    ("http://json-schema.org/draft-07/schema#", "7"),
    ("http://json-schema.org/draft-07/schema", "7"),
    ("https://json-schema.org/draft-07/schema#", "7"),
    ("https://json-schema.org/draft-07/schema", "7"),
    ("https://json-schema.org/draft/2019-09/schema", "2019-09"),
    ("https://json-schema.org/draft/2019-09/schema#", "2019-09"),
    ("http://json-schema.org/draft/2019-09/schema", "2019-09"),
    ("http://json-schema.org/draft/2019-09/schema#", "2019-09"),
    ("https://json-schema.org/draft/2020-12/schema", "2020-12"),
    ("https://json-schema.org/draft/2020-12/schema#", "2020-12"),
    ("http://json-schema.org/draft/2020-12/schema", "2020-12"),
    ("http://json-schema.org/draft/2020-12/schema#", "2020-12"),
]


@pytest.mark.parametrize(("dialect", "draft"), DIALECT_SPELLINGS)
def test_every_spelling_of_a_supported_draft_selects_it_without_fetching(
    dialect: str, draft: str
) -> None:
    compiled = compile_schema({"$schema": dialect, "type": "object"})
    assert compiled.draft == draft
    assert compiled.errors({}) == []
    assert [e.field for e in compiled.errors([])] == ["/payload"]
    assert_never_fetched(compiled)


@pytest.mark.parametrize(("dialect", "draft"), DIALECT_SPELLINGS)
def test_a_non_canonical_spelling_still_checks_the_schema_against_its_meta_schema(
    dialect: str, draft: str
) -> None:
    error = refusal({"$schema": dialect, "type": 12})
    assert error.field == "/schema"


def test_no_dialect_means_2020_12() -> None:
    assert compile_schema({}).draft == "2020-12"
    assert compile_schema({"type": "object"}).draft == "2020-12"


def test_the_canonical_dialects_are_the_five_supported_drafts() -> None:
    assert set(CANONICAL_DIALECTS) == {"4", "6", "7", "2019-09", "2020-12"}


@pytest.mark.parametrize(
    "dialect",
    [
        "https://example.com/my-meta-schema",
        "http://json-schema.org/draft-03/schema#",
        "http://json-schema.org/schema#",
        "https://json-schema.org/draft/next/schema",
        "HTTPS://JSON-SCHEMA.ORG/draft/2020-12/schema",
        " https://json-schema.org/draft/2020-12/schema",
        "json-schema.org/draft/2020-12/schema",
        "",
        7,
        None,
        {"$ref": "https://example.com"},
    ],
)
def test_any_other_dialect_is_refused(dialect: Any) -> None:
    error = refusal({"$schema": dialect})
    assert error.field == "/schema/$schema"
    assert "draft 4, 6, 7, 2019-09 or 2020-12" in error.message or "must be a string" in (
        error.message
    )


def test_draft_4_boolean_exclusive_maximum() -> None:
    compiled = compile_schema(
        {
            "$schema": "http://json-schema.org/draft-04/schema#",
            "maximum": 5,
            "exclusiveMaximum": True,
        }
    )
    assert compiled.is_valid(4.9)
    assert not compiled.is_valid(5)
    # draft 4 requires a boolean there
    assert refusal(
        {"$schema": "http://json-schema.org/draft-04/schema#", "exclusiveMaximum": 5}
    ).field == ("/schema")


def test_2020_12_numeric_exclusive_maximum() -> None:
    compiled = compile_schema({"exclusiveMaximum": 5})
    assert compiled.is_valid(4.9)
    assert not compiled.is_valid(5)
    # and a boolean is not a number
    error = refusal({"maximum": 5, "exclusiveMaximum": True})
    assert error.field == "/schema"
    assert "exclusiveMaximum" in error.message


def test_2019_09_tuple_items_versus_2020_12_prefix_items() -> None:
    tuple_items: dict[str, Any] = {"items": [{"type": "string"}]}
    compiled = compile_schema(
        {"$schema": "https://json-schema.org/draft/2019-09/schema", **tuple_items}
    )
    assert compiled.is_valid(["a", 1])
    assert not compiled.is_valid([1])
    assert refusal(tuple_items).field == "/schema"  # 2020-12: items is one schema


def test_draft_7_does_not_know_dependent_required() -> None:
    schema: dict[str, Any] = {"dependentRequired": {"a": ["b"]}}
    assert not compile_schema(schema).is_valid({"a": 1})
    draft7 = compile_schema({"$schema": "http://json-schema.org/draft-07/schema#", **schema})
    assert draft7.is_valid({"a": 1})


@given(
    st.dictionaries(
        st.text(max_size=5),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=5),
            lambda children: (
                st.lists(children, max_size=3)
                | st.dictionaries(st.text(max_size=3), children, max_size=3)
            ),
            max_leaves=6,
        ),
        max_size=4,
    )
)
def test_the_empty_schema_accepts_any_object(payload: dict[str, Any]) -> None:
    assert compile_schema({}).errors(payload) == []


# --- size and depth -------------------------------------------------------------------------


def schema_of_size(size: int) -> dict[str, Any]:
    schema = {"description": "x" * (size - len(b'{"description":""}'))}
    assert len(msgspec.json.encode(schema)) == size
    return schema


def test_a_schema_of_exactly_256_kib_is_accepted() -> None:
    assert MAX_SCHEMA_BYTES == 256 * 1024
    compile_schema(schema_of_size(MAX_SCHEMA_BYTES))


def test_one_byte_more_is_too_large() -> None:
    with pytest.raises(TooLarge) as caught:
        compile_schema(schema_of_size(MAX_SCHEMA_BYTES + 1))
    assert [e.field for e in caught.value.errors] == ["/schema"]


def test_size_counts_encoded_bytes_not_characters() -> None:
    character = "\u00e9"  # two bytes in UTF-8
    half = (MAX_SCHEMA_BYTES - len(b'{"description":""}')) // 2 + 1
    with pytest.raises(TooLarge):
        compile_schema({"description": character * half})


def test_a_schema_as_deep_as_the_compiler_takes_compiles() -> None:
    schema = {"const": nested_lists(MAX_SCHEMA_DEPTH - 1)}
    assert json_depth(schema, 10_000) == MAX_SCHEMA_DEPTH
    compile_schema(schema)


def nested_lists(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [MAX_SCHEMA_DEPTH + 1, 1_000, 10_000, 100_000])
def test_a_deeper_schema_is_refused_without_crashing(depth: int) -> None:
    error = refusal(nested("not", depth - 1, {}))
    assert error == FieldError("/schema", f"must nest at most {MAX_SCHEMA_DEPTH} levels")


# --- compile errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": 12}, "12 is not valid under any of the schemas listed in the 'anyOf' keyword"),
        ({"type": "strng"}, "is not valid under any of the schemas listed"),
        ({"minLength": -1}, "-1 is less than the minimum of 0"),
        ({"required": "a"}, "is not of type"),
        ({"pattern": "(unclosed"}, 'is not a "regex"'),
        ({"properties": {"a": {"type": 1}}}, "(at /properties/a/type)"),
        ({"$ref": "#/$defs/missing"}, "Pointer '/$defs/missing' does not exist"),
    ],
)
def test_a_schema_that_does_not_compile_is_refused_with_the_compilers_message(
    schema: dict[str, Any], expected: str
) -> None:
    error = refusal(schema)
    assert error.field == "/schema"
    assert expected in error.message
    assert "\n" not in error.message
    assert "Failed validating" not in error.message
    assert "On instance" not in error.message


# --- remote references ----------------------------------------------------------------------

REMOTE_REFS: list[tuple[dict[str, Any], str]] = [
    ({"$ref": "https://example.com/schema.json"}, "https://example.com/schema.json"),
    ({"$ref": "http://example.com/schema.json#/$defs/a"}, "http://example.com/schema.json"),
    ({"$ref": "file:///etc/passwd"}, "file:///etc/passwd"),
    ({"$ref": "file:///tmp/schema.json#/definitions/a"}, "file:///tmp/schema.json"),
    ({"$ref": "urn:example:schema"}, "urn:example:schema"),
    ({"$ref": "other.json"}, "other.json"),
    ({"$ref": "../schemas/other.json"}, "other.json"),
    ({"$ref": "//example.com/other.json"}, "example.com/other.json"),
    (
        {"$id": "https://example.com/root.json", "$ref": "other.json"},
        "https://example.com/other.json",
    ),
    (
        {"$id": "https://example.com/a/root.json", "properties": {"x": {"$ref": "../b/x.json"}}},
        "https://example.com/b/x.json",
    ),
    ({"$id": "file:///srv/root.json", "$ref": "sibling.json"}, "file:///srv/sibling.json"),
    (
        {
            "$id": "https://example.com/root.json",
            "$defs": {"inner": {"$id": "https://other.example/inner.json", "$ref": "leaf.json"}},
        },
        "https://other.example/leaf.json",
    ),
    (
        {"properties": {"a": {"items": {"allOf": [{"$ref": "https://x.example/deep"}]}}}},
        "https://x.example/deep",
    ),
    ({"$defs": {"unused": {"$ref": "https://x.example/unused"}}}, "https://x.example/unused"),
    ({"anyOf": [{"type": "string"}, {"$ref": "https://x.example/any"}]}, "https://x.example/any"),
    ({"oneOf": [{"$ref": "https://x.example/one"}]}, "https://x.example/one"),
    ({"not": {"$ref": "https://x.example/not"}}, "https://x.example/not"),
    ({"if": {"$ref": "https://x.example/if"}}, "https://x.example/if"),
    ({"if": {}, "then": {"$ref": "https://x.example/then"}}, "https://x.example/then"),
    ({"if": {}, "else": {"$ref": "https://x.example/else"}}, "https://x.example/else"),
    ({"patternProperties": {"^a": {"$ref": "https://x.example/pp"}}}, "https://x.example/pp"),
    ({"additionalProperties": {"$ref": "https://x.example/ap"}}, "https://x.example/ap"),
    ({"propertyNames": {"$ref": "https://x.example/pn"}}, "https://x.example/pn"),
    ({"dependentSchemas": {"a": {"$ref": "https://x.example/ds"}}}, "https://x.example/ds"),
    ({"prefixItems": [{"$ref": "https://x.example/pi"}]}, "https://x.example/pi"),
    ({"contains": {"$ref": "https://x.example/contains"}}, "https://x.example/contains"),
    ({"unevaluatedProperties": {"$ref": "https://x.example/up"}}, "https://x.example/up"),
    ({"unevaluatedItems": {"$ref": "https://x.example/ui"}}, "https://x.example/ui"),
    (
        {"contentMediaType": "application/json", "contentSchema": {"$ref": "https://x.example/c"}},
        "https://x.example/c",
    ),
    (
        {
            "$defs": {
                "node": {
                    "properties": {
                        "next": {"$ref": "#/$defs/node"},
                        "far": {"$ref": "https://x.example/far"},
                    }
                }
            },
            "$ref": "#/$defs/node",
        },
        "https://x.example/far",
    ),
    ({"$dynamicRef": "https://x.example/dyn#meta"}, "https://x.example/dyn"),
    (
        {"properties": {"a": {"$dynamicRef": "https://x.example/dyn2#meta"}}},
        "https://x.example/dyn2",
    ),
    (
        {"$id": "https://example.com/root.json", "properties": {"a": {"$dynamicRef": "o#m"}}},
        "https://example.com/o",
    ),
    (
        {
            "$schema": "http://json-schema.org/draft-04/schema#",
            "id": "http://example.com/root.json",
            "properties": {"a": {"$ref": "other.json"}},
        },
        "other.json",
    ),
    (
        {
            "$schema": "http://json-schema.org/draft-06/schema#",
            "definitions": {"a": {"$ref": "https://x.example/d6"}},
        },
        "https://x.example/d6",
    ),
    (
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "items": [{"$ref": "https://x.example/d7items"}],
        },
        "https://x.example/d7items",
    ),
    (
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "dependencies": {"a": {"$ref": "https://x.example/d7dep"}},
        },
        "https://x.example/d7dep",
    ),
    (
        {
            "$schema": "https://json-schema.org/draft/2019-09/schema",
            "properties": {"a": {"$ref": "https://x.example/d19"}},
        },
        "https://x.example/d19",
    ),
    # another draft's meta-schema is not bundled for this draft: it would be fetched
    ({"$ref": "http://json-schema.org/draft-07/schema#"}, "http://json-schema.org/draft-07/schema"),
    # an embedded resource naming an unknown meta-schema: the compiler asks for it
    (
        {"$defs": {"e": {"$id": "https://e.example/e", "$schema": "https://e.example/meta"}}},
        "https://e.example/meta",
    ),
]


@pytest.mark.parametrize(("schema", "uri"), REMOTE_REFS)
def test_every_remote_or_file_reference_is_refused_at_compile_time(
    schema: dict[str, Any], uri: str
) -> None:
    error = refusal(schema)
    assert error.field == "/schema"
    assert error.message.startswith(REFUSED)
    assert uri in error.message


LOCAL_REFS: list[dict[str, Any]] = [
    {"$defs": {"s": {"type": "string"}}, "properties": {"a": {"$ref": "#/$defs/s"}}},
    {"$defs": {"s": {"$anchor": "str", "type": "string"}}, "properties": {"a": {"$ref": "#str"}}},
    {
        "$id": "https://example.com/root.json",
        "$defs": {"s": {"type": "string"}},
        "properties": {"a": {"$ref": "https://example.com/root.json#/$defs/s"}},
    },
    {
        "$id": "https://example.com/root.json",
        "$defs": {"s": {"$id": "s.json", "type": "string"}},
        "properties": {"a": {"$ref": "s.json"}},
    },
    {
        "$defs": {"s": {"$id": "urn:example:s", "type": "string"}},
        "properties": {"a": {"$ref": "urn:example:s"}},
    },
    {
        "$dynamicAnchor": "node",
        "properties": {"a": {"$dynamicRef": "#node"}, "b": {"type": "string"}},
    },
    {
        "$schema": "https://json-schema.org/draft/2019-09/schema",
        "$recursiveAnchor": True,
        "properties": {"a": {"$recursiveRef": "#"}, "b": {"type": "string"}},
    },
    {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "definitions": {"s": {"type": "string"}},
        "properties": {"a": {"$ref": "#/definitions/s"}},
    },
    {"properties": {"a": {"$ref": "#/properties/b"}, "b": {"type": "string"}}},
]


@pytest.mark.parametrize("schema", LOCAL_REFS)
def test_local_references_resolve_and_nothing_is_fetched_later(schema: dict[str, Any]) -> None:
    compiled = compile_schema(schema)
    assert_never_fetched(compiled)
    for instance in [{"a": "x"}, {"a": 1}, {"a": {"a": {"a": 1, "b": 2}}}, {"b": 3}, [], 1]:
        compiled.errors(instance)
    assert_never_fetched(compiled)


def test_a_reference_to_the_bundled_meta_schema_of_the_same_draft_needs_no_fetch() -> None:
    compiled = compile_schema({"properties": {"s": {"$ref": CANONICAL_DIALECTS["2020-12"]}}})
    assert compiled.errors({"s": {"type": "object"}}) == []
    assert [e.field for e in compiled.errors({"s": {"type": 12}})] == ["/payload/s/type"]
    assert_never_fetched(compiled)


def test_references_inside_data_or_unknown_keywords_are_never_followed() -> None:
    compiled = compile_schema(
        {
            "x-extension": {"$ref": "https://x.example/never"},
            "const": {"$ref": "https://x.example/data"},
            "examples": [{"$ref": "https://x.example/example"}],
        }
    )
    assert compiled.is_valid({"$ref": "https://x.example/data"})
    assert [e.field for e in compiled.errors({})] == ["/payload"]
    assert_never_fetched(compiled)


# --- validation errors ----------------------------------------------------------------------

PAYLOAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "when"],
    "properties": {
        "id": {},
        "when": {},
        "a/b": {"type": "string"},
        "t~x": {"type": "string"},
        "~/": {"type": "string"},
        "n": {"type": "integer", "maximum": 3, "multipleOf": 2},
        "list": {"items": {"type": "string"}},
        "deep": {"properties": {"x": {"properties": {"y": {"enum": [1, 2]}}}}},
    },
    "additionalProperties": False,
}


def test_every_validation_error_is_reported_with_its_pointer() -> None:
    compiled = compile_schema(PAYLOAD_SCHEMA)
    payload = {
        "a/b": 1,
        "t~x": 2,
        "~/": 3,
        "n": 5,
        "list": [1, "ok", 3, "ok", "ok", "ok", "ok", "ok", "ok", "ok", 10],
        "deep": {"x": {"y": 3}},
        "extra": True,
    }
    assert [e.field for e in compiled.errors(payload)] == [
        "/payload",
        "/payload",
        "/payload",
        "/payload/a~1b",
        "/payload/deep/x/y",
        "/payload/list/0",
        "/payload/list/2",
        "/payload/list/10",
        "/payload/n",
        "/payload/n",
        "/payload/t~0x",
        "/payload/~0~1",
    ]
    messages = {(e.field, e.message) for e in compiled.errors(payload)}
    assert ("/payload", '"id" is a required property') in messages
    assert ("/payload", '"when" is a required property') in messages
    assert ("/payload/n", "5 is greater than the maximum of 3") in messages
    assert ("/payload/n", "5 is not a multiple of 2") in messages
    assert ("/payload/a~1b", '1 is not of type "string"') in messages
    assert any(f == "/payload" and "extra" in m for f, m in messages)


def test_errors_take_a_prefix() -> None:
    compiled = compile_schema(PAYLOAD_SCHEMA)
    fields = [e.field for e in compiled.errors({"id": 1, "when": 2, "n": 1}, prefix="/events/3")]
    assert fields == ["/events/3/n"]
    assert compiled.errors({"id": 1, "when": 2}, prefix="") == []


def test_the_order_of_errors_does_not_depend_on_the_key_order_of_the_schema() -> None:
    def reverse(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: reverse(v) for k, v in reversed(value.items())}
        if isinstance(value, list):
            return [reverse(v) for v in value]
        return value

    payload = {"a/b": 1, "t~x": 2, "n": 5, "list": [1, 2], "extra": 1}
    forward = compile_schema(PAYLOAD_SCHEMA).errors(payload)
    backward = compile_schema(reverse(PAYLOAD_SCHEMA)).errors(reverse(payload))
    assert forward == backward
    assert forward == compile_schema(PAYLOAD_SCHEMA).errors(payload)


def test_long_messages_are_clipped() -> None:
    compiled = compile_schema({"type": "array"})
    (error,) = compiled.errors({"big": "x" * 100_000})
    assert len(error.message) == MAX_ERROR_MESSAGE_CHARS
    assert error.message.endswith("\u2026")


def test_empty_keys_keep_their_place_in_the_pointer() -> None:
    # jsonschema_rs 0.60 drops "" from its instance paths; the pointer must not
    compiled = compile_schema(
        {
            "properties": {
                "": {"properties": {"": {"type": "string"}, "a": {"type": "string"}}},
                "a": {"type": "integer"},
            },
            "additionalProperties": {"additionalProperties": False},
        }
    )
    errors = compiled.errors({"": {"": 1, "a": 2}, "a": 1.5, "b": {"": 1}, "c": {"": {"": 3}}})
    assert [e.field for e in errors] == [
        "/payload//",
        "/payload//a",
        "/payload/a",
        "/payload/b/",
        "/payload/c/",
    ]
    objects = compile_schema({"additionalProperties": {"$ref": "#"}, "type": "object"})
    # the same message about the same value at paths that differ only by "" keys
    assert [e.field for e in objects.errors({"a": 1, "": {"a": 1, "": {"a": 1}}})] == [
        "/payload///a",
        "/payload//a",
        "/payload/a",
    ]
    items = compile_schema({"items": {"additionalProperties": {"items": {"type": "string"}}}})
    assert [e.field for e in items.errors([{"": [1, "x", 2]}, {"k": [3]}])] == [
        "/payload/0//0",
        "/payload/0//2",
        "/payload/1/k/0",
    ]


def leaf_pointers(value: Any, pointer: str = "") -> list[str]:
    """Pointers of every leaf that is not a string (a model of the errors expected below)."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in leaf_pointers(v, pointer + json_pointer([k]))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in leaf_pointers(v, f"{pointer}/{i}")]
    return [] if isinstance(value, str) else [pointer]


json_trees = st.recursive(
    st.integers(-3, 3)
    | st.booleans()
    | st.none()
    | st.sampled_from(["s", "", 0.0, -0.0, 1.0, 2**70, 1e300]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["", "a", "/", "~", "0", "a/~"]), children, max_size=3)
    ),
    max_leaves=15,
)


@given(st.dictionaries(st.sampled_from(["", "a", "/", "~", "0"]), json_trees, max_size=3))
def test_every_error_points_at_its_value(payload: dict[str, Any]) -> None:
    compiled = compile_schema(
        {
            "type": ["object", "array", "string"],
            "additionalProperties": {"$ref": "#"},
            "items": {"$ref": "#"},
        }
    )
    errors = compiled.errors(payload)
    assert sorted(e.field for e in errors) == sorted("/payload" + p for p in leaf_pointers(payload))
    assert all("is not of type" in e.message for e in errors)


@given(st.text(max_size=20))
def test_any_key_is_escaped_in_the_pointer(key: str) -> None:
    compiled = compile_schema({"additionalProperties": {"type": "string"}})
    (error,) = compiled.errors({key: 1})
    assert error.field == "/payload/" + key.replace("~", "~0").replace("/", "~1")
    tokens = error.field.split("/")[2:]
    assert [t.replace("~1", "/").replace("~0", "~") for t in tokens] == [key]


# --- helpers --------------------------------------------------------------------------------


def test_json_pointer() -> None:
    assert json_pointer([]) == ""
    assert json_pointer(["a", 0, "b"]) == "/a/0/b"
    assert json_pointer(["a/b", "m~n", "~1"]) == "/a~1b/m~0n/~01"
    assert json_pointer([""]) == "/"


@pytest.mark.parametrize(
    ("value", "depth"),
    [
        (1, 0),
        ("s", 0),
        (None, 0),
        ({}, 1),
        ([], 1),
        ({"a": 1}, 1),
        ({"a": []}, 2),
        ({"a": [1, {"b": {}}], "c": {}}, 4),
        ([[[[]]]], 4),
    ],
)
def test_json_depth(value: Any, depth: int) -> None:
    assert json_depth(value, 100) == depth


def test_json_depth_stops_past_the_limit() -> None:
    assert json_depth(nested("a", 100_000, 1), 64) == 65
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    assert json_depth(cyclic, 64) == 65


FLAT: dict[str, Any] = {"additionalProperties": {"type": "string"}}
NESTED: dict[str, Any] = {"additionalProperties": FLAT}


@pytest.mark.parametrize(
    ("schema", "instance", "fields"),
    [
        (FLAT, {"00": 1}, ["/payload/00"]),
        (FLAT, {"+1": 1}, ["/payload/+1"]),
        (FLAT, {"0": 1, "00": "ok"}, ["/payload/0"]),
        (FLAT, {"0": "ok", "00": 1}, ["/payload/00"]),
        (FLAT, {"0": 1, "00": 2}, ["/payload/0", "/payload/00"]),
        (NESTED, {"01": {"a": 1}}, ["/payload/01/a"]),
        (NESTED, {"a": {"007": 1}}, ["/payload/a/007"]),
    ],
)
def test_keys_the_validator_reads_as_integers_keep_their_spelling(
    schema: dict[str, Any], instance: dict[str, Any], fields: list[str]
) -> None:
    """jsonschema_rs reports "00" or "+1" as the integer 0 or 1; the pointer names the key."""
    compiled = compile_schema(schema)
    assert sorted(e.field for e in compiled.errors(instance)) == sorted(fields)
