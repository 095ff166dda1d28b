"""What every use case shares: its dependencies and the caller's context."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Iterable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Generic, TypeVar

import msgspec

from core.domain.errors import Conflict, NotFound
from core.domain.idempotency import AlreadyAnswered, Answer, Claim, Record, decide
from core.domain.ids import is_ulid
from core.domain.model import DomainEvent, Receiver, stream_of
from core.domain.schemas import CompiledSchema, compile_schema
from core.ports import (
    AppendMeta,
    Clock,
    Combiner,
    IdSource,
    NewEntry,
    ReceiverCache,
    Store,
    WriteTx,
)

T = TypeVar("T")


class Actor(msgspec.Struct, frozen=True, kw_only=True):
    """Who is asking, for which tenant, within which request."""

    tenant_id: str
    principal: str
    #: What the request belongs to (its trace id when traced, else its request id) and
    #: what caused its writes (the request's span id when traced): the log envelope's.
    correlation_id: str | None = None
    causation_id: str | None = None

    def meta(self) -> AppendMeta:
        return AppendMeta(
            actor=self.principal,
            correlation_id=self.correlation_id,
            causation_id=self.causation_id,
        )


class WriteAgain(Exception):
    """A claimed write without `look_first` met an expired record of its key, now deleted:
    make the write again (once)."""


class Once(Generic[T]):
    """A request that carries an Idempotency-Key: its claim, and how its answer is made from
    the use case's result (the entry point knows its answers; the use case stores them).

    A use case that takes one stores the answer with its write (`Deps.write(..., once)` and
    `remember`), and answers a request it has seen before by raising `AlreadyAnswered`.
    """

    __slots__ = ("claim", "remembered", "render")

    def __init__(self, claim: Claim, render: Callable[[T], Answer]) -> None:
        self.claim = claim
        self.render = render
        self.remembered = False

    def record(self, result: T, now: datetime) -> Record:
        claim = self.claim
        self.remembered = True
        return Record(
            scope=claim.scope,
            key=claim.key,
            fingerprint=claim.fingerprint,
            answer=self.render(result),
            created_at=now,
        )


class Deps:
    """The ports a use case talks to, injected by the composition root."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        ids: IdSource,
        receivers: ReceiverCache,
        *,
        combiner: Combiner,
    ) -> None:
        self.store = store
        self.clock = clock
        self.ids = ids
        self.receivers = receivers
        #: Group commit's queue: recordings of one tenant share transactions.
        self.combiner = combiner

    async def receivers_by_id(
        self, tenant_id: str, receiver_ids: Collection[str]
    ) -> dict[str, tuple[Receiver, CompiledSchema]]:
        """The tenant's receivers among `receiver_ids`, with compiled schemas; cache first."""
        found: dict[str, tuple[Receiver, CompiledSchema]] = {}
        missing = []
        for receiver_id in receiver_ids:
            if not is_ulid(receiver_id):
                continue  # names nothing: no store is asked (it may not even store it)
            cached = self.receivers.get(tenant_id, receiver_id)
            if cached is None:
                missing.append(receiver_id)
            else:
                found[receiver_id] = cached
        if missing:
            async with self.store.read() as tx:
                loaded = await tx.receivers.get_many(tenant_id, missing)
            for receiver_id, receiver in loaded.items():
                found[receiver_id] = (receiver, compile_schema(receiver.schema))
                self.receivers.put(*found[receiver_id])
        return found

    async def recall(self, once: Once[T] | None) -> None:
        """Raise `AlreadyAnswered` (or `KeyReused`) when the claimed request has a live record."""
        if once is None:
            return
        claim = once.claim
        async with self.store.read() as tx:
            found = await tx.idempotency.get(claim.scope, claim.key)
        answer = decide(found, claim, self.clock.now())
        if answer is not None:
            raise AlreadyAnswered(answer)

    @asynccontextmanager
    async def write(
        self, tenant_id: str, once: Once[T] | None = None, *, look_first: bool = True
    ) -> AsyncIterator[WriteTx]:
        """A write transaction of the tenant (`Store.write`); with `once`, a claimed one.

        Claimed: the block must store its answer (`remember`) with its writes. A request
        answered before is answered again (`AlreadyAnswered`, nothing written) or refused
        (`KeyReused`), found:
        - with `look_first`, before anything else, under the writer lock: what a use case
          needs whose own checks would otherwise refuse the repeat (a tenant's slug taken
          by the first request, say);
        - always, after a conflict: the record's key taken by a duplicate that committed
          first (under another lock, or, without `look_first`, at any time before). This
          alone spares the hot path (recording an event) a round trip per request: its
          repeat is refused by the record's unique key when it is written, then replayed.
        """
        if once is None:
            async with self.store.write(tenant_id) as tx:
                yield tx
            return
        claim = once.claim
        once.remembered = False  # (a write made again remembers again)
        try:
            async with self.store.write(tenant_id) as tx:
                if look_first:
                    found = await tx.idempotency.get(claim.scope, claim.key)
                    answer = decide(found, claim, self.clock.now())
                    if answer is not None:
                        raise AlreadyAnswered(answer)
                    if found is not None:  # expired, not purged yet: make room for this one
                        await tx.idempotency.remove(claim.scope, claim.key)
                yield tx
                if not once.remembered:
                    raise RuntimeError("a claimed write ended without remembering its answer")
        except Conflict as exc:
            if await self._after_conflict(tenant_id, claim) and not look_first:
                raise WriteAgain from exc
            raise

    async def _after_conflict(self, tenant_id: str, claim: Claim) -> bool:
        """A claimed write met a conflict: replay (or refuse) when the key holds a live
        record. When it holds an expired one (not purged yet), delete it and say so: the
        write may then be made again."""
        async with self.store.read() as rtx:
            found = await rtx.idempotency.get(claim.scope, claim.key)
        now = self.clock.now()
        answer = decide(found, claim, now)
        if answer is not None:
            raise AlreadyAnswered(answer)
        if found is None or not found.expired(now):
            return False
        async with self.store.write(tenant_id) as tx:
            await tx.idempotency.remove(claim.scope, claim.key)
        return True

    def remember(self, tx: WriteTx, once: Once[T] | None, result: T) -> None:
        """Store the claimed request's answer to `result` with the transaction's writes."""
        if once is not None:
            tx.idempotency.add(once.record(result, self.clock.now()))

    def entries(
        self, events: Iterable[DomainEvent], versions: dict[str, int] | None = None
    ) -> list[NewEntry]:
        """Log entries for new domain events.

        `versions` holds the current version of each existing stream written
        to; it is advanced as entries are made, so several entries for one
        stream chain correctly. Streams not named there are new.
        """
        now = self.clock.now()
        current = dict(versions or {})
        made = []
        events = list(events)
        for event, ident in zip(events, self.ids.new_ids(len(events)), strict=True):
            stream = stream_of(event)
            expected = current.get(stream, 0)
            current[stream] = expected + 1
            made.append(NewEntry(id=ident, event=event, expected_version=expected, occurred_at=now))
        return made


class RequestContext(msgspec.Struct, frozen=True, kw_only=True):
    """Where a request came from, for the audit log."""

    address: str | None = None
    request_id: str | None = None
    #: `<METHOD> <path>` of the request, the target of a refused credential.
    route: str | None = None


def ids_only(ids: Iterable[str]) -> list[str]:
    """The strings of `ids` that can be ids: the others name nothing, and no store is asked
    about them (a NUL character, say, which PostgreSQL refuses even to compare)."""
    return [i for i in ids if is_ulid(i)]


def not_found(kind: str, ident: str) -> NotFound:
    """The one answer for both "nothing there" and "another tenant's" (no existence leak)."""
    return NotFound(f"No {kind} {ident}.")
