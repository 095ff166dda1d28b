"""Security headers on every answer, and the CORS policy from the settings.

- `Content-Security-Policy`: the API answers JSON, so nothing may load from it
  (`default-src 'none'`); the interactive API page under `/schema` loads Swagger
  UI from its CDN and gets just that.
- `Strict-Transport-Security` when the request came over TLS (a browser ignores
  it over plain HTTP, and it must never pin a plain-HTTP development server).
- `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY` (and
  `frame-ancestors 'none'`), `Referrer-Policy: no-referrer`.

CORS is off unless origins are configured; the settings refuse a wildcard in
production mode.
"""

from __future__ import annotations

from typing import Final

from litestar.config.cors import CORSConfig
from litestar.types import Message, Scope

from entrypoints.settings import Settings

API_CSP: Final = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
DOCS_CSP: Final = (
    "default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "img-src 'self' data: https://cdn.jsdelivr.net; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HSTS: Final = "max-age=63072000; includeSubDomains"
DOCS_PATH: Final = "/schema"

_COMMON: Final = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
)


async def add_security_headers(message: Message, scope: Scope) -> None:
    """The app's `before_send` hook: the headers go on the head of every HTTP answer."""
    if message["type"] != "http.response.start":
        return
    headers = list(message.get("headers", ()))
    path: str = scope.get("path", "")
    docs = path == DOCS_PATH or path.startswith(DOCS_PATH + "/")
    # A page that set its own policy (GraphiQL) keeps it: a second one would only narrow it.
    if not any(name == b"content-security-policy" for name, _ in headers):
        headers.append((b"content-security-policy", (DOCS_CSP if docs else API_CSP).encode()))
    headers.extend(_COMMON)
    if scope.get("scheme") == "https":
        headers.append((b"strict-transport-security", HSTS.encode()))
    message["headers"] = headers


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
