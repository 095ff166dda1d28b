"""The API description and the health probes."""

from __future__ import annotations

import pytest

from tests.http.conftest import Client, asgi_client, make_app, platform_identity
from tests.http.test_problems import LEAK, BrokenReads

pytestmark = pytest.mark.anyio

ROUTES = {
    ("post", "/api/v1/tenants"),
    ("get", "/api/v1/tenants"),
    ("get", "/api/v1/tenants/{slug}"),
    ("patch", "/api/v1/tenants/{slug}"),
    ("post", "/api/v1/receivers"),
    ("get", "/api/v1/receivers"),
    ("get", "/api/v1/receivers/{receiver_id}"),
    ("post", "/api/v1/events"),
    ("post", "/api/v1/events/batch"),
    ("get", "/api/v1/events"),
    ("get", "/api/v1/events/{event_id}"),
    ("post", "/api/v1/groups"),
    ("get", "/api/v1/groups"),
    ("get", "/api/v1/groups/{group_id}"),
    ("patch", "/api/v1/groups/{group_id}"),
    ("delete", "/api/v1/groups/{group_id}"),
    ("get", "/api/v1/groups/{group_id}/status"),
    ("get", "/api/v1/groups/{group_id}/completions"),
    ("get", "/api/v1/messages"),
    ("post", "/api/v1/auth/token"),
    ("post", "/api/v1/auth/revoke"),
    ("get", "/.well-known/jwks.json"),
    ("post", "/api/v1/users"),
    ("get", "/api/v1/users"),
    ("get", "/api/v1/users/{user_id}"),
    ("patch", "/api/v1/users/{user_id}"),
    ("delete", "/api/v1/users/{user_id}"),
    ("post", "/api/v1/api-keys"),
    ("get", "/api/v1/api-keys"),
    ("get", "/api/v1/api-keys/{key_id}"),
    ("delete", "/api/v1/api-keys/{key_id}"),
    ("get", "/api/v1/audit"),
    ("post", "/api/v1/subscriptions"),
    ("get", "/api/v1/subscriptions"),
    ("get", "/api/v1/subscriptions/{subscription_id}"),
    ("patch", "/api/v1/subscriptions/{subscription_id}"),
    ("delete", "/api/v1/subscriptions/{subscription_id}"),
    ("get", "/api/v1/subscriptions/{subscription_id}/secret"),
    ("post", "/api/v1/subscriptions/{subscription_id}/secret/rotate"),
    ("post", "/api/v1/subscriptions/{subscription_id}/ping"),
    ("post", "/api/v1/subscriptions/{subscription_id}/replay"),
    ("post", "/api/v1/subscriptions/{subscription_id}/redrive"),
    ("get", "/api/v1/subscriptions/{subscription_id}/deliveries"),
    ("get", "/api/v1/subscriptions/{subscription_id}/deliveries/{delivery_id}"),
    ("get", "/healthz/live"),
    ("get", "/healthz/ready"),
    ("get", "/metrics"),
    ("get", "/api/v1/metrics"),
    ("get", "/api/v1/metrics/summary"),
    ("get", "/api/v1/metrics/{name}"),
}
PUBLIC = {
    ("post", "/api/v1/auth/token"),
    ("post", "/api/v1/auth/revoke"),
    ("get", "/.well-known/jwks.json"),
    ("get", "/healthz/live"),
    ("get", "/healthz/ready"),
    ("get", "/metrics"),
}


async def test_the_openapi_document_lists_every_route(client: Client) -> None:
    answer = await client.get("/schema/openapi.json")
    assert answer.status_code == 200
    document = answer.json()
    assert document["openapi"].startswith("3.1")
    listed = {
        (method, path)
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "post", "patch", "delete", "put"}
    }
    assert listed == ROUTES
    schemas = document["components"]["schemas"]
    assert {"Problem", "RecordEvent", "EventPage", "IdData"} <= set(schemas)
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    basic = document["components"]["securitySchemes"]["basic"]
    assert (basic["type"], basic["scheme"]) == ("http", "basic")
    for method, path in ROUTES:
        operation = document["paths"][path][method]
        if (method, path) in PUBLIC:
            assert "security" not in operation, (method, path)
        else:
            assert operation["security"] == [{"bearer": []}, {"basic": []}], (method, path)
            assert {"401", "403"} <= set(operation["responses"]), (method, path)
    events = document["paths"]["/api/v1/events"]
    problem = events["post"]["responses"]["422"]["content"]["application/problem+json"]
    assert problem["schema"] == {"$ref": "#/components/schemas/Problem"}
    body = events["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/RecordEvent"}
    limits = {p["name"]: p for p in events["get"]["parameters"]}
    assert (limits["limit"]["schema"]["minimum"], limits["limit"]["schema"]["maximum"]) == (1, 1000)


async def test_the_interactive_page_is_served(client: Client) -> None:
    answer = await client.get("/schema")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert "swagger-ui" in answer.text


async def test_live_and_ready(client: Client) -> None:
    live = await client.get("/healthz/live")
    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    ready = await client.get("/healthz/ready")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ok",
        "components": {
            "store": {"status": "ok", "detail": "a read transaction works"},
            "rate_limits": {"status": "ok", "detail": "per server process (no Redis configured)"},
        },
    }


async def test_ready_is_503_when_the_store_cannot_read() -> None:
    async with asgi_client(make_app(await platform_identity(), store=BrokenReads())) as client:
        live = await client.get("/healthz/live")
        ready = await client.get("/healthz/ready")
    assert live.status_code == 200
    assert ready.status_code == 503
    assert ready.headers["retry-after"]
    body = ready.json()
    assert body["status"] == "unavailable"
    assert body["components"]["store"]["status"] == "unavailable"
    assert LEAK not in ready.text
