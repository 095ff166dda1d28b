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
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme, Tag
from litestar.types import ControllerRouterHandler, ExceptionHandlersMap, Middleware
from prometheus_client.registry import Collector

from core.ports import SharedRateLimiter, Unavailable
from core.usecases import Publisher, Services
from entrypoints.http import auth, console, idempotency, limits, metrics, metrics_json
from entrypoints.http.apidocs import LocalSwaggerPlugin
from entrypoints.http.clients import ClientAddresses
from entrypoints.http.gql.execution import Endpoint
from entrypoints.http.limits import (
    BackpressureMiddleware,
    Limits,
    LongPollMiddleware,
    RateLimitMiddleware,
    StreamsMiddleware,
)
from entrypoints.http.mtls import ServiceIdentities
from entrypoints.http.problems import EXCEPTION_HANDLERS
from entrypoints.http.queries import QueryTextMiddleware
from entrypoints.http.routes import (
    api_keys,
    audit,
    epr,
    events,
    graphql,
    groups,
    health,
    messages,
    receivers,
    subscriptions,
    tenants,
    users,
)
from entrypoints.http.routes import auth as auth_routes
from entrypoints.http.security import add_answer_headers, cors_config
from entrypoints.settings import Settings

ServicesFactory = Callable[[], AbstractAsyncContextManager[Services]]

log = logging.getLogger("waypost.http")

DESCRIPTION = """\
Waypost records what happened to which artifact, checks every event against its
receiver's JSON Schema and fires receiver groups (release gates).

Every route but the health probes, the metrics, the JWKS and this description needs
`Authorization: Bearer <access token or API key>` (or HTTP Basic with an API key as
the password, for clients that can only put a credential in a URL); get an access
token from `POST /api/v1/auth/token`. The tenant comes from the credential; a platform
administrator names one with `X-Tenant: <slug>`. Errors are RFC 9457 problem
details (`application/problem+json`). Every POST that writes accepts `Idempotency-Key`
(each declares it; GraphQL and the token endpoints do not). Over a credential's rate
limit the answer is 429, from a server at its limit of work in flight 503 (as while the
database cannot serve); each says when to retry in `Retry-After`.
"""


async def _maintain(services: Services, every: float) -> None:
    """Rotate the signing key when its policy says so, pick up other processes' work, and
    delete what is kept only for a while (revocations, Idempotency-Key records)."""
    while True:
        await anyio.sleep(every)
        try:
            await services.secrets.maintain()
            await services.identity.housekeeping()
            await services.retention.purge_idempotency()
        except Unavailable as exc:  # the store logged the outage once already
            log.info("maintenance skipped: %s; retrying later", exc)
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


def build_app(
    services_factory: ServicesFactory,
    settings: Settings,
    *,
    collectors: Sequence[Collector] = (),
    shared_limiter: SharedRateLimiter | None = None,
) -> Litestar:
    """The Waypost HTTP app over the Services that `services_factory` opens; `collectors`
    add to its metrics (delivery's, when it runs in this process); its rate limits are
    shared through `shared_limiter` when given (closed with the app)."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with services_factory() as services, anyio.create_task_group() as tasks:
            app.state[auth.SERVICES_KEY] = services
            tasks.start_soon(_maintain, services, settings.secrets.reload_seconds)
            if services.publisher is not None:
                tasks.start_soon(_publish, services.publisher, settings.redis.stream_poll_seconds)
            try:
                yield
            finally:
                tasks.cancel_scope.cancel()
                await limits.limits_of(app.state).rates.close()

    security: list[dict[str, list[str]]] = [{auth.SECURITY_SCHEME: []}, {auth.BASIC_SCHEME: []}]

    def api(
        path: str,
        handlers: Sequence[ControllerRouterHandler],
        tag: str,
        *,
        max_body: int | None = None,
        streams: bool = False,
        exception_handlers: ExceptionHandlersMap | None = None,
        long_poll: bool = False,
    ) -> Router:
        # The bound on work in flight first, from the request's arrival (long-lived streams
        # and long polls have their own), then the caller (401 before anything else is
        # read), its rate limit, then Idempotency-Key (on the routes marked IDEMPOTENT).
        bounded = (
            StreamsMiddleware
            if streams
            else LongPollMiddleware
            if long_poll
            else BackpressureMiddleware
        )
        middleware: list[Middleware] = [
            bounded,
            QueryTextMiddleware,
            auth.AuthenticationMiddleware,
            RateLimitMiddleware,
        ]
        idempotency.guard(handlers)
        return Router(
            path,
            route_handlers=handlers,
            middleware=middleware,
            tags=[tag],
            security=security,
            # None here would mean "no limit", not "the app's".
            request_max_body_size=max_body or settings.http.max_body_bytes,
            exception_handlers=exception_handlers,
        )

    gql = Endpoint(settings.graphql)
    graphql_api = api(
        graphql.PATH,
        [
            graphql.post_handler(gql, ["/"], lenient=False, summary="GraphQL"),
            graphql.post_handler(
                gql,
                ["/query"],
                lenient=True,
                summary="GraphQL at EPR's path (unknown input fields ignored)",
            ),
        ],
        "graphql",
        exception_handlers=graphql.EXCEPTION_HANDLERS,
    )

    public_api = Router(
        auth_routes.PATH,
        route_handlers=auth_routes.HANDLERS,
        tags=["identity"],
        # No credential yet: limited per client address (password guessing).
        middleware=[BackpressureMiddleware, QueryTextMiddleware, RateLimitMiddleware],
        request_max_body_size=64 * 1024,
    )

    app = Litestar(
        route_handlers=[
            api(tenants.PATH, tenants.HANDLERS, "tenants"),
            api(receivers.PATH, receivers.HANDLERS, "receivers"),
            api(events.PATH, events.HANDLERS, "events"),
            api(
                events.BATCH_PATH,
                events.BATCH_HANDLERS,
                "events",
                max_body=settings.http.max_batch_body_bytes,
            ),
            api(groups.PATH, groups.HANDLERS, "groups", long_poll=True),
            api(messages.PATH, messages.HANDLERS, "messages", streams=True),
            api(subscriptions.PATH, subscriptions.HANDLERS, "subscriptions"),
            api(users.PATH, users.HANDLERS, "identity"),
            api(api_keys.PATH, api_keys.HANDLERS, "identity"),
            api(audit.PATH, audit.HANDLERS, "identity"),
            graphql_api,
            *graphql.graphiql_handlers(graphql.PATH, graphql.PATH),
            # EPR's clients, unchanged (entrypoints/http/routes/epr.py).
            api(epr.PATH, epr.handlers(gql), "epr", exception_handlers=epr.EXCEPTION_HANDLERS),
            *epr.PUBLIC_HANDLERS,
            graphql.graphiql_asset,
            *(
                [
                    api(
                        metrics_json.PATH,
                        metrics_json.HANDLERS,
                        "operations",
                    )
                ]
                if settings.metrics.enabled
                else []
            ),
            public_api,
            *auth_routes.PUBLIC_HANDLERS,
            *health.HANDLERS,
            *console.routes(settings.http.max_body_bytes),
        ],
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        template_config=console.template_config(),
        before_send=[add_answer_headers],
        cors_config=cors_config(settings),
        request_max_body_size=settings.http.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Waypost",
            version="1",
            description=DESCRIPTION,
            path="/schema",
            render_plugins=[LocalSwaggerPlugin(), JsonRenderPlugin()],
            components=Components(
                security_schemes={
                    auth.SECURITY_SCHEME: SecurityScheme(
                        type="http",
                        scheme="bearer",
                        description="An access token (JWT, from `POST /api/v1/auth/token`) "
                        "or an API key (`wp_<prefix>_<secret>`).",
                    ),
                    auth.BASIC_SCHEME: SecurityScheme(
                        type="http",
                        scheme="basic",
                        description="An API key as the password; the user name is ignored.",
                    ),
                }
            ),
            tags=[
                Tag(name="tenants", description="Platform administrators' tenant management."),
                Tag(name="receivers", description="Event receivers: named JSON Schemas."),
                Tag(name="events", description="Events about artifacts."),
                Tag(name="groups", description="Receiver groups: release gates."),
                Tag(name="messages", description="The live tail of a tenant's CloudEvents."),
                Tag(
                    name="subscriptions",
                    description="Webhooks: messages POSTed to subscribers, signed, retried, "
                    "with every attempt recorded.",
                ),
                Tag(name="graphql", description="GraphQL: EPR's schema and what Waypost adds."),
                Tag(name="identity", description="Tokens, users, API keys, the audit log."),
                Tag(name="operations", description="Health probes and metrics."),
            ],
        ),
        logging_config=None,
        debug=False,
    )
    app.state[auth.NETWORKS_KEY] = auth.AdminNetworks(settings.security.admin_networks)
    app.state[auth.CLIENTS_KEY] = ClientAddresses(
        settings.http.trusted_proxies, settings.http.proxy_header
    )
    app.state[auth.SERVICE_IDENTITIES_KEY] = ServiceIdentities(settings.http.service_identities)
    limits.install(app.state, Limits(settings.limits, shared=shared_limiter, redis=settings.redis))
    messages.install(app.state)
    # Last: its middleware wraps everything above (404s and 405s included).
    metrics.install(app, settings.metrics, collectors)
    return app
