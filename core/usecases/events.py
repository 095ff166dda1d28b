"""Recording events: validate against the receiver's schema, then decide the gates, in one write."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from core.domain.commands import RecordEvent
from core.domain.errors import DomainError, FieldError, Invalid, TooLarge
from core.domain.events import check_batch_size, new_event, prefix_errors
from core.domain.groups import decide_record
from core.domain.model import Completion, Event, GroupCompleted
from core.ports import EventFilter, PageRequest
from core.usecases.common import Actor, Deps, Once, WriteAgain, not_found


class Recorded(msgspec.Struct, frozen=True, kw_only=True):
    """What one recording committed: its events, in input order, and the completions of the
    groups they fired (a gate that was already complete fires nothing)."""

    events: list[Event]
    completions: list[Completion]


class Events:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def record(self, actor: Actor, cmd: RecordEvent) -> Event:
        [event] = (await self.record_outcome(actor, cmd)).events
        return event

    async def record_batch(self, actor: Actor, cmds: Sequence[RecordEvent]) -> list[Event]:
        """All or nothing: one refused event refuses the batch, with every error of every event."""
        return (await self.record_batch_outcome(actor, cmds)).events

    async def record_outcome(
        self, actor: Actor, cmd: RecordEvent, once: Once[Recorded] | None = None
    ) -> Recorded:
        """`record`, telling also which groups the event fired; `once`: an Idempotency-Key."""
        return await self._record(actor, [cmd], batch=False, once=once)

    async def record_batch_outcome(
        self, actor: Actor, cmds: Sequence[RecordEvent], once: Once[Recorded] | None = None
    ) -> Recorded:
        """`record_batch`, telling also which groups the events fired."""
        check_batch_size(len(cmds))
        return await self._record(actor, cmds, batch=True, once=once)

    async def _record(
        self,
        actor: Actor,
        cmds: Sequence[RecordEvent],
        *,
        batch: bool,
        once: Once[Recorded] | None,
    ) -> Recorded:
        # Validation needs no lock: receivers never change. The writer lock is
        # held only to read the gates, decide and append.
        events = await self._validate(actor, cmds, batch=batch)
        try:
            return await self._write(actor, events, once)
        except WriteAgain:  # an expired record of the key was in the way: gone now
            return await self._write(actor, events, once)

    async def _write(
        self, actor: Actor, events: list[Event], once: Once[Recorded] | None
    ) -> Recorded:
        deps = self._deps
        # A repeat is found by the record's unique key (nothing here would refuse it
        # earlier): no lookup first, one round trip fewer on the hot path.
        async with deps.write(actor.tenant_id, once, look_first=False) as tx:
            receiver_ids = {e.event_receiver_id for e in events}
            # Only enabled groups can fire; with none, the latest events are not needed.
            groups = [
                g for g in await tx.groups.containing(actor.tenant_id, receiver_ids) if g.enabled
            ]
            latest = {}
            if groups:
                members = set().union(*(g.event_receiver_ids for g in groups))
                keys = {e.key for e in events}
                latest = await tx.latest.get_many(actor.tenant_id, members, keys)
            decided = decide_record(events, groups, latest, new_id=deps.ids.new_id)
            completions = [d.completion for d in decided if isinstance(d, GroupCompleted)]
            fired = {c.group_id for c in completions}
            versions = {g: await tx.log.stream_version(actor.tenant_id, g) for g in fired}
            recorded = Recorded(events=events, completions=completions)
            deps.remember(tx, once, recorded)  # before the append: it joins the append's statement
            await tx.append(deps.entries(decided, versions), actor.meta())
        return recorded

    async def _validate(
        self, actor: Actor, cmds: Sequence[RecordEvent], *, batch: bool
    ) -> list[Event]:
        deps = self._deps
        receivers = await deps.receivers_by_id(actor.tenant_id, {c.event_receiver_id for c in cmds})
        now = deps.clock.now()
        events: list[Event] = []
        refused: list[DomainError] = []
        for index, cmd in enumerate(cmds):
            found = receivers.get(cmd.event_receiver_id)
            try:
                if found is None:
                    raise Invalid(
                        "The event names an event receiver that does not exist.",
                        [
                            FieldError(
                                "/event_receiver_id",
                                f"no event receiver {cmd.event_receiver_id} in this tenant",
                            )
                        ],
                    )
                events.append(
                    new_event(
                        cmd,
                        id=deps.ids.new_id(),
                        tenant_id=actor.tenant_id,
                        now=now,
                        schema=found[1],
                    )
                )
            except DomainError as exc:
                refused.append(prefix_errors(exc, index) if batch else exc)
        if not refused:
            return events
        if not batch:
            raise refused[0]
        errors = [error for exc in refused for error in exc.errors]
        if any(isinstance(exc, TooLarge) for exc in refused):
            raise TooLarge("An event of the batch is too large; nothing was recorded.", errors)
        raise Invalid(
            f"{len(refused)} event(s) of the batch were refused; nothing was recorded.", errors
        )

    async def get(self, actor: Actor, event_id: str) -> Event:
        async with self._deps.store.read_stale(actor.tenant_id) as tx:
            event = await tx.events.get(actor.tenant_id, event_id)
        if event is None:
            raise not_found("event", event_id)
        return event

    async def list(self, actor: Actor, where: EventFilter, page: PageRequest) -> list[Event]:
        async with self._deps.store.read_stale(actor.tenant_id) as tx:
            return await tx.events.list(actor.tenant_id, where, page)
