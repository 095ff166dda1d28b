"""API keys of the scope a principal acts in: create (shown once), list, read, revoke.

A key's answer is never kept for an Idempotency-Key (it holds the key itself).
"""

from __future__ import annotations

from litestar import Response, delete, get, post
from litestar.params import FromPath, JSONBody

from core.domain.access import Permission
from core.domain.commands import CreateApiKey
from entrypoints.http.auth import requires
from entrypoints.http.bodies import Body
from entrypoints.http.common import (
    API,
    LOCATION,
    AccessDep,
    ContextDep,
    ServicesDep,
    check_id,
    problems,
)
from entrypoints.http.paging import Cursor, Limit, OrderParam, page_of, page_request
from entrypoints.http.views import (
    ApiKeyData,
    ApiKeyPage,
    NewApiKeyData,
    NewApiKeyView,
    api_key_view,
)

PATH = f"{API}/api-keys"
KIND = "api-keys"
KEY = "API key"
MANAGE = requires(Permission.API_KEYS_MANAGE)


@post(
    "/",
    opt=MANAGE,
    dto=Body[CreateApiKey],
    return_dto=None,
    summary="Create an API key",
    description="`role`: one role of the tenant (`platform_admin` for a platform key). The "
    "answer holds the key (`wp_<prefix>_<secret>`): it is shown this once, only its hash "
    "is kept.",
    response_headers=LOCATION,
    responses=problems(400, 401, 403, 413, 422),
)
async def create_api_key(
    *, data: JSONBody[CreateApiKey], services: ServicesDep, access: AccessDep, ctx: ContextDep
) -> Response[NewApiKeyData]:
    key, text = await services.identity.create_api_key(access, data, ctx)
    return Response(
        NewApiKeyData(NewApiKeyView(id=key.id, key=text)),
        status_code=201,
        headers={"Location": f"{PATH}/{key.id}", "Cache-Control": "no-store"},
    )


@get(
    "/",
    opt=MANAGE,
    summary="List API keys",
    description="The API keys of the scope the caller acts in, newest first (never the keys "
    "themselves).",
    responses=problems(400, 401, 403),
)
async def list_api_keys(
    *,
    services: ServicesDep,
    access: AccessDep,
    limit: Limit = 50,
    cursor: Cursor = None,
    order: OrderParam = "desc",
) -> ApiKeyPage:
    found = await services.identity.list_api_keys(access, page_request(KIND, limit, cursor, order))
    return page_of(KIND, found, limit=limit, order=order, view=api_key_view, page=ApiKeyPage)


@get(
    "/{key_id:str}",
    opt=MANAGE,
    summary="Read an API key",
    description="One API key's name, prefix, roles and dates (never the key itself).",
    responses=problems(401, 403, 404),
)
async def get_api_key(
    *, key_id: FromPath[str], services: ServicesDep, access: AccessDep
) -> ApiKeyData:
    check_id(KEY, key_id)
    return ApiKeyData(api_key_view(await services.identity.get_api_key(access, key_id)))


@delete(
    "/{key_id:str}",
    opt=MANAGE,
    summary="Revoke an API key",
    description="The key stops working at once; it stays listed, with `revoked_at`.",
    responses=problems(401, 403, 404),
)
async def revoke_api_key(
    *, key_id: FromPath[str], services: ServicesDep, access: AccessDep, ctx: ContextDep
) -> None:
    check_id(KEY, key_id)
    await services.identity.revoke_api_key(access, key_id, ctx)


HANDLERS = [create_api_key, list_api_keys, get_api_key, revoke_api_key]
