"""Backpressure (503) and rate limits (429): the middleware around authentication.

The order of a request: request id -> backpressure -> authentication -> rate limit ->
the route.

- `BackpressureMiddleware` bounds the API requests being served at once, all
  callers together, counted from the moment a request arrives, so that requests
  waiting on authentication count too. One over the bound is a 503 with
  `Retry-After` at once: a server at its limit answers quickly rather than queueing
  work without bound (memory, and latency for everyone). `StreamsMiddleware` bounds
  the live streams (`GET /api/v1/messages`) the same way, on their own count, and
  `LongPollMiddleware` the requests that wait (`GET .../status?wait=`), on theirs: a
  request is put in its place at arrival, from its path and query alone. These
  bounds are each process's own: they protect that process.
- `RateLimitMiddleware` admits the caller's request or answers 429 with
  `Retry-After`, before the body is read: per authenticated credential on the API
  routes (an API key, or the user or key behind an access token), per client address
  on the token endpoints, where there is no credential yet and password guessing is
  what to slow down. With Redis (`redis.url`), the limits are shared by every server
  process (GCRA in Redis, `adapters.redis.ratelimit`); without it, or while Redis
  fails, each process limits on its own (`core.usecases.ratelimits`): a Redis outage
  is logged once, shown in the metrics and the readiness probe, and never answered
  with a 5xx.

Health probes, the JWKS and the OpenAPI document are not limited.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Final

from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from core.domain.breaker import Breaker, BreakerPolicy, began, ended
from core.domain.ratelimit import Rate
from core.ports import SharedRateLimiter
from core.usecases.ratelimits import RateLimits
from entrypoints.http.auth import access_of, client_address
from entrypoints.http.problems import HttpProblem
from entrypoints.settings import LimitsSettings, RedisSettings

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
#: The two kinds of rate limit.
CREDENTIAL: Final = "credential"
ADDRESS: Final = "address"
log = logging.getLogger("waypost.limits")
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


class Outage:
    """What the rate limits' breaker went through, for the log, metrics and readiness."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.since: float | None = None  # when the current outage began
        self.cause: str | None = None
        self.outages = 0

    def changed(self, before: Breaker, after: Breaker, cause: str | None) -> None:
        if began(before, after):
            self.since, self.cause = self.clock(), cause
            self.outages += 1
            log.warning(
                "Redis failed (%s): rate limits are per process until it answers again",
                cause,
                extra={"cause": cause},
            )
        elif ended(before, after):
            lasted = 0.0 if self.since is None else self.clock() - self.since
            self.since = self.cause = None
            log.info(
                "Redis answers again after %.1f s: rate limits are shared again",
                lasted,
                extra={"outage_seconds": round(lasted, 3)},
            )


class Limits:
    """This process's bounds, and the rate limits (shared through `shared`, when given)."""

    def __init__(
        self,
        settings: LimitsSettings,
        clock: Callable[[], float] = time.monotonic,
        *,
        shared: SharedRateLimiter | None = None,
        redis: RedisSettings | None = None,
    ) -> None:
        self.outage = Outage(clock)
        self.rates = RateLimits(
            {
                CREDENTIAL: Rate(per_second=settings.requests_per_second, burst=settings.burst),
                ADDRESS: Rate(
                    per_second=settings.auth_requests_per_minute / 60, burst=settings.auth_burst
                ),
            },
            capacity=settings.tracked_callers,
            clock=clock,
            shared=shared,
            policy=BreakerPolicy.in_a_row(3, (redis or RedisSettings()).retry_seconds),
            on_change=self.outage.changed,
        )
        self.requests = Bound(settings.max_in_flight, "requests as it can")
        self.streams = Bound(settings.max_streams, "live streams as it may")
        self.waiters = Bound(settings.max_waiters, "waiting requests as it may")
        self.clock = clock


def install(state: State, limits: Limits) -> None:
    state[_KEY] = limits


def limits_of(state: State) -> Limits:
    limits: Limits = state[_KEY]
    return limits


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
            rates = _limits(scope).rates
            access = access_of(scope)
            if access is not None:
                principal = access.principal
                wait = await rates.take(CREDENTIAL, f"{principal.kind}:{principal.id}")
                detail = "This credential is over its rate limit."
            else:
                wait = await rates.take(ADDRESS, client_address(scope) or "-")
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
