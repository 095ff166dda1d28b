"""The artifact view: everything known about one NVRPP, read from one snapshot.

"Is `shop 2.1.0` ready to ship, and if not, which check is missing?" One read
transaction gathers the artifact's events (newest first), the receivers they were
sent to, every group containing one of those receivers with its gate for the
artifact (per member: its latest event and whether it passes, DOMAIN.md "When a
group completes") and each group's completions for the artifact.

Receivers are gathered from at most `SCAN_LIMIT` events of the artifact (newest
first); `ArtifactView.scanned_all` says whether that was all of them. A gate none of
whose members ever saw the artifact is not listed: it says nothing about it.
"""

from __future__ import annotations

from typing import Final

import msgspec

from core.domain.groups import MemberStatus, is_complete, member_statuses
from core.domain.model import Completion, Event, Group, Nvrpp, Receiver
from core.ports import CompletionFilter, EventFilter, PageRequest
from core.usecases.common import Actor, Deps

__all__ = ["SCAN_LIMIT", "ArtifactView", "Artifacts", "GateView"]

#: The most events of one artifact read to find the receivers (and so the gates).
SCAN_LIMIT: Final = 1000
#: The most completions shown per gate.
COMPLETIONS_SHOWN: Final = 20


class GateView(msgspec.Struct, frozen=True, kw_only=True):
    """One group's gate for the artifact."""

    group: Group
    complete: bool
    members: list[MemberStatus]
    completions: list[Completion]

    @property
    def missing(self) -> list[MemberStatus]:
        """The members that do not pass (no event yet, or a latest event that failed)."""
        return [m for m in self.members if not m.passing]


class ArtifactView(msgspec.Struct, frozen=True, kw_only=True):
    key: Nvrpp
    #: The newest events about the artifact (at most the `limit` asked for), newest first.
    events: list[Event]
    #: Whether more events exist than `events` holds.
    more_events: bool
    #: Every receiver named by the artifact's events or by a member of one of its gates.
    receivers: dict[str, Receiver]
    gates: list[GateView]
    #: Whether every event of the artifact was read to find its receivers.
    scanned_all: bool


class Artifacts:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def view(self, actor: Actor, key: Nvrpp, *, limit: int = 50) -> ArtifactView:
        tenant = actor.tenant_id
        where = EventFilter(
            name=key.name,
            version=key.version,
            release=key.release,
            platform_id=key.platform_id,
            package=key.package,
        )
        async with self._deps.store.read() as tx:
            scanned = await tx.events.list(tenant, where, PageRequest(limit=SCAN_LIMIT + 1))
            scanned_all = len(scanned) <= SCAN_LIMIT
            scanned = scanned[:SCAN_LIMIT]
            sent_to = list(dict.fromkeys(e.event_receiver_id for e in scanned))
            groups = await tx.groups.containing(tenant, sent_to) if sent_to else []
            groups.sort(key=lambda g: (g.name, g.type, g.version, g.id))
            members = list(dict.fromkeys(r for g in groups for r in g.event_receiver_ids))
            latest = await tx.latest.get_many(tenant, members, [key]) if members else {}
            receivers = await tx.receivers.get_many(tenant, list(dict.fromkeys(sent_to + members)))
            completions = CompletionFilter(
                name=key.name,
                version=key.version,
                release=key.release,
                platform_id=key.platform_id,
                package=key.package,
            )
            gates = [
                GateView(
                    group=group,
                    complete=is_complete(group, key, latest),
                    members=member_statuses(group, key, latest),
                    completions=await tx.completions.list(
                        tenant, group.id, completions, PageRequest(limit=COMPLETIONS_SHOWN)
                    ),
                )
                for group in groups
            ]
        return ArtifactView(
            key=key,
            events=scanned[:limit],
            more_events=len(scanned) > limit or not scanned_all,
            receivers=receivers,
            gates=gates,
            scanned_all=scanned_all,
        )
