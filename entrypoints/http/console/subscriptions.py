"""The console's webhooks: subscriptions (list, create, change, detail), their deliveries with a
status filter (`dead`: the dead letters), a delivery's attempts, and what a manager does:
enable or disable, ping, replay, redrive, read or rotate the signing secret, delete (admins).

The secret is shown only as the answer of an explicit POST (read or rotate, both audited
by the use case), never in a list, a URL or a page that can be reloaded into it: as the
API-key page shows a new key once.
"""

from __future__ import annotations

import re
from typing import Any, Final

from litestar import Request, Response, get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Template

from core.domain.access import Permission
from core.domain.commands import (
    CreateSubscription,
    PatchSubscription,
    Redrive,
    Replay,
    RotateSecret,
)
from core.domain.delivery import DeliveryStatus
from core.domain.errors import DomainError, FieldError, Invalid
from core.domain.subscriptions import Ordering, Subscription, SubscriptionFilter
from core.ports import PageRequest
from core.usecases import Services
from core.usecases.subscriptions import MAX_GRACE_SECONDS
from entrypoints.http.auth import actor_of, requires, services_of
from entrypoints.http.console.common import (
    BASE,
    PAGE_SIZE,
    after,
    check_id,
    cut,
    errors_by_field,
    field,
    page,
    redirect,
)
from entrypoints.http.console.pages import parse_moment
from entrypoints.http.problems import BadRequest, status_of

PATH: Final = f"{BASE}/subscriptions"
_SUBSCRIPTIONS: Final = "console-subscriptions"
_DELIVERIES: Final = "console-deliveries"
STATUSES: Final = tuple(s.value for s in DeliveryStatus)
ORDERINGS: Final = ("none", "artifact")
_ITEMS: Final = re.compile(r"[\s,]+")
#: The fields of the create (and change) form.
FORM_FIELDS: Final = (
    "name", "url", "description", "types", "subjects", "nvrpp_name", "version", "release",
    "platform_id", "package", "success", "ordering",
)  # fmt: skip
GRACE_HOURS_DEFAULT: Final = 24


def _items(text: str) -> tuple[str, ...] | None:
    found = tuple(part for part in _ITEMS.split(text.strip()) if part)
    return found or None


# --- the list ---------------------------------------------------------------------------------


@get(PATH, opt=requires(Permission.SUBSCRIPTIONS_READ), include_in_schema=False)
async def subscriptions(
    *,
    request: Request[Any, Any, Any],
    cursor: FromQuery[str | None] = None,
    rows: FromQuery[bool] = False,
) -> Template:
    """The tenant's subscriptions, newest first (never their secrets)."""
    services = services_of(request.scope)
    found = await services.subscriptions.list(
        actor_of(request.scope),
        PageRequest(limit=PAGE_SIZE + 1, after=after(_SUBSCRIPTIONS, cursor)),
    )
    items, next_cursor = cut(_SUBSCRIPTIONS, found, PAGE_SIZE)
    template = "subscriptions_rows.html" if rows else "subscriptions.html"
    return page(request, template, subscriptions=items, next_cursor=next_cursor)


# --- create -----------------------------------------------------------------------------------


def _new_form(request: Request[Any, Any, Any], *, status: int = 200, **context: Any) -> Template:
    defaults: dict[str, Any] = {
        "form": {**dict.fromkeys(FORM_FIELDS, ""), "ordering": "none", "enabled": True},
        "errors": {},
        "error_list": [],
        "editing": None,
    }
    return page(
        request,
        "subscription_new.html",
        status=status,
        orderings=ORDERINGS,
        **{**defaults, **context},
    )


@get(f"{PATH}/new", opt=requires(Permission.SUBSCRIPTIONS_CREATE), include_in_schema=False)
async def new_subscription(request: Request[Any, Any, Any]) -> Template:
    """The form that creates a subscription."""
    return _new_form(request)


def _command(values: dict[str, Any]) -> CreateSubscription:
    """The create command of a form; Invalid (by JSON pointer, as the API names them) for
    what the form itself can get wrong (the rest is the use case's)."""
    errors: list[FieldError] = []
    success = {"": None, "true": True, "false": False}.get(values["success"], ...)
    if success is ...:
        errors.append(FieldError("/filter/success", "must be any, true or false"))
    ordering = values["ordering"] or "none"
    if ordering not in ORDERINGS:
        errors.append(FieldError("/ordering", "must be none or artifact"))
    if errors:
        raise Invalid("The subscription is invalid", errors)
    chosen: Ordering = "artifact" if ordering == "artifact" else "none"
    return CreateSubscription(
        name=values["name"],
        url=values["url"].strip(),
        description=values["description"],
        enabled=values["enabled"],
        filter=SubscriptionFilter(
            types=_items(values["types"]),
            subjects=_items(values["subjects"]),
            name=values["nvrpp_name"] or None,
            version=values["version"] or None,
            release=values["release"] or None,
            platform_id=values["platform_id"] or None,
            package=values["package"] or None,
            success=None if success is ... else success,
        ),
        ordering=chosen,
    )


@post(
    PATH,
    opt=requires(Permission.SUBSCRIPTIONS_CREATE),
    include_in_schema=False,
    status_code=200,
)
async def create_subscription(request: Request[Any, Any, Any]) -> Response[Any]:
    services = services_of(request.scope)
    form = await request.form()
    values: dict[str, Any] = {k: field(form, k) for k in FORM_FIELDS}
    values["enabled"] = field(form, "enabled") == "true"
    try:
        made = await services.subscriptions.create(actor_of(request.scope), _command(values))
    except DomainError as exc:
        return _new_form(
            request,
            status=status_of(exc),
            form=values,
            errors=errors_by_field(exc.errors),
            error_list=exc.errors,
            detail=exc.detail,
        )
    return redirect(f"{PATH}/{made.id}")


def _form_of(found: Subscription) -> dict[str, Any]:
    """The create form's values of a subscription (for its change form)."""
    f = found.filter
    success = {None: "", True: "true", False: "false"}[f.success]
    return {
        "name": found.name,
        "url": found.url,
        "description": found.description,
        "types": " ".join(f.types or ()),
        "subjects": " ".join(f.subjects or ()),
        "nvrpp_name": f.name or "",
        "version": f.version or "",
        "release": f.release or "",
        "platform_id": f.platform_id or "",
        "package": f.package or "",
        "success": success,
        "ordering": found.ordering,
        "enabled": found.enabled,
    }


@get(
    f"{PATH}/{{subscription_id:str}}/edit",
    opt=requires(Permission.SUBSCRIPTIONS_UPDATE),
    include_in_schema=False,
)
async def edit_subscription(
    request: Request[Any, Any, Any], subscription_id: FromPath[str]
) -> Template:
    """The form that changes a subscription: its URL, filter, ordering, name, state."""
    services = services_of(request.scope)
    check_id("subscription", subscription_id)
    found = await services.subscriptions.get(actor_of(request.scope), subscription_id)
    return _new_form(request, form=_form_of(found), editing=found)


@post(
    f"{PATH}/{{subscription_id:str}}",
    opt=requires(Permission.SUBSCRIPTIONS_UPDATE),
    include_in_schema=False,
    status_code=200,
)
async def change_subscription(
    request: Request[Any, Any, Any], subscription_id: FromPath[str]
) -> Response[Any]:
    services = services_of(request.scope)
    check_id("subscription", subscription_id)
    actor = actor_of(request.scope)
    found = await services.subscriptions.get(actor, subscription_id)
    form = await request.form()
    values: dict[str, Any] = {k: field(form, k) for k in FORM_FIELDS}
    values["enabled"] = field(form, "enabled") == "true"
    try:
        made = _command(values)
        cmd = PatchSubscription(
            name=made.name,
            url=made.url,
            description=made.description,
            enabled=made.enabled,
            filter=made.filter,
            ordering=made.ordering,
        )
        await services.subscriptions.patch(actor, subscription_id, cmd)
    except DomainError as exc:
        if status_of(exc) == 404:
            raise
        return _new_form(
            request,
            status=status_of(exc),
            form=values,
            editing=found,
            errors=errors_by_field(exc.errors),
            error_list=exc.errors,
            detail=exc.detail,
        )
    return redirect(f"{PATH}/{subscription_id}")


# --- one subscription and its deliveries ------------------------------------------------------


def _status(text: str) -> DeliveryStatus | None:
    if not text:
        return None
    if text not in STATUSES:
        raise BadRequest(
            "A filter is malformed.",
            [FieldError("status", "must be pending, delivering, succeeded or dead")],
        )
    return DeliveryStatus(text)


async def _subscription_page(
    request: Request[Any, Any, Any],
    services: Services,
    subscription_id: str,
    *,
    status_filter: str = "",
    cursor: str | None = None,
    rows: bool = False,
    status: int = 200,
    **context: Any,
) -> Template:
    check_id("subscription", subscription_id)
    actor = actor_of(request.scope)
    found = await services.subscriptions.get(actor, subscription_id)
    deliveries = await services.subscriptions.deliveries(
        actor,
        subscription_id,
        _status(status_filter),
        PageRequest(limit=PAGE_SIZE + 1, after=after(_DELIVERIES, cursor)),
    )
    items, next_cursor = cut(_DELIVERIES, deliveries, PAGE_SIZE)
    defaults: dict[str, Any] = {
        "secret": None,
        "notice": None,
        "error_list": [],
        "errors": {},
        "grace_hours": GRACE_HOURS_DEFAULT,
    }
    return page(
        request,
        "deliveries_rows.html" if rows else "subscription.html",
        status=status,
        subscription=found,
        deliveries=items,
        next_cursor=next_cursor,
        status_filter=status_filter,
        statuses=STATUSES,
        **{**defaults, **context},
    )


@get(
    f"{PATH}/{{subscription_id:str}}",
    opt=requires(Permission.SUBSCRIPTIONS_READ),
    include_in_schema=False,
)
async def subscription(
    *,
    request: Request[Any, Any, Any],
    subscription_id: FromPath[str],
    status: FromQuery[str] = "",
    cursor: FromQuery[str | None] = None,
    rows: FromQuery[bool] = False,
) -> Template:
    """One subscription, and its deliveries newest first (`status=dead`: its dead letters)."""
    services = services_of(request.scope)
    return await _subscription_page(
        request, services, subscription_id, status_filter=status, cursor=cursor, rows=rows
    )


@get(
    f"{PATH}/{{subscription_id:str}}/deliveries/{{delivery_id:str}}",
    opt=requires(Permission.SUBSCRIPTIONS_READ),
    include_in_schema=False,
)
async def delivery(
    *, request: Request[Any, Any, Any], subscription_id: FromPath[str], delivery_id: FromPath[str]
) -> Template:
    """A delivery and every attempt made."""
    services = services_of(request.scope)
    check_id("subscription", subscription_id)
    check_id("delivery", delivery_id)
    actor = actor_of(request.scope)
    found = await services.subscriptions.get(actor, subscription_id)
    shown, attempts = await services.subscriptions.delivery(actor, subscription_id, delivery_id)
    return page(request, "delivery.html", subscription=found, delivery=shown, attempts=attempts)


# --- changes ----------------------------------------------------------------------------------


async def _refused(
    request: Request[Any, Any, Any],
    services: Services,
    subscription_id: str,
    exc: DomainError | BadRequest,
) -> Template:
    """The subscription's page with why an act was refused (a 404 stays a 404 page)."""
    status = exc.status if isinstance(exc, BadRequest) else status_of(exc)
    if status == 404:
        raise exc
    return await _subscription_page(
        request,
        services,
        subscription_id,
        status=status,
        error_list=exc.errors,
        errors=errors_by_field(exc.errors),
        detail=exc.detail,
    )


@post(
    f"{PATH}/{{subscription_id:str}}/enabled",
    opt=requires(Permission.SUBSCRIPTIONS_UPDATE),
    include_in_schema=False,
    status_code=200,
)
async def set_enabled(
    request: Request[Any, Any, Any], subscription_id: FromPath[str]
) -> Response[Any]:
    """Enable (what waited is delivered) or disable (messages wait as deliveries)."""
    services = services_of(request.scope)
    check_id("subscription", subscription_id)
    form = await request.form()
    cmd = PatchSubscription(enabled=field(form, "enabled") == "true")
    try:
        await services.subscriptions.patch(actor_of(request.scope), subscription_id, cmd)
    except DomainError as exc:
        return await _refused(request, services, subscription_id, exc)
    return redirect(f"{PATH}/{subscription_id}")


@post(
    f"{PATH}/{{subscription_id:str}}/ping",
    opt=requires(Permission.SUBSCRIPTIONS_UPDATE),
    include_in_schema=False,
    status_code=200,
)
async def ping(request: Request[Any, Any, Any], subscription_id: FromPath[str]) -> Response[Any]:
    services = services_of(request.scope)
    check_id("subscription", subscription_id)
    message = await services.subscriptions.ping(actor_of(request.scope), subscription_id)
    notice = f"A test message is on its way (webhook-id {message})."
    return await _subscription_page(request, services, subscription_id, notice=notice)


@post(
    f"{PATH}/{{subscription_id:str}}/replay",
    opt=requires(Permission.SUBSCRIPTIONS_UPDATE),
    include_in_schema=False,
    status_code=200,
)
async def replay(request: Request[Any, Any, Any], subscription_id: FromPath[str]) -> Response[Any]:
    """Deliver every matching message after a log position (again)."""
    services = services_of(request.scope)
    check_id("subscription", subscription_id)
    form = await request.form()
    text = field(form, "after").strip()
    try:
        if not text.isdigit():
            raise BadRequest(
                "The replay is invalid.",
                [FieldError("/after", "must be a log position (0 or more)")],
            )
        queued = await services.subscriptions.replay(
            actor_of(request.scope), subscription_id, Replay(after=int(text))
        )
    except (DomainError, BadRequest) as exc:
        return await _refused(request, services, subscription_id, exc)
    notice = f"{queued} message(s) after position {int(text)} queued for delivery."
    return await _subscription_page(request, services, subscription_id, notice=notice)


@post(
    f"{PATH}/{{subscription_id:str}}/redrive",
    opt=requires(Permission.SUBSCRIPTIONS_UPDATE),
    include_in_schema=False,
    status_code=200,
)
async def redrive(request: Request[Any, Any, Any], subscription_id: FromPath[str]) -> Response[Any]:
    """Send the dead deliveries (of messages committed in [since, until)) again."""
    services = services_of(request.scope)
    check_id("subscription", subscription_id)
    form = await request.form()
    try:
        cmd = Redrive(
            since=parse_moment("/since", field(form, "since")),
            until=parse_moment("/until", field(form, "until")),
        )
        done = await services.subscriptions.redrive(actor_of(request.scope), subscription_id, cmd)
    except (DomainError, BadRequest) as exc:
        return await _refused(request, services, subscription_id, exc)
    notice = f"{done} dead deliver{'y' if done == 1 else 'ies'} sent again."
    return await _subscription_page(request, services, subscription_id, notice=notice)


@post(
    f"{PATH}/{{subscription_id:str}}/secret",
    opt=requires(Permission.SUBSCRIPTIONS_UPDATE),
    include_in_schema=False,
    status_code=200,
)
async def read_secret(
    request: Request[Any, Any, Any], subscription_id: FromPath[str]
) -> Response[Any]:
    """The secret that signs now, on this answer only (audited)."""
    services = services_of(request.scope)
    check_id("subscription", subscription_id)
    text = await services.subscriptions.secret(actor_of(request.scope), subscription_id)
    return await _subscription_page(
        request, services, subscription_id, secret={"text": text, "rotated": False}
    )


@post(
    f"{PATH}/{{subscription_id:str}}/secret/rotate",
    opt=requires(Permission.SUBSCRIPTIONS_UPDATE),
    include_in_schema=False,
    status_code=200,
)
async def rotate_secret(
    request: Request[Any, Any, Any], subscription_id: FromPath[str]
) -> Response[Any]:
    """A new secret signs from now on; the old one beside it for the grace (in hours)."""
    services = services_of(request.scope)
    check_id("subscription", subscription_id)
    form = await request.form()
    text = field(form, "grace_hours").strip()
    most = MAX_GRACE_SECONDS // 3600
    try:
        if not text.isdigit() or int(text) > most:
            raise BadRequest(
                "The rotation is invalid.",
                [FieldError("/grace_hours", f"must be 0 to {most} hours")],
            )
        hours = int(text)
        made = await services.subscriptions.rotate(
            actor_of(request.scope), subscription_id, RotateSecret(grace_seconds=hours * 3600)
        )
    except (DomainError, BadRequest) as exc:
        return await _refused(request, services, subscription_id, exc)
    return await _subscription_page(
        request,
        services,
        subscription_id,
        secret={"text": made, "rotated": True, "grace_hours": hours},
    )


@post(
    f"{PATH}/{{subscription_id:str}}/delete",
    opt=requires(Permission.SUBSCRIPTIONS_DELETE),
    include_in_schema=False,
    status_code=200,
)
async def delete_subscription(
    request: Request[Any, Any, Any], subscription_id: FromPath[str]
) -> Response[Any]:
    services = services_of(request.scope)
    check_id("subscription", subscription_id)
    await services.subscriptions.delete(actor_of(request.scope), subscription_id)
    return redirect(PATH)


HANDLERS = [
    subscriptions,
    new_subscription,
    create_subscription,
    edit_subscription,
    change_subscription,
    subscription,
    delivery,
    set_enabled,
    ping,
    replay,
    redrive,
    read_secret,
    rotate_secret,
    delete_subscription,
]
