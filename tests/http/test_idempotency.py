"""Idempotency-Key on POST: replay, refusal of another request, 409 while running."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest

from adapters.memory.identity import MemoryIdentity
from adapters.memory.store import MemoryStore
from core.domain.access import Role
from core.ports import WriteTx
from entrypoints.http.idempotency import Answer, MemoryRecords
from tests.http.conftest import (
    HEADERS,
    OTHER_HEADERS,
    TENANT,
    Client,
    add_tenants,
    asgi_client,
    assert_problem,
    event_body,
    make_app,
    make_receiver,
    platform_identity,
    receiver_body,
    seed_key,
    tenant_id,
)

pytestmark = pytest.mark.anyio

EVENTS = "/api/v1/events"


def keyed(key: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    return {**(HEADERS if headers is None else headers), "Idempotency-Key": key}


async def test_the_same_request_replays_the_first_answer(api: Client) -> None:
    receiver = await make_receiver(api)
    first = await api.post(EVENTS, json=event_body(receiver), headers=keyed("k-1"))
    again = await api.post(EVENTS, json=event_body(receiver), headers=keyed("k-1"))
    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["content-type"] == "application/json"
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert again.headers["x-request-id"] != first.headers["x-request-id"]
    assert len((await api.get(EVENTS, headers=HEADERS)).json()["data"]) == 1


async def test_another_body_with_the_same_key_is_422(api: Client) -> None:
    receiver = await make_receiver(api)
    await api.post(EVENTS, json=event_body(receiver), headers=keyed("k"))
    other = await api.post(EVENTS, json=event_body(receiver, success=False), headers=keyed("k"))
    assert_problem(other, 422, "Idempotency-Key")
    elsewhere = await api.post("/api/v1/groups", json={}, headers=keyed("k"))
    assert_problem(elsewhere, 422, "Idempotency-Key")


async def test_refusals_are_replayed_too(api: Client) -> None:
    receiver = await make_receiver(api)
    bad = event_body(receiver, payload={})
    first = await api.post(EVENTS, json=bad, headers=keyed("bad"))
    again = await api.post(EVENTS, json=bad, headers=keyed("bad"))
    assert_problem(first, 422)
    assert_problem(again, 422)
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"


async def test_keys_belong_to_a_tenant(api: Client) -> None:
    body = receiver_body()
    mine = await api.post("/api/v1/receivers", json=body, headers=keyed("same"))
    theirs = await api.post("/api/v1/receivers", json=body, headers=keyed("same", OTHER_HEADERS))
    assert mine.status_code == theirs.status_code == 201
    assert mine.json() != theirs.json()


async def test_a_refused_credential_does_not_use_up_the_key(
    api: Client, identity: MemoryIdentity
) -> None:
    key = "wp_initech1_" + "tests-only-initech-administrator-key-0000001"
    initech = {"Authorization": f"Bearer {key}"}
    refused = await api.post("/api/v1/receivers", json=receiver_body(), headers=keyed("t", initech))
    assert_problem(refused, 401)
    created = await api.post("/api/v1/tenants", json={"slug": "initech", "name": "Initech"})
    assert created.status_code == 201
    await seed_key(identity, key, tenant_id=await tenant_id(api, "initech"), role=Role.ADMIN)
    again = await api.post("/api/v1/receivers", json=receiver_body(), headers=keyed("t", initech))
    assert again.status_code == 201
    assert "idempotent-replayed" not in again.headers


async def test_platform_routes_take_keys_too(api: Client) -> None:
    body = {"slug": "initech", "name": "Initech"}
    created = await api.post("/api/v1/tenants", json=body, headers={"Idempotency-Key": "t"})
    replay = await api.post("/api/v1/tenants", json=body, headers={"Idempotency-Key": "t"})
    assert created.status_code == replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.headers["location"] == "/api/v1/tenants/initech"


@pytest.mark.parametrize(("key", "status"), [("k" * 255, 201), ("k" * 256, 400)])
async def test_key_length_bounds(api: Client, key: str, status: int) -> None:
    receiver = await make_receiver(api)
    answer = await api.post(EVENTS, json=event_body(receiver), headers=keyed(key))
    assert answer.status_code == status
    if status == 400:
        assert_problem(answer, 400, "Idempotency-Key")


async def test_an_empty_key_is_400(api: Client) -> None:
    answer = await api.post(EVENTS, json={}, headers=keyed(""))
    assert_problem(answer, 400, "Idempotency-Key")


class GatedStore(MemoryStore):
    """Holds the next write open until the test releases it."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.entered = anyio.Event()
        self.release = anyio.Event()

    @asynccontextmanager
    async def write(self, tenant_id: str) -> AsyncIterator[WriteTx]:  # type: ignore[override]
        if self.armed:
            self.armed = False
            self.entered.set()
            await self.release.wait()
        async with super().write(tenant_id) as tx:
            yield tx


async def test_the_same_key_while_the_first_runs_is_409() -> None:
    store = GatedStore()
    identity = await platform_identity()
    async with asgi_client(make_app(identity, store=store)) as http:
        await add_tenants(http, identity, TENANT)
        receiver = await http.post("/api/v1/receivers", json=receiver_body(), headers=HEADERS)
        body = event_body(receiver.json()["data"])
        answers: list[httpx.Response] = []

        async def first() -> None:
            answers.append(await http.post(EVENTS, json=body, headers=keyed("slow")))

        store.armed = True
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(first)
            with anyio.fail_after(5):
                await store.entered.wait()
            running = await http.post(EVENTS, json=body, headers=keyed("slow"))
            assert_problem(running, 409, "Idempotency-Key")
            assert running.headers["retry-after"] == "1"
            store.release.set()
        [done] = answers
        assert done.status_code == 201
        replay = await http.post(EVENTS, json=body, headers=keyed("slow"))
        assert replay.status_code == 201
        assert replay.json() == done.json()


def test_records_expire_and_stay_bounded() -> None:
    now = [0.0]
    records = MemoryRecords(ttl=10, capacity=2, clock=lambda: now[0])
    records.begin(("t", "a"), b"fa")
    records.finish(("t", "a"), Answer(201, [], b"{}"))
    found = records.get(("t", "a"))
    assert found is not None
    assert found.answer == Answer(201, [], b"{}")
    now[0] = 10.0
    assert records.get(("t", "a")) is None
    for key in "bcd":
        records.begin(("t", key), b"f")
    assert len(records) == 2
    assert records.get(("t", "b")) is None
    records.abandon(("t", "c"))
    assert records.get(("t", "c")) is None
    records.finish(("t", "gone"), Answer(200, [], b""))  # nothing to finish: ignored
    assert records.get(("t", "gone")) is None
