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

from entrypoints.http.request_id import request_id_header
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
_CSP: Final = b"content-security-policy"
#: What each kind of answer gets, encoded once (the policy first: see `security_headers`).
_Headers = tuple[tuple[bytes, bytes], ...]
_API: Final[_Headers] = ((_CSP, API_CSP.encode()), *_COMMON, _REFERRER)
_PAGE: Final[_Headers] = ((_CSP, PAGE_CSP.encode()), *_COMMON, _REFERRER)
_CONSOLE: Final[_Headers] = ((_CSP, PAGE_CSP.encode()), *_COMMON, _CONSOLE_REFERRER)
_HSTS: Final = (b"strict-transport-security", HSTS.encode())


def security_headers(headers: list[tuple[bytes, bytes]], scope: Scope) -> None:
    """Append the security headers of the answer to `scope` to `headers` (its head's)."""
    path: str = scope.get("path", "")
    if _under(path, CONSOLE_PATH):
        chosen = _CONSOLE
    elif _under(path, DOCS_PATH):
        chosen = _PAGE
    else:
        chosen = _API
    for name, _ in headers:
        # A page that set its own policy (GraphiQL) keeps it: a second one would only narrow it.
        if name == _CSP:
            chosen = chosen[1:]
            break
    headers.extend(chosen)
    if scope.get("scheme") == "https":
        headers.append(_HSTS)


async def add_answer_headers(message: Message, scope: Scope) -> None:
    """The app's one `before_send` hook: the request id (`X-Request-ID`) and the security
    headers go on the head of every HTTP answer (404 and 405 included, which never reach
    a route's middleware). One hook, not two: Litestar awaits each hook for each message
    of each answer."""
    if message["type"] != "http.response.start":
        return
    headers = list(message.get("headers", ()))
    headers.append(request_id_header(scope))
    security_headers(headers, scope)
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
