"""The negative suite over HTTP: every forged, stale or withdrawn credential is a 401, and
the audit log says precisely why (the caller is not told).

`NEGATIVE` is the table of the closing note: case -> the refusal the audit log records.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from litestar import Litestar

from adapters.crypto.envelope import EnvelopeCipher, SecretContext, parse_master_key
from adapters.crypto.jwt import SigningKey, b64url, sign
from adapters.memory.identity import MemoryIdentity
from core.domain.audit import AuditRecord, Outcome
from core.domain.refusals import Refusal
from core.ports import AuditFilter, PageRequest
from core.usecases.secrets import SIGNING_KEY
from tests.http.conftest import (
    HEADERS,
    MASTER_KEY,
    PLATFORM,
    TENANT,
    Client,
    ManualClock,
    assert_problem,
    services_of,
    tenant_id,
)

pytestmark = pytest.mark.anyio

PASSWORD = "correct horse battery staple"
EVENTS = "/api/v1/events"
TOKEN = "/api/v1/auth/token"


@dataclass
class Alice:
    """A user of `acme` who logged in: her tokens and the server's signing key."""

    access: str
    refresh: str
    claims: dict[str, Any]
    key: SigningKey


def part(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def payload(token: str) -> dict[str, Any]:
    body = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return decoded


async def signing_keys(identity: MemoryIdentity) -> dict[int, SigningKey]:
    """The server's signing keys, opened with the master key as the server does."""
    cipher = EnvelopeCipher([parse_master_key(MASTER_KEY)])
    opened = {}
    for record in await identity.secrets.versions(None, SIGNING_KEY):
        number = record.version.version
        der = cipher.decrypt(record.envelope, SecretContext(None, SIGNING_KEY, number))
        opened[number] = SigningKey.from_pkcs8(der)
    return opened


async def login(api: Client, username: str = "alice", **form: str) -> dict[str, Any]:
    answer = await api.post(
        TOKEN,
        data={"grant_type": "password", "username": username, "password": PASSWORD, **form},
        headers={"Authorization": ""},
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


@pytest.fixture
async def alice(api: Client, identity: MemoryIdentity) -> Alice:
    made = await api.post(
        "/api/v1/users",
        json={"username": "alice", "password": PASSWORD, "roles": ["event_manager"]},
        headers=HEADERS,
    )
    assert made.status_code == 201, made.text
    tokens = await login(api, tenant=TENANT)
    keys = await signing_keys(identity)
    return Alice(
        access=tokens["access_token"],
        refresh=tokens["refresh_token"],
        claims=payload(tokens["access_token"]),
        key=keys[max(keys)],
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def now_of(clock: ManualClock) -> int:
    return int(clock.current.timestamp())


def forge(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{part(header)}.{part(claims)}."


def hs256_with_public_key(a: Alice) -> str:
    assert isinstance(a.key.private, ed25519.Ed25519PrivateKey)
    pem = a.key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    unsigned = f"{part({'alg': 'HS256', 'kid': a.key.kid, 'typ': 'at+jwt'})}.{part(a.claims)}"
    return f"{unsigned}.{b64url(hmac.new(pem, unsigned.encode(), hashlib.sha256).digest())}"


def tampered(a: Alice) -> str:
    head, _, sig = a.access.split(".")
    return f"{head}.{part({**a.claims, 'roles': ['admin']})}.{sig}"


Case = Callable[[Client, Alice, ManualClock, Litestar], Awaitable[str]]


def static(make: Callable[[Alice, ManualClock], str]) -> Case:
    async def case(api: Client, a: Alice, clock: ManualClock, app: Litestar) -> str:
        return make(a, clock)

    return case


async def revoked(api: Client, a: Alice, clock: ManualClock, app: Litestar) -> str:
    answer = await api.post("/api/v1/auth/revoke", json={"token": a.access})
    assert answer.status_code == 200
    return a.access


async def disabled_tenant(api: Client, a: Alice, clock: ManualClock, app: Litestar) -> str:
    answer = await api.patch("/api/v1/tenants/acme", json={"disabled": True}, headers=PLATFORM)
    assert answer.status_code == 200
    return a.access


async def deleted_user(api: Client, a: Alice, clock: ManualClock, app: Litestar) -> str:
    user_id = a.claims["sub"].split(":", 1)[1]
    answer = await api.delete(f"/api/v1/users/{user_id}", headers=HEADERS)
    assert answer.status_code == 204
    return a.access


async def disabled_user(api: Client, a: Alice, clock: ManualClock, app: Litestar) -> str:
    user_id = a.claims["sub"].split(":", 1)[1]
    answer = await api.patch(f"/api/v1/users/{user_id}", json={"disabled": True}, headers=HEADERS)
    assert answer.status_code == 200
    return a.access


async def retired_key(api: Client, a: Alice, clock: ManualClock, app: Litestar) -> str:
    """Rotate, let the old key's grace end, and sign fresh claims with the old key."""
    secrets = services_of(app).secrets
    await secrets.maintain(force=True)
    clock.set(clock.current + secrets.policy.grace + timedelta(seconds=1))
    await secrets.maintain()
    at = now_of(clock)
    return sign(a.key, {**a.claims, "iat": at, "nbf": at, "exp": at + 600})


async def broken_revocations(api: Client, a: Alice, clock: ManualClock, app: Litestar) -> str:
    """The revocation check cannot be made: refused, never let through."""

    async def unavailable(jti: str) -> bool:
        raise ConnectionError("the revocation store is down")

    services = services_of(app)
    assert services.identity_deps is not None
    store = services.identity_deps.store
    assert isinstance(store, MemoryIdentity)
    store.revocations.is_revoked = unavailable  # type: ignore[method-assign]
    services.identity.forget()
    return a.access


def claims(**over: Any) -> Callable[[Alice, ManualClock], str]:
    def make(a: Alice, clock: ManualClock) -> str:
        return sign(a.key, {**a.claims, **over})

    return make


def timed(**offsets: int) -> Callable[[Alice, ManualClock], str]:
    def make(a: Alice, clock: ManualClock) -> str:
        at = now_of(clock)
        return sign(a.key, {**a.claims, **{k: at + v for k, v in offsets.items()}})

    return make


#: case -> (how the credential is made, the refusal in the audit log). Each answers 401.
NEGATIVE: dict[str, tuple[Case, Refusal]] = {
    "alg none": (
        static(lambda a, c: forge({"alg": "none", "kid": a.key.kid, "typ": "at+jwt"}, a.claims)),
        Refusal.ALGORITHM_NOT_ALLOWED,
    ),
    "HS256 signed with the public key": (
        static(lambda a, c: hs256_with_public_key(a)),
        Refusal.ALGORITHM_NOT_ALLOWED,
    ),
    "expired": (static(timed(iat=-1000, nbf=-1000, exp=-61)), Refusal.EXPIRED),
    "nbf in the future": (static(timed(iat=0, nbf=300, exp=900)), Refusal.NOT_YET_VALID),
    "wrong aud": (static(claims(aud="another-api")), Refusal.WRONG_AUDIENCE),
    "wrong iss": (static(claims(iss="https://evil.example")), Refusal.WRONG_ISSUER),
    "wrong typ": (static(lambda a, c: sign(a.key, a.claims, typ="JWT")), Refusal.WRONG_TYPE),
    "unknown kid": (
        static(lambda a, c: sign(SigningKey.generate(), a.claims)),
        Refusal.UNKNOWN_KID,
    ),
    "kid retired past its grace": (retired_key, Refusal.KEY_RETIRED),
    "tampered payload": (static(lambda a, c: tampered(a)), Refusal.BAD_SIGNATURE),
    "refresh token used as access token": (
        static(lambda a, c: a.refresh),
        Refusal.REFRESH_TOKEN_AS_ACCESS,
    ),
    "revoked jti": (revoked, Refusal.TOKEN_REVOKED),
    "disabled tenant": (disabled_tenant, Refusal.TENANT_DISABLED),
    "deleted user": (deleted_user, Refusal.PRINCIPAL_GONE),
    "disabled user": (disabled_user, Refusal.PRINCIPAL_DISABLED),
    "revocation check unavailable (fail closed)": (
        broken_revocations,
        Refusal.REVOCATION_UNAVAILABLE,
    ),
}


async def refusals(identity: MemoryIdentity, tenant: str) -> list[AuditRecord]:
    found = []
    for scope in (None, tenant):
        found += await identity.audit.list(
            scope, AuditFilter(outcome=Outcome.FAILURE), PageRequest(limit=1000)
        )
    return sorted(found, key=lambda r: r.id)


@pytest.mark.parametrize("name", list(NEGATIVE))
async def test_negative_suite(
    name: str,
    api: Client,
    alice: Alice,
    clock: ManualClock,
    app: Litestar,
    identity: MemoryIdentity,
) -> None:
    assert (await api.get(EVENTS, headers=bearer(alice.access))).status_code == 200
    make, reason = NEGATIVE[name]
    token = await make(api, alice, clock, app)
    answer = await api.get(EVENTS, headers=bearer(token))
    body = assert_problem(answer, 401)
    assert answer.headers["www-authenticate"].startswith(
        'Bearer realm="waypost", error="invalid_token", Basic'
    )
    assert str(reason) not in answer.text  # the reason is the audit log's, not the caller's
    assert body["type"] == "urn:waypost:problem:unauthenticated"
    last = (await refusals(identity, await tenant_id(api, TENANT)))[-1]
    assert (last.reason, last.outcome, last.action) == (
        str(reason),
        Outcome.FAILURE,
        "auth.refused",
    )
    assert last.target == f"GET {EVENTS}"
    assert last.address == "127.0.0.1"
    assert last.request_id


async def test_a_reused_refresh_token_revokes_its_family(
    api: Client, alice: Alice, identity: MemoryIdentity
) -> None:
    form = {"grant_type": "refresh_token", "refresh_token": alice.refresh}
    first = await api.post(TOKEN, data=form, headers={"Authorization": ""})
    assert first.status_code == 200, first.text
    rotated = first.json()
    assert rotated["refresh_token"] != alice.refresh
    assert first.headers["cache-control"] == "no-store"
    # the stolen copy is used again: refused, and the whole family with it
    reused = await api.post(TOKEN, data=form, headers={"Authorization": ""})
    assert_problem(reused, 401)
    after = await api.post(
        TOKEN,
        json={"grant_type": "refresh_token", "refresh_token": rotated["refresh_token"]},
        headers={"Authorization": ""},
    )
    assert_problem(after, 401)
    acme = await tenant_id(api, TENANT)
    reasons = [r.reason for r in await refusals(identity, acme)]
    assert reasons[-2:] == [str(Refusal.REFRESH_TOKEN_REUSED), str(Refusal.FAMILY_REVOKED)]
    revoked = await identity.audit.list(
        acme, AuditFilter(action="auth.family_revoked"), PageRequest()
    )
    assert [r.reason for r in revoked] == ["reuse"]
    # a new login starts a new family, which works
    fresh = await login(api, tenant=TENANT)
    assert (await api.get(EVENTS, headers=bearer(fresh["access_token"]))).status_code == 200
