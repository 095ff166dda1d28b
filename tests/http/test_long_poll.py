"""The gate's long poll: `GET /api/v1/groups/{id}/status?...&wait=<1..60>`."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import anyio
import pytest

from adapters.memory.identity import MemoryIdentity
from core.usecases.identity import RECENT_SECONDS
from entrypoints.http.limits import limits_of
from entrypoints.settings import LimitsSettings
from tests.http.conftest import (
    ACME_KEY,
    HEADERS,
    OTHER_HEADERS,
    Client,
    ManualClock,
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


async def test_waiters_count_from_their_arrival_against_their_own_bound(
    identity: MemoryIdentity, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bound of work in flight counts a request from its arrival (while it waits on
    authentication too): a long poll is counted against `max_waiters` from then on,
    never against `max_in_flight`. Two long polls held in authentication fill the
    waiters' bound (a third is 503 at once) while a plain request still gets its place."""
    config = settings(limits=LimitsSettings(max_waiters=2, max_in_flight=1))
    clock = ManualClock()
    app = make_app(identity, config=config, clock=clock)
    async with asgi_client(app) as client:
        await add_tenants(client, identity)
        build = await make_receiver(client, "build")
        group = await make_group(client, build)
        path = f"{GROUPS}/{group}/status"
        clock.set(clock.current + timedelta(seconds=RECENT_SECONDS + 1))  # keys read again
        gate = anyio.Event()
        original = identity.api_keys.by_prefix
        acme = ACME_KEY.split("_")[1]

        async def slow(prefix: str) -> Any:
            if prefix == acme:  # acme's requests wait in authentication (on one shared read)
                await gate.wait()
            return await original(prefix)

        monkeypatch.setattr(identity.api_keys, "by_prefix", slow)
        answers: list[int] = []

        async def wait() -> None:
            answer = await client.get(path, params={**KEY, "wait": 1}, headers=HEADERS)
            answers.append(answer.status_code)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(wait)
            tasks.start_soon(wait)
            with anyio.fail_after(10):
                while limits_of(app.state).waiters.in_flight < 2:  # noqa: ASYNC110 - a count, no event to wait on
                    await anyio.sleep(0.001)
            with anyio.fail_after(5):  # at once, not behind the two in authentication
                third = await client.get(path, params={**KEY, "wait": 1}, headers=HEADERS)
            assert_problem(third, 503)
            assert limits_of(app.state).waiters.in_flight == 2
            assert limits_of(app.state).requests.in_flight == 0
            plain = await client.get("/api/v1/receivers", headers=OTHER_HEADERS)
            assert plain.status_code == 200
            gate.set()
        assert answers == [200, 200]
        assert limits_of(app.state).waiters.in_flight == 0
