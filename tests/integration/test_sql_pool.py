"""More concurrent writers than PostgreSQL connections: everyone is served, promptly.

Connections circulate through the store's own idle list, not back to SQLAlchemy's
pool, so waiting on the pool's queue would never be woken: the store bounds
connections with its own FIFO semaphore instead. This test starved (30 s pool
timeout, then an error) before that.
"""

from __future__ import annotations

import anyio
import pytest

from adapters.groupcommit import Lanes
from adapters.memory.cache import ReceiverLru
from adapters.sql.migrations import migrate
from adapters.sql.store import SqlStore
from adapters.system import SystemClock, UlidSource
from core.domain.commands import CreateTenant, RecordEvent, RegisterReceiver
from core.ports import EventFilter, PageRequest
from core.usecases import Actor, Deps, Services

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


async def test_writers_beyond_the_pool_size_are_all_served(fresh_database: str) -> None:
    await migrate(fresh_database)
    store = await SqlStore.connect(fresh_database, pool_size=2)
    try:
        services = Services(
            Deps(store, SystemClock(), UlidSource(), ReceiverLru(), combiner=Lanes())
        )
        tenant = await services.tenants.create(
            CreateTenant(slug="pool", name="Pool"), Actor(tenant_id="-", principal="t").meta()
        )
        actor = Actor(tenant_id=tenant.id, principal="t")
        receiver, _ = await services.receivers.register(
            actor, RegisterReceiver(name="r", type="t", version="1", schema={})
        )
        event = RecordEvent(
            name="a",
            version="1",
            release="1",
            platform_id="p",
            package="k",
            success=True,
            event_receiver_id=receiver.id,
        )
        with anyio.fail_after(10):  # the pool's own timeout is 30 s
            async with anyio.create_task_group() as tg:
                for _ in range(30):
                    tg.start_soon(services.events.record, actor, event)
        found = await services.events.list(actor, EventFilter(), PageRequest(limit=100))
        assert len(found) == 30
    finally:
        await store.close()
