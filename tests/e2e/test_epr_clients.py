"""EPR's clients against a real `waypost serve`, unchanged: the exact requests they send.

- The Go client and `epr-cli` (`pkg/client`): a base URL with the credential in its
  userinfo (`http://any:KEY@host:port/epr`), which Go's net/http sends as HTTP Basic;
  whole storage structs posted to the REST routes, the group toggle as a PATCH of the
  whole group, searches through the GraphQL template, the health checks. httpx is
  given the same base URL and turns its userinfo into Basic the same way.
- epr-python's `Client(url, headers={"Authorization": ...})`: GraphQL only, at
  `urljoin(url, "api/v1/graphql/query")`, with urllib3, its dataclasses posted whole
  (`id: ""`, `created_at: ""`, `fingerprint: ""`, `event_receiver: {}`); it reads
  `data.create_*` and the last element of a search.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar
from urllib.parse import urljoin

import httpx
import pytest
import urllib3

from tests.e2e.conftest import ServerProcess

pytestmark = pytest.mark.slow

ZERO_TIME = "0001-01-01T00:00:00Z"
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}}
GO_SEARCH = "query ($obj: {input}){{{operation}({argument}: $obj) {{{fields}}}}}"


def tenant_key(server: ServerProcess) -> str:
    """A tenant and its administrator's API key, made with the bootstrap key."""
    platform = {"Authorization": f"Bearer {server.bootstrap_key()}"}
    httpx.post(
        f"{server.url}/api/v1/tenants", json={"slug": "epr", "name": "EPR"}, headers=platform
    ).raise_for_status()
    made = httpx.post(
        f"{server.url}/api/v1/api-keys",
        json={"name": "epr-clients", "role": "admin"},
        headers={**platform, "X-Tenant": "epr"},
    )
    made.raise_for_status()
    key: str = made.json()["data"]["key"]
    return key


# --- the Go client ------------------------------------------------------------------------------


def go_post(http: httpx.Client, path: str, struct: dict[str, Any]) -> str:
    """`DoPost`: the struct as JSON, `Content-Type: application/json`; `{"data": "<id>"}` back."""
    answer = http.post(
        f"/api/v1/{path}",
        content=json.dumps(struct).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 200, answer.text
    ident: str = answer.json()["data"]
    return ident


def test_the_go_client_with_credentials_in_its_url(server: ServerProcess) -> None:
    key = tenant_key(server)
    base = f"http://any:{key}@127.0.0.1:{server.port}/epr"
    with httpx.Client(base_url=base, timeout=30) as http:
        receiver = go_post(
            http,
            "receivers",
            {
                "id": "",
                "name": "foo-cli",
                "type": "epr.foo.cli",
                "version": "1.0.0",
                "description": "foo cli created foo",
                "schema": SCHEMA,
                "fingerprint": "",
                "created_at": ZERO_TIME,
            },
        )
        event = go_post(
            http,
            "events",
            {
                "id": "",
                "name": "foo",
                "version": "1.0.0",
                "release": "2024.01",
                "platform_id": "x86-64-gnu-linux-9",
                "package": "rpm",
                "description": "the foo event for foo",
                "payload": {"name": "foo"},
                "success": True,
                "created_at": ZERO_TIME,
                "event_receiver_id": receiver,
                "EventReceiver": {
                    "id": "",
                    "name": "",
                    "type": "",
                    "version": "",
                    "description": "",
                    "schema": None,
                    "fingerprint": "",
                    "created_at": ZERO_TIME,
                },
            },
        )
        group_struct = {
            "id": "",
            "name": "foo-gate",
            "type": "epr.foo.gate",
            "version": "1.0.0",
            "description": "the foo gate",
            "enabled": False,
            "event_receiver_ids": [receiver],
            "created_at": ZERO_TIME,
            "updated_at": ZERO_TIME,
        }
        group = go_post(http, "groups", group_struct)
        toggled = http.patch(
            f"/api/v1/groups/{group}",
            content=json.dumps({**group_struct, "id": group, "enabled": True}).encode(),
            headers={"Content-Type": "application/json"},
        )
        assert toggled.status_code == 200
        assert toggled.json() == {"data": group}
        assert toggled.request.headers["authorization"].startswith("Basic ")

        shown = http.get(f"/api/v1/events/{event}").json()["data"][0]
        assert shown["EventReceiver"]["id"] == receiver
        assert http.get(f"/api/v1/groups/{group}").json()["data"][0]["enabled"] is True

        search = GO_SEARCH.format(
            input="FindEventInput!",
            operation="events",
            argument="event",
            fields="id,name,version,release,platform_id,package,description,success,"
            "event_receiver_id",
        )
        found = http.post(
            "/api/v1/graphql/query",
            content=json.dumps(
                {"query": search, "variables": {"obj": {"name": "foo", "version": "1.0.0"}}}
            ).encode(),
            headers={"Content-Type": "application/json"},
        )
        assert found.status_code == 200
        assert "errors" not in found.json()
        assert [e["id"] for e in found.json()["data"]["events"]] == [event]

        for probe in ("readiness", "liveness", "status"):  # CheckReadiness & co: any 2xx
            assert http.get(f"/healthz/{probe}").is_success

    wrong = f"http://any:wp_nobody00_{'x' * 43}@127.0.0.1:{server.port}/epr"
    with httpx.Client(base_url=wrong, timeout=30) as http:
        refused = http.get(f"/api/v1/events/{event}")
        assert refused.status_code == 401
        assert "errors" in refused.json()
        assert 'Basic realm="waypost"' in refused.headers["www-authenticate"]


# --- epr-python -----------------------------------------------------------------------------------


@dataclass
class PyEvent:
    """epr-python's Event dataclass, field for field: what it posts."""

    id: str = ""
    name: str = ""
    version: str = ""
    release: str = ""
    platform_id: str = ""
    package: str = ""
    description: str = ""
    payload: dict[str, Any] = field(default_factory=dict)
    success: bool = False
    created_at: str = ""
    event_receiver_id: str = ""
    event_receiver: dict[str, Any] = field(default_factory=dict)


@dataclass
class PyReceiver:
    id: str = ""
    name: str = ""
    type: str = ""
    version: str = ""
    description: str = ""
    schema: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    created_at: str = ""


@dataclass
class PyGroup:
    id: str = ""
    name: str = ""
    type: str = ""
    version: str = ""
    description: str = ""
    enabled: bool = False
    event_receiver_ids: list[str] = field(default_factory=list)
    created_at: str = ""
    updated_at: str = ""
    fingerprint: str = ""


class PythonClient:
    """The requests epr-python's `Client` makes: the same target, body and headers."""

    SEARCH: ClassVar[dict[str, tuple[str, str]]] = {
        "events": ("FindEventInput!", "event"),
        "event_receivers": ("FindEventReceiverInput!", "event_receiver"),
        "event_receiver_groups": ("FindEventReceiverGroupInput!", "event_receiver_group"),
    }
    CREATE: ClassVar[dict[str, tuple[str, str]]] = {
        "create_event": ("CreateEventInput!", "event"),
        "create_event_receiver": ("CreateEventReceiverInput!", "event_receiver"),
        "create_event_receiver_group": ("CreateEventReceiverGroupInput!", "event_receiver_group"),
    }

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.target = urljoin(url, "/".join(["api", "v1", "graphql/query"]))
        self.headers = {"Content-Type": "application/json", **headers}
        self.http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=2.0, read=10.0))

    def _query(self, query: str, params: dict[str, Any]) -> Any:
        body = json.dumps({"query": query, "variables": {"obj": params}}).encode("utf-8")
        response = self.http.request("POST", self.target, body=body, headers=self.headers)
        assert response.status == 200, response.data
        return json.loads(response.data.decode("utf-8"))

    def search(self, operation: str, params: dict[str, Any], fields: list[str]) -> Any:
        method, op = self.SEARCH[operation]
        query = f"""query ($obj: {method}){{{operation}({op}: $obj) {{ {",".join(fields)} }}}}"""
        return self._query(query, params)

    def create(self, operation: str, params: dict[str, Any]) -> Any:
        method, op = self.CREATE[operation]
        return self._query(f"""mutation ($obj: {method}){{{operation}({op}: $obj)}}""", params)


def query_params(obj: Any) -> dict[str, Any]:
    """`as_dict_query`: the dataclass without its empty fields (what a search sends)."""
    return {k: v for k, v in asdict(obj).items() if v}


def test_epr_python_with_an_authorization_header(server: ServerProcess) -> None:
    """Without the trailing slash, urljoin drops `epr` and the client lands on
    `/api/v1/graphql/query`, which answers EPR's clients the same way."""
    key = tenant_key(server)
    for base in ("/epr/", "/epr"):
        client = PythonClient(f"{server.url}{base}", {"Authorization": f"Bearer {key}"})
        assert client.target.endswith(
            "/epr/api/v1/graphql/query"
            if base.endswith("/")
            else f":{server.port}/api/v1/graphql/query"
        )
        python_client_round_trip(client)


def python_client_round_trip(client: PythonClient) -> None:
    receiver = client.create(
        "create_event_receiver",
        asdict(
            PyReceiver(name="py", type="dev.py", version="1.0.0", description="d", schema=SCHEMA)
        ),
    )["data"]["create_event_receiver"]
    events = []
    for release in ("1", "2"):
        made = client.create(
            "create_event",
            asdict(
                PyEvent(
                    name="foo",
                    version="1.0.0",
                    release=release,
                    platform_id="linux",
                    package="rpm",
                    description="from python",
                    payload={"name": "foo"},
                    success=True,
                    event_receiver_id=receiver,
                )
            ),
        )
        events.append(made["data"]["create_event"])
    group = client.create(
        "create_event_receiver_group",
        asdict(
            PyGroup(
                name="py-gate",
                type="dev.py.gate",
                version="1.0.0",
                description="d",
                event_receiver_ids=[receiver],
            )
        ),
    )["data"]["create_event_receiver_group"]
    assert len(group) == 26
    fields = ["id", "name", "version", "release", "platform_id", "package", "description",
              "success", "event_receiver_id"]  # fmt: skip
    found = client.search("events", query_params(PyEvent(name="foo", version="1.0.0")), fields)
    assert found["data"]["events"][-1]["id"] == events[-1]  # it reads the last as the latest
    receivers = client.search(
        "event_receivers",
        query_params(PyReceiver(name="py")),
        ["id", "name", "type", "version", "description", "schema", "fingerprint", "created_at"],
    )
    assert receivers["data"]["event_receivers"][-1]["schema"] == SCHEMA
    groups = client.search(
        "event_receiver_groups",
        query_params(PyGroup(name="py-gate")),
        ["id", "name", "type", "version", "description", "enabled", "created_at"],
    )
    assert groups["data"]["event_receiver_groups"][-1]["enabled"] is False
