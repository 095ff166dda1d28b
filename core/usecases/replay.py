"""Replay: rebuild every read model from the log."""

from __future__ import annotations

from core.usecases.common import Deps


class Replay:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def rebuild(self) -> int:
        """Empty the read models and apply the whole log again; returns the entries applied."""
        applied = 0
        async with self._deps.store.rebuild() as target:
            for tenant_id in await target.tenant_ids():
                async for envelopes in target.log(tenant_id):
                    await target.apply(tenant_id, envelopes)
                    applied += len(envelopes)
        return applied

    async def digest(self) -> str:
        """A checksum of the read models: equal before and after a faithful rebuild."""
        async with self._deps.store.read() as tx:
            return await tx.digest()
