"""Tenants (platform administrators): create, list, read, change. No X-Tenant needed."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, patch, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody

from core.domain.commands import CreateTenant, PatchTenant
from core.ports import AppendMeta
from entrypoints.http import tenancy
from entrypoints.http.bodies import Body
from entrypoints.http.common import API, LOCATION, ServicesDep, created, problems
from entrypoints.http.paging import Cursor, Limit, OrderParam, page_of, page_request
from entrypoints.http.request_id import request_id
from entrypoints.http.views import IdData, TenantData, TenantPage, tenant_view

PATH = f"{API}/tenants"
KIND = "tenants"


def _meta(request: Request[Any, Any, Any]) -> AppendMeta:
    return AppendMeta(actor=tenancy.PRINCIPAL, correlation_id=request_id(request.scope))


@post(
    "/",
    dto=Body[CreateTenant],
    return_dto=None,
    summary="Create a tenant",
    response_headers=LOCATION,
    responses=problems(400, 409, 413, 422),
)
async def create_tenant(
    *, data: JSONBody[CreateTenant], services: ServicesDep, request: Request[Any, Any, Any]
) -> Response[IdData]:
    tenant = await services.tenants.create(data, _meta(request))
    return created(f"{PATH}/{tenant.slug}", tenant.slug)


@get("/", summary="List tenants", responses=problems(400))
async def list_tenants(
    *,
    services: ServicesDep,
    limit: Limit = 50,
    cursor: Cursor = None,
    order: OrderParam = "desc",
) -> TenantPage:
    found = await services.tenants.list(page_request(KIND, limit, cursor, order))
    return page_of(KIND, found, limit=limit, order=order, view=tenant_view, page=TenantPage)


@get("/{slug:str}", summary="Read a tenant", responses=problems(404))
async def get_tenant(*, slug: FromPath[str], services: ServicesDep) -> TenantData:
    return TenantData(tenant_view(await services.tenants.get(slug)))


@patch(
    "/{slug:str}",
    dto=Body[PatchTenant],
    return_dto=None,
    summary="Change a tenant",
    description="Rename it, or disable it (its credentials stop working; its data stays).",
    responses=problems(400, 404, 409, 413, 422),
)
async def patch_tenant(
    *,
    slug: FromPath[str],
    data: JSONBody[PatchTenant],
    services: ServicesDep,
    request: Request[Any, Any, Any],
    state: State,
) -> TenantData:
    tenant = await services.tenants.patch(slug, data, _meta(request))
    tenancy.resolver(state).forget()
    return TenantData(tenant_view(tenant))


HANDLERS = [create_tenant, list_tenants, get_tenant, patch_tenant]
