"""Receiver groups and the gate: when a group completes for an artifact.

A member *passes* for a key K when its latest event for K succeeded. A group is
*complete* for K when it is enabled and every member passes. Recording an
event fires a group exactly when it turns the group from incomplete to complete
(DOMAIN.md, "When a group completes"). Each group is judged on its own members
only, against the group as it is when the event is recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime

import msgspec

from core.domain.commands import CreateGroup, PatchGroup
from core.domain.errors import FieldError, Invalid, raise_if
from core.domain.fields import check_description, check_name
from core.domain.model import (
    Completion,
    DomainEvent,
    Event,
    EventRecorded,
    Group,
    GroupCompleted,
    Nvrpp,
)

MIN_GROUP_MEMBERS = 1
MAX_GROUP_MEMBERS = 100

#: The latest event of each receiver for each key, as far as the decision needs it.
LatestEvents = Mapping[tuple[str, Nvrpp], Event]


def _check_member_count(errors: list[FieldError], field: str, count: int) -> None:
    if not MIN_GROUP_MEMBERS <= count <= MAX_GROUP_MEMBERS:
        errors.append(
            FieldError(
                field,
                f"a group has {MIN_GROUP_MEMBERS} to {MAX_GROUP_MEMBERS} members, not {count}",
            )
        )


def _check_distinct(errors: list[FieldError], field: str, ids: Sequence[str]) -> None:
    seen: set[str] = set()
    for index, receiver_id in enumerate(ids):
        if receiver_id in seen:
            errors.append(FieldError(f"{field}/{index}", f"{receiver_id} is listed twice"))
        seen.add(receiver_id)


def new_group(cmd: CreateGroup, *, id: str, tenant_id: str, now: datetime) -> Group:
    """A new group after checking its fields and members (existence is the caller's check)."""
    errors: list[FieldError] = []
    check_name(errors, "/name", cmd.name)
    check_name(errors, "/type", cmd.type)
    check_name(errors, "/version", cmd.version)
    check_description(errors, "/description", cmd.description)
    _check_member_count(errors, "/event_receiver_ids", len(cmd.event_receiver_ids))
    _check_distinct(errors, "/event_receiver_ids", cmd.event_receiver_ids)
    raise_if(errors, "The group is not valid.")
    return Group(
        id=id,
        tenant_id=tenant_id,
        name=cmd.name,
        type=cmd.type,
        version=cmd.version,
        description=cmd.description,
        enabled=cmd.enabled,
        event_receiver_ids=tuple(cmd.event_receiver_ids),
        created_at=now,
        updated_at=now,
    )


def patch_group(group: Group, cmd: PatchGroup, *, now: datetime) -> Group:
    """The group after a patch; the same object when the patch changes nothing.

    Adding a current member, removing a non-member, or naming one id in both
    lists is refused rather than ignored: it is almost always a caller's mistake.
    """
    errors: list[FieldError] = []
    if cmd.description is not None:
        check_description(errors, "/description", cmd.description)
    _check_distinct(errors, "/add_receiver_ids", cmd.add_receiver_ids)
    _check_distinct(errors, "/remove_receiver_ids", cmd.remove_receiver_ids)
    members = set(group.event_receiver_ids)
    removing = set(cmd.remove_receiver_ids)
    for index, receiver_id in enumerate(cmd.add_receiver_ids):
        if receiver_id in members:
            errors.append(
                FieldError(f"/add_receiver_ids/{index}", f"{receiver_id} is already a member")
            )
        elif receiver_id in removing:
            errors.append(
                FieldError(f"/add_receiver_ids/{index}", f"{receiver_id} is also being removed")
            )
    for index, receiver_id in enumerate(cmd.remove_receiver_ids):
        if receiver_id not in members:
            errors.append(
                FieldError(f"/remove_receiver_ids/{index}", f"{receiver_id} is not a member")
            )
    new_members = tuple(
        [r for r in group.event_receiver_ids if r not in removing]
        + [r for r in dict.fromkeys(cmd.add_receiver_ids) if r not in members]
    )
    if not errors:
        _check_member_count(errors, "/event_receiver_ids", len(new_members))
    raise_if(errors, "The group change is not valid.")

    enabled = group.enabled if cmd.enabled is None else cmd.enabled
    description = group.description if cmd.description is None else cmd.description
    if (
        enabled == group.enabled
        and description == group.description
        and new_members == group.event_receiver_ids
    ):
        return group
    return msgspec.structs.replace(
        group,
        enabled=enabled,
        description=description,
        event_receiver_ids=new_members,
        updated_at=now,
    )


class MemberStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One member's part in a gate: its latest event for the key and whether it passes."""

    event_receiver_id: str
    passing: bool
    latest_event: Event | None


def member_statuses(group: Group, key: Nvrpp, latest: LatestEvents) -> list[MemberStatus]:
    """Per member, in member order: the latest event for `key` and whether it passes."""
    statuses = []
    for receiver_id in group.event_receiver_ids:
        event = latest.get((receiver_id, key))
        statuses.append(
            MemberStatus(
                event_receiver_id=receiver_id,
                passing=event is not None and event.success,
                latest_event=event,
            )
        )
    return statuses


def is_complete(group: Group, key: Nvrpp, latest: LatestEvents) -> bool:
    """Enabled, and every member's latest event for `key` succeeded."""
    if not group.enabled:
        return False
    for receiver_id in group.event_receiver_ids:
        event = latest.get((receiver_id, key))
        if event is None or not event.success:
            return False
    return True


def decide_record(
    events: Iterable[Event],
    groups: Iterable[Group],
    latest: LatestEvents,
    *,
    new_id: Callable[[], str],
) -> list[DomainEvent]:
    """What recording `events`, in order, means: each `EventRecorded`, then the groups it fires.

    `groups` must hold every group that contains a receiver of `events` (others
    are ignored), and `latest` every member's latest event for each key of
    `events` before the first of them. Events are judged one after another, as
    the log will order them, so a batch behaves exactly like single writes.
    """
    by_receiver: dict[str, list[Group]] = {}
    for group in groups:
        for receiver_id in group.event_receiver_ids:
            by_receiver.setdefault(receiver_id, []).append(group)

    current = dict(latest)
    decided: list[DomainEvent] = []
    for event in events:
        key = event.key
        decided.append(EventRecorded(event=event))
        candidates = [g for g in by_receiver.get(event.event_receiver_id, ()) if g.enabled]
        was_complete = {g.id: is_complete(g, key, current) for g in candidates}
        current[(event.event_receiver_id, key)] = event
        for group in candidates:
            if was_complete[group.id] or not is_complete(group, key, current):
                continue
            completion = Completion(
                id=new_id(),
                tenant_id=event.tenant_id,
                group_id=group.id,
                name=key.name,
                version=key.version,
                release=key.release,
                platform_id=key.platform_id,
                package=key.package,
                triggering_event_id=event.id,
                member_event_ids=tuple(current[(r, key)].id for r in group.event_receiver_ids),
                completed_at=event.created_at,
            )
            decided.append(GroupCompleted(completion=completion, group=group))
    return decided


def check_members_exist(ids: Sequence[str], known: set[str], field: str) -> None:
    """Refuse member ids that are not receivers of the tenant (422, never a leak of others')."""
    errors = [
        FieldError(f"{field}/{index}", f"no event receiver {receiver_id} in this tenant")
        for index, receiver_id in enumerate(ids)
        if receiver_id not in known
    ]
    if errors:
        raise Invalid("The group names event receivers that do not exist.", errors)
