"""Commands: what callers ask of the registry, decoded straight from request bodies.

The tenant and the actor are not part of a command: they come from the
credential (a use case receives them in its context).
"""

from __future__ import annotations

from typing import Any

import msgspec


class Command(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every command."""


class CreateTenant(Command, frozen=True, kw_only=True):
    slug: str
    name: str


class PatchTenant(Command, frozen=True, kw_only=True):
    name: str | None = None
    disabled: bool | None = None


class RegisterReceiver(Command, frozen=True, kw_only=True):
    name: str
    type: str
    version: str
    description: str = ""
    schema: dict[str, Any]


class RecordEvent(Command, frozen=True, kw_only=True):
    name: str
    version: str
    release: str
    platform_id: str
    package: str
    description: str = ""
    payload: dict[str, Any] = msgspec.field(default_factory=dict)
    success: bool
    event_receiver_id: str


class RecordBatch(Command, frozen=True, kw_only=True):
    events: list[RecordEvent]


class CreateGroup(Command, frozen=True, kw_only=True):
    name: str
    type: str
    version: str
    description: str = ""
    enabled: bool = True
    event_receiver_ids: list[str]


class PatchGroup(Command, frozen=True, kw_only=True):
    enabled: bool | None = None
    description: str | None = None
    add_receiver_ids: list[str] = msgspec.field(default_factory=list)
    remove_receiver_ids: list[str] = msgspec.field(default_factory=list)
