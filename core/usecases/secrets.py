"""Secrets: versioned, sealed at rest, rotated by `core.domain.rotation`; the JWT signing key.

The signing key is the platform secret `SIGNING_KEY`. `maintain` brings it up to
date with the rotation policy (the first start creates version 1; a forced
rotation, `waypost secrets rotate`, makes a new version sign at once and keeps
the old one verifying for its grace) and `reload` hands the versions that
verify, opened, to the token signer. Each version is opened once per process
and every opening is audited; retired versions are never opened again (their
public `kid` is enough to tell a token under them from a stranger's).

Several processes may share one store: a rotation is saved with
compare-and-set (`SecretStore.save`), the loser plans again from what the
winner wrote, and every process reloads on its own schedule (and at once when
a token names a key it does not know).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final

import msgspec

from core.domain.audit import AuditAction
from core.domain.errors import Conflict
from core.domain.rotation import (
    RotationEvent,
    RotationPolicy,
    SecretVersion,
    Step,
    VersionState,
    apply,
    next_due,
    plan,
    signing,
)
from core.ports import IdentityStore, SecretRecord, SecretSealer, TokenSigner
from core.usecases.audit import Auditor
from core.usecases.common import Deps

__all__ = ["SIGNING_KEY", "Rewrapped", "SecretInfo", "Secrets"]

SIGNING_KEY: Final = "jwt-signing-key"
SYSTEM: Final = "system"
_ATTEMPTS: Final = 5


class Rewrapped(msgspec.Struct, kw_only=True):
    """What a rewrap did: versions sealed under the new key now, and those that were."""

    sealed: int
    already: int


class SecretInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What may be shown of a secret version: everything but its value."""

    tenant_id: str | None
    name: str
    version: int
    state: VersionState
    public_id: str | None
    created_at: datetime
    activated_at: datetime | None
    demoted_at: datetime | None
    verify_until: datetime | None
    retired_at: datetime | None


class Secrets:
    def __init__(
        self,
        deps: Deps,
        store: IdentityStore,
        *,
        sealer: SecretSealer,
        signer: TokenSigner,
        policy: RotationPolicy,
        audit: Auditor,
    ) -> None:
        self._deps = deps
        self._store = store
        self._sealer = sealer
        self._signer = signer
        self.policy = policy
        self._audit = audit
        self._opened: dict[int, bytes] = {}
        self._loaded_at: datetime | None = None
        self._next_due: datetime | None = None
        self._active_since: datetime | None = None

    async def start(self) -> None:
        """Bring the signing key up to date and load it (the server's start)."""
        await self.maintain()

    async def maintain(self, *, force: bool = False, actor: str = SYSTEM) -> tuple[Step, ...]:
        """Apply the rotation policy now (or rotate at once with `force`), then reload."""
        steps: tuple[Step, ...] = ()
        for _ in range(_ATTEMPTS):
            records = await self._store.secrets.versions(None, SIGNING_KEY)
            versions = [r.version for r in records]
            now = self._deps.clock.now()
            steps = plan(versions, self.policy, now, force=force)
            if not steps:
                break
            try:
                await self._save(records, steps, now)
            except Conflict:
                continue  # another process rotated first: plan again from what it wrote
            await self._audit_steps(steps, force=force, actor=actor)
            break
        else:
            raise Conflict("The signing key could not be rotated: other writers kept winning.")
        await self.reload()
        return steps

    async def _save(
        self, records: list[SecretRecord], steps: tuple[Step, ...], now: datetime
    ) -> None:
        before = {r.version.version: r for r in records}
        made: dict[int, tuple[bytes, str]] = {}
        for step in steps:
            if step.event == RotationEvent.CREATE:
                key = self._signer.new_key()
                envelope = self._sealer.seal(
                    key.material, tenant_id=None, name=SIGNING_KEY, version=step.version
                )
                made[step.version] = (envelope, key.kid)
        after = []
        for version in apply([r.version for r in records], steps, policy=self.policy, now=now):
            if version.version in made:
                envelope, kid = made[version.version]
            else:
                envelope, kid = (
                    before[version.version].envelope,
                    before[version.version].public_id or "",
                )
            after.append(
                SecretRecord(
                    tenant_id=None,
                    name=SIGNING_KEY,
                    version=version,
                    envelope=envelope,
                    public_id=kid or None,
                )
            )
        await self._store.secrets.save(None, SIGNING_KEY, [r.version for r in records], after)

    async def _audit_steps(self, steps: tuple[Step, ...], *, force: bool, actor: str) -> None:
        for step in steps:
            if step.event == RotationEvent.CREATE:
                action = AuditAction.SECRET_CREATED
            elif step.event == RotationEvent.ACTIVATE:
                action = AuditAction.SECRET_ROTATED
            else:
                continue
            await self._audit.record(
                tenant_id=None,
                actor=actor,
                action=action,
                target=f"secret:{SIGNING_KEY}/{step.version}",
                reason="forced" if force else "policy",
            )

    async def reload(self) -> None:
        """Hand the current versions to the signer, opening those not opened yet."""
        records = await self._store.secrets.versions(None, SIGNING_KEY)
        keys: list[tuple[SecretVersion, bytes]] = []
        retired: list[str] = []
        for record in records:
            number = record.version.version
            if record.version.state == VersionState.RETIRED:
                self._opened.pop(number, None)
                if record.public_id:
                    retired.append(record.public_id)
                continue
            material = self._opened.get(number)
            if material is None:
                material = self._sealer.open(
                    record.envelope, tenant_id=None, name=SIGNING_KEY, version=number
                )
                self._opened[number] = material
                await self._audit.record(
                    tenant_id=None,
                    actor=SYSTEM,
                    action=AuditAction.SECRET_ACCESSED,
                    target=f"secret:{SIGNING_KEY}/{number}",
                    reason="signing key loaded",
                )
            keys.append((record.version, material))
        self._signer.load(keys, retired)
        self._loaded_at = self._deps.clock.now()
        self._next_due = next_due([r.version for r in records], self.policy)
        active = signing([r.version for r in records])
        self._active_since = None if active is None else active.activated_at

    async def reload_if_older_than(self, age: timedelta) -> bool:
        """Reload unless the last load is younger than `age` (a token named an unknown key:
        maybe another process rotated; never more often than `age`, whatever is sent)."""
        now = self._deps.clock.now()
        if self._loaded_at is not None and now - self._loaded_at < age:
            return False
        await self.reload()
        return True

    def next_due(self) -> datetime | None:
        """When the policy next has something to do (None: at once)."""
        return self._next_due

    def active_since(self) -> datetime | None:
        """When the signing key that signs now was activated (as of the last reload)."""
        return self._active_since

    async def rewrap(
        self,
        sealer: SecretSealer,
        *,
        actor: str = SYSTEM,
        on_step: Callable[[str], None] | None = None,
    ) -> Rewrapped:
        """Seal every stored secret version again under `sealer`'s master key (`sealer` opens
        with the old keys too). Online: each version is replaced by compare-and-set, so a
        rotation or another rewrap at the same time loses nothing (the loser reads again).
        Resumable: versions sealed under the new key already are left as they are, so a run
        that stopped is simply run again."""
        done = Rewrapped(sealed=0, already=0)
        new_key = sealer.key_id
        for tenant_id, name in await self._store.secrets.names():
            for record in await self._store.secrets.versions(tenant_id, name):
                number = record.version.version
                envelope = record.envelope
                for _ in range(_ATTEMPTS):
                    if sealer.sealed_with(envelope) == new_key:
                        done.already += 1
                        break
                    value = sealer.open(envelope, tenant_id=tenant_id, name=name, version=number)
                    fresh = sealer.seal(value, tenant_id=tenant_id, name=name, version=number)
                    if await self._store.secrets.reseal(tenant_id, name, number, envelope, fresh):
                        done.sealed += 1
                        await self._audit.record(
                            tenant_id=tenant_id,
                            actor=actor,
                            action=AuditAction.SECRET_REWRAPPED,
                            target=f"secret:{name}/{number}",
                            reason=f"sealed under master key {new_key}",
                        )
                        if on_step is not None:
                            on_step(f"{name} version {number}: sealed under {new_key}")
                        break
                    envelope = next(  # changed meanwhile: read it again
                        r.envelope
                        for r in await self._store.secrets.versions(tenant_id, name)
                        if r.version.version == number
                    )
                else:
                    raise Conflict(f"Version {number} of {name} kept changing; run it again.")
        return done

    async def list(self) -> list[SecretInfo]:
        """Every version of every secret, without values."""
        found: list[SecretInfo] = []
        for tenant_id, name in await self._store.secrets.names():
            for record in await self._store.secrets.versions(tenant_id, name):
                v = record.version
                found.append(
                    SecretInfo(
                        tenant_id=tenant_id,
                        name=name,
                        version=v.version,
                        state=v.state,
                        public_id=record.public_id,
                        created_at=v.created_at,
                        activated_at=v.activated_at,
                        demoted_at=v.demoted_at,
                        verify_until=v.verify_until,
                        retired_at=v.retired_at,
                    )
                )
        return found
