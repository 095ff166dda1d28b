"""Access control, generated from the app's own routes: every route declares a permission,
every role is allowed exactly what ROLE_PERMISSIONS grants, and another tenant's id is a 404.

Nothing here lists routes by hand: a new route is walked, tried with every role and (if it
takes an id) with another tenant's id, as soon as it exists.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute

from core.domain.access import ROLE_PERMISSIONS, Permission, Role
from entrypoints.bootstrap import create_app
from entrypoints.http.auth import PERMISSION
from entrypoints.settings import DatabaseSettings, Settings
from tests.http.conftest import (
    HEADERS,
    OTHER_HEADERS,
    PLATFORM,
    TENANT,
    Client,
    event_body,
    make_receiver,
)

pytestmark = pytest.mark.anyio

#: The only routes anyone may call without a credential: health, the metrics (which may be
#: restricted to networks), the JWKS, and the token endpoint and revocation (whose
#: credential is in the body).
PUBLIC = {
    ("GET", "/healthz/live"),
    ("GET", "/healthz/ready"),
    ("GET", "/metrics"),
    ("GET", "/.well-known/jwks.json"),
    ("POST", "/api/v1/auth/token"),
    ("POST", "/api/v1/auth/revoke"),
    # GraphiQL (a page and its scripts: no data) and EPR's health probes
    ("GET", "/api/v1/graphql"),
    ("GET", "/api/v1/graphql/assets/{name}"),
    ("GET", "/epr/api/v1/graphql"),
    ("GET", "/epr/healthz/liveness"),
    ("GET", "/epr/healthz/readiness"),
    ("GET", "/epr/healthz/status"),
}
#: The routes whose every field asks for its own permission (GraphQL): the matrix of their
#: fields is tests/gql/test_permissions.py, generated from the schema.
FIELD_PERMISSIONS = {
    ("POST", "/api/v1/graphql"),
    ("POST", "/api/v1/graphql/query"),
    ("POST", "/epr/api/v1/graphql/query"),
}
#: The API description (Litestar's own handlers), public too.
DOCS = re.compile(r"/schema(/.*)?")
SOME_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
NVRPP = {"name": "a", "version": "1", "release": "1", "platform_id": "x", "package": "rpm"}


def handlers(app: Litestar) -> Iterator[tuple[str, str, HTTPRouteHandler]]:
    """(method, path, handler) of every API route the app serves, CORS preflights aside
    (the console's pages have a walk of their own: tests/http/test_console_access.py)."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or route.path_format.startswith("/console"):
            continue
        for handler in route.route_handlers:
            for method in sorted(handler.http_methods):
                if method != "OPTIONS":
                    yield method, route.path_format, handler


def protected(app: Litestar) -> list[tuple[str, str, Permission]]:
    found = []
    for method, path, handler in handlers(app):
        permission = handler.opt.get(PERMISSION)
        if isinstance(permission, Permission):
            found.append((method, path, permission))
    return sorted(found)


APP = create_app(Settings(database=DatabaseSettings(url="memory://")))
ROUTES = protected(APP)


def test_every_route_declares_a_permission_or_is_on_the_public_list() -> None:
    public = set()
    per_field = set()
    for method, path, handler in handlers(APP):
        permission = handler.opt.get(PERMISSION)
        if handler.opt.get("public"):
            assert permission is None, (method, path)
            public.add((method, path))
        elif handler.opt.get("field_permissions"):
            assert permission is None, (method, path)
            per_field.add((method, path))
        elif not DOCS.fullmatch(path):
            assert isinstance(permission, Permission), f"{method} {path} declares no permission"
    assert public == PUBLIC
    assert per_field == FIELD_PERMISSIONS
    assert len(ROUTES) >= 25


async def test_options_answers_allow_without_a_credential(api: Client) -> None:
    answer = await api.options("/api/v1/events", headers={"Authorization": ""})
    assert answer.status_code == 204
    assert "OPTIONS" in answer.headers["allow"]
    assert not answer.content


async def test_an_undeclared_route_answers_403(app: Litestar, client: Client) -> None:
    """The permission check fails closed: the walk above is not the only line of defence."""
    from litestar import get

    from entrypoints.http.auth import AuthenticationMiddleware

    @get("/undeclared", middleware=[AuthenticationMiddleware])
    async def undeclared() -> str:
        return "leaked"  # pragma: no cover - never reached

    app.register(undeclared)
    answer = await client.get("/undeclared")
    assert answer.status_code == 403
    assert "leaked" not in answer.text


# --- the route x role matrix ------------------------------------------------------------------

#: Who tries each route: the four tenant roles in `acme`, a platform administrator acting
#: on the platform, and one acting in `acme` (X-Tenant).
PRINCIPALS: dict[str, Role] = {
    "admin": Role.ADMIN,
    "event_manager": Role.EVENT_MANAGER,
    "event_viewer": Role.EVENT_VIEWER,
    "event_producer": Role.EVENT_PRODUCER,
    "platform_admin": Role.PLATFORM_ADMIN,
    "platform_admin+X-Tenant": Role.PLATFORM_ADMIN,
}


def expected(permission: Permission, who: str) -> bool:
    return permission in ROLE_PERMISSIONS[PRINCIPALS[who]]


def matrix() -> str:
    """The matrix as a table (the closing note prints it): y allowed, . refused (403)."""
    columns = list(PRINCIPALS)
    lines = ["| route | permission | " + " | ".join(columns) + " |"]
    lines.append("|---|---|" + "---|" * len(columns))
    for method, path, permission in ROUTES:
        cells = ["y" if expected(permission, who) else "." for who in columns]
        lines.append(f"| {method} {path} | {permission} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: TENANT if m.group(1) == "slug" else SOME_ID, path)


async def credentials(api: Client) -> dict[str, dict[str, str]]:
    made = {"admin": HEADERS, "platform_admin": PLATFORM}
    made["platform_admin+X-Tenant"] = {**PLATFORM, "X-Tenant": TENANT}
    for who in ("event_manager", "event_viewer", "event_producer"):
        answer = await api.post(
            "/api/v1/api-keys", json={"name": who, "role": who}, headers=HEADERS
        )
        assert answer.status_code == 201, answer.text
        made[who] = {"Authorization": f"Bearer {answer.json()['data']['key']}"}
    return made


async def test_every_route_allows_exactly_the_roles_that_hold_its_permission(
    api: Client,
) -> None:
    who_may = await credentials(api)
    wrong: list[str] = []
    for method, path, permission in ROUTES:
        for who, headers in who_may.items():
            answer = await api.request(
                method,
                concrete(path),
                headers=headers,
                # follow=false: the live tail sends what is there and ends
                params={**NVRPP, "follow": "false"} if method == "GET" else None,
                json={} if method in {"POST", "PATCH"} else None,
            )
            allowed = answer.status_code not in {401, 403}
            if allowed != expected(permission, who):
                wrong.append(f"{who} {method} {path}: {answer.status_code} {answer.text[:80]}")
    assert not wrong, "\n".join(wrong)


# --- another tenant's ids ---------------------------------------------------------------------


async def objects_of(api: Client, headers: dict[str, str]) -> dict[str, str]:
    """One object of every kind a route takes an id of, made in the tenant of `headers`."""
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
    assert subscription.status_code == 201, subscription.text
    subscription_id = subscription.json()["data"]
    replayed = await api.post(  # a delivery, made without sending anything
        f"/api/v1/subscriptions/{subscription_id}/replay", json={"after": 0}, headers=headers
    )
    assert replayed.status_code == 202, replayed.text
    deliveries = await api.get(
        f"/api/v1/subscriptions/{subscription_id}/deliveries", headers=headers
    )
    made = {
        "receiver_id": receiver,
        "event_id": event.json()["data"],
        "group_id": group.json()["data"],
        "user_id": user.json()["data"],
        "key_id": key.json()["data"]["id"],
        "subscription_id": subscription_id,
        "delivery_id": deliveries.json()["data"][0]["id"],
    }
    assert all(isinstance(v, str) and len(v) == 26 for v in made.values()), made
    return made


def body_for(method: str, path: str) -> Any:
    if path.endswith("/replay"):
        return {"after": 0}  # well-formed: the 404 is about the id, not the body
    if path.startswith("/epr/") and method == "PATCH":
        return {"enabled": True}  # EPR's toggle needs its one field
    return {} if method in {"POST", "PATCH"} else None


async def test_every_route_that_takes_an_id_answers_404_for_another_tenants(api: Client) -> None:
    theirs = await objects_of(api, OTHER_HEADERS)
    tried = 0
    for method, path, _ in ROUTES:
        names = re.findall(r"\{(\w+)\}", path)
        # tenants and metrics (by name): the platform's, not a tenant's
        if not names or names in (["slug"], ["name"]):
            continue
        assert set(names) <= set(theirs), f"{path}: no object made for {names}"
        url = re.sub(r"\{(\w+)\}", lambda m: theirs[m.group(1)], path)
        answer = await api.request(
            method, url, headers=HEADERS, params=NVRPP, json=body_for(method, path)
        )
        assert answer.status_code == 404, (method, path, answer.text)
        if path.startswith("/epr/"):  # EPR's envelope and words
            [message] = answer.json()["errors"]
            assert message.startswith("object not found: "), message
        else:
            assert answer.json()["detail"].startswith("No ")
        if method == "GET":  # it does exist, in its own tenant
            mine = await api.request(method, url, headers=OTHER_HEADERS, params=NVRPP)
            assert mine.status_code == 200, (method, path, mine.text)
        tried += 1
    assert tried >= 12


async def test_a_tenant_never_sees_another_tenants_lists(api: Client) -> None:
    await objects_of(api, OTHER_HEADERS)
    for path in ("/api/v1/users", "/api/v1/api-keys"):
        listed = (await api.get(path, headers=HEADERS)).json()["data"]
        assert all(item["id"] for item in listed)
        theirs = (await api.get(path, headers=OTHER_HEADERS)).json()["data"]
        assert not {i["id"] for i in listed} & {i["id"] for i in theirs}
    acme_audit = (await api.get("/api/v1/audit", headers=HEADERS)).json()["data"]
    globex_audit = (await api.get("/api/v1/audit", headers=OTHER_HEADERS)).json()["data"]
    assert globex_audit
    assert not {r["id"] for r in acme_audit} & {r["id"] for r in globex_audit}
