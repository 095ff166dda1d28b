"""End to end: the real server process, over real HTTP, on SQLite and on PostgreSQL.

Written against ../shared/design/API.md only: no import of the application. Credentials
are obtained the way an operator does: the platform administrator's key the server prints
on its first start, then tenant keys made with it over the API.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import httpx
import pytest

from tests.e2e.conftest import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("clients")]


@pytest.fixture
def clients() -> Iterator[None]:
    yield
    while Api.opened:
        Api.opened.pop().close()


NVRPP = {"name": "app", "version": "1.0", "release": "1", "platform_id": "x86_64", "package": "rpm"}
SCHEMA = {"type": "object", "properties": {"build": {"type": "integer"}}, "required": ["build"]}


class Api:
    """A thin client for one credential (closed with the test, see `clients`)."""

    opened: ClassVar[list[httpx.Client]] = []

    def __init__(self, base: str, key: str, **headers: str) -> None:
        self.key = key
        self.http = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {key}", **headers}, timeout=30
        )
        Api.opened.append(self.http)

    def post(self, path: str, body: Any, expect: int = 201) -> Any:
        answer = self.http.post(path, json=body)
        assert answer.status_code == expect, answer.text
        return answer.json()

    def get(self, path: str, *, expect: int = 200, params: dict[str, Any] | None = None) -> Any:
        answer = self.http.get(path, params=params)
        assert answer.status_code == expect, answer.text
        return answer.json()

    def receiver(self, name: str) -> str:
        body = {
            "name": name,
            "type": f"ci.{name}",
            "version": "1",
            "description": "",
            "schema": SCHEMA,
        }
        data: str = self.post("/api/v1/receivers", body)["data"]
        return data

    def event(self, receiver_id: str, success: bool = True, **nvrpp: str) -> dict[str, Any]:
        return {
            **NVRPP,
            **nvrpp,
            "description": "",
            "payload": {"build": 1},
            "success": success,
            "event_receiver_id": receiver_id,
        }


def new_tenant(base: str, platform_key: str, slug: str) -> Api:
    """A tenant, and a client holding its first admin key (made by the platform admin)."""
    platform = Api(base, platform_key)
    assert platform.post("/api/v1/tenants", {"slug": slug, "name": slug.title()}) == {"data": slug}
    admin = Api(base, platform_key, **{"X-Tenant": slug})
    made = admin.post("/api/v1/api-keys", {"name": "e2e", "role": "admin"})["data"]
    return Api(base, made["key"])


def test_the_registry_end_to_end(server: ServerProcess) -> None:
    platform_key = server.bootstrap_key()
    api = new_tenant(server.url, platform_key, "acme")
    build, test, scan = api.receiver("build"), api.receiver("test"), api.receiver("scan")

    # the same registration again answers the existing receiver with 200
    again = api.post(
        "/api/v1/receivers",
        {"name": "build", "type": "ci.build", "version": "1", "description": "", "schema": SCHEMA},
        expect=200,
    )
    assert again["data"] == build
    assert api.get(f"/api/v1/receivers/{build}")["data"]["fingerprint"]

    release = api.post(
        "/api/v1/groups",
        {
            "name": "release",
            "type": "gate",
            "version": "1",
            "description": "",
            "event_receiver_ids": [build, test],
        },
    )["data"]
    # shares `build` but also needs `scan`, which never succeeds: it must not fire
    audit = api.post(
        "/api/v1/groups",
        {
            "name": "audit",
            "type": "gate",
            "version": "1",
            "description": "",
            "event_receiver_ids": [build, scan],
        },
    )["data"]

    # a valid event, and an invalid one that stores nothing
    created = api.http.post("/api/v1/events", json=api.event(build))
    assert created.status_code == 201
    assert created.headers["location"].endswith(created.json()["data"])
    bad = api.http.post("/api/v1/events", json={**api.event(test), "payload": {"build": "x"}})
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in bad.json()["errors"]] == ["/payload/build"]

    status = api.get(f"/api/v1/groups/{release}/status", params=NVRPP)["data"]
    assert status["complete"] is False
    assert [m["passing"] for m in status["members"]] == [True, False]

    # a batch with the missing success completes `release`, never `audit`
    ids = api.post(
        "/api/v1/events/batch", {"events": [api.event(test), api.event(scan, success=False)]}
    )["data"]
    assert len(ids) == 2
    assert api.get(f"/api/v1/groups/{release}/status", params=NVRPP)["data"]["complete"] is True
    [done] = api.get(f"/api/v1/groups/{release}/completions", params=NVRPP)["data"]
    assert done["triggering_event_id"] == ids[0]
    assert api.get(f"/api/v1/groups/{audit}/completions")["data"] == []
    assert api.get(f"/api/v1/groups/{audit}/status", params=NVRPP)["data"]["complete"] is False

    # a batch with one refused event stores none of it
    refused = api.http.post(
        "/api/v1/events/batch", json={"events": [api.event(test), {**api.event(test), "name": " "}]}
    )
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "/events/1/name"

    # pagination through a few hundred events, both orders
    for start in range(0, 300, 100):
        api.post(
            "/api/v1/events/batch",
            {"events": [api.event(build, release=str(start + i)) for i in range(100)]},
        )
    seen: dict[str, list[str]] = {}
    for order in ("desc", "asc"):
        cursor = None
        seen[order] = []
        while True:
            params: dict[str, Any] = {"limit": 45, "order": order, "event_receiver_id": build}
            if cursor:
                params["cursor"] = cursor
            page = api.get("/api/v1/events", params=params)
            seen[order] += [e["id"] for e in page["data"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert len(seen["asc"]) == 301
    assert seen["asc"] == sorted(seen["asc"])
    assert seen["desc"] == list(reversed(seen["asc"]))

    # another tenant sees nothing of this one
    other = new_tenant(server.url, platform_key, "other")
    other.get(f"/api/v1/receivers/{build}", expect=404)
    other.get(f"/api/v1/groups/{release}", expect=404)
    assert other.get("/api/v1/events")["data"] == []

    credentials_and_tokens(server, platform_key)


def credentials_and_tokens(server: ServerProcess, platform_key: str) -> None:
    """Users, passwords, access and refresh tokens, the JWKS and the audit log."""
    assert httpx.get(f"{server.url}/api/v1/tenants").status_code == 401
    api = new_tenant(server.url, platform_key, "initech")
    # a user of the tenant logs in with a password and uses an access token
    user = api.post(
        "/api/v1/users",
        {"username": "alice", "password": "correct horse battery", "roles": ["event_manager"]},
    )["data"]
    login = httpx.post(
        f"{server.url}/api/v1/auth/token",
        data={
            "grant_type": "password",
            "username": "alice",
            "password": "correct horse battery",
            "tenant": "initech",
        },
    )
    assert login.status_code == 200, login.text
    tokens = login.json()
    alice = Api(server.url, tokens["access_token"])
    receiver = alice.receiver("build")
    assert alice.get(f"/api/v1/receivers/{receiver}")["data"]["id"] == receiver
    alice.get("/api/v1/users", expect=403)  # not an admin
    refreshed = httpx.post(
        f"{server.url}/api/v1/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
    )
    assert refreshed.status_code == 200
    jwks = httpx.get(f"{server.url}/.well-known/jwks.json").json()
    assert len(jwks["keys"]) == 1
    # deleting the user stops its token at once; the audit log tells the story
    assert api.http.delete(f"/api/v1/users/{user}").status_code == 204
    alice.get("/api/v1/receivers", expect=401)
    actions = {r["action"] for r in api.get("/api/v1/audit", params={"limit": 1000})["data"]}
    assert {"user.created", "auth.login", "auth.refresh", "user.deleted", "auth.refused"} <= (
        actions
    )


def test_sigterm_lets_in_flight_writes_finish_and_never_half_writes(
    server_env: dict[str, str], tmp_path: pathlib.Path
) -> None:
    first = ServerProcess(server_env, tmp_path / "first.log")
    first.wait_ready()
    api = new_tenant(first.url, first.bootstrap_key(), "acme")
    receiver = api.receiver("build")
    batch = {"events": [api.event(receiver, release=str(i)) for i in range(1000)]}
    answers: list[int] = []

    def post() -> None:
        try:
            answers.append(
                httpx.post(
                    f"{first.url}/api/v1/events/batch",
                    json=batch,
                    headers={"Authorization": f"Bearer {api.key}"},
                    timeout=60,
                ).status_code
            )
        except httpx.TransportError:
            answers.append(0)  # refused after shutdown began: never started, fine

    threads = [threading.Thread(target=post) for _ in range(6)]
    for thread in threads:
        thread.start()
    threading.Event().wait(0.15)
    assert first.stop() == 0, first.output()
    for thread in threads:
        thread.join()
    assert set(answers) <= {201, 0, 503}, answers

    second = ServerProcess(server_env, tmp_path / "second.log")
    try:
        second.wait_ready()
        api = Api(second.url, api.key)  # the key lives in the database, not the process
        assert "wp_" not in second.output()  # no second bootstrap key
        total = 0
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 1000}
            if cursor:
                params["cursor"] = cursor
            page = api.get("/api/v1/events", params=params)
            total += len(page["data"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert total == 1000 * answers.count(201)
    finally:
        assert second.stop() == 0


def test_production_mode_refuses_pending_migrations_until_migrated(tmp_path: pathlib.Path) -> None:
    env = {
        "WAYPOST__DATABASE__URL": f"sqlite:///{tmp_path / 'prod.db'}",
        "WAYPOST__MODE": "production",
        "WAYPOST__SECRETS__MASTER_KEY": "cHJvZHVjdGlvbi10ZXN0LW1hc3Rlci1rZXktMzItYnl0ZXMh",
        "PATH": "/usr/bin:/bin",
    }
    refused = subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0
    assert "waypost migrate" in refused.stderr
    migrated = subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr
    process = ServerProcess(env, tmp_path / "prod.log")
    try:
        process.wait_ready()
    finally:
        assert process.stop() == 0


def test_a_bad_setting_stops_the_start_with_its_name(tmp_path: pathlib.Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", "serve"],
        env={"WAYPOST__HTTP__PORT": "eighty", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "WAYPOST__HTTP__PORT" in done.stderr
