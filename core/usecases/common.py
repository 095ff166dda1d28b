"""What every use case shares: its dependencies and the caller's context."""

from __future__ import annotations

from collections.abc import Collection, Iterable

import msgspec

from core.domain.errors import NotFound
from core.domain.model import DomainEvent, Receiver, stream_of
from core.domain.schemas import CompiledSchema, compile_schema
from core.ports import AppendMeta, Clock, Combiner, IdSource, NewEntry, ReceiverCache, Store


class Actor(msgspec.Struct, frozen=True, kw_only=True):
    """Who is asking, for which tenant, within which request."""

    tenant_id: str
    principal: str
    correlation_id: str | None = None

    def meta(self) -> AppendMeta:
        return AppendMeta(actor=self.principal, correlation_id=self.correlation_id)


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
        for event in events:
            stream = stream_of(event)
            expected = current.get(stream, 0)
            current[stream] = expected + 1
            made.append(
                NewEntry(
                    id=self.ids.new_id(), event=event, expected_version=expected, occurred_at=now
                )
            )
        return made


class RequestContext(msgspec.Struct, frozen=True, kw_only=True):
    """Where a request came from, for the audit log."""

    address: str | None = None
    request_id: str | None = None
    #: `<METHOD> <path>` of the request, the target of a refused credential.
    route: str | None = None


def not_found(kind: str, ident: str) -> NotFound:
    """The one answer for both "nothing there" and "another tenant's" (no existence leak)."""
    return NotFound(f"No {kind} {ident}.")
