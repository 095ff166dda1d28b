"""The one app factory: routes, lifespan, dependencies, problem details, OpenAPI.

`build_app` knows nothing of adapters: it is handed a factory of the Services'
context (entrypoints.bootstrap.create_app passes `open_services`), enters it
for the app's lifespan and injects the Services into handlers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from litestar import Litestar, Router
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme, Tag
from litestar.types import ControllerRouterHandler

from core.usecases import Services
from entrypoints.http import common, idempotency, tenancy
from entrypoints.http.idempotency import IdempotencyMiddleware, MemoryRecords
from entrypoints.http.problems import EXCEPTION_HANDLERS
from entrypoints.http.request_id import add_request_id
from entrypoints.http.routes import events, groups, health, receivers, tenants
from entrypoints.settings import Settings

ServicesFactory = Callable[[], AbstractAsyncContextManager[Services]]

DESCRIPTION = """\
Waypost records what happened to which artifact, checks every event against its
receiver's JSON Schema and fires receiver groups (release gates).

Tenant-scoped routes name their tenant with `X-Tenant: <slug>`. Errors are RFC 9457
problem details (`application/problem+json`). Every POST accepts `Idempotency-Key`.
"""


def build_app(services_factory: ServicesFactory, settings: Settings) -> Litestar:
    """The Waypost HTTP app over the Services that `services_factory` opens."""

    slot = common.ServicesSlot()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with services_factory() as services:
            slot.services = services
            tenancy.install(app.state, services.tenants)
            try:
                yield
            finally:
                slot.services = None

    actor = {"actor": Provide(tenancy.provide_actor, sync_to_thread=False)}

    def api(
        path: str,
        handlers: Sequence[ControllerRouterHandler],
        tag: str,
        *,
        scoped: bool = True,
        max_body: int | None = None,
    ) -> Router:
        return Router(
            path,
            route_handlers=handlers,
            # The caller first (401 before anything else), then Idempotency-Key.
            middleware=[tenancy.TenancyMiddleware, IdempotencyMiddleware]
            if scoped
            else [IdempotencyMiddleware],
            tags=[tag],
            dependencies=actor if scoped else None,
            security=[{tenancy.SECURITY_SCHEME: []}] if scoped else None,
            # None here would mean "no limit", not "the app's".
            request_max_body_size=max_body or settings.http.max_body_bytes,
        )

    app = Litestar(
        route_handlers=[
            api(tenants.PATH, tenants.HANDLERS, "tenants", scoped=False),
            api(receivers.PATH, receivers.HANDLERS, "receivers"),
            api(events.PATH, events.HANDLERS, "events"),
            api(
                events.BATCH_PATH,
                events.BATCH_HANDLERS,
                "events",
                max_body=settings.http.max_batch_body_bytes,
            ),
            api(groups.PATH, groups.HANDLERS, "groups"),
            *health.HANDLERS,
        ],
        lifespan=[lifespan],
        dependencies={"services": Provide(slot.provide, sync_to_thread=False)},
        exception_handlers=EXCEPTION_HANDLERS,
        before_send=[add_request_id],
        request_max_body_size=settings.http.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Waypost",
            version="1",
            description=DESCRIPTION,
            path="/schema",
            render_plugins=[SwaggerRenderPlugin(path="/"), JsonRenderPlugin()],
            components=Components(
                security_schemes={
                    tenancy.SECURITY_SCHEME: SecurityScheme(
                        type="apiKey",
                        name=tenancy.HEADER,
                        security_scheme_in="header",
                        description="The tenant's slug (authentication arrives later).",
                    )
                }
            ),
            tags=[
                Tag(name="tenants", description="Platform administrators' tenant management."),
                Tag(name="receivers", description="Event receivers: named JSON Schemas."),
                Tag(name="events", description="Events about artifacts."),
                Tag(name="groups", description="Receiver groups: release gates."),
                Tag(name="operations", description="Health probes."),
            ],
        ),
        logging_config=None,
        debug=False,
    )
    idempotency.install(app.state, MemoryRecords())
    return app
