"""What subscribers receive: CloudEvents 1.0 structured JSON messages, built from domain events.

Pure: the message id and time come in as arguments. Extension attribute names
are lower-case letters and digits only (the CloudEvents naming rule); an
attribute that does not apply to a message (`success` and the NVRPP for a
receiver or group change) is left out rather than sent as null. The `data`
lists are always present, empty when they do not apply.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec

from core.domain import ids
from core.domain.model import (
    Completion,
    DomainEvent,
    Event,
    EventRecorded,
    Group,
    GroupCompleted,
    GroupCreated,
    GroupDeleted,
    GroupModified,
    Receiver,
    ReceiverCreated,
    SubscriptionDisabled,
    SubscriptionPinged,
    Tenant,
    TenantCreated,
    TenantModified,
)

__all__ = [
    "DATACONTENTTYPE",
    "SPECVERSION",
    "TYPE_GROUP_COMPLETED",
    "TYPE_GROUP_CREATED",
    "TYPE_GROUP_DELETED",
    "TYPE_GROUP_MODIFIED",
    "TYPE_RECEIVER_CREATED",
    "TYPE_SUBSCRIPTION_DISABLED",
    "TYPE_SUBSCRIPTION_PING",
    "CloudEvent",
    "MessageData",
    "Positioned",
    "build_message",
    "decode_message",
    "encode_message",
    "source_for",
]

SPECVERSION = "1.0"
DATACONTENTTYPE = "application/json"
TYPE_RECEIVER_CREATED = "waypost.receiver.created"
TYPE_GROUP_CREATED = "waypost.group.created"
TYPE_GROUP_MODIFIED = "waypost.group.modified"
TYPE_GROUP_DELETED = "waypost.group.deleted"
TYPE_GROUP_COMPLETED = "waypost.group.completed"
TYPE_SUBSCRIPTION_PING = "waypost.subscription.ping"
TYPE_SUBSCRIPTION_DISABLED = "waypost.subscription.disabled"


class MessageData(msgspec.Struct, frozen=True, kw_only=True):
    """The `data` of every message: three lists, never null (empty when they do not apply)."""

    events: list[Event] = msgspec.field(default_factory=list)
    event_receivers: list[Receiver] = msgspec.field(default_factory=list)
    event_receiver_groups: list[Group] = msgspec.field(default_factory=list)


class CloudEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A CloudEvents 1.0 message in structured JSON mode.

    `specversion` and `datacontenttype` have no default on purpose: with
    `omit_defaults` a default would be left out of the JSON, and both must
    always be sent. Use `build_message` rather than building one by hand.
    """

    specversion: str
    id: str
    source: str
    type: str
    subject: str
    time: datetime
    datacontenttype: str
    success: bool | None = None
    eventname: str | None = None
    eventversion: str | None = None
    release: str | None = None
    platformid: str | None = None
    package: str | None = None
    tenant: str
    data: MessageData


class Positioned(msgspec.Struct, frozen=True, kw_only=True):
    """A message and the position in its tenant's log of the entry it was built from: the
    cursor a reader resumes after, and the order of messages."""

    position: int
    message: CloudEvent
    #: The entry's correlation and causation ids (a traced request's trace and span id):
    #: what a delivery of the message continues.
    correlation_id: str | None = None
    causation_id: str | None = None


def source_for(tenant: Tenant) -> str:
    """The CloudEvents `source` of every message of a tenant."""
    return f"/waypost/tenants/{tenant.slug}"


def _check_tenant(tenant: Tenant, tenant_id: str, what: str) -> None:
    if tenant_id != tenant.id:
        raise ValueError(f"{what} belongs to another tenant than {tenant.id}")


def _evidence(completion: Completion, group_events: Sequence[Event], tenant: Tenant) -> list[Event]:
    """The evidence in message order: the triggering event first, then members' in listed order."""
    wanted = [completion.triggering_event_id]
    wanted += [i for i in completion.member_event_ids if i != completion.triggering_event_id]
    by_id: dict[str, Event] = {}
    for event in group_events:
        if event.id in by_id:
            raise ValueError(f"evidence event {event.id} is given twice")
        by_id[event.id] = event
    if len(set(wanted)) != len(wanted):
        raise ValueError("completion lists a member event twice")
    if set(by_id) != set(wanted):
        missing = sorted(set(wanted) - set(by_id))
        extra = sorted(set(by_id) - set(wanted))
        raise ValueError(
            "group_events must be the completion's evidence"
            f" (missing {missing}, not listed {extra})"
        )
    key = completion.key
    for event in by_id.values():
        _check_tenant(tenant, event.tenant_id, f"evidence event {event.id}")
        if event.key != key:
            raise ValueError(f"evidence event {event.id} is about another artifact")
        if not event.success:
            raise ValueError(f"evidence event {event.id} is not a success")
    return [by_id[i] for i in wanted]


def build_message(  # noqa: PLR0911 - one answer per kind of event
    event: DomainEvent,
    *,
    tenant: Tenant,
    message_id: str,
    time: datetime,
    receiver: Receiver | None = None,
    group_events: Sequence[Event] = (),
) -> CloudEvent | None:
    """The message subscribers get for a domain event, or None if it is not published.

    - `EventRecorded`: type = the receiver's `type`; `receiver` must be the
      event's receiver. Subject: the receiver id.
    - `ReceiverCreated`: `waypost.receiver.created`, subject the receiver id.
    - `GroupCreated` / `GroupModified` / `GroupDeleted`:
      `waypost.group.created` / `.modified` / `.deleted`, subject the group id.
    - `GroupCompleted`: `waypost.group.completed`, subject the group id;
      the group is the event's snapshot and `group_events` exactly the
      evidence (the triggering event and the ids in
      `completion.member_event_ids`). `data.events` lists the triggering
      event first, then the other members' latest events in the order the
      completion lists them.
    - `SubscriptionPinged` / `SubscriptionDisabled`: `waypost.subscription.ping` /
      `.disabled`, subject the subscription id, `data` lists empty (the subscription
      itself is read with `GET /api/v1/subscriptions/{id}`: its `disabled_reason`).
    - `TenantCreated` / `TenantModified`: None (platform-level, not published
      to the tenant's subscribers).

    `time` must be timezone-aware; it is sent in UTC. Every entity must belong
    to `tenant`. Inconsistent arguments raise ValueError (a caller bug).
    """
    if not ids.is_ulid(message_id):
        raise ValueError(f"message id must be a ULID, got {message_id!r}")
    if time.tzinfo is None or time.utcoffset() is None:
        raise ValueError("message time must be timezone-aware")

    def message(
        type_: str,
        subject: str,
        data: MessageData,
        *,
        success: bool | None = None,
        nvrpp: Event | Completion | None = None,
    ) -> CloudEvent:
        return CloudEvent(
            specversion=SPECVERSION,
            id=message_id,
            source=source_for(tenant),
            type=type_,
            subject=subject,
            time=time.astimezone(UTC),
            datacontenttype=DATACONTENTTYPE,
            success=success,
            eventname=None if nvrpp is None else nvrpp.name,
            eventversion=None if nvrpp is None else nvrpp.version,
            release=None if nvrpp is None else nvrpp.release,
            platformid=None if nvrpp is None else nvrpp.platform_id,
            package=None if nvrpp is None else nvrpp.package,
            tenant=tenant.slug,
            data=data,
        )

    match event:
        case EventRecorded(event=recorded):
            _check_tenant(tenant, recorded.tenant_id, f"event {recorded.id}")
            if receiver is None or receiver.id != recorded.event_receiver_id:
                raise ValueError(
                    f"an event.recorded message needs the event's receiver"
                    f" {recorded.event_receiver_id}"
                )
            _check_tenant(tenant, receiver.tenant_id, f"receiver {receiver.id}")
            return message(
                receiver.type,
                receiver.id,
                MessageData(events=[recorded], event_receivers=[receiver]),
                success=recorded.success,
                nvrpp=recorded,
            )
        case ReceiverCreated(receiver=created):
            _check_tenant(tenant, created.tenant_id, f"receiver {created.id}")
            return message(
                TYPE_RECEIVER_CREATED, created.id, MessageData(event_receivers=[created])
            )
        case (
            GroupCreated(group=changed) | GroupModified(group=changed) | GroupDeleted(group=changed)
        ):
            _check_tenant(tenant, changed.tenant_id, f"group {changed.id}")
            type_ = {
                GroupCreated: TYPE_GROUP_CREATED,
                GroupModified: TYPE_GROUP_MODIFIED,
                GroupDeleted: TYPE_GROUP_DELETED,
            }[type(event)]
            return message(type_, changed.id, MessageData(event_receiver_groups=[changed]))
        case GroupCompleted(completion=completion, group=group):
            _check_tenant(tenant, completion.tenant_id, f"completion {completion.id}")
            if group.id != completion.group_id:
                raise ValueError(
                    f"a group.completed message needs the completed group {completion.group_id}"
                )
            _check_tenant(tenant, group.tenant_id, f"group {group.id}")
            evidence = _evidence(completion, group_events, tenant)
            return message(
                TYPE_GROUP_COMPLETED,
                group.id,
                MessageData(events=evidence, event_receiver_groups=[group]),
                success=True,
                nvrpp=completion,
            )
        case SubscriptionPinged(subscription_id=subject):
            return message(TYPE_SUBSCRIPTION_PING, subject, MessageData())
        case SubscriptionDisabled(subscription_id=subject):
            return message(TYPE_SUBSCRIPTION_DISABLED, subject, MessageData())
        case TenantCreated() | TenantModified():
            return None
    raise TypeError(f"no message is defined for {type(event).__name__}")


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(CloudEvent)


def encode_message(msg: CloudEvent) -> bytes:
    """The structured-mode JSON body (`application/cloudevents+json`) of a message."""
    return _encoder.encode(msg)


def decode_message(body: bytes) -> CloudEvent:
    """A message back from its JSON body (for consumers and tests); raises msgspec errors."""
    return _decoder.decode(body)
