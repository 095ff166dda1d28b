"""Tracing with OpenTelemetry: off unless an OTLP endpoint is configured.

What is traced, and under which names (no span carries a tenant's payload, a path with
ids, a query string, a header or a credential):

- each HTTP request: a SERVER span `<METHOD> <route template>` (`POST /api/v1/events`)
  with the method, the template and the status code; a caller's `traceparent` (W3C
  Trace Context) is its parent, so the caller's trace goes on here;
- each use case called: `usecase <name>.<method>` (`usecase events.record_outcome`),
  by wrapping the Services' use cases (the core imports no tracing library);
- each SQL statement: a CLIENT span named by the statement catalogue
  (`adapters.sql.observe`), never its text or values.

The request's trace id and span id become the log envelope's `correlation_id` and
`causation_id` of what the request writes (`correlation`), so a message leads back to the
request (and its trace) that caused it; JSON log lines get `trace_id` and `span_id`
(`TraceIds`).

Configuration: `tracing.otlp_endpoint` (or the standard `OTEL_EXPORTER_OTLP_ENDPOINT`,
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), `tracing.sample_ratio` (or `OTEL_TRACES_SAMPLER`
and `OTEL_TRACES_SAMPLER_ARG`), `tracing.service_name` (or `OTEL_SERVICE_NAME`),
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`; `OTEL_SDK_DISABLED=true` turns
it off. Spans leave in batches from a thread of the SDK's: a slow or absent collector
costs the requests nothing but dropped spans.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any, Final
from urllib.parse import urlsplit

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from entrypoints.http.auth import TRACE_KEY
from entrypoints.settings import Settings

__all__ = [
    "TRACE_KEY",
    "TraceIds",
    "Tracing",
    "correlation",
    "traceparent",
]

_PROPAGATOR: Final = TraceContextTextMapPropagator()
_CARRIED: Final = (b"traceparent", b"tracestate")
#: The use cases whose calls become spans (attributes of `core.usecases.Services`).
USE_CASES: Final = ("tenants", "receivers", "events", "groups", "messages", "replay")
_PRIVATE_USE_CASES: Final = {"_identity": "identity", "_secrets": "secrets", "_audit": "audit"}


def _enabled_by(settings: Settings, environ: Mapping[str, str]) -> str | None:
    """The OTLP traces endpoint when tracing is configured (None: tracing is off)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    given = settings.tracing.otlp_endpoint
    if given is not None:
        return given if urlsplit(given).path.strip("/") else given.rstrip("/") + "/v1/traces"
    traces = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if traces:
        return traces
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return base.rstrip("/") + "/v1/traces" if base else None


class Tracing:
    """One process's tracer and everything that makes spans with it."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("waypost")

    @classmethod
    def from_settings(
        cls, settings: Settings, environ: Mapping[str, str], exporter: SpanExporter | None = None
    ) -> Tracing | None:
        """The tracing the settings ask for (None: off); `exporter` replaces OTLP (tests)."""
        endpoint = _enabled_by(settings, environ)
        if endpoint is None and exporter is None:
            return None
        if exporter is None:
            # Imported only when used: it brings requests and protobuf along.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
                OTLPSpanExporter,
            )

            exporter = OTLPSpanExporter(endpoint=endpoint)
        return cls.with_processor(settings, environ, BatchSpanProcessor(exporter))

    @classmethod
    def with_processor(
        cls, settings: Settings, environ: Mapping[str, str], processor: SpanProcessor
    ) -> Tracing:
        attributes = (
            {}
            if environ.get("OTEL_SERVICE_NAME")
            else {SERVICE_NAME: settings.tracing.service_name}
        )
        ratio = settings.tracing.sample_ratio
        provider = TracerProvider(
            sampler=None if ratio is None else ParentBased(TraceIdRatioBased(ratio)),
            resource=Resource.create(attributes),
            shutdown_on_exit=False,
        )
        provider.add_span_processor(processor)
        return cls(provider)

    def shutdown(self) -> None:
        """Send what is left and stop (the process ends)."""
        self.provider.shutdown()

    # --- spans ---------------------------------------------------------------------------

    def span(self, name: str, attributes: dict[str, str]) -> AbstractContextManager[object]:
        """A CLIENT span around one statement (the SQL observer's span factory)."""
        return self.tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes)

    def middleware(self, app: ASGIApp) -> ASGIApp:
        return TracingMiddleware(app, self)

    def wrap_services(self, services: Any) -> None:
        """Make each use case's calls spans (the Services object's use cases are replaced
        by proxies: the core knows nothing of it)."""
        for attribute in USE_CASES:
            setattr(services, attribute, _Traced(getattr(services, attribute), attribute, self))
        for attribute, name in _PRIVATE_USE_CASES.items():
            target = getattr(services, attribute, None)
            if target is not None:
                setattr(services, attribute, _Traced(target, name, self))


class _Traced:
    """A use case whose coroutine methods run inside a span `usecase <name>.<method>`."""

    def __init__(self, target: object, name: str, tracing: Tracing) -> None:
        self._target = target
        self._name = name
        self._tracer = tracing.tracer

    def __getattr__(self, attribute: str) -> Any:
        found = getattr(self._target, attribute)
        if not inspect.iscoroutinefunction(found):
            return found
        name = f"usecase {self._name}.{attribute}"
        tracer = self._tracer

        @functools.wraps(found)
        async def traced(*args: Any, **kwargs: Any) -> Any:
            with tracer.start_as_current_span(name, attributes={"code.function.name": name[8:]}):
                return await found(*args, **kwargs)

        setattr(self, attribute, traced)  # found once per use case and method
        return traced


class TracingMiddleware:
    """A SERVER span around every HTTP request (pure ASGI, around the whole app)."""

    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        self.app = app
        self.tracer = tracing.tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in _CARRIED
        }
        parent = _PROPAGATOR.extract(carrier) if carrier else None
        method = scope["method"]
        status = 500

        async def watching_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with self.tracer.start_as_current_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.scheme": scope.get("scheme", "http")},
            record_exception=False,  # a traceback is the log's, with its error id
        ) as span:
            found = span.get_span_context()
            scope.setdefault("state", {})[TRACE_KEY] = (
                format(found.trace_id, "032x"),
                format(found.span_id, "016x"),
            )
            try:
                await self.app(scope, receive, watching_send)
            finally:
                route: str = scope.get("path_template") or "unmatched"
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))


def correlation(scope: Scope) -> tuple[str, str] | None:
    """The request's (trace id, span id) in hex, when it is traced."""
    found: tuple[str, str] | None = scope.get("state", {}).get(TRACE_KEY)
    return found


def traceparent(correlation_id: str | None, causation_id: str | None) -> str | None:
    """The W3C `traceparent` of a log entry written by a traced request (its trace id and
    the request's span id), for what the entry causes later (a webhook delivery)."""
    if (
        correlation_id is None
        or causation_id is None
        or len(correlation_id) != 32
        or len(causation_id) != 16
    ):
        return None
    try:
        int(correlation_id, 16), int(causation_id, 16)
    except ValueError:
        return None
    return f"00-{correlation_id}-{causation_id}-01"


class TraceIds(logging.Filter):
    """Adds the current span's `trace_id` and `span_id` to each log record (when traced)."""

    def filter(self, record: logging.LogRecord) -> bool:
        found = trace.get_current_span().get_span_context()
        if found.is_valid:
            record.trace_id = format(found.trace_id, "032x")
            record.span_id = format(found.span_id, "016x")
        return True
