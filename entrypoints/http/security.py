"""Security headers on every answer, and the CORS policy from the settings.

- `Content-Security-Policy`: the API answers JSON, so nothing may load from it
  (`default-src 'none'`); the interactive API page under `/schema` and the console
  under `/console` load their scripts and styles from this origin only, never
  inline (no `'unsafe-inline'`, no `'unsafe-eval'`), and post forms only here.
- `Strict-Transport-Security` when the request came over TLS (a browser ignores
  it over plain HTTP, and it must never pin a plain-HTTP development server).
- `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY` (and
  `frame-ancestors 'none'`), `Referrer-Policy: no-referrer` (`same-origin` on the
  console, whose forms are checked against the `Origin` they are sent from).

CORS is off unless origins are configured; the settings refuse a wildcard in
production mode.
"""

from __future__ import annotations

from typing import Final

from litestar.config.cors import CORSConfig
from litestar.types import Message, Scope

from entrypoints.settings import Settings

API_CSP: Final = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
#: The pages' policy: the API description's and the console's.
PAGE_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
HSTS: Final = "max-age=63072000; includeSubDomains"
DOCS_PATH: Final = "/schema"
CONSOLE_PATH: Final = "/console"

_COMMON: Final = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
#: The console's forms are checked against their `Origin`, which a browser sends as
#: "null" under `no-referrer`: its pages tell their own origin, and no one else.
_REFERRER: Final = (b"referrer-policy", b"no-referrer")
_CONSOLE_REFERRER: Final = (b"referrer-policy", b"same-origin")


async def add_security_headers(message: Message, scope: Scope) -> None:
    """The app's `before_send` hook: the headers go on the head of every HTTP answer."""
    if message["type"] != "http.response.start":
        return
    headers = list(message.get("headers", ()))
    path: str = scope.get("path", "")
    console = _under(path, CONSOLE_PATH)
    page = console or _under(path, DOCS_PATH)
    # A page that set its own policy (GraphiQL) keeps it: a second one would only narrow it.
    if not any(name == b"content-security-policy" for name, _ in headers):
        headers.append((b"content-security-policy", (PAGE_CSP if page else API_CSP).encode()))
    headers.extend(_COMMON)
    headers.append(_CONSOLE_REFERRER if console else _REFERRER)
    if scope.get("scheme") == "https":
        headers.append((b"strict-transport-security", HSTS.encode()))
    message["headers"] = headers


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def cors_config(settings: Settings) -> CORSConfig | None:
    origins = settings.http.cors_origins
    if not origins:
        return None
    return CORSConfig(
        allow_origins=list(origins),
        allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=[
            "Authorization",
            "Content-Type",
            "Idempotency-Key",
            "X-Request-ID",
            "X-Tenant",
        ],
        expose_headers=["Location", "Retry-After", "X-Request-ID", "Idempotent-Replayed"],
        allow_credentials=False,
        max_age=600,
    )
