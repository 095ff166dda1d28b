"""The gate's long poll: `GET /api/v1/groups/{id}/status?...&wait=<1..60>`."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from adapters.memory.identity import MemoryIdentity
from entrypoints.settings import LimitsSettings
from tests.http.conftest import (
    HEADERS,
    Client,
    add_tenants,
    asgi_client,
    assert_problem,
    make_app,
    make_receiver,
    record,
    settings,
)
from tests.http.test_groups import GROUPS, KEY, make_group

pytestmark = pytest.mark.anyio


async def test_a_complete_gate_is_answered_at_once(api: Client) -> None:
    build = await make_receiver(api, "build")
    group = await make_group(api, build)
    await record(api, build)
    started = time.monotonic()
    answer = await api.get(f"{GROUPS}/{group}/status", params={**KEY, "wait": 60}, headers=HEADERS)
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["complete"] is True
    assert time.monotonic() - started < 30


async def test_a_waiting_request_answers_when_the_gate_completes(api: Client) -> None:
    build, test = await make_receiver(api, "build"), await make_receiver(api, "test")
    group = await make_group(api, build, test)
    await record(api, build)
    answers: list[dict[str, Any]] = []

    async def wait() -> None:
        answer = await api.get(
            f"{GROUPS}/{group}/status", params={**KEY, "wait": 60}, headers=HEADERS
        )
        assert answer.status_code == 200, answer.text
        answers.append(answer.json()["data"])

    async with anyio.create_task_group() as tasks:
        for _ in range(3):
            tasks.start_soon(wait)
        await anyio.sleep(0.3)
        assert answers == []
        await record(api, test, success=False)  # a commit that does not complete it
        await anyio.sleep(0.3)
        assert answers == []
        started = time.monotonic()
        await record(api, test)
    assert [a["complete"] for a in answers] == [True, True, True]
    assert time.monotonic() - started < 30


async def test_the_time_is_up_answers_the_status_as_it_is(api: Client) -> None:
    build = await make_receiver(api, "build")
    group = await make_group(api, build)
    started = time.monotonic()
    answer = await api.get(f"{GROUPS}/{group}/status", params={**KEY, "wait": 1}, headers=HEADERS)
    assert answer.status_code == 200
    assert answer.json()["data"]["complete"] is False
    assert time.monotonic() - started >= 1


@pytest.mark.parametrize("wait", ["0", "61", "-1", "1.5", "soon", ""])
async def test_wait_outside_1_to_60_seconds_is_a_400(api: Client, wait: str) -> None:
    group = await make_group(api, await make_receiver(api))
    answer = await api.get(
        f"{GROUPS}/{group}/status", params={**KEY, "wait": wait}, headers=HEADERS
    )
    assert_problem(answer, 400, "wait")


async def test_an_unknown_group_is_a_404_before_any_wait(api: Client) -> None:
    started = time.monotonic()
    answer = await api.get(
        f"{GROUPS}/01ARZ3NDEKTSV4RRFFQ69G5FAV/status", params={**KEY, "wait": 30}, headers=HEADERS
    )
    assert_problem(answer, 404)
    assert time.monotonic() - started < 20


async def test_an_event_producer_records_and_waits_on_its_gate(api: Client) -> None:
    build = await make_receiver(api, "build")
    group = await make_group(api, build)
    made = await api.post(
        "/api/v1/api-keys", json={"name": "ci", "role": "event_producer"}, headers=HEADERS
    )
    ci = {"Authorization": f"Bearer {made.json()['data']['key']}"}
    answers: list[bool] = []

    async def wait() -> None:
        answer = await api.get(f"{GROUPS}/{group}/status", params={**KEY, "wait": 60}, headers=ci)
        assert answer.status_code == 200, answer.text
        answers.append(answer.json()["data"]["complete"])

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(wait)
        await anyio.sleep(0.2)
        event = dict(KEY, description="", payload={"build": 1}, success=True)
        posted = await api.post(
            "/api/v1/events", json={**event, "event_receiver_id": build}, headers=ci
        )
        assert posted.status_code == 201, posted.text
    assert answers == [True]
    for path in (f"{GROUPS}/{group}", GROUPS, f"{GROUPS}/{group}/completions"):
        assert (await api.get(path, headers=ci)).status_code == 200, path
    # ... and may not change the gate.
    patched = await api.patch(f"{GROUPS}/{group}", json={"enabled": False}, headers=ci)
    assert_problem(patched, 403)


async def test_waiters_beyond_the_bound_get_503_and_do_not_take_requests_places(
    identity: MemoryIdentity,
) -> None:
    config = settings(limits=LimitsSettings(max_waiters=2, max_in_flight=1))
    app = make_app(identity, config=config)
    async with asgi_client(app) as client:
        await add_tenants(client, identity)
        build = await make_receiver(client, "build")
        group = await make_group(client, build)
        path = f"{GROUPS}/{group}/status"
        answers: list[int] = []

        async def wait() -> None:
            answer = await client.get(path, params={**KEY, "wait": 60}, headers=HEADERS)
            answers.append(answer.status_code)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(wait)
            tasks.start_soon(wait)
            await anyio.sleep(0.3)
            third = await client.get(path, params={**KEY, "wait": 60}, headers=HEADERS)
            assert_problem(third, 503)
            assert third.headers["retry-after"] == "1"
            # Plain requests still have their place (max_in_flight=1 is not taken by waiters).
            plain = await client.get(path, params=KEY, headers=HEADERS)
            assert plain.status_code == 200
            await record(client, build)
        assert answers == [200, 200]
        # Once they left, there is room again.
        again = await client.get(path, params={**KEY, "wait": 1}, headers=HEADERS)
        assert again.status_code == 200
