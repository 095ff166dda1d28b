"""HTTP Basic credentials: the password is an API key, the user name is ignored.

Clients that can only put a credential in their base URL (`https://any:wp_...@host/`:
Go's net/http, Python's requests and httpx) send it as Basic. It must be the same
credential as `Bearer <key>`: the same checks, the same rate-limit bucket, the same
audit records; a refusal names both schemes in WWW-Authenticate.
"""

from __future__ import annotations

import base64

import anyio
import httpx
import pytest
from litestar import Litestar

from adapters.memory.identity import MemoryIdentity
from core.domain.audit import Outcome
from core.ports import AuditFilter, PageRequest
from tests.http.conftest import (
    ACME_KEY,
    HEADERS,
    TENANT,
    Client,
    assert_problem,
    event_body,
    make_receiver,
    tenant_id,
)
from tests.http.test_rate_limits import FakeTime, assert_rate_limited, limited_app, serving

pytestmark = pytest.mark.anyio

EVENTS = "/api/v1/events"
BOTH = 'Bearer realm="waypost", error="invalid_token", Basic realm="waypost", charset="UTF-8"'


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def refusal_reasons(identity: MemoryIdentity, tenant: str | None) -> list[str | None]:
    found = await identity.audit.list(
        tenant, AuditFilter(outcome=Outcome.FAILURE), PageRequest(limit=1000)
    )
    return [record.reason for record in sorted(found, key=lambda r: r.id)]


@pytest.mark.parametrize("user", ["any", "", "user@example.com", "ünïcode"])
async def test_an_api_key_as_the_password_authenticates_whatever_the_user_name(
    api: Client, user: str
) -> None:
    answer = await api.get(EVENTS, headers=basic(user, ACME_KEY))
    assert answer.status_code == 200, answer.text


async def test_httpx_turns_userinfo_in_the_base_url_into_basic(api: Client) -> None:
    """What a client configured with `https://any:KEY@host/` sends."""
    transport = api._transport  # the app's ASGI transport
    url = f"http://any:{ACME_KEY}@testserver.local"
    async with httpx.AsyncClient(transport=transport, base_url=url) as http:
        answer = await http.get(EVENTS)
    assert answer.status_code == 200, answer.text
    assert answer.request.headers["authorization"].startswith("Basic ")


@pytest.mark.parametrize(
    "authorization",
    [
        basic("any", ACME_KEY[:-1] + "y"),  # a wrong secret
        basic("any", "wp_nobody00_" + "x" * 43),  # an unknown key
        basic("any", "not-a-key"),
        basic(ACME_KEY, ""),  # the key as the user name does not count
        {"Authorization": "Basic !!!not-base64!!!"},
        {"Authorization": "Basic " + base64.b64encode(b"no colon at all").decode()},
    ],
)
async def test_a_refused_basic_credential_is_a_401_naming_both_schemes(
    api: Client, authorization: dict[str, str]
) -> None:
    answer = await api.get(EVENTS, headers=authorization)
    body = assert_problem(answer, 401)
    assert body["type"] == "urn:waypost:problem:unauthenticated"
    challenge = answer.headers["www-authenticate"]
    assert challenge.startswith("Bearer realm=")
    assert 'Basic realm="waypost"' in challenge


async def test_no_credential_names_both_schemes(api: Client) -> None:
    answer = await api.get(EVENTS, headers={"Authorization": ""})
    assert_problem(answer, 401)
    assert answer.headers["www-authenticate"] == (
        'Bearer realm="waypost", Basic realm="waypost", charset="UTF-8"'
    )


async def test_only_an_api_key_goes_in_basic_an_access_token_does_not(api: Client) -> None:
    token = (
        await api.post("/api/v1/auth/token", json={"grant_type": "api_key", "api_key": ACME_KEY})
    ).json()["access_token"]
    assert (await api.get(EVENTS, headers={"Authorization": f"Bearer {token}"})).is_success
    answer = await api.get(EVENTS, headers=basic("any", token))
    assert_problem(answer, 401)
    assert answer.headers["www-authenticate"] == BOTH


async def test_refusals_are_audited_like_bearer_ones(api: Client, identity: MemoryIdentity) -> None:
    wrong = ACME_KEY[:-1] + "y"
    await api.get(EVENTS, headers=basic("any", wrong))
    await api.get(EVENTS, headers={"Authorization": f"Bearer {wrong}"})
    await api.get(EVENTS, headers=basic("any", "not-a-key"))
    acme = await refusal_reasons(identity, await tenant_id(api, TENANT))
    assert acme[-2:] == ["bad_credentials", "bad_credentials"]
    assert (await refusal_reasons(identity, None))[-1] == "malformed_api_key"


async def test_a_revoked_key_stops_working_in_basic_too(api: Client) -> None:
    made = await api.post(
        "/api/v1/api-keys", json={"name": "ci", "role": "event_viewer"}, headers=HEADERS
    )
    key, key_id = made.json()["data"]["key"], made.json()["data"]["id"]
    assert (await api.get(EVENTS, headers=basic("ci", key))).status_code == 200
    assert (await api.delete(f"/api/v1/api-keys/{key_id}", headers=HEADERS)).status_code == 204
    assert_problem(await api.get(EVENTS, headers=basic("ci", key)), 401)


async def test_basic_and_bearer_with_one_key_share_one_rate_limit_bucket(
    identity: MemoryIdentity,
) -> None:
    time = FakeTime()
    app = limited_app(identity, time, requests_per_second=1, burst=2)
    async with serving(app, identity, time) as client:
        assert (await client.get(EVENTS, headers=HEADERS)).status_code == 200
        assert (await client.get(EVENTS, headers=basic("any", ACME_KEY))).status_code == 200
        assert_rate_limited(await client.get(EVENTS, headers=basic("other", ACME_KEY)), "1")
        assert_rate_limited(await client.get(EVENTS, headers=HEADERS), "1")


async def test_a_live_tail_opened_with_basic_ends_when_its_key_is_revoked(
    app: Litestar, api: Client
) -> None:
    """The tail re-checks its credential as the middleware read it: Basic too."""
    from entrypoints.http.routes import messages
    from tests.http.test_messages import new_key, sent_event_ids, sse, tail_while

    receiver = await make_receiver(api)
    key_id, key = await new_key(api)
    recorded: list[str] = []

    async def revoke_between_two_events() -> None:
        first = await api.post(EVENTS, json=event_body(receiver), headers=HEADERS)
        recorded.append(first.json()["data"])
        await anyio.sleep(4 * messages.POLL_SECONDS)
        assert (await api.delete(f"/api/v1/api-keys/{key_id}", headers=HEADERS)).status_code == 204
        second = await api.post(EVENTS, json=event_body(receiver), headers=HEADERS)
        recorded.append(second.json()["data"])

    answer, ended = await tail_while(app, api, basic("ci", key), revoke_between_two_events)
    assert ended, "the stream went on after its key was revoked"
    assert sent_event_ids(answer) == recorded[:1]
    assert sse(answer)[-1] == {"": messages.ENDED_COMMENT}
