"""Identity and access: who a request is, what it may do, and the credentials' life cycle.

- `authenticate`: a bearer credential (an access token or an API key) and the
  tenant a platform administrator names -> `Access` (the principal and the
  tenant it acts in), or `Unauthenticated`. Every request is checked against the
  store, not only the token: a deleted user, a revoked key or a disabled tenant
  stop working at once (in this process; other processes within
  `RECENT_SECONDS`, the life of the small cache that spares the store a read per
  request; when an entry ends, the requests that miss it at once share one read).
  A revocation check that cannot be made refuses.
- `authorize`: the permission a route declares, or `Forbidden`.
- `grant`: the token endpoint (password, api_key, refresh_token grants);
  refresh tokens rotate on every use and a reused one revokes its family.
- `revoke`: an access token (by jti), a refresh token (its family) or an API key.
- users and API keys of the scope an `Access` acts in; `bootstrap` of the first
  platform administrator.

Every refusal and every change is audited (`Auditor`) with its precise reason;
the caller is told only `REFUSAL_DETAIL`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Final, Generic, NoReturn, TypeVar

import msgspec

from core.domain.access import Permission, Role
from core.domain.audit import ANONYMOUS, AuditAction, Outcome, attempted_actor
from core.domain.commands import CreateApiKey, CreateUser, PatchUser, TokenRequest
from core.domain.errors import (
    Conflict,
    FieldError,
    Forbidden,
    Invalid,
    Unauthenticated,
    raise_if,
)
from core.domain.idempotency import KeyInUse
from core.domain.identity import (
    LEEWAY,
    ApiKey,
    BearerKind,
    Principal,
    PrincipalKind,
    RefreshAction,
    RefreshFamily,
    Refusal,
    User,
    admit,
    bearer_kind,
    check_api_key_login,
    check_password,
    check_password_login,
    check_roles,
    decide_refresh,
    new_api_key,
    new_user,
    normalize_username,
    parse_api_key,
    parse_refresh_token,
    parse_subject,
    patch_user,
    revoke_api_key,
    revoke_family,
    rotate_refresh,
    start_family,
)
from core.domain.ids import is_ulid
from core.domain.model import Tenant
from core.domain.tenants import normalize_slug
from core.ports import (
    MAX_PAGE_SIZE,
    BearerSecrets,
    IdentityStore,
    PageRequest,
    PasswordHasher,
    TokenSigner,
    Unavailable,
)
from core.usecases.audit import Auditor
from core.usecases.common import Actor, Deps, Once, RequestContext, not_found
from core.usecases.secrets import Secrets

__all__ = [
    "BOOTSTRAP_KEY_NAME",
    "GRANT_TYPES",
    "RECENT_SECONDS",
    "Access",
    "Identity",
    "TokenAnswer",
]

#: How long a principal, a key, a tenant or a "not revoked" answer is remembered.
RECENT_SECONDS: Final = 1.0
RECENT_CAPACITY: Final = 10_000
#: A token under an unknown key reloads the key set at most this often.
RELOAD_AFTER: Final = timedelta(seconds=5)
BOOTSTRAP_KEY_NAME: Final = "bootstrap"
#: How often a server purges the audit log of records past their retention.
AUDIT_PURGE_EVERY: Final = timedelta(hours=1)
GRANT_TYPES: Final = ("password", "api_key", "refresh_token")
_KEY_ATTEMPTS: Final = 3

K = TypeVar("K")
V = TypeVar("V")


class Access(msgspec.Struct, frozen=True, kw_only=True):
    """An authenticated principal and the scope it acts in: a tenant, or the platform."""

    principal: Principal
    tenant_id: str | None
    tenant_slug: str | None = None

    def actor(self, correlation_id: str | None = None, causation_id: str | None = None) -> Actor:
        """The use cases' caller, for routes that act on a tenant's data."""
        if self.tenant_id is None:
            raise Forbidden(None, "Name a tenant with X-Tenant: this acts on a tenant's data.")
        return Actor(
            tenant_id=self.tenant_id,
            principal=self.principal.subject,
            correlation_id=correlation_id,
            causation_id=causation_id,
        )


class TokenAnswer(msgspec.Struct, frozen=True, kw_only=True):
    access_token: str
    token_type: str = "Bearer"  # noqa: S105 - a name, not a secret
    expires_in: int
    refresh_token: str


class _Recent(Generic[K, V]):
    """A small, bounded cache whose entries live `ttl` (by the Clock port's time)."""

    def __init__(self, ttl: timedelta, capacity: int = RECENT_CAPACITY) -> None:
        self._ttl = ttl
        self._capacity = capacity
        self._items: OrderedDict[K, tuple[datetime, V]] = OrderedDict()

    def get(self, key: K, now: datetime) -> V | None:
        hit = self._items.get(key)
        if hit is None:
            return None
        if hit[0] <= now:
            del self._items[key]
            return None
        return hit[1]

    def put(self, key: K, value: V, now: datetime) -> None:
        if self._ttl <= timedelta(0):
            return
        self._items[key] = (now + self._ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()


class Identity:
    def __init__(
        self,
        deps: Deps,
        store: IdentityStore,
        *,
        hasher: PasswordHasher,
        bearer: BearerSecrets,
        signer: TokenSigner,
        secrets: Secrets,
        audit: Auditor,
        recent: timedelta = timedelta(seconds=RECENT_SECONDS),
        audit_retention: timedelta | None = None,
    ) -> None:
        self._deps = deps
        self._audit_retention = audit_retention
        self._purged_at: datetime | None = None
        self._store = store
        self._hasher = hasher
        self._bearer = bearer
        self._signer = signer
        self._secrets = secrets
        self._audit = audit
        self._records: _Recent[tuple[str, str | None, str], User | ApiKey] = _Recent(recent)
        self._prefixes: _Recent[str, ApiKey] = _Recent(recent)
        self._tenants: _Recent[str, Tenant] = _Recent(recent)
        self._not_revoked: _Recent[str, bool] = _Recent(recent)

    # --- the caches ---------------------------------------------------------------------------

    def forget(self) -> None:
        """Drop everything remembered (a user, key or tenant changed in this process)."""
        self._records.clear()
        self._prefixes.clear()
        self._tenants.clear()
        self._not_revoked.clear()

    async def _tenant(self, tenant_id: str) -> Tenant | None:
        now = self._deps.clock.now()
        tenant = self._tenants.get(tenant_id, now)
        if tenant is None:
            tenant = await self._shared(f"tenant:{tenant_id}", lambda: self._read_tenant(tenant_id))
            if tenant is not None:
                self._tenants.put(tenant_id, tenant, now)
        return tenant

    async def _read_tenant(self, tenant_id: str) -> Tenant | None:
        async with self._deps.store.read() as tx:
            return await tx.tenants.get(tenant_id)

    async def _shared(self, what: str, read: Callable[[], Awaitable[V]]) -> V:
        """`read()`, made once for the callers that need it at the same moment.

        An entry of the caches ends for every request in flight at once; without this, each
        of them read it again (a herd every `RECENT_SECONDS`: on SQLite, a connection
        opened for most of them and the event loop stalled). The reads go through the
        group commit's queue (a lane per `what`, never a tenant id): the callers that come
        together take the answer of one read, or its error; those that come while it runs
        share the next."""

        async def run(callers: Sequence[None]) -> list[V | Exception]:
            try:
                found = await read()
            except Exception as exc:
                return [exc] * len(callers)
            return [found] * len(callers)

        found: V = await self._deps.combiner.submit(f"identity:{what}", None, 1, run)
        return found

    async def _tenant_by_slug(self, slug: str) -> Tenant | None:
        try:
            normalized = normalize_slug(slug)
        except Invalid:
            return None
        async with self._deps.store.read() as tx:
            return await tx.tenants.by_slug(normalized)

    async def _record(
        self, kind: PrincipalKind, tenant_id: str | None, ident: str
    ) -> User | ApiKey | None:
        now = self._deps.clock.now()
        key = (str(kind), tenant_id, ident)
        record = self._records.get(key, now)
        if record is None:
            store = self._store
            read: Callable[[], Awaitable[User | ApiKey | None]] = (
                (lambda: store.users.get(tenant_id, ident))
                if kind == PrincipalKind.USER
                else (lambda: store.api_keys.get(tenant_id, ident))
            )
            record = await self._shared(f"record:{kind}:{tenant_id}:{ident}", read)
            if record is not None:
                self._records.put(key, record, now)
        return record

    async def _key_by_prefix(self, prefix: str) -> ApiKey | None:
        now = self._deps.clock.now()
        key = self._prefixes.get(prefix, now)
        if key is None:
            key = await self._shared(
                f"prefix:{prefix}", lambda: self._store.api_keys.by_prefix(prefix)
            )
            if key is not None:
                self._prefixes.put(prefix, key, now)
        return key

    async def _is_revoked(self, jti: str) -> bool | None:
        """Whether the token id is revoked; None when the store cannot tell (fail closed)."""
        now = self._deps.clock.now()
        if self._not_revoked.get(jti, now):
            return False
        try:
            revoked = await self._shared(
                f"revoked:{jti}", lambda: self._store.revocations.is_revoked(jti)
            )
        except Unavailable:
            raise  # no pass either: a 503, and the caller retries
        except Exception:  # any other failure of the check is a refusal, never a pass
            return None
        if not revoked:
            self._not_revoked.put(jti, True, now)
        return revoked

    # --- refusals -----------------------------------------------------------------------------

    async def _refuse(
        self,
        reason: Refusal,
        ctx: RequestContext,
        *,
        tenant_id: str | None = None,
        actor: str = ANONYMOUS,
        action: AuditAction = AuditAction.CREDENTIAL_REFUSED,
        target: str | None = None,
    ) -> NoReturn:
        await self._audit.record(
            tenant_id=tenant_id,
            actor=actor,
            action=action,
            target=target or ctx.route or "-",
            outcome=Outcome.FAILURE,
            ctx=ctx,
            reason=str(reason),
        )
        raise Unauthenticated(reason)

    async def deny(
        self,
        access: Access,
        ctx: RequestContext,
        *,
        reason: str,
        permission: Permission | None = None,
        detail: str | None = None,
    ) -> NoReturn:
        """Audit an access denied to a known principal, and raise `Forbidden`."""
        await self._audit.record(
            tenant_id=access.tenant_id,
            actor=access.principal.subject,
            action=AuditAction.ACCESS_DENIED,
            target=ctx.route or "-",
            outcome=Outcome.DENIED,
            ctx=ctx,
            reason=reason,
        )
        raise Forbidden(permission, detail)

    # --- authentication of a request ----------------------------------------------------------

    async def authenticate(
        self,
        bearer: str | None,
        *,
        tenant: str | None,
        ctx: RequestContext,
        api_key_only: bool = False,
    ) -> Access:
        """Who presents `bearer`, acting in which tenant (`tenant`: the X-Tenant slug).

        `api_key_only`: the credential came where only an API key is taken (the password
        of HTTP Basic); anything else is refused as a malformed API key."""
        if not bearer:
            raise Unauthenticated(Refusal.MISSING_CREDENTIALS)
        kind = bearer_kind(bearer)
        if api_key_only and kind != BearerKind.API_KEY:
            await self._refuse(Refusal.MALFORMED_API_KEY, ctx)
        if kind == BearerKind.API_KEY:
            principal, own = await self._api_key(bearer, ctx, AuditAction.CREDENTIAL_REFUSED)
        elif kind == BearerKind.JWT:
            principal, own = await self._access_token(bearer, ctx)
        elif kind == BearerKind.REFRESH_TOKEN:
            await self._refuse(Refusal.REFRESH_TOKEN_AS_ACCESS, ctx)
        else:
            await self._refuse(Refusal.MALFORMED_TOKEN, ctx)
        return await self._scope(principal, own, tenant, ctx)

    async def authenticate_service(
        self,
        name: str | None,
        *,
        tenant_slug: str,
        role: Role,
        tenant: str | None,
        ctx: RequestContext,
    ) -> Access:
        """A service identity: a client certificate the transport verified (mTLS) and the
        configuration mapped (`name`, None: it maps to nothing) to a tenant and a role. It
        acts in that tenant only, with that role's permissions; a disabled or unknown tenant
        refuses it, as it refuses the tenant's other principals."""
        if name is None:
            await self._refuse(Refusal.UNMAPPED_CERTIFICATE, ctx)
        found = await self._tenant_by_slug(tenant_slug)
        if found is None or found.disabled:
            await self._refuse(
                Refusal.TENANT_DISABLED if found is not None else Refusal.PRINCIPAL_GONE,
                ctx,
                tenant_id=None if found is None else found.id,
                actor=f"service:{name}",
            )
        principal = Principal(
            kind=PrincipalKind.SERVICE, id=name, tenant_id=found.id, name=name, roles=(role,)
        )
        return await self._scope(principal, found, tenant, ctx)

    async def _api_key(
        self, text: str, ctx: RequestContext, action: AuditAction
    ) -> tuple[Principal, Tenant | None]:
        parts = parse_api_key(text)
        if parts is None:
            await self._refuse(Refusal.MALFORMED_API_KEY, ctx, action=action)
        key = await self._key_by_prefix(parts.prefix)
        secret_ok = key is not None and self._bearer.verify_api_key(text, key.secret_hash)
        tenant = None
        if key is not None and key.tenant_id is not None:
            tenant = await self._tenant(key.tenant_id)
        result = check_api_key_login(
            key, secret_ok=secret_ok, tenant=tenant, now=self._deps.clock.now()
        )
        if not isinstance(result, Principal):
            await self._refuse(
                result,
                ctx,
                tenant_id=None if key is None else key.tenant_id,
                actor=ANONYMOUS if key is None else f"api_key:{key.id}",
                action=action,
                target=None if action == AuditAction.CREDENTIAL_REFUSED else "grant:api_key",
            )
        return result, tenant

    async def _access_token(
        self, token: str, ctx: RequestContext
    ) -> tuple[Principal, Tenant | None]:
        now = self._deps.clock.now()
        claims = self._signer.verify(token, now=now)
        if claims == Refusal.UNKNOWN_KID and await self._secrets.reload_if_older_than(RELOAD_AFTER):
            claims = self._signer.verify(token, now=now)
        if isinstance(claims, Refusal):
            await self._refuse(claims, ctx)
        record = await self._record(claims.kind, claims.tenant, claims.principal_id)
        tenant = None
        if record is not None and record.tenant_id is not None:
            tenant = await self._tenant(record.tenant_id)
        revoked = await self._is_revoked(claims.jti)
        result = admit(claims, record=record, tenant=tenant, revoked=revoked, now=now)
        if not isinstance(result, Principal):
            await self._refuse(result, ctx, tenant_id=claims.tenant, actor=claims.sub)
        return result, tenant

    async def _scope(
        self, principal: Principal, own: Tenant | None, named: str | None, ctx: RequestContext
    ) -> Access:
        if principal.tenant_id is not None:
            assert own is not None  # admitted: its tenant exists and is enabled
            access = Access(principal=principal, tenant_id=own.id, tenant_slug=own.slug)
            if named is not None and _normalized(named) != own.slug:
                await self.deny(
                    access,
                    ctx,
                    reason="x_tenant_names_another_tenant",
                    detail="The credential belongs to another tenant than X-Tenant names.",
                )
            return access
        if named is None:
            return Access(principal=principal, tenant_id=None)
        tenant = await self._tenant_by_slug(named)
        if tenant is None:
            raise not_found("tenant", named)
        return Access(principal=principal, tenant_id=tenant.id, tenant_slug=tenant.slug)

    async def authorize(self, access: Access, permission: Permission, ctx: RequestContext) -> None:
        """Raise `Forbidden` (audited) unless a role of the principal grants `permission`."""
        if not access.principal.can(permission):
            await self.deny(access, ctx, reason=f"needs {permission}", permission=permission)

    # --- the token endpoint -------------------------------------------------------------------

    async def grant(self, request: TokenRequest, ctx: RequestContext) -> TokenAnswer:
        match request.grant_type:
            case "password":
                principal = await self._password(request, ctx)
                return await self._issue(principal, ctx, AuditAction.LOGIN, "password")
            case "api_key":
                if not request.api_key:
                    raise Invalid(
                        "The api_key grant needs an api_key.",
                        [FieldError("api_key", "is required")],
                    )
                principal, _ = await self._api_key(request.api_key, ctx, AuditAction.LOGIN)
                return await self._issue(principal, ctx, AuditAction.LOGIN, "api_key")
            case "refresh_token":
                if not request.refresh_token:
                    raise Invalid(
                        "The refresh_token grant needs a refresh_token.",
                        [FieldError("refresh_token", "is required")],
                    )
                return await self._refresh(request.refresh_token, ctx)
        raise Invalid(
            "The grant type is not supported.",
            [FieldError("grant_type", f"must be one of {', '.join(GRANT_TYPES)}")],
        )

    async def _password(self, request: TokenRequest, ctx: RequestContext) -> Principal:
        errors = [
            FieldError(name, "is required")
            for name, value in (("username", request.username), ("password", request.password))
            if not value
        ]
        raise_if(errors, "The password grant needs a username and a password.")
        assert request.username is not None
        assert request.password is not None
        tenant: Tenant | None = None
        user: User | None = None
        try:
            username: str | None = normalize_username(request.username)
        except Invalid:
            username = None
        if request.tenant:
            tenant = await self._tenant_by_slug(request.tenant)
        if username is not None and (tenant is not None or not request.tenant):
            user = await self._store.users.by_username(
                None if tenant is None else tenant.id, username
            )
        if user is None:
            password_ok = await self._hasher.verify_dummy(request.password)
        else:
            password_ok = await self._hasher.verify(request.password, user.password_hash)
        result = check_password_login(user, password_ok=password_ok, tenant=tenant)
        if not isinstance(result, Principal):
            await self._refuse(
                result,
                ctx,
                tenant_id=None if tenant is None else tenant.id,
                actor=attempted_actor("username", request.username)
                if user is None
                else f"user:{user.id}",
                action=AuditAction.LOGIN,
                target="grant:password",
            )
        assert user is not None
        if self._hasher.needs_rehash(user.password_hash):
            rehashed = await self._hasher.hash(request.password)
            await self._store.users.update(
                patch_user(user, password_hash=rehashed, now=self._deps.clock.now())
            )
        return result

    async def _issue(
        self, principal: Principal, ctx: RequestContext, action: AuditAction, how: str
    ) -> TokenAnswer:
        deps = self._deps
        now = deps.clock.now()
        jti = deps.ids.new_id()
        access_token = self._signer.issue(principal, jti=jti, now=now)
        minted = self._bearer.new_refresh_token()
        family, token = start_family(
            family_id=deps.ids.new_id(),
            tenant_id=principal.tenant_id,
            subject=principal.subject,
            token_hash=minted.hash,
            now=now,
        )
        await self._store.refresh.start(family, token)
        await self._audit.record(
            tenant_id=principal.tenant_id,
            actor=principal.subject,
            action=action,
            target=f"token:{jti}",
            ctx=ctx,
            reason=how,
        )
        return TokenAnswer(
            access_token=access_token,
            expires_in=int(self._signer.ttl.total_seconds()),
            refresh_token=minted.text,
        )

    async def _refresh(self, text: str, ctx: RequestContext) -> TokenAnswer:
        action = AuditAction.REFRESH
        found = None
        if parse_refresh_token(text) is not None:
            found = await self._store.refresh.find(self._bearer.hash_refresh_token(text))
        if found is None:
            await self._refuse(Refusal.UNKNOWN_REFRESH_TOKEN, ctx, action=action, target="-")
        family, token = found
        now = self._deps.clock.now()
        target = f"family:{family.id}"

        async def refuse(reason: Refusal) -> NoReturn:
            await self._refuse(
                reason,
                ctx,
                tenant_id=family.tenant_id,
                actor=family.subject,
                action=action,
                target=target,
            )

        decision = decide_refresh(family, token, now=now)
        if decision.action == RefreshAction.REVOKE_FAMILY:
            await self._revoke_family(decision.family, ctx, reason="reuse")
            await refuse(Refusal.REFRESH_TOKEN_REUSED)
        if decision.action != RefreshAction.ROTATE:
            await refuse(decision.refusal or Refusal.FAMILY_REVOKED)
        principal = await self._principal_of(family, now)
        if not isinstance(principal, Principal):
            await refuse(principal)
        minted = self._bearer.new_refresh_token()
        used, fresh = rotate_refresh(family, token, new_token_hash=minted.hash, now=now)
        if not await self._store.refresh.rotate(used, fresh):
            # Another request used the same token a moment before: a reuse all the same.
            await self._revoke_family(
                revoke_family(family, now=now, reason="reuse"), ctx, reason="reuse"
            )
            await refuse(Refusal.REFRESH_TOKEN_REUSED)
        jti = self._deps.ids.new_id()
        access_token = self._signer.issue(principal, jti=jti, now=now)
        await self._audit.record(
            tenant_id=family.tenant_id,
            actor=family.subject,
            action=action,
            target=f"token:{jti}",
            ctx=ctx,
            reason=target,
        )
        return TokenAnswer(
            access_token=access_token,
            expires_in=int(self._signer.ttl.total_seconds()),
            refresh_token=minted.text,
        )

    async def _principal_of(self, family: RefreshFamily, now: datetime) -> Principal | Refusal:
        """The principal a family was issued to, if it may still log in."""
        subject = parse_subject(family.subject)
        if subject is None:
            return Refusal.PRINCIPAL_GONE
        kind, ident = subject
        record = await self._record(kind, family.tenant_id, ident)
        tenant = None
        if record is not None and record.tenant_id is not None:
            tenant = await self._tenant(record.tenant_id)
        if isinstance(record, ApiKey):
            return check_api_key_login(record, secret_ok=True, tenant=tenant, now=now)
        return check_password_login(record, password_ok=record is not None, tenant=tenant)

    async def _revoke_family(self, family: RefreshFamily, ctx: RequestContext, reason: str) -> None:
        await self._store.refresh.save_family(family)
        await self._audit.record(
            tenant_id=family.tenant_id,
            actor=family.subject,
            action=AuditAction.FAMILY_REVOKED,
            target=f"family:{family.id}",
            ctx=ctx,
            reason=reason,
        )

    async def revoke(self, token: str, ctx: RequestContext) -> None:
        """Revoke what `token` is (RFC 7009: an unknown or invalid token is no error)."""
        now = self._deps.clock.now()
        match bearer_kind(token):
            case BearerKind.JWT:
                claims = self._signer.verify(token, now=now)
                if isinstance(claims, Refusal):
                    return
                await self._store.revocations.revoke(claims.jti, claims.expires_at() + LEEWAY)
                self._not_revoked.clear()
                await self._audit.record(
                    tenant_id=claims.tenant,
                    actor=claims.sub,
                    action=AuditAction.TOKEN_REVOKED,
                    target=f"token:{claims.jti}",
                    ctx=ctx,
                )
            case BearerKind.REFRESH_TOKEN:
                found = await self._store.refresh.find(self._bearer.hash_refresh_token(token))
                if found is None:
                    return
                family = revoke_family(found[0], now=now, reason="revoked")
                if family is not found[0]:
                    await self._revoke_family(family, ctx, reason="revoked")
            case BearerKind.API_KEY:
                parts = parse_api_key(token)
                assert parts is not None
                key = await self._store.api_keys.by_prefix(parts.prefix)
                if key is None or not self._bearer.verify_api_key(token, key.secret_hash):
                    return
                await self._revoke_key(key, actor=f"api_key:{key.id}", ctx=ctx)
            case _:
                return

    # --- users --------------------------------------------------------------------------------

    async def create_user(
        self,
        access: Access,
        cmd: CreateUser,
        ctx: RequestContext,
        once: Once[User] | None = None,
    ) -> User:
        """A new user; `once`: the request's Idempotency-Key (the record is stored with the
        user; a request answered before is answered again, `AlreadyAnswered`)."""
        deps = self._deps
        scope = access.tenant_id
        username = normalize_username(cmd.username)
        check_password(cmd.password, username=username)
        roles = check_roles("/roles", cmd.roles, tenant_id=scope)
        await deps.recall(once)
        if await self._store.users.by_username(scope, username) is not None:
            await deps.recall(once)  # a duplicate of this request may have made it meanwhile
            raise Conflict(f"A user named {username!r} exists already.")
        password_hash = await self._hasher.hash(cmd.password)
        now = deps.clock.now()
        user = new_user(
            id=deps.ids.new_id(),
            tenant_id=scope,
            username=username,
            roles=roles,
            password_hash=password_hash,
            now=now,
        )
        try:
            await self._store.users.add(user, None if once is None else once.record(user, now))
        except Conflict:
            await deps.recall(once)
            raise
        await self._audit.record(
            tenant_id=scope,
            actor=access.principal.subject,
            action=AuditAction.USER_CREATED,
            target=f"user:{user.id}",
            ctx=ctx,
            reason="roles " + ",".join(user.roles),
        )
        return user

    async def get_user(self, access: Access, user_id: str) -> User:
        user = await self._store.users.get(access.tenant_id, user_id)
        if user is None:
            raise not_found("user", user_id)
        return user

    async def list_users(self, access: Access, page: PageRequest) -> list[User]:
        return await self._store.users.list(access.tenant_id, page)

    async def patch_user(
        self, access: Access, user_id: str, cmd: PatchUser, ctx: RequestContext
    ) -> User:
        user = await self.get_user(access, user_id)
        password_hash = None
        if cmd.password is not None:
            check_password(cmd.password, username=user.username)
            password_hash = await self._hasher.hash(cmd.password)
        now = self._deps.clock.now()
        changed = patch_user(
            user,
            roles=cmd.roles,
            disabled=cmd.disabled,
            password_hash=password_hash,
            now=now,
        )
        if changed is user:
            return user
        await self._store.users.update(changed)
        self.forget()

        async def audit(action: AuditAction, reason: str) -> None:
            await self._audit.record(
                tenant_id=access.tenant_id,
                actor=access.principal.subject,
                action=action,
                target=f"user:{user.id}",
                ctx=ctx,
                reason=reason,
            )

        if changed.roles != user.roles:
            await audit(
                AuditAction.ROLE_CHANGED, f"{','.join(user.roles)} -> {','.join(changed.roles)}"
            )
        if changed.disabled != user.disabled or password_hash is not None:
            what = []
            if changed.disabled != user.disabled:
                what.append("disabled" if changed.disabled else "enabled")
            if password_hash is not None:
                what.append("password changed")
            await audit(AuditAction.USER_CHANGED, ", ".join(what))
            await self._store.refresh.revoke_subject(
                user.tenant_id, f"user:{user.id}", at=now, reason=", ".join(what)
            )
        return changed

    async def delete_user(self, access: Access, user_id: str, ctx: RequestContext) -> None:
        user = await self.get_user(access, user_id)
        if not await self._store.users.delete(access.tenant_id, user.id):
            raise not_found("user", user_id)
        self.forget()
        await self._store.refresh.revoke_subject(
            user.tenant_id, f"user:{user.id}", at=self._deps.clock.now(), reason="deleted"
        )
        await self._audit.record(
            tenant_id=access.tenant_id,
            actor=access.principal.subject,
            action=AuditAction.USER_DELETED,
            target=f"user:{user.id}",
            ctx=ctx,
        )

    # --- API keys -----------------------------------------------------------------------------

    async def create_api_key(
        self,
        access: Access,
        cmd: CreateApiKey,
        ctx: RequestContext,
        once: Once[ApiKey] | None = None,
    ) -> tuple[ApiKey, str]:
        """The new key and its text, which is shown this once and never again.

        With `once` (an Idempotency-Key) the stored answer is made from the key alone, never
        from its text: a retry learns which key was made, not its secret."""
        await self._deps.recall(once)
        try:
            return await self.issue_api_key(
                access.tenant_id,
                name=cmd.name,
                role=cmd.role,
                expires_at=cmd.expires_at,
                created_by=access.principal.subject,
                ctx=ctx,
                once=once,
            )
        except KeyInUse:
            await self._deps.recall(once)
            raise

    async def issue_api_key(
        self,
        tenant_id: str | None,
        *,
        name: str,
        role: str,
        created_by: str,
        expires_at: datetime | None = None,
        ctx: RequestContext | None = None,
        once: Once[ApiKey] | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key of a tenant (or of the platform); also the operator's `waypost admin`."""
        for attempt in range(_KEY_ATTEMPTS):
            minted = self._bearer.new_api_key()
            now = self._deps.clock.now()
            key = new_api_key(
                id=self._deps.ids.new_id(),
                tenant_id=tenant_id,
                name=name,
                role=role,
                prefix=minted.prefix,
                secret_hash=minted.hash,
                created_by=created_by,
                now=now,
                expires_at=expires_at,
            )
            try:
                await self._store.api_keys.add(key, None if once is None else once.record(key, now))
            except KeyInUse:
                raise
            except Conflict:  # the prefix is taken: 36**8 makes this rare; try another
                if attempt == _KEY_ATTEMPTS - 1:
                    raise
                continue
            await self._audit.record(
                tenant_id=tenant_id,
                actor=created_by,
                action=AuditAction.API_KEY_CREATED,
                target=f"api_key:{key.id}",
                ctx=ctx,
                reason=f"role {role}",
            )
            return key, minted.text
        raise AssertionError("unreachable")  # pragma: no cover

    async def get_api_key(self, access: Access, key_id: str) -> ApiKey:
        key = await self._store.api_keys.get(access.tenant_id, key_id)
        if key is None:
            raise not_found("API key", key_id)
        return key

    async def list_api_keys(self, access: Access, page: PageRequest) -> list[ApiKey]:
        return await self._store.api_keys.list(access.tenant_id, page)

    async def operator_revoke_api_key(self, key_id: str, *, actor: str) -> ApiKey:
        """Revoke a key of any scope by its id (the operator's `waypost admin`)."""
        key = await self._store.api_keys.find(key_id) if is_ulid(key_id) else None
        if key is None:
            raise not_found("API key", key_id)
        return await self._revoke_key(key, actor=actor, ctx=RequestContext())

    async def operator_api_keys(self, tenant_id: str | None) -> list[ApiKey]:
        """Every key of a tenant (None: the platform's), oldest first."""
        found: list[ApiKey] = []
        page = PageRequest(limit=MAX_PAGE_SIZE, order="asc")
        while batch := await self._store.api_keys.list(tenant_id, page):
            found += batch
            page = PageRequest(limit=MAX_PAGE_SIZE, order="asc", after=batch[-1].id)
        return found

    async def revoke_api_key(self, access: Access, key_id: str, ctx: RequestContext) -> ApiKey:
        key = await self.get_api_key(access, key_id)
        return await self._revoke_key(key, actor=access.principal.subject, ctx=ctx)

    async def _revoke_key(self, key: ApiKey, *, actor: str, ctx: RequestContext) -> ApiKey:
        now = self._deps.clock.now()
        revoked = revoke_api_key(key, now=now)
        if revoked is key:
            return key
        await self._store.api_keys.update(revoked)
        self.forget()
        await self._store.refresh.revoke_subject(
            key.tenant_id, f"api_key:{key.id}", at=now, reason="key revoked"
        )
        await self._audit.record(
            tenant_id=key.tenant_id,
            actor=actor,
            action=AuditAction.API_KEY_REVOKED,
            target=f"api_key:{key.id}",
            ctx=ctx,
        )
        return revoked

    # --- the first platform administrator -----------------------------------------------------

    async def bootstrap(self) -> str | None:
        """On the first start of an empty store: a platform administrator's API key, whose
        text is returned (to be shown once). None when one was ever made."""
        if await self._store.api_keys.any_platform_key():
            return None
        key, text = await self.issue_api_key(
            None, name=BOOTSTRAP_KEY_NAME, role=Role.PLATFORM_ADMIN, created_by="system"
        )
        await self._audit.record(
            tenant_id=None,
            actor="system",
            action=AuditAction.PLATFORM_BOOTSTRAPPED,
            target=f"api_key:{key.id}",
        )
        return text

    async def housekeeping(self) -> int:
        """Forget revoked token ids whose tokens have expired anyway (how many); and, at
        most every `AUDIT_PURGE_EVERY`, delete audit records past their retention."""
        now = self._deps.clock.now()
        retention = self._audit_retention
        if retention is not None and (
            self._purged_at is None or now - self._purged_at >= AUDIT_PURGE_EVERY
        ):
            self._purged_at = now
            await self._audit.purge(retention)
        return await self._store.revocations.purge(now)

    # --- the public keys ----------------------------------------------------------------------

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return self._signer.jwks(self._deps.clock.now())


def _normalized(slug: str) -> str | None:
    try:
        return normalize_slug(slug)
    except Invalid:
        return None
