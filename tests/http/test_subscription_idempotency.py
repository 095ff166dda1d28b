"""Idempotency-Key on the subscription routes, on every backend: the record is stored with
the write (a retry gets the first answer, nothing is done twice); a rotation's stored
answer never holds the secret. And a delivery store that cannot serve answers 503."""

from __future__ import annotations

import pathlib
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar import Litestar

from core.usecases import Services
from entrypoints.http.auth import SERVICES_KEY
from entrypoints.settings import DatabaseSettings
from tests.backends import BACKENDS
from tests.http.conftest import (
    HEADERS,
    PLATFORM,
    TENANT,
    Client,
    add_tenants,
    asgi_client,
    make_app,
    platform_identity,
    settings,
    tenant_id,
)

pytestmark = pytest.mark.anyio

PATH = "/api/v1/subscriptions"
URL = "https://hooks.example.com/in"


@pytest.fixture(params=BACKENDS)
async def backend(
    request: pytest.FixtureRequest, tmp_path: pathlib.Path
) -> AsyncIterator[tuple[str, Client, Litestar]]:
    name: str = request.param
    if name == "memory":
        url = "memory://"
    elif name == "sqlite":
        url = f"sqlite:///{tmp_path / 'waypost.db'}"
    else:
        request.applymarker(pytest.mark.postgres)
        url = request.getfixturevalue("fresh_database")
    identity = await platform_identity()
    app = make_app(identity, config=settings(database=DatabaseSettings(url=url)))
    async with asgi_client(app, headers=PLATFORM) as client:
        await add_tenants(client, identity)
        yield url, client, app


async def _head(app: Litestar, client: Client) -> int:
    """The tenant's log head, from the app's own store."""
    services: Services = app.state[SERVICES_KEY]
    tenant = await tenant_id(client, TENANT)
    async with services.deps.store.read() as tx:
        return await tx.log.head(tenant)


def _keyed(key: str) -> dict[str, str]:
    return {**HEADERS, "Idempotency-Key": key}


async def _twice(client: Client, path: str, body: Any, key: str) -> tuple[Any, Any]:
    first = await client.post(path, json=body, headers=_keyed(key))
    again = await client.post(path, json=body, headers=_keyed(key))
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    return first, again


async def test_a_create_sent_twice_makes_one_subscription(
    backend: tuple[str, Client, Litestar],
) -> None:
    _, client, _ = backend
    body = {"name": "hooks", "url": URL}
    first, again = await _twice(client, PATH, body, "create-1")
    assert first.status_code == again.status_code == 201, first.text
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    listed = (await client.get(PATH, headers=HEADERS)).json()["data"]
    assert [s["id"] for s in listed] == [first.json()["data"]]
    other = await client.post(PATH, json={**body, "name": "x"}, headers=_keyed("create-1"))
    assert other.status_code == 422  # the key was used for another request


async def test_ping_replay_and_redrive_sent_twice_are_done_once(
    backend: tuple[str, Client, Litestar],
) -> None:
    _, client, app = backend
    ident = (await client.post(PATH, json={"name": "hooks", "url": URL}, headers=HEADERS)).json()[
        "data"
    ]
    for action, body in (("ping", None), ("replay", {"after": 0}), ("redrive", {})):
        before = await _head(app, client)
        first, again = await _twice(client, f"{PATH}/{ident}/{action}", body, f"{action}-1")
        assert first.status_code == again.status_code == 202, first.text
        assert again.json() == first.json()
        # one ping appended to the log, however often it is sent; the others append none
        assert await _head(app, client) == before + (action == "ping")


async def test_a_rotations_retry_is_told_where_the_secret_is_never_the_secret(
    backend: tuple[str, Client, Litestar],
) -> None:
    url, client, _ = backend
    ident = (await client.post(PATH, json={"name": "hooks", "url": URL}, headers=HEADERS)).json()[
        "data"
    ]
    rotate = f"{PATH}/{ident}/secret/rotate"
    first, again = await _twice(client, rotate, {"grace_seconds": 60}, "rotate-1")
    assert first.status_code == 200, first.text
    secret = first.json()["data"]["secret"]
    assert secret.startswith("whsec_")
    assert first.headers["cache-control"] == "no-store"
    assert again.status_code == 409
    assert again.json()["type"] == "urn:waypost:problem:secret-rotated"
    assert again.headers["location"] == f"{PATH}/{ident}/secret"
    assert secret not in again.text
    assert "whsec_" not in again.text
    # rotated once: the secret that signs now is the first answer's
    now = (await client.get(f"{PATH}/{ident}/secret", headers=HEADERS)).json()["data"]["secret"]
    assert now == secret
    if url.startswith("sqlite"):  # what is stored, read from the table itself
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            bodies = [bytes(row[0]) for row in db.execute("SELECT body FROM idempotency_records")]
        assert bodies
        assert not [b for b in bodies if b"whsec_" in b or secret.encode() in b]


async def test_a_delivery_store_that_cannot_serve_answers_503(tmp_path: pathlib.Path) -> None:
    """SQLite's writer lock held by another process past `database.busy_timeout_seconds`:
    a subscription's create, which writes in the delivery store, answers 503 with
    Retry-After (never a 500); once the lock is released, 201."""
    path = tmp_path / "busy.db"
    config = settings(database=DatabaseSettings(url=f"sqlite:///{path}", busy_timeout_seconds=0.3))
    identity = await platform_identity()
    async with asgi_client(make_app(identity, config=config), headers=PLATFORM) as client:
        await add_tenants(client, identity)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            held = await client.post(PATH, json={"name": "hooks", "url": URL}, headers=HEADERS)
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert held.status_code == 503, held.text
        assert held.headers["retry-after"] == "1"
        assert held.json()["type"] == "urn:waypost:problem:unavailable"
        free = await client.post(PATH, json={"name": "hooks", "url": URL}, headers=HEADERS)
        assert free.status_code == 201, free.text
