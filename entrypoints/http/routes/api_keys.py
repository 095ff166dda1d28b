"""API keys of the scope a principal acts in: create (shown once), list, read, revoke.

A key's answer is never stored for an Idempotency-Key: it holds the key itself. What is
stored instead, and replayed to a retry, is a 409 naming the key that the first request
made (its secret was shown once; revoke it and make another if that answer was lost).
"""

from __future__ import annotations

from litestar import Response, delete, get, post
from litestar.params import FromPath, JSONBody
from litestar.types import Scope

from core.domain.access import Permission
from core.domain.commands import CreateApiKey
from core.domain.errors import FieldError
from core.domain.idempotency import Answer
from core.domain.identity import ApiKey
from entrypoints.http.auth import authenticated, request_context, requires, services_of
from entrypoints.http.bodies import Body
from entrypoints.http.common import (
    API,
    LOCATION,
    check_id,
    problems,
)
from entrypoints.http.idempotency import HEADER, IDEMPOTENT, answer, claim_of, once
from entrypoints.http.paging import Cursor, Limit, OrderParam, page_of, page_request
from entrypoints.http.problems import PROBLEM_JSON, Problem
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
    opt=MANAGE | IDEMPOTENT,
    dto=Body[CreateApiKey],
    return_dto=None,
    summary="Create an API key",
    description="`role`: one role of the tenant (`platform_admin` for a platform key). The "
    "answer holds the key (`wp_<prefix>_<secret>`): it is shown this once, only its hash "
    "is kept.",
    response_headers=LOCATION,
    responses=problems(400, 401, 403, 409, 413, 422),
)
async def create_api_key(*, data: JSONBody[CreateApiKey], scope: Scope) -> Response[NewApiKeyData]:
    services = services_of(scope)
    access = authenticated(scope)
    ctx = request_context(scope)
    claim = claim_of(scope)
    key, text = await services.identity.create_api_key(access, data, ctx, once(claim, _made))
    return Response(
        NewApiKeyData(NewApiKeyView(id=key.id, key=text)),
        status_code=201,
        headers={"Location": f"{PATH}/{key.id}", "Cache-Control": "no-store"},
    )


def _made(key: ApiKey) -> Answer:
    """What a retry is told: which key was made, never the key."""
    detail = (
        f"The first request with this Idempotency-Key made the API key {key.id}. A key is "
        "shown only once: if its answer was lost, revoke it and make another."
    )
    problem = Problem(
        type="urn:waypost:problem:api-key-shown-once",
        title="API key shown once",
        status=409,
        detail=detail,
        errors=[FieldError(HEADER, f"made API key {key.id}")],
    )
    return answer(409, problem, location=f"{PATH}/{key.id}", content_type=PROBLEM_JSON)


@get(
    "/",
    opt=MANAGE,
    summary="List API keys",
    description="The API keys of the scope the caller acts in, newest first (never the keys "
    "themselves).",
    responses=problems(400, 401, 403),
)
async def list_api_keys(
    *, limit: Limit = 50, cursor: Cursor = None, order: OrderParam = "desc", scope: Scope
) -> ApiKeyPage:
    services = services_of(scope)
    access = authenticated(scope)
    found = await services.identity.list_api_keys(access, page_request(KIND, limit, cursor, order))
    return page_of(KIND, found, limit=limit, order=order, view=api_key_view, page=ApiKeyPage)


@get(
    "/{key_id:str}",
    opt=MANAGE,
    summary="Read an API key",
    description="One API key's name, prefix, roles and dates (never the key itself).",
    responses=problems(401, 403, 404),
)
async def get_api_key(*, key_id: FromPath[str], scope: Scope) -> ApiKeyData:
    services = services_of(scope)
    access = authenticated(scope)
    check_id(KEY, key_id)
    return ApiKeyData(api_key_view(await services.identity.get_api_key(access, key_id)))


@delete(
    "/{key_id:str}",
    opt=MANAGE,
    summary="Revoke an API key",
    description="The key stops working at once; it stays listed, with `revoked_at`.",
    responses=problems(401, 403, 404),
)
async def revoke_api_key(*, key_id: FromPath[str], scope: Scope) -> None:
    services = services_of(scope)
    access = authenticated(scope)
    ctx = request_context(scope)
    check_id(KEY, key_id)
    await services.identity.revoke_api_key(access, key_id, ctx)


HANDLERS = [create_api_key, list_api_keys, get_api_key, revoke_api_key]
