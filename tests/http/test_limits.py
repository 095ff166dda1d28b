"""Request body limits: 413 by Content-Length (before reading) and by streamed bytes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar import Litestar

from adapters.memory.identity import MemoryIdentity
from tests.http.conftest import (
    HEADERS,
    PLATFORM,
    PLATFORM_KEY,
    TENANT,
    add_tenants,
    asgi_client,
    assert_problem,
    event_body,
    make_app,
    receiver_body,
    settings,
)

pytestmark = pytest.mark.anyio

LIMIT = 2048
BATCH_LIMIT = 8192


@pytest.fixture
def app(identity: MemoryIdentity) -> Litestar:
    return make_app(
        identity, config=settings(max_body_bytes=LIMIT, max_batch_body_bytes=BATCH_LIMIT)
    )


def padded(body: dict[str, Any], size: int, field: str = "description") -> bytes:
    """`body` as JSON of exactly `size` bytes, padding `field`."""
    body = {**body, field: ""}
    missing = size - len(json.dumps(body).encode())
    assert missing >= 0
    body[field] = "d" * missing
    encoded = json.dumps(body).encode()
    assert len(encoded) == size
    return encoded


async def prepare(client: Any, identity: MemoryIdentity) -> str:
    await add_tenants(client, identity, TENANT)
    answer = await client.post("/api/v1/receivers", json=receiver_body(schema={}), headers=HEADERS)
    assert answer.status_code == 201
    ident: str = answer.json()["data"]
    return ident


async def test_body_at_the_limit_passes_and_one_byte_more_is_413(
    app: Litestar, identity: MemoryIdentity
) -> None:
    json_headers = {**HEADERS, "Content-Type": "application/json"}
    async with asgi_client(app, headers=PLATFORM) as client:
        receiver = await prepare(client, identity)
        at_limit = padded(event_body(receiver), LIMIT)
        answer = await client.post("/api/v1/events", content=at_limit, headers=json_headers)
        assert answer.status_code == 201, answer.text
        over = padded(event_body(receiver), LIMIT + 1)
        answer = await client.post("/api/v1/events", content=over, headers=json_headers)
        problem = assert_problem(answer, 413)
        assert str(LIMIT) in problem["detail"]
        tenant = padded({"slug": "big", "name": "x"}, LIMIT + 1, "name")
        assert_problem(await client.post("/api/v1/tenants", content=tenant), 413)


async def test_batch_has_its_own_larger_limit(app: Litestar, identity: MemoryIdentity) -> None:
    async with asgi_client(app, headers=PLATFORM) as client:
        receiver = await prepare(client, identity)
        events = [event_body(receiver, payload={"n": i}) for i in range(20)]
        body = json.dumps({"events": events}).encode()
        assert LIMIT < len(body) <= BATCH_LIMIT
        headers = {**HEADERS, "Content-Type": "application/json"}
        answer = await client.post("/api/v1/events/batch", content=body, headers=headers)
        assert answer.status_code == 201
        bigger = json.dumps({"events": events * 3}).encode()
        assert len(bigger) > BATCH_LIMIT
        answer = await client.post("/api/v1/events/batch", content=bigger, headers=headers)
        assert_problem(answer, 413)


async def test_a_chunked_body_is_counted_as_it_streams(
    app: Litestar, identity: MemoryIdentity
) -> None:
    chunks_sent = 0

    async def chunks(count: int) -> AsyncIterator[bytes]:
        nonlocal chunks_sent
        yield b'{"name": "a", "type": "t", "version": "1", "schema": {}, "description": "'
        for _ in range(count):
            chunks_sent += 1
            yield b"d" * 512
        yield b'"}'

    async with asgi_client(app, headers=PLATFORM) as http:
        await prepare(http, identity)
        small = await http.post("/api/v1/receivers", content=chunks(2), headers=HEADERS)
        assert "content-length" not in small.request.headers
        assert small.status_code == 201, small.text
        chunks_sent = 0
        big = await http.post("/api/v1/receivers", content=chunks(1000), headers=HEADERS)
        assert "content-length" not in big.request.headers
        assert_problem(big, 413)
        assert chunks_sent < 10  # refused while streaming, not after reading everything


async def test_an_announced_length_over_the_limit_is_refused_unread(app: Litestar) -> None:
    received = 0
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal received
        received += 1
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Any) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/tenants",
        "raw_path": b"/api/v1/tenants",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"content-length", b"1000000000"),
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {PLATFORM_KEY}".encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }
    async with app.lifespan():
        await app(scope, receive, send)  # type: ignore[arg-type]
    assert messages[0]["status"] == 413
    assert received == 0
    assert json.loads(messages[1]["body"])["status"] == 413


async def test_an_idempotent_request_keeps_the_limits(
    app: Litestar, identity: MemoryIdentity
) -> None:
    async with asgi_client(app, headers=PLATFORM) as client:
        receiver = await prepare(client, identity)
        over = padded(event_body(receiver), LIMIT + 1)
        headers = {**HEADERS, "Idempotency-Key": "k", "Content-Type": "application/json"}
        answer = await client.post("/api/v1/events", content=over, headers=headers)
        assert_problem(answer, 413)
