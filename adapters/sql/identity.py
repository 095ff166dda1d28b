"""The identity stores over SQLAlchemy Core (async), for SQLite and PostgreSQL.

One engine of its own on the store's database (`SqlIdentity.connect(url)`), the
tables of `adapters.sql.identity_tables`. Every method is one short transaction;
writes that must not interleave take SQLite's writer lock up front (`BEGIN
IMMEDIATE`) and rely on row locks and unique indexes on PostgreSQL:

- a refresh token is rotated by `UPDATE ... WHERE state = 'current'`: of two
  concurrent rotations one updates a row and the other none (a reuse);
- a secret version changes state by `UPDATE ... WHERE state = <the state it was
  planned from>`, and a new version is an INSERT on its primary key: a second
  writer gets no row or a unique violation, and its whole save rolls back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.sql import identity_tables as t
from adapters.sql.availability import Availability
from adapters.sql.engine import SQLITE_BEGIN_OPTION, SQLITE_BUSY_TIMEOUT_SECONDS, create_engine
from adapters.sql.tables import idempotency_records
from core.domain.access import Role
from core.domain.audit import AuditAction, AuditRecord, Outcome
from core.domain.errors import Conflict
from core.domain.idempotency import Record, expired_before, in_use
from core.domain.identity import (
    ApiKey,
    FamilyState,
    RefreshFamily,
    RefreshToken,
    TokenState,
    User,
)
from core.domain.rotation import SecretVersion, VersionState
from core.ports import AuditFilter, PageRequest, SecretRecord

__all__ = ["SqlIdentity"]

_roles_decoder = msgspec.json.Decoder(list[str])


def _tenant(tenant_id: str | None) -> str:
    return t.PLATFORM if tenant_id is None else tenant_id


def _tenant_of(stored: str) -> str | None:
    return None if stored == t.PLATFORM else stored


def _roles(stored: str) -> tuple[Role, ...]:
    return tuple(Role(r) for r in _roles_decoder.decode(stored))


def _encode_roles(roles: Sequence[Role]) -> str:
    return msgspec.json.encode([str(r) for r in roles]).decode()


def _keyset(table: sa.Table, stmt: sa.Select[Any], page: PageRequest) -> sa.Select[Any]:
    column = table.c.id
    if page.after is not None:
        stmt = stmt.where(column < page.after if page.order == "desc" else column > page.after)
    order = column.desc() if page.order == "desc" else column.asc()
    return stmt.order_by(order).limit(page.limit)


class _Db:
    """Transactions on the engine; a database that cannot serve raises `Unavailable`."""

    def __init__(self, engine: AsyncEngine, availability: Availability) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        self.availability = availability

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.connect() as conn, conn.begin():
                yield conn
        except Exception as exc:
            self.availability.raise_for(exc)
        self.availability.ok()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.connect() as conn:
                if not self.postgres:
                    await conn.execution_options(**{SQLITE_BEGIN_OPTION: "BEGIN IMMEDIATE"})
                async with conn.begin():
                    yield conn
        except Exception as exc:
            self.availability.raise_for(exc)
        self.availability.ok()

    def upsert(self, table: sa.Table) -> Any:
        return (postgresql.insert if self.postgres else sqlite.insert)(table)


async def _keep(conn: AsyncConnection, record: Record | None) -> None:
    """Store an Idempotency-Key record in the caller's transaction, in place of an expired
    one of the same key; a live one of the same key is `KeyInUse` (the caller rolls back)."""
    if record is None:
        return
    ir = idempotency_records
    at_key = (ir.c.tenant_id == record.scope, ir.c.key == record.key)
    await conn.execute(
        ir.delete().where(*at_key, ir.c.created_at <= expired_before(record.created_at))
    )
    answer = record.answer
    try:
        await conn.execute(
            ir.insert().values(
                tenant_id=record.scope,
                key=record.key,
                fingerprint=record.fingerprint,
                status=answer.status,
                content_type=answer.content_type,
                location=answer.location,
                body=answer.body,
                created_at=record.created_at,
            )
        )
    except IntegrityError:
        raise in_use() from None


# --- users -------------------------------------------------------------------------------------


def _user_row(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "tenant_id": _tenant(user.tenant_id),
        "username": user.username,
        "roles": _encode_roles(user.roles),
        "password_hash": user.password_hash,
        "disabled": user.disabled,
        "created_at": user.created_at,
        "updated_at": user.updated_at,
    }


def _user(row: sa.Row[Any]) -> User:
    return User(
        id=row.id,
        tenant_id=_tenant_of(row.tenant_id),
        username=row.username,
        roles=_roles(row.roles),
        password_hash=row.password_hash,
        disabled=row.disabled,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class SqlUsers:
    def __init__(self, db: _Db) -> None:
        self._db = db

    async def add(self, user: User, record: Record | None = None) -> None:
        try:
            async with self._db.write() as conn:
                await _keep(conn, record)
                await conn.execute(t.users.insert(), _user_row(user))
        except IntegrityError:
            raise Conflict(f"A user named {user.username!r} exists already.") from None

    async def _one(self, where: sa.ColumnElement[bool]) -> User | None:
        async with self._db.read() as conn:
            row = (await conn.execute(sa.select(t.users).where(where))).first()
        return None if row is None else _user(row)

    async def get(self, tenant_id: str | None, user_id: str) -> User | None:
        return await self._one(
            sa.and_(t.users.c.id == user_id, t.users.c.tenant_id == _tenant(tenant_id))
        )

    async def by_username(self, tenant_id: str | None, username: str) -> User | None:
        return await self._one(
            sa.and_(t.users.c.tenant_id == _tenant(tenant_id), t.users.c.username == username)
        )

    async def update(self, user: User) -> None:
        row = _user_row(user)
        del row["id"], row["tenant_id"], row["created_at"]
        try:
            async with self._db.write() as conn:
                await conn.execute(
                    t.users.update()
                    .where(t.users.c.id == user.id, t.users.c.tenant_id == _tenant(user.tenant_id))
                    .values(**row)
                )
        except IntegrityError:
            raise Conflict(f"A user named {user.username!r} exists already.") from None

    async def delete(self, tenant_id: str | None, user_id: str) -> bool:
        async with self._db.write() as conn:
            done = await conn.execute(
                t.users.delete().where(
                    t.users.c.id == user_id, t.users.c.tenant_id == _tenant(tenant_id)
                )
            )
        return done.rowcount > 0

    async def list(self, tenant_id: str | None, page: PageRequest) -> list[User]:
        stmt = sa.select(t.users).where(t.users.c.tenant_id == _tenant(tenant_id))
        async with self._db.read() as conn:
            rows = (await conn.execute(_keyset(t.users, stmt, page))).all()
        return [_user(row) for row in rows]


# --- API keys ----------------------------------------------------------------------------------


def _key_row(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "tenant_id": _tenant(key.tenant_id),
        "name": key.name,
        "prefix": key.prefix,
        "secret_hash": key.secret_hash,
        "roles": _encode_roles(key.roles),
        "created_at": key.created_at,
        "created_by": key.created_by,
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
    }


def _key(row: sa.Row[Any]) -> ApiKey:
    return ApiKey(
        id=row.id,
        tenant_id=_tenant_of(row.tenant_id),
        name=row.name,
        prefix=row.prefix,
        secret_hash=row.secret_hash,
        roles=_roles(row.roles),
        created_at=row.created_at,
        created_by=row.created_by,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


class SqlApiKeys:
    def __init__(self, db: _Db) -> None:
        self._db = db

    async def add(self, key: ApiKey, record: Record | None = None) -> None:
        try:
            async with self._db.write() as conn:
                await _keep(conn, record)
                await conn.execute(t.api_keys.insert(), _key_row(key))
        except IntegrityError:
            raise Conflict("The API key prefix is taken.") from None

    async def _one(self, where: sa.ColumnElement[bool]) -> ApiKey | None:
        async with self._db.read() as conn:
            row = (await conn.execute(sa.select(t.api_keys).where(where))).first()
        return None if row is None else _key(row)

    async def get(self, tenant_id: str | None, key_id: str) -> ApiKey | None:
        return await self._one(
            sa.and_(t.api_keys.c.id == key_id, t.api_keys.c.tenant_id == _tenant(tenant_id))
        )

    async def find(self, key_id: str) -> ApiKey | None:
        return await self._one(t.api_keys.c.id == key_id)

    async def by_prefix(self, prefix: str) -> ApiKey | None:
        return await self._one(t.api_keys.c.prefix == prefix)

    async def update(self, key: ApiKey) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                t.api_keys.update()
                .where(t.api_keys.c.id == key.id, t.api_keys.c.tenant_id == _tenant(key.tenant_id))
                .values(
                    name=key.name,
                    roles=_encode_roles(key.roles),
                    expires_at=key.expires_at,
                    revoked_at=key.revoked_at,
                )
            )

    async def list(self, tenant_id: str | None, page: PageRequest) -> list[ApiKey]:
        stmt = sa.select(t.api_keys).where(t.api_keys.c.tenant_id == _tenant(tenant_id))
        async with self._db.read() as conn:
            rows = (await conn.execute(_keyset(t.api_keys, stmt, page))).all()
        return [_key(row) for row in rows]

    async def any_platform_key(self) -> bool:
        stmt = sa.select(t.api_keys.c.id).where(t.api_keys.c.tenant_id == t.PLATFORM).limit(1)
        async with self._db.read() as conn:
            return (await conn.execute(stmt)).first() is not None


# --- refresh tokens ----------------------------------------------------------------------------


def _family_row(family: RefreshFamily) -> dict[str, Any]:
    return {
        "id": family.id,
        "tenant_id": _tenant(family.tenant_id),
        "subject": family.subject,
        "state": str(family.state),
        "created_at": family.created_at,
        "expires_at": family.expires_at,
        "revoked_at": family.revoked_at,
        "revoked_reason": family.revoked_reason,
    }


def _token_row(token: RefreshToken) -> dict[str, Any]:
    return {
        "token_hash": token.token_hash,
        "family_id": token.family_id,
        "state": str(token.state),
        "issued_at": token.issued_at,
        "expires_at": token.expires_at,
        "used_at": token.used_at,
    }


class SqlRefresh:
    def __init__(self, db: _Db) -> None:
        self._db = db

    async def start(self, family: RefreshFamily, token: RefreshToken) -> None:
        try:
            async with self._db.write() as conn:
                await conn.execute(t.refresh_families.insert(), _family_row(family))
                await conn.execute(t.refresh_tokens.insert(), _token_row(token))
        except IntegrityError:
            raise Conflict("The refresh family or token exists already.") from None

    async def find(self, token_hash: str) -> tuple[RefreshFamily, RefreshToken] | None:
        f, k = t.refresh_families, t.refresh_tokens
        stmt = (
            sa.select(
                f,
                k.c.token_hash,
                k.c.state.label("token_state"),
                k.c.issued_at,
                k.c.expires_at.label("token_expires_at"),
                k.c.used_at,
            )
            .join(f, f.c.id == k.c.family_id)
            .where(k.c.token_hash == token_hash)
        )
        async with self._db.read() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            return None
        family = RefreshFamily(
            id=row.id,
            tenant_id=_tenant_of(row.tenant_id),
            subject=row.subject,
            state=FamilyState(row.state),
            created_at=row.created_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            revoked_reason=row.revoked_reason,
        )
        token = RefreshToken(
            token_hash=row.token_hash,
            family_id=row.id,
            state=TokenState(row.token_state),
            issued_at=row.issued_at,
            expires_at=row.token_expires_at,
            used_at=row.used_at,
        )
        return family, token

    async def rotate(self, used: RefreshToken, fresh: RefreshToken) -> bool:
        k = t.refresh_tokens
        async with self._db.write() as conn:
            done = await conn.execute(
                k.update()
                .where(k.c.token_hash == used.token_hash, k.c.state == str(TokenState.CURRENT))
                .values(state=str(used.state), used_at=used.used_at)
            )
            if done.rowcount != 1:
                return False
            await conn.execute(k.insert(), _token_row(fresh))
        return True

    async def save_family(self, family: RefreshFamily) -> None:
        row = _family_row(family)
        async with self._db.write() as conn:
            await conn.execute(
                t.refresh_families.update()
                .where(t.refresh_families.c.id == family.id)
                .values(
                    state=row["state"],
                    revoked_at=row["revoked_at"],
                    revoked_reason=row["revoked_reason"],
                )
            )

    async def revoke_subject(
        self, tenant_id: str | None, subject: str, *, at: datetime, reason: str
    ) -> int:
        f = t.refresh_families
        async with self._db.write() as conn:
            done = await conn.execute(
                f.update()
                .where(
                    f.c.tenant_id == _tenant(tenant_id),
                    f.c.subject == subject,
                    f.c.state == str(FamilyState.ACTIVE),
                )
                .values(state=str(FamilyState.REVOKED), revoked_at=at, revoked_reason=reason)
            )
        return done.rowcount


# --- revocations -------------------------------------------------------------------------------


class SqlRevocations:
    def __init__(self, db: _Db) -> None:
        self._db = db

    async def revoke(self, jti: str, expires_at: datetime) -> None:
        r = t.revoked_tokens
        stmt = self._db.upsert(r).values(jti=jti, expires_at=expires_at)
        stmt = stmt.on_conflict_do_update(
            index_elements=[r.c.jti],
            set_={"expires_at": sa.func.max(r.c.expires_at, stmt.excluded.expires_at)}
            if not self._db.postgres
            else {"expires_at": sa.func.greatest(r.c.expires_at, stmt.excluded.expires_at)},
        )
        async with self._db.write() as conn:
            await conn.execute(stmt)

    async def is_revoked(self, jti: str) -> bool:
        stmt = sa.select(t.revoked_tokens.c.jti).where(t.revoked_tokens.c.jti == jti)
        async with self._db.read() as conn:
            return (await conn.execute(stmt)).first() is not None

    async def purge(self, now: datetime) -> int:
        async with self._db.write() as conn:
            done = await conn.execute(
                t.revoked_tokens.delete().where(t.revoked_tokens.c.expires_at <= now)
            )
        return done.rowcount


# --- secrets -----------------------------------------------------------------------------------


def _secret_row(record: SecretRecord) -> dict[str, Any]:
    v = record.version
    return {
        "tenant_id": _tenant(record.tenant_id),
        "name": record.name,
        "version": v.version,
        "state": str(v.state),
        "public_id": record.public_id,
        "created_at": v.created_at,
        "activated_at": v.activated_at,
        "demoted_at": v.demoted_at,
        "verify_until": v.verify_until,
        "retired_at": v.retired_at,
        "envelope": record.envelope,
    }


#: What `SqlSecrets.save` leaves as it is when it updates a version.
_KEEP_ON_UPDATE = frozenset({"tenant_id", "name", "envelope"})


class SqlSecrets:
    def __init__(self, db: _Db) -> None:
        self._db = db

    async def versions(self, tenant_id: str | None, name: str) -> list[SecretRecord]:
        s = t.secret_versions
        stmt = (
            sa.select(s)
            .where(s.c.tenant_id == _tenant(tenant_id), s.c.name == name)
            .order_by(s.c.version)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(stmt)).all()
        return [
            SecretRecord(
                tenant_id=_tenant_of(row.tenant_id),
                name=row.name,
                version=SecretVersion(
                    version=row.version,
                    state=VersionState(row.state),
                    created_at=row.created_at,
                    activated_at=row.activated_at,
                    demoted_at=row.demoted_at,
                    verify_until=row.verify_until,
                    retired_at=row.retired_at,
                ),
                envelope=bytes(row.envelope),
                public_id=row.public_id,
            )
            for row in rows
        ]

    async def save(
        self,
        tenant_id: str | None,
        name: str,
        before: Sequence[SecretVersion],
        after: Sequence[SecretRecord],
    ) -> None:
        s = t.secret_versions
        expected = {v.version: v for v in before}
        try:
            async with self._db.write() as conn:
                for record in after:
                    if record.tenant_id != tenant_id or record.name != name:
                        raise ValueError("a record of another secret")
                    row = _secret_row(record)
                    was = expected.get(record.version.version)
                    if was is None:
                        await conn.execute(s.insert(), row)
                        continue
                    if was == record.version:
                        continue
                    done = await conn.execute(
                        s.update()
                        .where(
                            s.c.tenant_id == row["tenant_id"],
                            s.c.name == name,
                            s.c.version == was.version,
                            s.c.state == str(was.state),
                        )
                        # The value never changes with the state (see `reseal`): a rotation
                        # planned before a rewrap must not put the old envelope back.
                        .values({k: v for k, v in row.items() if k not in _KEEP_ON_UPDATE})
                    )
                    if done.rowcount != 1:
                        raise Conflict(
                            f"Version {was.version} of {name} was changed by another writer."
                        )
        except IntegrityError:
            raise Conflict(f"A new version of {name} was made by another writer.") from None

    async def reseal(
        self, tenant_id: str | None, name: str, version: int, before: bytes, after: bytes
    ) -> bool:
        s = t.secret_versions
        async with self._db.write() as conn:
            done = await conn.execute(
                s.update()
                .where(
                    s.c.tenant_id == _tenant(tenant_id),
                    s.c.name == name,
                    s.c.version == version,
                    s.c.envelope == before,
                )
                .values(envelope=after)
            )
        return bool(done.rowcount == 1)

    async def names(self) -> list[tuple[str | None, str]]:
        s = t.secret_versions
        stmt = sa.select(s.c.tenant_id, s.c.name).distinct().order_by(s.c.tenant_id, s.c.name)
        async with self._db.read() as conn:
            rows = (await conn.execute(stmt)).all()
        return [(_tenant_of(row.tenant_id), row.name) for row in rows]


# --- audit -------------------------------------------------------------------------------------


class SqlAudit:
    def __init__(self, db: _Db) -> None:
        self._db = db

    async def append(self, record: AuditRecord) -> None:
        row = {
            "id": record.id,
            "tenant_id": _tenant(record.tenant_id),
            "at": record.at,
            "actor": record.actor,
            "action": str(record.action),
            "target": record.target,
            "outcome": str(record.outcome),
            "address": record.address,
            "request_id": record.request_id,
            "reason": record.reason,
        }
        try:
            async with self._db.write() as conn:
                await conn.execute(t.audit_log.insert(), row)
        except IntegrityError:
            raise Conflict("The audit record exists already.") from None

    async def purge(self, before: datetime, limit: int) -> int:
        a = t.audit_log
        oldest = sa.select(a.c.id).where(a.c.at < before).order_by(a.c.at).limit(limit)
        async with self._db.write() as conn:
            done = await conn.execute(sa.delete(a).where(a.c.id.in_(oldest)))
        return int(done.rowcount)

    async def list(
        self, tenant_id: str | None, where: AuditFilter, page: PageRequest
    ) -> list[AuditRecord]:
        a = t.audit_log
        stmt = sa.select(a).where(a.c.tenant_id == _tenant(tenant_id))
        for column, value in ((a.c.action, where.action), (a.c.actor, where.actor)):
            if value is not None:
                stmt = stmt.where(column == value)
        if where.outcome is not None:
            stmt = stmt.where(a.c.outcome == where.outcome)
        if where.since is not None:
            stmt = stmt.where(a.c.at >= where.since)
        if where.until is not None:
            stmt = stmt.where(a.c.at < where.until)
        async with self._db.read() as conn:
            rows = (await conn.execute(_keyset(a, stmt, page))).all()
        return [
            AuditRecord(
                id=row.id,
                tenant_id=_tenant_of(row.tenant_id),
                at=row.at,
                actor=row.actor,
                action=AuditAction(row.action),
                target=row.target,
                outcome=Outcome(row.outcome),
                address=row.address,
                request_id=row.request_id,
                reason=row.reason,
            )
            for row in rows
        ]


class SqlIdentity:
    """Every identity store on one SQL database."""

    def __init__(self, engine: AsyncEngine, availability: Availability) -> None:
        db = _Db(engine, availability)
        self._engine = engine
        self._users = SqlUsers(db)
        self._api_keys = SqlApiKeys(db)
        self._refresh = SqlRefresh(db)
        self._revocations = SqlRevocations(db)
        self._secrets = SqlSecrets(db)
        self._audit = SqlAudit(db)

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        availability: Availability | None = None,
        busy_timeout: float = SQLITE_BUSY_TIMEOUT_SECONDS,
        **engine_options: Any,
    ) -> SqlIdentity:
        """The stores on the (migrated) database at `url`; `availability`: shared with the
        other stores on it (one log line per outage)."""
        return cls(
            create_engine(url, busy_timeout=busy_timeout, **engine_options),
            availability or Availability(url),
        )

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @property
    def users(self) -> SqlUsers:
        return self._users

    @property
    def api_keys(self) -> SqlApiKeys:
        return self._api_keys

    @property
    def refresh(self) -> SqlRefresh:
        return self._refresh

    @property
    def revocations(self) -> SqlRevocations:
        return self._revocations

    @property
    def secrets(self) -> SqlSecrets:
        return self._secrets

    @property
    def audit(self) -> SqlAudit:
        return self._audit

    async def close(self) -> None:
        await self._engine.dispose()
