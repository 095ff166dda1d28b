"""The identity stores in memory: users, API keys, refresh families, revocations, secrets, audit.

The reference for the contract suite (tests/contract/test_identity_stores.py) and
the backend of the in-memory server. Every method runs without awaiting anything
in between its reads and writes, so each is atomic in one event loop: the
refresh token's compare-and-set and a secret's save need no lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Protocol, TypeVar

import msgspec

from adapters.memory.records import MemoryRecords
from core.domain.audit import AuditRecord
from core.domain.errors import Conflict
from core.domain.idempotency import Record
from core.domain.identity import (
    ApiKey,
    FamilyState,
    RefreshFamily,
    RefreshToken,
    TokenState,
    User,
    revoke_family,
)
from core.domain.rotation import SecretVersion
from core.ports import AuditFilter, PageRequest, SecretRecord


class _HasId(Protocol):
    @property
    def id(self) -> str: ...


T = TypeVar("T", bound=_HasId)


def page_of(items: Iterable[T], page: PageRequest, keep: Callable[[T], bool] = bool) -> list[T]:
    """Keyset pagination over items by id: after the cursor, in the asked order."""
    ordered = sorted(items, key=lambda item: item.id, reverse=page.order == "desc")
    found: list[T] = []
    for item in ordered:
        if page.after is not None and (
            item.id >= page.after if page.order == "desc" else item.id <= page.after
        ):
            continue
        if keep(item):
            found.append(item)
            if len(found) == page.limit:
                break
    return found


class MemoryUsers:
    def __init__(self, records: MemoryRecords) -> None:
        self._users: dict[str, User] = {}
        self._names: dict[tuple[str | None, str], str] = {}
        self.records = records

    async def add(self, user: User, record: Record | None = None) -> None:
        name = (user.tenant_id, user.username)
        kept = [] if record is None else [record]
        self.records.check(kept, replace_expired=True)
        if name in self._names:
            raise Conflict(f"A user named {user.username!r} exists already.")
        self._users[user.id] = user
        self._names[name] = user.id
        self.records.put(kept)

    async def get(self, tenant_id: str | None, user_id: str) -> User | None:
        user = self._users.get(user_id)
        return user if user is not None and user.tenant_id == tenant_id else None

    async def by_username(self, tenant_id: str | None, username: str) -> User | None:
        found = self._names.get((tenant_id, username))
        return None if found is None else self._users[found]

    async def update(self, user: User) -> None:
        current = self._users.get(user.id)
        if current is None or current.tenant_id != user.tenant_id:
            return
        del self._names[(current.tenant_id, current.username)]
        self._users[user.id] = user
        self._names[(user.tenant_id, user.username)] = user.id

    async def delete(self, tenant_id: str | None, user_id: str) -> bool:
        user = self._users.get(user_id)
        if user is None or user.tenant_id != tenant_id:
            return False
        del self._users[user_id]
        del self._names[(user.tenant_id, user.username)]
        return True

    async def list(self, tenant_id: str | None, page: PageRequest) -> list[User]:
        return page_of(self._users.values(), page, lambda u: u.tenant_id == tenant_id)


class MemoryApiKeys:
    def __init__(self, records: MemoryRecords) -> None:
        self._keys: dict[str, ApiKey] = {}
        self._prefixes: dict[str, str] = {}
        self.records = records

    async def add(self, key: ApiKey, record: Record | None = None) -> None:
        kept = [] if record is None else [record]
        self.records.check(kept, replace_expired=True)
        if key.prefix in self._prefixes:
            raise Conflict("The API key prefix is taken.")
        self._keys[key.id] = key
        self._prefixes[key.prefix] = key.id
        self.records.put(kept)

    async def get(self, tenant_id: str | None, key_id: str) -> ApiKey | None:
        key = self._keys.get(key_id)
        return key if key is not None and key.tenant_id == tenant_id else None

    async def find(self, key_id: str) -> ApiKey | None:
        return self._keys.get(key_id)

    async def by_prefix(self, prefix: str) -> ApiKey | None:
        found = self._prefixes.get(prefix)
        return None if found is None else self._keys[found]

    async def update(self, key: ApiKey) -> None:
        current = self._keys.get(key.id)
        if current is not None and current.tenant_id == key.tenant_id:
            self._keys[key.id] = msgspec.structs.replace(key, prefix=current.prefix)

    async def list(self, tenant_id: str | None, page: PageRequest) -> list[ApiKey]:
        return page_of(self._keys.values(), page, lambda k: k.tenant_id == tenant_id)

    async def any_platform_key(self) -> bool:
        return any(k.tenant_id is None for k in self._keys.values())


class MemoryRefresh:
    def __init__(self) -> None:
        self._families: dict[str, RefreshFamily] = {}
        self._tokens: dict[str, RefreshToken] = {}

    async def start(self, family: RefreshFamily, token: RefreshToken) -> None:
        if family.id in self._families or token.token_hash in self._tokens:
            raise Conflict("The refresh family or token exists already.")
        self._families[family.id] = family
        self._tokens[token.token_hash] = token

    async def find(self, token_hash: str) -> tuple[RefreshFamily, RefreshToken] | None:
        token = self._tokens.get(token_hash)
        if token is None:
            return None
        return self._families[token.family_id], token

    async def rotate(self, used: RefreshToken, fresh: RefreshToken) -> bool:
        current = self._tokens.get(used.token_hash)
        if current is None or current.state != TokenState.CURRENT:
            return False
        if fresh.token_hash in self._tokens:
            raise Conflict("The new refresh token exists already.")
        self._tokens[used.token_hash] = used
        self._tokens[fresh.token_hash] = fresh
        return True

    async def save_family(self, family: RefreshFamily) -> None:
        if family.id in self._families:
            self._families[family.id] = family

    async def revoke_subject(
        self, tenant_id: str | None, subject: str, *, at: datetime, reason: str
    ) -> int:
        count = 0
        for family in list(self._families.values()):
            if (
                family.tenant_id == tenant_id
                and family.subject == subject
                and family.state == FamilyState.ACTIVE
            ):
                self._families[family.id] = revoke_family(family, now=at, reason=reason)
                count += 1
        return count


class MemoryRevocations:
    def __init__(self) -> None:
        self._revoked: dict[str, datetime] = {}

    async def revoke(self, jti: str, expires_at: datetime) -> None:
        self._revoked[jti] = max(expires_at, self._revoked.get(jti, expires_at))

    async def is_revoked(self, jti: str) -> bool:
        return jti in self._revoked

    async def purge(self, now: datetime) -> int:
        gone = [jti for jti, until in self._revoked.items() if until <= now]
        for jti in gone:
            del self._revoked[jti]
        return len(gone)


class MemorySecrets:
    def __init__(self) -> None:
        self._secrets: dict[tuple[str | None, str], dict[int, SecretRecord]] = {}

    async def versions(self, tenant_id: str | None, name: str) -> list[SecretRecord]:
        stored = self._secrets.get((tenant_id, name), {})
        return [stored[n] for n in sorted(stored)]

    async def save(
        self,
        tenant_id: str | None,
        name: str,
        before: Sequence[SecretVersion],
        after: Sequence[SecretRecord],
    ) -> None:
        stored = self._secrets.get((tenant_id, name), {})
        expected = {v.version: v for v in before}
        for record in after:
            number = record.version.version
            if record.tenant_id != tenant_id or record.name != name:
                raise ValueError("a record of another secret")
            current = stored.get(number)
            was = expected.get(number)
            if was is None:
                if current is not None:
                    raise Conflict(f"Version {number} of {name} exists already.")
            elif current is None or current.version.state != was.state:
                raise Conflict(f"Version {number} of {name} was changed by another writer.")
        updated = dict(stored)
        for record in after:
            current = stored.get(record.version.version)
            # A version's value never changes here (see `reseal`).
            kept = (
                record
                if current is None
                else msgspec.structs.replace(record, envelope=current.envelope)
            )
            updated[record.version.version] = kept
        self._secrets[(tenant_id, name)] = updated

    async def reseal(
        self, tenant_id: str | None, name: str, version: int, before: bytes, after: bytes
    ) -> bool:
        stored = self._secrets.get((tenant_id, name), {})
        current = stored.get(version)
        if current is None or current.envelope != before:
            return False
        stored[version] = msgspec.structs.replace(current, envelope=after)
        return True

    async def names(self) -> list[tuple[str | None, str]]:
        return sorted(self._secrets, key=lambda k: (k[0] or "", k[1]))


class MemoryAudit:
    def __init__(self) -> None:
        self._records: dict[str, AuditRecord] = {}

    async def append(self, record: AuditRecord) -> None:
        if record.id in self._records:
            raise Conflict("The audit record exists already.")
        self._records[record.id] = record

    async def purge(self, before: datetime, limit: int) -> int:
        old = sorted((r for r in self._records.values() if r.at < before), key=lambda r: r.at)
        for record in old[:limit]:
            del self._records[record.id]
        return min(len(old), limit)

    async def list(
        self, tenant_id: str | None, where: AuditFilter, page: PageRequest
    ) -> list[AuditRecord]:
        def keep(r: AuditRecord) -> bool:
            return (
                r.tenant_id == tenant_id
                and (where.action is None or r.action == where.action)
                and (where.actor is None or r.actor == where.actor)
                and (where.outcome is None or r.outcome == where.outcome)
                and (where.since is None or r.at >= where.since)
                and (where.until is None or r.at < where.until)
            )

        return page_of(self._records.values(), page, keep)


class MemoryIdentity:
    """Every identity store, in this process."""

    def __init__(self, records: MemoryRecords | None = None) -> None:
        records = records if records is not None else MemoryRecords()
        self._users = MemoryUsers(records)
        self._api_keys = MemoryApiKeys(records)
        self._refresh = MemoryRefresh()
        self._revocations = MemoryRevocations()
        self._secrets = MemorySecrets()
        self._audit = MemoryAudit()

    @property
    def users(self) -> MemoryUsers:
        return self._users

    @property
    def api_keys(self) -> MemoryApiKeys:
        return self._api_keys

    @property
    def refresh(self) -> MemoryRefresh:
        return self._refresh

    @property
    def revocations(self) -> MemoryRevocations:
        return self._revocations

    @property
    def secrets(self) -> MemorySecrets:
        return self._secrets

    @property
    def audit(self) -> MemoryAudit:
        return self._audit

    def share_records(self, records: MemoryRecords) -> None:
        """Keep Idempotency-Key records in `records` (the memory store's), as the SQL stores
        share one table: a key is one key, whichever route used it."""
        self._users.records = self._api_keys.records = records

    async def close(self) -> None:
        """Nothing to release."""
