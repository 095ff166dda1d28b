"""Every method of the SDK against the real app (in-process server, real HTTP)."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from waypost_client import (
    AsyncClient,
    Client,
    Conflict,
    Forbidden,
    GateTimeout,
    NotFound,
    Nvrpp,
    Unprocessable,
)

from tests.client.conftest import QUICK, Served

SCHEMA = {"type": "object", "properties": {"build": {"type": "integer"}}, "required": ["build"]}
_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}-{uuid.uuid4().hex[:6]}"


def key(version: str = "1.0") -> Nvrpp:
    return Nvrpp("app", version, "1", "x86_64", "rpm")


def event(receiver: str, k: Nvrpp, success: bool = True) -> dict[str, Any]:
    return {**k.params(), "description": "", "payload": {"build": 1}, "success": success,
            "event_receiver_id": receiver}  # fmt: skip


def test_receivers_register_idempotently_read_find_and_list(acme: Client) -> None:
    name = unique("build")
    made = acme.create_receiver(name, "ci.build", "1", description="Builds", schema=SCHEMA)
    again = acme.create_receiver(name, "ci.build", "1", description="Builds", schema=SCHEMA)
    assert again == made
    with pytest.raises(Conflict) as refused:
        acme.create_receiver(name, "ci.build", "1", description="Other", schema=SCHEMA)
    assert refused.value.status == 409
    receiver = acme.get_receiver(made)
    assert (receiver.name, receiver.type, receiver.version) == (name, "ci.build", "1")
    assert receiver.schema == SCHEMA
    assert len(receiver.fingerprint) == 64
    assert acme.find_receiver(f"{name}@1") == receiver
    assert acme.find_receiver(made) == receiver
    with pytest.raises(NotFound):
        acme.find_receiver(f"{name}@2")
    assert [r.id for r in acme.list_receivers(name=name)] == [made]


def test_lists_follow_next_cursor(acme: Client) -> None:
    receiver = acme.create_receiver(unique("paged"), "ci.paged", "1", schema=SCHEMA)
    k = key(unique("v"))
    ids = acme.create_events([event(receiver, k) for _ in range(7)])
    listed = [e.id for e in acme.list_events(version=k.version, limit=2, order="asc")]
    assert listed == ids  # four pages of at most two
    newest_first = [e.id for e in acme.list_events(event_receiver_id=receiver, limit=3)]
    assert newest_first == ids[::-1]


def test_events_one_batch_get_and_filters(acme: Client) -> None:
    receiver = acme.create_receiver(unique("test"), "ci.test", "1", schema=SCHEMA)
    k = key(unique("v"))
    one = acme.create_event(
        **k.params(), event_receiver_id=receiver, success=False, payload={"build": 2}
    )
    got = acme.get_event(one)
    assert got.key == k
    assert got.success is False
    assert got.payload == {"build": 2}
    batch = acme.create_events([event(receiver, k), event(receiver, k)])
    assert len(batch) == 2
    failed = list(acme.list_events(version=k.version, success=False))
    assert [e.id for e in failed] == [one]
    since = list(acme.list_events(version=k.version, since=got.created_at, order="asc"))
    assert [e.id for e in since] == [one, *batch]
    with pytest.raises(Unprocessable) as refused:
        acme.create_events([event(receiver, k), {**event(receiver, k), "payload": {"build": "x"}}])
    assert refused.value.errors
    assert refused.value.errors[0].field.startswith("/events/1")
    with pytest.raises(ValueError, match="1 to 1000"):
        acme.create_events([])


def test_groups_status_completions_enable_disable_delete(acme: Client) -> None:
    build = acme.create_receiver(unique("b"), "ci.b", "1", schema=SCHEMA)
    test = acme.create_receiver(unique("t"), "ci.t", "1", schema=SCHEMA)
    name = unique("release")
    group = acme.create_group(name, "gate", "1", [build, test], description="The gate")
    assert acme.get_group(group).event_receiver_ids == [build, test]
    assert acme.find_group(f"{name}@1").id == group
    assert [g.id for g in acme.list_groups(name=name, enabled=True)] == [group]
    k = key(unique("v"))
    acme.create_event(**k.params(), event_receiver_id=build, success=True, payload={"build": 1})
    status = acme.group_status(group, k)
    assert status.complete is False
    assert [m.passing for m in status.members] == [True, False]
    assert status.members[0].latest_event is not None
    acme.create_event(**k.params(), event_receiver_id=test, success=True, payload={"build": 1})
    assert acme.group_status(group, k, wait=5).complete is True
    [completion] = acme.list_completions(group, version=k.version)
    assert completion.group_id == group
    assert completion.version == k.version
    assert acme.disable_group(group).enabled is False
    assert acme.enable_group(group).enabled is True
    other = acme.create_receiver(unique("s"), "ci.s", "1", schema=SCHEMA)
    changed = acme.update_group(group, add_receiver_ids=[other], description="Three")
    assert changed.event_receiver_ids == [build, test, other]
    assert changed.description == "Three"
    acme.delete_group(group)
    with pytest.raises(NotFound):
        acme.get_group(group)


def test_wait_for_gate_returns_when_it_completes_and_times_out_otherwise(acme: Client) -> None:
    build = acme.create_receiver(unique("b"), "ci.b", "1", schema=SCHEMA)
    group = acme.create_group(unique("g"), "gate", "1", [build])
    k = key(unique("v"))
    started = time.monotonic()
    with pytest.raises(GateTimeout) as late:
        acme.wait_for_gate(group, k, timeout=1.5)
    assert 1.4 <= time.monotonic() - started < 10
    assert late.value.status.complete is False

    def complete_soon() -> None:
        time.sleep(0.5)
        with Client(acme.config.url, acme.config.api_key) as other:
            other.create_event(**k.params(), event_receiver_id=build, success=True,
                               payload={"build": 1})  # fmt: skip

    thread = threading.Thread(target=complete_soon)
    thread.start()
    status = acme.wait_for_gate(group, k, timeout=30)
    thread.join()
    assert status.complete is True


def test_messages_follow_false_reads_the_log(acme: Client) -> None:
    receiver = acme.create_receiver(unique("m"), "ci.m", "1", schema=SCHEMA)
    messages = list(acme.messages(0))
    assert messages, "the log has messages"
    positions = [m.position for m in messages]
    assert positions == sorted(positions)
    created = [m for m in messages if m.subject == receiver]
    assert created
    assert created[0].type == "waypost.receiver.created"
    tail = list(acme.messages(positions[-2]))
    assert [m.position for m in tail] == positions[-1:]


def test_tenants_identity_and_operations(served: Served) -> None:
    with Client(served.url, served.platform_key, retry=QUICK) as platform:
        slug = f"t{uuid.uuid4().hex[:8]}"
        assert platform.create_tenant(slug, "Tee") == slug
        assert platform.get_tenant(slug).name == "Tee"
        assert slug in [t.slug for t in platform.list_tenants()]
        assert platform.update_tenant(slug, name="Tea").name == "Tea"
        assert platform.live() == {"status": "ok"}
        assert platform.ready()["status"] == "ok"
        assert platform.jwks()["keys"]
    with served.client() as admin:
        made = admin.create_api_key(unique("ci"), "event_producer")
        assert made.key.startswith("wp_")
        assert admin.get_api_key(made.id).role == "event_producer"
        assert made.id in [k.id for k in admin.list_api_keys()]
        token = admin.exchange_api_key(made.key)
        assert token.token_type == "Bearer"
        assert token.expires_in > 0
        with Client(served.url, token.access_token, retry=QUICK) as bearer:
            assert list(bearer.list_receivers(limit=1)) is not None
        with Client(served.url, made.key, retry=QUICK) as producer, pytest.raises(Forbidden):
            producer.create_receiver(unique("x"), "x", "1")
        admin.delete_api_key(made.id)
        assert admin.get_api_key(made.id).revoked_at is not None

        username = unique("alice")
        user = admin.create_user(username, "correct horse battery staple", ["event_viewer"])
        assert admin.get_user(user).username == username
        assert user in [u.id for u in admin.list_users()]
        assert admin.update_user(user, roles=["event_manager"]).roles == ["event_manager"]
        logged = admin.login(username, "correct horse battery staple", tenant="acme")
        refreshed = admin.refresh_token(logged.refresh_token or "")
        assert refreshed.access_token != logged.access_token
        admin.revoke_token(refreshed.access_token)
        admin.delete_user(user)
        with pytest.raises(NotFound):
            admin.get_user(user)


def test_username_and_password_log_in_and_refresh_before_expiry(served: Served) -> None:
    with served.client() as admin:
        username = unique("bob")
        admin.create_user(username, "correct horse battery staple", ["event_manager"])
    with Client(
        served.url,
        username=username,
        password="correct horse battery staple",
        tenant="acme",
        retry=QUICK,
    ) as bob:
        assert list(bob.list_receivers(limit=1)) is not None
        first = bob._credentials.token
        assert first is not None
        bob._credentials._refresh_at = 0  # as if 80 % of its life had passed
        list(bob.list_receivers(limit=1))
        assert bob._credentials.token is not first  # refreshed, not logged in again
        bob._credentials.forget()
        list(bob.list_receivers(limit=1))  # logs in again


def test_subscriptions_methods_reach_their_routes(acme: Client) -> None:
    """The server of this branch has no subscriptions yet: every method reaches its route
    and gets the server's 404 (with a server that has them, tests/e2e covers them)."""
    sid = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
    calls: list[Callable[[], object]] = [
        lambda: acme.create_subscription("hook", "https://example.invalid/hook"),
        lambda: acme.get_subscription(sid),
        lambda: list(acme.list_subscriptions()),
        lambda: acme.update_subscription(sid, enabled=True),
        lambda: acme.delete_subscription(sid),
        lambda: acme.subscription_secret(sid),
        lambda: acme.rotate_subscription_secret(sid, grace_seconds=60),
        lambda: list(acme.list_deliveries(sid, status="dead")),
        lambda: acme.get_delivery(sid, sid),
        lambda: acme.redrive(sid),
        lambda: acme.replay(sid, after=0),
        lambda: acme.ping(sid),
    ]
    for call in calls:
        with pytest.raises(NotFound):
            call()


def test_the_async_client_has_the_same_methods(served: Served) -> None:
    sync_methods = {n for n in dir(Client) if not n.startswith("_")} - {"close"}
    async_methods = {n for n in dir(AsyncClient) if not n.startswith("_")} - {"aclose"}
    assert sync_methods == async_methods

    async def scenario() -> None:
        async with AsyncClient(served.url, served.acme_key, retry=QUICK) as acme:
            build = await acme.create_receiver(unique("ab"), "ci.ab", "1", schema=SCHEMA)
            assert (await acme.find_receiver(build)).id == build
            group = await acme.create_group(unique("ag"), "gate", "1", [build])
            k = key(unique("v"))
            done: list[bool] = []

            async def wait() -> None:
                done.append((await acme.wait_for_gate(group, k, timeout=30)).complete)

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(wait)
                await anyio.sleep(0.3)
                await acme.create_events([event(build, k)])
            assert done == [True]
            listed = [e.id async for e in acme.list_events(version=k.version, limit=1)]
            assert len(listed) == 1
            assert [c.group_id async for c in acme.list_completions(group)] == [group]
            messages = [m async for m in acme.messages(0)]
            assert any(m.subject == build for m in messages)
            assert (await acme.disable_group(group)).enabled is False
            with pytest.raises(NotFound):
                await acme.get_event("01ARZ3NDEKTSV4RRFFQ69G5FAV")

    anyio.run(scenario)
