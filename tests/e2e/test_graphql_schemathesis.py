"""Schemathesis' GraphQL mode against the real server: queries and mutations generated from
the served schema (introspection) never get a 5xx, nor an INTERNAL error."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.core.result import Ok
from schemathesis.graphql import nodes

from tests.e2e.conftest import ServerProcess

pytestmark = pytest.mark.slow

HEADERS: dict[str, str] = {}

# The schema's own scalars: JSON as a JSON-encoded string (an object, or anything at all,
# which must be refused cleanly) or text that is not JSON; Time as RFC 3339 or not.
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
schemathesis.graphql.scalar(
    "JSON",
    (_JSON_VALUES.map(json.dumps) | st.text(max_size=10)).map(nodes.String),
)
schemathesis.graphql.scalar(
    "Time",
    (st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat) | st.text(max_size=10)).map(
        nodes.String
    ),
)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real server with a tenant, its admin key, a receiver, an event and a group."""
    tmp: pathlib.Path = tmp_path_factory.mktemp("graphql-fuzz")
    server = ServerProcess({"WAYPOST__DATABASE__URL": f"sqlite:///{tmp / 'fuzz.db'}"}, tmp / "log")
    try:
        server.wait_ready()
        platform = {"Authorization": f"Bearer {server.bootstrap_key()}"}
        httpx.post(
            f"{server.url}/api/v1/tenants", json={"slug": "fuzz", "name": "Fuzz"}, headers=platform
        ).raise_for_status()
        made = httpx.post(
            f"{server.url}/api/v1/api-keys",
            json={"name": "fuzz", "role": "admin"},
            headers={**platform, "X-Tenant": "fuzz"},
        )
        made.raise_for_status()
        HEADERS["Authorization"] = f"Bearer {made.json()['data']['key']}"
        receiver = httpx.post(
            f"{server.url}/api/v1/receivers",
            headers=HEADERS,
            json={"name": "r", "type": "t", "version": "1", "description": "", "schema": {}},
        )
        receiver.raise_for_status()
        ident = receiver.json()["data"]
        httpx.post(
            f"{server.url}/api/v1/groups",
            headers=HEADERS,
            json={"name": "g", "type": "t", "version": "1", "event_receiver_ids": [ident]},
        ).raise_for_status()
        yield server
    finally:
        assert server.stop() == 0, server.output()


@pytest.mark.parametrize("path", ["/api/v1/graphql", "/epr/api/v1/graphql/query"])
def test_generated_graphql_requests_never_get_a_5xx(live: ServerProcess, path: str) -> None:
    schema = schemathesis.graphql.from_url(f"{live.url}{path}", headers=HEADERS)
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the served schema has an invalid operation: {result}"
        operations.append(result.ok())
    assert len(operations) >= 18  # 13 queries and 5 mutations
    statuses: list[int] = []
    codes: set[str] = set()
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
        def never_fails(case: Any) -> None:
            response = case.call(headers=HEADERS)
            # Schemathesis' own GraphQL check calls every resolver error a server error
            # (a not-found id too): the contract here is HTTP's, no 5xx, and no error of
            # ours that is INTERNAL (a resolver's crash, or an answer breaking the schema).
            statuses.append(response.status_code)
            assert response.status_code < 500, response.text
            body = response.json()
            assert isinstance(body, dict)
            for error in body.get("errors") or []:
                assert error["extensions"]["code"] != "INTERNAL", error
                codes.add(error["extensions"]["code"])

        never_fails()
    assert len(statuses) > 2 * len(operations)
    assert all(status < 500 for status in statuses)
    assert codes, "every generated request passed: the generator did not probe the refusals"
