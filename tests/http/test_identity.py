"""Identity over HTTP: grants, users, API keys, the audit log, bootstrap, networks, headers."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, Literal

import anyio
import jwt
import pytest
from litestar import Litestar

from adapters.memory.identity import MemoryIdentity
from core.domain.access import Role
from core.ports import AuditFilter, PageRequest, Unavailable
from core.usecases.identity import RECENT_SECONDS
from entrypoints.settings import HttpSettings, SecretsSettings, SecuritySettings, Settings
from tests.http.conftest import (
    HEADERS,
    MASTER_KEY,
    OTHER_HEADERS,
    PLATFORM,
    TENANT,
    Client,
    ManualClock,
    add_tenants,
    asgi_client,
    assert_problem,
    client_from,
    make_app,
    platform_identity,
    settings,
    tenant_id,
)

pytestmark = pytest.mark.anyio

TOKEN = "/api/v1/auth/token"
PASSWORD = "correct horse battery staple"
ANON = {"Authorization": ""}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def make_user(api: Client, name: str = "alice", roles: list[str] | None = None) -> str:
    answer = await api.post(
        "/api/v1/users",
        json={"username": name, "password": PASSWORD, "roles": roles or ["event_manager"]},
        headers=HEADERS,
    )
    assert answer.status_code == 201, answer.text
    assert answer.headers["location"] == f"/api/v1/users/{answer.json()['data']}"
    ident: str = answer.json()["data"]
    return ident


async def grant(api: Client, **form: str) -> Any:
    return await api.post(TOKEN, data=form, headers=ANON)


# --- the token endpoint -----------------------------------------------------------------------


async def test_password_grant_form_and_json(api: Client) -> None:
    await make_user(api)
    form = await grant(
        api, grant_type="password", username="Alice ", password=PASSWORD, tenant="acme"
    )
    assert form.status_code == 200, form.text
    body = form.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert (body["token_type"], body["expires_in"]) == ("Bearer", 900)
    assert body["refresh_token"].startswith("wprt_")
    assert form.headers["cache-control"] == "no-store"
    as_json = await api.post(
        TOKEN,
        json={
            "grant_type": "password",
            "username": "alice",
            "password": PASSWORD,
            "tenant": "acme",
        },
        headers=ANON,
    )
    assert as_json.status_code == 200
    events = await api.get("/api/v1/events", headers=bearer(body["access_token"]))
    assert events.status_code == 200


async def test_every_failed_login_reads_alike_and_is_audited(
    api: Client, identity: MemoryIdentity
) -> None:
    await make_user(api)
    answers = [
        await grant(
            api, grant_type="password", username="alice", password="wrong" * 3, tenant="acme"
        ),
        await grant(
            api, grant_type="password", username="nobody", password=PASSWORD, tenant="acme"
        ),
        await grant(
            api, grant_type="password", username="alice", password=PASSWORD, tenant="globex"
        ),
        await grant(api, grant_type="password", username="alice", password=PASSWORD, tenant="nope"),
        await grant(api, grant_type="password", username="alice", password=PASSWORD),
        await grant(api, grant_type="password", username="ALİCE", password=PASSWORD, tenant="acme"),
        await grant(api, grant_type="api_key", api_key="wp_nothere0_" + "x" * 43),
    ]
    details = {assert_problem(a, 401)["detail"] for a in answers}
    assert details == {"The credentials were not accepted."}
    acme = await tenant_id(api, TENANT)
    failed = await identity.audit.list(
        acme, AuditFilter(action="auth.login", outcome="failure"), PageRequest()
    )
    assert {r.actor for r in failed} >= {"username:nobody"}
    assert any(r.actor.startswith("user:") for r in failed)  # a wrong password, on the user
    assert {r.reason for r in failed} == {"bad_credentials"}


async def test_bad_grant_requests(api: Client) -> None:
    assert_problem(await grant(api, grant_type="client_credentials"), 422, "grant_type")
    assert_problem(await grant(api, grant_type="password", username="alice"), 422, "password")
    assert_problem(await grant(api, grant_type="api_key"), 422, "api_key")
    assert_problem(await grant(api, grant_type="refresh_token"), 422, "refresh_token")
    assert_problem(await grant(api, username="alice"), 400, "/grant_type")
    assert_problem(await grant(api), 400, "")
    twice = await api.post(
        TOKEN,
        content=b"grant_type=password&grant_type=api_key",
        headers={**ANON, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_problem(twice, 400, "grant_type")
    assert_problem(await api.post(TOKEN, content=b"{", headers=ANON), 400)


async def test_api_key_grant_and_refresh(api: Client) -> None:
    key = (
        await api.post(
            "/api/v1/api-keys", json={"name": "ci", "role": "event_producer"}, headers=HEADERS
        )
    ).json()["data"]["key"]
    tokens = (await grant(api, grant_type="api_key", api_key=key)).json()
    receivers = await api.get("/api/v1/receivers", headers=bearer(tokens["access_token"]))
    assert receivers.status_code == 200
    refreshed = await grant(api, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert refreshed.status_code == 200
    new = refreshed.json()
    assert new["access_token"] != tokens["access_token"]
    assert (await api.get("/api/v1/events", headers=bearer(new["access_token"]))).status_code == 403


async def test_revoke_an_access_token_a_refresh_token_and_a_key(api: Client) -> None:
    await make_user(api)
    tokens = (
        await grant(api, grant_type="password", username="alice", password=PASSWORD, tenant="acme")
    ).json()
    for token in (tokens["access_token"], tokens["refresh_token"], "garbage", ""):
        answer = await api.post("/api/v1/auth/revoke", data={"token": token}, headers=ANON)
        assert answer.status_code == 200
    assert_problem(await api.get("/api/v1/events", headers=bearer(tokens["access_token"])), 401)
    refused = await grant(api, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert_problem(refused, 401)
    key = (
        await api.post(
            "/api/v1/api-keys", json={"name": "ci", "role": "event_viewer"}, headers=HEADERS
        )
    ).json()["data"]["key"]
    assert (await api.get("/api/v1/events", headers=bearer(key))).status_code == 200
    assert (await api.post("/api/v1/auth/revoke", json={"token": key}, headers=ANON)).is_success
    assert_problem(await api.get("/api/v1/events", headers=bearer(key)), 401)


# --- users ------------------------------------------------------------------------------------


async def test_users_crud_and_roles_take_effect_at_once(
    api: Client, identity: MemoryIdentity
) -> None:
    user_id = await make_user(api)
    shown = (await api.get(f"/api/v1/users/{user_id}", headers=HEADERS)).json()["data"]
    assert set(shown) == {"id", "username", "roles", "disabled", "created_at", "updated_at"}
    assert shown["roles"] == ["event_manager"]
    listed = (await api.get("/api/v1/users", headers=HEADERS)).json()
    assert [u["id"] for u in listed["data"]] == [user_id]
    assert "hash" not in str(listed)
    tokens = (
        await grant(api, grant_type="password", username="alice", password=PASSWORD, tenant="acme")
    ).json()
    who = bearer(tokens["access_token"])
    assert (await api.post("/api/v1/receivers", json={}, headers=who)).status_code == 400
    demoted = await api.patch(
        f"/api/v1/users/{user_id}", json={"roles": ["event_viewer"]}, headers=HEADERS
    )
    assert demoted.json()["data"]["roles"] == ["event_viewer"]
    # the token still claims event_manager; the store says otherwise, and wins: a token
    # keeps only the roles that both it and the user hold (none here) until the next login
    assert_problem(await api.post("/api/v1/receivers", json={}, headers=who), 403)
    assert_problem(await api.get("/api/v1/receivers", headers=who), 403)
    again = (
        await grant(api, grant_type="password", username="alice", password=PASSWORD, tenant="acme")
    ).json()
    viewer = bearer(again["access_token"])
    assert (await api.get("/api/v1/receivers", headers=viewer)).status_code == 200
    assert_problem(await api.post("/api/v1/receivers", json={}, headers=viewer), 403)
    acme = await tenant_id(api, TENANT)
    [changed] = await identity.audit.list(
        acme, AuditFilter(action="user.roles_changed"), PageRequest()
    )
    assert changed.reason == "event_manager -> event_viewer"
    assert changed.target == f"user:{user_id}"
    denied = await identity.audit.list(acme, AuditFilter(action="access.denied"), PageRequest())
    assert denied[0].reason == "needs receivers:create"
    assert (await api.delete(f"/api/v1/users/{user_id}", headers=HEADERS)).status_code == 204
    assert_problem(await api.get("/api/v1/receivers", headers=who), 401)
    refused = await grant(api, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert_problem(refused, 401)
    assert_problem(await api.delete(f"/api/v1/users/{user_id}", headers=HEADERS), 404)


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"username": "bob", "password": "short", "roles": ["admin"]}, 422, "/password"),
        ({"username": "bob", "password": "bob" * 5, "roles": ["root"]}, 422, "/roles/0"),
        ({"username": "bob", "password": PASSWORD, "roles": ["platform_admin"]}, 422, "/roles/0"),
        ({"username": "bob", "password": PASSWORD, "roles": []}, 422, "/roles"),
        ({"username": "b", "password": PASSWORD, "roles": ["admin"]}, 422, "/username"),
        ({"username": "bob", "password": PASSWORD}, 400, "/roles"),
    ],
)
async def test_user_input_is_checked(
    api: Client, body: dict[str, Any], status: int, field: str
) -> None:
    assert_problem(await api.post("/api/v1/users", json=body, headers=HEADERS), status, field)


async def test_a_taken_username_is_a_conflict_but_not_across_tenants(api: Client) -> None:
    await make_user(api)
    again = await api.post(
        "/api/v1/users",
        json={"username": "ALICE", "password": PASSWORD, "roles": ["admin"]},
        headers=HEADERS,
    )
    assert_problem(again, 409)
    other = await api.post(
        "/api/v1/users",
        json={"username": "alice", "password": PASSWORD, "roles": ["admin"]},
        headers=OTHER_HEADERS,
    )
    assert other.status_code == 201


# --- API keys ---------------------------------------------------------------------------------


async def test_api_keys_are_shown_once_and_revoked_at_once(
    api: Client, identity: MemoryIdentity
) -> None:
    made = await api.post(
        "/api/v1/api-keys",
        json={"name": "deployer", "role": "event_producer", "expires_at": "2027-01-01T00:00:00Z"},
        headers=HEADERS,
    )
    assert made.status_code == 201
    assert made.headers["cache-control"] == "no-store"
    key_id, key = made.json()["data"]["id"], made.json()["data"]["key"]
    assert made.headers["location"] == f"/api/v1/api-keys/{key_id}"
    shown = (await api.get(f"/api/v1/api-keys/{key_id}", headers=HEADERS)).json()["data"]
    assert shown["prefix"] == key.split("_")[1]
    assert shown["role"] == "event_producer"
    assert shown["expires_at"] == "2027-01-01T00:00:00Z"
    assert key not in str(shown)
    listed = (await api.get("/api/v1/api-keys", headers=HEADERS)).json()["data"]
    assert key not in str(listed)
    assert key_id in {k["id"] for k in listed}
    assert (await api.post("/api/v1/events", json={}, headers=bearer(key))).status_code == 400
    assert (await api.delete(f"/api/v1/api-keys/{key_id}", headers=HEADERS)).status_code == 204
    assert (await api.delete(f"/api/v1/api-keys/{key_id}", headers=HEADERS)).status_code == 204
    assert_problem(await api.post("/api/v1/events", json={}, headers=bearer(key)), 401)
    shown = (await api.get(f"/api/v1/api-keys/{key_id}", headers=HEADERS)).json()["data"]
    assert shown["revoked_at"] is not None
    acme = await tenant_id(api, TENANT)
    actions = [str(r.action) for r in await identity.audit.list(acme, AuditFilter(), PageRequest())]
    assert actions.count("api_key.revoked") == 1
    assert "api_key.created" in actions


@pytest.mark.parametrize("fails", [False, True])
async def test_requests_that_miss_a_remembered_key_together_share_one_read(
    clock: ManualClock, identity: MemoryIdentity, monkeypatch: pytest.MonkeyPatch, fails: bool
) -> None:
    """When the key's remembered check ends, the requests in flight at that moment read it
    once between them, not once each; a failing read fails each of them (503), none waits."""
    reads = 0
    found = identity.api_keys.by_prefix

    async def slow_by_prefix(prefix: str) -> Any:
        nonlocal reads
        reads += 1
        await anyio.sleep(0.05)  # a store that answers later: the others arrive meanwhile
        if fails:
            raise Unavailable("the database", "down")
        return await found(prefix)

    async with asgi_client(make_app(identity, clock=clock), headers=PLATFORM) as client:
        await add_tenants(client, identity)
        assert (await client.get("/api/v1/receivers", headers=HEADERS)).status_code == 200
        monkeypatch.setattr(identity.api_keys, "by_prefix", slow_by_prefix)
        clock.current += timedelta(seconds=RECENT_SECONDS + 1)
        answers = await asyncio.gather(
            *(client.get("/api/v1/receivers", headers=HEADERS) for _ in range(16))
        )
    assert [a.status_code for a in answers] == [503 if fails else 200] * 16
    assert reads == 1


async def test_key_input_is_checked(api: Client) -> None:
    for body, field in (
        ({"name": "x", "role": "platform_admin"}, "/role/0"),
        ({"name": " ", "role": "admin"}, "/name"),
        ({"name": "x", "role": "admin", "expires_at": "2020-01-01T00:00:00Z"}, "/expires_at"),
    ):
        assert_problem(await api.post("/api/v1/api-keys", json=body, headers=HEADERS), 422, field)


async def test_platform_administrators_provision_tenants_and_their_own_scope(
    api: Client, identity: MemoryIdentity
) -> None:
    in_acme = {**PLATFORM, "X-Tenant": "acme"}
    made = await api.post(
        "/api/v1/api-keys", json={"name": "first", "role": "admin"}, headers=in_acme
    )
    assert made.status_code == 201
    acme_admin = bearer(made.json()["data"]["key"])
    assert (await api.get("/api/v1/events", headers=acme_admin)).status_code == 200
    # ...but a platform administrator never reads a tenant's data itself
    assert_problem(await api.get("/api/v1/events", headers=in_acme), 403)
    platform_key = await api.post(
        "/api/v1/api-keys", json={"name": "ops", "role": "platform_admin"}, headers=PLATFORM
    )
    assert platform_key.status_code == 201
    ops = bearer(platform_key.json()["data"]["key"])
    assert (await api.get("/api/v1/tenants", headers=ops)).status_code == 200
    audit = (await api.get("/api/v1/audit", headers=PLATFORM)).json()["data"]
    assert {"tenant.created", "api_key.created"} <= {r["action"] for r in audit}
    # the key made in acme is in acme's log, not the platform's
    acme_log = (await api.get("/api/v1/audit", headers=HEADERS)).json()["data"]
    assert any(
        r["action"] == "api_key.created" and r["target"].endswith(made.json()["data"]["id"])
        for r in acme_log
    )


# --- the audit log ----------------------------------------------------------------------------


async def test_the_audit_log_filters_and_pages(api: Client) -> None:
    for n in range(5):
        await api.post("/api/v1/api-keys", json={"name": f"k{n}", "role": "admin"}, headers=HEADERS)
    await grant(api, grant_type="password", username="nobody", password=PASSWORD, tenant="acme")
    created = await api.get(
        "/api/v1/audit", params={"action": "api_key.created", "limit": 2}, headers=HEADERS
    )
    page = created.json()
    assert len(page["data"]) == 2
    seen = [r["id"] for r in page["data"]]
    while page["next_cursor"]:
        page = (
            await api.get(
                "/api/v1/audit",
                params={"action": "api_key.created", "limit": 2, "cursor": page["next_cursor"]},
                headers=HEADERS,
            )
        ).json()
        seen += [r["id"] for r in page["data"]]
    assert len(seen) == 5
    assert seen == sorted(seen, reverse=True)
    failures = (
        await api.get("/api/v1/audit", params={"outcome": "failure"}, headers=HEADERS)
    ).json()["data"]
    [failed] = failures
    assert failed == {
        "id": failed["id"],
        "at": failed["at"],
        "actor": "username:nobody",
        "action": "auth.login",
        "target": "grant:password",
        "outcome": "failure",
        "address": "127.0.0.1",
        "request_id": failed["request_id"],
        "reason": "bad_credentials",
    }
    assert_problem(
        await api.get("/api/v1/audit", params={"since": "yesterday"}, headers=HEADERS), 400
    )


# --- the first platform administrator ---------------------------------------------------------


async def test_the_first_start_makes_one_platform_administrator_once() -> None:
    identity = MemoryIdentity()
    shown: list[str] = []
    async with asgi_client(make_app(identity, announce=shown.append)) as http:
        [key] = shown
        assert key.startswith("wp_")
        made = await http.post(
            "/api/v1/tenants", json={"slug": "acme", "name": "Acme"}, headers=bearer(key)
        )
        assert made.status_code == 201
    async with asgi_client(make_app(identity, announce=shown.append)) as http:
        assert (await http.get("/api/v1/tenants", headers=bearer(key))).status_code == 200
    assert shown == [key]  # never again, not even after a restart


# --- networks, headers, CORS ------------------------------------------------------------------


async def test_platform_administrators_only_from_their_networks(
    app: Litestar, identity: MemoryIdentity
) -> None:
    async with asgi_client(app, headers=PLATFORM) as local:
        await add_tenants(local, identity)
        for address in ("10.1.2.3", "2001:db8::1", "::ffff:10.1.2.3", "unix-socket"):
            async with client_from(app, address) as remote:
                answer = await remote.get("/api/v1/tenants", headers=PLATFORM)
                assert_problem(answer, 403)
                # a tenant's own credential is not a platform administrator's
                assert (await remote.get("/api/v1/events", headers=HEADERS)).status_code == 200
        for address in ("::1", "::ffff:127.0.0.1", "127.0.0.1", "127.9.9.9"):
            async with client_from(app, address) as near:
                assert (await near.get("/api/v1/tenants", headers=PLATFORM)).status_code == 200
    denied = await identity.audit.list(None, AuditFilter(action="access.denied"), PageRequest())
    assert {r.address for r in denied} == {
        "10.1.2.3",
        "2001:db8::1",
        "::ffff:10.1.2.3",
        "unix-socket",
    }


async def test_configured_networks_let_administrators_in() -> None:
    config = settings(security=SecuritySettings(admin_networks=["10.0.0.0/8", "2001:db8::/32"]))
    app = make_app(await platform_identity(), config=config)
    async with asgi_client(app):
        for address, status in (("10.9.9.9", 200), ("2001:db8::5", 200), ("127.0.0.1", 403)):
            async with client_from(app, address) as http:
                answer = await http.get("/api/v1/tenants", headers=PLATFORM)
                assert answer.status_code == status


async def test_security_headers_on_every_answer(client: Client) -> None:
    for path in ("/healthz/live", "/api/v1/tenants", "/nothing", "/api/v1/events"):
        answer = await client.get(path)
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert "default-src 'none'" in answer.headers["content-security-policy"]
        assert "strict-transport-security" not in answer.headers  # plain HTTP
    for page in ("/schema", "/console/sign-in"):
        policy = (await client.get(page)).headers["content-security-policy"]
        assert "script-src 'self';" in policy
        assert "http" not in policy  # no other host
        assert "unsafe" not in policy


async def test_cors_only_for_the_configured_origins() -> None:
    config = settings(http=HttpSettings(cors_origins=["https://app.example.com"]))
    app = make_app(await platform_identity(), config=config)
    async with asgi_client(app) as http:
        ok = await http.options(
            "/api/v1/events",
            headers={
                "Origin": "https://app.example.com",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert ok.status_code in {200, 204}
        assert ok.headers["access-control-allow-origin"] == "https://app.example.com"
        other = await http.get("/healthz/live", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


# --- the JWKS, and an independent library ------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["EdDSA", "RS256"])
async def test_pyjwt_verifies_our_tokens_against_our_jwks(
    algorithm: Literal["EdDSA", "RS256"],
) -> None:
    config = settings(secrets=SecretsSettings(master_key=MASTER_KEY, signing_algorithm=algorithm))
    identity = await platform_identity()
    async with asgi_client(make_app(identity, config=config)) as http:
        await add_tenants(http, identity, TENANT)
        tokens = (
            await grant(http, grant_type="api_key", api_key=HEADERS["Authorization"][7:])
        ).json()
        document = await http.get("/.well-known/jwks.json", headers=ANON)
        assert document.status_code == 200
        assert "max-age" in document.headers["cache-control"]
    [jwk] = document.json()["keys"]
    assert jwk["alg"] == algorithm
    assert not {"d", "p", "q"} & set(jwk)  # public parts only
    key = jwt.PyJWK.from_dict(jwk)
    header = jwt.get_unverified_header(tokens["access_token"])
    assert (header["kid"], header["typ"], header["alg"]) == (jwk["kid"], "at+jwt", algorithm)
    claims = jwt.decode(
        tokens["access_token"],
        key=key,
        algorithms=[algorithm],
        audience="waypost-api",
        issuer="waypost",
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert claims["sub"].startswith("api_key:")
    assert claims["roles"] == [str(Role.ADMIN)]
    assert set(claims) == {"iss", "aud", "sub", "tenant", "roles", "iat", "nbf", "exp", "jti"}


def test_settings_of_the_tests_are_valid() -> None:
    assert isinstance(settings(), Settings)
