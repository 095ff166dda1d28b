"""The audit log of the scope a principal acts in, newest first, filtered and paged by keyset."""

from __future__ import annotations

from typing import Annotated

from litestar import get
from litestar.params import QueryParameter
from litestar.types import Scope

from core.domain.access import Permission
from core.ports import AuditFilter
from entrypoints.http.auth import authenticated, requires, services_of
from entrypoints.http.common import API, problems
from entrypoints.http.paging import Cursor, Limit, OrderParam, page_of, page_request
from entrypoints.http.routes.events import Moment, moment
from entrypoints.http.views import AuditPage, audit_view

PATH = f"{API}/audit"
KIND = "audit"

Filter = Annotated[str | None, QueryParameter(description="Exact match.")]


@get(
    "/",
    opt=requires(Permission.AUDIT_READ),
    summary="Read the audit log",
    description="Who did what, when, from which address, and how it ended: logins, refused "
    "credentials, denied accesses, keys, users and roles, token families, tenants, secrets. "
    "`action` (e.g. `auth.login`, `auth.refused`, `access.denied`, `api_key.created`), "
    "`actor` (e.g. `user:<id>`), `outcome` (`success`, `failure`, `denied`), `since` and "
    "`until` on the time.",
    responses=problems(400, 401, 403),
)
async def list_audit(
    *,
    action: Filter = None,
    actor: Filter = None,
    outcome: Filter = None,
    since: Moment = None,
    until: Moment = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    order: OrderParam = "desc",
    scope: Scope,
) -> AuditPage:
    services = services_of(scope)
    access = authenticated(scope)
    page = page_request(KIND, limit, cursor, order)
    where = AuditFilter(
        action=action,
        actor=actor,
        outcome=outcome,
        since=moment("since", since),
        until=moment("until", until),
    )
    found = await services.audit.list(access.tenant_id, where, page)
    return page_of(KIND, found, limit=limit, order=order, view=audit_view, page=AuditPage)


HANDLERS = [list_audit]
