"""The web console at `/console`: server-rendered pages over the use cases.

Jinja2 templates (autoescaped) and a small vendored hypermedia library (htmx, with
its licence) served by this process: no build step, no asset from another host,
a CSP without `'unsafe-inline'` (entrypoints/http/security.py). The pages call the
use cases directly, guarded by the API's permission table; the session is sealed
in a cookie (`session`), so any number of server processes serve it alike.
"""

from __future__ import annotations

from litestar import Router
from litestar.types import ControllerRouterHandler, Middleware

from entrypoints.http.console import admin, groups, live, pages, signin, subscriptions
from entrypoints.http.console.common import ASSETS, BASE, HTML_ERRORS, authorize, template_config
from entrypoints.http.console.session import SessionMiddleware, csrf_guard
from entrypoints.http.limits import BackpressureMiddleware, RateLimitMiddleware, StreamsMiddleware
from entrypoints.http.queries import QueryTextMiddleware

__all__ = ["BASE", "routes", "template_config"]


def routes(max_body: int) -> list[ControllerRouterHandler]:
    """The console's routers: its assets (public), sign-in (limited per address like the
    token endpoint), the pages (the bound on work in flight from arrival, as the API's,
    the session, its rate limit, CSRF, the permission), and the live stream (bounded with
    the API's streams). No query parameter holds NUL, as on the API."""
    signed_in: list[Middleware] = [QueryTextMiddleware, SessionMiddleware, RateLimitMiddleware]
    common = {
        "exception_handlers": HTML_ERRORS,
        "include_in_schema": False,
        "request_max_body_size": max_body,
    }
    return [
        ASSETS.handler("console_assets"),
        Router(
            "/",
            route_handlers=signin.PUBLIC_HANDLERS,
            middleware=[BackpressureMiddleware, QueryTextMiddleware, RateLimitMiddleware],
            **common,  # type: ignore[arg-type]
        ),
        Router(
            "/",
            route_handlers=[
                *signin.HANDLERS,
                *pages.HANDLERS,
                *groups.HANDLERS,
                live.live,
                *subscriptions.HANDLERS,
                *admin.HANDLERS,
            ],
            middleware=[BackpressureMiddleware, *signed_in],
            guards=[authorize, csrf_guard],
            **common,  # type: ignore[arg-type]
        ),
        Router(
            "/",
            route_handlers=[live.stream],
            middleware=[StreamsMiddleware, *signed_in],
            guards=[authorize, csrf_guard],
            **common,  # type: ignore[arg-type]
        ),
    ]
