"""Browser tests: Playwright driving Debian's Chromium against a real `waypost serve`.

One browser and one server per module (a SQLite file of its own). Not one browser for
the whole session: Playwright's synchronous API keeps its event loop marked running in
the main thread while it is open, and the anyio tests of the other layers could not run
after it; each module closes it. The
browser is the system's (`/usr/bin/chromium`, from `apt-get install chromium`): a test
tool's own browser download cannot work here. Without it these tests skip, loudly;
with `WAYPOST_REQUIRE_SERVICES=1` (CI) a missing browser is a failure.

Every page a test opens records the requests it makes (`Recorder`): none may leave
the server's origin. Screenshots go to `tests/artifacts/screenshots/` (git-ignored,
kept by CI as artifacts).
"""

from __future__ import annotations

import gzip
import os
import pathlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ServerProcess

pytest.importorskip("playwright")
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    Request,
    Response,
    sync_playwright,
)

CHROMIUM = pathlib.Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROOT = pathlib.Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "tests" / "artifacts" / "screenshots"
AXE = pathlib.Path(__file__).parent / "assets" / "axe-4.10.3.min.js"
#: The budget of each console page: JavaScript and CSS, gzipped.
BUDGET_BYTES = 60 * 1024
SCHEMA = {
    "type": "object",
    "properties": {"build": {"type": "integer"}},
    "required": ["build"],
}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        if os.environ.get("WAYPOST_REQUIRE_SERVICES") == "1":
            pytest.fail("/usr/bin/chromium is missing (apt-get install -y chromium)")
        pytest.skip(
            "BROWSER TESTS SKIPPED: /usr/bin/chromium is missing (apt-get install chromium)"
        )
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
    try:
        yield launched
    finally:
        launched.close()


class Site:
    """The server under test, its bootstrap key and the API as a client."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.url = server.url
        self.platform_key = server.bootstrap_key()
        self.keys: dict[str, str] = {}

    def api(self, method: str, path: str, key: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
        return httpx.request(method, self.url + path, headers=headers, timeout=30, **kwargs)

    def tenant_key(self, tenant: str, role: str) -> str:
        """An API key of `role` in `tenant` (made by the platform administrator)."""
        answer = self.api(
            "POST",
            "/api/v1/api-keys",
            self.platform_key,
            headers={"X-Tenant": tenant},
            json={"name": f"browser-{role}", "role": role},
        )
        assert answer.status_code == 201, answer.text
        key: str = answer.json()["data"]["key"]
        return key

    def record(self, key: str, receiver_id: str, *, success: bool = True, **over: Any) -> str:
        body = {
            "name": "shop",
            "version": "2.1.0",
            "release": "1",
            "platform_id": "linux-x86_64",
            "package": "oci",
            "description": "",
            "payload": {"build": 7},
            "success": success,
            "event_receiver_id": receiver_id,
            **over,
        }
        answer = self.api("POST", "/api/v1/events", key, json=body)
        assert answer.status_code == 201, answer.text
        ident: str = answer.json()["data"]
        return ident


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("browser")
    env = {
        "WAYPOST__DATABASE__URL": f"sqlite:///{folder / 'waypost.db'}",
        # webhooks to the tests' loopback targets, retried once, soon (then dead)
        "WAYPOST__DELIVERY__ALLOWED_NETWORKS": "127.0.0.0/8",
        "WAYPOST__DELIVERY__REQUIRE_HTTPS": "false",
        "WAYPOST__DELIVERY__RETRY_SCHEDULE_SECONDS": "0.5",
    }
    server = ServerProcess(env, folder / "server.log")
    try:
        server.wait_ready()
        made = Site(server)
        answer = made.api(
            "POST", "/api/v1/tenants", made.platform_key, json={"slug": "acme", "name": "Acme"}
        )
        assert answer.status_code == 201, answer.text
        for role in ("admin", "event_viewer"):
            made.keys[role] = made.tenant_key("acme", role)
        yield made
    finally:
        code = server.stop()
    assert code == 0, server.output()


@dataclass
class Recorder:
    """Every request a page made, and what it loaded."""

    origin: str
    requests: list[str] = field(default_factory=list)
    responses: list[Response] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def on_request(self, request: Request) -> None:
        self.requests.append(request.url)

    def on_response(self, response: Response) -> None:
        self.responses.append(response)

    def foreign(self) -> list[str]:
        return [url for url in self.requests if not url.startswith(self.origin + "/")]

    def reset(self) -> None:
        self.requests.clear()
        self.responses.clear()
        self.console_errors.clear()

    def weight(self) -> dict[str, int]:
        """The gzipped bytes of every script and stylesheet loaded since the last reset."""
        found: dict[str, int] = {}
        for response in self.responses:
            if response.request.resource_type in ("script", "stylesheet"):
                found[response.url] = len(gzip.compress(response.body(), mtime=0))
        return found


def open_context(browser: Browser, site: Site, **options: Any) -> tuple[BrowserContext, Recorder]:
    """A fresh browser profile whose requests to other origins are refused and recorded."""
    context = browser.new_context(base_url=site.url, **options)
    recorder = Recorder(site.url)
    context.on("request", recorder.on_request)
    context.on("response", recorder.on_response)

    def only_here(route: Any) -> None:
        if route.request.url.startswith(site.url + "/"):
            route.continue_()
        else:
            route.abort()  # the network is cut off: nothing from another host

    context.route("**/*", only_here)
    return context, recorder


def watch(page: Page, recorder: Recorder) -> None:
    """Record the page's script errors and CSP violations (a 4xx page the test asked for
    is no error of the page)."""

    def on_console(message: Any) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            recorder.console_errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: recorder.console_errors.append(str(error)))


def sign_in_with_key(page: Page, key: str) -> None:
    page.goto("/console/sign-in")
    page.get_by_label("API key", exact=True).fill(key)
    page.get_by_role("button", name="Sign in with the key").click()
    page.wait_for_load_state()
    assert "/sign-in" not in page.url, page.content()[:2000]


def screenshot(page: Page, name: str) -> pathlib.Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def axe_violations(page: Page, impacts: tuple[str, ...] = ("serious", "critical")) -> list[Any]:
    """axe-core's violations of the page at `impacts` (run in the page through the
    DevTools protocol, which the page's CSP does not govern)."""
    page.evaluate(AXE.read_text(encoding="utf-8"))
    result = page.evaluate("async () => (await axe.run(document)).violations")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result
        if v["impact"] in impacts
    ]


def csrf_token(page: Page) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.content())
    assert found is not None
    return found.group(1)


@pytest.fixture(scope="module")
def admin(browser: Browser, site: Site) -> Iterator[tuple[BrowserContext, Recorder]]:
    """A browser profile signed in with the tenant admin's key (through the form)."""
    context, recorder = open_context(browser, site)
    page = context.new_page()
    watch(page, recorder)
    sign_in_with_key(page, site.keys["admin"])
    page.close()
    try:
        yield context, recorder
    finally:
        context.close()


@pytest.fixture
def page(admin: tuple[BrowserContext, Recorder]) -> Iterator[Page]:
    """A new page of the admin's profile; afterwards, no request left the origin and the
    page had no script error or CSP violation."""
    context, recorder = admin
    recorder.reset()
    opened = context.new_page()
    watch(opened, recorder)
    try:
        yield opened
    finally:
        opened.close()
    assert not recorder.foreign(), f"requests left the origin: {recorder.foreign()}"
    assert not recorder.console_errors, f"errors in the page: {recorder.console_errors}"


def check_page(context: BrowserContext, recorder: Recorder, name: str, path: str) -> None:
    """The page at `path` loads at most BUDGET_BYTES of JavaScript and CSS (gzipped), asks
    nothing of another origin, has no script error, no serious accessibility violation
    (axe-core), and fits 360 px; a screenshot of it at both widths is kept."""
    recorder.reset()
    page = context.new_page()
    watch(page, recorder)
    try:
        page.goto(path)
        page.wait_for_load_state("networkidle") if name != "live" else page.wait_for_timeout(500)
        weights = recorder.weight()
        assert weights, "the page loads its script and stylesheet"
        total = sum(weights.values())
        assert total <= BUDGET_BYTES, (total, weights)
        print(f"page weight {name}: {total} bytes gzipped ({len(weights)} files)")
        assert not recorder.foreign()
        assert not recorder.console_errors, recorder.console_errors
        violations = axe_violations(page)
        assert not violations, violations
        screenshot(page, f"page-{name}")
        page.set_viewport_size({"width": 360, "height": 740})
        width = page.evaluate("document.documentElement.scrollWidth")
        wide = page.evaluate(
            "[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect()"
            ".right > 361 && !e.closest('.table-wrap')).map(e => e.tagName + '.' + e.className)"
            ".slice(0, 5)"
        )
        assert width <= 360, f"{name} is {width} px wide at 360 px: {wide}"
        screenshot(page, f"page-{name}-360")
    finally:
        page.close()
