"""The console's groups (gates): list, create, detail with members and completions, and the
changes a manager makes: enable or disable, add or remove members, delete (admins)."""

from __future__ import annotations

import re
from typing import Any, Final

from litestar import Request, Response, get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Template

from core.domain.access import Permission
from core.domain.commands import CreateGroup, PatchGroup
from core.domain.errors import DomainError
from core.ports import CompletionFilter, GroupFilter, PageRequest, ReceiverFilter
from core.usecases import Services
from entrypoints.http.auth import actor_of, requires, services_of
from entrypoints.http.console.common import (
    BASE,
    PAGE_SIZE,
    after,
    check_id,
    cut,
    errors_by_field,
    field,
    page,
    redirect,
)
from entrypoints.http.problems import status_of

_GROUPS: Final = "console-groups"
_COMPLETIONS: Final = "console-completions"
#: Receivers offered as members on the create form (newest first).
RECEIVERS_OFFERED: Final = 200
COMPLETIONS_SHOWN: Final = 20
_IDS: Final = re.compile(r"[\s,]+")


def _enabled(text: str) -> bool | None:
    return {"true": True, "false": False}.get(text)


@get(f"{BASE}/groups", opt=requires(Permission.GROUPS_READ), include_in_schema=False)
async def groups(
    *,
    request: Request[Any, Any, Any],
    name: FromQuery[str] = "",
    type: FromQuery[str] = "",
    version: FromQuery[str] = "",
    enabled: FromQuery[str] = "",
    cursor: FromQuery[str | None] = None,
    rows: FromQuery[bool] = False,
) -> Template:
    """Groups, newest first, filtered by name, type, version and whether enabled."""
    services = services_of(request.scope)
    where = GroupFilter(
        name=name or None, type=type or None, version=version or None, enabled=_enabled(enabled)
    )
    found = await services.groups.list(
        actor_of(request.scope),
        where,
        PageRequest(limit=PAGE_SIZE + 1, after=after(_GROUPS, cursor)),
    )
    items, next_cursor = cut(_GROUPS, found, PAGE_SIZE)
    context: dict[str, Any] = {
        "groups": items,
        "next_cursor": next_cursor,
        "filters": {"name": name, "type": type, "version": version, "enabled": enabled},
    }
    return page(request, "groups_rows.html" if rows else "groups.html", **context)


async def _offered(request: Request[Any, Any, Any], services: Services) -> list[Any]:
    return await services.receivers.list(
        actor_of(request.scope), ReceiverFilter(), PageRequest(limit=RECEIVERS_OFFERED)
    )


@get(f"{BASE}/groups/new", opt=requires(Permission.GROUPS_CREATE), include_in_schema=False)
async def new_group(request: Request[Any, Any, Any]) -> Template:
    """The form that creates a group."""
    services = services_of(request.scope)
    form = {"name": "", "type": "", "version": "", "description": "", "other_ids": ""}
    return page(
        request,
        "group_new.html",
        form=form,
        chosen=[],
        receivers=await _offered(request, services),
        errors={},
        error_list=[],
    )


def _ids(text: str) -> list[str]:
    return [part for part in _IDS.split(text.strip()) if part]


@post(
    f"{BASE}/groups",
    opt=requires(Permission.GROUPS_CREATE),
    include_in_schema=False,
    status_code=200,
)
async def create_group(request: Request[Any, Any, Any]) -> Response[Any]:
    services = services_of(request.scope)
    form = await request.form()
    values = {k: field(form, k) for k in ("name", "type", "version", "description", "other_ids")}
    chosen = [v for v in form.getall("member", []) if isinstance(v, str)]
    members = list(dict.fromkeys([*chosen, *_ids(values["other_ids"])]))
    cmd = CreateGroup(
        name=values["name"],
        type=values["type"],
        version=values["version"],
        description=values["description"],
        enabled=field(form, "enabled") == "true",
        event_receiver_ids=members,
    )
    try:
        group = await services.groups.create(actor_of(request.scope), cmd)
    except DomainError as exc:
        return page(
            request,
            "group_new.html",
            status=status_of(exc),
            form=values,
            chosen=chosen,
            receivers=await _offered(request, services),
            errors=errors_by_field(exc.errors),
            error_list=exc.errors,
            detail=exc.detail,
        )
    return redirect(f"{BASE}/groups/{group.id}")


@get(
    f"{BASE}/groups/{{group_id:str}}", opt=requires(Permission.GROUPS_READ), include_in_schema=False
)
async def group(
    *,
    request: Request[Any, Any, Any],
    group_id: FromPath[str],
    cursor: FromQuery[str | None] = None,
) -> Template:
    """One group: its members (by name) and every time it fired, newest first."""
    services = services_of(request.scope)
    check_id("group", group_id)
    actor = actor_of(request.scope)
    found = await services.groups.get(actor, group_id)
    members = await services.receivers.get_many(actor, found.event_receiver_ids)
    completions = await services.groups.completions(
        actor,
        group_id,
        CompletionFilter(),
        PageRequest(limit=COMPLETIONS_SHOWN + 1, after=after(_COMPLETIONS, cursor)),
    )
    items, next_cursor = cut(_COMPLETIONS, completions, COMPLETIONS_SHOWN)
    return page(
        request,
        "group.html",
        group=found,
        members=members,
        completions=items,
        next_cursor=next_cursor,
        error_list=[],
    )


async def _patch(
    request: Request[Any, Any, Any], services: Services, group_id: str, cmd: PatchGroup
) -> Response[Any]:
    check_id("group", group_id)
    actor = actor_of(request.scope)
    try:
        await services.groups.patch(actor, group_id, cmd)
    except DomainError as exc:
        if status_of(exc) == 404:
            raise
        found = await services.groups.get(actor, group_id)
        return page(
            request,
            "group.html",
            status=status_of(exc),
            group=found,
            members=await services.receivers.get_many(actor, found.event_receiver_ids),
            completions=[],
            next_cursor=None,
            error_list=exc.errors,
            detail=exc.detail,
        )
    return redirect(f"{BASE}/groups/{group_id}")


@post(
    f"{BASE}/groups/{{group_id:str}}/enabled",
    opt=requires(Permission.GROUPS_UPDATE),
    include_in_schema=False,
    status_code=200,
)
async def set_enabled(request: Request[Any, Any, Any], group_id: FromPath[str]) -> Response[Any]:
    services = services_of(request.scope)
    form = await request.form()
    return await _patch(
        request, services, group_id, PatchGroup(enabled=field(form, "enabled") == "true")
    )


@post(
    f"{BASE}/groups/{{group_id:str}}/members",
    opt=requires(Permission.GROUPS_UPDATE),
    include_in_schema=False,
    status_code=200,
)
async def change_members(request: Request[Any, Any, Any], group_id: FromPath[str]) -> Response[Any]:
    services = services_of(request.scope)
    form = await request.form()
    cmd = PatchGroup(
        add_receiver_ids=_ids(field(form, "add")), remove_receiver_ids=_ids(field(form, "remove"))
    )
    return await _patch(request, services, group_id, cmd)


@post(
    f"{BASE}/groups/{{group_id:str}}/delete",
    opt=requires(Permission.GROUPS_DELETE),
    include_in_schema=False,
    status_code=200,
)
async def delete_group(request: Request[Any, Any, Any], group_id: FromPath[str]) -> Response[Any]:
    services = services_of(request.scope)
    check_id("group", group_id)
    await services.groups.delete(actor_of(request.scope), group_id)
    return redirect(f"{BASE}/groups")


HANDLERS = [groups, new_group, create_group, group, set_enabled, change_members, delete_group]
