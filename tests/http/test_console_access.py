"""The console's access control, generated from its own routes (as the API's is:
tests/http/test_access_control.py): every page declares the permission it needs, or is
public (sign-in, assets) or open to any session (home, sign-out); every role gets
exactly what ROLE_PERMISSIONS grants, through a real signed-in session; another
tenant's ids are not found."""

from __future__ import annotations

import re

import pytest
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute

from core.domain.access import ROLE_PERMISSIONS, Permission, Role
from entrypoints.http.auth import PERMISSION
from tests.http.conftest import (
    ACME_KEY,
    HEADERS,
    OTHER_HEADERS,
    PLATFORM_KEY,
    Client,
    event_body,
    make_receiver,
)
from tests.http.console import Console, console_client

pytestmark = pytest.mark.anyio

SOME_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
NVRPP = {"name": "a", "version": "1", "release": "1", "platform_id": "x", "package": "rpm"}
PUBLIC = {("GET", "/console/sign-in"), ("POST", "/console/sign-in")}
ANY_SESSION = {("GET", "/console"), ("POST", "/console/sign-out")}
#: The live stream never ends by itself: tried only by principals it must refuse (the
#: browser tests read it).
ENDLESS = {("GET", "/console/live/stream")}
PRINCIPALS: dict[str, Role] = {
    "admin": Role.ADMIN,
    "event_manager": Role.EVENT_MANAGER,
    "event_viewer": Role.EVENT_VIEWER,
    "event_producer": Role.EVENT_PRODUCER,
    "platform_admin": Role.PLATFORM_ADMIN,
    "platform_admin+tenant": Role.PLATFORM_ADMIN,
}


def console_routes(app: Litestar) -> list[tuple[str, str, HTTPRouteHandler]]:
    found = [
        (method, route.path_format, handler)
        for route in app.routes
        if isinstance(route, HTTPRoute) and route.path_format.startswith("/console")
        for handler in route.route_handlers
        for method in sorted(handler.http_methods - {"OPTIONS", "HEAD"})
    ]
    return sorted(found, key=lambda r: (r[0], r[1]))


async def test_every_console_route_declares_a_permission(app: Litestar) -> None:
    public, any_session = set(), set()
    for method, path, handler in console_routes(app):
        permission = handler.opt.get(PERMISSION)
        if path.startswith("/console/static/"):
            continue
        if handler.opt.get("public"):
            public.add((method, path))
        elif handler.opt.get("signed_in"):
            any_session.add((method, path))
        else:
            assert isinstance(permission, Permission), f"{method} {path} declares nothing"
    assert public == PUBLIC
    assert any_session == ANY_SESSION


async def sessions(app: Litestar, api: Client) -> dict[str, Console]:
    keys = {}
    for who in ("admin", "event_manager", "event_viewer", "event_producer"):
        answer = await api.post(
            "/api/v1/api-keys", json={"name": who, "role": who}, headers=HEADERS
        )
        keys[who] = answer.json()["data"]["key"]
    keys["platform_admin"] = keys["platform_admin+tenant"] = PLATFORM_KEY
    made = {}
    for who, key in keys.items():
        async with console_client(app) as http:
            console = Console(http)
            assert (await console.sign_in(api_key=key)).status_code == 303
            if who == "platform_admin+tenant":
                assert (
                    await console.post("/console/tenants", {"tenant": "acme"})
                ).status_code == 303
            made[who] = console
    return made


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", SOME_ID, path)


async def test_every_console_route_allows_exactly_the_roles_that_hold_its_permission(
    app: Litestar, api: Client
) -> None:
    consoles = await sessions(app, api)
    wrong, tried = [], 0
    for method, path, handler in console_routes(app):
        permission = handler.opt.get(PERMISSION)
        if not isinstance(permission, Permission):
            continue
        for who, console in consoles.items():
            allowed = permission in ROLE_PERMISSIONS[PRINCIPALS[who]]
            if (method, path) in ENDLESS and allowed:
                continue
            async with console_client(app) as http:
                console.http = http
                if method == "GET":
                    answer = await console.get(concrete(path), params=NVRPP)
                else:
                    tenant = "acme" if who == "platform_admin+tenant" else ""
                    answer = await console.post(concrete(path), {"tenant": tenant})
            refused = answer.status_code in {401, 403} or (
                answer.status_code == 303 and "sign-in" in answer.headers["location"]
            )
            if refused == allowed:
                wrong.append(f"{who} {method} {path}: {answer.status_code}")
            tried += 1
    assert not wrong, "\n".join(wrong)
    assert tried >= 210


async def objects_of(api: Client, headers: dict[str, str]) -> dict[str, str]:
    """One object of every kind a console page takes an id of, in the tenant of `headers`."""
    receiver = await make_receiver(api, headers=headers)
    event = await api.post("/api/v1/events", json=event_body(receiver), headers=headers)
    group = await api.post(
        "/api/v1/groups",
        json={"name": "g", "type": "gate", "version": "1", "event_receiver_ids": [receiver]},
        headers=headers,
    )
    user = await api.post(
        "/api/v1/users",
        json={"username": "mallory", "password": "correct horse battery", "roles": ["admin"]},
        headers=headers,
    )
    key = await api.post("/api/v1/api-keys", json={"name": "k", "role": "admin"}, headers=headers)
    subscription = await api.post(
        "/api/v1/subscriptions",
        json={"name": "hooks", "url": "https://hooks.example.com/in"},
        headers=headers,
    )
    hooks = f"/api/v1/subscriptions/{subscription.json()['data']}"
    queued = await api.post(f"{hooks}/replay", json={"after": 0}, headers=headers)
    assert queued.json()["data"]["queued"] >= 1  # its earlier messages: these apps send none
    delivery = (await api.get(f"{hooks}/deliveries", headers=headers)).json()["data"][0]
    return {
        "receiver_id": receiver,
        "event_id": event.json()["data"],
        "group_id": group.json()["data"],
        "user_id": user.json()["data"],
        "key_id": key.json()["data"]["id"],
        "subscription_id": subscription.json()["data"],
        "delivery_id": delivery["id"],
    }


async def test_every_console_route_that_takes_an_id_answers_404_for_another_tenants(
    app: Litestar, api: Client
) -> None:
    theirs = await objects_of(api, OTHER_HEADERS)
    await make_receiver(api)
    async with console_client(app) as http:
        console = Console(http)
        await console.sign_in(api_key=ACME_KEY)
        tried = 0
        for method, path, _ in console_routes(app):
            names = re.findall(r"\{(\w+)\}", path)
            if not names or path.startswith("/console/static/"):
                continue
            url = re.sub(r"\{(\w+)\}", lambda m: theirs[m.group(1)], path)
            if method == "GET":
                answer = await console.get(url)
            else:
                answer = await console.post(url, {"enabled": "true", "action": "disable"})
            assert answer.status_code == 404, (method, path, answer.status_code)
            assert "<h1>Not found</h1>" in answer.text
            tried += 1
        assert tried >= 19
