"""The audit log: every security-relevant act is written here, and tenant admins read it."""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from core.domain.audit import AuditAction, AuditRecord, Outcome
from core.ports import AuditFilter, IdentityStore, PageRequest
from core.usecases.common import Deps, RequestContext

#: Records deleted per statement by the retention purge (a short transaction each).
PURGE_BATCH: Final = 10_000


class Auditor:
    def __init__(self, deps: Deps, store: IdentityStore) -> None:
        self._deps = deps
        self._store = store

    async def record(
        self,
        *,
        tenant_id: str | None,
        actor: str,
        action: AuditAction,
        target: str,
        outcome: Outcome = Outcome.SUCCESS,
        ctx: RequestContext | None = None,
        reason: str | None = None,
    ) -> AuditRecord:
        """Append one record. A record that cannot be written fails the act it records."""
        record = AuditRecord(
            id=self._deps.ids.new_id(),
            tenant_id=tenant_id,
            at=self._deps.clock.now(),
            actor=actor,
            action=action,
            target=target,
            outcome=outcome,
            address=None if ctx is None else ctx.address,
            request_id=None if ctx is None else ctx.request_id,
            reason=reason,
        )
        await self._store.audit.append(record)
        return record

    async def list(
        self, tenant_id: str | None, where: AuditFilter, page: PageRequest
    ) -> list[AuditRecord]:
        """The records of one tenant (or of the platform), newest first unless asked."""
        return await self._store.audit.list(tenant_id, where, page)

    async def purge(self, older_than: timedelta) -> int:
        """Delete every record older than `older_than` (the retention policy), a batch at
        a time; the purge itself is recorded, with how many went."""
        cutoff = self._deps.clock.now() - older_than
        total = 0
        while True:
            deleted = await self._store.audit.purge(cutoff, PURGE_BATCH)
            total += deleted
            if deleted < PURGE_BATCH:
                break
        if total:
            await self.record(
                tenant_id=None,
                actor="system",
                action=AuditAction.AUDIT_PURGED,
                target="audit_log",
                reason=f"{total} record(s) older than {cutoff.isoformat()} (retention)",
            )
        return total
