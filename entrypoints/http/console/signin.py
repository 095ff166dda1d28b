"""Signing in and out, and the tenant a platform administrator acts in.

Sign-in takes an API key, or a username, password and tenant, and asks the same use
case as `POST /api/v1/auth/token` for tokens (`Identity.grant`: audited, rate
limited per address like the token endpoint). The sign-in form is protected
against login CSRF with a token double-submitted in a cookie of its own.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.params import FromQuery
from litestar.response import Template

from core.domain.access import Permission, Role
from core.domain.commands import TokenRequest
from core.domain.errors import Invalid, Unauthenticated
from core.ports import PageRequest
from core.usecases import Services
from entrypoints.http.auth import PUBLIC, authenticated, request_context, requires, services_of
from entrypoints.http.console.common import (
    NO_STORE,
    SIGNED_IN,
    frame,
    page,
    redirect,
)
from entrypoints.http.console.session import (
    BASE,
    PRE_COOKIE,
    SIGN_IN,
    CsrfRefused,
    Session,
    cleared_cookie,
    cookie_value,
    new_csrf,
    same_origin,
    seal,
    session_cookie,
    session_of,
    tokens_expire_at,
    tokens_match,
)

TENANTS_SHOWN: Final = 200


def _next(target: str | None) -> str:
    """Where to go after signing in: a console path, nothing else (no open redirect)."""
    if target and target.startswith(BASE) and not target.startswith("//") and "\\" not in target:
        return target
    return BASE


def _pre_cookie(value: str) -> Cookie:
    return Cookie(
        key=PRE_COOKIE, value=value, path="/", secure=True, httponly=True, samesite="strict"
    )


def _sign_in_page(
    *, csrf: str, next_: str, status: int = 200, error: str | None = None, **form: str
) -> Template:
    context: dict[str, Any] = {
        "csrf": csrf,
        "next": next_,
        "error": error,
        "form": form,
        "nav": [],
        "who": None,
        "tenant": None,
        "can": {},
        "platform_admin": False,
        "path": SIGN_IN,
    }
    return Template(
        template_name="sign_in.html",
        context=context,
        status_code=status,
        headers=NO_STORE,
        cookies=[_pre_cookie(csrf)],
    )


@get(SIGN_IN, opt=PUBLIC, include_in_schema=False)
async def sign_in_form(
    request: Request[Any, Any, Any], next: FromQuery[str | None] = None
) -> Template:
    """The sign-in page (its CSRF token reused while its cookie lives)."""
    csrf = cookie_value(request.scope, PRE_COOKIE) or new_csrf()
    return _sign_in_page(csrf=csrf, next_=_next(next))


@post(SIGN_IN, opt=PUBLIC, include_in_schema=False, status_code=200)
async def sign_in(request: Request[Any, Any, Any]) -> Response[Any]:
    services = services_of(request.scope)
    form = await request.form()
    expected = cookie_value(request.scope, PRE_COOKIE)
    given = form.get("csrf_token")
    if (
        not same_origin(request.scope)
        or expected is None
        or not tokens_match(expected, given if isinstance(given, str) else None)
    ):
        raise CsrfRefused("The sign-in form is out of date; reload the page and try again.")
    method = form.get("method")
    values = {k: v for k in ("api_key", "username", "tenant") if isinstance(v := form.get(k), str)}
    next_ = _next(form.get("next") if isinstance(form.get("next"), str) else None)
    if method == "api_key":
        grant = TokenRequest(grant_type="api_key", api_key=values.get("api_key", "").strip())
    else:
        password = form.get("password")
        grant = TokenRequest(
            grant_type="password",
            username=values.get("username", "").strip(),
            password=password if isinstance(password, str) else "",
            tenant=values.get("tenant", "").strip() or None,
        )
    ctx = request_context(request.scope)
    refused = "The credential was not accepted."
    try:
        answer = await services.identity.grant(grant, ctx)
        access = await services.identity.authenticate(answer.access_token, tenant=None, ctx=ctx)
    except Invalid as exc:
        messages = "; ".join(f"{e.field} {e.message}" for e in exc.errors) or exc.detail
        return _sign_in_page(
            csrf=expected, next_=next_, status=422, error=messages, method=str(method), **values
        )
    except Unauthenticated:
        return _sign_in_page(
            csrf=expected, next_=next_, status=401, error=refused, method=str(method), **values
        )
    session = Session(
        access_token=answer.access_token,
        refresh_token=answer.refresh_token,
        expires_at=tokens_expire_at(services.deps.clock.now(), answer.expires_in),
        csrf=new_csrf(),
        who=access.principal.name,
    )
    platform = Role.PLATFORM_ADMIN in access.principal.roles
    target = f"{BASE}/tenants" if platform and next_ == BASE else next_
    response = redirect(target)
    response.cookies.extend([session_cookie(seal(services, session)), cleared_cookie(PRE_COOKIE)])
    return response


async def end_session(
    services: Services, session: Session, request: Request[Any, Any, Any]
) -> None:
    """Revoke the session's tokens: the refresh token's family, and the access token."""
    ctx = request_context(request.scope)
    await services.identity.revoke(session.refresh_token, ctx)
    await services.identity.revoke(session.access_token, ctx)


@post(f"{BASE}/sign-out", opt=SIGNED_IN, include_in_schema=False)
async def sign_out(request: Request[Any, Any, Any]) -> Response[Any]:
    """Sign out: the tokens are revoked, the cookie cleared (any signed-in principal may)."""
    services = services_of(request.scope)
    await end_session(services, session_of(request.scope), request)
    response = redirect(SIGN_IN)
    response.cookies.append(cleared_cookie())
    return response


@get(f"{BASE}/tenants", opt=requires(Permission.TENANTS_MANAGE), include_in_schema=False)
async def tenants(request: Request[Any, Any, Any]) -> Template:
    """A platform administrator's choice of the tenant to act in."""
    services = services_of(request.scope)
    found = await services.tenants.list(PageRequest(limit=TENANTS_SHOWN, order="asc"))
    return page(request, "tenants.html", tenants=found)


@post(f"{BASE}/tenants", opt=requires(Permission.TENANTS_MANAGE), include_in_schema=False)
async def pick_tenant(request: Request[Any, Any, Any]) -> Response[Any]:
    services = services_of(request.scope)
    form = await request.form()
    slug = form.get("tenant")
    chosen = None
    if isinstance(slug, str) and slug:
        chosen = (await services.tenants.get(slug)).slug
    session = msgspec.structs.replace(session_of(request.scope), tenant=chosen)
    response = redirect(BASE if chosen else f"{BASE}/admin/users")
    response.cookies.append(session_cookie(seal(services, session)))
    return response


@get(BASE, opt=SIGNED_IN, include_in_schema=False)
async def home(request: Request[Any, Any, Any]) -> Response[Any]:
    """The first page the principal may see."""
    nav = frame(request)["nav"]
    if nav:
        return redirect(nav[0][1])
    return page(
        request, "error.html", status=403, title="Nothing to show", detail=_nothing(request)
    )


def _nothing(request: Request[Any, Any, Any]) -> str:
    roles = ", ".join(authenticated(request.scope).principal.roles) or "none"
    return f"No console page is open to your roles ({roles})."


PUBLIC_HANDLERS = [sign_in_form, sign_in]
HANDLERS = [sign_out, tenants, pick_tenant, home]
