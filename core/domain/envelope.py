"""The log's envelope and the registry of domain event types and their schema versions.

A domain event is stored as an `Envelope` whose `data` is the event body as
plain JSON-ready builtins, written at the type's *current* schema version.
Reading runs the registered upcasters (v1 -> v2 -> ... -> current) before
converting into the event class, so old rows never need rewriting.

An unknown type or version is a server fault (`UnknownEventType`), never a
silently skipped row.
"""

from __future__ import annotations

import copy
import functools
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

import msgspec

from core.domain import model

__all__ = [
    "REGISTRY",
    "Envelope",
    "EventRegistry",
    "UnknownEventType",
    "Upcaster",
]

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns the data of schema version n into the data of version n + 1."""

_TAG_FIELD = "type"
_NO_UPCASTERS: Mapping[int, Upcaster] = MappingProxyType({})
_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder(dict[str, Any])


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    """One domain event as the log holds it."""

    id: str
    type: str
    schema_version: int
    tenant_id: str
    stream: str
    stream_version: int
    position: int
    correlation_id: str | None = None
    causation_id: str | None = None
    actor: str
    occurred_at: datetime
    data: dict[str, Any]


class UnknownEventType(Exception):
    """The log holds a type or schema version this build cannot read (a server fault)."""

    def __init__(self, type_name: str, schema_version: int | None, reason: str) -> None:
        where = type_name if schema_version is None else f"{type_name} v{schema_version}"
        super().__init__(f"{where}: {reason}")
        self.type_name = type_name
        self.schema_version = schema_version


@dataclass
class _Entry:
    cls: type[model.DomainEvent]
    current: int
    upcasters: dict[int, Upcaster] = field(default_factory=dict)


def _tag_of(cls: type[model.DomainEvent]) -> str:
    if not (isinstance(cls, type) and issubclass(cls, model.DomainEvent)):
        raise TypeError(f"not a DomainEvent class: {cls!r}")
    tag = cls.__struct_config__.tag
    if not isinstance(tag, str) or not tag:
        raise TypeError(f"{cls.__name__} has no string tag: give it `tag=...`")
    return tag


class EventRegistry:
    """Which domain event types exist, at which schema version, and how old data is upgraded.

    `register(cls, version, upcasters)` declares that `cls` is the shape of
    version `version` of its type (the class's msgspec tag), and that
    `upcasters[n]` turns version-n data into version n+1. Versions 1 .. version
    are then all readable, so the chain must cover every n in 1 .. version-1.
    A type can be registered again later at a higher version, giving only the
    new upcasters; re-registering a version, or an upcaster, raises.
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        #: (type, current version) -> a decoder straight into its class (`decode_json`).
        self._decoders: dict[tuple[str, int], msgspec.json.Decoder[Any]] = {}

    def register(
        self,
        cls: type[model.DomainEvent],
        version: int = 1,
        upcasters: Mapping[int, Upcaster] = _NO_UPCASTERS,
    ) -> None:
        name = _tag_of(cls)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"{name}: schema version must be an integer >= 1, got {version!r}")
        entry = self._entries.get(name)
        if entry is not None and version <= entry.current:
            raise ValueError(
                f"{name} v{version} is already registered (current version {entry.current})"
            )
        known = dict(entry.upcasters) if entry is not None else {}
        for n in upcasters:
            if n in known:
                raise ValueError(f"{name}: an upcaster from v{n} is already registered")
            if not 1 <= n < version:
                raise ValueError(
                    f"{name}: upcaster from v{n} is outside the chain 1 .. {version - 1}"
                )
        known.update(upcasters)
        missing = [n for n in range(1, version) if n not in known]
        if missing:
            gaps = ", ".join(f"v{n} -> v{n + 1}" for n in missing)
            raise ValueError(f"{name} v{version}: the upcaster chain has a gap ({gaps})")
        self._entries[name] = _Entry(cls=cls, current=version, upcasters=known)
        self._decoders.clear()  # a version that was current may need upcasting now

    def type_names(self) -> frozenset[str]:
        """Every registered type name."""
        return frozenset(self._entries)

    def event_class(self, type_name: str) -> type[model.DomainEvent]:
        """The class that holds the current shape of a type."""
        return self._entry(type_name, None).cls

    def current_version(self, type_name: str) -> int:
        """The schema version that writing uses for a type."""
        return self._entry(type_name, None).current

    def encode(self, event: model.DomainEvent) -> tuple[str, int, dict[str, Any]]:
        """`(type, schema_version, data)` for the log, always at the current version.

        `data` is the event body as JSON builtins (dicts, lists, str, numbers,
        bools, None; datetimes as RFC 3339 strings), without the tag: the
        envelope's `type` already says it.
        """
        name = model.type_name(event)
        entry = self._entry(name, None)
        if type(event) is not entry.cls:
            raise UnknownEventType(
                name,
                None,
                f"{type(event).__qualname__} is not the registered class {entry.cls.__qualname__}",
            )
        # Through JSON rather than `msgspec.to_builtins`, which keeps tuples as
        # tuples: `data` must equal what reading the stored row gives back.
        data: dict[str, Any] = _json_decoder.decode(_json_encoder.encode(event))
        data.pop(_TAG_FIELD, None)
        return name, entry.current, data

    def encode_json(self, event: model.DomainEvent) -> tuple[str, int, bytes]:
        """`encode`, with `data` as the JSON text the log stores: one pass over the event.

        msgspec writes a tagged struct's tag first (`{"type":"<tag>",...`), so the body
        without it is the rest of that text; decoding it gives `encode`'s `data`.
        Values the caller replaced by `msgspec.Raw` (JSON it encoded already) are copied
        as they are.
        """
        name = model.type_name(event)
        entry = self._entry(name, None)
        if type(event) is not entry.cls:
            raise UnknownEventType(
                name,
                None,
                f"{type(event).__qualname__} is not the registered class {entry.cls.__qualname__}",
            )
        text = _json_encoder.encode(event)
        head = _tag_prefix(name)
        if not text.startswith(head):  # pragma: no cover - msgspec writes the tag first
            raise AssertionError(f"{name}: the encoded event does not start with its tag")
        rest = text[len(head) :]  # `,"field":...}`, or `}` for a struct without fields
        return name, entry.current, b"{" + rest[1:] if rest[:1] == b"," else b"{}"

    def decode(
        self, type_name: str, schema_version: int, data: dict[str, Any]
    ) -> model.DomainEvent:
        """The event stored as `data` at `schema_version`, upgraded to the current shape.

        Raises `UnknownEventType` for an unknown type or a version outside
        1 .. current; `msgspec.ValidationError` if the (upcast) data does not
        fit the class. `data` itself is never modified.
        """
        entry = self._entry(type_name, schema_version)
        if isinstance(schema_version, bool) or not isinstance(schema_version, int):
            raise UnknownEventType(type_name, None, f"bad schema version {schema_version!r}")
        if schema_version > entry.current:
            raise UnknownEventType(
                type_name,
                schema_version,
                f"newer than this build knows (current version {entry.current})",
            )
        if schema_version < 1:
            raise UnknownEventType(type_name, schema_version, "schema versions start at 1")
        body = data
        if schema_version < entry.current:
            body = copy.deepcopy(data)
            for n in range(schema_version, entry.current):
                body = entry.upcasters[n](body)
        return msgspec.convert(body, entry.cls)

    def decode_json(
        self, type_name: str, schema_version: int, data: str | bytes
    ) -> model.DomainEvent:
        """`decode` of a stored entry's JSON text: at the current version straight into its
        class (no dict in between: what makes replay fast); older ones through `decode`."""
        decoder = self._decoders.get((type_name, schema_version))
        if decoder is None:
            entry = self._entry(type_name, schema_version)
            if schema_version != entry.current or isinstance(schema_version, bool):
                return self.decode(type_name, schema_version, _json_decoder.decode(data))
            decoder = self._decoders[(type_name, schema_version)] = msgspec.json.Decoder(entry.cls)
        event: model.DomainEvent = decoder.decode(data)
        return event

    def decode_envelope(self, envelope: Envelope) -> model.DomainEvent:
        """The domain event an envelope holds (see `decode`)."""
        return self.decode(envelope.type, envelope.schema_version, envelope.data)

    def _entry(self, type_name: str, schema_version: int | None) -> _Entry:
        entry = self._entries.get(type_name)
        if entry is None:
            raise UnknownEventType(type_name, schema_version, "unknown event type")
        return entry


@functools.cache
def _tag_prefix(name: str) -> bytes:
    """The start of a tagged struct's JSON: `{"type":"<tag>"`."""
    return b'{"' + _TAG_FIELD.encode() + b'":' + _json_encoder.encode(name)


def _default_registry() -> EventRegistry:
    registry = EventRegistry()
    for cls in typing.get_args(model.AnyDomainEvent):
        registry.register(cls, 1)
    return registry


REGISTRY: EventRegistry = _default_registry()
"""Every event class of `model.AnyDomainEvent`, at its current schema version."""
