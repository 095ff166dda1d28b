"""The Idempotency-Key records' contract (`IdempotencyReads`/`IdempotencyWrites`, the
`record` of `UserStore.add` and `ApiKeyStore.add`, `Store.purge_idempotency`), and the use
cases that claim requests, on memory, SQLite and PostgreSQL.

What it pins down: a record commits with the write it answers or not at all; a second
record of a key is `KeyInUse` and rolls its whole transaction back; several records join
one transaction; a concurrent writer of the same key waits for the first and is refused;
the store and the identity stores share one set of records; retention deletes only
expired records; a claimed use case replays its first answer, also from another store
opened on the same database (another process)."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import anyio
import msgspec
import pytest

from adapters.memory.cache import ReceiverLru
from adapters.memory.identity import MemoryIdentity
from adapters.memory.store import MemoryStore
from adapters.system import UlidSource
from core.domain.access import Role
from core.domain.commands import CreateTenant, RecordEvent, RegisterReceiver
from core.domain.errors import Conflict, Invalid
from core.domain.idempotency import (
    RETENTION,
    AlreadyAnswered,
    Answer,
    Claim,
    KeyInUse,
    KeyReused,
    Record,
)
from core.domain.identity import User
from core.domain.model import Tenant, TenantCreated
from core.ports import AppendMeta, IdentityStore, NewEntry, Store
from core.usecases import Actor, Deps, Recorded, Services
from core.usecases.common import Once
from tests.backends import BACKENDS

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)
META = AppendMeta(actor="tester")
TA = "01J0000000000000000000000A"
TB = "01J0000000000000000000000B"


@dataclass
class Backend:
    name: str
    store: Store
    identity: IdentityStore
    url: str | None  # SQL: where another "process" opens the same database


@asynccontextmanager
async def _open(url: str | None) -> AsyncIterator[tuple[Store, IdentityStore]]:
    if url is None:
        store = MemoryStore()
        yield store, MemoryIdentity(store.records)
        return
    from adapters.sql.identity import SqlIdentity
    from adapters.sql.store import SqlStore

    sql = await SqlStore.connect(url)
    people = await SqlIdentity.connect(url)
    try:
        yield sql, people
    finally:
        await people.close()
        await sql.close()


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> AsyncIterator[Backend]:
    name: str = request.param
    url: str | None = None
    if name == "postgres":
        request.applymarker(pytest.mark.postgres)
        url = request.getfixturevalue("fresh_database")
    elif name == "sqlite":
        url = f"sqlite:///{tmp_path / 'waypost.db'}"
    if url is not None:
        from adapters.sql.migrations import migrate

        await migrate(url)
    async with _open(url) as (store, identity):
        yield Backend(name, store, identity, url)


def record(key: str, scope: str = TA, at: datetime = T0, body: bytes = b'{"data":"x"}') -> Record:
    return Record(
        scope=scope,
        key=key,
        fingerprint="f-" + key,
        answer=Answer(status=201, body=body, location=f"/x/{key}"),
        created_at=at,
    )


def tenant_entry(tid: str, slug: str) -> NewEntry:
    tenant = Tenant(id=tid, slug=slug, name=slug, created_at=T0, updated_at=T0)
    return NewEntry(
        id=UlidSource().new_id(), event=TenantCreated(tenant=tenant), expected_version=0,
        occurred_at=T0,
    )  # fmt: skip


async def write(store: Store, *records: Record, append: bool = False, fail: bool = False) -> None:
    """One write transaction of TA: the records, a tenant's creation if `append`, then a
    failure if `fail`."""
    async with store.write(TA) as tx:
        for made in records:
            tx.idempotency.add(made)
        if append:
            await tx.append([tenant_entry(TA, "alpha")], META)
        if fail:
            raise RuntimeError("boom")


async def stored(store: Store, scope: str, key: str) -> Record | None:
    async with store.read() as tx:
        return await tx.idempotency.get(scope, key)


async def test_a_record_commits_with_the_append_it_answers(backend: Backend) -> None:
    store = backend.store
    assert await stored(store, TA, "k") is None
    async with store.write(TA) as tx:
        tx.idempotency.add(record("k", body=b"\x00\xffbinary"))
        await tx.append([tenant_entry(TA, "alpha")], META)
        assert await tx.idempotency.get(TA, "x") is None
    found = await stored(store, TA, "k")
    assert found == record("k", body=b"\x00\xffbinary")


async def test_a_record_without_an_append_commits_at_the_end(backend: Backend) -> None:
    async with backend.store.write(TA) as tx:
        tx.idempotency.add(record("alone"))
    assert await stored(backend.store, TA, "alone") == record("alone")


async def test_a_failed_block_leaves_neither_the_write_nor_the_record(backend: Backend) -> None:
    store = backend.store
    with pytest.raises(RuntimeError, match="boom"):
        await write(store, record("k"), append=True, fail=True)
    assert await stored(store, TA, "k") is None
    async with store.read() as rtx:
        assert await rtx.log.head(TA) == 0


async def test_a_taken_key_is_key_in_use_and_rolls_the_whole_write_back(
    backend: Backend,
) -> None:
    store = backend.store
    await write(store, record("k"))
    for appended in (True, False):
        with pytest.raises(KeyInUse):
            await write(store, record("k", body=b"second"), append=appended)
        assert await stored(store, TA, "k") == record("k")
    async with store.read() as rtx:
        assert await rtx.log.head(TA) == 0


async def test_several_records_of_several_key_spaces_join_one_transaction(
    backend: Backend,
) -> None:
    """A group commit's requests: one transaction, one append, every answer stored."""
    store = backend.store
    records = [record("a"), record("b"), record("a", scope=""), record("c", scope=TB)]
    async with store.write(TA) as tx:
        for made in records:
            tx.idempotency.add(made)
        await tx.append([tenant_entry(TA, "alpha")], META)
    for made in records:
        assert await stored(store, made.scope, made.key) == made
    with pytest.raises(KeyInUse):
        await write(store, record("d"), record("d", body=b"twice in one transaction"))
    assert await stored(store, TA, "d") is None


async def test_an_expired_record_is_replaced_in_the_same_transaction(backend: Backend) -> None:
    store = backend.store
    async with store.write(TA) as tx:
        tx.idempotency.add(record("old"))
    later = record("old", at=T0 + RETENTION + timedelta(seconds=1), body=b"new")
    async with store.write(TA) as tx:
        await tx.idempotency.remove(TA, "old")
        assert await tx.idempotency.get(TA, "old") is None
        tx.idempotency.add(later)
    assert await stored(store, TA, "old") == later


async def test_a_concurrent_writer_of_the_same_key_waits_for_the_first_and_is_refused(
    backend: Backend,
) -> None:
    """Two tenants' writers (two locks) store one platform key: the second waits for the
    first's commit (PostgreSQL: the primary key; SQLite: its one writer) and gets KeyInUse."""
    store = backend.store
    first_holds = anyio.Event()
    release = anyio.Event()
    outcome: dict[str, str] = {}

    async def writer(tenant_id: str, hold: bool) -> None:
        try:
            async with store.write(tenant_id) as tx:
                tx.idempotency.add(record("shared", scope="", body=tenant_id.encode()))
                await tx.append([tenant_entry(tenant_id, tenant_id[-1].lower() * 3)], META)
                if hold:
                    first_holds.set()
                    await release.wait()
            outcome[tenant_id] = "committed"
        except KeyInUse:
            outcome[tenant_id] = "key in use"

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(writer, TA, True)
            await first_holds.wait()
            tasks.start_soon(writer, TB, False)
            await anyio.sleep(0.2)
            assert TB not in outcome or backend.name == "memory"
            release.set()
    if backend.name == "memory":  # no transaction spans an await: the first to commit wins
        assert sorted(outcome.values()) == ["committed", "key in use"]
    else:
        assert outcome == {TA: "committed", TB: "key in use"}
    found = await stored(store, "", "shared")
    assert found is not None
    winner = TA if outcome[TA] == "committed" else TB
    assert found.answer.body == winner.encode()
    async with store.read() as rtx:
        assert await rtx.log.head(winner) == 1
        assert await rtx.log.head(TB if winner == TA else TA) == 0


async def test_purge_deletes_expired_records_only_in_batches(backend: Backend) -> None:
    store = backend.store
    async with store.write(TA) as tx:
        for n in range(5):
            tx.idempotency.add(record(f"old{n}", at=T0))
        tx.idempotency.add(record("live", at=T0 + timedelta(hours=1)))
        tx.idempotency.add(record("other", scope=TB, at=T0 + timedelta(minutes=1)))
    cutoff = T0 + timedelta(minutes=30)
    assert await store.purge_idempotency(cutoff, 2) == 2
    assert await store.purge_idempotency(cutoff, 100) == 4
    assert await store.purge_idempotency(cutoff, 100) == 0
    assert await stored(store, TA, "live") is not None
    assert await stored(store, TB, "other") is None
    assert await stored(store, TA, "old0") is None


def user(n: int) -> User:
    return User(
        id=f"01J{n:023d}",
        tenant_id=TA,
        username=f"user{n}",
        roles=(Role.ADMIN,),
        password_hash="$scrypt$x",
        created_at=T0,
        updated_at=T0,
    )


async def test_the_identity_stores_share_the_stores_records(backend: Backend) -> None:
    store, people = backend.store, backend.identity
    await people.users.add(user(1), record("u"))
    assert await stored(store, TA, "u") == record("u")
    with pytest.raises(KeyInUse):
        await people.users.add(user(2), record("u", body=b"other"))
    assert await people.users.get(TA, user(2).id) is None
    async with store.write(TA) as tx:
        tx.idempotency.add(record("s"))
    with pytest.raises(Conflict):
        await people.users.add(user(3), record("s"))
    assert await people.users.get(TA, user(3).id) is None
    # An expired record of the key is replaced.
    later = record("s", at=T0 + RETENTION + timedelta(seconds=1), body=b"later")
    await people.users.add(user(4), later)
    assert await stored(store, TA, "s") == later


class StepClock:
    def __init__(self) -> None:
        self.now_at = T0

    def now(self) -> datetime:
        self.now_at += timedelta(milliseconds=1)
        return self.now_at


def services(store: Store, clock: StepClock) -> Services:
    return Services(Deps(store, clock, UlidSource(), ReceiverLru()))


def answered(outcome: Recorded) -> Answer:
    return Answer(status=201, body=outcome.events[0].id.encode())


async def test_a_claimed_use_case_replays_its_first_answer_from_any_store(
    backend: Backend,
) -> None:
    """The record outlives the store that wrote it: another store on the same database (as
    another server process would open it) replays the answer."""
    clock = StepClock()
    first = services(backend.store, clock)
    tenant = await first.tenants.create(CreateTenant(slug="acme", name="Acme"), META)
    who = Actor(tenant_id=tenant.id, principal="tester")
    receiver, _ = await first.receivers.register(
        who, RegisterReceiver(name="r", type="t", version="1", description="", schema={})
    )
    cmd = RecordEvent(
        name="app", version="1", release="1", platform_id="p", package="k", description="",
        payload={}, success=True, event_receiver_id=receiver.id,
    )  # fmt: skip
    claim = Claim(tenant.id, "retry-me", "fingerprint-1")
    outcome = await first.events.record_outcome(who, cmd, Once(claim, answered))
    async with AsyncExitStack() as stack:
        if backend.url is None:
            other = first
        else:
            other_store, _ = await stack.enter_async_context(_open(backend.url))
            other = services(other_store, clock)
        with pytest.raises(AlreadyAnswered) as replayed:
            await other.events.record_outcome(who, cmd, Once(claim, answered))
        assert replayed.value.answer == answered(outcome)
        with pytest.raises(KeyReused):
            await other.events.record_outcome(
                who, cmd, Once(Claim(tenant.id, "retry-me", "another body"), answered)
            )
        # A refused request stores nothing: the key stays free.
        bad = Claim(tenant.id, "refused", "f")
        unknown = msgspec.structs.replace(cmd, event_receiver_id="01J00000000000000000000000")
        with pytest.raises(Invalid):
            await other.events.record_outcome(who, unknown, Once(bad, answered))
        async with other.deps.store.read() as tx:
            assert await tx.idempotency.get(tenant.id, "refused") is None
            events = await tx.log.head(tenant.id)
    assert events == 3  # the receiver, the event, and no second event


async def test_an_expired_record_in_the_way_of_a_new_event_is_replaced(backend: Backend) -> None:
    """Past its retention but not purged yet: the store refuses the key (KeyInUse), the use
    case deletes the expired record and records the event."""
    clock = StepClock()
    services_ = services(backend.store, clock)
    tenant = await services_.tenants.create(CreateTenant(slug="acme", name="Acme"), META)
    who = Actor(tenant_id=tenant.id, principal="tester")
    receiver, _ = await services_.receivers.register(
        who, RegisterReceiver(name="r", type="t", version="1", description="", schema={})
    )
    old = record("again", scope=tenant.id, at=clock.now_at - RETENTION - timedelta(seconds=1))
    await write(backend.store, old)
    with pytest.raises(KeyInUse):  # the store itself replaces nothing
        await write(backend.store, record("again", scope=tenant.id, at=clock.now_at))
    cmd = RecordEvent(
        name="app", version="1", release="1", platform_id="p", package="k", description="",
        payload={}, success=True, event_receiver_id=receiver.id,
    )  # fmt: skip
    claim = Claim(tenant.id, "again", "a new request")
    outcome = await services_.events.record_outcome(who, cmd, Once(claim, answered))
    found = await stored(backend.store, tenant.id, "again")
    assert found is not None
    assert found.answer == answered(outcome)
    assert found.fingerprint == "a new request"
