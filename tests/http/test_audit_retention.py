"""`audit.retention_days`: the servers' housekeeping deletes audit records past it, hourly,
and records that it did."""

from __future__ import annotations

from datetime import timedelta

import pytest

from adapters.memory.identity import MemoryIdentity
from entrypoints.settings import AuditSettings, SettingsError, load_settings
from tests.http.conftest import (
    HEADERS,
    PLATFORM,
    ManualClock,
    add_tenants,
    asgi_client,
    make_app,
    services_of,
    settings,
)

pytestmark = pytest.mark.anyio


async def test_records_past_their_retention_are_purged_hourly(
    identity: MemoryIdentity, clock: ManualClock
) -> None:
    app = make_app(identity, clock=clock, config=settings(audit=AuditSettings(retention_days=30)))
    async with asgi_client(app, headers=PLATFORM) as client:
        await add_tenants(client, identity)
        refused = await client.get("/api/v1/events", headers={"Authorization": "Bearer wp_x"})
        assert refused.status_code == 401
        old = await client.get("/api/v1/audit", params={"limit": 1000})
        platform_before = len(old.json()["data"])
        assert platform_before >= 3  # tenants created, a refused credential, keys loaded
        identity_service = services_of(app).identity

        clock.set(clock.current + timedelta(days=29))
        await identity_service.housekeeping()  # nothing is 30 days old yet
        assert len((await client.get("/api/v1/audit")).json()["data"]) == platform_before

        clock.set(clock.current + timedelta(days=2))
        await client.get("/api/v1/events", headers={"Authorization": "Bearer wp_y"})  # new
        await identity_service.housekeeping()  # purged at the first check after 29 days
        clock.set(clock.current + timedelta(days=2))
        await identity_service.housekeeping()  # within the hour: not purged again

        left = (await client.get("/api/v1/audit")).json()["data"]
        actions = [r["action"] for r in left]
        assert "tenant.created" not in actions
        assert "auth.refused" in actions  # the new one stays
        [purge] = [r for r in left if r["action"] == "audit.purged"]
        assert purge["actor"] == "system"
        assert purge["reason"].startswith(f"{platform_before} record(s) older than")
        acme = await client.get("/api/v1/audit", headers=HEADERS)
        assert acme.status_code == 200


async def test_without_retention_nothing_is_deleted(
    identity: MemoryIdentity, clock: ManualClock
) -> None:
    app = make_app(identity, clock=clock)
    async with asgi_client(app, headers=PLATFORM) as client:
        await add_tenants(client, identity)
        before = (await client.get("/api/v1/audit")).json()["data"]
        clock.set(clock.current + timedelta(days=3650))
        await services_of(app).identity.housekeeping()
        assert (await client.get("/api/v1/audit")).json()["data"] == before


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
def test_the_setting(anyio_backend: str) -> None:
    assert load_settings({}).audit.retention_days == 0
    assert load_settings({"WAYPOST__AUDIT__RETENTION_DAYS": "365"}).audit.retention_days == 365
    with pytest.raises(SettingsError, match=r"audit\.retention_days"):
        load_settings({"WAYPOST__AUDIT__RETENTION_DAYS": "-1"})
