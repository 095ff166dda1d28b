"""Messages published to Redis streams (a real Redis server): in order, once, resumable."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence

import anyio
import pytest
import redis.asyncio as aioredis

from adapters.groupcommit import Lanes
from adapters.memory.cache import ReceiverLru
from adapters.memory.store import MemoryStore
from adapters.redis.streams import RedisStreams, stream_key
from adapters.system import UlidSource
from core.domain.commands import CreateGroup
from core.domain.messages import Positioned, decode_message
from core.usecases import Deps, Publisher, Services
from entrypoints.http import app
from tests.contract.conftest import StepClock
from tests.contract.test_usecases import actor, event, receiver

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


@pytest.fixture
async def raw(redis_db: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_db)
    yield client
    await client.aclose()


@pytest.fixture
async def sinks(redis_db: str) -> AsyncIterator[list[RedisStreams]]:
    """Sinks on the test's Redis; each is closed at the end."""
    made: list[RedisStreams] = []
    yield made
    for sink in made:
        await sink.close()


def services_over(store: MemoryStore, sink: RedisStreams) -> Services:
    return Services(
        Deps(store, StepClock(), UlidSource(), ReceiverLru(), combiner=Lanes()), sink=sink
    )


async def entries(raw: aioredis.Redis, slug: str) -> list[tuple[str, str, str]]:
    """(entry id, type, CloudEvent id) of every entry of the tenant's stream."""
    found = []
    stream: list[tuple[bytes, dict[bytes, bytes]]] = await raw.xrange(stream_key(slug))  # type: ignore[assignment]
    for entry_id, fields in stream:
        message = decode_message(fields[b"cloudevent"])
        assert fields[b"type"].decode() == message.type
        found.append((entry_id.decode(), message.type, message.id))
    return found


async def test_a_pass_publishes_every_message_in_log_order_under_its_position(
    redis_db: str, raw: aioredis.Redis, sinks: list[RedisStreams]
) -> None:
    sinks.append(sink := RedisStreams.from_url(redis_db, max_length=1000))
    services = services_over(MemoryStore(), sink)
    assert services.publisher is not None
    who = await actor(services, "acme")
    a, b = await receiver(services, who, name="a"), await receiver(services, who, name="b")
    await services.groups.create(
        who, CreateGroup(name="g", type="t", version="1", event_receiver_ids=[a.id, b.id])
    )
    await services.events.record(who, event(a.id))
    await services.events.record(who, event(b.id))

    assert await services.publisher.publish_once() == 6
    found = await entries(raw, "acme")
    page = await services.messages.after(who, 0)
    assert found == [(f"{p.position}-0", p.message.type, p.message.id) for p in page.messages]
    assert found[-1][1] == "waypost.group.completed"
    assert await sink.last_position("acme") == page.last
    # nothing new: a pass publishes nothing and the stream is unchanged
    assert await services.publisher.publish_once() == 0
    assert await entries(raw, "acme") == found


async def test_tenants_get_streams_of_their_own(
    redis_db: str, raw: aioredis.Redis, sinks: list[RedisStreams]
) -> None:
    sinks.append(sink := RedisStreams.from_url(redis_db, max_length=1000))
    services = services_over(MemoryStore(), sink)
    assert services.publisher is not None
    acme, globex = await actor(services, "acme"), await actor(services, "globex")
    await receiver(services, acme, name="mine")
    await receiver(services, globex, name="theirs")
    await receiver(services, globex, name="more")
    assert await services.publisher.publish_once() == 3
    assert len(await entries(raw, "acme")) == 1
    assert len(await entries(raw, "globex")) == 2


async def test_a_restarted_publisher_goes_on_where_the_stream_is_without_repeats(
    redis_db: str, raw: aioredis.Redis, sinks: list[RedisStreams]
) -> None:
    store = MemoryStore()
    sinks.append(first := RedisStreams.from_url(redis_db, max_length=1000))
    services = services_over(store, first)
    assert services.publisher is not None
    who = await actor(services, "acme")
    build = await receiver(services, who)
    for _ in range(3):
        await services.events.record(who, event(build.id))
    await services.publisher.publish_once()
    before = await entries(raw, "acme")
    for _ in range(2):
        await services.events.record(who, event(build.id))
    # a new process: a new publisher and sink over the same store and Redis
    sinks.append(second := RedisStreams.from_url(redis_db, max_length=1000))
    again = services_over(store, second)
    assert again.publisher is not None
    assert await again.publisher.publish_once() == 2
    after = await entries(raw, "acme")
    assert after[: len(before)] == before
    assert len(after) == len(before) + 2
    assert len({message_id for _, _, message_id in after}) == len(after)


async def test_publishers_side_by_side_add_each_message_once(
    redis_db: str, raw: aioredis.Redis, sinks: list[RedisStreams]
) -> None:
    store = MemoryStore()
    sinks.extend(RedisStreams.from_url(redis_db, max_length=10_000) for _ in range(2))
    one, two = (services_over(store, sink) for sink in sinks)
    who = await actor(one, "acme")
    build = await receiver(one, who)
    await one.events.record_batch(who, [event(build.id) for _ in range(500)])
    assert one.publisher is not None
    assert two.publisher is not None
    counts: list[int] = []

    async def run(publisher: Publisher) -> None:
        counts.append(await publisher.publish_once())

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(run, one.publisher)
        tasks.start_soon(run, two.publisher)
    found = await entries(raw, "acme")
    assert sum(counts) >= 501  # together they handed over everything, some twice maybe
    assert len(found) == 501  # the receiver and 500 events, each once
    assert [int(entry_id.split("-")[0]) for entry_id, _, _ in found] == sorted(
        int(entry_id.split("-")[0]) for entry_id, _, _ in found
    )


async def test_a_capped_stream_keeps_its_position_after_trimming(
    redis_db: str, raw: aioredis.Redis, sinks: list[RedisStreams]
) -> None:
    sinks.append(sink := RedisStreams.from_url(redis_db, max_length=10))
    services = services_over(MemoryStore(), sink)
    assert services.publisher is not None
    who = await actor(services, "acme")
    build = await receiver(services, who)
    await services.events.record_batch(who, [event(build.id) for _ in range(300)])
    await services.publisher.publish_once()
    assert await raw.xlen(stream_key("acme")) < 301  # trimmed (approximately to 10)
    head = (await services.messages.after(who, 0)).last
    assert await sink.last_position("acme") == head


async def test_no_stream_is_position_zero_and_a_failing_redis_raises(
    redis_db: str, sinks: list[RedisStreams]
) -> None:
    sinks.append(sink := RedisStreams.from_url(redis_db, max_length=10))
    assert await sink.last_position("nobody") == 0
    sinks.append(down := RedisStreams.from_url("redis://127.0.0.1:1/0", max_length=10))
    with pytest.raises(Exception, match="onnect"):
        await down.last_position("acme")


class FailingFirst:
    """The real sink, failing its first `times` calls as a Redis that is down would."""

    def __init__(self, sink: RedisStreams, times: int) -> None:
        self.sink, self.times = sink, times

    async def last_position(self, tenant_slug: str) -> int:
        if self.times > 0:
            self.times -= 1
            raise ConnectionError("Redis is down")
        return await self.sink.last_position(tenant_slug)

    async def publish(self, tenant_slug: str, messages: Sequence[Positioned]) -> None:
        await self.sink.publish(tenant_slug, messages)


async def test_the_publishing_loop_backs_off_while_the_sink_fails_then_catches_up(
    redis_db: str,
    raw: aioredis.Redis,
    sinks: list[RedisStreams],
    caplog: pytest.LogCaptureFixture,
) -> None:
    sinks.append(sink := RedisStreams.from_url(redis_db, max_length=1000))
    flaky = FailingFirst(sink, times=3)
    services = Services(
        Deps(MemoryStore(), StepClock(), UlidSource(), ReceiverLru(), combiner=Lanes()), sink=flaky
    )
    assert services.publisher is not None
    who = await actor(services, "acme")
    build = await receiver(services, who)
    await services.events.record(who, event(build.id))
    with caplog.at_level(logging.INFO, logger="waypost.http"):
        with anyio.move_on_after(1.0):
            await app._publish(services.publisher, every=0.01)
    assert flaky.times == 0
    assert len(await entries(raw, "acme")) == 2
    failed = [r for r in caplog.records if "publishing messages failed" in r.getMessage()]
    assert len(failed) == 1  # one line per outage, not one per attempt
    assert any("works again" in r.getMessage() for r in caplog.records)


async def test_the_sink_adds_a_message_once_however_often_it_is_handed_over(
    redis_db: str, raw: aioredis.Redis, sinks: list[RedisStreams]
) -> None:
    sinks.append(sink := RedisStreams.from_url(redis_db, max_length=1000))
    services = services_over(MemoryStore(), sink)
    who = await actor(services, "acme")
    build = await receiver(services, who)
    for _ in range(3):
        await services.events.record(who, event(build.id))
    page = await services.messages.after(who, 0)
    await sink.publish("acme", page.messages[:2])
    await sink.publish("acme", page.messages)  # the first two again, then the rest
    await sink.publish("acme", page.messages)  # all again
    found = await entries(raw, "acme")
    assert [entry_id for entry_id, _, _ in found] == [f"{p.position}-0" for p in page.messages]
    assert await sink.last_position("acme") == page.messages[-1].position
