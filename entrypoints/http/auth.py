"""Who is asking, in which tenant, and whether they may: authentication, scope, permission.

- `AuthenticationMiddleware` (every route but the public ones): the bearer
  credential (`Authorization: Bearer <access token or API key>`), or an API key
  as the password of HTTP Basic (`Authorization: Basic`, the user name ignored:
  what clients send that can only put a credential in a URL,
  `https://any:wp_...@host/`), and, for a
  platform administrator, the tenant named by `X-Tenant` -> an `Access` kept in
  the request's scope. A pure ASGI middleware, so that a request without a usable
  credential is a 401 before its body is read. Platform administrators are
  refused (403) from outside the configured networks.
- `authorize`, which the middleware runs next: each route handler declares the
  one `Permission` it needs (`requires(...)` in its `opt`), or that each part of
  it asks for its own (`FIELD_PERMISSIONS`: GraphQL, /epr); a handler that
  declares neither is refused (fail closed) and fails the test that walks the
  routes. `PUBLIC` marks the few that need no credential. The console, which
  signs in by cookie, has its own middleware and uses `guard` (the same check as
  a Litestar guard).

Refusals are audited by the use cases with their precise reason; the caller
gets a problem document without it.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Iterable
from typing import Any, Final

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.handlers import HTTPRouteHandler
from litestar.handlers.base import BaseRouteHandler
from litestar.types import ASGIApp, Receive, Scope, Send

from core.domain.access import Permission, Role
from core.domain.errors import Forbidden
from core.usecases import Access, Actor, RequestContext, Services
from entrypoints.http.clients import ClientAddresses
from entrypoints.http.mtls import client_certificate
from entrypoints.http.request_id import request_id

__all__ = [
    "ACCESS_KEY",
    "BASIC_SCHEME",
    "FIELD_PERMISSIONS",
    "PERMISSION",
    "PUBLIC",
    "SECURITY_SCHEME",
    "AdminNetworks",
    "AuthenticationMiddleware",
    "actor_of",
    "authenticate",
    "authenticated",
    "authorize",
    "check_network",
    "client_address",
    "guard",
    "idempotency_scope",
    "request_context",
    "requires",
    "services_of",
]

#: The route handler `opt` key of the permission a route needs.
PERMISSION: Final = "permission"
#: The `opt` of a route that needs no credential (health, JWKS, the token endpoint).
PUBLIC: Final = {"public": True}
#: The `opt` of a route whose every part asks for its own permission (GraphQL: each
#: field asks for its REST twin's); the route itself needs only an authenticated caller.
FIELD_PERMISSIONS: Final = {"field_permissions": True}
#: How the OpenAPI document names the credential.
SECURITY_SCHEME: Final = "bearer"
BASIC_SCHEME: Final = "basic"
TENANT_HEADER: Final = b"x-tenant"
_AUTHORIZATION: Final = b"authorization"
#: Where the middleware keeps the request's `Access` (the console's sets it too).
ACCESS_KEY: Final = "waypost.access"
SERVICES_KEY: Final = "waypost.services"
NETWORKS_KEY: Final = "waypost.admin_networks"
#: The mTLS service identities of the app (`entrypoints.http.mtls.ServiceIdentities`).
SERVICE_IDENTITIES_KEY: Final = "waypost.service_identities"
#: Where tracing keeps the request's (trace id, span id) (entrypoints.tracing).
TRACE_KEY: Final = "waypost.trace"


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


_CLIENT_KEY: Final = "waypost.client"
CLIENTS_KEY: Final = "waypost.clients"


def client_address(scope: Scope) -> str | None:
    """The client's address (`clients.ClientAddresses`: behind trusted proxies, the one they
    forwarded), found once per request."""
    state = scope.get("state")
    if state is not None and _CLIENT_KEY in state:
        found: str | None = state[_CLIENT_KEY]
        return found
    clients: ClientAddresses | None = scope["app"].state.get(CLIENTS_KEY)
    if clients is None:
        client = scope.get("client")
        found = None if not client else str(client[0])
    else:
        found = clients.of(scope)
    if state is not None:
        state[_CLIENT_KEY] = found
    return found


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


def credential(scope: Scope) -> tuple[str | None, bool]:
    """The credential of `Authorization` and whether it came as HTTP Basic's password.

    `Bearer <credential>`; or `Basic base64(user:password)`, whose password is an API
    key and whose user name is ignored (a malformed Basic value is handed on as it is,
    to be refused as a malformed API key). (None, False): no credential."""
    value = _header(scope, _AUTHORIZATION)
    if value is None:
        return None, False
    scheme, _, given = value.strip().partition(" ")
    given = given.strip()
    if scheme.lower() == "bearer":
        return given, False
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(given, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return given or None, True
        _, colon, password = decoded.partition(":")
        return (password if colon else decoded) or None, True
    return None, False


def services_of(scope: Scope) -> Services:
    """The use cases, which the app's lifespan opened (handlers run only inside it)."""
    services: Services = scope["app"].state[SERVICES_KEY]
    return services


async def check_network(scope: Scope, access: Access, ctx: RequestContext) -> None:
    """Platform administrators only from the configured networks (403, audited)."""
    if Role.PLATFORM_ADMIN in access.principal.roles:
        networks: AdminNetworks = scope["app"].state[NETWORKS_KEY]
        if not networks.allows(ctx.address):
            await services_of(scope).identity.deny(
                access,
                ctx,
                reason="address not in the administrators' networks",
                detail="Platform administrators cannot connect from this address.",
            )


class AuthenticationMiddleware:
    """Authenticates every request of the routes it guards (CORS preflights and Litestar's
    own OPTIONS answers aside), then checks the permission its route declares."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope["method"] != "OPTIONS":
            access = await authenticate(scope)
            scope["state"][ACCESS_KEY] = access
            await authorize(scope, access)
        await self.app(scope, receive, send)


async def authenticate(scope: Scope) -> Access:
    """Who the request's credential is, in which tenant (raises Unauthenticated or Forbidden).

    The middleware's check, also made again by a long-lived response (the live tail) to
    end when its credential stops being valid."""
    identity = services_of(scope).identity
    ctx = request_context(scope)
    given, basic = credential(scope)
    tenant = _header(scope, TENANT_HEADER)
    certificate = client_certificate(scope) if given is None else None
    if certificate is not None and _header(scope, _AUTHORIZATION) is None:
        # mTLS: a verified client certificate, mapped to a service identity
        found = scope["app"].state[SERVICE_IDENTITIES_KEY].find(certificate)
        name, slug, role = found if found is not None else (None, "", Role.EVENT_VIEWER)
        access = await identity.authenticate_service(
            name, tenant_slug=slug, role=role, tenant=tenant, ctx=ctx
        )
    else:
        access = await identity.authenticate(given, tenant=tenant, ctx=ctx, api_key_only=basic)
    await check_network(scope, access, ctx)
    return access


def access_of(scope: Scope) -> Access | None:
    found: Access | None = scope["state"].get(ACCESS_KEY)
    return found


async def authorize(scope: Scope, access: Access, handler: BaseRouteHandler | None = None) -> None:
    """The permission the request's route declares (`requires`), or 403 (audited).

    Checked by the middleware right after authentication, before any rate limit, body or
    handler: a Litestar guard would get a copy of the route handler on every request
    (about 7% of a recorded event's cost). A route whose parts ask for their own
    permissions (`FIELD_PERMISSIONS`) needs only the authenticated caller. A route that
    declares neither is refused (fail closed)."""
    if handler is None:
        handler = scope["route_handler"]
    opt = handler.opt
    if opt.get("field_permissions") is True:
        return
    permission = opt.get(PERMISSION)
    if not isinstance(permission, Permission):
        raise Forbidden(None, "This route declares no permission: nobody may use it.")
    await services_of(scope).identity.authorize(access, permission, request_context(scope))


async def guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """`authorize` as a Litestar guard, for routes whose access is found by another
    middleware (the console's session): 403 without one. Litestar's own OPTIONS handlers
    (they answer `Allow`, nothing else) need none."""
    if isinstance(handler, HTTPRouteHandler) and handler.http_methods == {"OPTIONS"}:
        return
    access = access_of(connection.scope)
    if access is None:
        raise Forbidden(None, "This route declares no permission: nobody may use it.")
    await authorize(connection.scope, access, handler)


# What a handler needs besides its parameters (the Services, who calls, the request's
# context), it reads from the scope with the functions here, rather than taking Litestar
# dependencies: a dependency that takes the request costs Litestar a parse of its
# parameters on every request (about 3.5% of a recorded event's instructions, measured),
# and one that takes none still costs its resolution (about 1.3%). The lifespan puts the
# Services in the app's state; the middleware above puts who it authenticated in the
# request's (tests/http/test_dependencies.py walks the routes).


def authenticated(scope: Scope) -> Access:
    """Who the middleware found, and the scope it acts in (routes it guards only)."""
    access = access_of(scope)
    if access is None:  # pragma: no cover - the middleware runs on every protected route
        raise Forbidden(None)
    return access


def actor_of(scope: Scope) -> Actor:
    """The use cases' actor of routes on a tenant's data. What it writes is correlated with
    the request's trace when it is traced (trace id, span id), else with its request id."""
    access = authenticated(scope)
    traced: tuple[str, str] | None = scope["state"].get(TRACE_KEY)
    if traced is not None:
        return access.actor(*traced)
    return access.actor(request_id(scope))


def idempotency_scope(scope: Scope) -> str:
    """Whose Idempotency-Key space a request uses: its tenant's ("" for the platform)."""
    access = access_of(scope)
    return "" if access is None or access.tenant_id is None else access.tenant_id
