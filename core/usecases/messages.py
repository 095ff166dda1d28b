"""Messages: what a tenant's subscribers receive, read from the log (the outbox) by position.

The log is the outbox: a message exists for every published domain event once its
transaction has committed, and is found again by its log position. The message id
is the log entry's id (a ULID), so a consumer that reads a message twice (a
reconnection that resumes from an earlier position) can tell it is the same one.

A reader may ask for some messages only (`MessageFilter`: any of some types, any of
some subjects). The page still says how far it read (`last`), past the messages it
left out, so a reader moves on and never reads them again.
"""

from __future__ import annotations

import msgspec

from core.domain.envelope import REGISTRY
from core.domain.errors import FieldError, Invalid
from core.domain.fields import MAX_NAME_LENGTH
from core.domain.ids import is_ulid
from core.domain.messages import CloudEvent, Positioned, build_message
from core.domain.model import Event, EventRecorded, GroupCompleted
from core.usecases.common import Actor, Deps

#: The most log entries one call reads.
MAX_ENTRIES = 1000
#: The most types, and the most subjects, one filter names.
MAX_FILTER_VALUES = 100


class MessageFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Which messages a reader wants: one of `types` (empty: any type) and one of
    `subjects` (receiver or group ids; empty: any subject)."""

    types: frozenset[str] = frozenset()
    subjects: frozenset[str] = frozenset()

    def matches(self, message: CloudEvent) -> bool:
        return (not self.types or message.type in self.types) and (
            not self.subjects or message.subject in self.subjects
        )


#: A filter that lets every message through.
EVERY_MESSAGE = MessageFilter()


def message_filter(types: list[str], subjects: list[str]) -> MessageFilter:
    """The filter of these types and subjects, or Invalid naming `type` or `subject`.

    A type is 1 to `MAX_NAME_LENGTH` characters (a receiver's type or a `waypost.` one),
    a subject a receiver or group id; at most `MAX_FILTER_VALUES` of each."""
    errors: list[FieldError] = []
    for field, values in (("type", types), ("subject", subjects)):
        if len(values) > MAX_FILTER_VALUES:
            errors.append(FieldError(field, f"may be given at most {MAX_FILTER_VALUES} times"))
    if any(not 1 <= len(value) <= MAX_NAME_LENGTH for value in types):
        errors.append(FieldError("type", f"must be 1 to {MAX_NAME_LENGTH} characters"))
    if not all(is_ulid(value) for value in subjects):
        errors.append(FieldError("subject", "must be a receiver or group id"))
    if errors:
        raise Invalid("Invalid message filter", errors)
    return MessageFilter(types=frozenset(types), subjects=frozenset(subjects))


class MessagePage(msgspec.Struct, frozen=True, kw_only=True):
    """The messages of the entries after a position, and the last position read.

    `last` may be past the last message: entries that publish nothing (tenant
    changes) are read and skipped. Continue from `last`."""

    messages: list[Positioned]
    last: int


class Messages:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def head(self, actor: Actor) -> int:
        """The tenant's last committed log position: where a tail that starts now begins."""
        async with self._deps.store.read() as tx:
            return await tx.log.head(actor.tenant_id)

    async def after(
        self,
        actor: Actor,
        position: int,
        limit: int = MAX_ENTRIES,
        *,
        only: MessageFilter = EVERY_MESSAGE,
    ) -> MessagePage:
        """The messages of the tenant's log entries after `position` (at most `limit` read)
        that `only` lets through."""
        if position < 0:
            raise Invalid("Invalid position", [FieldError("after", "must be 0 or more")])
        if not 1 <= limit <= MAX_ENTRIES:
            raise Invalid("Invalid limit", [FieldError("limit", f"must be 1..{MAX_ENTRIES}")])
        tenant_id = actor.tenant_id
        # A page may come from a replica a little behind: positions stay gap-free there too,
        # and the next page goes on from `last`.
        async with self._deps.store.read_stale(tenant_id) as tx:
            entries = await tx.log.read(tenant_id, after=position, limit=limit)
            if not entries:
                return MessagePage(messages=[], last=position)
            tenant = await tx.tenants.get(tenant_id)
            if tenant is None:  # pragma: no cover - a tenant with a log exists
                raise RuntimeError(f"tenant {tenant_id} has a log but no read model")
            decoded = [(e, REGISTRY.decode_envelope(e)) for e in entries]
            receiver_ids = {
                d.event.event_receiver_id for _, d in decoded if isinstance(d, EventRecorded)
            }
            receivers = await tx.receivers.get_many(tenant_id, receiver_ids)
            messages = []
            for envelope, event in decoded:
                evidence: list[Event] = []
                if isinstance(event, GroupCompleted):
                    done = event.completion
                    for event_id in dict.fromkeys(
                        (done.triggering_event_id, *done.member_event_ids)
                    ):
                        found = await tx.events.get(tenant_id, event_id)
                        if found is not None:
                            evidence.append(found)
                message = build_message(
                    event,
                    tenant=tenant,
                    message_id=envelope.id,
                    time=envelope.occurred_at,
                    receiver=receivers.get(event.event.event_receiver_id)
                    if isinstance(event, EventRecorded)
                    else None,
                    group_events=evidence,
                )
                if message is not None and only.matches(message):
                    messages.append(Positioned(position=envelope.position, message=message))
        return MessagePage(messages=messages, last=entries[-1].position)
