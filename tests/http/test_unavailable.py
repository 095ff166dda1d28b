"""The database cannot serve: every route answers 503 with Retry-After, nothing else (never
a 500), and the answer tells no cause (that is the operator's log, once per outage)."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from adapters.memory.identity import MemoryIdentity
from adapters.memory.store import MemoryStore
from core.ports import PageRequest, Unavailable
from tests.http.conftest import (
    HEADERS,
    PLATFORM,
    add_tenants,
    asgi_client,
    event_body,
    make_app,
    platform_identity,
    receiver_body,
)
from tests.http.test_access_control import ROUTES, SOME_ID

pytestmark = pytest.mark.anyio

CAUSE = "ConnectionRefusedError: secret-host:5432"


class Switch:
    down = False


def _down() -> Unavailable:
    return Unavailable("the PostgreSQL database waypost at secret-host:5432", CAUSE)


class DownStore(MemoryStore):
    def __init__(self, switch: Switch) -> None:
        super().__init__()
        self.switch = switch

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Any]:
        if self.switch.down:
            raise _down()
        async with super().read() as tx:
            yield tx

    @asynccontextmanager
    async def write(self, tenant_id: str) -> AsyncIterator[Any]:
        if self.switch.down:
            raise _down()
        async with super().write(tenant_id) as tx:
            yield tx


class ListsDownStore(MemoryStore):
    """Authentication's reads work (read()), the lists and the writes do not: what a
    GraphQL field meets after the credential was checked."""

    def __init__(self, switch: Switch) -> None:
        super().__init__()
        self.switch = switch

    def read_stale(self, tenant_id: str) -> Any:
        if self.switch.down:
            raise _down()
        return super().read_stale(tenant_id)

    @asynccontextmanager
    async def write(self, tenant_id: str) -> AsyncIterator[Any]:
        if self.switch.down:
            raise _down()
        async with super().write(tenant_id) as tx:
            yield tx


class _Part:
    """One identity store, every method of which fails while the switch is down."""

    def __init__(self, inner: Any, switch: Switch) -> None:
        self._inner, self._switch = inner, switch

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._inner, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self._switch.down:
                raise _down()
            return await method(*args, **kwargs)

        return call


class DownIdentity(MemoryIdentity):
    def __init__(self, switch: Switch) -> None:
        super().__init__()
        self.switch = switch
        for name in ("users", "api_keys", "refresh", "revocations", "secrets", "audit"):
            setattr(self, f"_{name}", _Part(getattr(self, f"_{name}"), switch))


def request_of(method: str, path: str) -> tuple[str, str, dict[str, Any] | None]:
    filled = re.sub(r"\{slug\}", "acme", path)
    filled = re.sub(r"\{[a-z_]+\}", SOME_ID, filled)
    if path.endswith("/status"):
        filled += "?name=a&version=1&release=1&platform_id=x&package=rpm"
    bodies: dict[str, dict[str, Any]] = {
        "/api/v1/events": event_body(SOME_ID),
        "/api/v1/events/batch": {"events": [event_body(SOME_ID)]},
        "/api/v1/receivers": receiver_body(),
        "/api/v1/groups": {
            "name": "g",
            "type": "t",
            "version": "1",
            "description": "",
            "event_receiver_ids": [SOME_ID],
        },
        "/api/v1/tenants": {"slug": "initech", "name": "Initech"},
        "/api/v1/users": {
            "username": "dana",
            "password": "a long enough secret",
            "roles": ["event_viewer"],
        },
        "/api/v1/api-keys": {"name": "k", "role": "event_viewer"},
    }
    body = bodies.get(path) if method == "POST" else ({} if method == "PATCH" else None)
    return method, filled, body


async def test_every_route_answers_503_while_the_database_is_down() -> None:
    switch = Switch()
    identity = DownIdentity(switch)
    seeded = await platform_identity()
    for key in await seeded.api_keys.list(None, PageRequest()):
        await identity.api_keys.add(key)
    app = make_app(identity, store=DownStore(switch))
    async with asgi_client(app, headers=PLATFORM) as client:
        await add_tenants(client, identity)
        switch.down = True
        answers = {}
        for method, path, _ in ROUTES:
            verb, url, body = request_of(method, path)
            headers = PLATFORM if path.startswith("/api/v1/tenants") else HEADERS
            answer = await client.request(verb, url, json=body, headers=headers)
            answers[f"{method} {path}"] = answer
        ready = await client.get("/healthz/ready")
        live = await client.get("/healthz/live")
        token = await client.post("/api/v1/auth/token", json={"grant_type": "api_key",
                                                               "api_key": "wp_x_y"})  # fmt: skip
    wrong = {route: a.status_code for route, a in answers.items() if a.status_code != 503}
    assert not wrong, wrong
    for route, answer in [*answers.items(), ("POST /api/v1/auth/token", token)]:
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "1"
        if " /epr/" in route:  # EPR's envelope, as its clients read errors
            assert answer.json()["errors"][0].startswith("unavailable: "), route
        else:
            assert answer.json()["type"] == "urn:waypost:problem:unavailable", route
        assert "secret-host" not in answer.text
    assert (ready.status_code, live.status_code) == (503, 200)


@pytest.mark.parametrize("path", ["/api/v1/graphql", "/epr/api/v1/graphql/query"])
async def test_graphql_answers_503_when_a_field_meets_the_database_down(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The credential is checked, then the fields meet the database down: each field's
    error says UNAVAILABLE, the answer is a 503 with Retry-After (what did resolve, if
    anything, is in `data`), nothing is logged as an internal error, and the cause is
    not told."""
    switch = Switch()
    identity = await platform_identity()
    app = make_app(identity, store=ListsDownStore(switch))
    async with asgi_client(app, headers=PLATFORM) as client:
        await add_tenants(client, identity)
        switch.down = True
        query = {"query": "{ event_receivers_page(limit: 1) { items { id } } }"}
        answer = await client.post(path, json=query, headers=HEADERS)
        receiver = {"name": "n", "type": "t", "version": "1", "description": "", "schema": {}}
        mutation = {
            "query": "mutation($r: CreateEventReceiverInput!) "
            "{ create_event_receiver(event_receiver: $r) }",
            "variables": {"r": receiver},
        }
        written = await client.post(path, json=mutation, headers=HEADERS)
    for one in (answer, written):
        assert one.status_code == 503, one.text
        assert one.headers["retry-after"] == "1"
        [error] = one.json()["errors"]
        assert error["extensions"] == {"code": "UNAVAILABLE"}
        assert "secret-host" not in one.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_an_epr_create_answers_503_in_epr_s_envelope() -> None:
    switch = Switch()
    identity = await platform_identity()
    app = make_app(identity, store=DownStore(switch))
    async with asgi_client(app, headers=PLATFORM) as client:
        await add_tenants(client, identity)
        switch.down = True
        answer = await client.post("/epr/api/v1/receivers", json=receiver_body(), headers=HEADERS)
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "1"
    assert answer.json() == {
        "errors": ["unavailable: the database cannot serve right now; nothing was written"]
    }


async def test_while_only_the_store_is_down_its_routes_answer_503() -> None:
    """The identity stores work (credentials are checked), the event store does not."""
    switch = Switch()
    identity = await platform_identity()
    app = make_app(identity, store=DownStore(switch))
    async with asgi_client(app, headers=PLATFORM) as client:
        await add_tenants(client, identity)
        switch.down = True
        for path in ("/api/v1/events", "/api/v1/receivers", "/api/v1/groups", "/api/v1/tenants"):
            headers = PLATFORM if path == "/api/v1/tenants" else HEADERS
            listed = await client.get(path, headers=headers)
            assert listed.status_code == 503, (path, listed.text)
        written = await client.post("/api/v1/receivers", json=receiver_body(), headers=HEADERS)
        assert written.status_code == 503
        switch.down = False
        again = await client.post("/api/v1/receivers", json=receiver_body(), headers=HEADERS)
        assert again.status_code == 201


async def test_a_sqlite_lock_held_elsewhere_past_the_wait_is_a_503(tmp_path: Any) -> None:
    """Another process holds SQLite's one writer lock: the write waits
    `database.busy_timeout_seconds`, then answers 503; once it is released, 201."""
    import sqlite3

    from adapters.sql.migrations import migrate
    from adapters.sql.store import SqlStore

    url = f"sqlite:///{tmp_path / 'busy.db'}"
    await migrate(url)
    store = await SqlStore.connect(url, busy_timeout=0.3)
    identity = await platform_identity()
    try:
        async with asgi_client(make_app(identity, store=store), headers=PLATFORM) as client:
            await add_tenants(client, identity)
            other = sqlite3.connect(tmp_path / "busy.db", isolation_level=None)
            other.execute("BEGIN IMMEDIATE")
            try:
                held = await client.post("/api/v1/receivers", json=receiver_body(), headers=HEADERS)
            finally:
                other.execute("ROLLBACK")
                other.close()
            assert held.status_code == 503, held.text
            assert held.headers["retry-after"] == "1"
            free = await client.post("/api/v1/receivers", json=receiver_body(), headers=HEADERS)
            assert free.status_code == 201
    finally:
        await store.close()
