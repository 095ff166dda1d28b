"""The console under the API's limits and failures: the bound of work in flight counts a
page from its arrival (before its session is opened), the sign-in form is limited per
client address (behind trusted proxies: the forwarded one), and a database that cannot
serve is a 503 page with Retry-After."""

from __future__ import annotations

import anyio
import pytest

from adapters.memory.identity import MemoryIdentity
from core.ports import AuditFilter, PageRequest
from entrypoints.settings import HttpSettings, LimitsSettings
from tests.http.conftest import (
    ACME_KEY,
    HEADERS,
    PLATFORM,
    add_tenants,
    asgi_client,
    event_body,
    make_app,
    make_receiver,
    settings,
    tenant_id,
)
from tests.http.console import Console, console_client
from tests.http.test_rate_limits import HeldStore
from tests.http.test_unavailable import DownStore, Switch

pytestmark = pytest.mark.anyio


async def test_console_pages_count_against_max_in_flight_from_their_arrival(
    identity: MemoryIdentity,
) -> None:
    """With the one place taken by an API write, a console page is 503 at once, before its
    session is looked at (no session: not the redirect to sign-in); the live stream has
    the streams' bound; a page gets its place again once the write is done."""
    store = HeldStore()
    app = make_app(identity, config=settings(limits=LimitsSettings(max_in_flight=1)), store=store)
    async with asgi_client(app, headers=PLATFORM) as api, console_client(app) as http:
        await add_tenants(api, identity)
        receiver = await make_receiver(api)
        console = Console(http)
        store.holding = True
        written: list[int] = []

        async def held_write() -> None:
            answer = await api.post("/api/v1/events", json=event_body(receiver), headers=HEADERS)
            written.append(answer.status_code)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(held_write)
            await store.entered.wait()
            with anyio.fail_after(5):  # at once
                page = await console.get("/console/events")
                form = await console.get("/console/sign-in")
                stream = await console.get(
                    "/console/live/stream", headers={"Accept": "text/event-stream"}
                )
            assert page.status_code == form.status_code == 503
            assert page.headers["retry-after"] == form.headers["retry-after"] == "1"
            assert "text/html" in page.headers["content-type"]
            assert stream.status_code == 401  # its own bound; then it has no session
            store.go.set()
        assert written == [201]
        assert (await console.get("/console/events")).status_code == 303  # to sign in


async def test_the_sign_in_form_is_limited_per_forwarded_client_address(
    identity: MemoryIdentity,
) -> None:
    """Behind a trusted proxy the sign-in limiter counts each client apart (not the proxy),
    a spoofed left part of the header makes no other client, and the audit log names the
    forwarded address."""
    config = settings(
        http=HttpSettings(trusted_proxies=["10.0.0.0/8"]),
        limits=LimitsSettings(auth_requests_per_minute=1, auth_burst=4),
    )
    app = make_app(identity, config=config)
    async with asgi_client(app, headers=PLATFORM) as api:
        await add_tenants(api, identity)
        async with console_client(app, address="10.0.0.2") as proxy:
            first = Console(proxy)
            wrong = "wp_acmeadm1_" + "x" * 44
            for n in range(2):  # the form and its post: two requests each
                spoofed = {"X-Forwarded-For": f"192.0.2.{n}, 198.51.100.7"}
                proxy.headers.update(spoofed)
                answer = await first.sign_in(api_key=wrong)
                assert answer.status_code == 401, answer.text
            over = await first.get("/console/sign-in")
            assert over.status_code == 429
            assert "retry-after" in over.headers
            proxy.headers.update({"X-Forwarded-For": "198.51.100.8"})
            other = Console(proxy)
            assert (await other.sign_in(api_key=ACME_KEY)).status_code == 303
        addresses = set()
        for scope in (None, await tenant_id(api, "acme")):
            for outcome in ("failure", "denied"):
                records = await identity.audit.list(
                    scope, AuditFilter(outcome=outcome), PageRequest(limit=100)
                )
                addresses |= {r.address for r in records}
    assert addresses == {"198.51.100.7"}


async def test_a_database_that_cannot_serve_is_a_503_page(identity: MemoryIdentity) -> None:
    switch = Switch()
    app = make_app(identity, store=DownStore(switch))
    async with asgi_client(app, headers=PLATFORM) as api, console_client(app) as http:
        await add_tenants(api, identity)
        console = Console(http)
        assert (await console.sign_in(api_key=ACME_KEY)).status_code == 303
        switch.down = True
        page = await console.get("/console/events")
        assert page.status_code == 503
        assert page.headers["retry-after"] == "1"
        assert "text/html" in page.headers["content-type"]
        assert "cannot serve right now" in page.text
        assert "secret-host" not in page.text
