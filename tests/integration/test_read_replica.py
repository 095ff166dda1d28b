"""Read replicas against a real streaming standby (pg_basebackup -R of the session's
PostgreSQL): stale-tolerant reads go to it, read-your-writes holds, a lagging replica is
skipped, and a replica that goes away leaves reads on the primary and readiness degraded."""

from __future__ import annotations

import time

import anyio
import pytest

from adapters.memory.cache import ReceiverLru
from adapters.sql import replica as replica_module
from adapters.sql.migrations import migrate
from adapters.sql.replica import ReplicaStore
from adapters.sql.store import SqlStore
from adapters.system import SystemClock, UlidSource
from core.domain.access import Role
from core.domain.commands import CreateTenant, RegisterReceiver
from core.ports import AppendMeta, EventFilter, PageRequest, Unavailable
from core.usecases import Actor, Deps, Services
from tests.contract.test_usecases import event
from tests.http.conftest import (
    ACME_KEY,
    HEADERS,
    PLATFORM,
    asgi_client,
    event_body,
    make_app,
    platform_identity,
    seed_key,
)
from tests.servers import ReplicaServer, running_postgres

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


class Clock:
    """Monotonic time that a test may move forward."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.ahead


async def _replica_store(
    primary: str, replica: str, max_lag: float = 1000.0, **kw: object
) -> ReplicaStore:
    return ReplicaStore(await SqlStore.connect(primary), replica, max_lag=max_lag, **kw)  # type: ignore[arg-type]


def _services(store: ReplicaStore) -> Services:
    return Services(Deps(store, SystemClock(), UlidSource(), ReceiverLru()))


@pytest.fixture
async def database(
    fresh_database: str, postgres_replica: ReplicaServer
) -> tuple[str, str, ReplicaServer]:
    await migrate(fresh_database)
    await anyio.to_thread.run_sync(postgres_replica.caught_up)
    return fresh_database, postgres_replica.url(fresh_database), postgres_replica


async def _tenant(services: Services) -> tuple[Actor, str]:
    tenant = await services.tenants.create(
        CreateTenant(slug="acme", name="Acme"), AppendMeta(actor="tests")
    )
    who = Actor(tenant_id=tenant.id, principal="tests")
    made, _ = await services.receivers.register(
        who, RegisterReceiver(name="build", type="ci", version="1", schema={})
    )
    return who, made.id


async def _ids(services: Services, who: Actor) -> set[str]:
    found = await services.events.list(who, EventFilter(), PageRequest(limit=1000))
    return {e.id for e in found}


async def test_stale_reads_come_from_the_replica_and_read_your_writes_holds(
    database: tuple[str, str, ReplicaServer],
) -> None:
    primary, replica_url, replica = database
    writer = await _replica_store(primary, replica_url)
    other = await _replica_store(primary, replica_url)  # another server process
    lagging = await _replica_store(primary, replica_url, max_lag=0.5)
    try:
        services, elsewhere = _services(writer), _services(other)
        who, receiver = await _tenant(services)
        first = await services.events.record(who, event(receiver))
        await anyio.to_thread.run_sync(replica.caught_up)
        assert await _ids(elsewhere, who) == {first.id}
        assert other.served == {"replica": 1, "primary": 0}

        replica.pause_replay()  # the replica falls behind on purpose
        try:
            second = await services.events.record(who, event(receiver))
            # the process that wrote reads its write (the Location GET): from the primary
            assert (await services.events.get(who, second.id)).id == second.id
            assert writer.served["primary"] >= 1
            # another process reads the replica's state: without the new event
            assert await _ids(elsewhere, who) == {first.id}
            assert other.served["replica"] == 2
            # what decides reads the primary whatever happens
            async with other.read() as tx:
                assert await tx.log.head(who.tenant_id) == 4
            # a replica further behind than read_max_lag_seconds is skipped
            await anyio.sleep(1.2)
            assert await _ids(_services(lagging), who) == {first.id, second.id}
            assert lagging.served["primary"] == 1
            assert lagging.readiness()[0] == "degraded"
        finally:
            replica.resume_replay()
        await anyio.to_thread.run_sync(replica.caught_up)
        assert await _ids(elsewhere, who) == {first.id, second.id}
        assert other.served["replica"] == 3
    finally:
        for store in (writer, other, lagging):
            await store.close()


async def test_when_the_replica_goes_away_reads_fall_back_and_readiness_degrades(
    database: tuple[str, str, ReplicaServer],
) -> None:
    primary, replica_url, replica = database
    clock = Clock()
    store = await _replica_store(primary, replica_url, clock=clock)
    services = _services(store)
    who, receiver = await _tenant(services)
    made = await services.events.record(who, event(receiver))
    await anyio.to_thread.run_sync(replica.caught_up)
    app = make_app(await platform_identity(), store=store)
    async with asgi_client(app, headers=PLATFORM) as client:
        ready = (await client.get("/healthz/ready")).json()
        assert ready["status"] == "ok"
        assert ready["components"]["replica"]["status"] == "ok"
        assert await _ids(services, who) == {made.id}
        assert store.served["replica"] == 1

        await anyio.to_thread.run_sync(replica.stop)
        try:
            assert await _ids(services, who) == {made.id}  # no error: from the primary
            assert await _ids(services, who) == {made.id}  # not tried again for a while
            assert store.served["primary"] == 2
            answer = await client.get("/healthz/ready")
            assert answer.status_code == 200  # it serves, degraded
            ready = answer.json()
            assert ready["status"] == "degraded"
            assert ready["components"]["replica"]["status"] == "degraded"
            assert "reads go to the primary" in ready["components"]["replica"]["detail"]
            metrics = (await client.get("/metrics")).text
            assert 'waypost_ready{component="replica"} 0.5' in metrics
        finally:
            await anyio.to_thread.run_sync(replica.start)
        # back: once its retry time has come (again, while the standby is still starting)
        for _ in range(40):
            clock.ahead += replica_module.RETRY_SECONDS + 1
            assert await _ids(services, who) == {made.id}
            if store.served["replica"] == 2:
                break
            await anyio.sleep(0.25)
        assert store.served["replica"] == 2, store.readiness()
        ready = (await client.get("/healthz/ready")).json()
        assert ready["status"] == "ok"


@pytest.mark.slow
async def test_while_the_primary_is_down_writes_are_503_and_the_replica_keeps_reading() -> None:
    """The primary is the database that must serve: while it is down, writes and the reads
    that decide are 503 with Retry-After (never a 500, nothing written); stale-tolerant
    reads stay on the replica while it serves, and are 503 once it is gone too. A cluster
    of the test's own, which it stops (the session's serves every other test)."""
    with running_postgres() as primary_server:
        replica_server = ReplicaServer(primary_server)
        try:
            primary = primary_server.url()
            await migrate(primary)
            await anyio.to_thread.run_sync(replica_server.caught_up)
            store = await _replica_store(primary, replica_server.url(primary))
            who, receiver = await _tenant(_services(store))
            await anyio.to_thread.run_sync(replica_server.caught_up)
            identity = await platform_identity()
            await seed_key(identity, ACME_KEY, tenant_id=who.tenant_id, role=Role.ADMIN)
            app = make_app(identity, store=store)
            async with asgi_client(app, headers=HEADERS) as client:
                assert (await client.get("/api/v1/events")).status_code == 200

                await anyio.to_thread.run_sync(primary_server.stop)
                answer = await client.post("/api/v1/events", json=event_body(receiver))
                assert answer.status_code == 503, answer.text
                assert answer.headers["retry-after"] == "1"
                assert answer.json()["type"] == "urn:waypost:problem:unavailable"
                with pytest.raises(Unavailable):
                    async with store.read() as tx:  # what decides: the primary's
                        await tx.log.head(who.tenant_id)
                served = store.served["replica"]
                assert (await client.get("/api/v1/events")).status_code == 200
                assert store.served["replica"] == served + 1

                await anyio.to_thread.run_sync(replica_server.stop)
                answer = await client.get("/api/v1/events")
                assert answer.status_code == 503, answer.text
                assert answer.headers["retry-after"] == "1"

                await anyio.to_thread.run_sync(primary_server.start)
                await anyio.to_thread.run_sync(replica_server.start)
                for _ in range(40):  # the pool's connections are new ones: no restart
                    answer = await client.post("/api/v1/events", json=event_body(receiver))
                    if answer.status_code == 201:
                        break
                    await anyio.sleep(0.1)
                assert answer.status_code == 201, answer.text
        finally:
            await store.close()
            replica_server.stop()
