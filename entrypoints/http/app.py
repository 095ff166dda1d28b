"""The one app factory: routes, lifespan, authentication, problem details, OpenAPI.

`build_app` knows nothing of adapters: it is handed a factory of the Services'
context (entrypoints.bootstrap.create_app passes `open_services` with the
signing keys loaded), enters it for the app's lifespan and injects the Services
into handlers. While it runs, a background task keeps the signing keys up to
date with their rotation policy and reloads what other processes rotated.

Every route is authenticated (`auth.AuthenticationMiddleware`), rate limited and
bounded (`limits`) and held to the permission it declares (`auth.authorize`),
except the public few: the health probes, the metrics (which may be restricted to
networks), the JWKS, the API description, and the token endpoints (whose credential
is in the body; rate limited per client address).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import anyio
from litestar import Litestar, Router
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme, Tag
from litestar.types import ControllerRouterHandler, Middleware

from core.usecases import Publisher, Services
from entrypoints.http import auth, common, idempotency, limits, metrics
from entrypoints.http.idempotency import IdempotencyMiddleware, MemoryRecords
from entrypoints.http.limits import (
    BackpressureMiddleware,
    Limits,
    RateLimitMiddleware,
    StreamsMiddleware,
)
from entrypoints.http.problems import EXCEPTION_HANDLERS
from entrypoints.http.request_id import add_request_id
from entrypoints.http.routes import (
    api_keys,
    audit,
    events,
    groups,
    health,
    messages,
    receivers,
    tenants,
    users,
)
from entrypoints.http.routes import auth as auth_routes
from entrypoints.http.security import add_security_headers, cors_config
from entrypoints.settings import Settings

ServicesFactory = Callable[[], AbstractAsyncContextManager[Services]]

log = logging.getLogger("waypost.http")

DESCRIPTION = """\
Waypost records what happened to which artifact, checks every event against its
receiver's JSON Schema and fires receiver groups (release gates).

Every route but the health probes, the metrics, the JWKS and this description needs
`Authorization: Bearer <access token or API key>`; get an access token from
`POST /api/v1/auth/token`. The tenant comes from the credential; a platform
administrator names one with `X-Tenant: <slug>`. Errors are RFC 9457 problem
details (`application/problem+json`). Every POST on a tenant's data accepts
`Idempotency-Key`. Over a credential's rate limit the answer is 429, from a server at
its limit of work in flight 503; both say when to retry in `Retry-After`.
"""


async def _maintain(services: Services, every: float) -> None:
    """Rotate the signing key when its policy says so, and pick up other processes' work."""
    while True:
        await anyio.sleep(every)
        try:
            await services.secrets.maintain()
            await services.identity.housekeeping()
        except Exception:
            log.exception("the signing keys could not be maintained; retrying later")


#: The longest wait between two attempts while the message sink fails.
MAX_PUBLISH_BACKOFF_SECONDS = 30.0


async def _publish(publisher: Publisher, every: float) -> None:
    """Copy the messages to the sink for as long as the app runs: again at once while
    there were some, every `every` seconds when idle; while the sink fails, after a
    wait that doubles up to `MAX_PUBLISH_BACKOFF_SECONDS` (one log line per outage)."""
    backoff = 0.0
    while True:
        try:
            published = await publisher.publish_once()
        except Exception:
            if backoff == 0.0:
                log.exception("publishing messages failed; retrying with backoff")
            backoff = min(MAX_PUBLISH_BACKOFF_SECONDS, max(every, backoff * 2))
            publisher.forget()
            await anyio.sleep(backoff)
            continue
        if backoff:
            log.info("publishing messages works again")
            backoff = 0.0
        if not published:
            await anyio.sleep(every)


def build_app(services_factory: ServicesFactory, settings: Settings) -> Litestar:
    """The Waypost HTTP app over the Services that `services_factory` opens."""

    slot = common.ServicesSlot()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with services_factory() as services, anyio.create_task_group() as tasks:
            slot.services = services
            app.state[auth.SERVICES_KEY] = services
            tasks.start_soon(_maintain, services, settings.secrets.reload_seconds)
            if services.publisher is not None:
                tasks.start_soon(_publish, services.publisher, settings.redis_streams.poll_seconds)
            try:
                yield
            finally:
                slot.services = None
                tasks.cancel_scope.cancel()

    principals = {
        "access": Provide(auth.provide_access, sync_to_thread=False),
        "ctx": Provide(auth.provide_context, sync_to_thread=False),
    }
    # Routes on a tenant's data also get the use cases' `actor` (the audit log's routes
    # have a query parameter of that name instead).
    data = {**principals, "actor": Provide(auth.provide_actor, sync_to_thread=False)}
    security: list[dict[str, list[str]]] = [{auth.SECURITY_SCHEME: []}]

    def api(
        path: str,
        handlers: Sequence[ControllerRouterHandler],
        tag: str,
        *,
        idempotent: bool = True,
        max_body: int | None = None,
        tenant_data: bool = True,
        streams: bool = False,
    ) -> Router:
        # The caller first (401 before anything else), its rate limit, the bound on work
        # in flight (long-lived streams have their own), then Idempotency-Key.
        middleware: list[Middleware] = [
            auth.AuthenticationMiddleware,
            RateLimitMiddleware,
            StreamsMiddleware if streams else BackpressureMiddleware,
        ]
        if idempotent:
            middleware.append(IdempotencyMiddleware)
        return Router(
            path,
            route_handlers=handlers,
            middleware=middleware,
            tags=[tag],
            dependencies=data if tenant_data else principals,
            security=security,
            # None here would mean "no limit", not "the app's".
            request_max_body_size=max_body or settings.http.max_body_bytes,
        )

    public_api = Router(
        auth_routes.PATH,
        route_handlers=auth_routes.HANDLERS,
        tags=["identity"],
        dependencies={"ctx": Provide(auth.provide_context, sync_to_thread=False)},
        # No credential yet: limited per client address (password guessing).
        middleware=[RateLimitMiddleware, BackpressureMiddleware],
        request_max_body_size=64 * 1024,
    )

    app = Litestar(
        route_handlers=[
            api(tenants.PATH, tenants.HANDLERS, "tenants", tenant_data=False),
            api(receivers.PATH, receivers.HANDLERS, "receivers"),
            api(events.PATH, events.HANDLERS, "events"),
            api(
                events.BATCH_PATH,
                events.BATCH_HANDLERS,
                "events",
                max_body=settings.http.max_batch_body_bytes,
            ),
            api(groups.PATH, groups.HANDLERS, "groups"),
            api(messages.PATH, messages.HANDLERS, "messages", idempotent=False, streams=True),
            api(users.PATH, users.HANDLERS, "identity", tenant_data=False),
            # A new key's answer holds the key: never kept for a replay.
            api(
                api_keys.PATH,
                api_keys.HANDLERS,
                "identity",
                idempotent=False,
                tenant_data=False,
            ),
            api(audit.PATH, audit.HANDLERS, "identity", tenant_data=False),
            public_api,
            *auth_routes.PUBLIC_HANDLERS,
            *health.HANDLERS,
        ],
        lifespan=[lifespan],
        dependencies={"services": Provide(slot.provide, sync_to_thread=False)},
        exception_handlers=EXCEPTION_HANDLERS,
        before_send=[add_request_id, add_security_headers],
        cors_config=cors_config(settings),
        request_max_body_size=settings.http.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Waypost",
            version="1",
            description=DESCRIPTION,
            path="/schema",
            render_plugins=[SwaggerRenderPlugin(path="/"), JsonRenderPlugin()],
            components=Components(
                security_schemes={
                    auth.SECURITY_SCHEME: SecurityScheme(
                        type="http",
                        scheme="bearer",
                        description="An access token (JWT, from `POST /api/v1/auth/token`) "
                        "or an API key (`wp_<prefix>_<secret>`).",
                    )
                }
            ),
            tags=[
                Tag(name="tenants", description="Platform administrators' tenant management."),
                Tag(name="receivers", description="Event receivers: named JSON Schemas."),
                Tag(name="events", description="Events about artifacts."),
                Tag(name="groups", description="Receiver groups: release gates."),
                Tag(name="messages", description="The live tail of a tenant's CloudEvents."),
                Tag(name="identity", description="Tokens, users, API keys, the audit log."),
                Tag(name="operations", description="Health probes and metrics."),
            ],
        ),
        logging_config=None,
        debug=False,
    )
    app.state[auth.NETWORKS_KEY] = auth.AdminNetworks(settings.security.admin_networks)
    idempotency.install(app.state, MemoryRecords())
    limits.install(app.state, Limits(settings.limits))
    messages.install(app.state)
    # Last: its middleware wraps everything above (404s and 405s included).
    metrics.install(app, settings.metrics)
    return app
