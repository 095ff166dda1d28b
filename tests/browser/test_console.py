"""The console in a real browser, against a real server: the story of a release gate.

The tests of this module run in order on one server: an admin signs in with a key,
registers two receivers and a group through the forms, events are recorded through
the API, and the artifact view tells first which check is missing, then that the gate
is complete. Each page is checked for requests to other origins, CSP errors,
accessibility (axe-core: no serious violations), its JavaScript + CSS weight, and its
layout at 360 px; a screenshot of each is kept.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.browser.conftest import (
    SCHEMA,
    Recorder,
    Site,
    check_page,
    csrf_token,
    open_context,
    screenshot,
    sign_in_with_key,
    watch,
)

ARTIFACT = "name=shop&version=2.1.0&release=1&platform_id=linux-x86_64&package=oci"
state: dict[str, Any] = {}


def register(page: Page, name: str, schema: str) -> None:
    page.goto("/console/receivers")
    page.get_by_role("link", name="New receiver").click()
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Type").fill(f"ci.{name}")
    page.get_by_label("Version").fill("1")
    page.get_by_label("Description").fill(f"{name} results")
    page.get_by_label("JSON Schema").fill(schema)
    page.get_by_role("button", name="Register").click()
    page.wait_for_load_state()


def test_register_receivers_through_the_form(page: Page, site: Site) -> None:
    register(page, "build", json.dumps(SCHEMA))
    expect(page.get_by_role("heading", name="Receiver build")).to_be_visible()
    expect(page.get_by_text("Fingerprint")).to_be_visible()
    state["build"] = page.url.rsplit("/", 1)[1]
    screenshot(page, "receiver")
    register(page, "tests", "{}")
    state["tests"] = page.url.rsplit("/", 1)[1]
    listed = site.api("GET", "/api/v1/receivers", site.keys["admin"]).json()["data"]
    assert {r["name"] for r in listed} == {"build", "tests"}


def test_schema_errors_are_shown_by_json_pointer(page: Page) -> None:
    register(page, "broken", '{"type": "object", "properties": {"x": {"type": 5}}}')
    expect(page.get_by_role("heading", name="New receiver")).to_be_visible()
    expect(page.locator("#e-schema")).to_contain_text("/schema")
    register(page, "broken", '{"type": ')
    expect(page.locator("#e-schema")).to_contain_text("is not JSON")
    page.get_by_label("JSON Schema").fill("[1")
    expect(page.locator("#schema-status")).to_contain_text("is not JSON")
    screenshot(page, "receiver-new-errors")


def test_create_a_group_through_the_form(page: Page) -> None:
    page.goto("/console/groups/new")
    page.get_by_label("Name", exact=True).fill("release")
    page.get_by_label("Type").fill("gate")
    page.get_by_label("Version").fill("1")
    page.get_by_label("build").check()
    page.get_by_label("tests").check()
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("heading", name="Group release")).to_be_visible()
    state["group"] = page.url.rsplit("/", 1)[1]
    screenshot(page, "group")


def test_the_artifact_view_names_the_missing_check_then_the_completion(
    page: Page, site: Site
) -> None:
    key = site.keys["admin"]
    site.record(key, state["build"], success=True)
    site.record(key, state["tests"], success=False)
    page.goto(f"/console/artifacts?{ARTIFACT}")
    gate = page.locator("article.gate")
    expect(gate).to_have_count(1)
    expect(gate).to_contain_text("incomplete")
    expect(gate.locator(".missing")).to_contain_text("tests")
    expect(gate.locator(".missing")).not_to_contain_text("build")
    expect(gate).to_contain_text("failing")
    expect(gate).to_contain_text("Never completed for this artifact")
    screenshot(page, "artifact-incomplete")

    fixed = site.record(key, state["tests"], success=True)
    page.reload()
    expect(gate).to_contain_text("complete")
    expect(gate).not_to_contain_text("incomplete")
    expect(gate.locator(".missing")).to_have_count(0)
    expect(gate.get_by_text("Completions (1)")).to_be_visible()
    expect(gate.get_by_role("link", name=fixed)).to_be_visible()
    # The member's latest event links to it.
    gate.get_by_role("row", name="tests").get_by_role("link").last.click()
    expect(page.get_by_role("heading", name=f"Event {fixed}")).to_be_visible()
    page.goto(f"/console/artifacts?{ARTIFACT}")
    screenshot(page, "artifact-complete")


def test_the_live_page_shows_a_new_event_within_two_seconds(page: Page, site: Site) -> None:
    page.goto("/console/live")
    expect(page.locator("#live-status")).to_contain_text("Connected", timeout=10_000)
    started = time.monotonic()
    site.record(site.keys["admin"], state["build"], release="live")
    expect(page.locator("#live tbody tr").first).to_contain_text("ci.build", timeout=2_000)
    assert time.monotonic() - started < 2.0
    expect(page.locator("#live tbody tr").first).to_contain_text("shop 2.1.0-live")
    screenshot(page, "live")


def test_the_live_page_filters_by_type(page: Page, site: Site) -> None:
    page.goto("/console/live?type=ci.tests")
    expect(page.locator("#live-status")).to_contain_text("Connected", timeout=10_000)
    site.record(site.keys["admin"], state["build"], release="filtered-out")
    site.record(site.keys["admin"], state["tests"], release="filtered-in")
    expect(page.locator("#live tbody tr").first).to_contain_text("filtered-in", timeout=5_000)
    expect(page.locator("#live tbody")).not_to_contain_text("filtered-out")


def test_events_scroll_on_by_cursor(page: Page, site: Site) -> None:
    body = {
        "events": [
            {
                "name": "bulk",
                "version": str(n),
                "release": "1",
                "platform_id": "p",
                "package": "k",
                "description": "",
                "payload": {"build": n},
                "success": True,
                "event_receiver_id": state["build"],
            }
            for n in range(120)
        ]
    }
    answer = site.api("POST", "/api/v1/events/batch", site.keys["admin"], json=body)
    assert answer.status_code == 201, answer.text
    page.goto("/console/events?name=bulk")
    rows = page.locator("#rows tr:not(.more)")
    expect(rows).to_have_count(50)
    page.locator("tr.more").scroll_into_view_if_needed()
    expect(rows).to_have_count(100)
    page.locator("tr.more").scroll_into_view_if_needed()
    expect(rows).to_have_count(120)
    expect(page.locator("tr.more")).to_have_count(0)
    page.goto("/console/events")
    screenshot(page, "events")
    page.get_by_role("row").nth(1).get_by_role("link").first.click()
    expect(page.get_by_role("heading", name="Payload")).to_be_visible()
    screenshot(page, "event")


def test_a_form_post_without_the_csrf_token_is_refused(page: Page, site: Site) -> None:
    page.goto("/console/groups")
    token = csrf_token(page)
    form: dict[str, str | float | bool] = {
        "name": "x",
        "type": "t",
        "version": "1",
        "description": "",
        "schema": "{}",
    }
    refused = page.request.post(
        "/console/receivers", form=form, headers={"Origin": site.url}, max_redirects=0
    )
    assert refused.status == 403
    assert "security token" in refused.text()
    forged = page.request.post(
        "/console/receivers",
        form={**form, "csrf_token": token},
        headers={"Origin": "http://evil.example"},
        max_redirects=0,
    )
    assert forged.status == 403
    ok = page.request.post(
        "/console/receivers",
        form={**form, "csrf_token": token},
        headers={"Origin": site.url},
        max_redirects=0,
    )
    assert ok.status == 303, ok.text()


def test_an_event_viewer_sees_no_create_or_admin_control(browser: Browser, site: Site) -> None:
    context, recorder = open_context(browser, site)
    try:
        page = context.new_page()
        watch(page, recorder)
        sign_in_with_key(page, site.keys["event_viewer"])
        nav = page.get_by_role("navigation", name="Console")
        for label in ("Artifacts", "Events", "Receivers", "Groups", "Live"):
            expect(nav.get_by_role("link", name=label)).to_be_visible()
        for label in ("Users", "API keys", "Audit log", "Tenants"):
            expect(nav.get_by_role("link", name=label)).to_have_count(0)
        page.goto("/console/receivers")
        expect(page.get_by_role("link", name="New receiver")).to_have_count(0)
        page.goto("/console/groups")
        expect(page.get_by_role("link", name="New group")).to_have_count(0)
        page.goto(f"/console/groups/{state['group']}")
        expect(page.get_by_role("button", name="Disable the group")).to_have_count(0)
        expect(page.get_by_role("button", name="Remove build")).to_have_count(0)
        expect(page.get_by_role("button", name="Delete the group")).to_have_count(0)
        screenshot(page, "group-as-viewer")
        token = csrf_token(page)
        # A forged form POST (valid session and token, but not the role): 403.
        for path, form in (
            ("/console/receivers", {"name": "x", "type": "t", "version": "1", "schema": "{}"}),
            (f"/console/groups/{state['group']}/enabled", {"enabled": "false"}),
            ("/console/admin/api-keys", {"name": "mine", "role": "admin"}),
        ):
            answer = page.request.post(
                path, form={**form, "csrf_token": token}, headers={"Origin": site.url}
            )
            assert answer.status == 403, (path, answer.status)
        for path in ("/console/receivers/new", "/console/admin/users", "/console/admin/audit"):
            assert page.goto(path).status == 403, path  # type: ignore[union-attr]
        assert not recorder.foreign()
    finally:
        context.close()


def test_a_platform_administrator_picks_a_tenant(browser: Browser, site: Site) -> None:
    context, recorder = open_context(browser, site)
    try:
        page = context.new_page()
        watch(page, recorder)
        sign_in_with_key(page, site.platform_key)
        expect(page.get_by_role("heading", name="Act in a tenant")).to_be_visible()
        screenshot(page, "tenants")
        page.get_by_label("Tenant").select_option("acme")
        page.get_by_role("button", name="Act here").click()
        expect(page.get_by_role("heading", name="Users of acme")).to_be_visible()
        nav = page.get_by_role("navigation", name="Console")
        expect(nav.get_by_role("link", name="Events")).to_have_count(0)  # never event data
        page.get_by_role("link", name="API keys").click()
        page.get_by_label("Name").fill("ci-pipeline")
        page.get_by_label("Role").select_option("event_producer")
        page.get_by_role("button", name="Create the key").click()
        shown = page.get_by_label("New API key").input_value()
        assert shown.startswith("wp_")
        screenshot(page, "api-key-created")
        page.reload()  # a POST answer: reloading would post again; go to the list instead
        page.goto("/console/admin/api-keys")
        assert shown not in page.content()  # shown once, never again
        assert site.api("GET", "/api/v1/receivers", shown).status_code == 200
        page.goto("/console/admin/audit?action=api_key.created")
        expect(page.locator("#rows tr").first).to_contain_text("api_key.created")
        screenshot(page, "audit")
        assert not recorder.foreign()
    finally:
        context.close()


def test_sign_out_revokes_the_session(browser: Browser, site: Site) -> None:
    context, _ = open_context(browser, site)
    try:
        page = context.new_page()
        sign_in_with_key(page, site.keys["admin"])
        cookies = context.cookies()
        session = next(c for c in cookies if c["name"] == "__Host-waypost-console")
        assert session["httpOnly"]
        assert session["secure"]
        assert session["sameSite"] == "Strict"
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        # The old cookie, put back, no longer opens a page: its tokens were revoked.
        context.add_cookies([session])  # type: ignore[list-item]
        page.goto("/console/events")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    finally:
        context.close()


PAGES = (
    ("sign-in", "/console/sign-in"),
    ("artifacts", "/console/artifacts"),
    ("artifact", f"/console/artifacts?{ARTIFACT}"),
    ("receivers", "/console/receivers"),
    ("receiver-new", "/console/receivers/new"),
    ("events", "/console/events"),
    ("groups", "/console/groups"),
    ("group-new", "/console/groups/new"),
    ("live", "/console/live"),
    ("users", "/console/admin/users"),
    ("api-keys", "/console/admin/api-keys"),
    ("audit", "/console/admin/audit"),
)


@pytest.mark.parametrize(("name", "path"), PAGES, ids=[name for name, _ in PAGES])
def test_every_page_is_light_accessible_and_fits_a_phone(
    admin: tuple[BrowserContext, Recorder], name: str, path: str
) -> None:
    context, recorder = admin
    check_page(context, recorder, name, path)


def test_keyboard_navigation(page: Page) -> None:
    page.goto("/console/events")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    page.goto("/console/events")
    focused = []
    for _ in range(8):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.textContent.trim()"))
    assert "Sign out" in focused
    assert "Artifacts" in focused
    assert "Events" in focused


def test_the_api_description_works_offline(browser: Browser, site: Site) -> None:
    context, recorder = open_context(browser, site)
    try:
        page = context.new_page()
        watch(page, recorder)
        page.goto("/schema")
        expect(page.get_by_text("Record an event").first).to_be_visible(timeout=20_000)
        page.locator(".opblock-summary", has_text="/api/v1/auth/token").first.click()
        body = page.locator(".opblock-body").first
        expect(body).to_contain_text("grant_type")  # the request body is documented
        types = body.locator("select option")
        expect(types.filter(has_text="application/x-www-form-urlencoded")).to_have_count(1)
        assert types.filter(has_text="application/json").count() >= 1
        screenshot(page, "schema")
        assert not recorder.foreign(), recorder.foreign()
        assert not recorder.console_errors, recorder.console_errors
        weights = recorder.weight()
        print(f"page weight /schema: {sum(weights.values())} bytes gzipped")
    finally:
        context.close()
