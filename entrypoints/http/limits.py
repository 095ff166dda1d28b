"""Rate limits (429) and backpressure (503): the middleware after authentication.

The order of a request (ARCHITECTURE.md): request id -> authentication -> rate
limit -> backpressure -> the route.

- `RateLimitMiddleware` takes a token from the caller's bucket
  (`core.domain.ratelimit`): the authenticated credential on the API routes (an API
  key, or the user or key behind an access token), the client address on the token
  endpoints, where there is no credential yet and password guessing is what to slow
  down. An empty bucket is a 429 with `Retry-After`, before the body is read.
- `BackpressureMiddleware` bounds the API requests being served at once, all
  callers together. One over the bound is a 503 with `Retry-After` at once: a
  server at its limit answers quickly rather than queueing work without bound
  (memory, and latency for everyone). `StreamsMiddleware` bounds the live
  streams (`GET /api/v1/messages`) the same way, on their own count, and
  `LongPollMiddleware` the requests that wait (`GET .../status?wait=`), on theirs.

Both keep their state in this process (`Limits`, in the app's state): with several
server processes behind one address, each enforces the limits on its own share.
Health probes, the JWKS and the OpenAPI document are not limited.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Final

from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from core.domain.ratelimit import Limiter, Rate
from entrypoints.http.auth import access_of, client_address
from entrypoints.http.problems import HttpProblem
from entrypoints.settings import LimitsSettings

__all__ = [
    "BackpressureMiddleware",
    "Limits",
    "LongPollMiddleware",
    "Overloaded",
    "RateLimitMiddleware",
    "RateLimited",
    "StreamsMiddleware",
    "install",
]

_KEY: Final = "waypost.limits"
#: Seconds an overloaded server asks callers to wait before trying again.
OVERLOADED_RETRY_AFTER: Final = 1


class RateLimited(HttpProblem):
    status = 429
    type = "urn:waypost:problem:rate-limited"
    title = "Too many requests"


class Overloaded(HttpProblem):
    status = 503
    type = "urn:waypost:problem:overloaded"
    title = "Overloaded"


class Bound:
    """How many of something are under way, and how many may be."""

    __slots__ = ("in_flight", "maximum", "what")

    def __init__(self, maximum: int, what: str) -> None:
        self.maximum = maximum
        self.in_flight = 0
        self.what = what


class Limits:
    """This process's limiters and bounds."""

    def __init__(
        self, settings: LimitsSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.callers = Limiter(
            Rate(per_second=settings.requests_per_second, burst=settings.burst),
            capacity=settings.tracked_callers,
        )
        self.addresses = Limiter(
            Rate(per_second=settings.auth_requests_per_minute / 60, burst=settings.auth_burst),
            capacity=settings.tracked_callers,
        )
        self.requests = Bound(settings.max_in_flight, "requests as it can")
        self.streams = Bound(settings.max_streams, "live streams as it may")
        self.waiters = Bound(settings.max_waiters, "waiting requests as it may")
        self.clock = clock


def install(state: State, limits: Limits) -> None:
    state[_KEY] = limits


def _limits(scope: Scope) -> Limits:
    limits: Limits = scope["app"].state[_KEY]
    return limits


def _retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


class RateLimitMiddleware:
    """429 when the caller's bucket is empty (CORS preflights are not counted)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope["method"] != "OPTIONS":
            limits = _limits(scope)
            access = access_of(scope)
            if access is not None:
                principal = access.principal
                wait = limits.callers.take(f"{principal.kind}:{principal.id}", limits.clock())
                detail = "This credential is over its rate limit."
            else:
                address = client_address(scope) or "-"
                wait = limits.addresses.take(address, limits.clock())
                detail = "This address is over the token endpoints' rate limit."
            if wait > 0:
                raise RateLimited(
                    f"{detail} Retry after {_retry_after(wait)} s.",
                    headers={"Retry-After": _retry_after(wait)},
                )
        await self.app(scope, receive, send)


class BackpressureMiddleware:
    """503 when `limits.max_in_flight` API requests are being served already."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    @staticmethod
    def bound(limits: Limits, scope: Scope) -> Bound:
        return limits.requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        bound = self.bound(_limits(scope), scope)
        if bound.in_flight >= bound.maximum:
            raise Overloaded(
                f"The server is serving as many {bound.what}. "
                f"Retry after {OVERLOADED_RETRY_AFTER} s.",
                headers={"Retry-After": str(OVERLOADED_RETRY_AFTER)},
            )
        bound.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            bound.in_flight -= 1


class StreamsMiddleware(BackpressureMiddleware):
    """The same for long-lived streams (the live tail), bounded by `limits.max_streams`
    apart from the requests: a stream open for hours must not hold a request's place."""

    @staticmethod
    def bound(limits: Limits, scope: Scope) -> Bound:
        return limits.streams


class LongPollMiddleware(BackpressureMiddleware):
    """Requests that may wait (a `wait` query parameter: the gate's long poll) count
    against `limits.max_waiters`, the others against the requests in flight: a pipeline
    waiting a minute on its gate must not hold a request's place either."""

    @staticmethod
    def bound(limits: Limits, scope: Scope) -> Bound:
        query: bytes = scope.get("query_string", b"")
        waits = any(part.startswith(b"wait=") for part in query.split(b"&"))
        return limits.waiters if waits else limits.requests
