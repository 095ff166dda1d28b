"""What the API answers: `{"data": ...}` envelopes and the public shape of each entity.

Views leave out what callers do not see (the tenant id: the tenant comes from
the credential). They are built field by field, which is cheaper than any
generic conversion on a page of a thousand events.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

import msgspec

from core.domain.audit import AuditRecord
from core.domain.groups import MemberStatus
from core.domain.identity import ApiKey, User
from core.domain.model import Completion, Event, Group, Receiver, Tenant
from core.usecases import GroupStatus

T = TypeVar("T")


class Data(msgspec.Struct, Generic[T]):
    data: T


class Page(msgspec.Struct, Generic[T]):
    data: list[T]
    next_cursor: str | None


# Concrete envelopes. Each re-declares its fields with the concrete type: Litestar's
# OpenAPI generation does not resolve a generic base's parameter (it would say
# `"data": {"type": "object"}`, and schemathesis would rightly fail the document).
class IdData(Data[str]):
    """`{"data": "<id>"}`: what a create answers."""

    data: str


class IdsData(Data[list[str]]):
    """`{"data": ["<id>", ...]}`: what a batch answers, in input order."""

    data: list[str]


class TenantView(msgspec.Struct, kw_only=True):
    id: str
    slug: str
    name: str
    disabled: bool
    created_at: datetime
    updated_at: datetime


class ReceiverView(msgspec.Struct, kw_only=True):
    id: str
    name: str
    type: str
    version: str
    description: str
    schema: dict[str, Any]
    fingerprint: str
    created_at: datetime


class EventView(msgspec.Struct, kw_only=True):
    id: str
    name: str
    version: str
    release: str
    platform_id: str
    package: str
    description: str
    payload: dict[str, Any]
    success: bool
    event_receiver_id: str
    created_at: datetime


class GroupView(msgspec.Struct, kw_only=True):
    id: str
    name: str
    type: str
    version: str
    description: str
    enabled: bool
    event_receiver_ids: list[str]
    created_at: datetime
    updated_at: datetime


class CompletionView(msgspec.Struct, kw_only=True):
    id: str
    group_id: str
    name: str
    version: str
    release: str
    platform_id: str
    package: str
    triggering_event_id: str
    member_event_ids: list[str]
    completed_at: datetime


class MemberStatusView(msgspec.Struct, kw_only=True):
    event_receiver_id: str
    passing: bool
    latest_event: EventView | None


class GroupStatusView(msgspec.Struct, kw_only=True):
    complete: bool
    members: list[MemberStatusView]


class Status(msgspec.Struct, kw_only=True):
    status: str


class Component(msgspec.Struct, kw_only=True):
    status: str
    detail: str


class Readiness(msgspec.Struct, kw_only=True):
    status: str
    components: dict[str, Component]


def tenant_view(t: Tenant) -> TenantView:
    return TenantView(
        id=t.id,
        slug=t.slug,
        name=t.name,
        disabled=t.disabled,
        created_at=t.created_at,
        updated_at=t.updated_at,
    )


def receiver_view(r: Receiver) -> ReceiverView:
    return ReceiverView(
        id=r.id,
        name=r.name,
        type=r.type,
        version=r.version,
        description=r.description,
        schema=r.schema,
        fingerprint=r.fingerprint,
        created_at=r.created_at,
    )


def event_view(e: Event) -> EventView:
    return EventView(
        id=e.id,
        name=e.name,
        version=e.version,
        release=e.release,
        platform_id=e.platform_id,
        package=e.package,
        description=e.description,
        payload=e.payload,
        success=e.success,
        event_receiver_id=e.event_receiver_id,
        created_at=e.created_at,
    )


def group_view(g: Group) -> GroupView:
    return GroupView(
        id=g.id,
        name=g.name,
        type=g.type,
        version=g.version,
        description=g.description,
        enabled=g.enabled,
        event_receiver_ids=list(g.event_receiver_ids),
        created_at=g.created_at,
        updated_at=g.updated_at,
    )


def completion_view(c: Completion) -> CompletionView:
    return CompletionView(
        id=c.id,
        group_id=c.group_id,
        name=c.name,
        version=c.version,
        release=c.release,
        platform_id=c.platform_id,
        package=c.package,
        triggering_event_id=c.triggering_event_id,
        member_event_ids=list(c.member_event_ids),
        completed_at=c.completed_at,
    )


def member_status_view(m: MemberStatus) -> MemberStatusView:
    return MemberStatusView(
        event_receiver_id=m.event_receiver_id,
        passing=m.passing,
        latest_event=None if m.latest_event is None else event_view(m.latest_event),
    )


def group_status_view(s: GroupStatus) -> GroupStatusView:
    return GroupStatusView(complete=s.complete, members=[member_status_view(m) for m in s.members])


class TenantData(Data[TenantView]):
    data: TenantView


class ReceiverData(Data[ReceiverView]):
    data: ReceiverView


class EventData(Data[EventView]):
    data: EventView


class GroupData(Data[GroupView]):
    data: GroupView


class GroupStatusData(Data[GroupStatusView]):
    data: GroupStatusView


class TenantPage(Page[TenantView]):
    data: list[TenantView]
    next_cursor: str | None


class ReceiverPage(Page[ReceiverView]):
    data: list[ReceiverView]
    next_cursor: str | None


class EventPage(Page[EventView]):
    data: list[EventView]
    next_cursor: str | None


class GroupPage(Page[GroupView]):
    data: list[GroupView]
    next_cursor: str | None


class CompletionPage(Page[CompletionView]):
    data: list[CompletionView]
    next_cursor: str | None


# --- identity --------------------------------------------------------------------------------


class UserView(msgspec.Struct, kw_only=True):
    """A user as shown: never its password hash."""

    id: str
    username: str
    roles: list[str]
    disabled: bool
    created_at: datetime
    updated_at: datetime


class ApiKeyView(msgspec.Struct, kw_only=True):
    """An API key as shown: its prefix (to recognize it), never the key or its hash."""

    id: str
    name: str
    prefix: str
    role: str
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None


class NewApiKeyView(msgspec.Struct, kw_only=True):
    """A new key: `key` is shown this once and is not kept anywhere."""

    id: str
    key: str


class AuditView(msgspec.Struct, kw_only=True):
    id: str
    at: datetime
    actor: str
    action: str
    target: str
    outcome: str
    address: str | None
    request_id: str | None
    reason: str | None


def user_view(u: User) -> UserView:
    return UserView(
        id=u.id,
        username=u.username,
        roles=[str(r) for r in u.roles],
        disabled=u.disabled,
        created_at=u.created_at,
        updated_at=u.updated_at,
    )


def api_key_view(k: ApiKey) -> ApiKeyView:
    return ApiKeyView(
        id=k.id,
        name=k.name,
        prefix=k.prefix,
        role=str(k.roles[0]) if k.roles else "",
        created_at=k.created_at,
        created_by=k.created_by,
        expires_at=k.expires_at,
        revoked_at=k.revoked_at,
    )


def audit_view(r: AuditRecord) -> AuditView:
    return AuditView(
        id=r.id,
        at=r.at,
        actor=r.actor,
        action=str(r.action),
        target=r.target,
        outcome=str(r.outcome),
        address=r.address,
        request_id=r.request_id,
        reason=r.reason,
    )


class UserData(Data[UserView]):
    data: UserView


class NewApiKeyData(Data[NewApiKeyView]):
    data: NewApiKeyView


class ApiKeyData(Data[ApiKeyView]):
    data: ApiKeyView


class UserPage(Page[UserView]):
    data: list[UserView]
    next_cursor: str | None


class ApiKeyPage(Page[ApiKeyView]):
    data: list[ApiKeyView]
    next_cursor: str | None


class AuditPage(Page[AuditView]):
    data: list[AuditView]
    next_cursor: str | None
