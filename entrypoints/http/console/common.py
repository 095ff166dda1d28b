"""What every console page shares: templates, assets, the page frame, forms, errors as pages."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, TypeVar
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from litestar import Request, Response
from litestar.connection import ASGIConnection
from litestar.datastructures import FormMultiDict
from litestar.exceptions import HTTPException
from litestar.handlers.base import BaseRouteHandler
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.template.config import TemplateConfig
from litestar.types import ExceptionHandlersMap

from core.domain.access import Permission, Role
from core.domain.errors import DomainError, FieldError, Forbidden, NotFound
from core.domain.ids import is_ulid
from core.ports import Unavailable
from core.usecases import Access
from entrypoints.http import auth
from entrypoints.http.assets import Assets
from entrypoints.http.console.session import (
    BASE,
    CSRF_FIELD,
    session_of,
)
from entrypoints.http.paging import HasId, decode_cursor, encode_cursor
from entrypoints.http.problems import (
    EXCEPTION_HANDLERS,
    UNAVAILABLE_RETRY_AFTER,
    HttpProblem,
    status_of,
)

__all__ = [
    "ASSETS",
    "BASE",
    "HTML_ERRORS",
    "PAGE_SIZE",
    "check_id",
    "page",
    "redirect",
    "template_config",
]

T = TypeVar("T", bound=HasId)

HERE: Final = pathlib.Path(__file__).parent
PAGE_SIZE: Final = 50
NO_STORE: Final = {"Cache-Control": "no-store"}
ASSETS = Assets(
    f"{BASE}/static",
    HERE / "static",
    ["console.css", "console.js", "htmx-2.0.11.min.js", "htmx-LICENSE.txt"],
)

#: The navigation: (label, path, the permission that shows it).
NAV: Final = (
    ("Artifacts", f"{BASE}/artifacts", Permission.EVENTS_READ),
    ("Events", f"{BASE}/events", Permission.EVENTS_READ),
    ("Receivers", f"{BASE}/receivers", Permission.RECEIVERS_READ),
    ("Groups", f"{BASE}/groups", Permission.GROUPS_READ),
    ("Live", f"{BASE}/live", Permission.EVENTS_READ),
    ("Webhooks", f"{BASE}/subscriptions", Permission.SUBSCRIPTIONS_READ),
    ("Users", f"{BASE}/admin/users", Permission.USERS_MANAGE),
    ("API keys", f"{BASE}/admin/api-keys", Permission.API_KEYS_MANAGE),
    ("Audit log", f"{BASE}/admin/audit", Permission.AUDIT_READ),
    ("Tenants", f"{BASE}/tenants", Permission.TENANTS_MANAGE),
)


#: The `opt` of a console page any signed-in principal may open (home, sign-out).
SIGNED_IN: Final = {"signed_in": True}


async def authorize(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """The console's guard: the API's (`auth.guard`: the permission a page declares,
    403 and audited otherwise), or only a session for the few `SIGNED_IN` pages."""
    if handler.opt.get("signed_in") is True:
        return
    await auth.guard(connection, handler)


def _time(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).isoformat()


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False)


def _query(**params: Any) -> str:
    """A query string of the given parameters that have a value."""
    return urlencode({k: v for k, v in params.items() if v not in (None, "")})


_NVRPP: Final = ("name", "version", "release", "platform_id", "package")


def _artifact_query(artifact: Any) -> str:
    """The query string of an artifact page (from an event, a completion, a key or a dict);
    one per row of a page of events, so cheaper than `urlencode`."""
    get = artifact.get if isinstance(artifact, Mapping) else artifact.__getattribute__
    return "&".join(f"{name}={quote(str(get(name)), safe='')}" for name in _NVRPP)


def _errors_under(errors: Mapping[str, list[str]], prefix: str) -> list[tuple[str, str]]:
    """(pointer, message) of every error at `prefix` or below it."""
    return [
        (pointer, message)
        for pointer, messages in errors.items()
        if pointer == prefix or pointer.startswith(prefix + "/")
        for message in messages
    ]


def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,  # templates ship with the code: no stat() per render
    )
    env.filters["time"] = _time
    env.filters["iso"] = _iso
    env.filters["pretty"] = _pretty
    env.globals["asset"] = ASSETS.url
    env.globals["query"] = _query
    env.globals["artifact_query"] = _artifact_query
    env.globals["errors_under"] = _errors_under
    env.globals["CSRF_FIELD"] = CSRF_FIELD
    env.globals["BASE"] = BASE
    return env


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    """The app's template engine: the console's Jinja2 templates (autoescaped)."""
    env = environment()
    return TemplateConfig(engine=JinjaTemplateEngine.from_environment(env))


def frame(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The context every signed-in page gets: who, where, what they may do."""
    access = auth.authenticated(request.scope)
    session = session_of(request.scope)
    perms = access.principal.permissions
    return {
        "access": access,
        "who": session.who or access.principal.name,
        "tenant": access.tenant_slug,
        "platform_admin": Role.PLATFORM_ADMIN in access.principal.roles,
        "csrf": session.csrf,
        "can": {p.value.replace(":", "_"): p in perms for p in Permission},
        "nav": [
            (label, path) for label, path, needs in NAV if _shows(access, needs) and needs in perms
        ],
        "path": request.url.path,
    }


def _shows(access: Access, needs: Permission) -> bool:
    """Tenant pages need a tenant; a platform administrator without one sees its own."""
    if needs == Permission.TENANTS_MANAGE:
        return True
    return access.tenant_id is not None or needs in (
        Permission.USERS_MANAGE,
        Permission.API_KEYS_MANAGE,
        Permission.AUDIT_READ,
    )


def page(
    request: Request[Any, Any, Any],
    template: str,
    *,
    status: int = 200,
    **context: Any,
) -> Template:
    return Template(
        template_name=template,
        context={**frame(request), **context},
        status_code=status,
        headers=NO_STORE,
    )


def redirect(path: str) -> Redirect:
    return Redirect(path, status_code=303, headers=NO_STORE)


def permissions(request: Request[Any, Any, Any]) -> frozenset[Permission]:
    return auth.authenticated(request.scope).principal.permissions


def after(kind: str, cursor: str | None) -> str | None:
    """The last id a list's cursor names (a 400 for a cursor of another list)."""
    return None if not cursor else decode_cursor(kind, "desc", cursor)


def cut(kind: str, items: list[T], limit: int) -> tuple[list[T], str | None]:
    """The first `limit` items, and the cursor to the next ones when there are more (the
    store was asked for one more)."""
    if len(items) > limit:
        items = items[:limit]
        return items, encode_cursor(kind, "desc", items[-1].id)
    return items, None


def check_id(kind: str, ident: str) -> None:
    if not is_ulid(ident):
        raise NotFound(f"No {kind} {ident}.")


def field(form: FormMultiDict, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def errors_by_field(errors: Iterable[FieldError]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for error in errors:
        found.setdefault(error.field, []).append(error.message)
    return found


# --- errors as pages --------------------------------------------------------------------------

_TITLES: Final = {
    400: "The request is malformed",
    401: "Sign in first",
    403: "Not allowed",
    404: "Not found",
    409: "Conflict",
    413: "Too large",
    422: "Refused",
    429: "Too many requests",
    503: "Busy",
}
_UNAVAILABLE_TITLE: Final = "Unavailable"


def _error_page(
    request: Request[Any, Any, Any], status: int, detail: str, title: str | None = None
) -> Response[Any]:
    context: dict[str, Any] = {"status": status, "title": title or _TITLES.get(status, "Error")}
    context["detail"] = detail
    try:
        context.update(frame(request))
    except (KeyError, Forbidden):  # no session (yet): the page without navigation
        context.update(nav=[], who=None, tenant=None, csrf="", can={}, path=request.url.path)
        context["platform_admin"] = False
    return Template(
        template_name="error.html", context=context, status_code=status, headers=NO_STORE
    )


def _domain(request: Request[Any, Any, Any], exc: DomainError) -> Response[Any]:
    return _error_page(request, status_of(exc), exc.detail)


def _http_problem(request: Request[Any, Any, Any], exc: HttpProblem) -> Response[Any]:
    response = _error_page(request, exc.status, exc.detail)
    for name, value in exc.headers.items():
        response.headers[name] = value
    return response


def _unavailable(request: Request[Any, Any, Any], exc: Unavailable) -> Response[Any]:
    """The database cannot serve (the store logged why, once): a page, as the API's 503."""
    response = _error_page(
        request,
        503,
        "The database cannot serve right now; nothing was saved. Try again in a moment.",
        _UNAVAILABLE_TITLE,
    )
    response.headers["Retry-After"] = str(UNAVAILABLE_RETRY_AFTER)
    return response


def _litestar(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if exc.status_code >= 500:
        return EXCEPTION_HANDLERS[Exception](request, exc)
    return _error_page(request, exc.status_code, _TITLES.get(exc.status_code, "Error") + ".")


#: The console answers refusals as pages (the API answers problem documents).
HTML_ERRORS: ExceptionHandlersMap = {
    Unavailable: _unavailable,
    DomainError: _domain,
    HttpProblem: _http_problem,
    HTTPException: _litestar,
    Exception: EXCEPTION_HANDLERS[Exception],
}
