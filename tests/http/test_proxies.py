"""Behind trusted proxies: one client address for the administrators' networks, the token
endpoints' rate limit and the audit log; a header from anyone else changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import httpx
import pytest
from litestar import Litestar

from adapters.memory.identity import MemoryIdentity
from core.ports import AuditFilter, PageRequest
from entrypoints.settings import HttpSettings, LimitsSettings
from tests.http.conftest import (
    PLATFORM,
    add_tenants,
    asgi_client,
    assert_problem,
    make_app,
    settings,
    tenant_id,
)

pytestmark = pytest.mark.anyio

GUESS = {"grant_type": "password", "username": "admin", "password": "guess", "tenant": "acme"}


def proxied_app(
    identity: MemoryIdentity, *proxies: str, header: str = "x-forwarded-for"
) -> Litestar:
    config = settings(
        http=HttpSettings(trusted_proxies=list(proxies), proxy_header=header),  # type: ignore[arg-type]
        limits=LimitsSettings(auth_requests_per_minute=1, auth_burst=2),
    )
    return make_app(identity, config=config)


@asynccontextmanager
async def peer(app: Litestar, address: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=cast(Any, app), client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as http:
        yield http


def via(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def refused_from(identity: MemoryIdentity, local: httpx.AsyncClient) -> set[str | None]:
    """The addresses of the refusals audited (the platform's log and acme's)."""
    found = set()
    for scope in (None, await tenant_id(local, "acme")):
        for outcome in ("failure", "denied"):
            records = await identity.audit.list(
                scope, AuditFilter(outcome=outcome), PageRequest(limit=100)
            )
            found |= {r.address for r in records}
    return found


async def test_without_trusted_proxies_forwarding_headers_change_nothing(
    identity: MemoryIdentity,
) -> None:
    app = proxied_app(identity)
    async with asgi_client(app, headers=PLATFORM) as local:
        await add_tenants(local, identity)
        # a local caller cannot pretend to be elsewhere ...
        for n in range(2):
            answer = await local.post(
                "/api/v1/auth/token", json=GUESS, headers=via(f"203.0.113.{n}")
            )
            assert answer.status_code == 401
        refused = await local.post("/api/v1/auth/token", json=GUESS, headers=via("203.0.113.9"))
        assert_problem(refused, 429)
        # ... nor a remote one pretend to be local
        async with peer(app, "203.0.113.50") as remote:
            answer = await remote.get("/api/v1/tenants", headers={**PLATFORM, **via("127.0.0.1")})
            assert_problem(answer, 403)
        assert await refused_from(identity, local) == {"127.0.0.1", "203.0.113.50"}


async def test_through_a_trusted_proxy_the_forwarded_address_is_the_client(
    identity: MemoryIdentity,
) -> None:
    app = proxied_app(identity, "10.0.0.0/8")
    async with asgi_client(app, headers=PLATFORM) as local:
        await add_tenants(local, identity)
        async with peer(app, "10.0.0.2") as proxy:
            # the administrators' networks see the client, not the proxy
            far = await proxy.get("/api/v1/tenants", headers={**PLATFORM, **via("203.0.113.5")})
            assert_problem(far, 403)
            near = await proxy.get("/api/v1/tenants", headers={**PLATFORM, **via("127.0.0.1")})
            assert near.status_code == 200
            # the token endpoints' limit counts each client apart, and a spoofed left part
            # of the header does not make another client
            for n in range(2):
                spoofed = via(f"192.0.2.{n}, 198.51.100.7")
                answer = await proxy.post("/api/v1/auth/token", json=GUESS, headers=spoofed)
                assert answer.status_code == 401
            assert_problem(
                await proxy.post(
                    "/api/v1/auth/token", json=GUESS, headers=via("192.0.2.99, 198.51.100.7")
                ),
                429,
            )
            other = await proxy.post("/api/v1/auth/token", json=GUESS, headers=via("198.51.100.8"))
            assert other.status_code == 401
        assert await refused_from(identity, local) == {
            "198.51.100.7",
            "198.51.100.8",
            "203.0.113.5",
        }


async def test_the_forwarded_header_when_configured(identity: MemoryIdentity) -> None:
    app = proxied_app(identity, "10.0.0.0/8", header="forwarded")
    async with asgi_client(app, headers=PLATFORM) as local:
        await add_tenants(local, identity)
        async with peer(app, "10.0.0.2") as proxy:
            ignored = {**PLATFORM, **via("203.0.113.5"), "Forwarded": "for=127.0.0.1"}
            assert (await proxy.get("/api/v1/tenants", headers=ignored)).status_code == 200
            far = {**PLATFORM, "Forwarded": 'for="[2001:db8::7]:443"'}
            assert_problem(await proxy.get("/api/v1/tenants", headers=far), 403)
        assert await refused_from(identity, local) == {"2001:db8::7"}
