"""The Store port's contract: every backend must pass every test here."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.domain.envelope import REGISTRY
from core.domain.errors import Conflict, StreamVersionConflict
from core.domain.model import Tenant, TenantCreated, TenantModified
from core.ports import AppendMeta, NewEntry, PageRequest, Store

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)
META = AppendMeta(actor="tester", correlation_id="req-1", causation_id="cause-1")


def tenant(tid: str, slug: str, name: str = "Acme") -> Tenant:
    return Tenant(id=tid, slug=slug, name=name, created_at=T0, updated_at=T0)


def entry(eid: str, event: TenantCreated | TenantModified, expected: int) -> NewEntry:
    return NewEntry(id=eid, event=event, expected_version=expected, occurred_at=T0)


TA = "01J0000000000000000000000A"
TB = "01J0000000000000000000000B"


async def test_positions_are_gap_free_per_tenant_and_envelopes_round_trip(store: Store) -> None:
    a = tenant(TA, "alpha")
    async with store.write(TA) as tx:
        made = await tx.append(
            [
                entry("01J00000000000000000000001", TenantCreated(tenant=a), 0),
                entry("01J00000000000000000000002", TenantModified(tenant=a), 1),
            ],
            META,
        )
    assert made == [1, 2]
    async with store.write(TB) as tx:
        [other] = await tx.append(
            [entry("01J00000000000000000000003", TenantCreated(tenant=tenant(TB, "beta")), 0)], META
        )
    assert other == 1
    async with store.read() as tx:
        log = await tx.log.read(TA)
        assert [e.position for e in log] == [1, 2]
        assert [REGISTRY.decode_envelope(e) for e in log] == [
            TenantCreated(tenant=a),
            TenantModified(tenant=a),
        ]
        first = log[0]
        assert (first.stream, first.stream_version, first.actor) == (TA, 1, "tester")
        assert (first.correlation_id, first.causation_id) == ("req-1", "cause-1")
        assert first.occurred_at == T0
        assert await tx.log.read(TA, after=1) == log[1:]
        assert await tx.log.read(TA, after=0, limit=1) == log[:1]
        assert await tx.log.head(TA) == 2
        assert await tx.log.checkpoint(TA) == 2
        assert await tx.log.stream_version(TA, TA) == 2
        assert await tx.log.read_stream(TA, TA) == log
        assert sorted(await tx.tenant_ids()) == [TA, TB]
        assert await tx.log.heads() == {TA: 2, TB: 1}


async def test_append_many_gives_each_part_its_own_metadata_in_one_write(store: Store) -> None:
    a, b = tenant(TA, "alpha"), tenant(TB, "beta")
    first = AppendMeta(actor="one", correlation_id="req-1")
    second = AppendMeta(actor="two", correlation_id="req-2", causation_id="cause-2")
    async with store.write(TA) as tx:
        positions = await tx.append_many(
            [
                ([entry("01J00000000000000000000001", TenantCreated(tenant=a), 0)], first),
                ([], first),
                (
                    [
                        entry("01J00000000000000000000002", TenantModified(tenant=a), 1),
                        entry("01J00000000000000000000003", TenantCreated(tenant=b), 0),
                    ],
                    second,
                ),
            ]
        )
        assert positions == [1, 2, 3]
        assert await tx.append(
            [entry("01J00000000000000000000004", TenantModified(tenant=b), 1)], META
        ) == [4]
    async with store.read() as tx:
        log = await tx.log.read(TA)
        assert await tx.log.checkpoint(TA) == 4
        assert await tx.tenants.get(TB) == b
    assert [(e.position, e.actor, e.correlation_id, e.causation_id) for e in log] == [
        (1, "one", "req-1", None),
        (2, "two", "req-2", "cause-2"),
        (3, "two", "req-2", "cause-2"),
        (4, "tester", "req-1", "cause-1"),
    ]
    assert [e.stream_version for e in log] == [1, 2, 1, 2]


async def test_a_wrong_expected_version_is_a_conflict_and_writes_nothing(store: Store) -> None:
    a = tenant(TA, "alpha")
    async with store.write(TA) as tx:
        await tx.append([entry("01J00000000000000000000001", TenantCreated(tenant=a), 0)], META)
    for expected in (0, 2):
        with pytest.raises(StreamVersionConflict):
            async with store.write(TA) as tx:
                await tx.append(
                    [entry("01J00000000000000000000009", TenantModified(tenant=a), expected)],
                    META,
                )
    async with store.read() as rtx:
        assert await rtx.log.head(TA) == 1
        assert await rtx.log.stream_version(TA, TA) == 1


async def test_a_failed_block_leaves_no_trace(store: Store) -> None:
    class Boom(Exception):
        pass

    async def append_then_fail() -> None:
        async with store.write(TA) as tx:
            await tx.append(
                [entry("01J00000000000000000000001", TenantCreated(tenant=tenant(TA, "alpha")), 0)],
                META,
            )
            raise Boom

    with pytest.raises(Boom):
        await append_then_fail()
    async with store.read() as rtx:
        assert await rtx.log.head(TA) == 0
        assert await rtx.log.heads() == {}  # no tenant with a log
        assert await rtx.tenants.by_slug("alpha") is None
    # and the tenant can still be written afterwards
    async with store.write(TA) as tx:
        await tx.append(
            [entry("01J00000000000000000000001", TenantCreated(tenant=tenant(TA, "alpha")), 0)],
            META,
        )
    async with store.read() as rtx:
        assert await rtx.log.head(TA) == 1


async def test_tenant_read_model_and_unique_slug(store: Store) -> None:
    a = tenant(TA, "alpha")
    async with store.write(TA) as tx:
        await tx.append([entry("01J00000000000000000000001", TenantCreated(tenant=a), 0)], META)
    with pytest.raises(Conflict):
        async with store.write(TB) as tx:
            await tx.append(
                [entry("01J00000000000000000000002", TenantCreated(tenant=tenant(TB, "alpha")), 0)],
                META,
            )
    async with store.read() as tx:
        assert await tx.tenants.get(TA) == a
        assert await tx.tenants.by_slug("alpha") == a
        assert await tx.tenants.get(TB) is None
        assert await tx.tenants.list(PageRequest()) == [a]


async def test_rebuild_reproduces_the_read_models(store: Store) -> None:
    a, b = tenant(TA, "alpha"), tenant(TB, "beta")
    async with store.write(TA) as tx:
        await tx.append([entry("01J00000000000000000000001", TenantCreated(tenant=a), 0)], META)
    async with store.write(TB) as tx:
        await tx.append([entry("01J00000000000000000000002", TenantCreated(tenant=b), 0)], META)
    async with store.read() as tx:
        before = await tx.digest()
    async with store.rebuild() as target:
        for tenant_id in await target.tenant_ids():
            async for batch in target.log(tenant_id):
                await target.apply(tenant_id, batch)
    async with store.read() as tx:
        assert await tx.digest() == before
        assert await tx.tenants.by_slug("beta") == b
