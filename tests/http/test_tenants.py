"""Tenants: the platform administrators' routes (no X-Tenant needed)."""

from __future__ import annotations

import pytest

from tests.http.conftest import HEADERS, Client, assert_problem

pytestmark = pytest.mark.anyio


async def test_create_answers_201_with_the_slug_and_its_address(client: Client) -> None:
    answer = await client.post("/api/v1/tenants", json={"slug": "  Acme-Corp ", "name": "Acme"})
    assert answer.status_code == 201
    assert answer.json() == {"data": "acme-corp"}
    assert answer.headers["location"] == "/api/v1/tenants/acme-corp"
    assert answer.headers["content-type"] == "application/json"


async def test_read_list_and_patch(api: Client) -> None:
    one = await api.get("/api/v1/tenants/ACME")
    assert one.status_code == 200
    tenant = one.json()["data"]
    assert set(tenant) == {"id", "slug", "name", "disabled", "created_at", "updated_at"}
    assert (tenant["slug"], tenant["name"], tenant["disabled"]) == ("acme", "Acme", False)

    listed = await api.get("/api/v1/tenants")
    assert listed.status_code == 200
    assert [t["slug"] for t in listed.json()["data"]] == ["globex", "acme"]
    assert listed.json()["next_cursor"] is None

    patched = await api.patch("/api/v1/tenants/acme", json={"name": "Acme Inc."})
    assert patched.status_code == 200
    assert patched.json()["data"]["name"] == "Acme Inc."
    assert patched.json()["data"]["updated_at"] > tenant["updated_at"]


async def test_list_pages_with_a_cursor(api: Client) -> None:
    first = await api.get("/api/v1/tenants", params={"limit": 1, "order": "asc"})
    assert [t["slug"] for t in first.json()["data"]] == ["acme"]
    cursor = first.json()["next_cursor"]
    second = await api.get("/api/v1/tenants", params={"limit": 1, "order": "asc", "cursor": cursor})
    assert [t["slug"] for t in second.json()["data"]] == ["globex"]
    assert second.json()["next_cursor"] is None


async def test_a_disabled_tenant_is_refused_at_once_and_can_come_back(api: Client) -> None:
    assert (await api.get("/api/v1/receivers", headers=HEADERS)).status_code == 200
    off = await api.patch("/api/v1/tenants/acme", json={"disabled": True})
    assert off.status_code == 200
    assert off.json()["data"]["disabled"] is True
    refused = await api.get("/api/v1/receivers", headers=HEADERS)
    assert_problem(refused, 401)
    assert refused.headers["www-authenticate"].startswith("Bearer")
    await api.patch("/api/v1/tenants/acme", json={"disabled": False})
    assert (await api.get("/api/v1/receivers", headers=HEADERS)).status_code == 200


async def test_a_taken_slug_is_a_conflict(api: Client) -> None:
    answer = await api.post("/api/v1/tenants", json={"slug": "ACME", "name": "Again"})
    assert_problem(answer, 409)


@pytest.mark.parametrize(
    ("slug", "message"),
    [
        ("ab", "3 to 63"),
        ("-abc", "start and end"),
        ("a--b", "'--'"),
        ("a_b!", "may contain only"),
        ("admin", "reserved"),
        ("healthz", "reserved"),
    ],
)
async def test_a_bad_or_reserved_slug_is_422(client: Client, slug: str, message: str) -> None:
    answer = await client.post("/api/v1/tenants", json={"slug": slug, "name": "X"})
    body = assert_problem(answer, 422, "/slug")
    assert any(message in error["message"] for error in body["errors"])


async def test_every_problem_of_a_tenant_is_listed(client: Client) -> None:
    answer = await client.post("/api/v1/tenants", json={"slug": "a--", "name": " "})
    body = assert_problem(answer, 422, "/slug", "/name")
    assert len(body["errors"]) >= 3


async def test_unknown_tenant_is_404(client: Client) -> None:
    assert_problem(await client.get("/api/v1/tenants/nobody"), 404)
    assert_problem(await client.get("/api/v1/tenants/NOT A SLUG"), 404)
    assert_problem(await client.patch("/api/v1/tenants/nobody", json={"name": "x"}), 404)


async def test_patch_body_is_checked(api: Client) -> None:
    assert_problem(
        await api.patch("/api/v1/tenants/acme", json={"disabled": "yes"}), 400, "/disabled"
    )
    assert_problem(await api.patch("/api/v1/tenants/acme", json={"slug": "new"}), 400, "/slug")
    assert_problem(await api.patch("/api/v1/tenants/acme", json={"name": ""}), 422, "/name")
