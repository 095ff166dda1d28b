"""Identity rules: usernames, passwords, roles, key formats, claim checks, admission and
the refresh-token family machine. Pure: no crypto, no clock."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.domain import identity as idn
from core.domain.access import Permission, Role
from core.domain.errors import Conflict, DomainError, Invalid
from core.domain.identity import (
    ApiKey,
    BearerKind,
    Claims,
    FamilyState,
    PrincipalKind,
    RefreshAction,
    RefreshEvent,
    Refusal,
    TokenState,
    User,
)
from core.domain.model import Tenant

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
TS0 = int(T0.timestamp())
TENANT_ID = "01HXAAAAAAAAAAAAAAAAAAAAAA"
USER_ID = "01HXBBBBBBBBBBBBBBBBBBBBBB"
KEY_ID = "01HXCCCCCCCCCCCCCCCCCCCCCC"
ISS = "https://waypost.example"
AUD = "waypost-api"
SECRET = "A" * 20 + "b-_" + "9" * 20  # 43 base64url characters


def invalid_fields(exc: pytest.ExceptionInfo[Invalid]) -> list[str]:
    return [e.field for e in exc.value.errors]


def tenant(*, disabled: bool = False, id: str = TENANT_ID) -> Tenant:
    return Tenant(id=id, slug="acme", name="Acme", disabled=disabled, created_at=T0, updated_at=T0)


def user(**changes: Any) -> User:
    base = User(
        id=USER_ID,
        tenant_id=TENANT_ID,
        username="alice",
        roles=(Role.ADMIN, Role.EVENT_VIEWER),
        password_hash="$scrypt$opaque",
        created_at=T0,
        updated_at=T0,
    )
    return msgspec.structs.replace(base, **changes)


def api_key(**changes: Any) -> ApiKey:
    base = ApiKey(
        id=KEY_ID,
        tenant_id=TENANT_ID,
        name="ci",
        prefix="abcd1234",
        secret_hash="sha256$opaque",
        roles=(Role.EVENT_PRODUCER,),
        created_at=T0,
        created_by="user:x",
    )
    return msgspec.structs.replace(base, **changes)


# --- usernames -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("alice", "alice"),
        ("  Alice.Smith ", "alice.smith"),
        ("bob_2", "bob_2"),
        ("a-b", "a-b"),
        ("007", "007"),
        ("x" * 64, "x" * 64),
        ("ci.bot-1_x", "ci.bot-1_x"),
    ],
)
def test_usernames_are_normalized(raw: str, expected: str) -> None:
    assert idn.normalize_username(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "ab",
        "   ab   ",
        "x" * 65,
        "al ice",
        "alice!",
        "al@ce",
        ".alice",
        "-alice",
        "_alice",
        "ali\u212ae",  # Kelvin sign: lower-cases to "k", must not pass for ASCII
        "ålice",
        "alice\x00",
        "\uff41\uff4c\uff49\uff43\uff45",  # fullwidth "alice"
    ],
)
def test_bad_usernames_are_refused(raw: str) -> None:
    with pytest.raises(Invalid) as exc:
        idn.normalize_username(raw)
    assert invalid_fields(exc) == ["/username"]


@given(st.text(alphabet=string.ascii_letters + string.digits + "._-", min_size=1, max_size=80))
def test_normalized_usernames_are_stable(raw: str) -> None:
    try:
        name = idn.normalize_username(raw)
    except Invalid:
        return
    assert name == name.lower()
    assert 3 <= len(name) <= 64
    assert idn.normalize_username(name) == name


# --- passwords -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    [
        "correct horse battery",
        "x" * 11 + "y",
        "ab" * 512,
        "ünïcödé-pässwörd",
        " leading and trailing spaces ",
    ],
)
def test_acceptable_passwords(password: str) -> None:
    idn.check_password(password, username="alice")


@pytest.mark.parametrize(
    ("password", "username", "message"),
    [
        ("", "alice", "at least 12"),
        ("short pass!", "alice", "at least 12"),
        ("ab" * 512 + "c", "alice", "at most 1024"),
        ("a" * 12, "alice", "one character repeated"),
        ("\u00e9" * 40, "alice", "one character repeated"),
        ("alice.smith1", "alice.smith1", "not be the username"),
        ("Alice.Smith1", "alice.smith1", "not be the username"),
        ("ALICE.SMITH1 ", "alice.smith1", "not be the username"),
    ],
)
def test_refused_passwords(password: str, username: str, message: str) -> None:
    with pytest.raises(Invalid) as exc:
        idn.check_password(password, username=username)
    assert exc.value.errors[0].field == "/password"
    assert message in exc.value.errors[0].message


# --- roles -----------------------------------------------------------------------------------


def test_roles_are_checked_and_ordered() -> None:
    got = idn.check_roles("/roles", ["event_viewer", "admin"], tenant_id=TENANT_ID)
    assert got == (Role.ADMIN, Role.EVENT_VIEWER)
    assert idn.check_roles("/roles", ["platform_admin"], tenant_id=None) == (Role.PLATFORM_ADMIN,)


@pytest.mark.parametrize(
    ("roles", "tenant_id", "fields"),
    [
        ([], TENANT_ID, ["/roles"]),
        (["root"], TENANT_ID, ["/roles/0"]),
        (["admin", "admin"], TENANT_ID, ["/roles/1"]),
        (["platform_admin"], TENANT_ID, ["/roles/0"]),
        (["admin"], None, ["/roles/0"]),
        (["admin", "nope", "platform_admin"], TENANT_ID, ["/roles/1", "/roles/2"]),
    ],
)
def test_bad_roles(roles: list[str], tenant_id: str | None, fields: list[str]) -> None:
    with pytest.raises(Invalid) as exc:
        idn.check_roles("/roles", roles, tenant_id=tenant_id)
    assert invalid_fields(exc) == fields


# --- users -----------------------------------------------------------------------------------


def test_new_user() -> None:
    made = idn.new_user(
        id=USER_ID,
        tenant_id=TENANT_ID,
        username=" Alice ",
        roles=["event_viewer"],
        password_hash="h",
        now=T0,
    )
    assert made == User(
        id=USER_ID,
        tenant_id=TENANT_ID,
        username="alice",
        roles=(Role.EVENT_VIEWER,),
        password_hash="h",
        created_at=T0,
        updated_at=T0,
    )


def test_platform_admin_users_have_no_tenant() -> None:
    made = idn.new_user(
        id=USER_ID,
        tenant_id=None,
        username="root1",
        roles=["platform_admin"],
        password_hash="h",
        now=T0,
    )
    assert made.tenant_id is None
    with pytest.raises(Invalid):
        idn.new_user(
            id=USER_ID, tenant_id=None, username="root1", roles=["admin"], password_hash="h", now=T0
        )


def test_patch_user() -> None:
    before = user()
    later = T0 + timedelta(hours=1)
    assert idn.patch_user(before, now=later) is before
    assert idn.patch_user(before, roles=["event_viewer", "admin"], now=later) is before
    after = idn.patch_user(before, roles=["event_viewer"], disabled=True, now=later)
    assert after.roles == (Role.EVENT_VIEWER,)
    assert after.disabled
    assert after.updated_at == later
    assert idn.patch_user(before, password_hash="new", now=later).password_hash == "new"
    with pytest.raises(Invalid):
        idn.patch_user(before, roles=[], now=later)


# --- API keys, refresh tokens, bearer shapes -------------------------------------------------


def test_api_key_round_trip() -> None:
    text = idn.format_api_key("abcd1234", SECRET)
    assert text == f"wp_abcd1234_{SECRET}"
    assert idn.parse_api_key(text) == idn.ApiKeyParts("abcd1234", SECRET)


@given(
    st.text(alphabet=idn.API_KEY_PREFIX_ALPHABET, min_size=8, max_size=8),
    st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=43, max_size=128),
)
def test_api_key_format_parse_inverse(prefix: str, secret: str) -> None:
    assert idn.parse_api_key(idn.format_api_key(prefix, secret)) == idn.ApiKeyParts(prefix, secret)


@pytest.mark.parametrize(
    "text",
    [
        "",
        f"wp_abcd123_{SECRET}",  # prefix too short
        f"wp_abcd12345_{SECRET}",  # prefix too long
        f"wp_ABCD1234_{SECRET}",  # prefix upper-case
        f"xx_abcd1234_{SECRET}",
        f"wp-abcd1234_{SECRET}",
        f"wp_abcd1234-{SECRET}",
        "wp_abcd1234_" + SECRET[:42],  # under 256 bits
        "wp_abcd1234_" + "a" * 129,
        f"wp_abcd1234_{SECRET}=",
        f"wp_abcd1234_{SECRET} ",
        f" wp_abcd1234_{SECRET}",
        f"wp_abcd1234_{SECRET}\n",
        f"wp_abcd1234_{SECRET[:-1]}+",
    ],
)
def test_malformed_api_keys(text: str) -> None:
    assert idn.parse_api_key(text) is None


def test_format_refuses_what_parse_would_not_read() -> None:
    with pytest.raises(ValueError, match="API key"):
        idn.format_api_key("short", SECRET)
    with pytest.raises(ValueError, match="API key"):
        idn.format_api_key("abcd1234", "tiny")
    with pytest.raises(ValueError, match="refresh token"):
        idn.format_refresh_token("tiny")


def test_refresh_token_round_trip() -> None:
    text = idn.format_refresh_token(SECRET)
    assert text == f"wprt_{SECRET}"
    assert idn.parse_refresh_token(text) == SECRET
    assert idn.parse_refresh_token(f"wp_abcd1234_{SECRET}") is None
    assert idn.parse_refresh_token(f"wprt_{SECRET[:40]}") is None


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (f"wprt_{SECRET}", BearerKind.REFRESH_TOKEN),
        (f"wp_abcd1234_{SECRET}", BearerKind.API_KEY),
        ("eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln", BearerKind.JWT),
        ("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", BearerKind.JWT),
        ("a.b.c.d.e", BearerKind.UNKNOWN),
        ("hello", BearerKind.UNKNOWN),
        ("", BearerKind.UNKNOWN),
    ],
)
def test_bearer_kind(text: str, kind: BearerKind) -> None:
    assert idn.bearer_kind(text) == kind


def test_new_api_key() -> None:
    key = idn.new_api_key(
        id=KEY_ID,
        tenant_id=TENANT_ID,
        name="ci",
        role="event_producer",
        prefix="abcd1234",
        secret_hash="h",
        created_by="user:x",
        now=T0,
        expires_at=T0 + timedelta(days=30),
    )
    assert key.roles == (Role.EVENT_PRODUCER,)
    assert key.revoked_at is None
    assert idn.api_key_refusal(key, now=T0) is None


@pytest.mark.parametrize(
    ("name", "role", "expires_at", "fields"),
    [
        ("  ", "admin", None, ["/name"]),
        ("x" * 256, "admin", None, ["/name"]),
        ("ci", "root", None, ["/role/0"]),
        ("ci", "platform_admin", None, ["/role/0"]),
        ("ci", "admin", T0, ["/expires_at"]),
        ("ci", "admin", T0 - timedelta(seconds=1), ["/expires_at"]),
        ("ci", "admin", datetime(2030, 1, 1), ["/expires_at"]),
    ],
)
def test_bad_api_keys(name: str, role: str, expires_at: datetime | None, fields: list[str]) -> None:
    with pytest.raises(Invalid) as exc:
        idn.new_api_key(
            id=KEY_ID,
            tenant_id=TENANT_ID,
            name=name,
            role=role,
            prefix="abcd1234",
            secret_hash="h",
            created_by="user:x",
            now=T0,
            expires_at=expires_at,
        )
    assert invalid_fields(exc) == fields


def test_api_key_expiry_and_revocation() -> None:
    key = api_key(expires_at=T0 + timedelta(hours=1))
    assert idn.api_key_refusal(key, now=T0 + timedelta(minutes=59)) is None
    assert idn.api_key_refusal(key, now=T0 + timedelta(hours=1)) == Refusal.API_KEY_EXPIRED
    revoked = idn.revoke_api_key(key, now=T0 + timedelta(minutes=1))
    assert revoked.revoked_at == T0 + timedelta(minutes=1)
    assert idn.revoke_api_key(revoked, now=T0 + timedelta(minutes=5)) is revoked
    assert idn.api_key_refusal(revoked, now=T0 + timedelta(minutes=2)) == Refusal.API_KEY_REVOKED


# --- subjects and principals -----------------------------------------------------------------


def test_subjects() -> None:
    assert idn.format_subject(PrincipalKind.USER, USER_ID) == f"user:{USER_ID}"
    assert idn.parse_subject(f"api_key:{KEY_ID}") == (PrincipalKind.API_KEY, KEY_ID)
    for bad in ["", USER_ID, "user:", "robot:x", "user:a:b", ":x"]:
        assert idn.parse_subject(bad) is None, bad


def test_principal_permissions_and_require() -> None:
    who = idn.principal_of(api_key())
    assert who.kind == PrincipalKind.API_KEY
    assert who.subject == f"api_key:{KEY_ID}"
    assert who.can(Permission.EVENTS_CREATE)
    idn.require(who, Permission.RECEIVERS_READ)
    with pytest.raises(idn.Forbidden) as exc:
        idn.require(who, Permission.EVENTS_READ)
    assert exc.value.permission == Permission.EVENTS_READ
    assert "events:read" in exc.value.detail


def test_errors_are_domain_errors() -> None:
    exc = idn.Unauthenticated(Refusal.EXPIRED)
    assert isinstance(exc, DomainError)
    assert exc.reason == Refusal.EXPIRED
    assert exc.detail == "The access token is not valid."  # never the reason itself
    assert idn.Unauthenticated(Refusal.EXPIRED, "custom").detail == "custom"
    assert isinstance(idn.Forbidden(Permission.AUDIT_READ), DomainError)


def test_every_refusal_has_a_detail_and_logins_all_read_alike() -> None:
    assert set(idn.REFUSAL_DETAIL) == set(Refusal)
    login = {
        Refusal.BAD_CREDENTIALS,
        Refusal.MALFORMED_API_KEY,
        Refusal.API_KEY_EXPIRED,
        Refusal.API_KEY_REVOKED,
        Refusal.PRINCIPAL_GONE,
        Refusal.PRINCIPAL_DISABLED,
        Refusal.TENANT_DISABLED,
        Refusal.UNMAPPED_CERTIFICATE,
    }
    assert len({idn.REFUSAL_DETAIL[r] for r in login}) == 1


# --- access-token claims ---------------------------------------------------------------------

HEADER = {"alg": "EdDSA", "kid": "k1", "typ": "at+jwt"}


def claims(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISS,
        "aud": AUD,
        "sub": f"user:{USER_ID}",
        "tenant": TENANT_ID,
        "roles": ["admin"],
        "iat": TS0,
        "nbf": TS0,
        "exp": TS0 + 900,
        "jti": "01HXJTI",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP: Any = object()


def check(
    header: dict[str, Any] | None = None,
    body: dict[str, Any] | None = None,
    *,
    at: datetime = T0,
) -> Claims | Refusal:
    return idn.check_access_claims(
        HEADER if header is None else header,
        claims() if body is None else body,
        issuer=ISS,
        audience=AUD,
        now=at,
    )


def test_valid_claims_are_accepted() -> None:
    got = check()
    assert got == Claims(
        iss=ISS,
        aud=(AUD,),
        sub=f"user:{USER_ID}",
        kind=PrincipalKind.USER,
        principal_id=USER_ID,
        tenant=TENANT_ID,
        roles=(Role.ADMIN,),
        iat=TS0,
        nbf=TS0,
        exp=TS0 + 900,
        jti="01HXJTI",
        kid="k1",
    )
    assert got.expires_at() == T0 + timedelta(seconds=900)


def test_access_claims_builder_is_what_the_check_accepts() -> None:
    who = idn.principal_of(user())
    built = idn.access_claims(issuer=ISS, audience=AUD, principal=who, jti="j1", now=T0)
    assert built == {
        "iss": ISS,
        "aud": AUD,
        "sub": f"user:{USER_ID}",
        "tenant": TENANT_ID,
        "roles": ["admin", "event_viewer"],
        "iat": TS0,
        "nbf": TS0,
        "exp": TS0 + 900,
        "jti": "j1",
    }
    accepted = check(body=built)
    assert isinstance(accepted, Claims)
    assert accepted.roles == (Role.ADMIN, Role.EVENT_VIEWER)


@pytest.mark.parametrize(
    ("header", "body", "at", "refusal"),
    [
        # typ
        ({"alg": "EdDSA"}, None, T0, Refusal.WRONG_TYPE),
        ({**HEADER, "typ": "JWT"}, None, T0, Refusal.WRONG_TYPE),
        ({**HEADER, "typ": "rt+jwt"}, None, T0, Refusal.WRONG_TYPE),
        ({**HEADER, "typ": 1}, None, T0, Refusal.WRONG_TYPE),
        # presence
        *[(None, claims(**{n: _DROP}), T0, Refusal.MISSING_CLAIM) for n in idn._REQUIRED],
        # types
        (None, claims(iss=1), T0, Refusal.INVALID_CLAIM),
        (None, claims(aud=[AUD, 3]), T0, Refusal.INVALID_CLAIM),
        (None, claims(sub=None), T0, Refusal.INVALID_CLAIM),
        (None, claims(tenant=""), T0, Refusal.INVALID_CLAIM),
        (None, claims(tenant=5), T0, Refusal.INVALID_CLAIM),
        (None, claims(roles="admin"), T0, Refusal.INVALID_CLAIM),
        (None, claims(exp=True), T0, Refusal.INVALID_CLAIM),
        (None, claims(exp=float(TS0 + 900)), T0, Refusal.INVALID_CLAIM),
        (None, claims(iat=str(TS0)), T0, Refusal.INVALID_CLAIM),
        (None, claims(jti=""), T0, Refusal.INVALID_CLAIM),
        # parties
        (None, claims(iss="https://evil.example"), T0, Refusal.WRONG_ISSUER),
        (None, claims(aud="another-api"), T0, Refusal.WRONG_AUDIENCE),
        (None, claims(aud=[]), T0, Refusal.WRONG_AUDIENCE),
        # time
        (None, None, T0 + timedelta(seconds=960), Refusal.EXPIRED),
        (None, None, T0 + timedelta(days=2), Refusal.EXPIRED),
        (None, claims(nbf=TS0 + 61), T0, Refusal.NOT_YET_VALID),
        (None, claims(iat=TS0 + 61, nbf=TS0), T0, Refusal.ISSUED_IN_FUTURE),
        (None, claims(exp=TS0), T0 - timedelta(seconds=30), Refusal.INVALID_CLAIM),
        (None, claims(exp=TS0 + 86401), T0, Refusal.INVALID_CLAIM),
        # identity
        (None, claims(sub="robot:1"), T0, Refusal.INVALID_CLAIM),
        (None, claims(roles=["root"]), T0, Refusal.INVALID_CLAIM),
        (None, claims(roles=["platform_admin"]), T0, Refusal.INVALID_CLAIM),
        (None, claims(tenant=None), T0, Refusal.INVALID_CLAIM),
    ],
)
def test_claim_refusals(
    header: dict[str, Any] | None, body: dict[str, Any] | None, at: datetime, refusal: Refusal
) -> None:
    assert check(header, body, at=at) == refusal


def test_leeway_is_sixty_seconds_each_way() -> None:
    # exp: accepted up to (not including) exp + 60 s
    assert isinstance(check(at=T0 + timedelta(seconds=959)), Claims)
    assert check(at=T0 + timedelta(seconds=960)) == Refusal.EXPIRED
    # nbf / iat: accepted up to 60 s early
    early = claims(nbf=TS0 + 60, iat=TS0 + 60, exp=TS0 + 960)
    assert isinstance(check(body=early), Claims)
    assert check(body=early, at=T0 - timedelta(seconds=1)) == Refusal.NOT_YET_VALID


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt", "Application/At+Jwt"])
def test_typ_compares_as_a_media_type(typ: str) -> None:
    assert isinstance(check({**HEADER, "typ": typ}), Claims)


def test_audience_lists_and_unknown_claims() -> None:
    got = check(body=claims(aud=["other", AUD], extra={"a": 1}))
    assert isinstance(got, Claims)
    assert got.aud == ("other", AUD)


def test_platform_admin_claims() -> None:
    got = check(body=claims(tenant=None, roles=["platform_admin"]))
    assert isinstance(got, Claims)
    assert got.tenant is None


def test_refusals_are_never_exceptions() -> None:
    # Anything at all in the claims is answered, never raised.
    for body in [{}, {"aud": {"x": 1}}, claims(roles=[None]), claims(aud=None)]:
        assert isinstance(check(body=body), Refusal)


# --- admission: the claims against the store ---------------------------------------------------


def accepted(**changes: Any) -> Claims:
    got = check(body=claims(**changes))
    assert isinstance(got, Claims)
    return got


def test_admit() -> None:
    who = idn.admit(accepted(), record=user(), tenant=tenant(), revoked=False, now=T0)
    assert isinstance(who, idn.Principal)
    assert who.id == USER_ID
    assert who.token_id == "01HXJTI"
    # the token said admin; the user is admin + viewer: only what both say
    assert who.roles == (Role.ADMIN,)


def test_admit_keeps_only_current_roles() -> None:
    demoted = user(roles=(Role.EVENT_VIEWER,))
    who = idn.admit(accepted(), record=demoted, tenant=tenant(), revoked=False, now=T0)
    assert isinstance(who, idn.Principal)
    assert who.roles == ()
    assert not who.can(Permission.USERS_MANAGE)


@pytest.mark.parametrize(
    ("record", "the_tenant", "revoked", "refusal"),
    [
        (user(), tenant(), None, Refusal.REVOCATION_UNAVAILABLE),
        (user(), tenant(), True, Refusal.TOKEN_REVOKED),
        (None, tenant(), False, Refusal.PRINCIPAL_GONE),
        (user(disabled=True), tenant(), False, Refusal.PRINCIPAL_DISABLED),
        (user(), tenant(disabled=True), False, Refusal.TENANT_DISABLED),
        (user(), None, False, Refusal.PRINCIPAL_GONE),
        (user(), tenant(id="01HXOTHER"), False, Refusal.PRINCIPAL_GONE),
        (user(id="01HXSOMEONEELSE"), tenant(), False, Refusal.PRINCIPAL_GONE),
        (user(tenant_id="01HXOTHER"), tenant(), False, Refusal.PRINCIPAL_GONE),
        (api_key(id=USER_ID), tenant(), False, Refusal.PRINCIPAL_GONE),
    ],
)
def test_admit_refusals(
    record: User | ApiKey | None, the_tenant: Tenant | None, revoked: bool | None, refusal: Refusal
) -> None:
    assert (
        idn.admit(accepted(), record=record, tenant=the_tenant, revoked=revoked, now=T0) == refusal
    )


def test_admit_api_keys() -> None:
    token = accepted(sub=f"api_key:{KEY_ID}", roles=["event_producer"])
    key = api_key(expires_at=T0 + timedelta(minutes=5))
    who = idn.admit(token, record=key, tenant=tenant(), revoked=False, now=T0)
    assert isinstance(who, idn.Principal)
    assert who.kind == PrincipalKind.API_KEY
    late = T0 + timedelta(minutes=5)
    assert idn.admit(token, record=key, tenant=tenant(), revoked=False, now=late) == (
        Refusal.API_KEY_EXPIRED
    )
    gone = idn.revoke_api_key(key, now=T0)
    assert idn.admit(token, record=gone, tenant=tenant(), revoked=False, now=T0) == (
        Refusal.API_KEY_REVOKED
    )


def test_admit_platform_admin_needs_no_tenant() -> None:
    root = user(tenant_id=None, roles=(Role.PLATFORM_ADMIN,))
    token = accepted(tenant=None, roles=["platform_admin"])
    who = idn.admit(token, record=root, tenant=None, revoked=False, now=T0)
    assert isinstance(who, idn.Principal)
    assert who.can(Permission.TENANTS_MANAGE)


# --- logins ----------------------------------------------------------------------------------


def test_password_login() -> None:
    who = idn.check_password_login(user(), password_ok=True, tenant=tenant())
    assert isinstance(who, idn.Principal)
    assert who.roles == (Role.ADMIN, Role.EVENT_VIEWER)
    for record, ok, the_tenant, refusal in [
        (None, True, tenant(), Refusal.BAD_CREDENTIALS),
        (None, False, tenant(), Refusal.BAD_CREDENTIALS),
        (user(), False, tenant(), Refusal.BAD_CREDENTIALS),
        (user(disabled=True), False, tenant(), Refusal.BAD_CREDENTIALS),
        (user(disabled=True), True, tenant(), Refusal.PRINCIPAL_DISABLED),
        (user(), True, tenant(disabled=True), Refusal.TENANT_DISABLED),
        (user(), True, None, Refusal.PRINCIPAL_GONE),
    ]:
        assert idn.check_password_login(record, password_ok=ok, tenant=the_tenant) == refusal


def test_api_key_login() -> None:
    key = api_key(expires_at=T0 + timedelta(hours=1))
    who = idn.check_api_key_login(key, secret_ok=True, tenant=tenant(), now=T0)
    assert isinstance(who, idn.Principal)
    for record, ok, the_tenant, at, refusal in [
        (None, True, tenant(), T0, Refusal.BAD_CREDENTIALS),
        (key, False, tenant(), T0, Refusal.BAD_CREDENTIALS),
        (key, True, tenant(), T0 + timedelta(hours=1), Refusal.API_KEY_EXPIRED),
        (idn.revoke_api_key(key, now=T0), True, tenant(), T0, Refusal.API_KEY_REVOKED),
        (key, True, tenant(disabled=True), T0, Refusal.TENANT_DISABLED),
    ]:
        assert idn.check_api_key_login(record, secret_ok=ok, tenant=the_tenant, now=at) == refusal


# --- refresh-token families ------------------------------------------------------------------


def test_transitions_cover_every_state_and_event() -> None:
    assert set(idn.REFRESH_TRANSITIONS) == {(s, e) for s in FamilyState for e in RefreshEvent}
    # Nothing ever brings a revoked family back.
    for (before, _), (after, _, _) in idn.REFRESH_TRANSITIONS.items():
        if before == FamilyState.REVOKED:
            assert after == FamilyState.REVOKED


def family_and_token(**family_changes: Any) -> tuple[idn.RefreshFamily, idn.RefreshToken]:
    family, token = idn.start_family(
        family_id="fam1", tenant_id=TENANT_ID, subject=f"user:{USER_ID}", token_hash="h0", now=T0
    )
    return msgspec.structs.replace(family, **family_changes), token


def test_issue_rotate_reuse() -> None:
    family, t0 = family_and_token()
    assert family.state == FamilyState.ACTIVE
    assert t0.state == TokenState.CURRENT
    assert t0.expires_at == T0 + idn.REFRESH_TOKEN_TTL
    assert family.expires_at == T0 + idn.REFRESH_FAMILY_TTL

    at = T0 + timedelta(minutes=10)
    decision = idn.decide_refresh(family, t0, now=at)
    assert decision.action == RefreshAction.ROTATE
    assert decision.family is family
    used, t1 = idn.rotate_refresh(family, t0, new_token_hash="h1", now=at)
    assert used.state == TokenState.USED
    assert used.used_at == at
    assert t1.state == TokenState.CURRENT
    assert t1.family_id == "fam1"

    # The old token comes back: somebody else has it. The whole family goes.
    replay = idn.decide_refresh(family, used, now=at + timedelta(seconds=1))
    assert replay.action == RefreshAction.REVOKE_FAMILY
    assert replay.refusal == Refusal.REFRESH_TOKEN_REUSED
    revoked = replay.family
    assert revoked.state == FamilyState.REVOKED
    assert revoked.revoked_reason == "reuse"
    # ... and with it the token that was current.
    after = idn.decide_refresh(revoked, t1, now=at + timedelta(seconds=2))
    assert after.action == RefreshAction.REFUSE
    assert after.refusal == Refusal.FAMILY_REVOKED
    with pytest.raises(Conflict):
        idn.rotate_refresh(revoked, t1, new_token_hash="h2", now=at)
    with pytest.raises(Conflict):
        idn.rotate_refresh(family, used, new_token_hash="h2", now=at)


def test_expired_current_token_is_refused_without_revoking() -> None:
    family, t0 = family_and_token()
    late = t0.expires_at
    decision = idn.decide_refresh(family, t0, now=late)
    assert decision.action == RefreshAction.REFUSE
    assert decision.refusal == Refusal.EXPIRED
    assert decision.family.state == FamilyState.ACTIVE


def test_a_family_ends_at_its_absolute_lifetime() -> None:
    family, t0 = family_and_token(expires_at=T0 + timedelta(days=1))
    decision = idn.decide_refresh(family, t0, now=T0 + timedelta(days=1))
    assert decision.refusal == Refusal.EXPIRED
    _, t1 = idn.rotate_refresh(family, t0, new_token_hash="h1", now=T0 + timedelta(hours=20))
    assert t1.expires_at == family.expires_at  # never past the family


def test_an_expired_used_token_still_revokes() -> None:
    family, t0 = family_and_token()
    used, _ = idn.rotate_refresh(family, t0, new_token_hash="h1", now=T0)
    decision = idn.decide_refresh(family, used, now=T0 + timedelta(days=8))
    assert decision.action == RefreshAction.REVOKE_FAMILY


def test_revoke_family() -> None:
    family, t0 = family_and_token()
    gone = idn.revoke_family(family, now=T0, reason="logout")
    assert gone.state == FamilyState.REVOKED
    assert gone.revoked_reason == "logout"
    assert idn.revoke_family(gone, now=T0 + timedelta(hours=1), reason="again") == gone
    assert idn.decide_refresh(gone, t0, now=T0).refusal == Refusal.FAMILY_REVOKED


def test_a_token_of_another_family_is_a_caller_bug() -> None:
    family, t0 = family_and_token()
    with pytest.raises(ValueError, match="family"):
        idn.decide_refresh(msgspec.structs.replace(family, id="fam2"), t0, now=T0)


@given(st.lists(st.integers(min_value=0, max_value=20), max_size=30))
def test_any_replay_of_a_used_token_kills_the_family(presented: list[int]) -> None:
    """A model: present token #i of the chain (issuing a new one when it rotates)."""
    family, first = family_and_token()
    chain = [first]
    alive = True
    for step, wanted in enumerate(presented):
        at = T0 + timedelta(minutes=step)
        token = chain[min(wanted, len(chain) - 1)]
        decision = idn.decide_refresh(family, token, now=at)
        if not alive:
            assert decision.action == RefreshAction.REFUSE
        elif token.state == TokenState.USED:
            assert decision.action == RefreshAction.REVOKE_FAMILY
            alive = False
        else:
            assert decision.action == RefreshAction.ROTATE
            used, fresh = idn.rotate_refresh(family, token, new_token_hash=f"h{step}", now=at)
            chain[chain.index(token)] = used
            chain.append(fresh)
        family = decision.family
        assert (family.state == FamilyState.ACTIVE) == alive
        assert sum(t.state == TokenState.CURRENT for t in chain) == 1


def test_no_refusal_tells_its_reason() -> None:
    """The caller reads one text per kind of credential; the reason is the audit log's."""
    texts = {idn.REFUSAL_DETAIL[r] for r in Refusal if r != Refusal.MISSING_CREDENTIALS}
    assert len(texts) == 3
    for refusal in Refusal:
        assert str(refusal) not in idn.REFUSAL_DETAIL[refusal].lower().replace(" ", "_")
