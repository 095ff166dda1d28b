"""The console over HTTP: sign-in, the sealed session cookie, refresh, sign-out, CSRF, and
each page's behaviour (forms, errors by JSON pointer, keyset scrolling, the live tail).

The browser tests (tests/browser) drive the same pages in Chromium; these pin the
server's side of each promise, fast, over in-memory adapters.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from litestar import Litestar

from adapters.memory.store import MemoryStore
from entrypoints.http.console.session import REFRESH_MARGIN_SECONDS
from tests.http.conftest import (
    ACME_KEY,
    GLOBEX_KEY,
    HEADERS,
    PLATFORM_KEY,
    Client,
    ManualClock,
    asgi_client,
    event_body,
    make_app,
    make_receiver,
    platform_identity,
    record,
)
from tests.http.console import ORIGIN, SESSION, Console, console_client

pytestmark = pytest.mark.anyio


async def signed_in(app: Litestar, key: str = ACME_KEY, **kwargs: Any) -> Console:
    async with console_client(app, **kwargs) as http:
        console = Console(http)
        answer = await console.sign_in(api_key=key)
        assert answer.status_code == 303, answer.text
        return console


# --- sign-in and the session ------------------------------------------------------------------


async def test_sign_in_with_a_key_sets_a_sealed_strict_cookie(app: Litestar, api: Client) -> None:
    async with console_client(app) as http:
        console = Console(http)
        form = await console.get("/console/sign-in")
        assert form.status_code == 200
        pre = form.headers["set-cookie"]
        assert "HttpOnly" in pre
        assert "Secure" in pre
        assert "SameSite=strict" in pre
        answer = await console.sign_in(api_key=ACME_KEY)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/console"
        cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith(SESSION))
        for part in ("HttpOnly", "Secure", "SameSite=strict", "Path=/"):
            assert part in cookie
        # Sealed: neither the key nor the tokens can be read from it.
        assert ACME_KEY not in cookie
        assert "ey" not in cookie.split(";")[0][len(SESSION) + 1 :][:2]
        page = await console.get("/console/events")
        assert page.status_code == 200
        assert "acme" in page.text
        assert page.headers["cache-control"] == "no-store"


async def test_sign_in_with_a_password_and_tenant(app: Litestar, api: Client) -> None:
    made = await api.post(
        "/api/v1/users",
        json={"username": "ann", "password": "correct horse battery", "roles": ["event_viewer"]},
        headers=HEADERS,
    )
    assert made.status_code == 201, made.text
    async with console_client(app) as http:
        console = Console(http)
        wrong = await console.sign_in(username="ann", password="wrong password!!", tenant="acme")
        assert wrong.status_code == 401
        assert "not accepted" in wrong.text
        assert console.session is None
        answer = await console.sign_in(
            username="ann", password="correct horse battery", tenant="acme"
        )
        assert answer.status_code == 303
        page = await console.get("/console/events")
        assert page.status_code == 200
        assert ">ann<" in page.text or "ann ·" in page.text


async def test_a_missing_credential_is_named(app: Litestar, api: Client) -> None:
    async with console_client(app) as http:
        console = Console(http)
        answer = await console.sign_in(username="", password="", tenant="")
        assert answer.status_code == 422
        assert "username" in answer.text


async def test_the_sign_in_form_refuses_a_post_without_its_token(
    app: Litestar, api: Client
) -> None:
    async with console_client(app) as http:
        console = Console(http)
        await console.get("/console/sign-in")
        answer = await console.post(
            "/console/sign-in", {"method": "api_key", "api_key": ACME_KEY}, csrf=False
        )
        assert answer.status_code == 403
        assert console.session is None
        fresh = Console(http)  # no cookie of the form at all (login CSRF from another site)
        answer = await fresh.post(
            "/console/sign-in",
            {"method": "api_key", "api_key": ACME_KEY, "csrf_token": "guessed"},
            csrf=False,
        )
        assert answer.status_code == 403


async def test_sign_in_goes_back_to_a_console_page_only(app: Litestar, api: Client) -> None:
    async with console_client(app) as http:
        console = Console(http)
        first = await console.get("/console/groups?name=x")
        assert first.status_code == 303
        assert first.headers["location"] == "/console/sign-in?next=/console/groups%3Fname%3Dx"
        await console.get(first.headers["location"])
        answer = await console.post(
            "/console/sign-in",
            {"method": "api_key", "api_key": ACME_KEY, "next": "/console/groups?name=x"},
        )
        assert answer.headers["location"] == "/console/groups?name=x"
        other = Console(http)
        await other.get("/console/sign-in")
        answer = await other.post(
            "/console/sign-in",
            {"method": "api_key", "api_key": ACME_KEY, "next": "https://evil.example/x"},
        )
        assert answer.headers["location"] == "/console"


async def test_without_a_session_pages_send_to_sign_in(app: Litestar, api: Client) -> None:
    async with console_client(app) as http:
        console = Console(http)
        page = await console.get("/console/events")
        assert page.status_code == 303
        assert page.headers["location"].startswith("/console/sign-in?next=")
        htmx = await console.get("/console/events?rows=1", headers={"HX-Request": "true"})
        assert htmx.headers["hx-redirect"].startswith("/console/sign-in")
        stream = await console.get("/console/live/stream", headers={"Accept": "text/event-stream"})
        assert stream.status_code == 401
        console.cookies[SESSION] = "tampered" + "A" * 200
        answer = await console.get("/console/events")
        assert answer.status_code == 303
        assert (
            f"{SESSION}=;" in answer.headers["set-cookie"]
            or "Max-Age=0" in answer.headers["set-cookie"]
        )


async def test_the_session_is_refreshed_before_the_access_token_expires(
    app: Litestar, api: Client, clock: ManualClock
) -> None:
    console = await signed_in(app)
    async with console_client(app) as http:
        console.http = http
        first = console.session
        clock.set(clock.current + timedelta(seconds=900 - REFRESH_MARGIN_SECONDS + 5))
        page = await console.get("/console/events")
        assert page.status_code == 200
        assert console.session != first  # resealed with new tokens
        clock.set(clock.current + timedelta(seconds=REFRESH_MARGIN_SECONDS + 60))
        page = await console.get("/console/events")  # the first access token has expired
        assert page.status_code == 200
        # The old cookie's refresh token was used: presented again it revokes its family.
        stale = Console(http)
        stale.cookies[SESSION] = first or ""
        answer = await stale.get("/console/events")
        assert answer.status_code == 303


async def test_an_expired_session_that_cannot_refresh_ends(
    app: Litestar, api: Client, clock: ManualClock
) -> None:
    console = await signed_in(app)
    async with console_client(app) as http:
        console.http = http
        await api.delete(
            f"/api/v1/api-keys/{await _key_id(api, ACME_KEY)}", headers={"X-Tenant": "acme"}
        )
        clock.set(clock.current + timedelta(hours=1))
        answer = await console.get("/console/events")
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/console/sign-in")


async def _key_id(api: Client, key: str) -> str:
    prefix = key.split("_")[1]
    listed = await api.get("/api/v1/api-keys", headers={"X-Tenant": "acme"})
    [found] = [k["id"] for k in listed.json()["data"] if k["prefix"] == prefix]
    ident: str = found
    return ident


async def test_sign_out_revokes_the_tokens(app: Litestar, api: Client) -> None:
    console = await signed_in(app)
    async with console_client(app) as http:
        console.http = http
        cookie = console.session
        answer = await console.post("/console/sign-out")
        assert answer.status_code == 303
        assert console.session is None
        again = Console(http)
        again.cookies[SESSION] = cookie or ""
        await anyio.lowlevel.checkpoint()
        page = await again.get("/console/events")
        assert page.status_code == 303  # the access token was revoked
        audit = await api.get(
            "/api/v1/audit", params={"action": "auth.token_revoked"}, headers=HEADERS
        )
        assert audit.json()["data"]


async def test_a_session_works_on_every_server_that_shares_the_master_key(
    clock: ManualClock,
) -> None:
    """Two server processes (two apps over the same stores and master key): a session
    made by one is served by the other. Nothing of it lives in a process."""
    store, identity = MemoryStore(), await platform_identity()
    first = make_app(identity, clock=clock, store=store)
    second = make_app(identity, clock=clock, store=store)
    async with asgi_client(first) as api, second.lifespan():
        from tests.http.conftest import add_tenants

        await add_tenants(api, identity)
        console = await signed_in(first)
        async with console_client(second) as http:
            console.http = http
            page = await console.get("/console/receivers")
            assert page.status_code == 200, page.text


# --- CSRF ---------------------------------------------------------------------------------


async def test_every_state_changing_form_needs_the_csrf_token(app: Litestar, api: Client) -> None:
    console = await signed_in(app)
    async with console_client(app) as http:
        console.http = http
        form = {"name": "r", "type": "t", "version": "1", "schema": "{}"}
        assert (await console.post("/console/receivers", form, csrf=False)).status_code == 403
        bad = {**form, "csrf_token": "x" * 32}
        assert (await console.post("/console/receivers", bad, csrf=False)).status_code == 403
        other_site = await console.post("/console/receivers", form, origin="https://evil.example")
        assert other_site.status_code == 403
        cross = await console.post(
            "/console/receivers", form, headers={"Sec-Fetch-Site": "cross-site"}
        )
        assert cross.status_code == 403
        ok = await console.post("/console/receivers", form)
        assert ok.status_code == 303
        # htmx sends it as a header
        header = await console.post(
            "/console/sign-out", csrf=False, headers={"X-CSRF-Token": console.csrf}
        )
        assert header.status_code == 303


async def test_the_console_sends_the_security_headers(app: Litestar, api: Client) -> None:
    console = await signed_in(app)
    async with console_client(app) as http:
        console.http = http
        for path in ("/console/events", "/console/sign-in"):
            answer = await console.get(path)
            policy = answer.headers["content-security-policy"]
            assert "default-src 'none'" in policy
            assert "script-src 'self';" in policy
            assert "unsafe" not in policy
            assert "frame-ancestors 'none'" in policy
            assert answer.headers["x-frame-options"] == "DENY"
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["referrer-policy"] == "same-origin"
            assert answer.headers["strict-transport-security"].startswith("max-age=")
        html = (await console.get("/console/events")).text
        for url in re.findall(r'(?:src|href)="([^"#]+)"', html):
            assert url.startswith("/"), url  # nothing from another host
            if "/static/" in url:
                asset = await console.get(url)
                assert asset.status_code == 200
                assert "immutable" in asset.headers["cache-control"]


async def test_assets_are_served_gzipped_with_their_hash(app: Litestar, api: Client) -> None:
    async with console_client(app) as http:
        page = await http.get("/console/sign-in")
        [css] = re.findall(r'href="(/console/static/[^"]+\.css)"', page.text)
        plain = await http.get(css, headers={"Accept-Encoding": "identity"})
        zipped = await http.get(css, headers={"Accept-Encoding": "gzip"})
        assert plain.content == zipped.content  # httpx decodes it
        assert zipped.headers["content-encoding"] == "gzip"
        assert "content-encoding" not in plain.headers
        stale = await http.get(css.replace(css.split("/")[3], "000000000000"))
        assert stale.status_code == 200
        assert "immutable" not in stale.headers["cache-control"]
        missing = await http.get("/console/static/x/nothing.js")
        assert missing.status_code == 404
        etag = zipped.headers["etag"]
        assert (await http.get(css, headers={"If-None-Match": etag})).status_code == 304


# --- pages ----------------------------------------------------------------------------------


async def test_register_a_receiver_and_see_schema_errors_by_pointer(
    app: Litestar, api: Client
) -> None:
    console = await signed_in(app)
    async with console_client(app) as http:
        console.http = http
        base = {"name": "build", "type": "ci.build", "version": "1", "description": "d"}
        not_json = await console.post("/console/receivers", {**base, "schema": '{"type": '})
        assert not_json.status_code == 400
        assert "<code>/schema</code> is not JSON" in not_json.text
        assert 'value="build"' in not_json.text  # the form keeps what was typed
        not_object = await console.post("/console/receivers", {**base, "schema": "[1]"})
        assert not_object.status_code == 400
        assert "must be a JSON object" in not_object.text
        bad = await console.post(
            "/console/receivers", {**base, "schema": '{"properties": {"x": {"type": 5}}}'}
        )
        assert bad.status_code == 422
        assert "<code>/schema</code>" in bad.text
        blank = await console.post("/console/receivers", {**base, "name": " ", "schema": "{}"})
        assert blank.status_code == 422
        assert "<code>/name</code>" in blank.text
        made = await console.post("/console/receivers", {**base, "schema": '{"type": "object"}'})
        assert made.status_code == 303
        detail = await console.get(made.headers["location"])
        assert "Fingerprint" in detail.text
        assert "&#34;type&#34;: &#34;object&#34;" in detail.text  # pretty, escaped
        conflict = await console.post(
            "/console/receivers", {**base, "schema": '{"type": "string"}'}
        )
        assert conflict.status_code == 409


async def test_events_scroll_by_keyset_cursor(app: Litestar, api: Client) -> None:
    receiver = await make_receiver(api)
    body = {"events": [event_body(receiver, version=str(n)) for n in range(120)]}
    assert (await api.post("/api/v1/events/batch", json=body, headers=HEADERS)).status_code == 201
    console = await signed_in(app)
    async with console_client(app) as http:
        console.http = http
        seen: list[str] = []
        page = await console.get("/console/events")
        for _ in range(5):
            ids = re.findall(r'href="/console/events/([0-9A-Z]{26})"', page.text)
            seen.extend(ids)
            more = re.search(r'hx-get="([^"]+)"', page.text)
            if more is None:
                break
            page = await console.get(more.group(1).replace("&amp;", "&"))
            assert "<html" not in page.text  # only the next rows
        assert len(seen) == 120
        assert len(set(seen)) == 120
        assert seen == sorted(seen, reverse=True)  # newest first, no gap, no repeat
        filtered = await console.get("/console/events", params={"version": "7", "success": "true"})
        assert len(re.findall(r'href="/console/events/[0-9A-Z]{26}"', filtered.text)) == 1
        wrong = await console.get("/console/events", params={"since": "yesterday"})
        assert wrong.status_code == 400
        assert "must be a date and time" in wrong.text
        since = await console.get("/console/events", params={"since": "2999-01-01T00:00"})
        assert "No event matches" in since.text
        foreign = await console.get("/console/events", params={"cursor": "garbled"})
        assert foreign.status_code == 400


async def test_the_artifact_view_tells_which_check_is_missing(app: Litestar, api: Client) -> None:
    build = await make_receiver(api, "build")
    tests = await make_receiver(api, "tests")
    lone = await make_receiver(api, "lone")
    gate = await api.post(
        "/api/v1/groups",
        json={
            "name": "release",
            "type": "gate",
            "version": "1",
            "event_receiver_ids": [build, tests],
        },
        headers=HEADERS,
    )
    await api.post(
        "/api/v1/groups",
        json={"name": "unrelated", "type": "gate", "version": "1", "event_receiver_ids": [lone]},
        headers=HEADERS,
    )
    await record(api, build)
    console = await signed_in(app)
    key = {
        "name": "app",
        "version": "1.0",
        "release": "1",
        "platform_id": "x86_64",
        "package": "rpm",
    }
    async with console_client(app) as http:
        console.http = http
        page = await console.get("/console/artifacts", params=key)
        assert page.status_code == 200
        assert page.text.count('class="gate ') == 1  # the group of no event is not listed
        missing = re.search(r'<p class="missing">(.*?)</p>', page.text, re.S)
        assert missing is not None
        assert "tests" in missing.group(1)
        assert "build" not in missing.group(1)
        assert "no event yet" in page.text
        failed = await record(api, tests, success=False)
        page = await console.get("/console/artifacts", params=key)
        assert "failing" in page.text
        assert failed in page.text
        fixed = await record(api, tests)
        page = await console.get("/console/artifacts", params=key)
        assert "incomplete" not in page.text
        assert 'class="badge ok">complete' in page.text
        assert "Completions (1)" in page.text
        assert fixed in page.text
        assert gate.json()["data"] in page.text
        empty = await console.get("/console/artifacts")
        assert "Recent artifacts" in empty.text
        invalid = await console.get("/console/artifacts", params={**key, "release": " "})
        assert invalid.status_code == 400


async def test_groups_change_through_the_forms(app: Litestar, api: Client) -> None:
    one = await make_receiver(api, "one")
    two = await make_receiver(api, "two")
    console = await signed_in(app)
    async with console_client(app) as http:
        console.http = http
        empty = await console.post(
            "/console/groups", {"name": "g", "type": "gate", "version": "1", "enabled": "true"}
        )
        assert empty.status_code == 422
        assert "/event_receiver_ids" in empty.text
        made = await console.post(
            "/console/groups",
            {"name": "g", "type": "gate", "version": "1", "enabled": "true", "member": one},
        )
        assert made.status_code == 303
        path = made.headers["location"]
        group_id = path.rsplit("/", 1)[1]
        assert (await console.post(f"{path}/enabled", {"enabled": "false"})).status_code == 303
        state = (await api.get(f"/api/v1/groups/{group_id}", headers=HEADERS)).json()["data"]
        assert state["enabled"] is False
        assert (await console.post(f"{path}/members", {"add": two})).status_code == 303
        again = await console.post(f"{path}/members", {"add": two})
        assert again.status_code == 422
        assert "/add_receiver_ids/0" in again.text
        assert (await console.post(f"{path}/members", {"remove": one})).status_code == 303
        state = (await api.get(f"/api/v1/groups/{group_id}", headers=HEADERS)).json()["data"]
        assert state["event_receiver_ids"] == [two]
        listed = await console.get("/console/groups", params={"enabled": "false"})
        assert group_id in listed.text
        assert (await console.post(f"{path}/delete")).status_code == 303
        assert (await console.get(path)).status_code == 404


async def test_admin_pages_users_keys_and_the_audit_log(app: Litestar, api: Client) -> None:
    console = await signed_in(app)
    async with console_client(app) as http:
        console.http = http
        weak = await console.post(
            "/console/admin/users", {"username": "bob", "password": "short", "roles": "admin"}
        )
        assert weak.status_code == 422
        made = await console.post(
            "/console/admin/users",
            {"username": "bob", "password": "correct horse battery", "roles": "event_viewer"},
        )
        assert made.status_code == 303
        users = await console.get("/console/admin/users")
        assert "bob" in users.text
        [user_id] = re.findall(r'action="/console/admin/users/([0-9A-Z]{26})"', users.text)[:1]
        disabled = await console.post(f"/console/admin/users/{user_id}", {"action": "disable"})
        assert disabled.status_code == 303
        key = await console.post(
            "/console/admin/api-keys", {"name": "ci", "role": "event_producer", "expires_at": ""}
        )
        assert key.status_code == 201
        [text] = re.findall(r'value="(wp_[^"]+)"', key.text)
        listed = await console.get("/console/admin/api-keys")
        assert text not in listed.text  # shown once
        assert (
            await api.get("/api/v1/receivers", headers={"Authorization": f"Bearer {text}"})
        ).status_code == 200
        [key_id] = re.findall(r"/console/admin/api-keys/([0-9A-Z]{26})/revoke", listed.text)[:1]
        assert (await console.post(f"/console/admin/api-keys/{key_id}/revoke")).status_code == 303
        audit = await console.get("/console/admin/audit", params={"action": "api_key.revoked"})
        assert "api_key.revoked" in audit.text
        assert "user.created" not in audit.text
        bad = await console.get("/console/admin/audit", params={"until": "soon"})
        assert bad.status_code == 400


async def test_a_platform_administrator_picks_a_tenant(app: Litestar, api: Client) -> None:
    console = await signed_in(app, PLATFORM_KEY)
    async with console_client(app) as http:
        console.http = http
        picker = await console.get("/console/tenants")
        assert "acme" in picker.text
        assert "globex" in picker.text
        # Before picking, the platform's own principals.
        users = await console.get("/console/admin/users")
        assert "of the platform" in users.text
        assert (await console.get("/console/events")).status_code == 403
        picked = await console.post("/console/tenants", {"tenant": "acme"})
        assert picked.status_code == 303
        users = await console.get("/console/admin/users")
        assert "Users of acme" in users.text
        assert (await console.get("/console/events")).status_code == 403  # never event data
        assert (await console.post("/console/tenants", {"tenant": "nope"})).status_code == 404


async def test_platform_administrators_only_from_their_networks(app: Litestar, api: Client) -> None:
    console = await signed_in(app, PLATFORM_KEY)
    async with console_client(app, address="10.1.2.3") as http:
        console.http = http
        assert (await console.get("/console/tenants")).status_code == 403


async def test_another_tenants_objects_are_not_found(app: Litestar, api: Client) -> None:
    theirs = await make_receiver(api, headers={"Authorization": f"Bearer {GLOBEX_KEY}"})
    console = await signed_in(app)
    async with console_client(app) as http:
        console.http = http
        answer = await console.get(f"/console/receivers/{theirs}")
        assert answer.status_code == 404
        assert "<h1>Not found</h1>" in answer.text
        assert (await console.get("/console/events/not-an-id")).status_code == 404


async def test_the_console_pages_are_not_in_the_api_description(app: Litestar, api: Client) -> None:
    document = (await api.get("/schema/openapi.json")).json()
    assert not [p for p in document["paths"] if p.startswith("/console")]
    assert ORIGIN.startswith("https://")


async def test_the_live_page_says_which_filter_is_wrong(app: Litestar, api: Client) -> None:
    console = await signed_in(app)
    async with console_client(app) as http:
        console.http = http
        page = await console.get("/console/live", params={"subject": "not-an-id"})
        assert page.status_code == 422
        assert "must be a receiver or group id" in page.text
        assert 'id="live"' not in page.text  # no stream is opened
        ok = await console.get("/console/live", params={"type": "ci.build, ci.tests"})
        assert ok.status_code == 200
        assert 'data-stream="/console/live/stream?type=ci.build%2C+ci.tests"' in ok.text
