"""Users of the scope a principal acts in: create, list, read, change (roles, disabled,
password), delete. A change of roles, a disabled user or a new password is audited, and
the last two end the user's refresh-token families."""

from __future__ import annotations

from litestar import Response, delete, get, patch, post
from litestar.params import FromPath, JSONBody
from litestar.types import Scope

from core.domain.access import Permission
from core.domain.commands import CreateUser, PatchUser
from core.domain.idempotency import Answer
from core.domain.identity import User
from entrypoints.http.auth import authenticated, request_context, requires, services_of
from entrypoints.http.bodies import Body
from entrypoints.http.common import (
    API,
    LOCATION,
    check_id,
    created,
    problems,
)
from entrypoints.http.idempotency import IDEMPOTENT, claim_of, created_answer, once
from entrypoints.http.paging import Cursor, Limit, OrderParam, page_of, page_request
from entrypoints.http.views import IdData, UserData, UserPage, user_view

PATH = f"{API}/users"
KIND = "users"
USER = "user"
MANAGE = requires(Permission.USERS_MANAGE)


@post(
    "/",
    opt=MANAGE | IDEMPOTENT,
    dto=Body[CreateUser],
    return_dto=None,
    summary="Create a user",
    description="`username`: 3 to 64 of a-z 0-9 . _ - (lower-cased); `password`: 12 to 1024 "
    "characters, not the username; `roles`: roles of the tenant (`platform_admin` for a "
    "platform user).",
    response_headers=LOCATION,
    responses=problems(400, 401, 403, 409, 413, 422),
)
async def create_user(*, data: JSONBody[CreateUser], scope: Scope) -> Response[IdData]:
    services = services_of(scope)
    access = authenticated(scope)
    ctx = request_context(scope)
    claim = claim_of(scope)
    user = await services.identity.create_user(access, data, ctx, once(claim, _created))
    return created(f"{PATH}/{user.id}", user.id)


def _created(user: User) -> Answer:
    return created_answer(f"{PATH}/{user.id}", user.id)


@get(
    "/",
    opt=MANAGE,
    summary="List users",
    description="The users of the scope the caller acts in (its tenant, or the platform), "
    "newest first.",
    responses=problems(400, 401, 403),
)
async def list_users(
    *, limit: Limit = 50, cursor: Cursor = None, order: OrderParam = "desc", scope: Scope
) -> UserPage:
    services = services_of(scope)
    access = authenticated(scope)
    found = await services.identity.list_users(access, page_request(KIND, limit, cursor, order))
    return page_of(KIND, found, limit=limit, order=order, view=user_view, page=UserPage)


@get(
    "/{user_id:str}",
    opt=MANAGE,
    summary="Read a user",
    description="One user (never its password hash).",
    responses=problems(401, 403, 404),
)
async def get_user(*, user_id: FromPath[str], scope: Scope) -> UserData:
    services = services_of(scope)
    access = authenticated(scope)
    check_id(USER, user_id)
    return UserData(user_view(await services.identity.get_user(access, user_id)))


@patch(
    "/{user_id:str}",
    opt=MANAGE,
    dto=Body[PatchUser],
    return_dto=None,
    summary="Change a user",
    description="Its `roles`, `disabled` (a disabled user's credentials stop working at once) "
    "or `password`.",
    responses=problems(400, 401, 403, 404, 409, 413, 422),
)
async def patch_user(
    *, user_id: FromPath[str], data: JSONBody[PatchUser], scope: Scope
) -> UserData:
    services = services_of(scope)
    access = authenticated(scope)
    ctx = request_context(scope)
    check_id(USER, user_id)
    return UserData(user_view(await services.identity.patch_user(access, user_id, data, ctx)))


@delete(
    "/{user_id:str}",
    opt=MANAGE,
    summary="Delete a user",
    description="Its credentials stop working at once.",
    responses=problems(401, 403, 404),
)
async def delete_user(*, user_id: FromPath[str], scope: Scope) -> None:
    services = services_of(scope)
    access = authenticated(scope)
    ctx = request_context(scope)
    check_id(USER, user_id)
    await services.identity.delete_user(access, user_id, ctx)


HANDLERS = [create_user, list_users, get_user, patch_user, delete_user]
