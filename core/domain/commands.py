"""Commands: what callers ask of the registry, decoded straight from request bodies.

The tenant and the actor are not part of a command: they come from the
credential (a use case receives them in its context).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from core.domain.subscriptions import Ordering, SubscriptionFilter


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


# --- subscriptions ----------------------------------------------------------------------------


class CreateSubscription(Command, frozen=True, kw_only=True):
    name: str
    url: str
    description: str = ""
    enabled: bool = True
    filter: SubscriptionFilter = msgspec.field(default_factory=SubscriptionFilter)
    ordering: Ordering = "none"


class PatchSubscription(Command, frozen=True, kw_only=True):
    """Any of the create fields; a field left out is unchanged (`filter: {}` matches all)."""

    name: str | None = None
    url: str | None = None
    description: str | None = None
    enabled: bool | None = None
    filter: SubscriptionFilter | None = None
    ordering: Ordering | None = None


class RotateSecret(Command, frozen=True, kw_only=True):
    #: How long the old secret keeps signing beside the new one (default one day).
    grace_seconds: int = 86_400


class Redrive(Command, frozen=True, kw_only=True):
    """Dead deliveries of messages committed in [since, until) go back to pending."""

    since: datetime | None = None
    until: datetime | None = None


class Replay(Command, frozen=True, kw_only=True):
    """Every matching message after this log position is delivered (again)."""

    after: int


# --- identity --------------------------------------------------------------------------------


class TokenRequest(Command, frozen=True, kw_only=True):
    """The token endpoint's form: `grant_type` and the fields of that grant.

    `tenant` names the tenant (its slug) of a user who logs in with a password;
    platform administrators leave it out.
    """

    grant_type: str
    username: str | None = None
    password: str | None = None
    tenant: str | None = None
    api_key: str | None = None
    refresh_token: str | None = None
    #: OAuth 2.0 clients send these; they are accepted and ignored.
    scope: str | None = None
    client_id: str | None = None


class RevokeToken(Command, frozen=True, kw_only=True):
    token: str
    #: RFC 7009's hint (`access_token`, `refresh_token`); the token's shape decides anyway.
    token_type_hint: str | None = None


class CreateUser(Command, frozen=True, kw_only=True):
    username: str
    password: str
    roles: list[str]


class PatchUser(Command, frozen=True, kw_only=True):
    roles: list[str] | None = None
    disabled: bool | None = None
    password: str | None = None


class CreateApiKey(Command, frozen=True, kw_only=True):
    name: str
    role: str
    expires_at: datetime | None = None
