"""Log positions under concurrent writers, and the gate's exactly-once with separate stores.

(a) A reader tailing the log by position ("everything after p", remembering p)
    must see every committed entry once, in order, while writers commit in
    random order with delays and rollbacks. The harness is first run against a
    naive log whose positions come from a sequence: there it MUST skip rows (an
    entry that took an earlier value commits after the reader moved past it),
    which shows the harness can see the bug. Then it runs against SqlStore.
(b) Two stores (separate engines and pools, as two processes would have) record
    the two last missing successes of a group at the same moment: the group
    fires exactly once, every time, on PostgreSQL and on SQLite.
"""

from __future__ import annotations

import pathlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import asyncpg
import pytest

from adapters.groupcommit import Lanes
from adapters.memory.cache import ReceiverLru
from adapters.sql.migrations import migrate
from adapters.sql.store import SqlStore
from adapters.system import UlidSource
from core.domain.commands import CreateGroup, CreateTenant, RecordEvent, RegisterReceiver
from core.domain.model import Event, EventRecorded
from core.ports import AppendMeta, CompletionFilter, NewEntry, PageRequest
from core.usecases import Actor, Deps, Services

pytestmark = pytest.mark.anyio

TENANT = "01J0000000000000000000TENA"
T0 = datetime(2026, 1, 1, tzinfo=UTC)

WRITERS = 8
APPENDS = 40  # per writer
ROLLBACK_RATE = 0.05
MAX_DELAY = 0.004  # seconds between a writer's append and its commit (or rollback)
HOLD = 0.15  # the first append of writer 0 waits this long before committing
GATE_ROUNDS = 50
#: Harness runs (seeds) for the tailing reader: each ~600 entries, ~5% rolled back.
SEEDS = range(1, 6)


class Rollback(Exception):
    """Raised inside a write to abandon it."""


# --- the harness ---------------------------------------------------------------------------


@dataclass
class Outcome:
    seen: list[tuple[int, str]]  # (position, id) as the tailing reader got them
    log: list[tuple[int, str]]  # the committed log at the end, in position order
    committed: set[str]  # the ids whose writer's commit succeeded
    rolled_back: set[str] = field(default_factory=set)


Append = Callable[[list[str], float, bool], Awaitable[None]]
ReadAfter = Callable[[int], Awaitable[list[tuple[int, str]]]]


async def run_harness(append: Append, read_after: ReadAfter, seed: int) -> Outcome:
    """WRITERS concurrent writers, each APPENDS times: append 1-3 entries, wait, commit or
    roll back; meanwhile one reader tails by position until the writers are done."""
    committed: set[str] = set()
    rolled_back: set[str] = set()
    seen: list[tuple[int, str]] = []
    writing = anyio.Event()
    done = anyio.Event()
    ids = iter(f"{n:026d}" for n in range(1, 10**6))

    async def writer(number: int) -> None:
        rng = random.Random(seed * 100 + number)
        await writing.wait()
        for index in range(APPENDS):
            batch = [next(ids) for _ in range(rng.randint(1, 3))]
            delay = HOLD if (number, index) == (0, 0) else rng.uniform(0, MAX_DELAY)
            rollback = rng.random() < ROLLBACK_RATE
            try:
                await append(batch, delay, rollback)
            except Rollback:
                rolled_back.update(batch)
            else:
                committed.update(batch)

    async def reader() -> None:
        after = 0
        while True:
            finished = done.is_set()
            rows = await read_after(after)
            seen.extend(rows)
            if rows:
                after = rows[-1][0]
            elif finished:
                return
            else:
                await anyio.sleep(0.0005)

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        async with anyio.create_task_group() as writers:
            for number in range(WRITERS):
                writers.start_soon(writer, number)
            writing.set()
        done.set()
    log = await read_after(0)
    return Outcome(seen=seen, log=log, committed=committed, rolled_back=rolled_back)


# --- (a) a naive log: positions from a sequence ---------------------------------------------


@dataclass
class NaiveLog:
    """A log table keyed by a bigserial: a position is taken at INSERT, visible at COMMIT."""

    url: str
    pool: asyncpg.Pool = field(init=False)

    async def open(self) -> None:
        self.pool = await asyncpg.create_pool(self.url, min_size=WRITERS + 1, max_size=WRITERS + 2)
        await self.pool.execute(
            "CREATE TABLE naive_log (position bigserial PRIMARY KEY, id text NOT NULL UNIQUE)"
        )

    async def append(self, ids: list[str], delay: float, rollback: bool) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.executemany("INSERT INTO naive_log (id) VALUES ($1)", [(i,) for i in ids])
            await anyio.sleep(delay)
            if rollback:
                raise Rollback

    async def read_after(self, position: int) -> list[tuple[int, str]]:
        rows = await self.pool.fetch(
            "SELECT position, id FROM naive_log WHERE position > $1 ORDER BY position", position
        )
        return [(row["position"], row["id"]) for row in rows]


@pytest.fixture
async def naive_log(fresh_database: str) -> AsyncIterator[NaiveLog]:
    log = NaiveLog(fresh_database)
    await log.open()
    try:
        yield log
    finally:
        await log.pool.close()


@pytest.mark.postgres
@pytest.mark.parametrize("seed", SEEDS)
async def test_a_sequence_position_lets_a_tailing_reader_skip_rows(
    naive_log: NaiveLog, seed: int
) -> None:
    """The harness detects the bug: with sequence positions the reader misses committed rows."""
    outcome = await run_harness(naive_log.append, naive_log.read_after, seed=seed)
    assert {i for _, i in outcome.log} == outcome.committed
    skipped = outcome.committed - {i for _, i in outcome.seen}
    assert skipped, "the naive log should have let the reader skip rows"
    print(f"sequence positions: the reader skipped {len(skipped)} of {len(outcome.committed)}")
    assert outcome.seen != outcome.log


# --- (a) the store --------------------------------------------------------------------------


def recorded(event_id: str) -> EventRecorded:
    return EventRecorded(
        event=Event(
            id=event_id,
            tenant_id=TENANT,
            name="app",
            version="1",
            release="1",
            platform_id="x86_64",
            package="rpm",
            description="",
            payload={"n": event_id},
            success=True,
            event_receiver_id="01J000000000000000000000RX",
            created_at=T0,
        )
    )


@pytest.fixture
async def pg_store(fresh_database: str) -> AsyncIterator[SqlStore]:
    await migrate(fresh_database)
    store = await SqlStore.connect(fresh_database, pool_size=WRITERS + 2)
    try:
        yield store
    finally:
        await store.close()


@pytest.mark.postgres
@pytest.mark.parametrize("seed", SEEDS)
async def test_a_tailing_reader_sees_every_committed_entry_once_in_order(
    pg_store: SqlStore, seed: int
) -> None:
    meta = AppendMeta(actor="writer")

    async def append(ids: list[str], delay: float, rollback: bool) -> None:
        async with pg_store.write(TENANT) as tx:
            await tx.append(
                [
                    NewEntry(id=f"E{i}", event=recorded(i), expected_version=0, occurred_at=T0)
                    for i in ids
                ],
                meta,
            )
            await anyio.sleep(delay)
            if rollback:
                raise Rollback

    async def read_after(position: int) -> list[tuple[int, str]]:
        async with pg_store.read() as tx:
            entries = await tx.log.read(TENANT, after=position, limit=10_000)
        return [(e.position, e.stream) for e in entries]

    started = time.monotonic()
    outcome = await run_harness(append, read_after, seed=seed)
    elapsed = time.monotonic() - started
    assert outcome.rolled_back, "the harness should have rolled some writes back"
    assert outcome.seen == outcome.log  # every committed row, once, in order: none skipped
    assert [p for p, _ in outcome.log] == list(range(1, len(outcome.log) + 1))  # gap-free
    assert {i for _, i in outcome.log} == outcome.committed
    async with pg_store.read() as tx:
        assert await tx.log.head(TENANT) == len(outcome.log)
        assert await tx.log.checkpoint(TENANT) == len(outcome.log)
    print(f"{len(outcome.log)} entries committed by {WRITERS} writers in {elapsed:.2f} s")


# --- (b) exactly-once gate with two stores --------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self._now = T0

    def now(self) -> datetime:
        self._now += timedelta(microseconds=1)
        return self._now


def services(store: SqlStore) -> Services:
    return Services(Deps(store, Clock(), UlidSource(), ReceiverLru(), combiner=Lanes()))


def record(receiver_id: str) -> RecordEvent:
    return RecordEvent(
        name="app",
        version="1.0",
        release="1",
        platform_id="x86_64",
        package="rpm",
        payload={},
        success=True,
        event_receiver_id=receiver_id,
    )


async def fire_at_once_repeatedly(first: Services, second: Services, rounds: int) -> None:
    tenant = await first.tenants.create(
        CreateTenant(slug="gate", name="Gate"), AppendMeta(actor="root")
    )
    who = Actor(tenant_id=tenant.id, principal="tester")
    for round_ in range(rounds):
        made = []
        for name in ("a", "b"):
            receiver, _ = await first.receivers.register(
                who, RegisterReceiver(name=f"{name}{round_}", type="t", version="1", schema={})
            )
            made.append(receiver.id)
        group = await first.groups.create(
            who, CreateGroup(name=f"g{round_}", type="t", version="1", event_receiver_ids=made)
        )
        for svc in (first, second):  # both caches warm: nothing but the write stands between
            await svc.deps.receivers_by_id(tenant.id, made)
        async with anyio.create_task_group() as tg:  # both start in the same loop tick
            tg.start_soon(second.events.record, who, record(made[1]))
            tg.start_soon(first.events.record, who, record(made[0]))
        fired = await second.groups.completions(who, group.id, CompletionFilter(), PageRequest())
        assert len(fired) == 1, f"round {round_}: the group fired {len(fired)} times"


async def two_stores(url: str, **options: Any) -> tuple[SqlStore, SqlStore]:
    await migrate(url)
    return await SqlStore.connect(url, **options), await SqlStore.connect(url, **options)


@pytest.mark.postgres
async def test_two_stores_fire_a_gate_exactly_once_on_postgres(fresh_database: str) -> None:
    one, two = await two_stores(fresh_database)
    try:
        assert one.engine is not two.engine
        await fire_at_once_repeatedly(services(one), services(two), GATE_ROUNDS)
    finally:
        await one.close()
        await two.close()


async def test_two_stores_fire_a_gate_exactly_once_on_sqlite(tmp_path: pathlib.Path) -> None:
    one, two = await two_stores(f"sqlite:///{tmp_path / 'gate.db'}")
    try:
        await fire_at_once_repeatedly(services(one), services(two), GATE_ROUNDS)
    finally:
        await one.close()
        await two.close()
