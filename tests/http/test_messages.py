"""The live tail, GET /api/v1/messages: CloudEvents as Server-Sent Events, resumable, bounded."""

from __future__ import annotations

import itertools
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta

import anyio
import httpx
import pytest
from litestar import Litestar

from adapters.memory.identity import MemoryIdentity
from core.domain.messages import decode_message
from entrypoints.http.routes import messages
from entrypoints.settings import LimitsSettings
from tests.http.conftest import (
    HEADERS,
    OTHER_HEADERS,
    PLATFORM,
    Client,
    ManualClock,
    add_tenants,
    asgi_client,
    assert_problem,
    event_body,
    make_app,
    make_receiver,
    settings,
)
from tests.http.test_identity import ANON, PASSWORD, bearer, grant, make_user

pytestmark = pytest.mark.anyio


def sse(answer: httpx.Response) -> list[dict[str, str]]:
    """The events of a text/event-stream body: one dict of field -> value per event."""
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/event-stream")
    events = []
    for block in answer.text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if line:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
        if fields:
            events.append(fields)
    return events


async def gate_that_completes(api: Client) -> tuple[str, str, str]:
    """Two receivers, a group of both, a success of each: (receiver a, receiver b, group)."""
    a = await make_receiver(api, "a")
    b = await make_receiver(api, "b")
    group = await api.post(
        "/api/v1/groups",
        json={"name": "g", "type": "gate", "version": "1", "event_receiver_ids": [a, b]},
        headers=HEADERS,
    )
    assert group.status_code == 201
    for receiver in (a, b):
        answer = await api.post("/api/v1/events", json=event_body(receiver), headers=HEADERS)
        assert answer.status_code == 201
    return a, b, group.json()["data"]


async def test_the_tail_replays_the_log_as_cloudevents_with_positions(api: Client) -> None:
    a, b, group = await gate_that_completes(api)
    answer = await api.get("/api/v1/messages?after=0&follow=false", headers=HEADERS)
    events = sse(answer)
    assert answer.headers["cache-control"] == "no-store"
    positions = [int(e["id"]) for e in events]
    assert positions == sorted(positions)
    found = [decode_message(e["data"].encode()) for e in events]
    assert [(m.type, m.subject) for m in found] == [
        ("waypost.receiver.created", a),
        ("waypost.receiver.created", b),
        ("waypost.group.created", group),
        ("ci.build", a),
        ("ci.build", b),
        ("waypost.group.completed", group),
    ]
    assert {m.tenant for m in found} == {"acme"}
    assert found[-1].data.events[0].event_receiver_id == b  # the triggering event first


async def test_resume_after_a_position_or_from_last_event_id(api: Client) -> None:
    await gate_that_completes(api)
    every = sse(await api.get("/api/v1/messages?after=0&follow=false", headers=HEADERS))
    third = every[2]["id"]
    rest = sse(await api.get(f"/api/v1/messages?after={third}&follow=false", headers=HEADERS))
    assert rest == every[3:]
    # Last-Event-ID (what EventSource sends when it reconnects) wins over `after`
    resumed = sse(
        await api.get(
            "/api/v1/messages?after=0&follow=false", headers={**HEADERS, "Last-Event-ID": third}
        )
    )
    assert resumed == every[3:]


async def test_without_a_position_the_tail_starts_now(api: Client) -> None:
    await gate_that_completes(api)
    assert sse(await api.get("/api/v1/messages?follow=false", headers=HEADERS)) == []


async def test_a_tenant_tails_only_its_own_messages(api: Client) -> None:
    await gate_that_completes(api)
    assert sse(await api.get("/api/v1/messages?after=0&follow=false", headers=OTHER_HEADERS)) == []


@pytest.mark.parametrize(
    ("query", "headers", "field"),
    [
        ("after=-1", {}, "after"),
        ("after=x", {}, "after"),
        ("after=1e3", {}, "after"),
        ("", {"Last-Event-ID": "abc"}, "Last-Event-ID"),
        ("", {"Last-Event-ID": "9" * 19}, "Last-Event-ID"),
    ],
)
async def test_a_position_that_is_not_one_is_a_400(
    api: Client, query: str, headers: dict[str, str], field: str
) -> None:
    answer = await api.get(f"/api/v1/messages?follow=false&{query}", headers={**HEADERS, **headers})
    assert_problem(answer, 400, field)


async def test_the_tail_needs_a_credential_that_may_read_events(api: Client) -> None:
    answer = await api.get("/api/v1/messages?follow=false", headers={"Authorization": ""})
    assert_problem(answer, 401)


async def test_a_following_tail_sends_what_commits_and_ends_when_the_server_stops(
    app: Litestar, api: Client
) -> None:
    receiver = await make_receiver(api)
    answers: list[httpx.Response] = []

    async def tail() -> None:
        answers.append(await api.get("/api/v1/messages", headers=HEADERS))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(tail)
        await anyio.sleep(0.3)  # the tail has read the head: it starts "now"
        recorded = await api.post("/api/v1/events", json=event_body(receiver), headers=HEADERS)
        assert recorded.status_code == 201
        await anyio.sleep(4 * messages.POLL_SECONDS)
        messages.stop_streams(app.state)
    [answer] = answers
    [event] = sse(answer)
    assert json.loads(event["data"])["data"]["events"][0]["id"] == recorded.json()["data"]


async def test_an_idle_tail_sends_keep_alive_comments(
    app: Litestar, api: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(messages, "POLL_SECONDS", 0.01)
    monkeypatch.setattr(messages, "KEEPALIVE_SECONDS", 0.02)
    answers: list[httpx.Response] = []

    async def tail() -> None:
        answers.append(await api.get("/api/v1/messages", headers=HEADERS))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(tail)
        await anyio.sleep(0.2)
        messages.stop_streams(app.state)
    [answer] = answers
    comments = [e for e in sse(answer) if set(e) == {""}]
    assert comments
    assert all(e[""] == "keep-alive" for e in comments)


async def test_open_tails_are_bounded_apart_from_requests(identity: MemoryIdentity) -> None:
    app = make_app(identity, config=settings(limits=LimitsSettings(max_streams=1)))
    async with asgi_client(app, headers=PLATFORM) as client:
        await add_tenants(client, identity)
        answers: list[httpx.Response] = []

        async def tail() -> None:
            answers.append(await client.get("/api/v1/messages", headers=HEADERS))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(tail)
            await anyio.sleep(0.3)
            second = await client.get("/api/v1/messages?follow=false", headers=OTHER_HEADERS)
            body = assert_problem(second, 503)
            assert "streams" in body["detail"]
            assert second.headers["retry-after"] == "1"
            # an open tail does not hold a request's place
            assert (await client.get("/api/v1/receivers", headers=HEADERS)).status_code == 200
            messages.stop_streams(app.state)
        assert answers[0].status_code == 200
        assert app.state["waypost.limits"].streams.in_flight == 0


# --- a stream ends when its credential stops being valid -----------------------------------


async def tail_while(
    app: Litestar,
    api: Client,
    headers: dict[str, str],
    during: Callable[[], Awaitable[None]],
    query: str = "",
    within: float = 5.0,
) -> tuple[httpx.Response, bool]:
    """Open a following tail with `headers`, run `during`, wait up to `within` s for the
    stream to end by itself, then stop it: (its answer, whether it ended by itself)."""
    answers: list[httpx.Response] = []
    ended = anyio.Event()

    async def tail() -> None:
        answers.append(await api.get(f"/api/v1/messages?{query}", headers=headers))
        ended.set()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(tail)
        await anyio.sleep(0.3)  # the tail is open and has read the head
        await during()
        with anyio.move_on_after(within):
            await ended.wait()
        by_itself = ended.is_set()
        messages.stop_streams(app.state)
    return answers[0], by_itself


def sent_event_ids(answer: httpx.Response) -> list[str]:
    return [json.loads(e["data"])["data"]["events"][0]["id"] for e in sse(answer) if "data" in e]


async def new_key(api: Client, role: str = "event_viewer", **fields: str) -> tuple[str, str]:
    made = await api.post(
        "/api/v1/api-keys", json={"name": "tail", "role": role, **fields}, headers=HEADERS
    )
    assert made.status_code == 201, made.text
    return made.json()["data"]["id"], made.json()["data"]["key"]


async def test_an_open_tail_ends_when_its_api_key_is_revoked(app: Litestar, api: Client) -> None:
    receiver = await make_receiver(api)
    key_id, key = await new_key(api)
    recorded: list[str] = []

    async def revoke_between_two_events() -> None:
        first = await api.post("/api/v1/events", json=event_body(receiver), headers=HEADERS)
        recorded.append(first.json()["data"])
        await anyio.sleep(4 * messages.POLL_SECONDS)  # the tail has sent it
        assert (await api.delete(f"/api/v1/api-keys/{key_id}", headers=HEADERS)).status_code == 204
        second = await api.post("/api/v1/events", json=event_body(receiver), headers=HEADERS)
        recorded.append(second.json()["data"])

    answer, ended = await tail_while(
        app, api, {"Authorization": f"Bearer {key}"}, revoke_between_two_events
    )
    assert ended, "the stream went on after its key was revoked"
    assert sent_event_ids(answer) == recorded[:1]  # what committed after it was not sent
    assert sse(answer)[-1] == {"": messages.ENDED_COMMENT}
    # and the credential is refused from then on
    assert_problem(
        await api.get("/api/v1/messages", headers={"Authorization": f"Bearer {key}"}), 401
    )


async def user_token(api: Client, role: str = "event_viewer") -> tuple[str, dict[str, str]]:
    """A user of acme with `role`, logged in: (user id, headers with its access token)."""
    user_id = await make_user(api, "tailer", roles=[role])
    tokens = await grant(
        api, grant_type="password", username="tailer", password=PASSWORD, tenant="acme"
    )
    assert tokens.status_code == 200, tokens.text
    return user_id, bearer(tokens.json()["access_token"])


@pytest.mark.parametrize(
    "how",
    [
        "api key expires",
        "access token expires",
        "access token revoked",
        "tenant disabled",
        "user disabled",
        "user deleted",
        "user no longer reads events",
    ],
)
async def test_an_open_tail_ends_when_its_credential_stops_being_valid(
    app: Litestar, api: Client, clock: ManualClock, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    # no message is recorded after the change: the idle stream's own check ends it
    monkeypatch.setattr(messages, "CHECK_SECONDS", 0.05)
    if how == "api key expires":
        expires = (clock.current + timedelta(hours=1)).isoformat()
        _, key = await new_key(api, expires_at=expires)
        headers = bearer(key)
    else:
        user_id, headers = await user_token(api)

    async def change() -> None:
        if how in ("api key expires", "access token expires"):
            clock.set(clock.current + timedelta(hours=2))
        elif how == "access token revoked":
            token = headers["Authorization"].removeprefix("Bearer ")
            revoked = await api.post("/api/v1/auth/revoke", data={"token": token}, headers=ANON)
            assert revoked.status_code == 200
        elif how == "tenant disabled":
            off = await api.patch("/api/v1/tenants/acme", json={"disabled": True}, headers=PLATFORM)
            assert off.status_code == 200
        elif how == "user disabled":
            off = await api.patch(
                f"/api/v1/users/{user_id}", json={"disabled": True}, headers=HEADERS
            )
            assert off.status_code == 200
        elif how == "user deleted":
            assert (
                await api.delete(f"/api/v1/users/{user_id}", headers=HEADERS)
            ).status_code == 204
        else:
            demoted = await api.patch(
                f"/api/v1/users/{user_id}", json={"roles": ["event_producer"]}, headers=HEADERS
            )
            assert demoted.status_code == 200

    answer, ended = await tail_while(app, api, headers, change)
    assert ended, f"the stream went on after its credential stopped being valid: {how}"
    assert sse(answer) == [{"": messages.ENDED_COMMENT}]


async def test_a_tail_whose_credential_stays_valid_goes_on(
    app: Litestar, api: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(messages, "CHECK_SECONDS", 0.02)
    receiver = await make_receiver(api)
    _, headers = await user_token(api)
    recorded: list[str] = []

    async def record_some() -> None:
        for _ in range(5):
            answer = await api.post("/api/v1/events", json=event_body(receiver), headers=HEADERS)
            recorded.append(answer.json()["data"])
            await anyio.sleep(0.05)

    answer, ended = await tail_while(app, api, headers, record_some, within=0.5)
    assert not ended  # stopped by the server, not by a check
    assert sent_event_ids(answer) == recorded


async def test_the_credential_is_checked_per_batch_and_per_interval_not_per_message(
    app: Litestar, api: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks: list[float] = []
    valid = messages.Credential.valid

    async def counted(self: messages.Credential) -> bool:
        checks.append(anyio.current_time())
        return await valid(self)

    monkeypatch.setattr(messages.Credential, "valid", counted)
    await gate_that_completes(api)  # six messages
    replay = sse(await api.get("/api/v1/messages?after=0&follow=false", headers=HEADERS))
    assert (len(replay), len(checks)) == (6, 1)  # one batch, one check
    checks.clear()
    monkeypatch.setattr(messages, "POLL_SECONDS", 0.01)
    monkeypatch.setattr(messages, "CHECK_SECONDS", 0.1)

    async def idle() -> None:
        await anyio.sleep(0.6)

    _, ended = await tail_while(app, api, HEADERS, idle, within=0)
    assert not ended
    # about one check per 0.1 s over 0.9 s of polls every 0.01 s: far fewer than the polls
    assert 2 <= len(checks) <= 12
    assert all(b - a >= 0.1 for a, b in itertools.pairwise(checks))


# --- filters ----------------------------------------------------------------------------------


async def test_type_and_subject_filters_keep_positions_and_resume(api: Client) -> None:
    a, b, group = await gate_that_completes(api)
    every = sse(await api.get("/api/v1/messages?after=0&follow=false", headers=HEADERS))
    by_id = {e["id"]: decode_message(e["data"].encode()) for e in every}

    async def tail(query: str) -> list[tuple[str, str, str]]:
        found = sse(
            await api.get(f"/api/v1/messages?after=0&follow=false&{query}", headers=HEADERS)
        )
        for e in found:  # the same events, with the same ids (log positions), as unfiltered
            assert decode_message(e["data"].encode()) == by_id[e["id"]]
        return [(e["id"], by_id[e["id"]].type, by_id[e["id"]].subject) for e in found]

    assert [t for _, t, _ in await tail("type=ci.build")] == ["ci.build", "ci.build"]
    assert [(t, s) for _, t, s in await tail(f"subject={group}")] == [
        ("waypost.group.created", group),
        ("waypost.group.completed", group),
    ]
    both = await tail(f"type=waypost.group.completed&type=waypost.receiver.created&subject={b}")
    assert [(t, s) for _, t, s in both] == [("waypost.receiver.created", b)]
    assert [s for _, _, s in await tail(f"type=ci.build&subject={a}&subject={b}")] == [a, b]
    assert await tail("type=no.such.type") == []
    # resuming a filtered tail after its first event gives the rest of it
    builds = await tail("type=ci.build")
    rest = sse(
        await api.get(
            "/api/v1/messages?follow=false&type=ci.build",
            headers={**HEADERS, "Last-Event-ID": builds[0][0]},
        )
    )
    assert [e["id"] for e in rest] == [builds[1][0]]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("type=", "type"),
        ("type=" + "t" * 256, "type"),
        ("subject=nope", "subject"),
        ("subject=01j0000000000000000000000a", "subject"),  # ids are upper case
        ("&".join(["type=t"] * 101), "type"),
        ("&".join([f"subject={'0' * 26}"] * 101), "subject"),
    ],
)
async def test_a_filter_that_is_not_one_is_a_400(api: Client, query: str, field: str) -> None:
    answer = await api.get(f"/api/v1/messages?follow=false&{query}", headers=HEADERS)
    assert_problem(answer, 400, field)


async def test_filters_at_their_limits_are_accepted(api: Client) -> None:
    query = "&".join(
        [f"type={'t' * 255}"] + [f"type=t{n}" for n in range(99)] + [f"subject={'0' * 26}"] * 100
    )
    answer = await api.get(f"/api/v1/messages?after=0&follow=false&{query}", headers=HEADERS)
    assert sse(answer) == []


async def test_a_tail_whose_every_message_is_filtered_out_still_keeps_alive(
    app: Litestar, api: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(messages, "POLL_SECONDS", 0.01)
    monkeypatch.setattr(messages, "KEEPALIVE_SECONDS", 0.05)
    receiver = await make_receiver(api)

    async def busy() -> None:
        for _ in range(10):
            await api.post("/api/v1/events", json=event_body(receiver), headers=HEADERS)
            await anyio.sleep(0.02)

    answer, _ = await tail_while(app, api, HEADERS, busy, query="type=no.such.type", within=0)
    found = sse(answer)
    assert found
    assert all(e == {"": "keep-alive"} for e in found)


async def test_the_openapi_document_describes_the_filters_and_the_end(app: Litestar) -> None:
    operation = app.openapi_schema.to_schema()["paths"]["/api/v1/messages"]["get"]
    parameters = {p["name"]: p for p in operation["parameters"]}
    for name in ("type", "subject"):
        assert parameters[name]["in"] == "query"
        assert {"items": {"type": "string"}, "type": "array"} in parameters[name]["schema"]["oneOf"]
    assert "credential stops being valid" in operation["description"]
