"""Who is asking and for which tenant: the one module to swap when authentication arrives.

For now a request names its tenant with `X-Tenant: <slug>` (API.md: the
platform-administrator form) and nothing else is checked. A missing header, an
unknown tenant and a disabled tenant are all the same 401 (no existence leak).
Known, enabled tenants are remembered for a few seconds so that the hot path
does not read the store on every request; a tenant changed through this process
is forgotten at once, one changed through another process within
`CACHE_SECONDS`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.enums import ScopeType
from litestar.params import SkipValidation
from litestar.types import ASGIApp, Receive, Scope, Send

from core.domain.errors import NotFound
from core.domain.model import Tenant
from core.usecases import Actor, Services, Tenants
from entrypoints.http.problems import Unauthenticated
from entrypoints.http.request_id import request_id

HEADER: Final = "X-Tenant"
#: How the OpenAPI document describes the header (a security scheme, as credentials are).
SECURITY_SCHEME: Final = "tenant"
_HEADER_KEY: Final = b"x-tenant"
#: Who the actor is while nothing is authenticated.
PRINCIPAL: Final = "anonymous"
CACHE_SECONDS: Final = 5.0
CACHE_CAPACITY: Final = 4096
_STATE_KEY: Final = "tenancy"
_ACTOR_KEY: Final = "waypost.actor"

_REFUSED = "The request names no known, enabled tenant (X-Tenant header)."


class TenantResolver:
    """Tenants by the slug a request names, with a short-lived cache of the enabled ones."""

    def __init__(
        self,
        tenants: Tenants,
        *,
        ttl: float = CACHE_SECONDS,
        capacity: int = CACHE_CAPACITY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tenants = tenants
        self._ttl = ttl
        self._capacity = capacity
        self._clock = clock
        self._cache: dict[str, tuple[float, Tenant]] = {}

    async def resolve(self, slug: str | None) -> Tenant:
        if not slug:
            raise Unauthenticated(_REFUSED)
        now = self._clock()
        hit = self._cache.get(slug)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            tenant = await self._tenants.get(slug)
        except NotFound:
            raise Unauthenticated(_REFUSED) from None
        if tenant.disabled:
            self._cache.pop(slug, None)
            raise Unauthenticated(_REFUSED)
        if len(self._cache) >= self._capacity:
            self._cache.pop(next(iter(self._cache)))
        self._cache[slug] = (now + self._ttl, tenant)
        return tenant

    def forget(self) -> None:
        """Drop every remembered tenant (a tenant was changed)."""
        self._cache.clear()


def install(state: State, tenants: Tenants) -> None:
    state[_STATE_KEY] = TenantResolver(tenants)


def resolver(state: State) -> TenantResolver:
    found: TenantResolver = state[_STATE_KEY]
    return found


class TenancyMiddleware:
    """Resolves the caller on tenant-scoped routes before anything else looks at the request.

    A pure ASGI middleware, so that a request naming no usable tenant is a 401
    before its body is read or decoded (not a 400 about a body nobody may send),
    and before its Idempotency-Key is looked at.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope["method"] != "OPTIONS":
            tenant = await resolver(scope["app"].state).resolve(_header(scope))
            scope["state"][_ACTOR_KEY] = Actor(
                tenant_id=tenant.id, principal=PRINCIPAL, correlation_id=request_id(scope)
            )
        await self.app(scope, receive, send)


def provide_actor(
    request: Request[Any, Any, Any], services: NamedDependency[SkipValidation[Services]]
) -> Actor:
    """The dependency `actor` of every tenant-scoped route: who the middleware found.

    It names `services` (which it does not use) so that Litestar resolves the two
    dependencies one after the other: independent ones are resolved in a task
    group, which costs more than both of them together.
    """
    actor: Actor = request.scope["state"][_ACTOR_KEY]
    return actor


def _header(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == _HEADER_KEY:
            return value.decode("latin-1")
    return None


def idempotency_scope(scope: Scope) -> str:
    """Whose Idempotency-Key space a request uses: its tenant's ("" on platform routes)."""
    actor: Actor | None = scope["state"].get(_ACTOR_KEY)
    return "" if actor is None else actor.tenant_id
