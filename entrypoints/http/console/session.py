"""The console's session: the API's tokens, sealed in a cookie; CSRF on every form.

Signing in exchanges an API key, or a username and password (and tenant), for the
API's access and refresh tokens through the same use case as `POST /api/v1/auth/token`.
The tokens, a CSRF token and the tenant a platform administrator picked are sealed
(AES-256-GCM under the master key, the `SecretSealer` port) into one cookie:

- `__Host-waypost-console`, `HttpOnly; Secure; SameSite=Strict; Path=/`: no script
  reads it, no other site sends it, and every server process that shares the master
  key opens it (`serve --workers N`, several machines): there is no session state
  that only one process knows. Browsers treat `http://127.0.0.1` and
  `http://localhost` as secure contexts, so a `Secure` cookie works there too.
- Every request authenticates the access token as the API does (a revoked token, a
  deleted user, a disabled tenant stop the session at once) and is authorized with
  the same permission table (`auth.authorize`, `core.domain.access`).
- Before the access token expires (within `REFRESH_MARGIN_SECONDS`, or a third of its
  life if that is less) the refresh token is exchanged for new tokens and the cookie
  is resealed. Refresh tokens rotate, and one used twice revokes its family: when two
  requests of one browser refresh at the same moment, one of them wins and the
  session ends when its access token expires (the user signs in again).
- Signing out revokes the refresh token (its family) and the access token.

CSRF: every state-changing request (anything but GET and HEAD) must carry the
session's CSRF token, in the form field `csrf_token` or the `X-CSRF-Token` header
(htmx sends it), and must not come from another origin (`Origin`,
`Sec-Fetch-Site`); otherwise 403. The sign-in form, before any session, uses a
double-submitted token in a cookie of its own.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from datetime import datetime
from typing import Any, Final
from urllib.parse import quote, urlsplit

import msgspec
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.enums import ScopeType
from litestar.handlers.base import BaseRouteHandler
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Message,
    Receive,
    Scope,
    Send,
)

from core.domain.commands import TokenRequest
from core.domain.errors import NotFound, Unauthenticated
from core.usecases import Services
from entrypoints.http import auth
from entrypoints.http.problems import HttpProblem

__all__ = [
    "COOKIE",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "PRE_COOKIE",
    "CsrfRefused",
    "Session",
    "SessionMiddleware",
    "csrf_guard",
    "open_session",
    "seal",
    "session_of",
]

BASE: Final = "/console"
SIGN_IN: Final = f"{BASE}/sign-in"
COOKIE: Final = "__Host-waypost-console"
#: The sign-in form's own CSRF cookie (no session exists yet).
PRE_COOKIE: Final = "__Host-waypost-sign-in"
CSRF_FIELD: Final = "csrf_token"
CSRF_HEADER: Final = "x-csrf-token"
#: Refresh when the access token has less than this left (or a third of its life).
REFRESH_MARGIN_SECONDS: Final = 120
#: The sealer's name for the cookie's envelopes (binds them to this use).
SEAL_NAME: Final = "console-session"
SEAL_VERSION: Final = 1
_SESSION_KEY: Final = "waypost.console.session"
_SAFE: Final = frozenset({"GET", "HEAD"})


class Session(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """What the cookie holds (sealed: the browser sees only ciphertext)."""

    access_token: str
    refresh_token: str
    #: When the access token expires (Unix seconds).
    expires_at: int
    csrf: str
    #: The tenant's slug a platform administrator acts in (None: the platform).
    tenant: str | None = None
    #: Who signed in, for the page header.
    who: str = ""


class CsrfRefused(HttpProblem):
    status = 403
    type = "urn:waypost:problem:csrf"
    title = "Forbidden"


def new_csrf() -> str:
    return secrets.token_urlsafe(24)


def _services(scope: Scope) -> Services:
    return auth.services_of(scope)


def seal(services: Services, session: Session) -> str:
    deps = services.identity_deps
    assert deps is not None
    sealed = deps.sealer.seal(
        msgspec.msgpack.encode(session), tenant_id=None, name=SEAL_NAME, version=SEAL_VERSION
    )
    return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")


def open_session(services: Services, text: str | None) -> Session | None:
    """The session a cookie holds; None for no cookie, or one this server cannot open."""
    if not text:
        return None
    deps = services.identity_deps
    assert deps is not None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        opened = deps.sealer.open(raw, tenant_id=None, name=SEAL_NAME, version=SEAL_VERSION)
        return msgspec.msgpack.decode(opened, type=Session)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        return None
    except Exception:  # an envelope error (another master key, tampering): no session
        return None


def session_cookie(value: str) -> Cookie:
    return Cookie(key=COOKIE, value=value, path="/", secure=True, httponly=True, samesite="strict")


def cleared_cookie(key: str = COOKIE) -> Cookie:
    return Cookie(
        key=key, value="", path="/", secure=True, httponly=True, samesite="strict", max_age=0
    )


def _cookie_header(cookie: Cookie) -> tuple[bytes, bytes]:
    name, value = cookie.to_encoded_header()
    return name, value


def _cookies(scope: Scope) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in scope["headers"]:
        if key == b"cookie":
            for part in value.decode("latin-1").split(";"):
                name, _, text = part.strip().partition("=")
                if name and name not in found:
                    found[name] = text
    return found


def cookie_value(scope: Scope, name: str) -> str | None:
    return _cookies(scope).get(name)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def tokens_expire_at(now: datetime, expires_in: int) -> int:
    return int(now.timestamp()) + expires_in


def _margin(services: Services) -> int:
    deps = services.identity_deps
    assert deps is not None
    life = int(deps.signer.ttl.total_seconds())
    return min(REFRESH_MARGIN_SECONDS, life // 3)


async def _refresh(services: Services, session: Session, scope: Scope) -> Session | None:
    """New tokens for the session's refresh token; None when they are refused."""
    try:
        answer = await services.identity.grant(
            TokenRequest(grant_type="refresh_token", refresh_token=session.refresh_token),
            auth.request_context(scope),
        )
    except Unauthenticated:
        return None
    return msgspec.structs.replace(
        session,
        access_token=answer.access_token,
        refresh_token=answer.refresh_token,
        expires_at=tokens_expire_at(services.deps.clock.now(), answer.expires_in),
    )


class SessionMiddleware:
    """Who the session's access token is (refreshed when about to expire), as an `Access`
    the API's guard and rate limit read; without a usable session, to the sign-in page."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        services = _services(scope)
        session = open_session(services, cookie_value(scope, COOKIE))
        if session is None:
            await _signed_out(scope, send, clear=cookie_value(scope, COOKIE) is not None)
            return
        now = int(services.deps.clock.now().timestamp())
        refreshed = None
        if session.expires_at - now <= _margin(services):
            refreshed = await _refresh(services, session, scope)
            if refreshed is None and session.expires_at <= now:
                await _signed_out(scope, send, clear=True)
                return
        current = refreshed or session
        ctx = auth.request_context(scope)
        try:
            access = await services.identity.authenticate(
                current.access_token, tenant=current.tenant, ctx=ctx
            )
        except Unauthenticated:
            await _signed_out(scope, send, clear=True)
            return
        except NotFound:  # the tenant a platform administrator picked is gone
            current = msgspec.structs.replace(current, tenant=None)
            refreshed = current
            access = await services.identity.authenticate(
                current.access_token, tenant=None, ctx=ctx
            )
        await auth.check_network(scope, access, ctx)
        scope["state"][auth.ACCESS_KEY] = access
        scope["state"][_SESSION_KEY] = current
        if refreshed is not None:
            send = _with_cookie(send, session_cookie(seal(services, refreshed)))
        await self.app(scope, receive, send)


def _with_cookie(send: Send, cookie: Cookie) -> Send:
    header = _cookie_header(cookie)

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), header]
        await send(message)

    return wrapped


def is_htmx(scope: Scope) -> bool:
    return _header(scope, b"hx-request") == "true"


async def _signed_out(scope: Scope, send: Send, *, clear: bool) -> None:
    """To the sign-in page, back here afterwards: a redirect for a page, `HX-Redirect` for
    htmx, a bare 401 for an event stream."""
    path = scope.get("path", BASE)
    query = scope.get("query_string", b"").decode("latin-1")
    back = path + ("?" + query if query else "")
    method = scope.get("method")
    target = f"{SIGN_IN}?next={quote(back, safe='/')}" if method == "GET" else SIGN_IN
    headers: list[tuple[bytes, bytes]] = [
        (b"cache-control", b"no-store"),
        (b"content-length", b"0"),
    ]
    if clear:
        headers.append(_cookie_header(cleared_cookie()))
    accept = _header(scope, b"accept") or ""
    if "text/event-stream" in accept:
        status = 401
    elif is_htmx(scope):
        status = 200
        headers.append((b"hx-redirect", target.encode()))
    else:
        status = 303
        headers.append((b"location", target.encode()))
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": status,
        "headers": headers,
    }
    await send(start)
    end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": b"", "more_body": False}
    await send(end)


def session_of(scope: Scope) -> Session:
    found: Session = scope["state"][_SESSION_KEY]
    return found


def same_origin(scope: Scope) -> bool:
    """Whether a state-changing request comes from a page of this origin (as far as the
    browser says: `Sec-Fetch-Site`, then `Origin` against `Host`)."""
    site = _header(scope, b"sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = _header(scope, b"origin")
    if origin is None or origin == "null":
        return origin is None
    host = _header(scope, b"host")
    return host is not None and urlsplit(origin).netloc == host


async def submitted_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The CSRF token a request carries: the header, else the form field."""
    header = _header(connection.scope, CSRF_HEADER.encode())
    if header:
        return header
    request: Request[Any, Any, Any] = Request(connection.scope, connection.receive)
    form = await request.form()
    value = form.get(CSRF_FIELD)
    return value if isinstance(value, str) else None


def tokens_match(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


async def csrf_guard(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Every state-changing console request: same origin, and the session's CSRF token."""
    if connection.scope.get("method") in _SAFE:
        return
    if not same_origin(connection.scope):
        raise CsrfRefused("The form was not sent from this site.")
    given = await submitted_token(connection)
    if not tokens_match(session_of(connection.scope).csrf, given):
        raise CsrfRefused("The form's security token is missing or out of date; reload the page.")
