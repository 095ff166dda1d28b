"""The HTTP suite: the real app from the real bootstrap, over in-memory adapters.

Credentials: the identity store is seeded (before the app starts, so no bootstrap
key is made) with a platform administrator's API key, which every request of the
`client` carries by default, and the `api` fixture adds an `admin` key for each of
the tenants `acme` and `globex`: `HEADERS` and `OTHER_HEADERS` carry those. The keys
are fixed texts of the right shape: test credentials, valid in these tests only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
import pytest
from litestar import Litestar

from adapters.crypto.apikeys import hash_api_key
from adapters.crypto.identity import ThreadedScrypt
from adapters.crypto.passwords import ScryptParams
from adapters.memory.identity import MemoryIdentity
from adapters.system import SystemClock, UlidSource
from core.domain.access import Role
from core.domain.identity import new_api_key, parse_api_key
from core.usecases import Services
from entrypoints.bootstrap import create_app
from entrypoints.http.auth import SERVICES_KEY
from entrypoints.settings import (
    DatabaseSettings,
    DeliverySettings,
    HttpSettings,
    SecretsSettings,
    Settings,
)

TENANT = "acme"
OTHER = "globex"
#: A master key for the tests' sealed secrets (any 32 bytes; never used elsewhere).
MASTER_KEY = "dGVzdHMtb25seS1tYXN0ZXIta2V5LTMyLWJ5dGVzLWxvbmch"
PLATFORM_KEY = "wp_platform_" + "tests-only-platform-administrator-key-000001"
ACME_KEY = "wp_acmeadm1_" + "tests-only-acme-administrator-key-0000000001"
GLOBEX_KEY = "wp_globexa1_" + "tests-only-globex-administrator-key-00000001"
PLATFORM = {"Authorization": f"Bearer {PLATFORM_KEY}"}
HEADERS = {"Authorization": f"Bearer {ACME_KEY}"}
OTHER_HEADERS = {"Authorization": f"Bearer {GLOBEX_KEY}"}
#: scrypt at a cost tests can afford (the shipped default is N = 2**15).
FAST_HASHER = ThreadedScrypt(ScryptParams(log_n=4, r=8, p=1))
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"build": {"type": "integer"}, "commit": {"type": "string"}},
    "required": ["build"],
}

Client = httpx.AsyncClient
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
    **sections: Any,
) -> Settings:
    given: dict[str, Any] = {
        "database": DatabaseSettings(url="memory://"),
        "http": HttpSettings(
            max_body_bytes=max_body_bytes, max_batch_body_bytes=max_batch_body_bytes
        ),
        "secrets": SecretsSettings(master_key=MASTER_KEY),
        # no webhooks leave these apps unless a test asks (tests/http/test_subscriptions.py)
        "delivery": DeliverySettings(in_process=False),
    }
    return Settings(**{**given, **sections})


async def seed_key(
    identity: MemoryIdentity, text: str, *, tenant_id: str | None, role: Role, name: str = "tests"
) -> str:
    """Store an API key whose text the test knows; returns its id."""
    parts = parse_api_key(text)
    assert parts is not None, text
    key = new_api_key(
        id=UlidSource().new_id(),
        tenant_id=tenant_id,
        name=name,
        role=role,
        prefix=parts.prefix,
        secret_hash=hash_api_key(text),
        created_by="tests",
        now=ManualClock().current,
    )
    await identity.api_keys.add(key)
    return key.id


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


async def platform_identity() -> MemoryIdentity:
    """An identity store with the platform administrator's key (`PLATFORM`) in it."""
    store = MemoryIdentity()
    await seed_key(store, PLATFORM_KEY, tenant_id=None, role=Role.PLATFORM_ADMIN)
    return store


@pytest.fixture
async def identity() -> MemoryIdentity:
    """The app's identity store, with the platform administrator's key in it."""
    return await platform_identity()


def make_app(
    identity: MemoryIdentity,
    *,
    clock: ManualClock | None = None,
    config: Settings | None = None,
    **over: Any,
) -> Litestar:
    """The app over `identity`, a cheap password hash, and the tests' settings."""
    return create_app(
        config or settings(),
        clock=clock or ManualClock(),
        identity=identity,
        hasher=FAST_HASHER,
        **over,
    )


@pytest.fixture
def app(clock: ManualClock, identity: MemoryIdentity) -> Litestar:
    return make_app(identity, clock=clock)


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[Client]:
    """A client of the app that speaks as the platform administrator unless told otherwise."""
    async with asgi_client(app, headers=PLATFORM) as http:
        yield http


def services_of(app: Litestar) -> Services:
    """The app's use cases (while its lifespan runs), for what no route does: rotating keys."""
    services: Services = app.state[SERVICES_KEY]
    return services


async def tenant_id(client: Client, slug: str) -> str:
    answer = await client.get(f"/api/v1/tenants/{slug}", headers=PLATFORM)
    assert answer.status_code == 200, answer.text
    ident: str = answer.json()["data"]["id"]
    return ident


async def add_tenants(client: Client, identity: MemoryIdentity, *slugs: str) -> None:
    """Create the tenants (default: `acme` and `globex`), each with its admin key
    (`HEADERS`, `OTHER_HEADERS`)."""
    keys = {TENANT: ACME_KEY, OTHER: GLOBEX_KEY}
    for slug in slugs or (TENANT, OTHER):
        answer = await client.post(
            "/api/v1/tenants", json={"slug": slug, "name": slug.title()}, headers=PLATFORM
        )
        assert answer.status_code == 201, answer.text
        await seed_key(
            identity, keys[slug], tenant_id=await tenant_id(client, slug), role=Role.ADMIN
        )


@pytest.fixture
async def api(client: Client, identity: MemoryIdentity) -> Client:
    """A client with two tenants, `acme` and `globex`, created, each with an admin key."""
    await add_tenants(client, identity)
    return client


@asynccontextmanager
async def asgi_client(
    app: Litestar, *, headers: dict[str, str] | None = None, client: tuple[str, int] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """httpx straight over ASGI in this event loop, the app's lifespan around it: concurrent
    requests and streamed bodies. Requests come from `client` (default: loopback)."""
    async with app.lifespan():
        transport = httpx.ASGITransport(app=cast(Any, app), client=client or ("127.0.0.1", 50000))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver.local", headers=headers
        ) as http:
            yield http


@asynccontextmanager
async def client_from(app: Litestar, address: str) -> AsyncIterator[httpx.AsyncClient]:
    """Another client of an app whose lifespan already runs, connecting from `address`."""
    transport = httpx.ASGITransport(app=cast(Any, app), client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as http:
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


@pytest.fixture
async def delivering_api() -> AsyncIterator[tuple[Client, Litestar]]:
    """An app that delivers webhooks in-process, on the system clock, to loopback targets
    (allowed by setting), retrying once after 0.2 s; `acme` and `globex` made."""
    identity = await platform_identity()
    config = settings(
        delivery=DeliverySettings(
            allowed_networks=["127.0.0.0/8", "::1/128"],
            require_https=False,
            poll_seconds=0.05,
            retry_schedule_seconds=[0.2],
        )
    )
    app = make_app(identity, config=config, clock=SystemClock())  # type: ignore[arg-type]
    async with asgi_client(app) as client:
        await add_tenants(client, identity)
        yield client, app
