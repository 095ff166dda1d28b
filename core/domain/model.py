"""The registry's entities and the domain events the log records, as frozen msgspec Structs.

Entities are values: a change makes a new one. Domain events carry full
snapshots of what they create or change, so that replaying the log rebuilds
every read model without looking anything up.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class Tenant(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    slug: str
    name: str
    disabled: bool = False
    created_at: datetime
    updated_at: datetime


class Nvrpp(msgspec.Struct, frozen=True, kw_only=True):
    """Which artifact an event is about: name, version, release, platform, package."""

    name: str
    version: str
    release: str
    platform_id: str
    package: str


class Receiver(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    tenant_id: str
    name: str
    type: str
    version: str
    description: str
    schema: dict[str, Any]
    fingerprint: str
    created_at: datetime


class Event(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    tenant_id: str
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

    @property
    def key(self) -> Nvrpp:
        return Nvrpp(
            name=self.name,
            version=self.version,
            release=self.release,
            platform_id=self.platform_id,
            package=self.package,
        )


class Group(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    tenant_id: str
    name: str
    type: str
    version: str
    description: str
    enabled: bool
    event_receiver_ids: tuple[str, ...]
    created_at: datetime
    updated_at: datetime


class Completion(msgspec.Struct, frozen=True, kw_only=True):
    """One firing of a group for an artifact, with its evidence."""

    id: str
    tenant_id: str
    group_id: str
    name: str
    version: str
    release: str
    platform_id: str
    package: str
    triggering_event_id: str
    member_event_ids: tuple[str, ...]
    completed_at: datetime

    @property
    def key(self) -> Nvrpp:
        return Nvrpp(
            name=self.name,
            version=self.version,
            release=self.release,
            platform_id=self.platform_id,
            package=self.package,
        )


# --- domain events: what the log records -------------------------------------------------
# The tag is the envelope's `type`. Each (type, schema_version) is registered in
# core.domain.envelope; a change of shape means a new version and an upcaster.


class DomainEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every domain event."""


class TenantCreated(DomainEvent, frozen=True, kw_only=True, tag="tenant.created"):
    tenant: Tenant


class TenantModified(DomainEvent, frozen=True, kw_only=True, tag="tenant.modified"):
    tenant: Tenant


class ReceiverCreated(DomainEvent, frozen=True, kw_only=True, tag="receiver.created"):
    receiver: Receiver


class EventRecorded(DomainEvent, frozen=True, kw_only=True, tag="event.recorded"):
    event: Event


class GroupCreated(DomainEvent, frozen=True, kw_only=True, tag="group.created"):
    group: Group


class GroupModified(DomainEvent, frozen=True, kw_only=True, tag="group.modified"):
    group: Group


class GroupDeleted(DomainEvent, frozen=True, kw_only=True, tag="group.deleted"):
    group: Group


class GroupCompleted(DomainEvent, frozen=True, kw_only=True, tag="group.completed"):
    """A group fired. It carries the group as it was then (it may change or go later);
    the evidence is named by id in the completion, since events never change."""

    completion: Completion
    group: Group


class SubscriptionPinged(DomainEvent, frozen=True, kw_only=True, tag="subscription.pinged"):
    """Someone asked for a test message to a subscription (`waypost.subscription.ping`).
    Each ping is a stream of its own (`ping_id`): pings never contend with each other."""

    ping_id: str
    subscription_id: str


class SubscriptionDisabled(DomainEvent, frozen=True, kw_only=True, tag="subscription.disabled"):
    """The registry disabled a subscription by itself (`waypost.subscription.disabled`).

    Subscriptions live outside the log (they publish nothing else); their stream holds
    these announcements only, one version per time the registry disabled it."""

    subscription_id: str
    reason: str


AnyDomainEvent = (
    TenantCreated
    | TenantModified
    | ReceiverCreated
    | EventRecorded
    | GroupCreated
    | GroupModified
    | GroupDeleted
    | GroupCompleted
    | SubscriptionPinged
    | SubscriptionDisabled
)


def type_name(event: DomainEvent) -> str:
    """The envelope `type` of a domain event (its msgspec tag)."""
    return str(type(event).__struct_config__.tag)


def stream_of(event: DomainEvent) -> str:  # noqa: PLR0911 - one per kind of event
    """The aggregate a domain event belongs to: a tenant, a receiver, a group, or an event.

    A recorded event is an immutable aggregate of its own (its stream has one
    version), so recording events never contends on a shared stream row.
    """
    match event:
        case TenantCreated(tenant=t) | TenantModified(tenant=t):
            return t.id
        case ReceiverCreated(receiver=r):
            return r.id
        case EventRecorded(event=e):
            return e.id
        case GroupCreated(group=g) | GroupModified(group=g) | GroupDeleted(group=g):
            return g.id
        case GroupCompleted(completion=c):
            return c.group_id
        case SubscriptionPinged(ping_id=ping_id):
            return ping_id
        case SubscriptionDisabled(subscription_id=subscription_id):
            return subscription_id
    raise TypeError(f"not a domain event: {event!r}")
