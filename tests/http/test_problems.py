"""Problem details from one place, request ids on every answer, and nothing internal leaked."""

from __future__ import annotations

import logging
import re
from contextlib import AbstractAsyncContextManager

import pytest

from adapters.memory.store import MemoryStore
from core.domain.access import Role
from core.ports import ReadTx, Rebuild, WriteTx
from tests.http.conftest import (
    ACME_KEY,
    HEADERS,
    OTHER_HEADERS,
    PLATFORM,
    Client,
    asgi_client,
    assert_problem,
    make_app,
    platform_identity,
    seed_key,
)

pytestmark = pytest.mark.anyio

LEAK = "SELECT secret FROM tenants_internal"


class _Failing:
    async def __aenter__(self) -> ReadTx:
        raise RuntimeError(LEAK)

    async def __aexit__(self, *exc: object) -> None:
        return None  # pragma: no cover - never entered


class BrokenReads:
    """A store whose reads fail with an internal message that must never reach a client."""

    def __init__(self) -> None:
        self._store = MemoryStore()

    def read(self) -> AbstractAsyncContextManager[ReadTx]:
        return _Failing()

    def read_stale(self, tenant_id: str) -> AbstractAsyncContextManager[ReadTx]:
        return _Failing()

    def write(self, tenant_id: str) -> AbstractAsyncContextManager[WriteTx]:
        return self._store.write(tenant_id)

    def rebuild(
        self, tenant_id: str | None = None, after: int = 0
    ) -> AbstractAsyncContextManager[Rebuild]:
        return self._store.rebuild(tenant_id, after)

    async def replay_done(self, run: str) -> set[str]:
        return await self._store.replay_done(run)

    async def replay_finished(self, run: str) -> None:
        await self._store.replay_finished(run)

    async def close(self) -> None:
        await self._store.close()


async def test_unknown_route_is_a_404_problem(client: Client) -> None:
    for path in ("/nothing", "/api/v1", "/api/v2/events", "/api/v1/events/x/y"):
        body = assert_problem(await client.get(path, headers=HEADERS), 404)
        assert body["errors"] == []


async def test_wrong_method_is_a_405_problem(api: Client) -> None:
    answer = await api.put("/api/v1/events", headers=HEADERS)
    assert_problem(answer, 405)
    assert "POST" in answer.headers["allow"]
    receiver_path = "/api/v1/receivers/01ARZ3NDEKTSV4RRFFQ69G5FAV"
    assert_problem(await api.delete(receiver_path, headers=HEADERS), 405)
    assert_problem(await api.delete("/api/v1/tenants/acme"), 405)


BASIC = 'Basic realm="waypost", charset="UTF-8"'
MISSING = f'Bearer realm="waypost", {BASIC}'
INVALID = f'Bearer realm="waypost", error="invalid_token", {BASIC}'


@pytest.mark.parametrize(
    ("authorization", "challenge"),
    [
        ("", MISSING),
        ("Bearer", MISSING),
        ("Bearer ", MISSING),
        ("Basic YWxhZGRpbjpvcGVuc2VzYW1l", INVALID),  # a Basic password that is no key
        ("Bearer nonsense", INVALID),
        ("Bearer a.b.c", INVALID),
        ("Bearer wp_nobody00_" + "x" * 43, INVALID),
        ("Bearer " + ACME_KEY[:-1] + "y", INVALID),
    ],
)
async def test_a_missing_or_refused_credential_is_401_with_a_challenge(
    api: Client, authorization: str, challenge: str
) -> None:
    headers = {"Authorization": authorization}
    for answer in (
        await api.get("/api/v1/events", headers=headers),
        await api.post("/api/v1/receivers", json={}, headers=headers),
        await api.get("/api/v1/groups/01ARZ3NDEKTSV4RRFFQ69G5FAV", headers=headers),
        await api.get("/api/v1/tenants", headers=headers),
    ):
        body = assert_problem(answer, 401)
        assert answer.headers["www-authenticate"] == challenge
        assert "reason" not in body
        assert body["type"] == "urn:waypost:problem:unauthenticated"


async def test_the_tenant_header_is_a_slug_in_any_case(api: Client) -> None:
    answer = await api.get("/api/v1/users", headers={**PLATFORM, "X-Tenant": " ACME "})
    assert answer.status_code == 200
    answer = await api.get("/api/v1/events", headers={**HEADERS, "X-Tenant": " ACME "})
    assert answer.status_code == 200
    # a tenant's credential naming another tenant is refused, not quietly used
    answer = await api.get("/api/v1/events", headers={**HEADERS, "X-Tenant": "globex"})
    assert_problem(answer, 403)
    answer = await api.get("/api/v1/events", headers={**OTHER_HEADERS, "X-Tenant": "nobody"})
    assert_problem(answer, 403)
    # a platform administrator naming no tenant that exists
    answer = await api.get("/api/v1/users", headers={**PLATFORM, "X-Tenant": "nobody"})
    assert_problem(answer, 404)


async def test_request_id_is_echoed_when_sane(client: Client) -> None:
    sane = "req-1._ABC" + "x" * 118
    assert len(sane) == 128
    for path in ("/healthz/live", "/nothing", "/api/v1/events"):
        answer = await client.get(path, headers={"X-Request-ID": sane})
        assert answer.headers["x-request-id"] == sane


@pytest.mark.parametrize(
    "insane", [b"x" * 129, b"has space", b"semi;colon", "\u00fcn\u00efcode".encode(), b""]
)
async def test_request_id_is_made_when_missing_or_insane(client: Client, insane: bytes) -> None:
    answer = await client.get("/healthz/live", headers=[(b"X-Request-ID", insane)])
    made = answer.headers["x-request-id"]
    assert made.encode() != insane
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    other = await client.get("/healthz/live")
    assert other.headers["x-request-id"] != made


async def test_request_id_is_on_problems_too(api: Client) -> None:
    answer = await api.post("/api/v1/tenants", content=b"{", headers={"X-Request-ID": "abc"})
    assert_problem(answer, 400, "")
    assert answer.headers["x-request-id"] == "abc"


async def test_an_unexpected_failure_is_a_bare_500_with_a_logged_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app(await platform_identity(), store=BrokenReads())
    async with asgi_client(app, headers=PLATFORM) as client:
        with caplog.at_level(logging.ERROR, logger="waypost.http"):
            answer = await client.get("/api/v1/tenants", headers={"X-Request-ID": "req-500"})
    assert answer.status_code == 500
    assert answer.headers["content-type"].startswith("application/problem+json")
    body = answer.json()
    assert set(body) == {"type", "title", "status", "detail", "error_id"}
    assert body["status"] == 500
    assert body["detail"] == "internal error"
    assert LEAK not in answer.text
    assert "Traceback" not in answer.text
    assert "RuntimeError" not in answer.text
    [logged] = [r for r in caplog.records if body["error_id"] in r.getMessage()]
    assert "req-500" in logged.getMessage()
    assert logged.exc_info is not None
    assert LEAK in str(logged.exc_info[1])
    assert answer.headers["x-request-id"] == "req-500"


async def test_a_failing_tenant_lookup_is_a_500_not_a_401() -> None:
    identity = await platform_identity()
    await seed_key(identity, ACME_KEY, tenant_id="01ARZ3NDEKTSV4RRFFQ69G5FAV", role=Role.ADMIN)
    async with asgi_client(make_app(identity, store=BrokenReads())) as client:
        answer = await client.get("/api/v1/events", headers=HEADERS)
    assert answer.status_code == 500
    assert LEAK not in answer.text


async def test_problem_types_are_stable(api: Client) -> None:
    types = {
        (await api.get("/nothing")).json()["type"],
        (await api.get("/api/v1/tenants/nobody")).json()["type"],
    }
    assert types == {"urn:waypost:problem:not-found"}
    invalid = await api.post("/api/v1/tenants", json={"slug": "a", "name": "x"})
    assert invalid.json()["type"] == "urn:waypost:problem:validation-failed"
    assert invalid.json()["title"] == "Validation failed"
    malformed = await api.post("/api/v1/tenants", json={"slug": 1, "name": "x"})
    assert malformed.json()["type"] == "urn:waypost:problem:malformed-request"
