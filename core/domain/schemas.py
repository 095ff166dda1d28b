"""Receiver schemas: compile a JSON Schema once, validate payloads against it many times.

The registry never fetches anything. Every validator is built with a retriever
that refuses and records each URI the compiler asks for, so a remote or file
`$ref` (absolute, relative to an `$id`, nested anywhere, `$dynamicRef`) fails at
compile time, when the receiver is registered, and never later.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

import jsonschema_rs
import msgspec

from core.domain import errors
from core.domain.errors import FieldError

MAX_SCHEMA_BYTES = 256 * 1024
# The compiler refuses deeper documents itself ("Recursion limit reached"); checking
# first, without recursion, keeps the recursive encoders (msgspec, RFC 8785) safe.
MAX_SCHEMA_DEPTH = 255
# Validator messages quote the offending instance; a 1 MiB payload must not be
# echoed back once per error.
MAX_ERROR_MESSAGE_CHARS = 500

SCHEMA_FIELD = "/schema"
DIALECT_FIELD = "/schema/$schema"

DRAFT_4 = "4"
DRAFT_6 = "6"
DRAFT_7 = "7"
DRAFT_2019_09 = "2019-09"
DRAFT_2020_12 = "2020-12"
DEFAULT_DRAFT = DRAFT_2020_12

_VALIDATORS: dict[str, type[jsonschema_rs.Validator]] = {
    DRAFT_4: jsonschema_rs.Draft4Validator,
    DRAFT_6: jsonschema_rs.Draft6Validator,
    DRAFT_7: jsonschema_rs.Draft7Validator,
    DRAFT_2019_09: jsonschema_rs.Draft201909Validator,
    DRAFT_2020_12: jsonschema_rs.Draft202012Validator,
}

# The canonical meta-schema URI of each draft: the compiler knows these without fetching.
CANONICAL_DIALECTS: dict[str, str] = {
    DRAFT_4: "http://json-schema.org/draft-04/schema#",
    DRAFT_6: "http://json-schema.org/draft-06/schema#",
    DRAFT_7: "http://json-schema.org/draft-07/schema#",
    DRAFT_2019_09: "https://json-schema.org/draft/2019-09/schema",
    DRAFT_2020_12: "https://json-schema.org/draft/2020-12/schema",
}


def _dialect_variants() -> dict[str, str]:
    """Every accepted spelling of a `$schema` URI: http or https, with or without a final '#'."""
    variants: dict[str, str] = {}
    for draft, uri in CANONICAL_DIALECTS.items():
        path = uri.split("://", 1)[1].rstrip("#")
        for scheme in ("http", "https"):
            for suffix in ("", "#"):
                variants[f"{scheme}://{path}{suffix}"] = draft
    return variants


_DIALECTS = _dialect_variants()
_RESOURCE_URI = re.compile(r"^Resource '([^']*)'")


def _clip(text: str, limit: int = MAX_ERROR_MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def json_pointer(path: Iterable[str | int]) -> str:
    """The RFC 6901 JSON pointer of a path: '~' becomes '~0' and '/' becomes '~1'."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


_CONTAINERS = (dict, list, tuple)  # a tuple of types: isinstance checks it faster than a union


def json_depth(value: Any, limit: int) -> int:
    """Nesting depth of a JSON value, computed without recursion.

    A scalar has depth 0, a container 1 + its deepest child (an empty one: 1).
    The walk stops as soon as the depth exceeds `limit` and answers `limit + 1`
    then, so a very deep (or cyclic) value costs no more than `limit` levels.
    """
    if not isinstance(value, _CONTAINERS):
        return 0
    for child in value.values() if isinstance(value, dict) else value:
        if isinstance(child, _CONTAINERS):
            break
    else:
        return 1  # flat, the common payload: no walk
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                return limit + 1
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, _CONTAINERS))
    return deepest


class _FetchRefused(Exception):
    """Raised by the retriever: the registry never fetches."""


class _RefusingRetriever:
    """The retriever every validator gets: it records what was asked for and refuses it."""

    __slots__ = ("attempts",)

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def __call__(self, uri: str, /) -> NoReturn:
        self.attempts.append(uri)
        raise _FetchRefused(f"the registry never fetches ({uri})")


def _refused(uri: str) -> errors.Invalid:
    message = _clip(f"remote $ref is refused: the registry never fetches ({uri})")
    return errors.Invalid(
        "The schema refers to a remote document", [FieldError(SCHEMA_FIELD, message)]
    )


def _first_line(message: str) -> str:
    for line in message.splitlines():
        if line.strip():
            return line.strip()
    return "the schema does not compile"


class CompiledSchema:
    """A receiver's schema, compiled once; `errors` lists everything wrong with an instance."""

    __slots__ = ("_retriever", "_validator", "draft")

    def __init__(
        self, validator: jsonschema_rs.Validator, draft: str, retriever: _RefusingRetriever
    ) -> None:
        self._validator = validator
        self._retriever = retriever
        self.draft = draft

    def __repr__(self) -> str:
        return f"CompiledSchema(draft={self.draft!r})"

    def is_valid(self, instance: Any) -> bool:
        return self._validator.is_valid(instance)

    def errors(self, instance: Any, prefix: str = "/payload") -> list[FieldError]:
        """Every validation error: field = prefix + JSON pointer of the instance path.

        Sorted by instance path (array indexes numerically), then message, so the
        answer does not depend on the key order the schema was stored with.
        """
        if self._validator.is_valid(instance):  # the common case: no walk, no sort
            return []
        restorer = _PathRestorer(instance) if _has_lost_key(instance) else None
        found: list[tuple[tuple[tuple[int, int, str], ...], str, str]] = []
        for error in self._validator.iter_errors(instance):
            path: Sequence[str | int] = error.instance_path
            if restorer is not None:
                path = restorer.restore(path, error.message, error.instance)
            found.append((_path_key(path), json_pointer(path), error.message))
        found.sort(key=lambda item: (item[0], item[2]))
        return [FieldError(prefix + pointer, _clip(message)) for _, pointer, message in found]


def _path_key(path: Sequence[str | int]) -> tuple[tuple[int, int, str], ...]:
    return tuple((0, part, "") if isinstance(part, int) else (1, 0, part) for part in path)


# jsonschema_rs 0.60 loses some object keys in `instance_path`:
# - it drops empty-string keys (the instance {"": {"a": 1}} fails at ["a"], not
#   ["", "a"]);
# - it reports a key that reads as an unsigned integer as that integer, so "00", "01"
#   and "+1" come back as 0, 1 and 1 (a plain "0" reads back as itself).
# When the instance has such a key, the true path is found again by walking the
# instance along the reported path, trying "" where a segment may have gone missing
# and every key that reads as a reported integer, and keeping the walks that end on
# the very value the error is about.


def _integer_key(key: str) -> int | None:
    """The integer jsonschema_rs reports `key` as, when it is not `key` itself."""
    digits = key[1:] if key.startswith("+") else key
    if not digits.isascii() or not digits.isdigit():
        return None
    number = int(digits)
    return None if str(number) == key or number >= 2**64 else number


def _has_lost_key(value: Any) -> bool:
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if any(key == "" or _integer_key(key) is not None for key in node):
                return True
            stack.extend(node.values())
        elif isinstance(node, list | tuple):
            stack.extend(node)
    return False


def _children(node: Any, segment: str | int) -> list[tuple[str | int, Any]]:
    """The children a reported segment may stand for, with their true segment."""
    if isinstance(node, dict):
        found: list[tuple[str | int, Any]] = (
            [(str(segment), node[str(segment)])] if str(segment) in node else []
        )
        if isinstance(segment, int):
            found += [(k, v) for k, v in node.items() if _integer_key(k) == segment]
        return found
    if isinstance(node, list | tuple) and isinstance(segment, int) and 0 <= segment < len(node):
        return [(segment, node[segment])]
    return []


def _candidate_paths(
    instance: Any, reported: Sequence[str | int]
) -> list[tuple[Any, list[str | int]]]:
    """Every (value, path) of `instance` whose path reads as `reported` once its "" segments
    are dropped and its integer-looking keys read as integers, the reported reading first.
    No recursion; in a tree each node is met once.
    """
    found: list[tuple[Any, list[str | int]]] = []
    stack: list[tuple[Any, int, list[str | int]]] = [(instance, 0, [])]
    while stack:
        node, i, path = stack.pop()
        if i == len(reported):
            found.append((node, path))
        if isinstance(node, dict) and "" in node:
            stack.append((node[""], i, [*path, ""]))
        if i < len(reported):
            for segment, child in _children(node, reported[i]):
                stack.append((child, i + 1, [*path, segment]))
    return found


class _PathRestorer:
    """Puts the "" segments back into the instance paths of one instance's errors."""

    def __init__(self, instance: Any) -> None:
        self._instance = instance
        self._encodings: dict[int, bytes] = {}
        self._occurrences: dict[tuple[tuple[str | int, ...], str], int] = {}

    def _encoding(self, node: Any) -> bytes:
        key = id(node)  # the nodes live as long as the instance: ids are stable
        if key not in self._encodings:
            self._encodings[key] = msgspec.json.encode(node, order="sorted")
        return self._encodings[key]

    def restore(
        self, reported: Sequence[str | int], message: str, value: Any
    ) -> Sequence[str | int]:
        candidates = _candidate_paths(self._instance, reported)
        if len(candidates) > 1:
            # Keep the paths that lead to the value the error is about (bool and int
            # told apart); identical errors at such paths come once for each of them.
            wanted = msgspec.json.encode(value, order="sorted")
            matching = [c for c in candidates if self._encoding(c[0]) == wanted]
            candidates = matching or candidates
        if not candidates:
            return reported
        key = (tuple(reported), message)
        occurrence = self._occurrences.get(key, 0)
        self._occurrences[key] = occurrence + 1
        return candidates[min(occurrence, len(candidates) - 1)][1]


def _select_draft(schema: dict[str, Any]) -> str:
    if "$schema" not in schema:
        return DEFAULT_DRAFT
    dialect = schema["$schema"]
    if not isinstance(dialect, str):
        raise errors.Invalid(
            "The schema names no supported draft",
            [FieldError(DIALECT_FIELD, "must be a string: the URI of a JSON Schema meta-schema")],
        )
    draft = _DIALECTS.get(dialect)
    if draft is None:
        raise errors.Invalid(
            "The schema names no supported draft",
            [
                FieldError(
                    DIALECT_FIELD,
                    _clip(
                        f"unsupported $schema {dialect!r}: use the meta-schema of draft 4, 6, 7, "
                        f"2019-09 or 2020-12 (for example {CANONICAL_DIALECTS[DEFAULT_DRAFT]}), "
                        "or leave $schema out for 2020-12"
                    ),
                )
            ],
        )
    return draft


def compile_schema(schema: dict[str, Any]) -> CompiledSchema:
    """Compile a receiver schema, refusing what is too large, invalid or remote.

    Raises `errors.TooLarge` (field "/schema") over MAX_SCHEMA_BYTES of JSON, and
    `errors.Invalid` for an unsupported `$schema` (field "/schema/$schema"), a
    document nested deeper than MAX_SCHEMA_DEPTH, a schema that does not compile
    (the compiler's message) or any reference the compiler would have to fetch.
    """
    if json_depth(schema, MAX_SCHEMA_DEPTH) > MAX_SCHEMA_DEPTH:
        raise errors.Invalid(
            "The schema is nested too deeply",
            [FieldError(SCHEMA_FIELD, f"must nest at most {MAX_SCHEMA_DEPTH} levels")],
        )
    size = len(msgspec.json.encode(schema))
    if size > MAX_SCHEMA_BYTES:
        raise errors.TooLarge(
            f"The schema is {size} bytes of JSON; at most {MAX_SCHEMA_BYTES} are accepted",
            [FieldError(SCHEMA_FIELD, f"must be at most {MAX_SCHEMA_BYTES} bytes of JSON")],
        )
    draft = _select_draft(schema)
    # Compile the canonical spelling of `$schema` (the compiler would otherwise try to
    # fetch the meta-schema behind an http/https variant); the stored schema is untouched.
    to_compile = {**schema, "$schema": CANONICAL_DIALECTS[draft]} if "$schema" in schema else schema
    retriever = _RefusingRetriever()
    try:
        validator = _VALIDATORS[draft](to_compile, retriever=retriever)
    except ValueError as exc:
        remote = _remote_uri(exc, retriever)
        if remote is not None:
            raise _refused(remote) from None
        message = _first_line(getattr(exc, "message", None) or str(exc))
        path = getattr(exc, "instance_path", None)
        if path:
            message = f"{message} (at {json_pointer(path)})"
        raise errors.Invalid(
            "The schema does not compile", [FieldError(SCHEMA_FIELD, _clip(message))]
        ) from None
    if retriever.attempts:
        # The compiler asked for something and carried on without it (an embedded
        # resource naming an unknown meta-schema): still a fetch we refuse.
        raise _refused(retriever.attempts[0])
    return CompiledSchema(validator, draft, retriever)


def _remote_uri(exc: ValueError, retriever: _RefusingRetriever) -> str | None:
    """The URI the compiler wanted to fetch, if that is why it failed."""
    if isinstance(exc, jsonschema_rs.ValidationError) and isinstance(
        exc.kind, jsonschema_rs.ValidationErrorKind.Referencing
    ):
        match = _RESOURCE_URI.match(exc.message)
        if match:
            return match.group(1)
    if retriever.attempts:
        return retriever.attempts[0]
    return None
