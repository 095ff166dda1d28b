"""Event receivers: registered once per (name, type, version), never changed."""

from __future__ import annotations

from collections.abc import Collection

from core.domain.commands import RegisterReceiver
from core.domain.model import Receiver, ReceiverCreated
from core.domain.receivers import decide_registration, new_receiver
from core.ports import PageRequest, ReceiverFilter
from core.usecases.common import Actor, Deps, Once, not_found


class Receivers:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def register(
        self,
        actor: Actor,
        cmd: RegisterReceiver,
        once: Once[tuple[Receiver, bool]] | None = None,
    ) -> tuple[Receiver, bool]:
        """The receiver, and whether it was created (False: an identical one existed)."""
        deps = self._deps
        candidate, compiled = new_receiver(
            cmd, id=deps.ids.new_id(), tenant_id=actor.tenant_id, now=deps.clock.now()
        )
        async with deps.write(actor.tenant_id, once) as tx:
            existing = await tx.receivers.by_triple(
                actor.tenant_id, candidate.name, candidate.type, candidate.version
            )
            receiver = decide_registration(existing, candidate)
            if receiver is existing:
                deps.remember(tx, once, (receiver, False))
                return receiver, False
            deps.remember(tx, once, (receiver, True))
            await tx.append(deps.entries([ReceiverCreated(receiver=receiver)]), actor.meta())
        deps.receivers.put(receiver, compiled)
        return receiver, True

    async def get(self, actor: Actor, receiver_id: str) -> Receiver:
        async with self._deps.store.read_stale(actor.tenant_id) as tx:
            receiver = await tx.receivers.get(actor.tenant_id, receiver_id)
        if receiver is None:
            raise not_found("event receiver", receiver_id)
        return receiver

    async def get_many(self, actor: Actor, receiver_ids: Collection[str]) -> dict[str, Receiver]:
        """The tenant's receivers among `receiver_ids` by id (unknown ids left out), from the
        cache first: a page naming the receivers of its events costs no query once warm."""
        found = await self._deps.receivers_by_id(actor.tenant_id, set(receiver_ids))
        return {ident: receiver for ident, (receiver, _) in found.items()}

    async def list(self, actor: Actor, where: ReceiverFilter, page: PageRequest) -> list[Receiver]:
        async with self._deps.store.read_stale(actor.tenant_id) as tx:
            return await tx.receivers.list(actor.tenant_id, where, page)
