"""Tracing with the SDK's in-memory exporter: one trace from `POST /api/v1/events` through
the use case and its SQL statements, into the log envelope and the log lines."""

from __future__ import annotations

import io
import json
import logging
import pathlib
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from adapters.memory.identity import MemoryIdentity
from entrypoints import logs
from entrypoints.settings import DatabaseSettings, LogSettings, Settings, TracingSettings
from entrypoints.tracing import Tracing, traceparent
from tests.http.conftest import (
    ACME_KEY,
    HEADERS,
    PLATFORM,
    add_tenants,
    asgi_client,
    event_body,
    make_app,
    make_receiver,
    services_of,
    settings,
    tenant_id,
)

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
SECRET_MARK = "payload-value-nobody-may-see"

pytestmark = pytest.mark.anyio


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def tracing_for(config: Settings, exporter: InMemorySpanExporter) -> Tracing:
    return Tracing.with_processor(config, {}, SimpleSpanProcessor(exporter))


@pytest.fixture
def sqlite_settings(tmp_path: pathlib.Path) -> Settings:
    return settings(
        database=DatabaseSettings(url=f"sqlite:///{tmp_path / 'waypost.db'}"),
        log=LogSettings(format="json", slow_query_ms=0.000001),
    )


@pytest.fixture
def log_lines(sqlite_settings: Settings) -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logs.configure(sqlite_settings.log, stream)
    try:
        yield stream
    finally:
        for name in logs.LOGGERS:
            logging.getLogger(name).removeHandler(handler)


def _by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


async def test_one_trace_from_the_request_through_the_use_case_and_sql_to_the_log(
    identity: MemoryIdentity,
    exporter: InMemorySpanExporter,
    sqlite_settings: Settings,
    log_lines: io.StringIO,
) -> None:
    app = make_app(identity, config=sqlite_settings, tracing=tracing_for(sqlite_settings, exporter))
    async with asgi_client(app, headers=PLATFORM) as client:
        await add_tenants(client, identity)
        receiver = await make_receiver(client)
        exporter.clear()
        answer = await client.post(
            "/api/v1/events",
            json=event_body(receiver, payload={"build": 7, "commit": SECRET_MARK}),
            headers={**HEADERS, "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
        )
        assert answer.status_code == 201, answer.text
        event_id = answer.json()["data"]
        spans = exporter.get_finished_spans()
        services = services_of(app)
        async with services.deps.store.read() as tx:
            entries = await tx.log.read(await tenant_id(client, "acme"))

    [server] = _by_name(spans, "POST /api/v1/events")
    assert server.kind == SpanKind.SERVER
    # the caller's trace goes on here: same trace id, its span is the parent
    assert format(server.context.trace_id, "032x") == CALLER_TRACE
    assert server.parent is not None
    assert format(server.parent.span_id, "016x") == CALLER_SPAN
    assert server.attributes is not None
    assert server.attributes["http.route"] == "/api/v1/events"
    assert server.attributes["http.response.status_code"] == 201
    [use_case] = _by_name(spans, "usecase events.record_outcome")
    assert use_case.parent is not None
    assert use_case.parent.span_id == server.context.span_id
    sql = [span for span in spans if span.kind == SpanKind.CLIENT]
    names = {span.name for span in sql}
    assert "append" not in names  # SQLite appends with one statement per table
    assert {"insert_log", "insert_event", "set_head"} <= names, names
    in_use_case = {span.context.span_id for span in spans if _under(span, use_case, spans)}
    assert {span.context.span_id for span in sql if span.name == "insert_event"} <= in_use_case
    assert all(span.context.trace_id == server.context.trace_id for span in spans)

    # the log envelope names the request's trace and span
    recorded = [e for e in entries if e.type == "event.recorded"]
    assert recorded[-1].data["event"]["id"] == event_id
    assert recorded[-1].correlation_id == CALLER_TRACE
    assert recorded[-1].causation_id == format(server.context.span_id, "016x")
    assert traceparent(recorded[-1].correlation_id, recorded[-1].causation_id) == (
        f"00-{CALLER_TRACE}-{format(server.context.span_id, '016x')}-01"
    )

    # log lines made during the request carry its trace id (here: the slow-query log)
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    traced = [line for line in lines if line.get("statement") == "insert_event"]
    assert traced
    assert traced[-1]["trace_id"] == CALLER_TRACE

    # nothing sensitive in any attribute or name: no payload, no credential, no SQL text,
    # no path with an id
    everything = json.dumps(
        [[span.name, dict(span.attributes or {})] for span in spans], default=str
    )
    for secret in (SECRET_MARK, ACME_KEY, event_id, receiver, "INSERT", "SELECT"):
        assert secret not in everything


def _under(span: ReadableSpan, ancestor: ReadableSpan, spans: tuple[ReadableSpan, ...]) -> bool:
    by_id = {s.context.span_id: s for s in spans}
    current: ReadableSpan | None = span
    while current is not None and current.parent is not None:
        if current.parent.span_id == ancestor.context.span_id:
            return True
        current = by_id.get(current.parent.span_id)
    return False


async def test_without_a_traceparent_a_request_starts_a_trace_of_its_own(
    identity: MemoryIdentity, exporter: InMemorySpanExporter
) -> None:
    config = settings()
    app = make_app(identity, config=config, tracing=tracing_for(config, exporter))
    async with asgi_client(app, headers=PLATFORM) as client:
        await add_tenants(client, identity)
        exporter.clear()
        answer = await client.get("/api/v1/receivers/01ARZ3NDEKTSV4RRFFQ69G5FAV", headers=HEADERS)
        assert answer.status_code == 404
        assert (await client.get("/nowhere")).status_code == 404
    spans = exporter.get_finished_spans()
    [server] = _by_name(spans, "GET /api/v1/receivers/{receiver_id}")
    assert server.parent is None
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 404
    assert "01ARZ3NDEKTSV4RRFFQ69G5FAV" not in json.dumps(dict(server.attributes))
    assert _by_name(spans, "GET unmatched")
    assert _by_name(spans, "usecase identity.authenticate")


async def test_a_sample_ratio_of_zero_records_nothing_yet_correlates(
    identity: MemoryIdentity, exporter: InMemorySpanExporter
) -> None:
    config = settings(tracing=TracingSettings(sample_ratio=0.0))
    app = make_app(identity, config=config, tracing=tracing_for(config, exporter))
    async with asgi_client(app, headers=PLATFORM) as client:
        await add_tenants(client, identity)
        receiver = await make_receiver(client)
        answer = await client.post("/api/v1/events", json=event_body(receiver), headers=HEADERS)
        assert answer.status_code == 201
        async with services_of(app).deps.store.read() as tx:
            entries = await tx.log.read(await tenant_id(client, "acme"))
    assert exporter.get_finished_spans() == ()
    assert entries[-1].correlation_id is not None
    assert len(entries[-1].correlation_id) == 32  # still the trace id, though not recorded


async def test_a_callers_sampled_flag_is_followed_with_a_ratio_of_zero(
    identity: MemoryIdentity, exporter: InMemorySpanExporter
) -> None:
    config = settings(tracing=TracingSettings(sample_ratio=0.0))
    app = make_app(identity, config=config, tracing=tracing_for(config, exporter))
    async with asgi_client(app, headers=PLATFORM) as client:
        answer = await client.get(
            "/healthz/live", headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}
        )
        assert answer.status_code == 200
    assert _by_name(exporter.get_finished_spans(), "GET /healthz/live")


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
def test_tracing_is_off_unless_configured(anyio_backend: str) -> None:
    assert Tracing.from_settings(Settings(), {}) is None
    on = Tracing.from_settings(
        Settings(tracing=TracingSettings(otlp_endpoint="http://127.0.0.1:4318")), {}
    )
    assert on is not None
    on.shutdown()
    by_env = Tracing.from_settings(
        Settings(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    )
    assert by_env is not None
    by_env.shutdown()
    assert (
        Tracing.from_settings(
            Settings(),
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"},
        )
        is None
    )


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
def test_traceparent_of_a_log_entry(anyio_backend: str) -> None:
    assert traceparent(CALLER_TRACE, CALLER_SPAN) == f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    assert traceparent("req-1", None) is None
    assert traceparent(CALLER_TRACE, "not-hex-at-all!!") is None
