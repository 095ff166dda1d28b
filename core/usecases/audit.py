"""The audit log: every security-relevant act is written here, and tenant admins read it."""

from __future__ import annotations

from core.domain.audit import AuditAction, AuditRecord, Outcome
from core.ports import AuditFilter, IdentityStore, PageRequest
from core.usecases.common import Deps, RequestContext


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
