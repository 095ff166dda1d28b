"""Publishing: every tenant's messages copied from the log to a sink, in order, each once.

A pass (`publish_once`) asks the store for every tenant's head and, for each tenant
whose log is ahead of what the sink holds, reads the messages after the sink's last
position and hands them over. The sink keeps the position of what it holds (a
Redis stream's last entry id), so nothing else needs storing: a restarted publisher
asks the sink where it is and goes on; two publishers side by side only repeat work
the sink refuses to repeat. Delivery is at least once into the sink, and the sink
holds each message once.

The loop that calls `publish_once` (waiting while there is nothing, backing off
while the sink fails) belongs to the entrypoint: the core keeps no time.
"""

from __future__ import annotations

from core.ports import MessageSink
from core.usecases.common import Actor, Deps
from core.usecases.messages import MAX_ENTRIES, Messages

#: Who publishing reads the logs as.
PUBLISHER = "system:publisher"


class Publisher:
    def __init__(self, deps: Deps, messages: Messages, sink: MessageSink) -> None:
        self._deps = deps
        self._messages = messages
        self._sink = sink
        self._slugs: dict[str, str] = {}
        #: tenant id -> the last position this publisher knows the sink to hold
        self._published: dict[str, int] = {}

    async def publish_once(self, batch: int = MAX_ENTRIES) -> int:
        """One pass over every tenant whose log is ahead of the sink: messages published."""
        async with self._deps.store.read() as tx:
            heads = await tx.log.heads()
        published = 0
        for tenant_id, head in sorted(heads.items()):
            slug = await self._slug(tenant_id)
            if tenant_id not in self._published:
                self._published[tenant_id] = await self._sink.last_position(slug)
            position = self._published[tenant_id]
            actor = Actor(tenant_id=tenant_id, principal=PUBLISHER)
            while position < head:
                page = await self._messages.after(actor, position, batch)
                if page.messages:
                    await self._sink.publish(slug, page.messages)
                    published += len(page.messages)
                position = page.last
                self._published[tenant_id] = position
        return published

    def forget(self) -> None:
        """Ask the sink again where it is, on the next pass (after the sink failed)."""
        self._published.clear()

    async def _slug(self, tenant_id: str) -> str:
        slug = self._slugs.get(tenant_id)
        if slug is None:
            async with self._deps.store.read() as tx:
                tenant = await tx.tenants.get(tenant_id)
            if tenant is None:  # pragma: no cover - a tenant with a log exists
                raise RuntimeError(f"tenant {tenant_id} has a log but no read model")
            slug = self._slugs[tenant_id] = tenant.slug
        return slug
