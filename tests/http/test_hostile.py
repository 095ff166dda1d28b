"""Hostile input on every route, on SQLite and PostgreSQL: always a 4xx, never a 5xx.

Each case is a request and the status API.md implies: 400 for bytes that are not JSON
text (invalid UTF-8, a lone surrogate) or a malformed parameter, 422 for a value the
rules refuse (a NUL character in a text field or a filter: refused on both backends so
that they agree; nesting deeper than the limits, refused before any recursion; a date
that does not exist in UTC). `CASES` is the table of the closing note.
"""

from __future__ import annotations

import json
import pathlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from litestar import Litestar

from adapters.sql.identity import SqlIdentity
from adapters.sql.migrations import migrate
from adapters.sql.store import SqlStore
from core.domain.access import Role
from tests.http.conftest import (
    ACME_KEY,
    HEADERS,
    PLATFORM,
    PLATFORM_KEY,
    asgi_client,
    event_body,
    make_app,
    receiver_body,
    seed_key,
    tenant_id,
)

pytestmark = pytest.mark.anyio

NUL = "\u0000"
DEEP = 1000
TOO_EARLY = "0001-01-01T00:00:00+14:00"  # before year 1 in UTC
TOO_LATE = "9999-12-31T23:59:59-14:00"  # after year 9999 in UTC


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def deep_json(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


@dataclass
class World:
    """What the cases need: the receiver and group they name."""

    receiver: str
    group: str
    user: str


@dataclass
class Case:
    name: str
    method: str
    path: Callable[[World], str]
    status: int
    body: Callable[[World], bytes] | None = None
    headers: dict[str, str] = field(default_factory=lambda: dict(HEADERS))
    content_type: str = "application/json"


def raw(text: str) -> Callable[[World], bytes]:
    return lambda _: text.encode()


def data(make: Callable[[World], Any]) -> Callable[[World], bytes]:
    return lambda world: json.dumps(make(world)).encode()


def at(path: str) -> Callable[[World], str]:
    return lambda _: path


def with_invalid_utf8(body: dict[str, Any], name: str) -> Callable[[World], bytes]:
    """`body` with the string field `name` holding the byte 0xff."""
    marker = "@@bad@@"
    text = json.dumps({**body, name: marker}).encode()
    return lambda _: text.replace(marker.encode(), b"\xff")


EVENT = event_body("01J00000000000000000000000")
RECEIVER = receiver_body("r")
GROUP = {"name": "g", "type": "t", "version": "1", "description": "", "event_receiver_ids": []}
USER = {"username": "hostile", "password": "a long enough secret", "roles": ["event_viewer"]}
KEY = {"name": "k", "role": "event_viewer"}


def event(world: World, **over: Any) -> dict[str, Any]:
    return event_body(world.receiver, **over)


def group(world: World, **over: Any) -> dict[str, Any]:
    return {**GROUP, "event_receiver_ids": [world.receiver], **over}


def event_with_nul(name: str) -> Callable[[World], bytes]:
    return data(lambda w: event(w, **{name: f"a{NUL}b"}))


def receiver_with_nul(name: str) -> Callable[[World], bytes]:
    return data(lambda w: {**RECEIVER, "name": "nul", name: f"a{NUL}"})


CASES: list[Case] = [
    # --- bytes that are not JSON text: 400 ------------------------------------------------
    Case("token: invalid UTF-8 in a string", "POST", at("/api/v1/auth/token"), 400,
         lambda _: b'{"grant_type": "\xff"}', headers={}),
    Case("token form: invalid UTF-8", "POST", at("/api/v1/auth/token"), 400,
         lambda _: b"grant_type=password&username=\xff", headers={},
         content_type="application/x-www-form-urlencoded"),
    Case("revoke: invalid UTF-8", "POST", at("/api/v1/auth/revoke"), 400,
         lambda _: b'{"token": "\xff"}', headers={}),
    Case("event: invalid UTF-8 in a string", "POST", at("/api/v1/events"), 400,
         with_invalid_utf8(EVENT, "name")),
    Case("event: invalid UTF-8 in the payload", "POST", at("/api/v1/events"), 400,
         lambda _: json.dumps(EVENT).replace('"build": 1', '"x": "@"').encode().replace(
             b"@", b"\xc3\x28")),
    Case("receiver: invalid UTF-8", "POST", at("/api/v1/receivers"), 400,
         with_invalid_utf8(RECEIVER, "description")),
    Case("group: invalid UTF-8", "POST", at("/api/v1/groups"), 400,
         with_invalid_utf8(GROUP, "name")),
    Case("tenant: invalid UTF-8", "POST", at("/api/v1/tenants"), 400,
         with_invalid_utf8({"slug": "x", "name": "x"}, "name"), headers=dict(PLATFORM)),
    Case("user: invalid UTF-8", "POST", at("/api/v1/users"), 400,
         with_invalid_utf8(USER, "password")),
    Case("api key: invalid UTF-8", "POST", at("/api/v1/api-keys"), 400,
         with_invalid_utf8(KEY, "name")),
    Case("event: a lone surrogate", "POST", at("/api/v1/events"), 400,
         lambda w: json.dumps(event(w, description="x")).replace('"x"', '"\\ud800"').encode()),
    Case("event: not an object", "POST", at("/api/v1/events"), 400, raw("[]")),
    Case("event: empty", "POST", at("/api/v1/events"), 400, raw("")),
    Case("event: a number too large for a float", "POST", at("/api/v1/events"), 400,
         lambda w: json.dumps(event(w)).replace('"build": 1', '"build": 1e999').encode()),
    # --- nesting: refused before any recursion ----------------------------------------------
    Case("event: payload nested 1000 deep", "POST", at("/api/v1/events"), 422,
         lambda w: json.dumps(event(w)).replace('{"build": 1}', deep_json(DEEP)).encode()),
    Case("event: payload nested 65 deep", "POST", at("/api/v1/events"), 422,
         data(lambda w: event(w, payload=nested(65)))),
    Case("batch: payload nested 1000 deep", "POST", at("/api/v1/events/batch"), 422,
         lambda w: json.dumps({"events": [event(w)]}).replace(
             '{"build": 1}', deep_json(DEEP)).encode()),
    Case("receiver: schema nested 1000 deep", "POST", at("/api/v1/receivers"), 422,
         lambda w: json.dumps(RECEIVER).replace('"required"', f'"x": {deep_json(DEEP)}, "required"'
                                                 ).encode()),
    Case("receiver: schema nested 300 deep", "POST", at("/api/v1/receivers"), 422,
         data(lambda w: {**RECEIVER, "schema": nested(300, {})})),
    Case("group: nested where a string goes", "POST", at("/api/v1/groups"), 400,
         lambda w: json.dumps(group(w)).replace('"g"', deep_json(DEEP)).encode()),
    Case("token: nested 10000 deep", "POST", at("/api/v1/auth/token"), 400,
         raw("[" * 10_000 + "]" * 10_000), headers={}),
    Case("token: nested beyond the body limit", "POST", at("/api/v1/auth/token"), 413,
         raw("[" * 100_000 + "]" * 100_000), headers={}),
    # --- NUL: refused on both backends alike -------------------------------------------------
    *[
        Case(f"event: NUL in {name}", "POST", at("/api/v1/events"), 422,
             event_with_nul(name))
        for name in ("name", "version", "release", "platform_id", "package", "description")
    ],
    Case("event: NUL in the receiver id", "POST", at("/api/v1/events"), 422,
         data(lambda w: event(w, event_receiver_id=f"01J{NUL}"))),
    Case("batch: NUL in a name", "POST", at("/api/v1/events/batch"), 422,
         data(lambda w: {"events": [event(w), event(w, name=NUL)]})),
    *[
        Case(f"receiver: NUL in {name}", "POST", at("/api/v1/receivers"), 422,
             receiver_with_nul(name))
        for name in ("name", "type", "version", "description")
    ],
    Case("group: NUL in its name", "POST", at("/api/v1/groups"), 422,
         data(lambda w: group(w, name=NUL))),
    Case("group: NUL in a member id", "POST", at("/api/v1/groups"), 422,
         data(lambda w: group(w, event_receiver_ids=[f"{w.receiver[:-1]}{NUL}"]))),
    Case("group patch: NUL in its description", "PATCH", lambda w: f"/api/v1/groups/{w.group}", 422,
         data(lambda w: {"description": NUL})),
    Case("group patch: NUL in an added id", "PATCH", lambda w: f"/api/v1/groups/{w.group}", 422,
         data(lambda w: {"add_receiver_ids": [NUL]})),
    Case("tenant: NUL in its name", "POST", at("/api/v1/tenants"), 422,
         data(lambda w: {"slug": "nul", "name": f"a{NUL}"}), headers=dict(PLATFORM)),
    Case("tenant: NUL in its slug", "POST", at("/api/v1/tenants"), 422,
         data(lambda w: {"slug": f"nu{NUL}l", "name": "x"}), headers=dict(PLATFORM)),
    Case("tenant patch: NUL in its name", "PATCH", at("/api/v1/tenants/acme"), 422,
         data(lambda w: {"name": NUL}), headers=dict(PLATFORM)),
    Case("user: NUL in the username", "POST", at("/api/v1/users"), 422,
         data(lambda w: {**USER, "username": f"a{NUL}bc"})),
    Case("user: NUL in the password", "POST", at("/api/v1/users"), 422,
         data(lambda w: {**USER, "username": "other", "password": f"a long enough{NUL}secret"})),
    Case("api key: NUL in its name", "POST", at("/api/v1/api-keys"), 422,
         data(lambda w: {**KEY, "name": f"k{NUL}"})),
    # credentials are not text to store: a NUL in one is a credential that is not accepted
    Case("token: NUL in the username", "POST", at("/api/v1/auth/token"), 401,
         data(lambda w: {"grant_type": "password", "username": f"a{NUL}", "password": "x",
                         "tenant": "acme"}), headers={}),
    Case("token: NUL in the tenant", "POST", at("/api/v1/auth/token"), 401,
         data(lambda w: {"grant_type": "password", "username": "abc", "password": "x",
                         "tenant": f"ac{NUL}me"}), headers={}),
    Case("token: NUL in the refresh token", "POST", at("/api/v1/auth/token"), 401,
         data(lambda w: {"grant_type": "refresh_token", "refresh_token": f"wpr_{NUL}"}),
         headers={}),
    Case("token: NUL in the API key", "POST", at("/api/v1/auth/token"), 401,
         data(lambda w: {"grant_type": "api_key", "api_key": f"wp_{NUL}_x"}), headers={}),
    # RFC 7009: an unknown or invalid token is answered as a revoked one
    Case("revoke: NUL in the token", "POST", at("/api/v1/auth/revoke"), 200,
         data(lambda w: {"token": f"wp_{NUL}_x"}), headers={}),
    *[
        Case(f"events filter: NUL in {name}", "GET", at(f"/api/v1/events?{name}=a%00b"), 422)
        for name in ("name", "version", "release", "platform_id", "package",
                     "event_receiver_id")
    ],
    Case("receivers filter: NUL", "GET", at("/api/v1/receivers?type=%00"), 422),
    Case("groups filter: NUL", "GET", at("/api/v1/groups?name=%00"), 422),
    Case("group status: NUL", "GET", lambda w: f"/api/v1/groups/{w.group}/status?name=%00"
         "&version=1&release=1&platform_id=p&package=k", 422),
    Case("completions filter: NUL", "GET",
         lambda w: f"/api/v1/groups/{w.group}/completions?package=%00", 422),
    Case("audit filter: NUL", "GET", at("/api/v1/audit?actor=%00"), 422),
    Case("messages filter: NUL", "GET", at("/api/v1/messages?follow=false&type=%00"), 422),
    Case("an unknown parameter with NUL", "GET", at("/api/v1/receivers?whatever=%00"), 422),
    Case("cursor: NUL", "GET", at("/api/v1/events?cursor=%00"), 422),
    Case("event id: NUL", "GET", at("/api/v1/events/01J%00"), 404),
    Case("tenant slug: NUL", "GET", at("/api/v1/tenants/ac%00me"), 404, headers=dict(PLATFORM)),
    Case("user id: NUL", "PATCH", at("/api/v1/users/01J%00"), 404, data(lambda w: {})),
    Case("X-Tenant: NUL", "GET", at("/api/v1/users"), 404,
         headers={**PLATFORM, "X-Tenant": "ac\x00me"}),
    Case("Idempotency-Key: NUL", "POST", at("/api/v1/events"), 400,
         data(event), headers={**HEADERS, "Idempotency-Key": "k\x00"}),
    # --- dates that do not exist in UTC -----------------------------------------------------
    Case("events: since before year 1 in UTC", "GET",
         at("/api/v1/events?since=0001-01-01T00:00:00%2B14:00"), 400),
    Case("events: until after year 9999 in UTC", "GET",
         at("/api/v1/events?until=9999-12-31T23:59:59-14:00"), 400),
    Case("audit: since before year 1 in UTC", "GET",
         at("/api/v1/audit?since=0001-01-01T00:00:00%2B14:00"), 400),
    Case("audit: until after year 9999 in UTC", "GET",
         at("/api/v1/audit?until=9999-12-31T23:59:59-14:00"), 400),
    Case("api key: expires after year 9999 in UTC", "POST", at("/api/v1/api-keys"), 422,
         data(lambda w: {**KEY, "expires_at": TOO_LATE})),
    Case("api key: expires before year 1 in UTC", "POST", at("/api/v1/api-keys"), 422,
         data(lambda w: {**KEY, "expires_at": TOO_EARLY})),
    # --- numbers and bounds of parameters ---------------------------------------------------
    Case("events: a huge limit", "GET", at("/api/v1/events?limit=1" + "0" * 40), 400),
    Case("messages: a huge position", "GET",
         at("/api/v1/messages?follow=false&after=1" + "0" * 40), 400),
    Case("receiver: an integer too large for JCS", "POST", at("/api/v1/receivers"), 422,
         data(lambda w: {**RECEIVER, "schema": {"maximum": 2**60}})),
    Case("event: a payload integer beyond 64 bits", "POST", at("/api/v1/events"), 201,
         lambda w: json.dumps(event(w)).replace('"build": 1', '"build": 1' + "0" * 30).encode()),
]  # fmt: skip


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def sql_app(
    request: pytest.FixtureRequest, tmp_path: pathlib.Path
) -> AsyncIterator[tuple[httpx.AsyncClient, World]]:
    """The app over SQL stores (one database for the store and the identity stores), with
    the tenant `acme`, a receiver, a group and a user for the cases to name."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'hostile.db'}"
    else:
        url = request.getfixturevalue("fresh_database")
    await migrate(url)
    store = await SqlStore.connect(url)
    identity = await SqlIdentity.connect(url)
    try:
        await seed_key(identity, PLATFORM_KEY, tenant_id=None, role=Role.PLATFORM_ADMIN)  # type: ignore[arg-type]
        app: Litestar = make_app(identity, store=store)  # type: ignore[arg-type]
        async with asgi_client(app, headers=PLATFORM) as http:
            made = await http.post("/api/v1/tenants", json={"slug": "acme", "name": "Acme"})
            assert made.status_code == 201, made.text
            acme = await tenant_id(http, "acme")
            await seed_key(identity, ACME_KEY, tenant_id=acme, role=Role.ADMIN)  # type: ignore[arg-type]
            receiver = (await http.post("/api/v1/receivers", json=RECEIVER, headers=HEADERS)).json()
            made_group = await http.post(
                "/api/v1/groups", json={**GROUP, "event_receiver_ids": [receiver["data"]]},
                headers=HEADERS,
            )  # fmt: skip
            user = await http.post("/api/v1/users", json=USER, headers=HEADERS)
            world = World(receiver["data"], made_group.json()["data"], user.json()["data"])
            yield http, world
    finally:
        await identity.close()
        await store.close()


async def test_hostile_input_is_a_4xx_never_a_5xx(
    sql_app: tuple[httpx.AsyncClient, World],
) -> None:
    """Every case, in one app per backend; the table of what each answers."""
    http, world = sql_app
    answers: list[tuple[str, int, int]] = []
    for case in CASES:
        body = None if case.body is None else case.body(world)
        headers = {**case.headers}
        if body is not None:
            headers["Content-Type"] = case.content_type
        answer = await http.request(case.method, case.path(world), content=body, headers=headers)
        answers.append((case.name, answer.status_code, case.status))
        if answer.status_code >= 400:
            problem = answer.json()
            assert problem["status"] == answer.status_code
            assert "Traceback" not in answer.text
    wrong = [(name, got, wanted) for name, got, wanted in answers if got != wanted]
    assert not wrong, "\n".join(f"{name}: {got}, not {wanted}" for name, got, wanted in wrong)


async def test_every_query_parameter_of_the_served_document_refuses_nul(
    tmp_path: pathlib.Path,
) -> None:
    """Walked from the OpenAPI document, so that a route added later is covered too."""
    url = f"sqlite:///{tmp_path / 'params.db'}"
    await migrate(url)
    store = await SqlStore.connect(url)
    identity = await SqlIdentity.connect(url)
    try:
        await seed_key(identity, PLATFORM_KEY, tenant_id=None, role=Role.PLATFORM_ADMIN)  # type: ignore[arg-type]
        app: Litestar = make_app(identity, store=store)  # type: ignore[arg-type]
        document = app.openapi_schema.to_schema()
        async with asgi_client(app, headers=PLATFORM) as http:
            tried = 0
            for path, item in document["paths"].items():
                if not path.startswith("/api/v1/"):
                    continue
                for method, operation in item.items():
                    for parameter in operation.get("parameters", []):
                        if parameter["in"] != "query":
                            continue
                        target = re.sub(r"\{[^}]+\}", "01J00000000000000000000000", path)
                        answer = await http.request(
                            method.upper(), target, params={parameter["name"]: "a\x00b"}
                        )
                        assert answer.status_code == 422, (method, path, parameter["name"])
                        tried += 1
            assert tried > 30
    finally:
        await identity.close()
        await store.close()
