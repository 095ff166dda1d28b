"""Webhooks in the console, in a real browser, against a real `waypost serve` that delivers
in-process to a real target on loopback (allowed by setting; one retry after 0.5 s).

In order on one server: an admin creates a subscription through the form, an event is
recorded through the API, its delivery succeeds and its attempt is shown; the secret is
shown on an explicit read and verifies the webhook the target got; a target that fails
makes a dead letter, which is redriven; the secret is rotated; a viewer is offered none
of it and is refused anyway. Each page: budget, origin, axe-core, 360 px, screenshot.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect
from standardwebhooks import Webhook

from tests.browser.conftest import (
    Recorder,
    Site,
    check_page,
    csrf_token,
    open_context,
    screenshot,
    sign_in_with_key,
    watch,
)
from tests.integration.loopback_targets import Answer, Target, loopback_target

SCHEMA = {"type": "object"}
state: dict[str, Any] = {}


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    with loopback_target() as hook:
        yield hook


@pytest.fixture(scope="module")
def receiver(site: Site) -> str:
    body = {"name": "deploy", "type": "ci.deploy", "version": "1", "description": "",
            "schema": SCHEMA}  # fmt: skip
    answer = site.api("POST", "/api/v1/receivers", site.keys["admin"], json=body)
    assert answer.status_code == 201, answer.text
    ident: str = answer.json()["data"]
    return ident


def until_shown(page: Page, path: str, text: str, seconds: float = 30) -> None:
    """Reload `path` until the page holds `text` (deliveries happen in the server's time)."""
    deadline = time.monotonic() + seconds
    while True:
        page.goto(path)
        if text in page.content():
            return
        assert time.monotonic() < deadline, f"{text!r} never appeared on {path}"
        page.wait_for_timeout(200)


def test_create_a_subscription_and_see_a_delivery_succeed(
    page: Page, site: Site, target: Target, receiver: str
) -> None:
    page.goto("/console")
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Webhooks").click()
    expect(page.get_by_role("heading", name="Webhook subscriptions")).to_be_visible()
    page.get_by_role("link", name="New subscription").click()
    page.get_by_label("Name", exact=True).fill("deploys")
    page.get_by_label("URL").fill(target.url())
    page.get_by_label("Message types").fill("ci.deploy")
    page.get_by_label("Ordering").select_option("artifact")
    screenshot(page, "subscription-new")
    page.get_by_role("button", name="Create the subscription").click()
    expect(page.get_by_role("heading", name="Subscription deploys")).to_be_visible()
    state["subscription"] = page.url.rsplit("/", 1)[1]
    assert "whsec_" not in page.content()

    site.record(site.keys["admin"], receiver, payload={"build": 1}, name="shop", release="1")
    path = f"/console/subscriptions/{state['subscription']}"
    until_shown(page, path, 'badge ok">succeeded')
    row = page.locator("#rows tr").first
    expect(row).to_contain_text("ci.deploy")
    expect(row).to_contain_text("200")
    screenshot(page, "subscription")
    row.get_by_role("link").first.click()
    expect(page.get_by_role("heading", name="Attempts")).to_be_visible()
    attempt = page.get_by_role("region", name="Attempts").locator("tbody tr")
    expect(attempt).to_have_count(1)
    expect(attempt).to_contain_text("200")
    state["delivery"] = page.url.rsplit("/", 1)[1]
    screenshot(page, "delivery")
    assert len(target.requests) == 1


def test_the_secret_is_shown_on_request_and_verifies_the_webhook(
    page: Page, site: Site, target: Target
) -> None:
    page.goto("/console/subscriptions")
    assert "whsec_" not in page.content()
    page.goto(f"/console/subscriptions/{state['subscription']}")
    page.get_by_role("button", name="Show the signing secret").click()
    secret = page.get_by_label("Signing secret", exact=True).input_value()
    assert secret.startswith("whsec_")
    screenshot(page, "subscription-secret")
    received = target.requests[-1]
    Webhook(secret).verify(received.body, {k.lower(): v for k, v in received.headers})
    page.goto(f"/console/subscriptions/{state['subscription']}")
    assert secret not in page.content()  # shown once: not on the page itself
    state["secret"] = secret


def test_a_dead_delivery_is_redriven(page: Page, site: Site, target: Target, receiver: str) -> None:
    target.answer = lambda _: Answer(status=503, body=b"down for maintenance")
    site.record(site.keys["admin"], receiver, payload={"build": 2}, name="shop", release="2")
    dead = f"/console/subscriptions/{state['subscription']}?status=dead"
    until_shown(page, dead, 'badge bad">dead')  # 503, again 0.5 s later: dead
    expect(page.locator("#rows tr")).to_have_count(1)
    expect(page.locator("#rows tr").first).to_contain_text("503")
    screenshot(page, "subscription-dead-letters")
    page.locator("#rows tr").first.get_by_role("link").first.click()
    attempts = page.get_by_role("region", name="Attempts").locator("tbody tr")
    expect(attempts).to_have_count(2)
    expect(attempts.first).to_contain_text("down for maintenance")

    target.answer = lambda _: Answer()
    page.goto(dead)
    page.get_by_role("button", name="Redrive dead deliveries").click()
    expect(page.get_by_role("status")).to_contain_text("1 dead delivery sent again.")
    until_shown(page, dead, "No delivery dead.")
    succeeded = f"/console/subscriptions/{state['subscription']}?status=succeeded"
    page.goto(succeeded)
    expect(page.locator("#rows tr")).to_have_count(2)
    bodies = [r.body for r in target.requests]
    assert len(bodies) == 4  # the first, two refused tries, the redriven one
    assert bodies[1] == bodies[2] == bodies[3]


def test_rotating_the_secret_shows_the_new_one_once(page: Page, site: Site) -> None:
    page.on("dialog", lambda dialog: dialog.accept())  # the form asks first
    page.goto(f"/console/subscriptions/{state['subscription']}")
    page.get_by_label("Grace for the old secret (hours)").fill("1")
    page.get_by_role("button", name="Rotate the secret").click()
    expect(page.get_by_role("alert")).to_contain_text("for 1 hour(s)")
    rotated = page.get_by_label("Signing secret", exact=True).input_value()
    assert rotated.startswith("whsec_")
    assert rotated != state["secret"]
    screenshot(page, "subscription-rotated")
    api = site.api("GET", f"/api/v1/subscriptions/{state['subscription']}/secret",
                   site.keys["admin"])  # fmt: skip
    assert api.json()["data"]["secret"] == rotated


def test_a_viewer_is_offered_none_of_it_and_is_refused_anyway(browser: Browser, site: Site) -> None:
    context, recorder = open_context(browser, site)
    try:
        page = context.new_page()
        watch(page, recorder)
        sign_in_with_key(page, site.keys["event_viewer"])
        page.goto("/console/subscriptions")
        expect(page.get_by_role("link", name="deploys")).to_be_visible()
        expect(page.get_by_role("link", name="New subscription")).to_have_count(0)
        page.goto(f"/console/subscriptions/{state['subscription']}")
        expect(page.get_by_role("heading", name="Deliveries")).to_be_visible()
        for button in ("Show the signing secret", "Rotate the secret", "Redrive dead deliveries",
                       "Delete the subscription", "Disable the subscription"):  # fmt: skip
            expect(page.get_by_role("button", name=button)).to_have_count(0)
        expect(page.get_by_role("link", name="Change the subscription")).to_have_count(0)
        assert page.goto(f"/console/subscriptions/{state['subscription']}/edit").status == 403  # type: ignore[union-attr]
        page.goto(f"/console/subscriptions/{state['subscription']}")
        screenshot(page, "subscription-as-viewer")
        token = csrf_token(page)
        base = f"/console/subscriptions/{state['subscription']}"
        for path in (f"{base}/secret", f"{base}/secret/rotate", f"{base}/redrive",
                     f"{base}/delete", base, "/console/subscriptions"):  # fmt: skip
            answer = page.request.post(
                path, form={"csrf_token": token, "name": "x"}, headers={"Origin": site.url}
            )
            assert answer.status == 403, (path, answer.status)
            assert "whsec_" not in answer.text()
        assert not recorder.foreign()
        assert not recorder.console_errors, recorder.console_errors
    finally:
        context.close()


def test_every_webhook_page_is_light_accessible_and_fits_a_phone(
    admin: tuple[BrowserContext, Recorder],
) -> None:
    context, recorder = admin
    base = f"/console/subscriptions/{state['subscription']}"
    for name, path in (
        ("subscriptions", "/console/subscriptions"),
        ("subscription-new", "/console/subscriptions/new"),
        ("subscription", base),
        ("subscription-dead", f"{base}?status=dead"),
        ("subscription-edit", f"{base}/edit"),
        ("delivery", f"{base}/deliveries/{state['delivery']}"),
    ):
        check_page(context, recorder, name, path)
