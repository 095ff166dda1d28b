"""Event receiver groups (gates): create, read, list, change, delete, status, completions."""

from __future__ import annotations

from typing import Annotated

from litestar import Response, delete, get, patch, post
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.types import Scope

from core.domain.access import Permission
from core.domain.commands import CreateGroup, PatchGroup
from core.domain.errors import FieldError, raise_if
from core.domain.fields import check_name
from core.domain.idempotency import Answer
from core.domain.model import Group, Nvrpp
from core.ports import CompletionFilter, GroupFilter
from core.usecases.groups import MAX_WAIT_SECONDS
from entrypoints.http.auth import actor_of, requires, services_of
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
from entrypoints.http.views import (
    CompletionPage,
    GroupData,
    GroupPage,
    GroupStatusData,
    IdData,
    completion_view,
    group_status_view,
    group_view,
)

PATH = f"{API}/groups"
KIND = "groups"
COMPLETIONS = "completions"
GROUP = "group"

Filter = Annotated[str | None, QueryParameter(description="Exact match.")]
Key = Annotated[str, QueryParameter(description="Part of the artifact's NVRPP (required).")]


@post(
    "/",
    opt=requires(Permission.GROUPS_CREATE) | IDEMPOTENT,
    dto=Body[CreateGroup],
    return_dto=None,
    summary="Create a group",
    description="1 to 100 distinct receivers of the tenant; `enabled` defaults to true. A "
    "group completes for an artifact when every member's latest event for it "
    "succeeded.",
    response_headers=LOCATION,
    responses=problems(400, 401, 403, 409, 413, 422),
)
async def create_group(*, data: JSONBody[CreateGroup], scope: Scope) -> Response[IdData]:
    services = services_of(scope)
    actor = actor_of(scope)
    claim = claim_of(scope)
    group = await services.groups.create(actor, data, once(claim, _created))
    return created(f"{PATH}/{group.id}", group.id)


def _created(group: Group) -> Answer:
    return created_answer(f"{PATH}/{group.id}", group.id)


@get(
    "/{group_id:str}",
    summary="Read a group",
    description="One group with its members.",
    responses=problems(401, 403, 404),
    opt=requires(Permission.GROUPS_READ),
)
async def get_group(*, group_id: FromPath[str], scope: Scope) -> GroupData:
    services = services_of(scope)
    actor = actor_of(scope)
    check_id(GROUP, group_id)
    return GroupData(group_view(await services.groups.get(actor, group_id)))


@get(
    "/",
    summary="List groups",
    description="The tenant's groups, newest first unless `order=asc`; `name`, `type`, "
    "`version` and `enabled` filter by exact match.",
    responses=problems(400, 401, 403),
    opt=requires(Permission.GROUPS_READ),
)
async def list_groups(
    *,
    name: Filter = None,
    type: Filter = None,
    version: Filter = None,
    enabled: Annotated[bool | None, QueryParameter(description="`true` or `false`.")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    order: OrderParam = "desc",
    scope: Scope,
) -> GroupPage:
    services = services_of(scope)
    actor = actor_of(scope)
    page = page_request(KIND, limit, cursor, order)
    where = GroupFilter(name=name, type=type, version=version, enabled=enabled)
    found = await services.groups.list(actor, where, page)
    return page_of(KIND, found, limit=limit, order=order, view=group_view, page=GroupPage)


@patch(
    "/{group_id:str}",
    opt=requires(Permission.GROUPS_UPDATE),
    dto=Body[PatchGroup],
    return_dto=None,
    summary="Change a group",
    description="Toggle `enabled`, change `description`, add and remove members.",
    responses=problems(400, 401, 403, 404, 409, 413, 422),
)
async def patch_group(
    *, group_id: FromPath[str], data: JSONBody[PatchGroup], scope: Scope
) -> GroupData:
    services = services_of(scope)
    actor = actor_of(scope)
    check_id(GROUP, group_id)
    return GroupData(group_view(await services.groups.patch(actor, group_id, data)))


@delete(
    "/{group_id:str}",
    summary="Delete a group",
    description="The group stops being evaluated; its completions stay in the log.",
    responses=problems(401, 403, 404, 409),
    opt=requires(Permission.GROUPS_DELETE),
)
async def delete_group(*, group_id: FromPath[str], scope: Scope) -> None:
    services = services_of(scope)
    actor = actor_of(scope)
    check_id(GROUP, group_id)
    await services.groups.delete(actor, group_id)


@get(
    "/{group_id:str}/status",
    opt=requires(Permission.GROUPS_READ),
    summary="A group's gate for one artifact",
    description="Per member, its latest event for the artifact and whether it passes. "
    "With `wait` (1 to 60 seconds), an incomplete gate is held until it completes or the "
    "time is up, then answered as it is (a long poll); beyond the server's number of "
    "waiting requests, 503 with `Retry-After`.",
    responses=problems(400, 401, 403, 404, 422, 503),
)
async def group_status(
    *,
    group_id: FromPath[str],
    name: Key,
    version: Key,
    release: Key,
    platform_id: Key,
    package: Key,
    wait: Annotated[
        int | None,
        QueryParameter(
            ge=1,
            le=MAX_WAIT_SECONDS,
            description="Seconds to hold the answer while the gate is not complete (1..60).",
        ),
    ] = None,
    scope: Scope,
) -> GroupStatusData:
    services = services_of(scope)
    actor = actor_of(scope)
    check_id(GROUP, group_id)
    errors: list[FieldError] = []
    for field, value in (
        ("name", name),
        ("version", version),
        ("release", release),
        ("platform_id", platform_id),
        ("package", package),
    ):
        check_name(errors, field, value)
    raise_if(errors, "The artifact is invalid")
    key = Nvrpp(
        name=name, version=version, release=release, platform_id=platform_id, package=package
    )
    status = await services.groups.status(actor, group_id, key, wait)
    return GroupStatusData(group_status_view(status))


@get(
    "/{group_id:str}/completions",
    opt=requires(Permission.GROUPS_READ),
    summary="Every time a group fired",
    description="The group's completions, newest first unless `order=asc`, each with its "
    "triggering event and the latest event of every member; the NVRPP parameters "
    "filter by exact match.",
    responses=problems(400, 401, 403, 404),
)
async def list_completions(
    *,
    group_id: FromPath[str],
    name: Filter = None,
    version: Filter = None,
    release: Filter = None,
    platform_id: Filter = None,
    package: Filter = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    order: OrderParam = "desc",
    scope: Scope,
) -> CompletionPage:
    services = services_of(scope)
    actor = actor_of(scope)
    check_id(GROUP, group_id)
    page = page_request(COMPLETIONS, limit, cursor, order)
    where = CompletionFilter(
        name=name, version=version, release=release, platform_id=platform_id, package=package
    )
    found = await services.groups.completions(actor, group_id, where, page)
    return page_of(
        COMPLETIONS, found, limit=limit, order=order, view=completion_view, page=CompletionPage
    )


HANDLERS = [
    create_group,
    get_group,
    list_groups,
    patch_group,
    delete_group,
    group_status,
    list_completions,
]
