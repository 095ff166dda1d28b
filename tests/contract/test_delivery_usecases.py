"""Subscriptions and delivery through the use cases, on every backend.

The target is a scripted `WebhookSender` (it answers what the test says and records what it
was sent): these tests are about what the registry decides and stores. Real targets on
loopback, over real HTTP, are in tests/integration/test_delivery_targets.py.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapters.crypto.envelope import generate_master_key, parse_master_key
from adapters.crypto.identity import EnvelopeSealer
from adapters.groupcommit import Lanes
from adapters.memory.cache import ReceiverLru
from adapters.system import UlidSource
from core.domain import signatures
from core.domain.commands import (
    CreateGroup,
    CreateSubscription,
    CreateTenant,
    PatchSubscription,
    RecordEvent,
    Redrive,
    RegisterReceiver,
    Replay,
    RotateSecret,
)
from core.domain.delivery import DeliveryEvent, DeliveryStatus, RetryPolicy, Verdict
from core.domain.errors import Invalid, NotFound
from core.domain.messages import decode_message
from core.domain.subscriptions import SubscriptionFilter, UrlPolicy
from core.ports import (
    AppendMeta,
    DeliveryStore,
    PageRequest,
    Store,
    WebhookAnswer,
    WebhookRequest,
)
from core.usecases import (
    Actor,
    Announcer,
    AttemptReport,
    Deliverer,
    DeliveryDeps,
    Deps,
    Dispatcher,
    Services,
)
from tests.backends import BACKENDS, open_store

pytestmark = pytest.mark.anyio

URL = "https://hooks.example.com/in"
SCHEDULE = (5.0, 30.0, 120.0)


class Clock:
    def __init__(self) -> None:
        self.now_ = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        self.now_ += timedelta(microseconds=1)
        return self.now_

    def advance(self, seconds: float) -> None:
        self.now_ += timedelta(seconds=seconds)


class HalfRandom:
    """Jitter in the middle: delays are the schedule's exactly."""

    def random(self) -> float:
        return 0.5

    def token_bytes(self, count: int) -> bytes:
        return os.urandom(count)


@dataclass
class Scripted:
    """A target that answers from `answers` (the last one again when they run out)."""

    answers: list[WebhookAnswer] = field(
        default_factory=lambda: [WebhookAnswer(status_code=200, duration_ms=1.0)]
    )
    sent: list[WebhookRequest] = field(default_factory=list)

    async def send(self, request: WebhookRequest) -> WebhookAnswer:
        self.sent.append(request)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    async def close(self) -> None:
        return None


def answer(code: int | None, **over: Any) -> WebhookAnswer:
    if code is None:
        return WebhookAnswer(
            status_code=None, duration_ms=3.0, failure="connect", error="refused", **over
        )
    return WebhookAnswer(status_code=code, duration_ms=2.0, excerpt="body", **over)


@dataclass
class World:
    services: Services
    deliveries: DeliveryStore
    clock: Clock
    target: Scripted
    dispatcher: Dispatcher
    deliverer: Deliverer
    announcer: Announcer
    actor: Actor
    receiver_id: str = ""

    async def record(self, *, success: bool = True, package: str = "rpm", **over: Any) -> str:
        body: dict[str, Any] = {
            "name": "shop",
            "version": "2.1.0",
            "release": "1",
            "platform_id": "x86_64",
            "package": package,
            "payload": {},
            "success": success,
            "event_receiver_id": self.receiver_id,
        }
        body.update(over)
        done = await self.services.events.record(self.actor, RecordEvent(**body))
        return done.id

    async def subscribe(self, **over: Any) -> str:
        cmd = CreateSubscription(**{"name": "hooks", "url": URL, **over})
        return (await self.services.subscriptions.create(self.actor, cmd)).id

    async def deliver(self, *, retries: bool = False, limit: int = 100) -> list[AttemptReport]:
        await self.dispatcher.dispatch_once()
        claimed = await self.deliverer.claim(limit=limit, retries=retries, in_flight={}, cap=100)
        return [await self.deliverer.attempt(c) for c in claimed]

    async def deliveries_of(self, subscription_id: str) -> list[Any]:
        return await self.services.subscriptions.deliveries(
            self.actor, subscription_id, None, PageRequest(limit=1000, order="asc")
        )


@pytest.fixture(params=BACKENDS)
async def world(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> AsyncIterator[World]:
    backend: str = request.param
    if backend == "postgres":
        request.applymarker(pytest.mark.postgres)
    async with _opened(backend, request, tmp_path) as (store, deliveries):
        clock = Clock()
        target = Scripted()
        deps = Deps(store, clock, UlidSource(), ReceiverLru(), combiner=Lanes())
        delivery = DeliveryDeps(
            deliveries,
            sealer=EnvelopeSealer([parse_master_key(generate_master_key())]),
            randomness=HalfRandom(),
            url_policy=UrlPolicy(),
            retry=RetryPolicy(schedule=SCHEDULE, disable_after=timedelta(hours=1)),
            sender=target,
            user_agent="Waypost/test",
        )
        services = Services(deps, delivery=delivery)
        tenant = await services.tenants.create(
            CreateTenant(slug="acme", name="Acme"), AppendMeta(actor="tests")
        )
        actor = Actor(tenant_id=tenant.id, principal="tests")
        receiver = await services.receivers.register(
            actor,
            RegisterReceiver(name="build", type="ci.build", version="1", schema={}),
        )
        yield World(
            services=services,
            deliveries=deliveries,
            clock=clock,
            target=target,
            dispatcher=Dispatcher(deps, delivery, services.messages, name="d1"),
            deliverer=Deliverer(deps, delivery, name="w1", lease=timedelta(seconds=30)),
            announcer=Announcer(deps, delivery),
            actor=actor,
            receiver_id=receiver[0].id,
        )


@asynccontextmanager
async def _opened(
    backend: str, request: pytest.FixtureRequest, tmp_path: pathlib.Path
) -> AsyncIterator[tuple[Store, DeliveryStore]]:
    async with open_store(backend, request, tmp_path) as store:
        deliveries: DeliveryStore
        if backend == "memory":
            from adapters.memory.delivery import MemoryDeliveries

            deliveries = MemoryDeliveries()
        else:
            from adapters.sql.delivery import SqlDeliveries
            from adapters.sql.store import SqlStore

            assert isinstance(store, SqlStore)
            url = (
                f"sqlite:///{tmp_path / 'waypost.db'}"
                if backend == "sqlite"
                else request.getfixturevalue("fresh_database")
            )
            deliveries = await SqlDeliveries.connect(url, share=store)
        try:
            yield store, deliveries
        finally:
            await deliveries.close()


# --- subscriptions ---------------------------------------------------------------------------


async def test_create_read_change_delete(world: World) -> None:
    subs = world.services.subscriptions
    ident = await world.subscribe(description="d", filter=SubscriptionFilter(types=("ci.build",)))
    made = await subs.get(world.actor, ident)
    assert (made.name, made.url, made.enabled, made.ordering) == ("hooks", URL, True, "none")
    changed = await subs.patch(world.actor, ident, PatchSubscription(name="renamed"))
    assert changed.name == "renamed"
    assert changed.updated_at > made.updated_at
    assert (await subs.get(world.actor, ident)).name == "renamed"
    assert [s.id for s in await subs.list(world.actor, PageRequest())] == [ident]
    other = Actor(tenant_id="someone-else", principal="x")
    with pytest.raises(NotFound):
        await subs.get(other, ident)
    with pytest.raises(Invalid):
        await subs.patch(world.actor, ident, PatchSubscription(url="http://10.0.0.1/"))
    await subs.delete(world.actor, ident)
    with pytest.raises(NotFound):
        await subs.delete(world.actor, ident)


async def test_a_url_the_policy_refuses_is_invalid(world: World) -> None:
    for url in ("http://example.com/", "https://127.0.0.1/", "https://2130706433/"):
        with pytest.raises(Invalid) as refused:
            await world.subscribe(url=url)
        assert refused.value.errors[0].field == "/url"


async def test_a_subscription_gets_what_is_committed_after_it_and_matches(world: World) -> None:
    await world.record()  # before: never sent
    wide = await world.subscribe()
    narrow = await world.subscribe(filter=SubscriptionFilter(success=False))
    ok = await world.record()
    failed = await world.record(success=False)
    await world.deliver()
    sent = [decode_message(r.body) for r in world.target.sent]
    assert [(m.type, m.data.events[0].id) for m in sent if m.data.events] == [
        ("ci.build", ok),
        ("ci.build", failed),
        ("ci.build", failed),
    ]
    assert [d.message_type for d in await world.deliveries_of(wide)] == ["ci.build", "ci.build"]
    assert len(await world.deliveries_of(narrow)) == 1


async def test_without_subscriptions_the_dispatcher_reads_no_log(world: World) -> None:
    store = world.services.deps.store
    opened = store.read
    reads: list[object] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        reads.append(args)
        return opened(*args, **kwargs)

    store.read = counted  # type: ignore[method-assign]
    try:
        await world.record()
        assert await world.dispatcher.dispatch_once() == 0
        assert (world.dispatcher.subscribed, reads) == (False, [])
        await world.subscribe()
        after = await world.record()
        assert await world.dispatcher.dispatch_once() == 1  # what came after the subscription
        assert world.dispatcher.subscribed
        assert reads
    finally:
        store.read = opened  # type: ignore[method-assign]
    await world.deliver()
    [sent] = [decode_message(r.body) for r in world.target.sent]
    assert sent.data.events[0].id == after


async def test_what_a_target_receives(world: World) -> None:
    ident = await world.subscribe()
    event_id = await world.record()
    [report] = await world.deliver()
    assert report.verdict == Verdict.SUCCESS
    assert report.event == DeliveryEvent.SUCCEED
    [request] = world.target.sent
    headers = dict(request.headers)
    assert request.url == URL
    assert request.timeout_seconds == 15
    assert [name for name, _ in request.headers] == [
        "Content-Type",
        "User-Agent",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    ]
    assert headers["Content-Type"] == "application/cloudevents+json"
    assert headers["User-Agent"] == "Waypost/test"
    message = decode_message(request.body)
    assert headers["webhook-id"] == message.id
    assert message.data.events[0].id == event_id
    secret = await world.services.subscriptions.secret(world.actor, ident)
    timestamp = int(headers["webhook-timestamp"])
    assert signatures.verify(
        secret,
        headers["webhook-id"],
        timestamp,
        request.body,
        headers["webhook-signature"],
        now=timestamp,
    )
    [delivery] = await world.deliveries_of(ident)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (
        DeliveryStatus.SUCCEEDED,
        1,
        200,
    )
    _, attempts = await world.services.subscriptions.delivery(world.actor, ident, delivery.id)
    assert [(a.number, a.status_code, a.response_excerpt) for a in attempts] == [(1, 200, "")]


async def test_failures_follow_the_schedule_then_die(world: World) -> None:
    ident = await world.subscribe()
    world.target.answers = [answer(500), answer(None), answer(302), answer(404)]
    await world.record()
    [first] = await world.deliver()
    assert (first.event, first.status_code) == (DeliveryEvent.RETRY, 500)
    assert first.next_attempt_at is not None
    for n, delay in enumerate(SCHEDULE, start=2):
        assert await world.deliver(retries=True) == []  # not due yet
        world.clock.advance(delay)
        [report] = await world.deliver(retries=True)
        assert report.number == n
    assert report.event == DeliveryEvent.GIVE_UP
    [dead] = await world.deliveries_of(ident)
    assert (dead.status, dead.attempts, dead.next_attempt_at) == (DeliveryStatus.DEAD, 4, None)
    assert dead.last_error == "HTTP 404"
    _, attempts = await world.services.subscriptions.delivery(world.actor, ident, dead.id)
    assert [a.status_code for a in attempts] == [500, None, 302, 404]
    assert attempts[1].error == "refused"
    ids = {dict(r.headers)["webhook-id"] for r in world.target.sent}
    assert len(ids) == 1  # the same message id on every attempt
    stamps = [int(dict(r.headers)["webhook-timestamp"]) for r in world.target.sent]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == 4  # a fresh timestamp each time


async def test_retry_after_is_honoured(world: World) -> None:
    await world.subscribe()
    world.target.answers = [answer(429, retry_after="60"), answer(200)]
    await world.record()
    [first] = await world.deliver()
    assert first.next_attempt_at is not None
    world.clock.advance(30)
    assert await world.deliver(retries=True) == []  # the schedule says 5 s; the target 60
    world.clock.advance(31)
    [second] = await world.deliver(retries=True)
    assert second.event == DeliveryEvent.SUCCEED


async def test_410_disables_announces_once_and_enabling_resumes(world: World) -> None:
    ident = await world.subscribe()
    watcher = await world.subscribe(
        filter=SubscriptionFilter(types=("waypost.subscription.disabled",))
    )
    world.target.answers = [answer(410), answer(200)]
    await world.record()
    [gone] = await world.deliver()
    assert (gone.event, gone.disabled) == (DeliveryEvent.HOLD, "the target answered 410 Gone")
    disabled = await world.services.subscriptions.get(world.actor, ident)
    assert not disabled.enabled
    assert disabled.disabled_reason == "the target answered 410 Gone"
    await world.record()  # while disabled: kept, waiting
    assert await world.deliver() == []
    assert [s.id for s in await world.announcer.announce_once()] == [ident]
    assert await world.announcer.announce_once() == []
    await world.deliver()
    announced = [decode_message(r.body) for r in world.target.sent[1:]]
    assert [(m.type, m.subject) for m in announced] == [("waypost.subscription.disabled", ident)]
    assert len(await world.deliveries_of(watcher)) == 1
    enabled = await world.services.subscriptions.patch(
        world.actor, ident, PatchSubscription(enabled=True)
    )
    assert enabled.disabled_reason is None
    first = await world.deliver(retries=True)
    rest = await world.deliver()
    assert {r.event for r in first + rest} == {DeliveryEvent.SUCCEED}
    assert len(first + rest) == 3  # the 410'd one, the one that waited, its own disable
    statuses = [d.status for d in await world.deliveries_of(ident)]
    assert statuses == [DeliveryStatus.SUCCEEDED] * 3


async def test_failing_for_too_long_disables(world: World) -> None:
    ident = await world.subscribe()
    world.target.answers = [answer(500)]
    await world.record()
    await world.deliver()
    reports = []
    for _ in range(3):
        world.clock.advance(1800)
        await world.record()
        reports += await world.deliver() + await world.deliver(retries=True)
    assert [r.disabled is not None for r in reports].count(True) == 1
    disabled = await world.services.subscriptions.get(world.actor, ident)
    assert not disabled.enabled
    assert disabled.disabled_reason is not None
    assert "without a success" in disabled.disabled_reason


async def test_a_ping_reaches_its_subscription_only(world: World) -> None:
    ident = await world.subscribe(filter=SubscriptionFilter(types=("nothing",)))
    other = await world.subscribe()
    message_id = await world.services.subscriptions.ping(world.actor, ident)
    await world.deliver()
    [request] = world.target.sent
    message = decode_message(request.body)
    assert (message.id, message.type, message.subject) == (
        message_id,
        "waypost.subscription.ping",
        ident,
    )
    assert await world.deliveries_of(other) == []


async def test_replay_queues_matching_messages_after_a_position(world: World) -> None:
    early = [await world.record(), await world.record(success=False)]
    ident = await world.subscribe(filter=SubscriptionFilter(success=True))
    await world.record()
    await world.deliver()
    assert len(world.target.sent) == 1
    queued = await world.services.subscriptions.replay(world.actor, ident, Replay(after=0))
    assert queued == 2  # the early success and the one sent already, again
    await world.deliver(retries=True)
    await world.deliver()
    sent = [decode_message(r.body).data.events[0].id for r in world.target.sent]
    assert sent[0] != early[0]
    assert sorted(sent[1:]) == sorted([early[0], sent[0]])
    with pytest.raises(Invalid):
        await world.services.subscriptions.replay(world.actor, ident, Replay(after=-1))


async def test_redrive_sends_dead_deliveries_again(world: World) -> None:
    ident = await world.subscribe()
    world.target.answers = [answer(500)] * 4 + [answer(200)]
    await world.record()
    await world.deliver()
    for delay in SCHEDULE:
        world.clock.advance(delay)
        await world.deliver(retries=True)
    [dead] = await world.deliveries_of(ident)
    assert dead.status == DeliveryStatus.DEAD
    requeued = await world.services.subscriptions.redrive(world.actor, ident, Redrive())
    assert requeued == 1
    [again] = await world.deliver(retries=True)
    assert again.event == DeliveryEvent.SUCCEED
    assert again.number == 5
    with pytest.raises(Invalid):
        await world.services.subscriptions.redrive(
            world.actor,
            ident,
            Redrive(since=world.clock.now(), until=world.clock.now() - timedelta(seconds=1)),
        )


async def test_rotation_signs_with_both_secrets_during_its_grace(world: World) -> None:
    ident = await world.subscribe()
    subs = world.services.subscriptions
    old = await subs.secret(world.actor, ident)
    new = await subs.rotate(world.actor, ident, RotateSecret(grace_seconds=600))
    assert new != old
    assert await subs.secret(world.actor, ident) == new
    await world.record()
    await world.deliver()
    [request] = world.target.sent
    headers = dict(request.headers)
    entries = headers["webhook-signature"].split(" ")
    assert len(entries) == 2
    stamp = int(headers["webhook-timestamp"])
    for secret in (old, new):
        assert signatures.verify(
            secret, headers["webhook-id"], stamp, request.body, " ".join(entries), now=stamp
        )
    world.clock.advance(601)
    await world.record()
    await world.deliver()
    late = dict(world.target.sent[-1].headers)
    assert " " not in late["webhook-signature"]
    with pytest.raises(Invalid):
        await subs.rotate(world.actor, ident, RotateSecret(grace_seconds=-1))


async def test_deleting_a_subscription_stops_its_deliveries(world: World) -> None:
    ident = await world.subscribe()
    await world.record()
    await world.dispatcher.dispatch_once()
    claimed = await world.deliverer.claim(limit=10, retries=False, in_flight={}, cap=10)
    await world.services.subscriptions.delete(world.actor, ident)
    [report] = [await world.deliverer.attempt(c) for c in claimed]
    assert not report.applied  # the attempt was made; nothing of it is kept
    await world.record()
    assert await world.deliver() == []


async def test_ordering_artifact_keeps_log_order_under_retries(world: World) -> None:
    ident = await world.subscribe(ordering="artifact")
    world.target.answers = [answer(500), answer(200)]
    first = await world.record(payload={"n": 1})
    other = await world.record(package="deb")
    second = await world.record(payload={"n": 2})
    reports = await world.deliver()
    assert [r.event for r in reports] == [DeliveryEvent.RETRY, DeliveryEvent.SUCCEED]
    world.clock.advance(5)
    await world.deliver()  # `second` still waits behind `first`
    await world.deliver(retries=True)
    await world.deliver()
    order = [decode_message(r.body).data.events[0].id for r in world.target.sent]
    assert order == [first, other, first, second]
    assert len(await world.deliveries_of(ident)) == 3


async def test_the_breaker_holds_a_failing_target_back(world: World) -> None:
    await world.subscribe()
    world.target.answers = [answer(500)]
    for _ in range(12):
        await world.record()
    reports = await world.deliver(limit=12)
    assert len(reports) == 12
    sent = len(world.target.sent)
    assert sent == 10  # the breaker opened after ten failures of ten
    assert {r.event for r in reports[10:]} == {DeliveryEvent.RELEASE}
    world.clock.advance(5)
    assert await world.deliver(retries=True) == []  # open: nothing is claimed
    world.clock.advance(15)
    probe = await world.deliver(retries=True)
    assert len(probe) == 1  # half-open: one probe


async def test_a_lapsed_lease_is_delivered_again_with_the_same_message_id(world: World) -> None:
    await world.subscribe()
    await world.record()
    await world.dispatcher.dispatch_once()
    [lost] = await world.deliverer.claim(limit=1, retries=False, in_flight={}, cap=1)
    world.clock.advance(31)
    assert await world.deliverer.expire() == 1
    [report] = await world.deliver()
    assert report.message_id == lost.delivery.message_id
    late = await world.deliverer.attempt(lost)
    assert not late.applied


async def test_groups_complete_and_their_message_is_delivered(world: World) -> None:
    subs = world.services.subscriptions
    group = await world.services.groups.create(
        world.actor,
        CreateGroup(name="gate", type="gate", version="1", event_receiver_ids=[world.receiver_id]),
    )
    ident = await world.subscribe(filter=SubscriptionFilter(types=("waypost.group.completed",)))
    await world.record()
    await world.deliver()
    [request] = world.target.sent
    message = decode_message(request.body)
    assert (message.type, message.subject) == ("waypost.group.completed", group.id)
    assert (
        len(await subs.deliveries(world.actor, ident, DeliveryStatus.SUCCEEDED, PageRequest())) == 1
    )
