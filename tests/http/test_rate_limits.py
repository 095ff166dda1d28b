"""Rate limits (429 per credential, per address on the token endpoints) and backpressure (503)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from litestar import Litestar

from adapters.memory.identity import MemoryIdentity
from adapters.memory.store import MemoryStore
from entrypoints.http import limits
from entrypoints.settings import LimitsSettings
from tests.http.conftest import (
    HEADERS,
    OTHER_HEADERS,
    PLATFORM,
    Client,
    add_tenants,
    asgi_client,
    assert_problem,
    client_from,
    event_body,
    make_app,
    make_receiver,
    settings,
)

pytestmark = pytest.mark.anyio


class FakeTime:
    """The limiters' monotonic clock, moved by the test; while `setting_up`, each reading is
    an hour later (every bucket full: the set-up's own requests are never limited)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.setting_up = False

    def __call__(self) -> float:
        if self.setting_up:
            self.now += 3600
        return self.now


def limited_app(identity: MemoryIdentity, time: FakeTime, **limit: Any) -> Litestar:
    config = settings(limits=LimitsSettings(**limit))
    app = make_app(identity, config=config)
    limits.install(app.state, limits.Limits(config.limits, clock=time))
    return app


@asynccontextmanager
async def serving(
    app: Litestar, identity: MemoryIdentity, time: FakeTime | None = None
) -> AsyncIterator[Client]:
    """The app with the tenants `acme` and `globex`; then every bucket is full."""
    async with asgi_client(app, headers=PLATFORM) as client:
        if time is not None:
            time.setting_up = True
        await add_tenants(client, identity)
        if time is not None:
            time(), time()
            time.setting_up = False
        yield client


def assert_rate_limited(answer: Any, retry_after: str) -> None:
    body = assert_problem(answer, 429)
    assert body["type"] == "urn:waypost:problem:rate-limited"
    assert answer.headers["retry-after"] == retry_after


async def test_a_credential_gets_its_burst_then_429_until_its_rate_refills(
    identity: MemoryIdentity,
) -> None:
    time = FakeTime()
    app = limited_app(identity, time, requests_per_second=0.5, burst=3)
    async with serving(app, identity, time) as client:
        statuses = [
            (await client.get("/api/v1/receivers", headers=HEADERS)).status_code for _ in range(3)
        ]
        assert statuses == [200, 200, 200]
        assert_rate_limited(await client.get("/api/v1/receivers", headers=HEADERS), "2")
        time.now += 1.0  # half a token: still refused, sooner
        assert_rate_limited(await client.get("/api/v1/receivers", headers=HEADERS), "1")
        time.now += 1.0
        assert (await client.get("/api/v1/receivers", headers=HEADERS)).status_code == 200


async def test_credentials_do_not_share_a_bucket(identity: MemoryIdentity) -> None:
    time = FakeTime()
    app = limited_app(identity, time, requests_per_second=1, burst=1)
    async with serving(app, identity, time) as client:
        assert (await client.get("/api/v1/receivers", headers=HEADERS)).status_code == 200
        assert_rate_limited(await client.get("/api/v1/receivers", headers=HEADERS), "1")
        assert (await client.get("/api/v1/receivers", headers=OTHER_HEADERS)).status_code == 200


async def test_a_refused_write_writes_nothing(identity: MemoryIdentity) -> None:
    time = FakeTime()
    app = limited_app(identity, time, requests_per_second=1, burst=2)
    async with serving(app, identity, time) as client:
        receiver = await make_receiver(client)  # takes the first token
        first = await client.post("/api/v1/events", json=event_body(receiver), headers=HEADERS)
        assert first.status_code == 201
        refused = await client.post(
            "/api/v1/events/batch",
            json={"events": [event_body(receiver, release=str(n)) for n in range(5)]},
            headers=HEADERS,
        )
        assert_rate_limited(refused, "1")
        time.now += 3600
        listed = await client.get("/api/v1/events", headers=HEADERS)
        assert [event["id"] for event in listed.json()["data"]] == [first.json()["data"]]


async def test_a_bad_credential_is_a_401_and_costs_nobody_a_token(
    identity: MemoryIdentity,
) -> None:
    time = FakeTime()
    app = limited_app(identity, time, requests_per_second=1, burst=1)
    async with serving(app, identity, time) as client:
        for _ in range(3):
            answer = await client.get(
                "/api/v1/receivers", headers={"Authorization": "Bearer wp_nope_nope"}
            )
            assert answer.status_code == 401
        assert (await client.get("/api/v1/receivers", headers=HEADERS)).status_code == 200


async def test_the_token_endpoint_is_limited_per_client_address(
    identity: MemoryIdentity,
) -> None:
    time = FakeTime()
    app = limited_app(identity, time, auth_requests_per_minute=30, auth_burst=2)
    guess = {"grant_type": "password", "username": "admin", "password": "guess", "tenant": "acme"}
    async with serving(app, identity, time):
        async with client_from(app, "198.51.100.7") as guesser:
            statuses = [
                (await guesser.post("/api/v1/auth/token", json=guess)).status_code for _ in range(2)
            ]
            assert statuses == [401, 401]
            assert_rate_limited(await guesser.post("/api/v1/auth/token", json=guess), "2")
            # revoking goes through the same door
            revoked = await guesser.post("/api/v1/auth/revoke", json={"token": "x"})
            assert_rate_limited(revoked, "2")
        async with client_from(app, "198.51.100.8") as other:
            assert (await other.post("/api/v1/auth/token", json=guess)).status_code == 401
        async with client_from(app, "198.51.100.7") as guesser:
            time.now += 2.0  # one token back (30 a minute)
            assert (await guesser.post("/api/v1/auth/token", json=guess)).status_code == 401
            assert (await guesser.post("/api/v1/auth/token", json=guess)).status_code == 429


async def test_probes_and_the_jwks_are_never_limited(identity: MemoryIdentity) -> None:
    time = FakeTime()
    app = limited_app(identity, time, requests_per_second=1, burst=1, auth_burst=1)
    async with serving(app, identity, time) as client:
        for path in ("/healthz/live", "/healthz/ready", "/.well-known/jwks.json"):
            for _ in range(3):
                assert (await client.get(path)).status_code == 200, path


class HeldStore:
    """A memory store whose writes wait for the test's go while `holding`."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.holding = False
        self.entered = anyio.Event()
        self.go = anyio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @asynccontextmanager
    async def write(self, tenant_id: str) -> AsyncIterator[Any]:
        if self.holding:
            self.entered.set()
            await self.go.wait()
        async with self.inner.write(tenant_id) as tx:
            yield tx


async def test_past_max_in_flight_requests_are_answered_503_at_once(
    identity: MemoryIdentity,
) -> None:
    store = HeldStore()
    config = settings(limits=LimitsSettings(max_in_flight=1))
    app = make_app(identity, config=config, store=store)
    state = app.state
    async with serving(app, identity) as client:
        receiver = await make_receiver(client)
        store.holding = True
        answers: list[Any] = []

        async def held() -> None:
            answers.append(
                await client.post("/api/v1/events", json=event_body(receiver), headers=HEADERS)
            )

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(held)
            await store.entered.wait()
            with anyio.fail_after(5):  # answered at once, not queued behind the held one
                overloaded = await client.get("/api/v1/receivers", headers=OTHER_HEADERS)
            body = assert_problem(overloaded, 503)
            assert body["type"] == "urn:waypost:problem:overloaded"
            assert overloaded.headers["retry-after"] == "1"
            # probes are not API work: a loaded server still says it is alive
            assert (await client.get("/healthz/live")).status_code == 200
            store.go.set()
        assert answers[0].status_code == 201
        assert state["waypost.limits"].requests.in_flight == 0
        assert (await client.get("/api/v1/receivers", headers=OTHER_HEADERS)).status_code == 200


async def test_failed_requests_leave_no_slot_taken(identity: MemoryIdentity) -> None:
    config = settings(limits=LimitsSettings(max_in_flight=1))
    app = make_app(identity, config=config)
    async with serving(app, identity) as client:
        receiver = await make_receiver(client)
        for _ in range(3):  # 422, then the slot must be free for the next
            answer = await client.post(
                "/api/v1/events", json=event_body(receiver, payload={}), headers=HEADERS
            )
            assert answer.status_code == 422
        assert app.state["waypost.limits"].requests.in_flight == 0


async def test_every_limited_route_documents_429_and_503(app: Litestar) -> None:
    document = app.openapi_schema.to_schema()
    limited = 0
    for path, item in document["paths"].items():
        if not path.startswith("/api/v1/"):
            continue
        for operation in item.values():
            if isinstance(operation, dict) and "responses" in operation:
                assert {"429", "503"} <= set(operation["responses"]), path
                limited += 1
    assert limited > 20


async def test_requests_waiting_on_authentication_count_from_their_arrival(
    identity: MemoryIdentity, monkeypatch: pytest.MonkeyPatch
) -> None:
    """32 requests while authentication is slow, with room for 4: four wait in it (on the
    one read of the key they share), the other 28 are answered 503 at once instead of
    queueing behind them."""
    config = settings(limits=LimitsSettings(max_in_flight=4))
    app = make_app(identity, config=config)
    async with serving(app, identity) as client:
        gate = anyio.Event()
        waiting: list[str] = []
        original = identity.api_keys.by_prefix

        reading = anyio.Event()

        async def slow(prefix: str) -> Any:
            waiting.append(prefix)
            reading.set()
            await gate.wait()
            return await original(prefix)

        monkeypatch.setattr(identity.api_keys, "by_prefix", slow)
        statuses: list[int] = []
        refused = anyio.Event()

        async def send() -> None:
            statuses.append((await client.get("/api/v1/receivers", headers=HEADERS)).status_code)
            if len(statuses) == 28:
                refused.set()

        async with anyio.create_task_group() as tasks:
            for _ in range(32):
                tasks.start_soon(send)
            with anyio.fail_after(10):
                await refused.wait()
                await reading.wait()
            await anyio.sleep(0.05)
            assert statuses == [503] * 28
            assert len(waiting) == 1  # the four in authentication share one read of the key
            assert limits.limits_of(app.state).requests.in_flight == 4
            gate.set()
        assert sorted(statuses) == [200] * 4 + [503] * 28
        assert limits.limits_of(app.state).requests.in_flight == 0


class DownRedis:
    """A shared limiter whose server is down: every call fails at once."""

    calls = 0

    async def take(self, bucket: str, rate: Any) -> float:
        self.calls += 1
        raise ConnectionRefusedError("Connection refused")

    async def close(self) -> None:
        return None


async def test_a_redis_outage_is_never_a_5xx_and_is_shown_and_logged_once(
    identity: MemoryIdentity, caplog: pytest.LogCaptureFixture
) -> None:
    config = settings(limits=LimitsSettings(requests_per_second=1, burst=3))
    app = make_app(identity, config=config)
    down = DownRedis()
    time = FakeTime()
    limits.install(app.state, limits.Limits(config.limits, clock=time, shared=down))
    with caplog.at_level("INFO", logger="waypost.limits"):
        async with serving(app, identity, time) as client:
            asked = down.calls  # the set-up's requests opened the breaker
            statuses = [
                (await client.get("/api/v1/receivers", headers=HEADERS)).status_code
                for _ in range(6)
            ]
            # this process's limit applies meanwhile: the burst, then 429
            assert statuses == [200, 200, 200, 429, 429, 429]
            ready = await client.get("/healthz/ready")
            assert ready.status_code == 200
            assert ready.json()["status"] == "degraded"
            assert ready.json()["components"]["rate_limits"]["status"] == "degraded"
            scraped = (await client.get("/metrics")).text
    assert "waypost_rate_limits_shared 0.0" in scraped
    assert 'waypost_redis_breaker_state{state="open"} 1.0' in scraped
    assert "waypost_redis_outages_total 1.0" in scraped
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "Connection refused" in warnings[0].getMessage()
    # one probe (the set-up's clock moved hours on), which failed: then open, cooling down,
    # Redis is not asked again
    assert down.calls == asked + 1
