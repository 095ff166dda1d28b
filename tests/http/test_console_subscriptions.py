"""The console's webhooks over HTTP: create through the form (errors by JSON pointer), the
list and detail without the secret, the secret shown once on an explicit read or rotation,
deliveries with their attempts from a real loopback target, dead letters and their redrive,
CSRF, and what a viewer is not offered and is refused anyway.

The route x role matrix and the other-tenant 404s of these pages are in
tests/http/test_console_access.py (generated from the routes); the browser tests drive
them in Chromium (tests/browser/test_console_subscriptions.py).
"""

from __future__ import annotations

import re

import anyio
import pytest
from litestar import Litestar
from standardwebhooks import Webhook

from tests.http.conftest import ACME_KEY, HEADERS, Client, make_receiver, record
from tests.http.console import Console, console_client
from tests.integration.loopback_targets import Answer, loopback_target

pytestmark = pytest.mark.anyio

PATH = "/console/subscriptions"
URL = "https://hooks.example.com/in"
_SECRET = re.compile(r"whsec_[A-Za-z0-9+/=]+")


async def console_of(app: Litestar, key: str) -> Console:
    async with console_client(app) as http:
        console = Console(http)
        assert (await console.sign_in(api_key=key)).status_code == 303
        return console


async def create(console: Console, **over: str) -> str:
    form = {"name": "hooks", "url": URL, "enabled": "true", "ordering": "none", **over}
    answer = await console.post(PATH, form)
    assert answer.status_code == 303, answer.text
    location: str = answer.headers["location"]
    assert re.fullmatch(rf"{PATH}/[0-9A-Z]{{26}}", location), location
    return location.rsplit("/", 1)[1]


async def test_create_through_the_form_with_errors_by_pointer(app: Litestar, api: Client) -> None:
    async with console_client(app) as http:
        console = await console_of(app, ACME_KEY)
        console.http = http
        form = await console.get(f"{PATH}/new")
        assert form.status_code == 200
        for label in ("Name", "URL", "Message types", "Ordering", "Outcome"):
            assert f">{label}</label>" in form.text or f">{label} " in form.text, label
        refused = await console.post(
            PATH,
            {"name": "", "url": "ftp://x", "types": "a,a", "ordering": "sideways"},
        )
        assert refused.status_code == 422
        assert "/ordering" in refused.text
        refused = await console.post(PATH, {"name": "", "url": "ftp://x", "types": "a,a"})
        assert refused.status_code == 422
        for pointer in ("/name", "/url", "/filter/types/1"):
            assert pointer in refused.text, pointer
        assert 'value="ftp://x"' in refused.text  # what was typed stays
        ident = await create(
            console,
            description="deploys",
            types="waypost.group.completed waypost.event.recorded",
            package="rpm",
            success="true",
            ordering="artifact",
        )
        shown = (await api.get(f"/api/v1/subscriptions/{ident}", headers=HEADERS)).json()["data"]
        assert shown["filter"] == {
            "types": ["waypost.group.completed", "waypost.event.recorded"],
            "package": "rpm",
            "success": True,
        }
        assert (shown["ordering"], shown["description"], shown["enabled"]) == (
            "artifact",
            "deploys",
            True,
        )
        listed = await console.get(PATH)
        assert listed.status_code == 200
        assert f"{PATH}/{ident}" in listed.text
        assert "types waypost.group.completed, waypost.event.recorded; package rpm" in listed.text
        detail = await console.get(f"{PATH}/{ident}")
        assert detail.status_code == 200
        assert detail.headers["cache-control"] == "no-store"
        for page in (listed, detail):
            assert "whsec_" not in page.text


async def test_the_secret_is_shown_once_on_read_and_on_rotation(app: Litestar, api: Client) -> None:
    async with console_client(app) as http:
        console = await console_of(app, ACME_KEY)
        console.http = http
        ident = await create(console)
        read = await console.post(f"{PATH}/{ident}/secret")
        assert read.status_code == 200
        [first] = _SECRET.findall(read.text)
        api_secret = await api.get(f"/api/v1/subscriptions/{ident}/secret", headers=HEADERS)
        assert api_secret.json()["data"]["secret"] == first
        assert read.headers["cache-control"] == "no-store"
        again = await console.get(f"{PATH}/{ident}")
        assert "whsec_" not in again.text
        rotated = await console.post(f"{PATH}/{ident}/secret/rotate", {"grace_hours": "2"})
        assert rotated.status_code == 200
        [second] = _SECRET.findall(rotated.text)
        assert second != first
        assert "for 2 hour(s)" in rotated.text
        bad = await console.post(f"{PATH}/{ident}/secret/rotate", {"grace_hours": "-1"})
        assert bad.status_code == 400
        assert "/grace_hours" in bad.text
        assert "whsec_" not in bad.text
        audit = await api.get("/api/v1/audit?action=secret.accessed", headers=HEADERS)
        assert any(ident in r["target"] for r in audit.json()["data"]), audit.text


async def test_deliveries_attempts_dead_letters_and_redrive(
    delivering_api: tuple[Client, Litestar],
) -> None:
    api, app = delivering_api
    failing = True
    with loopback_target() as hook:
        hook.answer = lambda _: Answer(status=500 if failing else 200, body=b"not now")
        async with console_client(app) as http:
            console = await console_of(app, ACME_KEY)
            console.http = http
            ident = await create(console, url=hook.url(), types="ci.build")
            receiver = await make_receiver(api)
            await record(api, receiver)
            page = f"{PATH}/{ident}"
            with anyio.fail_after(30):  # 500, a retry 0.2 s later, 500: dead
                while True:
                    if 'badge bad">dead' in (await console.get(f"{page}?status=dead")).text:
                        break
                    await anyio.sleep(0.05)
            dead = await console.get(f"{page}?status=dead")
            [delivery] = re.findall(rf"{page}/deliveries/([0-9A-Z]{{26}})", dead.text)
            detail = await console.get(f"{page}/deliveries/{delivery}")
            assert detail.status_code == 200
            assert detail.text.count('<span class="badge bad">500</span>') == 2
            assert "not now" in detail.text
            ok_only = await console.get(f"{page}?status=succeeded")
            assert "/deliveries/" not in ok_only.text
            assert (await console.get(f"{page}?status=lost")).status_code == 400

            failing = False
            redriven = await console.post(f"{page}/redrive", {"since": "", "until": ""})
            assert redriven.status_code == 200
            assert "1 dead delivery sent again." in redriven.text
            with anyio.fail_after(30):
                while True:
                    if delivery in (await console.get(f"{page}?status=succeeded")).text:
                        break
                    await anyio.sleep(0.05)
            detail = await console.get(f"{page}/deliveries/{delivery}")
            assert '<span class="badge ok">200</span>' in detail.text
            secret = (
                await api.get(f"/api/v1/subscriptions/{ident}/secret", headers=HEADERS)
            ).json()
            last = hook.requests[-1]
            Webhook(secret["data"]["secret"]).verify(
                last.body, {k.lower(): v for k, v in last.headers}
            )
            pinged = await console.post(f"{page}/ping")
            assert "A test message is on its way" in pinged.text
            replayed = await console.post(f"{page}/replay", {"after": "0"})
            assert re.search(r"\d+ message\(s\) after position 0 queued", replayed.text)
            wrong = await console.post(f"{page}/replay", {"after": "x"})
            assert wrong.status_code == 400
            assert "/after" in wrong.text
            disabled = await console.post(f"{page}/enabled", {"enabled": "false"})
            assert disabled.status_code == 303
            assert "Enable the subscription" in (await console.get(page)).text
            gone = await console.post(f"{page}/delete")
            assert (gone.status_code, gone.headers["location"]) == (303, PATH)
            assert (await console.get(page)).status_code == 404


async def test_csrf_and_what_a_viewer_is_not_offered_and_is_refused(
    app: Litestar, api: Client
) -> None:
    made = await api.post(
        "/api/v1/api-keys", json={"name": "viewer", "role": "event_viewer"}, headers=HEADERS
    )
    viewer_key = made.json()["data"]["key"]
    async with console_client(app) as http:
        admin = await console_of(app, ACME_KEY)
        admin.http = http
        ident = await create(admin)
        no_token = await admin.post(f"{PATH}/{ident}/secret", csrf=False)
        assert no_token.status_code == 403
        assert "whsec_" not in no_token.text
        assert (await admin.post(PATH, {"name": "x", "url": URL}, csrf=False)).status_code == 403
        foreign = await admin.post(f"{PATH}/{ident}/delete", origin="https://evil.example")
        assert foreign.status_code == 403

        viewer = await console_of(app, viewer_key)
        viewer.http = http
        listed = await viewer.get(PATH)
        assert listed.status_code == 200
        assert "New subscription" not in listed.text
        detail = await viewer.get(f"{PATH}/{ident}")
        assert detail.status_code == 200
        for control in ("Show the signing secret", "Rotate the secret", "Redrive", "Delete the"):
            assert control not in detail.text, control
        for path, form in (
            (f"{PATH}/{ident}/secret", {}),
            (f"{PATH}/{ident}/secret/rotate", {"grace_hours": "1"}),
            (f"{PATH}/{ident}/redrive", {}),
            (f"{PATH}/{ident}/delete", {}),
            (PATH, {"name": "x", "url": URL}),
        ):
            answer = await viewer.post(path, form)
            assert answer.status_code == 403, (path, answer.status_code)
            assert "whsec_" not in answer.text
        assert (await viewer.get(f"{PATH}/new")).status_code == 403


async def test_lists_scroll_on_by_keyset_cursors(app: Litestar, api: Client) -> None:
    """Subscriptions and deliveries page by 50, as every console list: the last row asks
    htmx for the next rows (`rows=1`), which come with the next such row or none."""
    receiver = await make_receiver(api)
    for build in range(60):
        await record(api, receiver, payload={"build": build})
    async with console_client(app) as http:
        console = await console_of(app, ACME_KEY)
        console.http = http
        made = [await create(console, name=f"hooks-{n}") for n in range(52)]
        listed = re.compile(rf'href="{PATH}/([0-9A-Z]{{26}})"')
        first = await console.get(PATH)
        assert len(listed.findall(first.text)) == 50
        [more] = re.findall(r'hx-get="([^"]+)"', first.text)
        rest = await console.get(more.replace("&amp;", "&"))
        assert len(listed.findall(rest.text)) == 2
        assert "hx-get" not in rest.text
        assert "<html" not in rest.text  # rows only
        shown = listed.findall(first.text + rest.text)
        assert shown == made[::-1]  # newest first, each once

        hooks = f"/api/v1/subscriptions/{made[0]}"
        queued = await api.post(f"{hooks}/replay", json={"after": 0}, headers=HEADERS)
        assert queued.json()["data"]["queued"] >= 61  # the receiver and its 60 events
        page = f"{PATH}/{made[0]}?status=pending"
        first = await console.get(page)
        assert first.text.count("/deliveries/") == 50
        [more] = re.findall(r'hx-get="([^"]+)"', first.text)
        assert "status=pending" in more
        rest = await console.get(more.replace("&amp;", "&"))
        assert rest.text.count("/deliveries/") == queued.json()["data"]["queued"] - 50
        assert "hx-get" not in rest.text


async def test_change_a_subscription_through_its_form(app: Litestar, api: Client) -> None:
    async with console_client(app) as http:
        console = await console_of(app, ACME_KEY)
        console.http = http
        ident = await create(console, types="ci.build", package="rpm", ordering="artifact")
        form = await console.get(f"{PATH}/{ident}/edit")
        assert form.status_code == 200
        assert 'value="ci.build"' in form.text
        assert 'value="rpm"' in form.text
        assert '<option value="artifact" selected>' in form.text
        refused = await console.post(
            f"{PATH}/{ident}", {"name": "hooks", "url": "ftp://nowhere", "enabled": "true"}
        )
        assert refused.status_code == 422
        assert "/url" in refused.text
        assert "Change the subscription hooks" in refused.text
        changed = await console.post(
            f"{PATH}/{ident}",
            {"name": "renamed", "url": "https://elsewhere.example.com/in", "types": "",
             "success": "false", "ordering": "none"},
        )  # fmt: skip
        assert (changed.status_code, changed.headers["location"]) == (303, f"{PATH}/{ident}")
        shown = (await api.get(f"/api/v1/subscriptions/{ident}", headers=HEADERS)).json()["data"]
        assert (shown["name"], shown["url"], shown["enabled"], shown["ordering"]) == (
            "renamed",
            "https://elsewhere.example.com/in",
            False,
            "none",
        )
        assert shown["filter"] == {"success": False}
