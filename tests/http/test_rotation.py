"""Rotating the signing key while events are being written: nothing is refused, tokens
signed before the rotation verify until their key's grace ends, and never after."""

from __future__ import annotations

from datetime import timedelta

import anyio
import anyio.lowlevel
import jwt
import pytest

from adapters.crypto.jwt import sign
from adapters.memory.identity import MemoryIdentity
from core.ports import AuditFilter, PageRequest
from entrypoints.settings import SecretsSettings, SecuritySettings
from tests.http.conftest import (
    HEADERS,
    MASTER_KEY,
    PLATFORM,
    TENANT,
    ManualClock,
    add_tenants,
    asgi_client,
    assert_problem,
    event_body,
    make_app,
    make_receiver,
    platform_identity,
    services_of,
    settings,
)
from tests.http.test_negative_tokens import payload, signing_keys

pytestmark = pytest.mark.anyio

TTL = 600
GRACE = 900


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_rotation_while_writing() -> None:
    clock = ManualClock()
    identity: MemoryIdentity = await platform_identity()
    config = settings(
        security=SecuritySettings(access_token_ttl_seconds=TTL),
        secrets=SecretsSettings(master_key=MASTER_KEY, grace_seconds=GRACE),
    )
    app = make_app(identity, clock=clock, config=config)
    async with asgi_client(app, headers=PLATFORM) as http:
        await add_tenants(http, identity, TENANT)
        producer = await http.post(
            "/api/v1/api-keys", json={"name": "ci", "role": "event_producer"}, headers=HEADERS
        )
        grant = {"grant_type": "api_key", "api_key": producer.json()["data"]["key"]}
        before = (await http.post("/api/v1/auth/token", data=grant)).json()["access_token"]
        old_kid = jwt.get_unverified_header(before)["kid"]
        receiver = await make_receiver(http)
        statuses: list[int] = []
        rotated = anyio.Event()

        async def writer(n: int) -> None:
            for i in range(40):
                answer = await http.post(
                    "/api/v1/events",
                    json=event_body(receiver, release=f"{n}.{i}"),
                    headers=bearer(before),
                )
                statuses.append(answer.status_code)
                if i == 20:
                    await rotated.wait()

        async with anyio.create_task_group() as tasks:
            for n in range(3):
                tasks.start_soon(writer, n)
            await anyio.lowlevel.checkpoint()
            await services_of(app).secrets.maintain(force=True)
            rotated.set()
        assert statuses == [201] * 120

        # a token issued now is signed by the new key; both keys are published
        after = (await http.post("/api/v1/auth/token", data=grant)).json()["access_token"]
        new_kid = jwt.get_unverified_header(after)["kid"]
        assert new_kid != old_kid
        kids = {k["kid"] for k in (await http.get("/.well-known/jwks.json")).json()["keys"]}
        assert kids == {old_kid, new_kid}

        # the old key verifies until its grace ends: a token it signed just before the end
        # is accepted, one presented at the end is not
        keys = await signing_keys(identity)
        [old] = [k for k in keys.values() if k.kid == old_kid]
        demoted_at = clock.current
        clock.set(demoted_at + timedelta(seconds=GRACE - 5))
        at = int(clock.current.timestamp())
        late = sign(old, {**payload(before), "iat": at, "nbf": at, "exp": at + 60})
        ok = await http.post("/api/v1/events", json=event_body(receiver), headers=bearer(late))
        assert ok.status_code == 201, ok.text
        clock.set(demoted_at + timedelta(seconds=GRACE + 1))
        refused = await http.post("/api/v1/events", json=event_body(receiver), headers=bearer(late))
        assert_problem(refused, 401)
        await services_of(app).secrets.maintain()  # the policy retires it now
        kids = {k["kid"] for k in (await http.get("/.well-known/jwks.json")).json()["keys"]}
        assert kids == {new_kid}
        # the key that replaced it keeps working throughout
        fresh = (await http.post("/api/v1/auth/token", data=grant)).json()["access_token"]
        ok = await http.post("/api/v1/events", json=event_body(receiver), headers=bearer(fresh))
        assert ok.status_code == 201
        rotations = [
            str(r.action)
            for r in await identity.audit.list(None, AuditFilter(), PageRequest(limit=1000))
            if r.action.startswith("secret.")
        ]
        assert rotations.count("secret.rotated") == 2  # the first key, then the forced one
