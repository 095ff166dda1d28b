"""Prometheus metrics: `GET /metrics`, the HTTP middleware that feeds it, the domain counts.

Each app has its own `CollectorRegistry` (an app is built once per server process,
but the tests build many in one process, and a registry refuses a name twice).

- HTTP: requests by method, route TEMPLATE (`/api/v1/events/{event_id}`, never the
  path: no ids in labels, and a bounded number of series) and status; their duration
  by method and template; the requests in flight. A pure ASGI middleware around the
  whole app (`install` wraps `Litestar.asgi_handler`), so that it also sees what
  Litestar answers before any route's middleware runs: a path that matches no route
  (404) or a method the route lacks (405) is counted under the route `unmatched`.
- Domain: events recorded (each event of a batch) and group completions, counted by
  the event routes from what the use case committed (`count_recorded`); an
  Idempotency-Key replay does not reach the route and counts nothing again.

No label holds anything a tenant chose or owns (tenant, user, receiver, path): the
endpoint may be public. `metrics.allowed_networks` restricts who may read it (403);
with `metrics.enabled = false` there is no route and no middleware at all.

Litestar's own `litestar.plugins.prometheus` does not fit: its middleware keeps the
metrics in a class attribute on the process-global registry (a second app in one
process shares or clashes), labels the raw path unless `group_path`, which then fails
on unmatched paths (no `path_template`), runs per route (never sees 404/405), and
builds a `Request` and label dicts on every request.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any, Final

from litestar import Litestar, Request, Response, get
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.openapi.datastructures import ResponseSpec
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from core.domain.breaker import BreakerState
from core.domain.errors import Forbidden
from core.usecases import Recorded
from entrypoints.http.auth import PUBLIC, SERVICES_KEY, AdminNetworks, client_address
from entrypoints.http.limits import limits_of
from entrypoints.http.metrics_json import Key, Snapshots, values
from entrypoints.http.problems import PROBLEM_JSON, Problem
from entrypoints.settings import MetricsSettings

__all__ = [
    "CONTENT_TYPE",
    "PATH",
    "UNMATCHED",
    "Metrics",
    "MetricsMiddleware",
    "count_recorded",
    "install",
]

PATH: Final = "/metrics"
#: The Prometheus text format, version 0.0.4: what `generate_latest` writes, and what
#: every Prometheus server reads. (prometheus_client >= 0.22 names version 1.0.0 its
#: latest, for UTF-8 names; ours are all legacy names, so the body is the same.)
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
#: The route label of a request that matched no route (404, 405).
UNMATCHED: Final = "unmatched"
#: The method label of a method no route serves (the client chooses it: bounded here).
OTHER_METHOD: Final = "other"
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Seconds. The server answers most requests in about a millisecond; the tail matters.
BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_STATE_KEY: Final = "waypost.metrics"


class InFlight(Collector):
    """The requests being served: a plain number, read when scraped.

    Only the event loop's thread changes it (the middleware), so it needs no lock,
    unlike a `Gauge`, whose `inc` and `dec` would take one each, on every request."""

    def __init__(self) -> None:
        self.value = 0

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "waypost_http_requests_in_flight", "HTTP requests being served now.", self.value
        )


class RateLimitsCollector(Collector):
    """Whether the rate limits are shared (Redis) or per process, read when scraped."""

    def __init__(self, state: State) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        limits = limits_of(self.state)
        rates = limits.rates
        yield GaugeMetricFamily(
            "waypost_rate_limits_shared",
            "1 while the rate limits are shared by every server process through Redis, "
            "0 while this process limits on its own (no Redis, or Redis failing).",
            1 if rates.sharing else 0,
        )
        if rates.shared is None:
            return
        breaker = GaugeMetricFamily(
            "waypost_redis_breaker_state",
            "The rate limits' circuit breaker on Redis: 1 for its current state.",
            labels=("state",),
        )
        for state in BreakerState:
            breaker.add_metric((state.value,), 1 if rates.breaker.state == state else 0)
        yield breaker
        yield CounterMetricFamily(
            "waypost_rate_limit_local_decisions",
            "Rate-limit decisions this process took alone because Redis failed.",
            rates.fallbacks,
        )
        yield CounterMetricFamily(
            "waypost_redis_outages",
            "Times the rate limits fell back to this process because Redis failed.",
            limits.outage.outages,
        )


class Operations(Collector):
    """What operators alert on besides requests, read when scraped: readiness (as the last
    probe found it) and when the signing key that signs now was activated."""

    def __init__(self, state: Any) -> None:
        self._state = state
        #: component -> 1 (ok), 0.5 (degraded), 0 (unavailable), set by `GET /healthz/ready`.
        self.ready: dict[str, float] = {}

    def collect(self) -> Iterator[Metric]:
        ready = GaugeMetricFamily(
            "waypost_ready",
            "What the last readiness probe found, by component: 1 ok, 0.5 degraded, 0 unavailable.",
            labels=["component"],
        )
        for component, value in sorted(self.ready.items()):
            ready.add_metric([component], value)
        yield ready
        services = self._state.get(SERVICES_KEY)
        active = None
        if services is not None and services.identity_deps is not None:
            active = services.secrets.active_since()
        if active is not None:
            yield GaugeMetricFamily(
                "waypost_signing_key_activated_timestamp_seconds",
                "When the signing key that signs access tokens now was activated (Unix time).",
                active.timestamp(),
            )


class Metrics:
    """One app's metrics, in a registry of its own, and who may read them."""

    def __init__(self, allowed_networks: Iterable[str] = (), state: State | None = None) -> None:
        networks = list(allowed_networks)
        #: None: anyone may read the metrics.
        self.readers = AdminNetworks(networks) if networks else None
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "waypost_http_requests",
            "HTTP requests answered, by method, route template and status code.",
            ("method", "route", "status"),
            registry=registry,
        )
        self.duration = Histogram(
            "waypost_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by method and route template.",
            ("method", "route"),
            registry=registry,
            buckets=BUCKETS,
        )
        self.in_flight = InFlight()
        registry.register(self.in_flight)
        self.events = Counter(
            "waypost_events_recorded",
            "Events recorded (committed); each event of a batch counts.",
            registry=registry,
        )
        self.completions = Counter(
            "waypost_group_completions",
            "Times a receiver group completed (fired).",
            registry=registry,
        )
        self.operations = Operations({} if state is None else state)
        registry.register(self.operations)
        if state is not None:
            registry.register(RateLimitsCollector(state))
        ProcessCollector(registry=registry)
        GCCollector(registry=registry)
        # The labelled children of each (method, route, status), found once: `labels()`
        # checks its arguments and takes a lock on every call.
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        #: Readings kept for the JSON summary's rates (`metrics_json`).
        self.snapshots = Snapshots(time.monotonic())

    def remember(self, samples: dict[Key, float], now: float | None = None) -> None:
        """Keep a reading of the registry (each scrape, each summary) for windowed rates."""
        self.snapshots.take(time.monotonic() if now is None else now, samples)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """One answered request. `route` is a template or UNMATCHED, never a path."""
        if method not in _METHODS:  # the client chose it: bound it before it is a key
            method = OTHER_METHOD
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(method, route, str(status)),
                self.duration.labels(method, route),
            )
        children[0].inc()
        children[1].observe(seconds)

    def recorded(self, outcome: Recorded) -> None:
        self.events.inc(len(outcome.events))
        if outcome.completions:
            self.completions.inc(len(outcome.completions))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times every HTTP request of the app it wraps (pure ASGI)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        status = 500  # what the server answers when nothing was sent

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        metrics = self.metrics
        in_flight = metrics.in_flight
        in_flight.value += 1
        start = time.perf_counter()
        try:
            await self.app(scope, receive, counting_send)
        finally:
            elapsed = time.perf_counter() - start
            in_flight.value -= 1
            # Litestar's router puts the matched route's template in the scope.
            route: str = scope.get("path_template") or UNMATCHED
            metrics.observe(scope["method"], route, status, elapsed)


def metrics_of(scope: Scope) -> Metrics | None:
    """The app's metrics, or None when they are disabled."""
    found: Metrics | None = scope["app"].state.get(_STATE_KEY)
    return found


def count_recorded(scope: Scope, outcome: Recorded) -> None:
    """The event routes' part: what a recording committed (events, group completions)."""
    metrics = metrics_of(scope)
    if metrics is not None:
        metrics.recorded(outcome)


@get(
    PATH,
    opt=PUBLIC,
    tags=["operations"],
    summary="Metrics in the Prometheus text format",
    description="Requests by method, route template and status; their durations; requests "
    "in flight; events recorded; group completions; the process. No label names a tenant or "
    "anything in one. The networks allowed to read them may be restricted "
    "(`metrics.allowed_networks`).",
    media_type=CONTENT_TYPE,
    sync_to_thread=False,
    responses={
        403: ResponseSpec(
            data_container=Problem,
            media_type=PROBLEM_JSON,
            description="The client's address is not in the networks allowed to read metrics.",
            generate_examples=False,
        )
    },
)
def scrape(request: Request[Any, Any, Any]) -> Response[bytes]:
    metrics = metrics_of(request.scope)
    if metrics is None:  # pragma: no cover - the route exists only with the metrics
        raise Forbidden(None)
    if metrics.readers is not None and not metrics.readers.allows(client_address(request.scope)):
        raise Forbidden(None, "The metrics may not be read from this address.")
    metrics.remember(values(metrics.registry))
    # As a header: Litestar would add a second `charset` to the media type of a text/*.
    return Response(metrics.exposition(), headers={"content-type": CONTENT_TYPE})


def install(app: Litestar, settings: MetricsSettings, collectors: Iterable[Collector] = ()) -> None:
    """`GET /metrics` and the middleware around the whole app, unless disabled; `collectors`
    join its registry.

    Call it last in `build_app`: the middleware then wraps everything the app does
    (CORS, exception handling, routing), so it sees every answer."""
    if not settings.enabled:
        return
    metrics = Metrics(settings.allowed_networks, app.state)
    for collector in collectors:
        metrics.registry.register(collector)
    app.state[_STATE_KEY] = metrics
    app.register(scrape)
    app.asgi_handler = MetricsMiddleware(app.asgi_handler, metrics)
