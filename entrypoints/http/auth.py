"""Who is asking, in which tenant, and whether they may: authentication, scope, permission.

- `AuthenticationMiddleware` (every route but the public ones): the bearer
  credential (`Authorization: Bearer <access token or API key>`) and, for a
  platform administrator, the tenant named by `X-Tenant` -> an `Access` kept in
  the request's scope. A pure ASGI middleware, so that a request without a usable
  credential is a 401 before its body is read. Platform administrators are
  refused (403) from outside the configured networks.
- `authorize`, which the middleware runs next: each route handler declares the
  one `Permission` it needs (`requires(...)` in its `opt`); a handler that
  declares none is refused (fail closed) and fails the test that walks the
  routes. `PUBLIC` marks the few that need no credential.

Refusals are audited by the use cases with their precise reason; the caller
gets a problem document without it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any, Final

from litestar import Request
from litestar.di import NamedDependency
from litestar.enums import ScopeType
from litestar.handlers.base import BaseRouteHandler
from litestar.params import SkipValidation
from litestar.types import ASGIApp, Receive, Scope, Send

from core.domain.access import Permission, Role
from core.domain.errors import Forbidden
from core.usecases import Access, Actor, RequestContext, Services
from entrypoints.http.request_id import request_id

__all__ = [
    "PERMISSION",
    "PUBLIC",
    "SECURITY_SCHEME",
    "AdminNetworks",
    "AuthenticationMiddleware",
    "authorize",
    "client_address",
    "idempotency_scope",
    "provide_access",
    "provide_actor",
    "provide_context",
    "requires",
]

#: The route handler `opt` key of the permission a route needs.
PERMISSION: Final = "permission"
#: The `opt` of a route that needs no credential (health, JWKS, the token endpoint).
PUBLIC: Final = {"public": True}
#: How the OpenAPI document names the credential.
SECURITY_SCHEME: Final = "bearer"
TENANT_HEADER: Final = b"x-tenant"
_AUTHORIZATION: Final = b"authorization"
_ACCESS_KEY: Final = "waypost.access"
SERVICES_KEY: Final = "waypost.services"
NETWORKS_KEY: Final = "waypost.admin_networks"


def requires(permission: Permission) -> dict[str, Any]:
    """The `opt` of a route that needs `permission`."""
    return {PERMISSION: permission}


class AdminNetworks:
    """The networks platform administrators may connect from (IPv4 and IPv6)."""

    def __init__(self, networks: Iterable[str]) -> None:
        self._networks = [ipaddress.ip_network(n.strip(), strict=False) for n in networks]

    def allows(self, address: str | None) -> bool:
        if address is None:
            return False
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self._networks)


def client_address(scope: Scope) -> str | None:
    client = scope.get("client")
    return None if not client else str(client[0])


def request_context(scope: Scope) -> RequestContext:
    return RequestContext(
        address=client_address(scope),
        request_id=request_id(scope),
        route=f"{scope.get('method', '-')} {scope.get('path', '-')}",
    )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _bearer(scope: Scope) -> str | None:
    """The credential of `Authorization: Bearer <credential>` (None: no such header)."""
    value = _header(scope, _AUTHORIZATION)
    if value is None:
        return None
    scheme, _, credential = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credential.strip()


def services_of(scope: Scope) -> Services:
    services: Services = scope["app"].state[SERVICES_KEY]
    return services


class AuthenticationMiddleware:
    """Authenticates every request of the routes it guards (CORS preflights aside)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope["method"] != "OPTIONS":
            identity = services_of(scope).identity
            ctx = request_context(scope)
            access = await identity.authenticate(
                _bearer(scope), tenant=_header(scope, TENANT_HEADER), ctx=ctx
            )
            if Role.PLATFORM_ADMIN in access.principal.roles:
                networks: AdminNetworks = scope["app"].state[NETWORKS_KEY]
                if not networks.allows(ctx.address):
                    await identity.deny(
                        access,
                        ctx,
                        reason="address not in the administrators' networks",
                        detail="Platform administrators cannot connect from this address.",
                    )
            scope["state"][_ACCESS_KEY] = access
            await authorize(scope, access, ctx)
        await self.app(scope, receive, send)


def access_of(scope: Scope) -> Access | None:
    found: Access | None = scope["state"].get(_ACCESS_KEY)
    return found


async def authorize(scope: Scope, access: Access, ctx: RequestContext) -> None:
    """The permission the route declares (`requires`), or 403 (audited).

    Checked by the middleware right after authentication, before any rate limit, body or
    handler: a Litestar guard would get a copy of the route handler on every request
    (about 7% of a recorded event's cost). A route that declares no permission is
    refused (fail closed)."""
    handler: BaseRouteHandler = scope["route_handler"]
    permission = handler.opt.get(PERMISSION)
    if not isinstance(permission, Permission):
        raise Forbidden(None, "This route declares no permission: nobody may use it.")
    await services_of(scope).identity.authorize(access, permission, ctx)


def provide_access(
    request: Request[Any, Any, Any], services: NamedDependency[SkipValidation[Services]]
) -> Access:
    """The dependency `access`: who the middleware found, and the scope it acts in.

    It names `services` (which it does not use) so that Litestar resolves the two
    dependencies one after the other: independent ones are resolved in a task
    group, which costs more than both of them together.
    """
    access = access_of(request.scope)
    if access is None:  # pragma: no cover - the middleware runs on every protected route
        raise Forbidden(None)
    return access


def provide_actor(
    request: Request[Any, Any, Any], services: NamedDependency[SkipValidation[Services]]
) -> Actor:
    """The dependency `actor` of routes on a tenant's data (see `provide_access`)."""
    return provide_access(request, services).actor(request_id(request.scope))


def provide_context(request: Request[Any, Any, Any]) -> RequestContext:
    return request_context(request.scope)


def idempotency_scope(scope: Scope) -> str:
    """Whose Idempotency-Key space a request uses: its tenant's ("" for the platform)."""
    access = access_of(scope)
    return "" if access is None or access.tenant_id is None else access.tenant_id
