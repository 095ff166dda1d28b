"""The HTTP suite: the real app from the real bootstrap, over in-memory adapters."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from entrypoints.bootstrap import create_app
from entrypoints.settings import DatabaseSettings, HttpSettings, Settings

TENANT = "acme"
OTHER = "globex"
HEADERS = {"X-Tenant": TENANT}
OTHER_HEADERS = {"X-Tenant": OTHER}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"build": {"type": "integer"}, "commit": {"type": "string"}},
    "required": ["build"],
}

Client = AsyncTestClient[Litestar]
_HTTP = HttpSettings()


class ManualClock:
    """A clock the test sets; each reading advances it by one millisecond (ordered times)."""

    def __init__(self) -> None:
        self.current = datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        self.current += timedelta(milliseconds=1)
        return self.current

    def set(self, moment: datetime) -> None:
        self.current = moment


def settings(
    *,
    max_body_bytes: int = _HTTP.max_body_bytes,
    max_batch_body_bytes: int = _HTTP.max_batch_body_bytes,
) -> Settings:
    return Settings(
        database=DatabaseSettings(url="memory://"),
        http=HttpSettings(max_body_bytes=max_body_bytes, max_batch_body_bytes=max_batch_body_bytes),
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def client(clock: ManualClock) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=create_app(settings(), clock=clock)) as test_client:
        yield test_client


@pytest.fixture
async def api(client: Client) -> Client:
    """A client with two tenants, `acme` and `globex`, created."""
    for slug in (TENANT, OTHER):
        answer = await client.post("/api/v1/tenants", json={"slug": slug, "name": slug.title()})
        assert answer.status_code == 201, answer.text
    return client


@asynccontextmanager
async def asgi_client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """httpx straight over ASGI in this event loop: concurrent requests and streamed bodies
    (the AsyncTestClient runs the app in a thread of its own, one request at a time)."""
    async with app.lifespan():
        transport = httpx.ASGITransport(app=cast(Any, app))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


def receiver_body(name: str = "build", **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "type": "ci.build",
        "version": "1",
        "description": "Builds",
        "schema": SCHEMA,
    }
    body.update(over)
    return body


def event_body(receiver_id: str, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "app",
        "version": "1.0",
        "release": "1",
        "platform_id": "x86_64",
        "package": "rpm",
        "description": "",
        "payload": {"build": 1},
        "success": True,
        "event_receiver_id": receiver_id,
    }
    body.update(over)
    return body


async def make_receiver(
    client: Client, name: str = "build", headers: dict[str, str] | None = None, **over: Any
) -> str:
    answer = await client.post(
        "/api/v1/receivers", json=receiver_body(name, **over), headers=headers or HEADERS
    )
    assert answer.status_code == 201, answer.text
    ident: str = answer.json()["data"]
    return ident


async def record(client: Client, receiver_id: str, **over: Any) -> str:
    answer = await client.post(
        "/api/v1/events", json=event_body(receiver_id, **over), headers=HEADERS
    )
    assert answer.status_code == 201, answer.text
    ident: str = answer.json()["data"]
    return ident


def assert_problem(answer: httpx.Response, status: int, *fields: str) -> dict[str, Any]:
    """A problem document of `status` naming at least `fields`; returns it."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = answer.json()
    assert set(body) == {"type", "title", "status", "detail", "errors"}
    assert body["status"] == status
    assert isinstance(body["detail"], str)
    assert body["detail"]
    named = {error["field"] for error in body["errors"]}
    assert set(fields) <= named, (fields, body["errors"])
    return body
