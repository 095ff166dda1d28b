"""Replay: rebuild the read models from the log, tenant by tenant, resumably.

Each tenant is rebuilt in one transaction that holds its writer lock (its writers wait a
moment; the other tenants' do not; readers see the old read models until it commits), so
a rebuild never leaves a tenant half-built. A run with a name (`run`) records each tenant
it finished in that tenant's transaction: the same run started again after an interruption
goes on with the tenants it had not finished, and its result is the result of one run.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from core.usecases.common import Deps

#: Entries read and projected together.
BATCH = 2000


class Replayed(msgspec.Struct, frozen=True, kw_only=True):
    """What a replay did: entries applied and tenants rebuilt by this call, and the
    tenants an earlier, interrupted call of the same run had rebuilt already."""

    applied: int
    tenants: int
    skipped: int


class Replay:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def plan(
        self, tenant_id: str | None = None, run: str | None = None, after: int = 0
    ) -> dict[str, int]:
        """The tenants a replay would rebuild (those of `run` not yet done), with the number
        of log entries it would apply of each (those after `after`)."""
        store = self._deps.store
        async with store.read() as tx:
            heads = await tx.log.heads()
            tenants = await tx.tenant_ids() if tenant_id is None else [tenant_id]
        done = await store.replay_done(run) if run is not None else set()
        return {t: max(0, heads.get(t, 0) - after) for t in tenants if t not in done}

    async def rebuild(
        self,
        tenant_id: str | None = None,
        *,
        run: str | None = None,
        after: int = 0,
        on_progress: Callable[[int], None] | None = None,
    ) -> Replayed:
        """Rebuild every tenant's read models (or `tenant_id`'s), tenant by tenant.

        With `after`, each tenant's log entries after that position only: what they made
        is replaced, the rest kept (a tail that was lost, or that a fixed projection must
        redo). `on_progress` hears the entries applied after each batch. With `run`,
        tenants that run finished before are skipped and, once all are done, the run is
        forgotten."""
        store = self._deps.store
        plan = await self.plan(tenant_id, run, after)
        skipped = 0
        if run is not None:
            skipped = len(await store.replay_done(run))
        applied = 0
        for tenant in plan:
            async with store.rebuild(tenant, after) as target:
                async for count in target.replay(tenant, BATCH):
                    applied += count
                    if on_progress is not None:
                        on_progress(count)
                if run is not None:
                    await target.mark_done(run, tenant)
        if run is not None:
            await store.replay_finished(run)
        return Replayed(applied=applied, tenants=len(plan), skipped=skipped)

    async def digest(self) -> str:
        """A checksum of the read models: equal before and after a faithful rebuild."""
        async with self._deps.store.read() as tx:
            return await tx.digest()
