"""Recording events: validate against the receiver's schema, then decide the gates, in one write."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from core.domain.commands import RecordEvent
from core.domain.errors import DomainError, FieldError, Invalid, TooLarge
from core.domain.events import check_batch_size, new_event, prefix_errors
from core.domain.groupcommit import FailedAt, Recovery, recover
from core.domain.groups import decide_record
from core.domain.model import Completion, Event, EventRecorded, GroupCompleted
from core.ports import AppendMeta, EventFilter, NewEntry, PageRequest
from core.usecases.common import Actor, Deps, Once, WriteAgain, not_found


class Recorded(msgspec.Struct, frozen=True, kw_only=True):
    """What one recording committed: its events, in input order, and the completions of the
    groups they fired (a gate that was already complete fires nothing)."""

    events: list[Event]
    completions: list[Completion]


class _Write:
    """One request's validated events, waiting to be committed (see `Events._commit`), and
    its Idempotency-Key's claim (`once`), whose record joins the transaction that commits
    the events."""

    __slots__ = ("actor", "events", "once")

    def __init__(self, actor: Actor, events: list[Event], once: Once[Recorded] | None) -> None:
        self.actor = actor
        self.events = events
        self.once = once


class Events:
    """Recording and reading events.

    Recording validates a request's events outside any lock, then hands them to group
    commit (`Combiner`, rules in `core.domain.groupcommit`): a request that finds its
    tenant idle commits at once, alone; requests that arrive while one of the tenant's
    transactions is in flight share the next one, judged in arrival order exactly as if
    each had been recorded alone (`decide_record` judges events one after another), and
    each gets its own answer, or its own refusal.
    """

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
        # Validation needs no lock (receivers never change) and happens before combining:
        # a refused request never joins a group.
        events = await self._validate(actor, cmds, batch=batch)
        write = _Write(actor, events, once)
        return await self._deps.combiner.submit(actor.tenant_id, write, len(events), self._commit)

    async def _commit(self, writes: Sequence[_Write]) -> list[Recorded | Exception]:
        """One transaction for a group of writes of one tenant, in order; on failure, what
        `core.domain.groupcommit.recover` says each write gets."""
        progress = _Progress()
        try:
            return await self._transaction(writes, progress)
        except Exception as exc:
            if recover(len(writes), progress.failed_at) is not Recovery.RETRY_ALONE:
                return [exc] * len(writes)
        answers: list[Recorded | Exception] = []
        for write in writes:
            try:
                [recorded] = await self._transaction([write], _Progress())
            except Exception as alone:
                answers.append(alone)
            else:
                answers.append(recorded)
        return answers

    async def _transaction(
        self, writes: Sequence[_Write], progress: _Progress
    ) -> list[Recorded | Exception]:
        """`_attempt`, made again once when a write alone met an expired record of its
        Idempotency-Key (deleted by then: `Deps.write`)."""
        try:
            return await self._attempt(writes, progress)
        except WriteAgain:
            return await self._attempt(writes, _Progress())

    async def _attempt(
        self, writes: Sequence[_Write], progress: _Progress
    ) -> list[Recorded | Exception]:
        """Read the gates, decide and append, under the tenant's writer lock, each write's
        Idempotency-Key record with its events.

        A write alone goes through `Deps.write` with its claim: a key that another request
        committed first is found by the record's unique key and answered from its record
        (`AlreadyAnswered`). A group's records go in its one transaction: a key taken
        (`KeyInUse`) fails it before its commit, and its writes are then made alone."""
        deps = self._deps
        tenant_id = writes[0].actor.tenant_id
        events = [event for write in writes for event in write.events]
        claimed = writes[0].once if len(writes) == 1 else None
        # A repeat is found by the record's unique key (nothing here would refuse it
        # earlier): no lookup first, one round trip fewer on the hot path.
        async with deps.write(tenant_id, claimed, look_first=False) as tx:
            progress.failed_at = FailedAt.BEFORE_COMMIT  # the lock is taken
            receiver_ids = {e.event_receiver_id for e in events}
            # Only enabled groups can fire; with none, the latest events are not needed.
            groups = [g for g in await tx.groups.containing(tenant_id, receiver_ids) if g.enabled]
            latest = {}
            if groups:
                members = set().union(*(g.event_receiver_ids for g in groups))
                keys = {e.key for e in events}
                latest = await tx.latest.get_many(tenant_id, members, keys)
            decided = decide_record(events, groups, latest, new_id=deps.ids.new_id)
            fired = {d.completion.group_id for d in decided if isinstance(d, GroupCompleted)}
            versions = {g: await tx.log.stream_version(tenant_id, g) for g in fired}
            entries = deps.entries(decided, versions)
            answers, parts = _split(writes, entries)
            for write, recorded in zip(writes, answers, strict=True):
                # before the append: the records join the append's statement
                deps.remember(tx, write.once, recorded)
            await tx.append_many(parts)
            progress.failed_at = FailedAt.COMMIT  # what fails from here on is the commit
        return list(answers)

    async def _validate(
        self, actor: Actor, cmds: Sequence[RecordEvent], *, batch: bool
    ) -> list[Event]:
        deps = self._deps
        receivers = await deps.receivers_by_id(actor.tenant_id, {c.event_receiver_id for c in cmds})
        now = deps.clock.now()
        events: list[Event] = []
        refused: list[DomainError] = []
        ids = deps.ids.new_ids(len(cmds))
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
                        id=ids[index],
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


class _Progress:
    """How far a transaction got: where a failure happened (`core.domain.groupcommit`)."""

    __slots__ = ("failed_at",)

    def __init__(self) -> None:
        self.failed_at = FailedAt.BEGIN


def _split(
    writes: Sequence[_Write], entries: Sequence[NewEntry]
) -> tuple[list[Recorded], list[tuple[list[NewEntry], AppendMeta]]]:
    """Each write's answer and log entries: its events' `EventRecorded` entries and the
    `GroupCompleted` entries its events triggered (they follow their trigger in the log)."""
    owner: dict[str, int] = {}
    for index, write in enumerate(writes):
        for event in write.events:
            owner[event.id] = index
    mine: list[list[NewEntry]] = [[] for _ in writes]
    completions: list[list[Completion]] = [[] for _ in writes]
    for entry in entries:
        made = entry.event
        if isinstance(made, EventRecorded):
            mine[owner[made.event.id]].append(entry)
        else:
            assert isinstance(made, GroupCompleted)
            index = owner[made.completion.triggering_event_id]
            mine[index].append(entry)
            completions[index].append(made.completion)
    answers = [
        Recorded(events=write.events, completions=fired)
        for write, fired in zip(writes, completions, strict=True)
    ]
    parts = [(made, write.actor.meta()) for write, made in zip(writes, mine, strict=True)]
    return answers, parts
