"""Schemathesis against the OpenAPI document the real server serves: no 5xx, and every
response matches the document (status codes, content types, bodies)."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.conftest import ServerProcess

pytestmark = pytest.mark.slow

#: The tenant admin's credential, made by the fixture (the platform administrator's
#: bootstrap key creates the tenant and its first key).
HEADERS: dict[str, str] = {}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real server with a tenant and a receiver, shared by every generated case."""
    tmp: pathlib.Path = tmp_path_factory.mktemp("schemathesis")
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
        httpx.post(
            f"{server.url}/api/v1/receivers",
            headers=HEADERS,
            json={"name": "r", "type": "t", "version": "1", "description": "", "schema": {}},
        ).raise_for_status()
        yield server
    finally:
        assert server.stop() == 0, server.output()


def test_the_served_api_honours_its_description(live: ServerProcess) -> None:
    # Driven directly rather than through schemathesis' pytest plugin, which does not
    # support pytest 9 yet: one hypothesis run per operation of the served document.
    api = schemathesis.openapi.from_url(f"{live.url}/schema/openapi.json")
    operations = []
    for result in api.get_all_operations():
        assert isinstance(result, Ok), f"the served document has an invalid operation: {result}"
        operations.append(result.ok())
    assert len(operations) >= 15
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    statuses: list[int] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        def honours(case: Any) -> None:
            if case.operation.path == "/api/v1/messages":  # the live tail: end, do not follow
                case.query = {**(case.query or {}), "follow": "false"}
            response = case.call_and_validate(base_url=live.url, headers=HEADERS, checks=checks)
            statuses.append(response.status_code)

        honours()
    # it really exercised the API: many calls, some accepted, some refused
    assert len(statuses) > 3 * len(operations)
    assert any(200 <= s < 300 for s in statuses)
    assert any(400 <= s < 500 for s in statuses)
