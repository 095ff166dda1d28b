"""GraphQL beyond EPR: pages with cursors, gates and their completions, fingerprints; the
error codes; the request's shape; the GraphiQL page and its local assets."""

from __future__ import annotations

import base64
import gzip
import hashlib
import pathlib
import re

import pytest
from litestar import Litestar

from tests.gql.conftest import GRAPHQL, codes, gql
from tests.http.conftest import (
    ACME_KEY,
    HEADERS,
    Client,
    ManualClock,
    make_receiver,
    record,
    services_of,
)
from tests.http.test_problems import LEAK

pytestmark = pytest.mark.anyio

NVRPP = {"name": "app", "version": "1.0", "release": "1", "platform_id": "x86_64", "package": "rpm"}
ASSETS = pathlib.Path(__file__).resolve().parents[2] / "entrypoints/http/gql/graphiql"


def nvrpp_literal() -> str:
    return "{" + ", ".join(f'{k}: "{v}"' for k, v in NVRPP.items()) + "}"


async def test_pages_follow_their_cursor_and_share_them_with_rest(api: Client) -> None:
    receiver = await make_receiver(api)
    made = [await record(api, receiver, release=str(n)) for n in range(5)]
    seen: list[str] = []
    cursor = None
    query = (
        "query ($c: String) { events_page(limit: 2, cursor: $c, order: asc) "
        "{ items { id } next_cursor } }"
    )
    while True:
        page = (await gql(api, query, {"c": cursor}))["data"]["events_page"]
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == made
    rest = await api.get("/api/v1/events", params={"limit": 2}, headers=HEADERS)
    page = await gql(
        api,
        "query ($c: String) { events_page(limit: 2, cursor: $c) { items { id } } }",
        {"c": rest.json()["next_cursor"]},
    )
    assert [i["id"] for i in page["data"]["events_page"]["items"]] == made[::-1][2:4]
    refused = await gql(api, '{ events_page(cursor: "garbage") { next_cursor } }')
    assert codes(refused) == ["BAD_REQUEST"]
    assert refused["errors"][0]["extensions"]["errors"][0]["field"] == "cursor"


async def test_page_filters_match_the_rest_lists(api: Client, clock: ManualClock) -> None:
    receiver = await make_receiver(api)
    failed = await record(api, receiver, success=False)
    passed = await record(api, receiver)
    found = await gql(api, "{ events_page(where: {success: false}) { items { id success } } }")
    assert found["data"]["events_page"]["items"] == [{"id": failed, "success": False}]
    created = (await api.get(f"/api/v1/events/{passed}", headers=HEADERS)).json()["data"]
    since = await gql(
        api,
        "query ($t: Time) { events_page(where: {since: $t}) { items { id } } }",
        {"t": created["created_at"]},
    )
    assert [i["id"] for i in since["data"]["events_page"]["items"]] == [passed]
    bad_time = await gql(api, '{ events_page(where: {since: "yesterday"}) { next_cursor } }')
    assert codes(bad_time) == ["GRAPHQL_VALIDATION_FAILED"]
    groups = await gql(
        api, "{ event_receiver_groups_page(where: {enabled: true}) { items { id } } }"
    )
    assert groups["data"]["event_receiver_groups_page"]["items"] == []


async def test_a_gate_its_status_and_its_completions(api: Client) -> None:
    a, b = await make_receiver(api, "a"), await make_receiver(api, "b")
    made = await api.post(
        "/api/v1/groups",
        json={"name": "gate", "type": "release", "version": "1", "event_receiver_ids": [a, b]},
        headers=HEADERS,
    )
    group = made.json()["data"]
    status_query = (
        f'{{ event_receiver_group_status(id: "{group}", nvrpp: {nvrpp_literal()}) '
        "{ complete members { event_receiver_id passing latest_event { id success } } } }"
    )
    before = (await gql(api, status_query))["data"]["event_receiver_group_status"]
    assert before == {
        "complete": False,
        "members": [
            {"event_receiver_id": a, "passing": False, "latest_event": None},
            {"event_receiver_id": b, "passing": False, "latest_event": None},
        ],
    }
    first, last = await record(api, a), await record(api, b)
    after = (await gql(api, status_query))["data"]["event_receiver_group_status"]
    assert after["complete"] is True
    assert [m["latest_event"]["id"] for m in after["members"]] == [first, last]
    completions = await gql(
        api,
        f'{{ event_receiver_group_completions(id: "{group}", where: {{name: "app"}}) '
        "{ items { group_id name release triggering_event_id member_event_ids completed_at } "
        "next_cursor } }",
    )
    [fired] = completions["data"]["event_receiver_group_completions"]["items"]
    assert fired["group_id"] == group
    assert fired["triggering_event_id"] == last
    assert fired["member_event_ids"] == [first, last]
    assert fired["completed_at"].endswith("Z")
    blank = await gql(
        api,
        f'{{ event_receiver_group_status(id: "{group}", nvrpp: {{name: " ", version: "1", '
        'release: "1", platform_id: "x", package: "p"}) { complete } }',
    )
    assert codes(blank) == ["INVALID"]
    assert blank["errors"][0]["extensions"]["errors"][0]["field"] == "nvrpp/name"


async def test_receivers_and_groups_by_fingerprint(api: Client) -> None:
    receiver = await make_receiver(api)
    other = await make_receiver(api, "other")
    group = (
        await api.post(
            "/api/v1/groups",
            json={"name": "g", "type": "t", "version": "1", "event_receiver_ids": [receiver]},
            headers=HEADERS,
        )
    ).json()["data"]
    fingerprint = (await api.get(f"/api/v1/receivers/{receiver}", headers=HEADERS)).json()["data"][
        "fingerprint"
    ]
    found = await gql(
        api,
        "query ($f: String!) { event_receivers_by_fingerprint(fingerprint: $f) { id } "
        "event_receiver_groups_by_fingerprint(fingerprint: $f) { id event_receiver_ids } }",
        {"f": fingerprint},
    )
    assert found["data"] == {
        "event_receivers_by_fingerprint": [{"id": receiver}],
        "event_receiver_groups_by_fingerprint": [{"id": group, "event_receiver_ids": [receiver]}],
    }
    assert other not in str(found)
    rest = await api.get("/api/v1/receivers", params={"fingerprint": fingerprint}, headers=HEADERS)
    assert [r["id"] for r in rest.json()["data"]] == [receiver]
    none = await gql(api, '{ event_receivers_by_fingerprint(fingerprint: "0") { id } }')
    assert none == {"data": {"event_receivers_by_fingerprint": []}}


async def test_mutations_refuse_with_codes_and_field_errors(api: Client) -> None:
    receiver = await make_receiver(api)
    bad = await gql(
        api,
        "mutation ($e: CreateEventInput!) { create_event(event: $e) }",
        {
            "e": {
                "name": "app",
                "version": "1",
                "release": "1",
                "platform_id": "x",
                "package": "p",
                "description": "",
                "payload": {"build": "one"},
                "event_receiver_id": receiver,
                "success": True,
            }
        },
    )
    assert codes(bad) == ["INVALID"]
    assert bad["errors"][0]["message"].startswith("invalid input: ")
    assert bad["errors"][0]["extensions"]["errors"][0]["field"] == "/payload/build"
    assert bad["data"] is None
    not_object = await gql(
        api,
        'mutation { create_event_receiver(event_receiver: {name: "n", type: "t", '
        'version: "1", description: "", schema: "[1, 2]"}) }',
    )
    assert codes(not_object) == ["INVALID"]
    again = (
        'mutation { create_event_receiver(event_receiver: {name: "build", type: "ci.build", '
        'version: "1", description: "other", schema: "{}"}) }'
    )
    assert codes(await gql(api, again)) == ["CONFLICT"]
    unknown = await gql(
        api, 'mutation { set_event_receiver_group_enabled(id: "01ARZ3NDEKTSV4RRFFQ69G5FAV") }'
    )
    assert codes(unknown) == ["NOT_FOUND"]
    not_json = await gql(
        api,
        'mutation { create_event_receiver(event_receiver: {name: "n", type: "t", '
        'version: "1", description: "", schema: "{not json"}) }',
    )
    assert codes(not_json) == ["GRAPHQL_VALIDATION_FAILED"]


async def test_groups_toggle_and_show_their_members(api: Client) -> None:
    a, b = await make_receiver(api, "a"), await make_receiver(api, "b")
    made = await gql(
        api,
        'mutation { create_event_receiver_group(event_receiver_group: {name: "g", type: "t", '
        f'version: "1", description: "", enabled: false, event_receiver_ids: ["{b}", "{a}"]}}) }}',
    )
    group = made["data"]["create_event_receiver_group"]
    done = await gql(api, f'mutation {{ set_event_receiver_group_enabled(id: "{group}") }}')
    assert done == {"data": {"set_event_receiver_group_enabled": group}}
    shown = await gql(
        api,
        f'{{ event_receiver_groups_by_id(id: "{group}") '
        "{ enabled event_receivers { id name } } }",
    )
    assert shown["data"]["event_receiver_groups_by_id"] == [
        {"enabled": True, "event_receivers": [{"id": b, "name": "b"}, {"id": a, "name": "a"}]}
    ]
    await gql(api, f'mutation {{ set_event_receiver_group_disabled(id: "{group}") }}')
    off = await gql(api, f'{{ event_receiver_groups_by_id(id: "{group}") {{ enabled }} }}')
    assert off["data"]["event_receiver_groups_by_id"] == [{"enabled": False}]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{not json",
        b"[]",
        b'{"variables": {}}',
        b'{"query": 12}',
        b'{"query": "{}", "variables": []}',
    ],
)
async def test_a_body_that_is_no_graphql_request_is_a_400(api: Client, body: bytes) -> None:
    answer = await api.post(
        GRAPHQL, content=body, headers={**HEADERS, "Content-Type": "application/json"}
    )
    assert answer.status_code == 400, answer.text
    assert codes(answer.json()) == ["BAD_REQUEST"]


async def test_request_errors_name_what_is_wrong(api: Client) -> None:
    assert codes(await gql(api, "{ events_page {")) == ["GRAPHQL_PARSE_FAILED"]
    assert codes(await gql(api, "{ nothing }")) == ["GRAPHQL_VALIDATION_FAILED"]
    # words that name a limit, in a query, are not the limit's refusal
    assert codes(await gql(api, "{ introspection }")) == ["GRAPHQL_VALIDATION_FAILED"]
    assert codes(await gql(api, "{ tokens tokens")) == ["GRAPHQL_PARSE_FAILED"]
    wrong = await gql(api, "query ($n: Int) { events_page(limit: $n) { next_cursor } }", {"n": "x"})
    assert codes(wrong) == ["BAD_USER_INPUT"]
    assert "data" not in wrong
    two = await gql(api, "query A { __typename } query B { __typename }")
    assert codes(two) == ["BAD_USER_INPUT"]  # which operation: execution says


async def test_basic_credentials_work_here_too(api: Client) -> None:
    token = base64.b64encode(f"any:{ACME_KEY}".encode()).decode()
    answer = await gql(
        api, "{ events_page { next_cursor } }", headers={"Authorization": f"Basic {token}"}
    )
    assert answer == {"data": {"events_page": {"next_cursor": None}}}
    refused = await api.post(
        GRAPHQL, json={"query": "{ __typename }"}, headers={"Authorization": ""}
    )
    assert refused.status_code == 401


async def test_an_internal_failure_says_nothing_but_an_error_id(
    api: Client, app: Litestar, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: object) -> None:
        raise RuntimeError(LEAK)

    monkeypatch.setattr(services_of(app).events, "list", broken)
    answer = await gql(api, "{ events_page { next_cursor } }")
    [error] = answer["errors"]
    assert error["message"] == "internal error"
    assert error["extensions"]["code"] == "INTERNAL"
    assert re.fullmatch(r"[0-9a-f]{16}", error["extensions"]["error_id"])
    assert LEAK not in str(answer)
    assert error["extensions"]["error_id"] in caplog.text


# --- GraphiQL ------------------------------------------------------------------------------------


def asset_sums() -> dict[str, str]:
    """The README's table: file -> sha256 of the uncompressed npm file."""
    table = (ASSETS / "README.md").read_text()
    return dict(re.findall(r"^\| `([^`]+)\.gz` \|.*\| `([0-9a-f]{64})` \|$", table, re.M))


async def test_graphiql_is_served_from_here_with_its_own_policy(
    app: Litestar, client: Client
) -> None:
    page = await client.get(GRAPHQL, headers={})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self';" in policy
    assert "connect-src 'self'" in policy
    assert page.headers.get_list("content-security-policy") == [policy]
    assert 'data-endpoint="/api/v1/graphql"' in page.text
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources
    assert all(s.startswith("/api/v1/graphql/assets/") for s in sources), sources
    assert "<script>" not in page.text  # no inline script: the policy would refuse it


async def test_the_assets_are_the_registrys_files_byte_for_byte(client: Client) -> None:
    sums = asset_sums()
    assert len(sums) == 4
    for name, expected in sums.items():
        zipped = await client.get(f"{GRAPHQL}/assets/{name}", headers={"Accept-Encoding": "gzip"})
        assert zipped.status_code == 200, name
        assert zipped.headers["content-encoding"] == "gzip"
        assert hashlib.sha256(zipped.content).hexdigest() == expected  # httpx unzipped it
        plain = await client.get(
            f"{GRAPHQL}/assets/{name}", headers={"Accept-Encoding": "identity"}
        )
        assert "content-encoding" not in plain.headers
        assert hashlib.sha256(plain.content).hexdigest() == expected
        raw_size = len(gzip.compress(plain.content))
        assert raw_size > 1000
    start = await client.get(f"{GRAPHQL}/assets/start.js")
    assert start.headers["content-type"].startswith("text/javascript")
    assert "createFetcher" in start.text
    for path in ("nothing.js", "..%2Fschema.graphql", "start.js.gz"):
        assert (await client.get(f"{GRAPHQL}/assets/{path}")).status_code == 404


def test_the_page_names_no_other_host() -> None:
    start = (ASSETS / "start.js").read_text()
    assert "http" not in start
    for licence in ("LICENSE.graphiql", "LICENSE.react", "LICENSE.react-dom"):
        assert "MIT License" in (ASSETS / licence).read_text()


async def test_refusals_before_graphql_runs_come_in_graphqls_shape(api: Client) -> None:
    """A missing credential, a body too large: the status and headers are the API's, the
    body GraphQL's, so that a GraphQL client reads the error where it looks."""
    refused = await api.post(
        GRAPHQL, json={"query": "{ __typename }"}, headers={"Authorization": ""}
    )
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert refused.headers["content-type"].startswith("application/json")
    assert codes(refused.json()) == ["UNAUTHENTICATED"]
    huge = {"query": "{ __typename }", "variables": {"x": "y" * (2 * 1024 * 1024)}}
    too_large = await api.post(GRAPHQL, json=huge, headers=HEADERS)
    assert too_large.status_code == 413
    assert codes(too_large.json()) == ["TOO_LARGE"]
