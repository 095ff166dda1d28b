"""GraphQL tests: the real app (tests.http's fixtures) and a small client of its endpoint."""

from __future__ import annotations

from typing import Any

# The HTTP suite's fixtures: the real app from the real bootstrap, tenants and keys.
from tests.http.conftest import (  # noqa: F401
    HEADERS,
    Client,
    api,
    app,
    client,
    clock,
    delivering_api,
    identity,
)

GRAPHQL = "/api/v1/graphql"


async def gql(
    http: Client,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    headers: dict[str, str] | None = None,
    path: str = GRAPHQL,
    status: int = 200,
) -> dict[str, Any]:
    """POST a GraphQL request; its decoded answer (asserting the HTTP status)."""
    body: dict[str, Any] = {"query": query}
    if variables is not None:
        body["variables"] = variables
    answer = await http.post(path, json=body, headers=headers or HEADERS)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    decoded: dict[str, Any] = answer.json()
    return decoded


def codes(answer: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in answer.get("errors", [])]
