"""The commit feed's promise, on every backend, with the feed the bootstrap picks for it.

Memory: in-process wake-ups. SQLite: in-process wake-ups plus a head poller while
someone waits. PostgreSQL: LISTEN/NOTIFY. Commits of "another process" are made
through a second store on the same database, which the feed is not told about.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import anyio
import pytest

from adapters.commits import LocalFeed, PolledFeed
from adapters.memory.cache import ReceiverLru
from adapters.sql.store import SqlStore
from adapters.system import UlidSource
from core.domain.commands import CreateGroup, RegisterReceiver
from core.domain.model import Nvrpp, ReceiverCreated
from core.domain.receivers import new_receiver
from core.ports import CommitsWatch, Store
from core.usecases import Actor, Deps, Services
from entrypoints.bootstrap import open_feed
from entrypoints.settings import Settings
from tests.contract.conftest import StepClock
from tests.contract.test_usecases import actor, event, receiver

pytestmark = pytest.mark.anyio

#: Generous: the machine is shared; what is checked is "woken", not "how fast".
WOKEN_WITHIN = 5.0


class Fixture:
    def __init__(self, store: Store, feed: LocalFeed, services: Services) -> None:
        self.store = store
        self.feed = feed
        self.services = services
        self.names = iter(range(1_000_000))

    async def head(self, who: Actor) -> int:
        async with self.store.read() as tx:
            return await tx.log.head(who.tenant_id)

    async def commit(self, who: Actor, services: Services | None = None) -> None:
        await receiver(services or self.services, who, name=f"r{next(self.names)}")


@pytest.fixture
async def fx(store: Store) -> AsyncIterator[Fixture]:
    feed = open_feed(Settings(), store)
    async with feed.running():
        yield Fixture(store, feed, Services(Deps(store, StepClock(), UlidSource(), ReceiverLru())))


@pytest.fixture
async def elsewhere(fx: Fixture) -> AsyncIterator[Services]:
    """Use cases over a second store on the same database: another process's writes."""
    if not isinstance(fx.store, SqlStore):
        pytest.skip("the memory store lives in one process")
    assert fx.store.url is not None
    other = await SqlStore.connect(fx.store.url)
    try:
        yield Services(Deps(other, StepClock(), UlidSource(), ReceiverLru()))
    finally:
        await other.close()


async def _woken(fx: Fixture, who: Actor, after: int, seconds: float = WOKEN_WITHIN) -> bool:
    async with fx.feed.watch(who.tenant_id, seconds) as watch:
        return await watch.wait(after)


async def test_a_commit_wakes_a_watch_of_its_tenant(fx: Fixture) -> None:
    who = await actor(fx.services)
    woken: list[bool] = []
    async with fx.feed.watch(who.tenant_id, 30) as watch, anyio.create_task_group() as tasks:
        head = await fx.head(who)

        async def wait() -> None:
            woken.append(await watch.wait(head))

        tasks.start_soon(wait)
        await anyio.sleep(0.05)
        started = time.monotonic()
        await fx.commit(who)
    assert woken == [True]
    assert time.monotonic() - started < WOKEN_WITHIN


async def test_a_watch_ends_false_at_its_time_when_nothing_commits(fx: Fixture) -> None:
    who = await actor(fx.services)
    head = await fx.head(who)
    started = time.monotonic()
    assert await _woken(fx, who, head, seconds=0.3) is False
    assert time.monotonic() - started >= 0.3
    async with fx.feed.watch(who.tenant_id, 0.1) as watch:
        await anyio.sleep(0.15)
        assert await watch.wait(head) is False  # time is up: at once


async def test_another_tenants_commits_do_not_wake_a_watch(fx: Fixture) -> None:
    who = await actor(fx.services)
    other = await actor(fx.services, "globex")
    head = await fx.head(who)
    async with anyio.create_task_group() as tasks:
        result: list[bool] = []

        async def wait() -> None:
            result.append(await _woken(fx, who, head, seconds=0.5))

        tasks.start_soon(wait)
        await anyio.sleep(0.05)
        for _ in range(3):
            await fx.commit(other)
    assert result == [False]


async def test_a_position_already_passed_inside_the_block_returns_at_once(fx: Fixture) -> None:
    who = await actor(fx.services)
    async with fx.feed.watch(who.tenant_id, 30) as watch:
        head = await fx.head(who)
        await fx.commit(who)
        started = time.monotonic()
        assert await watch.wait(head) is True
        assert time.monotonic() - started < WOKEN_WITHIN


async def test_every_watch_of_the_tenant_wakes_on_one_commit(fx: Fixture) -> None:
    who = await actor(fx.services)
    head = await fx.head(who)
    woken: list[bool] = []

    async def wait() -> None:
        woken.append(await _woken(fx, who, head, seconds=30))

    async with anyio.create_task_group() as tasks:
        for _ in range(50):
            tasks.start_soon(wait)
        await anyio.sleep(0.1)
        await fx.commit(who)
    assert woken == [True] * 50
    assert fx.feed.watching == 0


async def test_another_processs_commit_wakes_the_watch(fx: Fixture, elsewhere: Services) -> None:
    who = await actor(fx.services)
    async with fx.feed.watch(who.tenant_id, 30) as watch, anyio.create_task_group() as tasks:
        head = await fx.head(who)
        woken: list[bool] = []

        async def wait() -> None:
            woken.append(await watch.wait(head))

        tasks.start_soon(wait)
        await anyio.sleep(0.05)
        started = time.monotonic()
        await fx.commit(who, elsewhere)
    assert woken == [True]
    assert time.monotonic() - started < WOKEN_WITHIN


async def test_a_rolled_back_write_wakes_nobody(fx: Fixture) -> None:
    who = await actor(fx.services)
    deps = fx.services.deps
    candidate, _ = new_receiver(
        RegisterReceiver(name="gone", type="t", version="1", description="", schema={}),
        id=deps.ids.new_id(),
        tenant_id=who.tenant_id,
        now=deps.clock.now(),
    )
    async with fx.feed.watch(who.tenant_id, 0.5) as watch:
        head = await fx.head(who)
        with pytest.raises(RuntimeError, match="abandoned"):  # noqa: PT012 - the write's block
            async with fx.store.write(who.tenant_id) as tx:
                await tx.append(deps.entries([ReceiverCreated(receiver=candidate)]), who.meta())
                raise RuntimeError("abandoned")
        assert await fx.head(who) == head
        assert await watch.wait(head) is False


async def test_the_long_poll_answers_when_the_gate_completes(fx: Fixture) -> None:
    """The use case over the feed: `status(wait=...)` returns once the gate completes."""
    services = Services(fx.services.deps, feed=fx.feed)
    who = await actor(services)
    first = await receiver(services, who, name="build")
    second = await receiver(services, who, name="test")
    group = await services.groups.create(
        who,
        CreateGroup(
            name="release", type="gate", version="1", event_receiver_ids=[first.id, second.id]
        ),
    )
    key = Nvrpp(name="app", version="1.0", release="1", platform_id="x86_64", package="rpm")
    await services.events.record(who, event(first.id))
    answers = []

    async def wait() -> None:
        answers.append(await services.groups.status(who, group.id, key, wait=30))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(wait)
        await anyio.sleep(0.2)
        assert answers == []
        started = time.monotonic()
        await services.events.record(who, event(second.id))
    assert [a.complete for a in answers] == [True]
    assert time.monotonic() - started < WOKEN_WITHIN
    # Incomplete at the end of its time: answered as it is.
    await services.events.record(who, event(second.id, success=False))
    started = time.monotonic()
    status = await services.groups.status(who, group.id, key, wait=1)
    assert status.complete is False
    assert time.monotonic() - started >= 1


async def test_a_polled_feed_polls_only_while_someone_waits(fx: Fixture) -> None:
    if not isinstance(fx.feed, PolledFeed):
        pytest.skip("only the SQLite feed polls")
    who = await actor(fx.services)
    async with fx.feed.watch(who.tenant_id, 0.35) as watch:
        assert await watch.wait(await fx.head(who)) is False
    made = fx.feed.polls
    assert made >= 2
    await anyio.sleep(0.4)
    assert fx.feed.polls == made


async def test_watches_outlive_nothing(fx: Fixture) -> None:
    """Leaving blocks (normally, by timeout, by cancellation) leaves no watch behind."""
    who = await actor(fx.services)
    with anyio.move_on_after(0.1):
        async with fx.feed.watch(who.tenant_id, None) as watch:
            await watch.wait(await fx.head(who))
    assert fx.feed.watching == 0


async def test_a_lost_listening_connection_is_made_again_and_watches_look_again(
    fx: Fixture,
) -> None:
    from adapters.sql.listen import PgCommitFeed

    if not isinstance(fx.feed, PgCommitFeed):
        pytest.skip("only the PostgreSQL feed listens on a connection")
    import asyncpg

    assert isinstance(fx.store, SqlStore)
    who = await actor(fx.services)
    async with fx.feed.watch(who.tenant_id, 30) as watch:
        head = await fx.head(who)
        assert fx.feed.connections == 1
        assert fx.store.url is not None
        admin = await asyncpg.connect(fx.store.url)
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()
        assert killed == 1
        await fx.commit(who)  # while nobody listens, most likely
        started = time.monotonic()
        assert await watch.wait(head) is True
        assert time.monotonic() - started < WOKEN_WITHIN + 10
    # It listens again: the next commit wakes a new watch.
    async with fx.feed.watch(who.tenant_id, 30) as watch, anyio.create_task_group() as tasks:
        head = await fx.head(who)
        woken: list[bool] = []

        async def wait() -> None:
            woken.append(await watch.wait(head))

        tasks.start_soon(wait)
        await anyio.sleep(0.05)
        await fx.commit(who)
    assert woken == [True]
    assert fx.feed.connections == 2


async def test_an_error_inside_a_running_feed_comes_out_as_itself(store: Store) -> None:
    """The feed wraps the server's whole life: a refused start must not turn into an
    exception group (the CLI tells its errors apart by type)."""
    with pytest.raises(LookupError, match="refused"):
        async with open_feed(Settings(), store).running():
            raise LookupError("refused")


# --- a watch of every tenant (the delivery dispatcher's) ----------------------------------------


async def _settled(fx: Fixture, watch: CommitsWatch) -> None:
    """Once the feed listens (PostgreSQL) and has told of what was there before the watch
    (its first poll or connection wakes it once): nothing pending."""
    from adapters.sql.listen import PgCommitFeed

    with anyio.fail_after(WOKEN_WITHIN + 10):
        while isinstance(fx.feed, PgCommitFeed) and fx.feed.connections == 0:  # noqa: ASYNC110 - a counter of the feed's
            await anyio.sleep(0.01)
        while await watch.wait(0.3):
            pass


async def test_a_commit_of_any_tenant_wakes_a_watch_of_all(fx: Fixture) -> None:
    acme = await actor(fx.services)
    globex = await actor(fx.services, "globex")
    async with fx.feed.watch_all() as watch:
        await _settled(fx, watch)

        async def wait(woken: list[bool]) -> None:
            woken.append(await watch.wait(30))

        for who in (acme, globex):
            woken: list[bool] = []
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(wait, woken)
                await anyio.sleep(0.05)
                started = time.monotonic()
                await fx.commit(who)
            assert woken == [True]
            assert time.monotonic() - started < WOKEN_WITHIN
        assert await watch.wait(0.2) is False  # each commit told once


async def test_a_commit_while_nobody_waits_is_remembered(fx: Fixture) -> None:
    """A dispatcher's pass and its wait: what commits during the pass wakes the wait at once."""
    who = await actor(fx.services)
    async with fx.feed.watch_all() as watch:
        await _settled(fx, watch)
        await fx.commit(who)
        await fx.commit(who)
        await anyio.sleep(0.3)  # (PostgreSQL: the NOTIFY is heard meanwhile)
        started = time.monotonic()
        assert await watch.wait(30) is True
        assert time.monotonic() - started < WOKEN_WITHIN
        assert await watch.wait(0.3) is False  # both together: told once


async def test_another_processs_commit_wakes_a_watch_of_all(
    fx: Fixture, elsewhere: Services
) -> None:
    who = await actor(fx.services)
    async with fx.feed.watch_all() as watch:
        await _settled(fx, watch)
        started = time.monotonic()
        await fx.commit(who, elsewhere)
        assert await watch.wait(30) is True
        assert time.monotonic() - started < WOKEN_WITHIN


async def test_a_rolled_back_write_wakes_no_watch_of_all(fx: Fixture) -> None:
    who = await actor(fx.services)
    deps = fx.services.deps
    candidate, _ = new_receiver(
        RegisterReceiver(name="gone", type="t", version="1", description="", schema={}),
        id=deps.ids.new_id(),
        tenant_id=who.tenant_id,
        now=deps.clock.now(),
    )
    async with fx.feed.watch_all() as watch:
        await _settled(fx, watch)
        with pytest.raises(RuntimeError, match="abandoned"):  # noqa: PT012 - the write's block
            async with fx.store.write(who.tenant_id) as tx:
                await tx.append(deps.entries([ReceiverCreated(receiver=candidate)]), who.meta())
                raise RuntimeError("abandoned")
        assert await watch.wait(0.5) is False


async def test_a_polled_feed_polls_for_a_watch_of_all_only_while_it_is_open(fx: Fixture) -> None:
    if not isinstance(fx.feed, PolledFeed):
        pytest.skip("only the SQLite feed polls")
    async with fx.feed.watch_all() as watch:
        await watch.wait(0.35)
    made = fx.feed.polls
    assert made >= 2
    await anyio.sleep(0.4)
    assert fx.feed.polls == made


async def test_a_feed_that_cannot_listen_says_so_once_per_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A database that cannot be reached is retried with a growing pause, and logged once
    (as the stores log an outage), not once per attempt."""
    import logging

    from adapters.sql.listen import PgCommitFeed
    from tests.e2e.conftest import free_port

    feed = PgCommitFeed(f"postgresql://postgres@127.0.0.1:{free_port()}/waypost")
    caplog.set_level(logging.DEBUG, logger="waypost.commits")
    async with feed.running(), feed.watch("t", 1.5) as watch:
        assert await watch.wait(0) is False  # nobody listens: the time is up
    attempts = [r for r in caplog.records if "cannot listen for commits" in r.getMessage()]
    assert len(attempts) >= 3  # 0.2 s, 0.4 s, 0.8 s ...
    assert [r.levelno for r in attempts].count(logging.WARNING) == 1
    assert feed.connections == 0
