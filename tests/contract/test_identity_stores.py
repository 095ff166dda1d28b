"""One contract for the identity stores, run on memory, SQLite and PostgreSQL."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import anyio
import msgspec
import pytest

from core.domain.access import Role
from core.domain.audit import AuditAction, AuditRecord, Outcome
from core.domain.errors import Conflict
from core.domain.identity import (
    ApiKey,
    FamilyState,
    TokenState,
    User,
    revoke_api_key,
    revoke_family,
    rotate_refresh,
    start_family,
)
from core.domain.rotation import (
    RotationPolicy,
    SecretVersion,
    VersionState,
    apply,
    plan,
)
from core.ports import AuditFilter, IdentityStore, PageRequest, SecretRecord
from tests.backends import BACKENDS, open_identity

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ACME = "01HACMEACMEACMEACMEACMEACM"
GLOBEX = "01HGL0BEXGL0BEXGL0BEXGL0BE"


@pytest.fixture(params=BACKENDS)
async def identity(
    request: pytest.FixtureRequest, tmp_path: pathlib.Path
) -> AsyncIterator[IdentityStore]:
    backend: str = request.param
    if backend == "postgres":
        request.applymarker(pytest.mark.postgres)
    async with open_identity(backend, request, tmp_path) as opened:
        yield opened


def ulid(n: int) -> str:
    return f"01J{n:023d}"


def user(n: int, tenant_id: str | None = ACME, name: str | None = None) -> User:
    return User(
        id=ulid(n),
        tenant_id=tenant_id,
        username=name or f"user{n}",
        roles=(Role.ADMIN,) if tenant_id else (Role.PLATFORM_ADMIN,),
        password_hash=f"$scrypt$hash{n}",
        created_at=T0 + timedelta(microseconds=n),
        updated_at=T0 + timedelta(microseconds=n),
    )


def key(n: int, tenant_id: str | None = ACME, prefix: str | None = None) -> ApiKey:
    return ApiKey(
        id=ulid(n),
        tenant_id=tenant_id,
        name=f"key {n}",
        prefix=prefix or f"pre{n:05d}",
        secret_hash=f"sha256${n:064x}",
        roles=(Role.EVENT_PRODUCER,) if tenant_id else (Role.PLATFORM_ADMIN,),
        created_at=T0,
        created_by="user:x",
        expires_at=T0 + timedelta(days=1) if n % 2 else None,
    )


# --- users ------------------------------------------------------------------------------------


async def test_users_round_trip_and_stay_in_their_tenant(identity: IdentityStore) -> None:
    users = identity.users
    alice = user(1, name="alice")
    await users.add(alice)
    await users.add(user(2, GLOBEX, name="alice"))  # the same name in another tenant
    await users.add(user(3, None, name="alice"))  # and among platform administrators
    assert await users.get(ACME, alice.id) == alice
    assert await users.get(GLOBEX, alice.id) is None
    assert await users.get(None, alice.id) is None
    assert await users.by_username(ACME, "alice") == alice
    assert (await users.by_username(None, "alice")) == user(3, None, name="alice")
    assert await users.by_username(ACME, "bob") is None
    with pytest.raises(Conflict):
        await users.add(user(4, name="alice"))


async def test_users_update_delete_and_list(identity: IdentityStore) -> None:
    users = identity.users
    for n in range(1, 6):
        await users.add(user(n))
    await users.add(user(9, GLOBEX))
    changed = msgspec.structs.replace(
        user(2), roles=(Role.EVENT_VIEWER,), disabled=True, updated_at=T0 + timedelta(hours=1)
    )
    await users.update(changed)
    assert await users.get(ACME, changed.id) == changed
    await users.update(msgspec.structs.replace(user(9, GLOBEX), tenant_id=ACME))  # not its own
    assert await users.get(GLOBEX, ulid(9)) == user(9, GLOBEX)
    assert await users.delete(GLOBEX, ulid(3)) is False
    assert await users.delete(ACME, ulid(3)) is True
    assert await users.delete(ACME, ulid(3)) is False
    assert await users.get(ACME, ulid(3)) is None
    first = await users.list(ACME, PageRequest(limit=2))
    assert [u.id for u in first] == [ulid(5), ulid(4)]
    rest = await users.list(ACME, PageRequest(limit=10, after=first[-1].id))
    assert [u.id for u in rest] == [ulid(2), ulid(1)]
    ascending = await users.list(ACME, PageRequest(limit=10, order="asc"))
    assert [u.id for u in ascending] == [ulid(1), ulid(2), ulid(4), ulid(5)]
    assert [u.id for u in await users.list(GLOBEX, PageRequest())] == [ulid(9)]
    assert await users.list(None, PageRequest()) == []


# --- API keys ---------------------------------------------------------------------------------


async def test_api_keys(identity: IdentityStore) -> None:
    keys = identity.api_keys
    assert await keys.any_platform_key() is False
    for n in range(1, 4):
        await keys.add(key(n))
    await keys.add(key(7, GLOBEX))
    with pytest.raises(Conflict):
        await keys.add(key(8, prefix=key(1).prefix))
    assert await keys.get(ACME, ulid(1)) == key(1)
    assert await keys.get(GLOBEX, ulid(1)) is None
    assert await keys.find(ulid(7)) == key(7, GLOBEX)  # whichever scope
    assert await keys.find(ulid(99)) is None
    assert await keys.by_prefix(key(2).prefix) == key(2)
    assert await keys.by_prefix("nothere0") is None
    revoked = revoke_api_key(key(2), now=T0 + timedelta(minutes=1))
    await keys.update(revoked)
    assert await keys.by_prefix(key(2).prefix) == revoked
    assert [k.id for k in await keys.list(ACME, PageRequest())] == [ulid(3), ulid(2), ulid(1)]
    assert [k.id for k in await keys.list(GLOBEX, PageRequest())] == [ulid(7)]
    assert await keys.any_platform_key() is False
    platform = revoke_api_key(key(9, None), now=T0)
    await keys.add(platform)
    assert await keys.any_platform_key() is True  # even a revoked one counts
    assert await keys.list(None, PageRequest()) == [platform]


# --- refresh tokens ---------------------------------------------------------------------------


async def test_refresh_rotation_is_a_compare_and_set(identity: IdentityStore) -> None:
    store = identity.refresh
    fam, first = start_family(
        family_id=ulid(1), tenant_id=ACME, subject="user:u1", token_hash="h1", now=T0
    )
    await store.start(fam, first)
    assert await store.find("h1") == (fam, first)
    assert await store.find("nope") is None
    used, fresh = rotate_refresh(fam, first, new_token_hash="h2", now=T0 + timedelta(minutes=1))
    assert await store.rotate(used, fresh) is True
    assert await store.find("h1") == (fam, used)
    assert await store.find("h2") == (fam, fresh)
    # the same token rotated again (a second request that read it before): refused
    _, other = rotate_refresh(fam, first, new_token_hash="h3", now=T0 + timedelta(minutes=2))
    assert await store.rotate(used, other) is False
    assert await store.find("h3") is None
    revoked = revoke_family(fam, now=T0 + timedelta(minutes=3), reason="reuse")
    await store.save_family(revoked)
    found = await store.find("h2")
    assert found is not None
    assert found[0] == revoked
    assert found[0].state == FamilyState.REVOKED
    assert found[1].state == TokenState.CURRENT


async def test_concurrent_rotations_let_exactly_one_win(identity: IdentityStore) -> None:
    store = identity.refresh
    fam, first = start_family(
        family_id=ulid(1), tenant_id=ACME, subject="user:u1", token_hash="h1", now=T0
    )
    await store.start(fam, first)
    wins: list[bool] = []

    async def rotate(n: int) -> None:
        used, fresh = rotate_refresh(fam, first, new_token_hash=f"new{n}", now=T0)
        wins.append(await store.rotate(used, fresh))

    async with anyio.create_task_group() as tg:
        for n in range(5):
            tg.start_soon(rotate, n)
    assert sorted(wins) == [False, False, False, False, True]


async def test_revoke_subject(identity: IdentityStore) -> None:
    store = identity.refresh
    for n, subject, tenant in (
        (1, "user:u1", ACME),
        (2, "user:u1", ACME),
        (3, "user:u2", ACME),
        (4, "user:u1", GLOBEX),
    ):
        fam, token = start_family(
            family_id=ulid(n), tenant_id=tenant, subject=subject, token_hash=f"h{n}", now=T0
        )
        await store.start(fam, token)
    assert await store.revoke_subject(ACME, "user:u1", at=T0, reason="deleted") == 2
    assert await store.revoke_subject(ACME, "user:u1", at=T0, reason="deleted") == 0
    states = {}
    for n in range(1, 5):
        found = await store.find(f"h{n}")
        assert found is not None
        states[n] = found[0].state
    assert states == {
        1: FamilyState.REVOKED,
        2: FamilyState.REVOKED,
        3: FamilyState.ACTIVE,
        4: FamilyState.ACTIVE,
    }
    found = await store.find("h1")
    assert found is not None
    assert found[0].revoked_reason == "deleted"


# --- revocations ------------------------------------------------------------------------------


async def test_revocations(identity: IdentityStore) -> None:
    store = identity.revocations
    assert await store.is_revoked("j1") is False
    await store.revoke("j1", T0 + timedelta(minutes=10))
    await store.revoke("j2", T0 + timedelta(minutes=20))
    await store.revoke("j1", T0 + timedelta(minutes=5))  # never shortened
    assert await store.is_revoked("j1") is True
    assert await store.purge(T0 + timedelta(minutes=9)) == 0
    assert await store.purge(T0 + timedelta(minutes=10)) == 1
    assert await store.is_revoked("j1") is False
    assert await store.is_revoked("j2") is True


# --- secrets ----------------------------------------------------------------------------------

POLICY = RotationPolicy(rotate_every=timedelta(days=30), grace=timedelta(hours=1))


def sealed(version: SecretVersion, tenant_id: str | None = None) -> SecretRecord:
    return SecretRecord(
        tenant_id=tenant_id,
        name="jwt",
        version=version,
        envelope=b"WPSE" + bytes([version.version]) * 90,
        public_id=f"kid-{version.version}",
    )


async def test_secrets_are_versioned_and_saved_with_compare_and_set(
    identity: IdentityStore,
) -> None:
    store = identity.secrets
    assert await store.versions(None, "jwt") == []
    first = apply([], plan([], POLICY, T0), policy=POLICY, now=T0)
    await store.save(None, "jwt", [], [sealed(v) for v in first])
    assert await store.versions(None, "jwt") == [sealed(v) for v in first]
    # a second writer that planned from nothing too: refused, nothing written
    with pytest.raises(Conflict):
        await store.save(None, "jwt", [], [sealed(v) for v in first])
    later = T0 + timedelta(days=1)
    rotated = apply(first, plan(first, POLICY, later, force=True), policy=POLICY, now=later)
    await store.save(None, "jwt", first, [sealed(v) for v in rotated])
    stored = await store.versions(None, "jwt")
    assert [(r.version.version, r.version.state) for r in stored] == [
        (1, VersionState.VERIFY_ONLY),
        (2, VersionState.ACTIVE),
    ]
    assert stored == [sealed(v) for v in rotated]
    assert stored[0].envelope == sealed(first[0]).envelope
    # a writer that planned from the old state loses, and writes nothing
    again = apply(first, plan(first, POLICY, later, force=True), policy=POLICY, now=later)
    with pytest.raises(Conflict):
        await store.save(None, "jwt", first, [sealed(v) for v in again])
    assert await store.versions(None, "jwt") == stored
    await store.save(ACME, "jwt", [], [sealed(v, ACME) for v in first])
    assert await store.names() == [(None, "jwt"), (ACME, "jwt")]
    assert len(await store.versions(ACME, "jwt")) == 1


async def test_reseal_is_a_compare_and_set_and_save_never_changes_an_envelope(
    identity: IdentityStore,
) -> None:
    store = identity.secrets
    first = apply([], plan([], POLICY, T0), policy=POLICY, now=T0)
    await store.save(None, "jwt", [], [sealed(v) for v in first])
    old = sealed(first[0]).envelope
    new = b"WPSE" + b"\xee" * 90
    assert not await store.reseal(None, "jwt", 1, b"WPSE" + b"\x00" * 90, new)  # not the stored
    assert not await store.reseal(None, "jwt", 2, old, new)  # no such version
    assert not await store.reseal(ACME, "jwt", 1, old, new)  # another tenant's secret
    assert (await store.versions(None, "jwt"))[0].envelope == old
    assert await store.reseal(None, "jwt", 1, old, new)
    assert not await store.reseal(None, "jwt", 1, old, new)  # the second writer loses
    [resealed] = await store.versions(None, "jwt")
    assert resealed.envelope == new
    assert resealed.version == first[0]
    # a rotation planned before the reseal changes states, never the value it read
    later = T0 + timedelta(days=1)
    rotated = apply(first, plan(first, POLICY, later, force=True), policy=POLICY, now=later)
    await store.save(None, "jwt", first, [sealed(v) for v in rotated])
    stored = await store.versions(None, "jwt")
    assert stored[0].version.state == VersionState.VERIFY_ONLY
    assert stored[0].envelope == new


# --- audit ------------------------------------------------------------------------------------


def record(
    n: int,
    tenant_id: str | None = ACME,
    action: AuditAction = AuditAction.LOGIN,
    outcome: Outcome = Outcome.SUCCESS,
) -> AuditRecord:
    return AuditRecord(
        id=ulid(n),
        tenant_id=tenant_id,
        at=T0 + timedelta(minutes=n),
        actor=f"user:{n % 2}",
        action=action,
        target="token:x",
        outcome=outcome,
        address="127.0.0.1" if n % 3 else None,
        request_id=f"r{n}",
        reason="bad_signature" if outcome == Outcome.FAILURE else None,
    )


async def test_audit_is_append_only_filtered_and_paged(identity: IdentityStore) -> None:
    audit = identity.audit
    assert not any(hasattr(audit, name) for name in ("update", "delete", "remove", "clear"))
    made = [
        record(n, outcome=Outcome.FAILURE if n % 4 == 0 else Outcome.SUCCESS) for n in range(1, 11)
    ]
    for r in made:
        await audit.append(r)
    await audit.append(record(11, None, AuditAction.CREDENTIAL_REFUSED, Outcome.FAILURE))
    await audit.append(record(12, GLOBEX))
    with pytest.raises(Conflict):
        await audit.append(made[0])
    everything = await audit.list(ACME, AuditFilter(), PageRequest(limit=100))
    assert everything == list(reversed(made))
    page = await audit.list(ACME, AuditFilter(), PageRequest(limit=3, order="asc"))
    assert page == made[:3]
    page = await audit.list(ACME, AuditFilter(), PageRequest(limit=3, order="asc", after=ulid(3)))
    assert page == made[3:6]
    failed = await audit.list(ACME, AuditFilter(outcome="failure"), PageRequest())
    assert [r.id for r in failed] == [ulid(8), ulid(4)]
    mine = await audit.list(ACME, AuditFilter(actor="user:1"), PageRequest())
    assert {r.actor for r in mine} == {"user:1"}
    assert len(mine) == 5
    window = AuditFilter(since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=4))
    assert [r.id for r in await audit.list(ACME, window, PageRequest())] == [ulid(3), ulid(2)]
    assert await audit.list(ACME, AuditFilter(action="auth.refused"), PageRequest()) == []
    platform = await audit.list(None, AuditFilter(action="auth.refused"), PageRequest())
    assert [r.id for r in platform] == [ulid(11)]
    assert [r.id for r in await audit.list(GLOBEX, AuditFilter(), PageRequest())] == [ulid(12)]


async def test_audit_purge_deletes_only_what_is_older_oldest_first(identity: IdentityStore) -> None:
    audit = identity.audit
    for n in range(1, 9):
        await audit.append(record(n, ACME if n % 2 else GLOBEX))
    await audit.append(record(9, None))
    before = T0 + timedelta(minutes=6)  # records 1..5 are older
    assert await audit.purge(before, 2) == 2  # at most `limit`, the oldest first
    left = await audit.list(ACME, AuditFilter(), PageRequest(order="asc"))
    assert [r.id for r in left] == [ulid(3), ulid(5), ulid(7)]
    assert await audit.purge(before, 100) == 3
    assert await audit.purge(before, 100) == 0
    acme = await audit.list(ACME, AuditFilter(), PageRequest(order="asc"))
    globex = await audit.list(GLOBEX, AuditFilter(), PageRequest(order="asc"))
    platform = await audit.list(None, AuditFilter(), PageRequest(order="asc"))
    assert [r.id for r in acme + globex + platform] == [ulid(7), ulid(6), ulid(8), ulid(9)]
