"""Idempotency-Key on POST, over the HTTP app: replay, refusal of another request, a
concurrent duplicate waiting for the first, every POST route that writes, expiry.

The records' own contract (every backend) is tests/contract/test_idempotency.py; the
same key sent to several server processes, with a crash in between, is
tests/e2e/test_processes.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import anyio
import httpx
import pytest
from litestar import Litestar

from adapters.memory.identity import MemoryIdentity
from adapters.memory.store import MemoryStore
from core.domain.access import Role
from core.domain.idempotency import RETENTION
from core.ports import WriteTx
from tests.http.conftest import (
    HEADERS,
    OTHER_HEADERS,
    PLATFORM,
    TENANT,
    Client,
    ManualClock,
    add_tenants,
    asgi_client,
    assert_problem,
    event_body,
    make_app,
    make_receiver,
    platform_identity,
    receiver_body,
    seed_key,
    services_of,
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
    group = {"name": "g", "type": "t", "version": "1", "description": "",
             "event_receiver_ids": [receiver]}  # fmt: skip
    elsewhere = await api.post("/api/v1/groups", json=group, headers=keyed("k"))
    assert_problem(elsewhere, 422, "Idempotency-Key")
    # The body is read first: a malformed one is a 400 whatever its key.
    malformed = await api.post("/api/v1/groups", json={}, headers=keyed("k"))
    assert_problem(malformed, 400)


async def test_a_refusal_leaves_no_record_and_the_key_can_be_used_again(api: Client) -> None:
    """Nothing was committed, so nothing is remembered: the same request is decided again,
    and once it can be written (here: its receiver exists by then) it is."""
    missing = "01J00000000000000000000000"
    refused = await api.post(EVENTS, json=event_body(missing), headers=keyed("bad"))
    again = await api.post(EVENTS, json=event_body(missing), headers=keyed("bad"))
    assert_problem(refused, 422, "/event_receiver_id")
    assert_problem(again, 422, "/event_receiver_id")
    assert "idempotent-replayed" not in again.headers
    receiver = await make_receiver(api)
    created = await api.post(EVENTS, json=event_body(receiver), headers=keyed("bad"))
    assert created.status_code == 201


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
    """Holds the next write open, inside its transaction, until the test releases it."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.entered = anyio.Event()
        self.release = anyio.Event()

    @asynccontextmanager
    async def write(self, tenant_id: str) -> AsyncIterator[WriteTx]:  # type: ignore[override]
        async with super().write(tenant_id) as tx:
            if self.armed:
                self.armed = False
                self.entered.set()
                await self.release.wait()
            yield tx


async def test_the_same_key_while_the_first_runs_waits_and_replays() -> None:
    """The duplicate waits for the first one's transaction (the tenant's writer lock), then
    finds its record: one event, the same answer twice."""
    store = GatedStore()
    identity = await platform_identity()
    async with asgi_client(make_app(identity, store=store)) as http:
        await add_tenants(http, identity, TENANT)
        receiver = await http.post("/api/v1/receivers", json=receiver_body(), headers=HEADERS)
        body = event_body(receiver.json()["data"])
        answers: list[httpx.Response] = []

        async def send() -> None:
            answers.append(await http.post(EVENTS, json=body, headers=keyed("slow")))

        store.armed = True
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(send)
            with anyio.fail_after(5):
                await store.entered.wait()
            tasks.start_soon(send)
            await anyio.sleep(0.05)
            assert len(answers) == 0  # the duplicate waits
            store.release.set()
        first, second = answers
        assert first.status_code == second.status_code == 201
        assert first.content == second.content
        assert second.headers["idempotent-replayed"] == "true"
        listed = await http.get(EVENTS, headers=HEADERS)
        assert len(listed.json()["data"]) == 1


class CountedStore(GatedStore):
    """A `GatedStore` that counts its write transactions."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    @asynccontextmanager
    async def write(self, tenant_id: str) -> AsyncIterator[WriteTx]:  # type: ignore[override]
        self.writes += 1
        async with super().write(tenant_id) as tx:
            yield tx


async def test_concurrent_keyed_requests_share_a_transaction_each_with_its_record() -> None:
    """Keyed requests that arrive while the tenant's transaction runs are combined into the
    next one (group commit), each request's record with its own event: one transaction for
    all, then each replays its own first answer. A group with a duplicate key or a key
    reused for another body fails before its commit and its members are made alone: the
    duplicate replays, the reused key is a 422, the others are stored once."""
    store = CountedStore()
    identity = await platform_identity()
    async with asgi_client(make_app(identity, store=store)) as http:
        await add_tenants(http, identity, TENANT)
        made = await http.post("/api/v1/receivers", json=receiver_body(), headers=HEADERS)
        receiver = made.json()["data"]

        async def together(
            requests: dict[str, tuple[dict[str, object], str | None]],
        ) -> tuple[dict[str, httpx.Response], int]:
            """The requests, sent while another write holds the tenant's transaction; their
            answers and the write transactions they took."""
            answers: dict[str, httpx.Response] = {}

            async def send(name: str, body: dict[str, object], key: str | None) -> None:
                headers = HEADERS if key is None else keyed(key)
                answers[name] = await http.post(EVENTS, json=body, headers=headers)

            store.armed = True
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(send, "holder", event_body(receiver, release="0"), None)
                with anyio.fail_after(5):
                    await store.entered.wait()
                before = store.writes
                for name, (body, key) in requests.items():
                    tasks.start_soon(send, name, body, key)
                await anyio.sleep(0.1)
                assert set(answers) == set()  # every one waits for the holder's transaction
                store.entered = anyio.Event()
                store.release.set()
            store.release = anyio.Event()
            return answers, store.writes - before

        first, writes = await together(
            {
                f"k{n}": (event_body(receiver, release=str(n)), f"key-{n}" if n else None)
                for n in range(1, 6)
            }
        )
        assert writes == 1  # all five in one transaction
        assert {name: a.status_code for name, a in first.items()} == dict.fromkeys(first, 201)
        for n in range(1, 6):
            again = await http.post(
                EVENTS, json=event_body(receiver, release=str(n)), headers=keyed(f"key-{n}")
            )
            assert again.status_code == 201
            assert again.content == first[f"k{n}"].content
            assert again.headers["idempotent-replayed"] == "true"

        second, writes = await together(
            {
                "new": (event_body(receiver, release="6"), "key-6"),
                "twin": (event_body(receiver, release="6"), "key-6"),
                "replay": (event_body(receiver, release="1"), "key-1"),
                "reused": (event_body(receiver, release="other"), "key-2"),
                "plain": (event_body(receiver, release="7"), None),
            }
        )
        assert writes == 1 + 5  # the group, then each member alone
        assert second["new"].status_code == second["twin"].status_code == 201
        assert second["twin"].content == second["new"].content
        replayed = [n for n in ("new", "twin") if "idempotent-replayed" in second[n].headers]
        assert len(replayed) == 1  # whichever came second
        assert second["replay"].content == first["k1"].content
        assert second["replay"].headers["idempotent-replayed"] == "true"
        assert_problem(second["reused"], 422, "Idempotency-Key")
        assert second["plain"].status_code == 201
        listed = await http.get(EVENTS, headers=HEADERS, params={"limit": 100})
        releases = sorted(e["release"] for e in listed.json()["data"])
        assert releases == sorted(["0", "0", "1", "2", "3", "4", "5", "6", "7"])


async def test_every_post_that_writes_replays(api: Client, identity: MemoryIdentity) -> None:
    """Each route: the same request twice writes once and answers the same, replayed."""
    receiver = await make_receiver(api)
    cases: list[tuple[str, dict[str, object], dict[str, str], str]] = [
        (EVENTS, event_body(receiver), HEADERS, EVENTS),
        (
            "/api/v1/events/batch",
            {"events": [event_body(receiver), event_body(receiver)]},
            HEADERS,
            EVENTS,
        ),
        ("/api/v1/receivers", receiver_body("other"), HEADERS, "/api/v1/receivers"),
        (
            "/api/v1/groups",
            {
                "name": "gate",
                "type": "release",
                "version": "1",
                "description": "",
                "event_receiver_ids": [receiver],
            },
            HEADERS,
            "/api/v1/groups",
        ),
        ("/api/v1/tenants", {"slug": "initech", "name": "Initech"}, PLATFORM, "/api/v1/tenants"),
        (
            "/api/v1/users",
            {"username": "dana", "password": "a long enough secret", "roles": ["event_viewer"]},
            HEADERS,
            "/api/v1/users",
        ),
    ]
    for path, body, headers, listing in cases:
        before = len((await api.get(listing, headers=headers)).json()["data"])
        first = await api.post(path, json=body, headers=keyed(f"k{path}", headers))
        again = await api.post(path, json=body, headers=keyed(f"k{path}", headers))
        after = len((await api.get(listing, headers=headers)).json()["data"])
        assert first.status_code == 201, (path, first.text)
        assert (again.status_code, again.content) == (first.status_code, first.content), path
        assert again.headers.get("location") == first.headers.get("location"), path
        assert again.headers["idempotent-replayed"] == "true", path
        assert after - before == (2 if path.endswith("batch") else 1), path


async def test_an_identical_receiver_answer_is_replayed_as_it_was(api: Client) -> None:
    await make_receiver(api)
    first = await api.post("/api/v1/receivers", json=receiver_body(), headers=keyed("same"))
    again = await api.post("/api/v1/receivers", json=receiver_body(), headers=keyed("same"))
    assert first.status_code == again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"


async def test_a_new_api_key_is_never_stored_a_retry_learns_which_key_was_made(
    api: Client,
) -> None:
    body = {"name": "ci", "role": "event_producer"}
    first = await api.post("/api/v1/api-keys", json=body, headers=keyed("key"))
    assert first.status_code == 201
    made = first.json()["data"]
    again = await api.post("/api/v1/api-keys", json=body, headers=keyed("key"))
    problem = assert_problem(again, 409, "Idempotency-Key")
    assert made["id"] in problem["detail"]
    assert made["key"] not in again.text
    assert again.headers["location"] == f"/api/v1/api-keys/{made['id']}"
    assert again.headers["idempotent-replayed"] == "true"
    keys = (await api.get("/api/v1/api-keys", headers=HEADERS)).json()["data"]
    assert [k["id"] for k in keys if k["name"] == "ci"] == [made["id"]]


async def test_a_key_is_one_key_across_routes(api: Client) -> None:
    """A key used for a user is reused on another route: 422, as on the SQL backends
    (the memory stores share one set of records)."""
    user = {"username": "erin", "password": "a long enough secret", "roles": ["event_viewer"]}
    assert (await api.post("/api/v1/users", json=user, headers=keyed("one"))).status_code == 201
    other = await api.post("/api/v1/receivers", json=receiver_body(), headers=keyed("one"))
    assert_problem(other, 422, "Idempotency-Key")


async def test_a_record_expires_after_a_day_and_retention_deletes_it(
    api: Client, clock: ManualClock, app: Litestar
) -> None:
    receiver = await make_receiver(api)
    first = await api.post(EVENTS, json=event_body(receiver), headers=keyed("day"))
    clock.set(clock.current + RETENTION - timedelta(seconds=1))
    replayed = await api.post(EVENTS, json=event_body(receiver), headers=keyed("day"))
    assert replayed.content == first.content
    services = services_of(app)
    assert await services.retention.purge_idempotency() == 0  # still live: never evicted
    clock.set(clock.current + timedelta(seconds=2))
    fresh = await api.post(EVENTS, json=event_body(receiver), headers=keyed("day"))
    assert fresh.status_code == 201
    assert fresh.content != first.content
    assert "idempotent-replayed" not in fresh.headers
    clock.set(clock.current + RETENTION)
    assert await services.retention.purge_idempotency() >= 1


#: POST routes that take no Idempotency-Key claim, and why.
UNCLAIMED = {
    "/api/v1/auth/token": "its answer is a credential: never stored",
    "/api/v1/auth/revoke": "idempotent by itself: revoking twice is revoking once",
    "/api/v1/graphql": "a document may hold several mutations: no one write to tie a key to",
    "/api/v1/graphql/query": "GraphQL at EPR's path (as /api/v1/graphql)",
    "/epr/api/v1/graphql/query": "GraphQL for EPR's clients (as /api/v1/graphql)",
}
#: Prefixes of POST routes that take none either, and why.
UNCLAIMED_UNDER = {
    "/console/": "the console's forms: a browser sends a form once, guarded by its CSRF token",
}


def test_every_post_route_takes_the_claim() -> None:
    """Walked from the app's routes: a POST route added later either hands its use case the
    request's claim (marked `IDEMPOTENT`, reading `claim_of`) or is on the lists above with
    its reason; a route that takes it has IdempotencyMiddleware, one that does not never
    reads a key."""
    import inspect

    from litestar.routes import HTTPRoute

    from entrypoints.http.idempotency import IdempotencyMiddleware, takes_claim
    from tests.http.test_access_control import APP

    posts = {
        route.path_format: handler
        for route in APP.routes
        if isinstance(route, HTTPRoute)
        for handler in route.route_handlers
        if "POST" in handler.http_methods
    }
    assert set(posts) >= set(UNCLAIMED)

    def unclaimed(path: str) -> bool:
        return path in UNCLAIMED or path.startswith(tuple(UNCLAIMED_UNDER))

    missing = [
        path for path, handler in posts.items() if not unclaimed(path) and not takes_claim(handler)
    ]
    assert not missing, f"POST routes that ignore Idempotency-Key: {missing}"
    # The mark and the reading go together: a marked route that never read the claim
    # would check a key and then write again; one that read it unmarked would never get one.
    for path, handler in posts.items():
        reads = "claim_of(" in inspect.getsource(handler.fn)
        assert reads == takes_claim(handler), path
    claimed = [path for path in posts if not unclaimed(path)]
    assert len(claimed) >= 10  # /api/v1's writes and /epr's creates
    for path, handler in posts.items():
        guarded = IdempotencyMiddleware in handler.resolve_middleware()
        assert guarded == (path in claimed), path
