"""Principals and credentials: users, API keys, token claims and refresh-token families.

Everything here is pure. Hashes are opaque strings made and checked by the
crypto adapters; secrets, ids and the time come in as arguments. The core
parses and formats credentials and decides, from facts the adapters and the
store gather, whether a request is let in:

- `check_access_claims`: the claims of a JWT whose signature an adapter has
  already verified (with the algorithm pinned to the key) -> `Claims` or a
  `Refusal`;
- `admit`: those claims plus what the store says now (the principal, its
  tenant, whether the token id is revoked) -> `Principal` or a `Refusal`;
- `check_password_login` / `check_api_key_login`: the grants of the token
  endpoint;
- `decide_refresh`: the refresh-token family machine, its transitions as data in
  `REFRESH_TRANSITIONS` (ARCHITECTURE.md, rule 3).

A `Refusal` names precisely why, for the audit log; `REFUSAL_DETAIL` is what a
caller may be told, and it never tells a wrong username from a wrong password.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated, Any, Final

import msgspec

from core.domain.access import (
    PLATFORM_ROLES,
    TENANT_ROLES,
    Permission,
    Role,
    permissions_of,
)
from core.domain.errors import Conflict, FieldError, Forbidden, Unauthenticated, raise_if
from core.domain.fields import NUL, NUL_MESSAGE, check_name, in_utc
from core.domain.model import Tenant
from core.domain.refusals import REFUSAL_DETAIL, Refusal

__all__ = [
    "ACCESS_TOKEN_TTL",
    "ACCESS_TOKEN_TYPE",
    "API_KEY_PREFIX_ALPHABET",
    "API_KEY_PREFIX_LENGTH",
    "LEEWAY",
    "MAX_PASSWORD_LENGTH",
    "MAX_USERNAME_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "MIN_USERNAME_LENGTH",
    "REFRESH_FAMILY_TTL",
    "REFRESH_TOKEN_PREFIX",
    "REFRESH_TOKEN_TTL",
    "REFRESH_TRANSITIONS",
    "REFUSAL_DETAIL",
    "ApiKey",
    "ApiKeyParts",
    "BearerKind",
    "Claims",
    "FamilyState",
    "Forbidden",
    "Principal",
    "PrincipalKind",
    "RefreshAction",
    "RefreshDecision",
    "RefreshEvent",
    "RefreshFamily",
    "RefreshToken",
    "Refusal",
    "TokenState",
    "Unauthenticated",
    "User",
    "access_claims",
    "admit",
    "api_key_refusal",
    "bearer_kind",
    "check_access_claims",
    "check_api_key_login",
    "check_password",
    "check_password_login",
    "check_roles",
    "decide_refresh",
    "format_api_key",
    "format_refresh_token",
    "format_subject",
    "new_api_key",
    "new_user",
    "normalize_username",
    "parse_api_key",
    "parse_refresh_token",
    "parse_subject",
    "patch_user",
    "principal_of",
    "require",
    "revoke_api_key",
    "revoke_family",
    "rotate_refresh",
    "start_family",
]

MIN_USERNAME_LENGTH: Final = 3
MAX_USERNAME_LENGTH: Final = 64
MIN_PASSWORD_LENGTH: Final = 12
MAX_PASSWORD_LENGTH: Final = 1024

#: `typ` of an access token (RFC 9068).
ACCESS_TOKEN_TYPE: Final = "at+jwt"  # noqa: S105 - a name, not a secret
ACCESS_TOKEN_TTL: Final = timedelta(minutes=15)
#: Clock skew tolerated on exp, nbf and iat.
LEEWAY: Final = timedelta(seconds=60)
#: Longest lifetime (exp - iat) an access token may claim, whoever signed it.
MAX_ACCESS_TOKEN_LIFETIME: Final = timedelta(hours=24)

#: A refresh token lives this long unused; its family at most `REFRESH_FAMILY_TTL`.
REFRESH_TOKEN_TTL: Final = timedelta(days=7)
REFRESH_FAMILY_TTL: Final = timedelta(days=30)

API_KEY_SCHEME: Final = "wp"
API_KEY_PREFIX_LENGTH: Final = 8
API_KEY_PREFIX_ALPHABET: Final = "abcdefghijklmnopqrstuvwxyz0123456789"
#: base64url of 32 random bytes is 43 characters: fewer would be under 256 bits.
MIN_SECRET_LENGTH: Final = 43
MAX_SECRET_LENGTH: Final = 128
REFRESH_TOKEN_PREFIX: Final = "wprt_"  # noqa: S105 - a name, not a secret

_USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
_SECRET = re.compile(rf"[A-Za-z0-9_-]{{{MIN_SECRET_LENGTH},{MAX_SECRET_LENGTH}}}")
_API_KEY = re.compile(
    rf"{API_KEY_SCHEME}_(?P<prefix>[{API_KEY_PREFIX_ALPHABET}]{{{API_KEY_PREFIX_LENGTH}}})"
    rf"_(?P<secret>{_SECRET.pattern})"
)
_REFRESH_TOKEN = re.compile(rf"{REFRESH_TOKEN_PREFIX}(?P<secret>{_SECRET.pattern})")
# Three base64url segments: the shape of a JWS compact serialization.
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


# --- errors ----------------------------------------------------------------------------------
# `Refusal`, `REFUSAL_DETAIL`, `Unauthenticated` and `Forbidden` live in core.domain.refusals and
# core.domain.errors; they are re-exported here, where they were first defined.

# --- principals ------------------------------------------------------------------------------


class PrincipalKind(StrEnum):
    USER = "user"
    API_KEY = "api_key"
    #: A client certificate (mTLS) mapped to a tenant and a role by configuration.
    SERVICE = "service"


class User(msgspec.Struct, frozen=True, kw_only=True):
    """A person who logs in with a password. `tenant_id` is None for platform administrators.

    `password_hash` is the adapter's encoded hash: never show a `User` as it is.
    Usernames are unique per tenant (and among platform administrators).
    """

    id: str
    tenant_id: str | None
    username: str
    roles: tuple[Role, ...]
    password_hash: str
    disabled: bool = False
    created_at: datetime
    updated_at: datetime


class ApiKey(msgspec.Struct, frozen=True, kw_only=True):
    """A key for scripts: `prefix` finds it, `secret_hash` (the adapter's) proves it."""

    id: str
    tenant_id: str | None
    name: str
    prefix: str
    secret_hash: str
    roles: tuple[Role, ...]
    created_at: datetime
    created_by: str
    expires_at: datetime | None = None
    revoked_at: datetime | None = None


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """Who a request acts as, once authenticated."""

    kind: PrincipalKind
    id: str
    tenant_id: str | None
    name: str
    roles: tuple[Role, ...]
    #: The jti of the access token that carried it, when it came from one.
    token_id: str | None = None

    @property
    def subject(self) -> str:
        return format_subject(self.kind, self.id)

    @property
    def permissions(self) -> frozenset[Permission]:
        return permissions_of(self.roles)

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions


def require(principal: Principal, permission: Permission) -> None:
    """Raise `Forbidden` unless one of the principal's roles grants `permission`."""
    if not principal.can(permission):
        raise Forbidden(permission)


def format_subject(kind: PrincipalKind, id: str) -> str:
    """The JWT `sub` of a principal: `user:<id>` or `api_key:<id>`."""
    return f"{kind}:{id}"


def parse_subject(sub: str) -> tuple[PrincipalKind, str] | None:
    """The kind and id a `sub` names, or None when it names neither a user nor a key."""
    kind, sep, id = sub.partition(":")
    if not sep or not id or ":" in id:
        return None
    try:
        found = PrincipalKind(kind)
    except ValueError:
        return None
    if found == PrincipalKind.SERVICE:  # service identities never hold tokens
        return None
    return found, id


def principal_of(record: User | ApiKey, *, token_id: str | None = None) -> Principal:
    if isinstance(record, User):
        return Principal(
            kind=PrincipalKind.USER,
            id=record.id,
            tenant_id=record.tenant_id,
            name=record.username,
            roles=record.roles,
            token_id=token_id,
        )
    return Principal(
        kind=PrincipalKind.API_KEY,
        id=record.id,
        tenant_id=record.tenant_id,
        name=record.name,
        roles=record.roles,
        token_id=token_id,
    )


# --- users -----------------------------------------------------------------------------------


def normalize_username(raw: str) -> str:
    """Trimmed and lower-cased; 3 to 64 of `a-z 0-9 . _ -`, starting with a letter or digit.

    Only ASCII is accepted *before* lower-casing, so that no other character
    (the Kelvin sign lower-cases to `k`) can pass for an ASCII name.
    """
    value = raw.strip()
    errors: list[FieldError] = []
    if not value.isascii():
        errors.append(FieldError("/username", "only a-z, 0-9, '.', '_' and '-' are allowed"))
    else:
        value = value.lower()
        if not MIN_USERNAME_LENGTH <= len(value) <= MAX_USERNAME_LENGTH:
            errors.append(
                FieldError(
                    "/username",
                    f"must be {MIN_USERNAME_LENGTH} to {MAX_USERNAME_LENGTH} characters",
                )
            )
        elif not _USERNAME.fullmatch(value):
            errors.append(
                FieldError(
                    "/username",
                    "only a-z, 0-9, '.', '_' and '-' are allowed, starting with a letter or digit",
                )
            )
    raise_if(errors, "The username is not valid.")
    return value


def check_password(password: str, *, username: str) -> None:
    """12 to 1024 characters, not one character repeated, not the username (in any case).

    The password is checked as given: it is never trimmed or changed.
    """
    errors: list[FieldError] = []
    if len(password) < MIN_PASSWORD_LENGTH:
        errors.append(FieldError("/password", f"must be at least {MIN_PASSWORD_LENGTH} characters"))
    elif len(password) > MAX_PASSWORD_LENGTH:
        errors.append(FieldError("/password", f"must be at most {MAX_PASSWORD_LENGTH} characters"))
    elif len(set(password)) == 1:
        errors.append(FieldError("/password", "must not be one character repeated"))
    elif NUL in password:
        errors.append(FieldError("/password", NUL_MESSAGE))
    elif password.strip().casefold() == username.strip().casefold():
        errors.append(FieldError("/password", "must not be the username"))
    raise_if(errors, "The password is not acceptable.")


def check_roles(field: str, roles: Iterable[str], *, tenant_id: str | None) -> tuple[Role, ...]:
    """Known roles, at least one, no repeats: tenant roles in a tenant, platform roles outside.

    Returns them in a canonical order (as `Role` lists them).
    """
    errors: list[FieldError] = []
    allowed_here = TENANT_ROLES if tenant_id is not None else PLATFORM_ROLES
    seen: set[Role] = set()
    names = list(roles)
    if not names:
        errors.append(FieldError(field, "at least one role is required"))
    for index, name in enumerate(names):
        try:
            role = Role(name)
        except ValueError:
            errors.append(FieldError(f"{field}/{index}", f"{name!r} is not a role"))
            continue
        if role not in allowed_here:
            where = "a tenant" if tenant_id is not None else "the platform"
            errors.append(FieldError(f"{field}/{index}", f"{role} is not a role in {where}"))
        elif role in seen:
            errors.append(FieldError(f"{field}/{index}", f"{role} is listed twice"))
        seen.add(role)
    raise_if(errors, "The roles are not valid.")
    return tuple(r for r in Role if r in seen)


def new_user(
    *,
    id: str,
    tenant_id: str | None,
    username: str,
    roles: Iterable[str],
    password_hash: str,
    now: datetime,
) -> User:
    """A new user. The caller checked the password (`check_password`) before hashing it."""
    return User(
        id=id,
        tenant_id=tenant_id,
        username=normalize_username(username),
        roles=check_roles("/roles", roles, tenant_id=tenant_id),
        password_hash=password_hash,
        created_at=now,
        updated_at=now,
    )


def patch_user(
    user: User,
    *,
    roles: Iterable[str] | None = None,
    disabled: bool | None = None,
    password_hash: str | None = None,
    now: datetime,
) -> User:
    """The user after a change; the same object when nothing changes."""
    new_roles = (
        user.roles if roles is None else check_roles("/roles", roles, tenant_id=user.tenant_id)
    )
    new_disabled = user.disabled if disabled is None else disabled
    new_hash = user.password_hash if password_hash is None else password_hash
    if (new_roles, new_disabled, new_hash) == (user.roles, user.disabled, user.password_hash):
        return user
    return msgspec.structs.replace(
        user, roles=new_roles, disabled=new_disabled, password_hash=new_hash, updated_at=now
    )


# --- API keys --------------------------------------------------------------------------------


class ApiKeyParts(msgspec.Struct, frozen=True):
    prefix: str
    secret: str


def format_api_key(prefix: str, secret: str) -> str:
    """`wp_<prefix>_<secret>`; refuses parts that `parse_api_key` would not read back."""
    text = f"{API_KEY_SCHEME}_{prefix}_{secret}"
    if parse_api_key(text) != ApiKeyParts(prefix, secret):
        raise ValueError("not a valid API key prefix and secret")
    return text


def parse_api_key(text: str) -> ApiKeyParts | None:
    """The prefix (for lookup) and secret of `wp_<8 of a-z0-9>_<43..128 of base64url>`."""
    match = _API_KEY.fullmatch(text)
    if match is None:
        return None
    return ApiKeyParts(match["prefix"], match["secret"])


def new_api_key(
    *,
    id: str,
    tenant_id: str | None,
    name: str,
    role: str,
    prefix: str,
    secret_hash: str,
    created_by: str,
    now: datetime,
    expires_at: datetime | None = None,
) -> ApiKey:
    errors: list[FieldError] = []
    check_name(errors, "/name", name)
    if expires_at is not None:
        if expires_at.tzinfo is None:
            errors.append(FieldError("/expires_at", "must name its time zone"))
        elif in_utc(expires_at) is None:
            errors.append(
                FieldError("/expires_at", "must be a time within the years 1 to 9999 in UTC")
            )
        elif expires_at <= now:
            errors.append(FieldError("/expires_at", "must be in the future"))
    raise_if(errors, "The API key is not valid.")
    return ApiKey(
        id=id,
        tenant_id=tenant_id,
        name=name,
        prefix=prefix,
        secret_hash=secret_hash,
        roles=check_roles("/role", [role], tenant_id=tenant_id),
        created_at=now,
        created_by=created_by,
        expires_at=expires_at,
    )


def revoke_api_key(key: ApiKey, *, now: datetime) -> ApiKey:
    """The key revoked from `now` on (revoking twice keeps the first time)."""
    if key.revoked_at is not None:
        return key
    return msgspec.structs.replace(key, revoked_at=now)


def api_key_refusal(key: ApiKey, *, now: datetime) -> Refusal | None:
    if key.revoked_at is not None and key.revoked_at <= now:
        return Refusal.API_KEY_REVOKED
    if key.expires_at is not None and now >= key.expires_at:
        return Refusal.API_KEY_EXPIRED
    return None


# --- what a bearer credential looks like -----------------------------------------------------


class BearerKind(StrEnum):
    JWT = "jwt"
    API_KEY = "api_key"
    REFRESH_TOKEN = "refresh_token"  # noqa: S105 - a name, not a secret
    UNKNOWN = "unknown"


def bearer_kind(text: str) -> BearerKind:
    """What an `Authorization: Bearer` value looks like (its shape only, nothing is checked)."""
    if _REFRESH_TOKEN.fullmatch(text):
        return BearerKind.REFRESH_TOKEN
    if _API_KEY.fullmatch(text):
        return BearerKind.API_KEY
    if _JWT_SHAPE.fullmatch(text):
        return BearerKind.JWT
    return BearerKind.UNKNOWN


def format_refresh_token(secret: str) -> str:
    text = f"{REFRESH_TOKEN_PREFIX}{secret}"
    if parse_refresh_token(text) != secret:
        raise ValueError("not a valid refresh token secret")
    return text


def parse_refresh_token(text: str) -> str | None:
    """The secret of `wprt_<43..128 of base64url>`, or None."""
    match = _REFRESH_TOKEN.fullmatch(text)
    return None if match is None else match["secret"]


# --- access-token claims ---------------------------------------------------------------------


class Claims(msgspec.Struct, frozen=True, kw_only=True):
    """The claims of an accepted access token."""

    iss: str
    aud: tuple[str, ...]
    sub: str
    kind: PrincipalKind
    principal_id: str
    tenant: str | None
    roles: tuple[Role, ...]
    iat: int
    nbf: int
    exp: int
    jti: str
    kid: str | None = None

    def expires_at(self) -> datetime:
        return datetime.fromtimestamp(self.exp, tz=UTC)


def access_claims(
    *,
    issuer: str,
    audience: str,
    principal: Principal,
    jti: str,
    now: datetime,
    ttl: timedelta = ACCESS_TOKEN_TTL,
) -> dict[str, Any]:
    """The claims of a new access token for `principal` (the adapter signs them)."""
    iat = int(now.timestamp())
    return {
        "iss": issuer,
        "aud": audience,
        "sub": principal.subject,
        "tenant": principal.tenant_id,
        "roles": [str(r) for r in principal.roles],
        "iat": iat,
        "nbf": iat,
        "exp": iat + int(ttl.total_seconds()),
        "jti": jti,
    }


def _media_type(typ: str) -> str:
    """RFC 8725, 3.11: `typ` compares case-insensitively, `application/` optional."""
    value = typ.strip().lower()
    return value.removeprefix("application/")


_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


class _RawClaims(msgspec.Struct, frozen=True):
    """The claims an access token must carry, with their JSON types (others are ignored)."""

    iss: str
    aud: str | list[str]
    sub: str
    tenant: _NonEmpty | None
    roles: list[str]
    iat: int
    nbf: int
    exp: int
    jti: _NonEmpty


_REQUIRED: Final = _RawClaims.__struct_fields__
_ROLE_NAMES: Final = frozenset(r.value for r in Role)


def _read_claims(claims: Mapping[str, Any]) -> _RawClaims | Refusal:
    if any(name not in claims for name in _REQUIRED):
        return Refusal.MISSING_CLAIM
    try:
        return msgspec.convert(dict(claims), _RawClaims, strict=True)
    except msgspec.ValidationError:
        return Refusal.INVALID_CLAIM


def _time_refusal(
    raw: _RawClaims, *, now: datetime, leeway: timedelta, max_lifetime: timedelta
) -> Refusal | None:
    at = now.timestamp()
    slack = leeway.total_seconds()
    if at >= raw.exp + slack:
        return Refusal.EXPIRED
    if at + slack < raw.nbf:
        return Refusal.NOT_YET_VALID
    if at + slack < raw.iat:
        return Refusal.ISSUED_IN_FUTURE
    if raw.exp <= raw.iat or raw.exp - raw.iat > max_lifetime.total_seconds():
        return Refusal.INVALID_CLAIM
    return None


def _roles(raw: _RawClaims) -> tuple[Role, ...] | None:
    """The roles claimed, if every one is a role that fits the tenant claim."""
    fitting = TENANT_ROLES if raw.tenant is not None else PLATFORM_ROLES
    roles = tuple(Role(r) for r in raw.roles if r in _ROLE_NAMES)
    if len(roles) != len(raw.roles) or not set(roles) <= fitting:
        return None
    return roles


def check_access_claims(
    header: Mapping[str, Any],
    claims: Mapping[str, Any],
    *,
    issuer: str,
    audience: str,
    now: datetime,
    leeway: timedelta = LEEWAY,
    max_lifetime: timedelta = MAX_ACCESS_TOKEN_LIFETIME,
) -> Claims | Refusal:
    """Whether a signature-verified access token may be used now; the first failure found.

    Checked in order: `typ`, presence and JSON types of every claim, iss, aud,
    exp, nbf, iat, lifetime (at most `max_lifetime`), sub (`user:<id>` or
    `api_key:<id>`), and roles: known, and fitting `tenant` (platform roles
    without one, tenant roles with one).
    """
    typ = header.get("typ")
    if not isinstance(typ, str) or _media_type(typ) != ACCESS_TOKEN_TYPE:
        return Refusal.WRONG_TYPE
    raw = _read_claims(claims)
    if isinstance(raw, Refusal):
        return raw
    audiences = (raw.aud,) if isinstance(raw.aud, str) else tuple(raw.aud)
    if raw.iss != issuer:
        refusal: Refusal | None = Refusal.WRONG_ISSUER
    elif audience not in audiences:
        refusal = Refusal.WRONG_AUDIENCE
    else:
        refusal = _time_refusal(raw, now=now, leeway=leeway, max_lifetime=max_lifetime)
    if refusal is not None:
        return refusal
    subject = parse_subject(raw.sub)
    roles = _roles(raw)
    if subject is None or roles is None:
        return Refusal.INVALID_CLAIM
    kid = header.get("kid")
    return Claims(
        iss=raw.iss,
        aud=audiences,
        sub=raw.sub,
        kind=subject[0],
        principal_id=subject[1],
        tenant=raw.tenant,
        roles=roles,
        iat=raw.iat,
        nbf=raw.nbf,
        exp=raw.exp,
        jti=raw.jti,
        kid=kid if isinstance(kid, str) else None,
    )


def _tenant_refusal(tenant_id: str | None, tenant: Tenant | None) -> Refusal | None:
    """A principal of a tenant needs that very tenant, enabled."""
    if tenant_id is None:
        return None
    if tenant is None or tenant.id != tenant_id:
        return Refusal.PRINCIPAL_GONE
    if tenant.disabled:
        return Refusal.TENANT_DISABLED
    return None


def _record_refusal(record: User | ApiKey, *, now: datetime) -> Refusal | None:
    if isinstance(record, User):
        return Refusal.PRINCIPAL_DISABLED if record.disabled else None
    return api_key_refusal(record, now=now)


def admit(
    claims: Claims,
    *,
    record: User | ApiKey | None,
    tenant: Tenant | None,
    revoked: bool | None,
    now: datetime,
) -> Principal | Refusal:
    """Whether accepted claims still stand for someone, given what the store says now.

    `record` is the user or key the claims name (None when deleted), `tenant`
    the principal's tenant (None when gone or for platform administrators) and
    `revoked` whether the token's jti is revoked: None means the check could not
    be made, and is a refusal (fail closed). The principal keeps only the roles
    that both the token and the record hold, so a role taken away takes effect
    at once.
    """
    if revoked is None:
        return Refusal.REVOCATION_UNAVAILABLE
    if revoked:
        return Refusal.TOKEN_REVOKED
    if record is None:
        return Refusal.PRINCIPAL_GONE
    expected_kind = PrincipalKind.USER if isinstance(record, User) else PrincipalKind.API_KEY
    if (
        claims.kind != expected_kind
        or claims.principal_id != record.id
        or claims.tenant != record.tenant_id
    ):
        return Refusal.PRINCIPAL_GONE
    refusal = _record_refusal(record, now=now) or _tenant_refusal(record.tenant_id, tenant)
    if refusal is not None:
        return refusal
    principal = principal_of(record, token_id=claims.jti)
    roles = tuple(r for r in principal.roles if r in claims.roles)
    return msgspec.structs.replace(principal, roles=roles)


def check_password_login(
    user: User | None, *, password_ok: bool, tenant: Tenant | None
) -> Principal | Refusal:
    """The password grant. Run the password check even when `user` is None (timing)."""
    if user is None or not password_ok:
        return Refusal.BAD_CREDENTIALS
    refusal = (
        Refusal.PRINCIPAL_DISABLED if user.disabled else _tenant_refusal(user.tenant_id, tenant)
    )
    return refusal if refusal is not None else principal_of(user)


def check_api_key_login(
    key: ApiKey | None, *, secret_ok: bool, tenant: Tenant | None, now: datetime
) -> Principal | Refusal:
    """The api_key grant (or an API key presented directly)."""
    if key is None or not secret_ok:
        return Refusal.BAD_CREDENTIALS
    refusal = _record_refusal(key, now=now) or _tenant_refusal(key.tenant_id, tenant)
    return refusal if refusal is not None else principal_of(key)


# --- refresh-token families --------------------------------------------------------------------
# A login starts a family with one current token. Using the current token rotates
# it: it becomes used and a new current token is issued in the same family. A used
# token presented again means two parties hold the family (one of them a thief):
# the whole family is revoked. The family's state, not each token's, says whether
# any of its tokens still works.


class FamilyState(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"


class TokenState(StrEnum):
    CURRENT = "current"
    USED = "used"


class RefreshEvent(StrEnum):
    PRESENT_CURRENT = "present_current"
    PRESENT_USED = "present_used"
    REVOKE = "revoke"


class RefreshAction(StrEnum):
    ROTATE = "rotate"
    REVOKE_FAMILY = "revoke_family"
    REFUSE = "refuse"
    NOTHING = "nothing"


#: (family state, event) -> (family state after, action, refusal told to the presenter).
REFRESH_TRANSITIONS: Mapping[
    tuple[FamilyState, RefreshEvent], tuple[FamilyState, RefreshAction, Refusal | None]
] = MappingProxyType(
    {
        (FamilyState.ACTIVE, RefreshEvent.PRESENT_CURRENT): (
            FamilyState.ACTIVE,
            RefreshAction.ROTATE,
            None,
        ),
        (FamilyState.ACTIVE, RefreshEvent.PRESENT_USED): (
            FamilyState.REVOKED,
            RefreshAction.REVOKE_FAMILY,
            Refusal.REFRESH_TOKEN_REUSED,
        ),
        (FamilyState.ACTIVE, RefreshEvent.REVOKE): (
            FamilyState.REVOKED,
            RefreshAction.REVOKE_FAMILY,
            None,
        ),
        (FamilyState.REVOKED, RefreshEvent.PRESENT_CURRENT): (
            FamilyState.REVOKED,
            RefreshAction.REFUSE,
            Refusal.FAMILY_REVOKED,
        ),
        (FamilyState.REVOKED, RefreshEvent.PRESENT_USED): (
            FamilyState.REVOKED,
            RefreshAction.REFUSE,
            Refusal.FAMILY_REVOKED,
        ),
        (FamilyState.REVOKED, RefreshEvent.REVOKE): (
            FamilyState.REVOKED,
            RefreshAction.NOTHING,
            None,
        ),
    }
)


class RefreshFamily(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    tenant_id: str | None
    #: `format_subject(...)` of the principal the family was issued to.
    subject: str
    state: FamilyState = FamilyState.ACTIVE
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None
    revoked_reason: str | None = None


class RefreshToken(msgspec.Struct, frozen=True, kw_only=True):
    """One refresh token of a family, known by the adapter's hash of it (never the token)."""

    token_hash: str
    family_id: str
    state: TokenState = TokenState.CURRENT
    issued_at: datetime
    expires_at: datetime
    used_at: datetime | None = None


class RefreshDecision(msgspec.Struct, frozen=True, kw_only=True):
    action: RefreshAction
    #: The family after the decision (revoked when a reuse was detected).
    family: RefreshFamily
    refusal: Refusal | None = None


def _transition(
    family: RefreshFamily, event: RefreshEvent, *, now: datetime, reason: str
) -> RefreshDecision:
    state, action, refusal = REFRESH_TRANSITIONS[(family.state, event)]
    if state != family.state:
        family = msgspec.structs.replace(family, state=state, revoked_at=now, revoked_reason=reason)
    return RefreshDecision(action=action, family=family, refusal=refusal)


def start_family(
    *,
    family_id: str,
    tenant_id: str | None,
    subject: str,
    token_hash: str,
    now: datetime,
    token_ttl: timedelta = REFRESH_TOKEN_TTL,
    family_ttl: timedelta = REFRESH_FAMILY_TTL,
) -> tuple[RefreshFamily, RefreshToken]:
    """A new family (at a login) and its first, current token."""
    family = RefreshFamily(
        id=family_id,
        tenant_id=tenant_id,
        subject=subject,
        created_at=now,
        expires_at=now + family_ttl,
    )
    token = RefreshToken(
        token_hash=token_hash,
        family_id=family_id,
        issued_at=now,
        expires_at=min(now + token_ttl, family.expires_at),
    )
    return family, token


def decide_refresh(family: RefreshFamily, token: RefreshToken, *, now: datetime) -> RefreshDecision:
    """What presenting `token` of `family` at `now` means.

    A used token always revokes an active family, expired or not: a replayed
    token is a theft signal whatever its age. A current token past its own or
    its family's end is refused without changing anything.
    """
    if token.family_id != family.id:
        raise ValueError("the token does not belong to the family")
    event = (
        RefreshEvent.PRESENT_CURRENT
        if token.state == TokenState.CURRENT
        else RefreshEvent.PRESENT_USED
    )
    decision = _transition(family, event, now=now, reason="reuse")
    if decision.action == RefreshAction.ROTATE and (
        now >= token.expires_at or now >= family.expires_at
    ):
        return RefreshDecision(action=RefreshAction.REFUSE, family=family, refusal=Refusal.EXPIRED)
    return decision


def rotate_refresh(
    family: RefreshFamily,
    token: RefreshToken,
    *,
    new_token_hash: str,
    now: datetime,
    token_ttl: timedelta = REFRESH_TOKEN_TTL,
) -> tuple[RefreshToken, RefreshToken]:
    """After a ROTATE decision: the presented token, now used, and the new current one.

    The store must mark the old token used only if it is still current
    (compare-and-set): of two concurrent rotations one wins and the other is a
    reuse.
    """
    if family.state != FamilyState.ACTIVE or token.state != TokenState.CURRENT:
        raise Conflict("The refresh token cannot be rotated.")
    used = msgspec.structs.replace(token, state=TokenState.USED, used_at=now)
    fresh = RefreshToken(
        token_hash=new_token_hash,
        family_id=family.id,
        issued_at=now,
        expires_at=min(now + token_ttl, family.expires_at),
    )
    return used, fresh


def revoke_family(family: RefreshFamily, *, now: datetime, reason: str) -> RefreshFamily:
    """The family revoked (logout, password change, an administrator); revoking twice is a no-op."""
    return _transition(family, RefreshEvent.REVOKE, now=now, reason=reason).family
