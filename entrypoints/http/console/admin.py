"""The console's administration: users, API keys (a new key is shown once), the audit log.

They act in the session's scope, as the API's routes do: a tenant's admin in its
tenant; a platform administrator in the tenant it picked, or in the platform.
"""

from __future__ import annotations

from typing import Any, Final

from litestar import Request, Response, get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Template

from core.domain.access import PLATFORM_ROLES, TENANT_ROLES, Permission, Role
from core.domain.commands import CreateApiKey, CreateUser, PatchUser
from core.domain.errors import DomainError, FieldError
from core.ports import AuditFilter, PageRequest
from core.usecases import Services
from entrypoints.http.auth import authenticated, request_context, requires, services_of
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
from entrypoints.http.console.pages import parse_moment
from entrypoints.http.problems import BadRequest, status_of

ADMIN: Final = f"{BASE}/admin"
_USERS: Final = "console-users"
_KEYS: Final = "console-keys"
_AUDIT: Final = "console-audit"
AUDIT_FILTERS: Final = ("action", "actor", "outcome", "since", "until")


def _roles(request: Request[Any, Any, Any]) -> list[str]:
    """The roles a principal of the session's scope may hold, in the table's order."""
    scope = authenticated(request.scope).tenant_id
    allowed = TENANT_ROLES if scope is not None else PLATFORM_ROLES
    return [role.value for role in Role if role in allowed]


# --- users ------------------------------------------------------------------------------------


async def _users_page(
    request: Request[Any, Any, Any],
    services: Services,
    cursor: str | None,
    *,
    status: int = 200,
    **context: Any,
) -> Template:
    access = authenticated(request.scope)
    found = await services.identity.list_users(
        access, PageRequest(limit=PAGE_SIZE + 1, after=after(_USERS, cursor))
    )
    items, next_cursor = cut(_USERS, found, PAGE_SIZE)
    defaults: dict[str, Any] = {"form": {"username": ""}, "errors": {}, "error_list": []}
    return page(
        request,
        "users.html",
        status=status,
        users=items,
        next_cursor=next_cursor,
        roles=_roles(request),
        **{**defaults, **context},
    )


@get(f"{ADMIN}/users", opt=requires(Permission.USERS_MANAGE), include_in_schema=False)
async def users(request: Request[Any, Any, Any], cursor: FromQuery[str | None] = None) -> Template:
    """The scope's users, and the form that adds one."""
    services = services_of(request.scope)
    return await _users_page(request, services, cursor)


@post(
    f"{ADMIN}/users",
    opt=requires(Permission.USERS_MANAGE),
    include_in_schema=False,
    status_code=200,
)
async def create_user(request: Request[Any, Any, Any]) -> Response[Any]:
    services = services_of(request.scope)
    form = await request.form()
    roles = [v for v in form.getall("roles", []) if isinstance(v, str)]
    username = field(form, "username")
    cmd = CreateUser(username=username, password=field(form, "password"), roles=roles)
    try:
        await services.identity.create_user(
            authenticated(request.scope), cmd, request_context(request.scope)
        )
    except DomainError as exc:
        return await _users_page(
            request,
            services,
            None,
            status=status_of(exc),
            form={"username": username},
            errors=errors_by_field(exc.errors),
            error_list=exc.errors,
            detail=exc.detail,
        )
    return redirect(f"{ADMIN}/users")


@post(
    f"{ADMIN}/users/{{user_id:str}}",
    opt=requires(Permission.USERS_MANAGE),
    include_in_schema=False,
    status_code=200,
)
async def change_user(request: Request[Any, Any, Any], user_id: FromPath[str]) -> Response[Any]:
    """Disable or enable a user, or delete one (`action`)."""
    services = services_of(request.scope)
    check_id("user", user_id)
    form = await request.form()
    access = authenticated(request.scope)
    ctx = request_context(request.scope)
    action = field(form, "action")
    if action == "delete":
        await services.identity.delete_user(access, user_id, ctx)
    elif action in ("disable", "enable"):
        await services.identity.patch_user(
            access, user_id, PatchUser(disabled=action == "disable"), ctx
        )
    else:
        raise BadRequest(
            "Unknown action.", [FieldError("action", "must be disable, enable or delete")]
        )
    return redirect(f"{ADMIN}/users")


# --- API keys ---------------------------------------------------------------------------------


async def _keys_page(
    request: Request[Any, Any, Any],
    services: Services,
    cursor: str | None,
    *,
    status: int = 200,
    **context: Any,
) -> Template:
    access = authenticated(request.scope)
    found = await services.identity.list_api_keys(
        access, PageRequest(limit=PAGE_SIZE + 1, after=after(_KEYS, cursor))
    )
    items, next_cursor = cut(_KEYS, found, PAGE_SIZE)
    defaults: dict[str, Any] = {
        "form": {"name": "", "role": "", "expires_at": ""},
        "errors": {},
        "error_list": [],
        "new_key": None,
    }
    return page(
        request,
        "api_keys.html",
        status=status,
        keys=items,
        next_cursor=next_cursor,
        roles=_roles(request),
        now=services.deps.clock.now(),
        **{**defaults, **context},
    )


@get(f"{ADMIN}/api-keys", opt=requires(Permission.API_KEYS_MANAGE), include_in_schema=False)
async def api_keys(
    request: Request[Any, Any, Any], cursor: FromQuery[str | None] = None
) -> Template:
    """The scope's API keys, and the form that makes one."""
    services = services_of(request.scope)
    return await _keys_page(request, services, cursor)


@post(
    f"{ADMIN}/api-keys",
    opt=requires(Permission.API_KEYS_MANAGE),
    include_in_schema=False,
    status_code=200,
)
async def create_api_key(request: Request[Any, Any, Any]) -> Response[Any]:
    """A new key, shown on the answer once (never in a URL, never again)."""
    services = services_of(request.scope)
    form = await request.form()
    values = {k: field(form, k) for k in ("name", "role", "expires_at")}
    try:
        expires_at = parse_moment("expires_at", values["expires_at"])
        key, text = await services.identity.create_api_key(
            authenticated(request.scope),
            CreateApiKey(name=values["name"], role=values["role"], expires_at=expires_at),
            request_context(request.scope),
        )
    except (DomainError, BadRequest) as exc:
        status = exc.status if isinstance(exc, BadRequest) else status_of(exc)
        return await _keys_page(
            request,
            services,
            None,
            status=status,
            form=values,
            errors=errors_by_field(exc.errors),
            error_list=exc.errors,
            detail=exc.detail,
        )
    return await _keys_page(request, services, None, status=201, new_key={"key": key, "text": text})


@post(
    f"{ADMIN}/api-keys/{{key_id:str}}/revoke",
    opt=requires(Permission.API_KEYS_MANAGE),
    include_in_schema=False,
    status_code=200,
)
async def revoke_api_key(request: Request[Any, Any, Any], key_id: FromPath[str]) -> Response[Any]:
    services = services_of(request.scope)
    check_id("API key", key_id)
    await services.identity.revoke_api_key(
        authenticated(request.scope), key_id, request_context(request.scope)
    )
    return redirect(f"{ADMIN}/api-keys")


# --- the audit log ----------------------------------------------------------------------------


@get(f"{ADMIN}/audit", opt=requires(Permission.AUDIT_READ), include_in_schema=False)
async def audit(
    *,
    request: Request[Any, Any, Any],
    cursor: FromQuery[str | None] = None,
    rows: FromQuery[bool] = False,
) -> Template:
    """The scope's audit log, newest first, filtered by action, actor, outcome and time."""
    services = services_of(request.scope)
    given = {name: request.query_params.get(name, "") for name in AUDIT_FILTERS}
    try:
        where = AuditFilter(
            action=given["action"] or None,
            actor=given["actor"] or None,
            outcome=given["outcome"] or None,
            since=parse_moment("since", given["since"]),
            until=parse_moment("until", given["until"]),
        )
    except BadRequest as exc:
        return page(
            request,
            "audit.html",
            status=400,
            records=[],
            next_cursor=None,
            filters=given,
            errors=errors_by_field(exc.errors),
        )
    found = await services.audit.list(
        authenticated(request.scope).tenant_id,
        where,
        PageRequest(limit=PAGE_SIZE + 1, after=after(_AUDIT, cursor)),
    )
    items, next_cursor = cut(_AUDIT, found, PAGE_SIZE)
    return page(
        request,
        "audit_rows.html" if rows else "audit.html",
        records=items,
        next_cursor=next_cursor,
        filters=given,
        errors={},
    )


HANDLERS = [users, create_user, change_user, api_keys, create_api_key, revoke_api_key, audit]
