"""Tenants: created and changed by platform administrators."""

from __future__ import annotations

from core.domain.commands import CreateTenant, PatchTenant
from core.domain.errors import Conflict, Invalid
from core.domain.model import Tenant, TenantCreated, TenantModified
from core.domain.tenants import new_tenant, normalize_slug, patch_tenant
from core.ports import MAX_PAGE_SIZE, AppendMeta, PageRequest
from core.usecases.common import Deps, Once, not_found


class Tenants:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def create(
        self, cmd: CreateTenant, meta: AppendMeta, once: Once[Tenant] | None = None
    ) -> Tenant:
        deps = self._deps
        tenant = new_tenant(cmd, id=deps.ids.new_id(), now=deps.clock.now())
        async with deps.write(tenant.id, once) as tx:
            if await tx.tenants.by_slug(tenant.slug) is not None:
                raise Conflict(f"A tenant with slug {tenant.slug!r} exists already.")
            deps.remember(tx, once, tenant)
            await tx.append(deps.entries([TenantCreated(tenant=tenant)]), meta)
        return tenant

    async def patch(self, slug: str, cmd: PatchTenant, meta: AppendMeta) -> Tenant:
        deps = self._deps
        tenant = await self.get(slug)
        async with deps.store.write(tenant.id) as tx:
            current = await tx.tenants.get(tenant.id)
            if current is None:  # pragma: no cover - tenants are never deleted
                raise not_found("tenant", slug)
            changed = patch_tenant(current, cmd, now=deps.clock.now())
            if changed is current:
                return current
            version = await tx.log.stream_version(tenant.id, tenant.id)
            await tx.append(
                deps.entries([TenantModified(tenant=changed)], {tenant.id: version}), meta
            )
        return changed

    async def get(self, slug: str) -> Tenant:
        try:
            normalized = normalize_slug(slug)
        except Invalid:
            raise not_found("tenant", slug) from None
        async with self._deps.store.read() as tx:
            tenant = await tx.tenants.by_slug(normalized)
        if tenant is None:
            raise not_found("tenant", slug)
        return tenant

    async def all(self) -> list[Tenant]:
        """Every tenant, oldest first (the operator's `waypost admin list-tenants`)."""
        found: list[Tenant] = []
        page = PageRequest(limit=MAX_PAGE_SIZE, order="asc")
        while batch := await self.list(page):
            found += batch
            page = PageRequest(limit=MAX_PAGE_SIZE, order="asc", after=batch[-1].id)
        return found

    async def list(self, page: PageRequest) -> list[Tenant]:
        async with self._deps.store.read() as tx:
            return await tx.tenants.list(page)
