"""Tenants (platform administrators): create, list, read, change. No X-Tenant needed.

Creating and changing a tenant (disabling it above all) is audited in the platform's log.
"""

from __future__ import annotations

from litestar import Response, get, patch, post
from litestar.params import FromPath, JSONBody
from litestar.types import Scope

from core.domain.access import Permission
from core.domain.audit import AuditAction
from core.domain.commands import CreateTenant, PatchTenant
from core.domain.idempotency import Answer
from core.domain.model import Tenant
from core.ports import AppendMeta
from core.usecases import Access, RequestContext, Services
from entrypoints.http.auth import authenticated, request_context, requires, services_of
from entrypoints.http.bodies import Body
from entrypoints.http.common import (
    API,
    LOCATION,
    created,
    problems,
)
from entrypoints.http.idempotency import IDEMPOTENT, claim_of, created_answer, once
from entrypoints.http.paging import Cursor, Limit, OrderParam, page_of, page_request
from entrypoints.http.views import IdData, TenantData, TenantPage, tenant_view

PATH = f"{API}/tenants"
KIND = "tenants"


def _meta(access: Access, ctx: RequestContext) -> AppendMeta:
    return AppendMeta(actor=access.principal.subject, correlation_id=ctx.request_id)


async def _audit(
    services: Services,
    access: Access,
    *,
    ctx: RequestContext,
    action: AuditAction,
    tenant: Tenant,
    reason: str,
) -> None:
    await services.audit.record(
        tenant_id=None,
        actor=access.principal.subject,
        action=action,
        target=f"tenant:{tenant.slug}",
        ctx=ctx,
        reason=reason,
    )


@post(
    "/",
    opt=requires(Permission.TENANTS_MANAGE) | IDEMPOTENT,
    dto=Body[CreateTenant],
    return_dto=None,
    summary="Create a tenant",
    description="`slug`: 3 to 63 of a-z 0-9 and `-` (trimmed, lower-cased, not reserved); "
    "`name`: a display name. Platform administrators only.",
    response_headers=LOCATION,
    responses=problems(400, 401, 403, 409, 413, 422),
)
async def create_tenant(*, data: JSONBody[CreateTenant], scope: Scope) -> Response[IdData]:
    services = services_of(scope)
    access = authenticated(scope)
    ctx = request_context(scope)
    claim = claim_of(scope)
    tenant = await services.tenants.create(data, _meta(access, ctx), once(claim, _created))
    await _audit(
        services,
        access,
        ctx=ctx,
        action=AuditAction.TENANT_CREATED,
        tenant=tenant,
        reason="created",
    )
    return created(f"{PATH}/{tenant.slug}", tenant.slug)


def _created(tenant: Tenant) -> Answer:
    return created_answer(f"{PATH}/{tenant.slug}", tenant.slug)


@get(
    "/",
    summary="List tenants",
    description="Every tenant, newest first, by keyset pages. Platform administrators only.",
    responses=problems(400, 401, 403),
    opt=requires(Permission.TENANTS_MANAGE),
)
async def list_tenants(
    *, limit: Limit = 50, cursor: Cursor = None, order: OrderParam = "desc", scope: Scope
) -> TenantPage:
    services = services_of(scope)
    found = await services.tenants.list(page_request(KIND, limit, cursor, order))
    return page_of(KIND, found, limit=limit, order=order, view=tenant_view, page=TenantPage)


@get(
    "/{slug:str}",
    summary="Read a tenant",
    description="One tenant by its slug. Platform administrators only.",
    responses=problems(401, 403, 404),
    opt=requires(Permission.TENANTS_MANAGE),
)
async def get_tenant(*, slug: FromPath[str], scope: Scope) -> TenantData:
    services = services_of(scope)
    return TenantData(tenant_view(await services.tenants.get(slug)))


@patch(
    "/{slug:str}",
    opt=requires(Permission.TENANTS_MANAGE),
    dto=Body[PatchTenant],
    return_dto=None,
    summary="Change a tenant",
    description="Rename it, or disable it (its credentials stop working; its data stays).",
    responses=problems(400, 401, 403, 404, 409, 413, 422),
)
async def patch_tenant(
    *, slug: FromPath[str], data: JSONBody[PatchTenant], scope: Scope
) -> TenantData:
    services = services_of(scope)
    access = authenticated(scope)
    ctx = request_context(scope)
    before = await services.tenants.get(slug)
    tenant = await services.tenants.patch(slug, data, _meta(access, ctx))
    services.identity.forget()  # a disabled tenant's credentials stop working at once
    changes = [
        f"{name} {getattr(before, name)!r} -> {getattr(tenant, name)!r}"
        for name in ("name", "disabled")
        if getattr(before, name) != getattr(tenant, name)
    ]
    if changes:
        await _audit(
            services,
            access,
            ctx=ctx,
            action=AuditAction.TENANT_CHANGED,
            tenant=tenant,
            reason="; ".join(changes),
        )
    return TenantData(tenant_view(tenant))


HANDLERS = [create_tenant, list_tenants, get_tenant, patch_tenant]
