"""Webhooks to real targets on loopback, through the bootstrap's services and the running
delivery loops (dispatcher, deliverers, announcer), with the real sender and its guard."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any

import anyio
import msgspec
import pytest
from standardwebhooks import Webhook

from adapters.webhooks import HttpWebhookSender
from core.domain.addresses import Address, parse_networks
from core.domain.commands import (
    CreateSubscription,
    CreateTenant,
    PatchSubscription,
    RecordEvent,
    Redrive,
    RegisterReceiver,
    Replay,
)
from core.domain.delivery import Delivery, DeliveryStatus
from core.domain.messages import decode_message
from core.domain.subscriptions import SubscriptionFilter, UrlPolicy
from core.ports import AppendMeta, DeliveryStore, PageRequest, WebhookSender
from core.usecases import Actor, Services
from entrypoints.bootstrap import open_services
from entrypoints.settings import DatabaseSettings, DeliverySettings, SecretsSettings, Settings
from entrypoints.worker import delivering
from tests.integration.loopback_targets import Answer, Received, Target, loopback_target

pytestmark = pytest.mark.anyio

MASTER_KEY = "dGVzdHMtb25seS1tYXN0ZXIta2V5LTMyLWJ5dGVzLWxvbmch"
LOOPBACK = ["127.0.0.0/8", "::1/128"]


def settings_for(tmp_path: pathlib.Path, backend: str = "sqlite", **delivery: Any) -> Settings:
    given: dict[str, Any] = {
        "allowed_networks": LOOPBACK,
        "require_https": False,
        "retry_schedule_seconds": [0.2, 0.2, 0.2],
        "timeout_seconds": 2.0,
        "poll_seconds": 0.05,
    }
    given.update(delivery)
    url = "memory://" if backend == "memory" else f"sqlite:///{tmp_path / 'waypost.db'}"
    return Settings(
        database=DatabaseSettings(url=url),
        secrets=SecretsSettings(master_key=MASTER_KEY),
        delivery=DeliverySettings(**given),
    )


@dataclass
class World:
    services: Services
    actor: Actor
    receiver_id: str

    async def record(self, **over: Any) -> str:
        body: dict[str, Any] = {
            "name": "shop",
            "version": "2.1.0",
            "release": "1",
            "platform_id": "x86_64",
            "package": "rpm",
            "payload": {},
            "success": True,
            "event_receiver_id": self.receiver_id,
        }
        body.update(over)
        return (await self.services.events.record(self.actor, RecordEvent(**body))).id

    @property
    def store(self) -> DeliveryStore:
        assert self.services.delivery_deps is not None
        return self.services.delivery_deps.store

    async def subscribe(self, url: str, **over: Any) -> str:
        cmd = CreateSubscription(name="hooks", url=url, **over)
        return (await self.services.subscriptions.create(self.actor, cmd)).id

    async def deliveries(self, subscription_id: str) -> list[Delivery]:
        return await self.services.subscriptions.deliveries(
            self.actor, subscription_id, None, PageRequest(limit=1000, order="asc")
        )

    async def settled(
        self, subscription_id: str, count: int = 1, seconds: float = 20
    ) -> list[Delivery]:
        """The subscription's deliveries once `count` of them are finished (not pending)."""

        async def done() -> list[Delivery] | None:
            found = await self.deliveries(subscription_id)
            finished = [
                d for d in found if d.status in (DeliveryStatus.SUCCEEDED, DeliveryStatus.DEAD)
            ]
            return found if len(finished) >= count else None

        found: list[Delivery] = await eventually(done, seconds)
        return found


async def eventually(check: Callable[[], Awaitable[Any]], seconds: float = 20) -> Any:
    with anyio.fail_after(seconds):
        while True:
            found = await check()
            if found:
                return found
            await anyio.sleep(0.05)


@asynccontextmanager
async def running(
    settings: Settings,
    *,
    sender: WebhookSender | None = None,
    url_policy: UrlPolicy | None = None,
    deliver: bool = True,
) -> AsyncIterator[World]:
    """Services with a tenant and a receiver, delivering (unless not `deliver`: then the
    test starts `delivering` itself, once it has set the stage)."""
    async with open_services(settings, sending=True, sender=sender) as services:
        if url_policy is not None:
            assert services.delivery_deps is not None
            services.delivery_deps.url_policy = url_policy
        tenant = await services.tenants.create(
            CreateTenant(slug="acme", name="Acme"), AppendMeta(actor="tests")
        )
        actor = Actor(tenant_id=tenant.id, principal="tests")
        receiver, _ = await services.receivers.register(
            actor, RegisterReceiver(name="build", type="ci.build", version="1", schema={})
        )
        world = World(services, actor, receiver.id)
        if not deliver:
            yield world
            return
        async with delivering(services, settings.delivery):
            yield world


@contextmanager
def target(answer: Callable[[Received], Answer] | None = None) -> Iterator[Target]:
    with loopback_target() as made:
        if answer is not None:
            made.answer = answer
        yield made


def headers(received: Received) -> dict[str, str]:
    return {name.lower(): value for name, value in received.headers}


# --- the happy path --------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_a_signed_webhook_arrives(tmp_path: pathlib.Path, backend: str) -> None:
    with target() as hook:
        async with running(settings_for(tmp_path, backend)) as world:
            ident = await world.subscribe(hook.url())
            secret = await world.services.subscriptions.secret(world.actor, ident)
            event_id = await world.record()
            [delivery] = await world.settled(ident)
        [received] = hook.requests
    assert delivery.status == DeliveryStatus.SUCCEEDED
    sent = headers(received)
    assert sent["content-type"] == "application/cloudevents+json"
    assert sent["user-agent"].startswith("Waypost/")
    assert sent["webhook-id"] == delivery.message_id
    Webhook(secret).verify(received.body, sent)  # the independent library agrees
    message = decode_message(received.body)
    assert message.data.events[0].id == event_id


# --- failures ----------------------------------------------------------------------------------


async def test_500_twice_then_200_is_three_attempts_of_one_webhook_id(
    tmp_path: pathlib.Path,
) -> None:
    answers = iter([Answer(500), Answer(500)])
    with target(lambda _: next(answers, Answer(200))) as hook:
        async with running(settings_for(tmp_path, retry_schedule_seconds=[1.1, 1.1])) as world:
            ident = await world.subscribe(hook.url())
            await world.record()
            [delivery] = await world.settled(ident)
            _, attempts = await world.services.subscriptions.delivery(
                world.actor, ident, delivery.id
            )
    assert delivery.status == DeliveryStatus.SUCCEEDED
    assert [a.status_code for a in attempts] == [500, 500, 200]
    assert [a.number for a in attempts] == [1, 2, 3]
    sent = [headers(r) for r in hook.requests]
    assert len({h["webhook-id"] for h in sent}) == 1
    stamps = [int(h["webhook-timestamp"]) for h in sent]
    assert stamps[0] < stamps[1] < stamps[2]  # a fresh timestamp each attempt (>= 1 s apart)
    assert len({h["webhook-signature"] for h in sent}) == 3
    assert len({r.body for r in hook.requests}) == 1


async def test_410_disables_and_a_disabled_message_appears(tmp_path: pathlib.Path) -> None:
    with target(lambda _: Answer(410)) as gone, target() as watcher:
        async with running(settings_for(tmp_path)) as world:
            ident = await world.subscribe(gone.url())
            await world.subscribe(
                watcher.url(), filter=SubscriptionFilter(types=("waypost.subscription.disabled",))
            )
            await world.record()

            async def announced() -> bool:
                return len(watcher.requests) == 1

            await eventually(announced)
            subscription = await world.services.subscriptions.get(world.actor, ident)
            waiting = await world.deliveries(ident)
    assert not subscription.enabled
    assert subscription.disabled_reason == "the target answered 410 Gone"
    # kept, waiting: the 410'd message and the announcement of its own disabling
    assert [(d.status, d.message_type) for d in waiting] == [
        (DeliveryStatus.PENDING, "ci.build"),
        (DeliveryStatus.PENDING, "waypost.subscription.disabled"),
    ]
    message = decode_message(watcher.requests[0].body)
    assert (message.type, message.subject) == ("waypost.subscription.disabled", ident)
    assert len(gone.requests) == 1


async def test_429_with_retry_after_is_honoured(tmp_path: pathlib.Path) -> None:
    answers = iter([Answer(429, headers=[("Retry-After", "2")])])
    with target(lambda _: next(answers, Answer(200))) as hook:
        # Retry-After is clamped to the schedule's longest delay (10 s here)
        async with running(settings_for(tmp_path, retry_schedule_seconds=[0.2, 10])) as world:
            ident = await world.subscribe(hook.url())
            await world.record()
            [delivery] = await world.settled(ident)
            _, attempts = await world.services.subscriptions.delivery(
                world.actor, ident, delivery.id
            )
    assert [a.status_code for a in attempts] == [429, 200]
    waited = (attempts[1].started_at - attempts[0].started_at).total_seconds()
    assert waited >= 2.0  # not the schedule's 0.2 s


async def test_a_slow_target_times_out(tmp_path: pathlib.Path) -> None:
    with target(lambda _: Answer(200, delay_seconds=3)) as slow:
        settings = settings_for(tmp_path, timeout_seconds=0.5, retry_schedule_seconds=[60])
        async with running(settings) as world:
            ident = await world.subscribe(slow.url())
            await world.record()

            async def attempted() -> Delivery | None:
                found = await world.deliveries(ident)
                return found[0] if found and found[0].attempts else None

            delivery = await eventually(attempted)
            _, [attempt] = await world.services.subscriptions.delivery(
                world.actor, ident, delivery.id
            )
    assert delivery.status == DeliveryStatus.PENDING
    assert attempt.status_code is None
    assert attempt.error is not None
    assert "within 0.5 s" in attempt.error
    assert 400 <= attempt.duration_ms < 2500


async def test_a_refused_connection_is_a_failed_attempt(tmp_path: pathlib.Path) -> None:
    with target() as closed:
        url = closed.url()
    async with running(settings_for(tmp_path, retry_schedule_seconds=[60])) as world:
        ident = await world.subscribe(url)
        await world.record()

        async def attempted() -> Delivery | None:
            found = await world.deliveries(ident)
            return found[0] if found and found[0].attempts else None

        delivery = await eventually(attempted)
    assert delivery.status == DeliveryStatus.PENDING
    assert delivery.last_status_code is None
    assert delivery.last_error


async def test_a_302_is_not_followed(tmp_path: pathlib.Path) -> None:
    with target(lambda _: Answer(302, headers=[("Location", "/elsewhere")])) as moved:
        async with running(settings_for(tmp_path, retry_schedule_seconds=[60])) as world:
            ident = await world.subscribe(moved.url())
            await world.record()

            async def attempted() -> Delivery | None:
                found = await world.deliveries(ident)
                return found[0] if found and found[0].attempts else None

            delivery = await eventually(attempted)
    assert delivery.last_status_code == 302
    assert delivery.status == DeliveryStatus.PENDING  # a failure, retried later
    assert [r.path for r in moved.requests] == ["/hook"]


# --- the address guard at connection time ------------------------------------------------------


async def test_refused_addresses_are_failed_attempts_and_never_sent(tmp_path: pathlib.Path) -> None:
    """Saved while loopback was allowed; delivered with no network allowed: every target is
    refused when the connection would be made, and nothing reaches it."""

    async def resolver(host: str, port: int) -> Sequence[Address]:
        table = {"localhost": ["127.0.0.1", "::1"], "sneaky.example": ["127.0.0.1"]}
        return [ip_address(a) for a in table.get(host, ["203.0.113.9"])]

    guarded = HttpWebhookSender(allowed_networks=(), require_https=False, resolver=resolver)
    saving = UrlPolicy(allow_http=True, allowed=parse_networks(LOOPBACK))
    settings = settings_for(tmp_path, retry_schedule_seconds=[60])
    with target() as hook:
        hosts = [
            "127.0.0.1",
            "localhost",
            "[::1]",
            "[::ffff:127.0.0.1]",
            "2130706433",
            "sneaky.example",
        ]
        async with running(settings, sender=guarded, url_policy=saving) as world:
            idents = [await world.subscribe(f"http://{h}:{hook.port}/hook") for h in hosts]
            await world.record()

            async def attempted() -> list[Delivery] | None:
                found = [d for i in idents for d in await world.deliveries(i)]
                return found if all(d.attempts for d in found) and len(found) == 6 else None

            found = await eventually(attempted)
        assert hook.connections == 0
        assert hook.requests == []
    for delivery in found:
        assert delivery.status == DeliveryStatus.PENDING
        assert delivery.last_status_code is None
        assert delivery.last_error is not None


async def test_a_redirect_to_the_metadata_address_is_an_answer_not_a_hop(
    tmp_path: pathlib.Path,
) -> None:
    to_metadata = [("Location", "http://169.254.169.254/latest/meta-data/")]
    with target(lambda _: Answer(302, headers=to_metadata)) as hook:
        async with running(settings_for(tmp_path, retry_schedule_seconds=[60])) as world:
            ident = await world.subscribe(hook.url())
            await world.record()

            async def attempted() -> Delivery | None:
                found = await world.deliveries(ident)
                return found[0] if found and found[0].attempts else None

            delivery = await eventually(attempted)
    assert delivery.last_status_code == 302
    assert len(hook.requests) == 1


# --- subscriptions over time -------------------------------------------------------------------


async def test_disable_then_enable_resumes_and_delete_stops(tmp_path: pathlib.Path) -> None:
    with target() as hook:
        async with running(settings_for(tmp_path)) as world:
            subs = world.services.subscriptions
            ident = await world.subscribe(hook.url())
            await subs.patch(world.actor, ident, PatchSubscription(enabled=False))
            waited = [await world.record(), await world.record()]
            await anyio.sleep(0.5)
            assert hook.requests == []
            await subs.patch(world.actor, ident, PatchSubscription(enabled=True))
            await world.settled(ident, 2)
            await subs.delete(world.actor, ident)
            await world.record()
            await anyio.sleep(0.5)
    got = [decode_message(r.body).data.events[0].id for r in hook.requests]
    assert sorted(got) == sorted(waited)


async def test_ordering_artifact_under_retries(tmp_path: pathlib.Path) -> None:
    seen: list[int] = []
    fail_first = {1: 2}  # message n=1 fails twice

    def answer(received: Received) -> Answer:
        n = decode_message(received.body).data.events[0].payload["n"]
        if fail_first.get(n, 0) > 0:
            fail_first[n] -= 1
            return Answer(503)
        seen.append(n)
        return Answer(200)

    with target(answer) as hook:
        async with running(settings_for(tmp_path)) as world:
            ident = await world.subscribe(hook.url(), ordering="artifact")
            for n in range(1, 6):
                await world.record(payload={"n": n})
            await world.settled(ident, 5)
    assert seen == [1, 2, 3, 4, 5]
    assert len(hook.requests) == 7


async def test_ping_replay_and_redrive(tmp_path: pathlib.Path) -> None:
    failing = {"on": True}
    with target(lambda _: Answer(500) if failing["on"] else Answer(200)) as hook:
        settings = settings_for(tmp_path, retry_schedule_seconds=[0.1])
        async with running(settings) as world:
            subs = world.services.subscriptions
            early = await world.record()
            ident = await world.subscribe(hook.url())
            await world.record()
            [dead] = await world.settled(ident)
            assert dead.status == DeliveryStatus.DEAD
            failing["on"] = False
            assert await subs.redrive(world.actor, ident, Redrive()) == 1
            await eventually(lambda: _status(world, ident, DeliveryStatus.SUCCEEDED, 1))
            # the receiver's creation, the early event, and the one sent already (again)
            assert await subs.replay(world.actor, ident, Replay(after=0)) == 3
            await eventually(lambda: _status(world, ident, DeliveryStatus.SUCCEEDED, 3))
            message_id = await subs.ping(world.actor, ident)
            await eventually(lambda: _status(world, ident, DeliveryStatus.SUCCEEDED, 4))
    ids = [decode_message(r.body).id for r in hook.requests]
    assert message_id in ids
    events = [
        m.data.events[0].id
        for m in map(decode_message, (r.body for r in hook.requests))
        if m.data.events
    ]
    assert early in events


async def _status(world: World, ident: str, status: DeliveryStatus, count: int) -> bool:
    found = await world.deliveries(ident)
    return [d.status for d in found].count(status) >= count


# --- a database that cannot serve ---------------------------------------------------------------


async def test_the_delivery_loops_wait_out_a_database_that_cannot_serve(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite's writer lock held by another process for a while: the dispatcher, deliverers
    and housekeeping meet `Unavailable` (which the database's availability logs, one line
    each time reads succeed between failed writes), never a traceback or an error of
    delivery's own, and deliver as usual once the lock is released."""
    import logging
    import sqlite3

    caplog.set_level(logging.INFO)
    config = settings_for(tmp_path)
    config = msgspec.structs.replace(
        config, database=msgspec.structs.replace(config.database, busy_timeout_seconds=0.1)
    )
    with target() as hook:
        async with running(config) as world:
            ident = await world.subscribe(hook.url())
            other = sqlite3.connect(tmp_path / "waypost.db", isolation_level=None)
            other.execute("BEGIN IMMEDIATE")
            try:
                await anyio.sleep(1.5)  # every loop meets the lock several times
            finally:
                other.execute("ROLLBACK")
                other.close()
            await world.record()
            [delivery] = await world.settled(ident)
        assert delivery.status == DeliveryStatus.SUCCEEDED
        assert len(hook.requests) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not [r for r in caplog.records if r.exc_info]
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warned  # the loops did meet the lock
    assert {r.name for r in warned} == {"waypost.database"}, [r.getMessage() for r in warned]


async def test_an_attempt_that_ends_while_the_deliverer_looks_for_work_is_not_missed(
    tmp_path: pathlib.Path,
) -> None:
    # One at a time per subscription, and an idle deliverer that would sleep 8 s: each
    # attempt ends while the deliverer asks the store (slowly, here) when the next
    # delivery is due. It must see that end and claim the next at once, not sleep it out.
    settings = settings_for(tmp_path, "memory", subscription_concurrency=1, poll_seconds=2.0)
    with target() as hook:
        async with running(settings, deliver=False) as world:
            store = world.store
            asked = store.next_due

            async def slowly(retries: bool) -> Any:
                await anyio.sleep(0.1)
                return await asked(retries)

            store.next_due = slowly  # type: ignore[method-assign]
            await world.subscribe(hook.url())
            for n in range(8):
                await world.record(release=str(n))
            async with delivering(world.services, settings.delivery):
                await eventually(lambda: _arrived(hook, 8), seconds=6)


async def test_a_claim_that_comes_back_short_is_not_repeated_at_once(
    tmp_path: pathlib.Path,
) -> None:
    # One subscription with a backlog and a cap of 4: each claim takes the 4 it has room
    # for, fewer than the deliverer's free slots. What else is due is held back by the cap
    # until attempts end, so claiming again at once finds nothing, and on PostgreSQL it
    # walks the subscription's whole backlog to find it (that was most of the database's
    # time per delivery). The deliverer waits for attempts to end instead: one claim per
    # batch, not two.
    settings = settings_for(tmp_path, "memory", subscription_concurrency=4)
    with target() as hook:
        async with running(settings, deliver=False) as world:
            store = world.store
            claims: list[int] = []
            claim = store.claim

            async def counted(**kwargs: Any) -> Any:
                claimed = await claim(**kwargs)
                claims.append(len(claimed))
                return claimed

            store.claim = counted  # type: ignore[method-assign]
            await world.subscribe(hook.url())
            for n in range(60):
                await world.record(release=str(n))
            async with delivering(world.services, settings.delivery):
                await eventually(lambda: _arrived(hook, 60), seconds=10)
    taking = [n for n in claims if n]
    assert sum(taking) == 60
    assert max(taking) <= 4
    # 15 claims of 4 take them all; the retry slots ask now and then (at their poll, at
    # the store's signal), and the end of the backlog once. Claiming again after each
    # claim of 4 made about 30.
    assert len(claims) <= 15 + 7, claims


async def test_deliveries_made_while_the_deliverer_looks_are_not_slept_through(
    tmp_path: pathlib.Path,
) -> None:
    # The store's wake-up for the second message comes while the deliverer is between its
    # claim and its wait (here: inside a slowed next-due query); the deliverer idles 8 s
    # at a time. It must claim the message at once, not when its idle wait runs out.
    settings = settings_for(tmp_path, "memory", poll_seconds=2.0)
    with target() as hook:
        async with running(settings, deliver=False) as world:
            store = world.store
            await world.subscribe(hook.url())

            asked = store.next_due
            second = anyio.Event()

            async def meanwhile(retries: bool) -> Any:
                due = await asked(retries)
                first_claimed = (await store.counts()).delivering or hook.requests
                if not retries and first_claimed and not second.is_set():
                    second.set()
                    mark = store.mark()
                    await world.record(release="2")  # dispatched and rung while this query "runs"
                    with anyio.fail_after(5):
                        while store.mark() == mark:  # noqa: ASYNC110 (the dispatcher rings in its task)
                            await anyio.sleep(0.01)
                return due

            store.next_due = meanwhile  # type: ignore[method-assign]
            async with delivering(world.services, settings.delivery):
                await world.record(release="1")
                await eventually(lambda: _arrived(hook, 1), seconds=5)
                with anyio.fail_after(5):
                    await second.wait()
                started = anyio.current_time()
                await eventually(lambda: _arrived(hook, 2), seconds=6)
                assert anyio.current_time() - started < 3


async def _arrived(hook: Target, count: int) -> bool:
    return len(hook.requests) >= count
