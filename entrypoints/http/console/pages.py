"""The console's tenant pages: the artifact view, receivers and events.

Every handler calls the use cases directly (no HTTP round trip to the API) and
declares the permission it needs, checked by the same guard as the API's routes.
Lists page by keyset cursors (`entrypoints.http.paging`): a page of 50 costs the
same at the millionth event as at the first. With `rows=1` (what htmx asks for when
the last row scrolls into view) a list answers only its next rows.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Final

from litestar import Request, Response, get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Template

from core.domain.access import Permission
from core.domain.commands import RegisterReceiver
from core.domain.errors import DomainError, FieldError
from core.domain.fields import check_name
from core.domain.model import Event, Nvrpp
from core.ports import EventFilter, PageRequest, ReceiverFilter
from core.usecases import Actor, Services
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
    permissions,
    redirect,
)
from entrypoints.http.problems import BadRequest, status_of

NVRPP: Final = ("name", "version", "release", "platform_id", "package")
EVENT_FILTERS: Final = (*NVRPP, "success", "event_receiver_id", "since", "until")
RECENT_SCANNED: Final = 200
RECENT_SHOWN: Final = 12
RECEIVER_EVENTS: Final = 20
_EVENTS: Final = "console-events"
_RECEIVERS: Final = "console-receivers"
EXAMPLE_SCHEMA: Final = """{
  "type": "object",
  "properties": {
    "build": {"type": "integer"},
    "commit": {"type": "string"}
  },
  "required": ["build"]
}"""


def parse_moment(name: str, text: str) -> datetime | None:
    """A time from a form: RFC 3339, or a `datetime-local` value taken as UTC."""
    text = text.strip()
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(
            "A filter is malformed.",
            [FieldError(name, "must be a date and time (YYYY-MM-DDTHH:MM, UTC)")],
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _success(text: str) -> bool | None:
    if text in ("", "any"):
        return None
    if text in ("true", "false"):
        return text == "true"
    raise BadRequest("A filter is malformed.", [FieldError("success", "must be true or false")])


async def _names(services: Services, actor: Actor, events: list[Event]) -> dict[str, str]:
    """The receivers' names for a page of events."""
    found = await services.receivers.get_many(actor, {e.event_receiver_id for e in events})
    return {ident: f"{r.name} ({r.type} {r.version})" for ident, r in found.items()}


# --- the artifact view ------------------------------------------------------------------------


@get(f"{BASE}/artifacts", opt=requires(Permission.EVENTS_READ), include_in_schema=False)
async def artifact(request: Request[Any, Any, Any]) -> Template:
    """One artifact (NVRPP): its events, its gates member by member, its completions; the
    URL (the five fields as query parameters) is the page to share."""
    services = services_of(request.scope)
    actor = actor_of(request.scope)
    given = {name: request.query_params.get(name, "") for name in NVRPP}
    if not any(given.values()):
        recent = await services.events.list(actor, EventFilter(), PageRequest(limit=RECENT_SCANNED))
        keys = list(dict.fromkeys(e.key for e in recent))[:RECENT_SHOWN]
        return page(request, "artifact.html", key=given, view=None, recent=keys, errors={})
    errors: list[FieldError] = []
    for name in NVRPP:
        check_name(errors, name, given[name])
    if errors:
        return page(
            request,
            "artifact.html",
            status=400,
            key=given,
            view=None,
            recent=[],
            errors=errors_by_field(errors),
        )
    key = Nvrpp(**given)
    view = await services.artifacts.view(actor, key, limit=PAGE_SIZE)
    return page(
        request,
        "artifact.html",
        key=given,
        view=view,
        recent=[],
        errors={},
        show_gates=Permission.GROUPS_READ in permissions(request),
    )


# --- receivers --------------------------------------------------------------------------------


@get(f"{BASE}/receivers", opt=requires(Permission.RECEIVERS_READ), include_in_schema=False)
async def receivers(
    *,
    request: Request[Any, Any, Any],
    name: FromQuery[str] = "",
    type: FromQuery[str] = "",
    version: FromQuery[str] = "",
    cursor: FromQuery[str | None] = None,
    rows: FromQuery[bool] = False,
) -> Template:
    """Receivers, newest first, filtered by name, type and version (exact)."""
    services = services_of(request.scope)
    where = ReceiverFilter(name=name or None, type=type or None, version=version or None)
    found = await services.receivers.list(
        actor_of(request.scope),
        where,
        PageRequest(limit=PAGE_SIZE + 1, after=after(_RECEIVERS, cursor)),
    )
    items, next_cursor = cut(_RECEIVERS, found, PAGE_SIZE)
    context: dict[str, Any] = {
        "receivers": items,
        "next_cursor": next_cursor,
        "filters": {"name": name, "type": type, "version": version},
    }
    return page(request, "receivers_rows.html" if rows else "receivers.html", **context)


@get(f"{BASE}/receivers/new", opt=requires(Permission.RECEIVERS_CREATE), include_in_schema=False)
async def new_receiver(request: Request[Any, Any, Any]) -> Template:
    """The form that registers a receiver, with a schema editor."""
    form = {"name": "", "type": "", "version": "", "description": "", "schema": EXAMPLE_SCHEMA}
    return page(request, "receiver_new.html", form=form, errors={}, error_list=[])


def _schema_of(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(
            "The schema is not JSON.",
            [
                FieldError(
                    "/schema", f"is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
                )
            ],
        ) from None
    if not isinstance(value, dict):
        raise BadRequest(
            "The schema is not a JSON object.", [FieldError("/schema", "must be a JSON object")]
        )
    return value


@post(
    f"{BASE}/receivers",
    opt=requires(Permission.RECEIVERS_CREATE),
    include_in_schema=False,
    status_code=200,
)
async def create_receiver(request: Request[Any, Any, Any]) -> Response[Any]:
    services = services_of(request.scope)
    form = await request.form()
    values = {k: field(form, k) for k in ("name", "type", "version", "description", "schema")}
    try:
        cmd = RegisterReceiver(
            name=values["name"],
            type=values["type"],
            version=values["version"],
            description=values["description"],
            schema=_schema_of(values["schema"]),
        )
        receiver, _ = await services.receivers.register(actor_of(request.scope), cmd)
    except (DomainError, BadRequest) as exc:
        status = exc.status if isinstance(exc, BadRequest) else status_of(exc)
        return page(
            request,
            "receiver_new.html",
            status=status,
            form=values,
            errors=errors_by_field(exc.errors),
            error_list=exc.errors,
            detail=exc.detail,
        )
    return redirect(f"{BASE}/receivers/{receiver.id}")


@get(
    f"{BASE}/receivers/{{receiver_id:str}}",
    opt=requires(Permission.RECEIVERS_READ),
    include_in_schema=False,
)
async def receiver(request: Request[Any, Any, Any], receiver_id: FromPath[str]) -> Template:
    """One receiver: its schema, fingerprint and latest events."""
    services = services_of(request.scope)
    check_id("event receiver", receiver_id)
    actor = actor_of(request.scope)
    found = await services.receivers.get(actor, receiver_id)
    recent: list[Event] = []
    if Permission.EVENTS_READ in permissions(request):
        recent = await services.events.list(
            actor, EventFilter(event_receiver_id=receiver_id), PageRequest(limit=RECEIVER_EVENTS)
        )
    return page(request, "receiver.html", receiver=found, events=recent)


# --- events -----------------------------------------------------------------------------------


@get(f"{BASE}/events", opt=requires(Permission.EVENTS_READ), include_in_schema=False)
async def events(
    *,
    request: Request[Any, Any, Any],
    cursor: FromQuery[str | None] = None,
    rows: FromQuery[bool] = False,
) -> Template:
    """Events, newest first, filtered by any field and a time range; scrolls on by cursor."""
    services = services_of(request.scope)
    given = {name: request.query_params.get(name, "") for name in EVENT_FILTERS}
    errors: list[FieldError] = []
    try:
        where = EventFilter(
            **{name: given[name] or None for name in (*NVRPP, "event_receiver_id")},
            success=_success(given["success"]),
            since=parse_moment("since", given["since"]),
            until=parse_moment("until", given["until"]),
        )
    except BadRequest as exc:
        errors = exc.errors
    if errors:
        return page(
            request,
            "events.html",
            status=400,
            events=[],
            names={},
            next_cursor=None,
            filters=given,
            errors=errors_by_field(errors),
        )
    actor = actor_of(request.scope)
    found = await services.events.list(
        actor, where, PageRequest(limit=PAGE_SIZE + 1, after=after(_EVENTS, cursor))
    )
    items, next_cursor = cut(_EVENTS, found, PAGE_SIZE)
    context: dict[str, Any] = {
        "events": items,
        "names": await _names(services, actor, items),
        "next_cursor": next_cursor,
        "filters": given,
        "errors": {},
    }
    return page(request, "events_rows.html" if rows else "events.html", **context)


@get(
    f"{BASE}/events/{{event_id:str}}", opt=requires(Permission.EVENTS_READ), include_in_schema=False
)
async def event(request: Request[Any, Any, Any], event_id: FromPath[str]) -> Template:
    """One event, its payload pretty-printed."""
    services = services_of(request.scope)
    check_id("event", event_id)
    actor = actor_of(request.scope)
    found = await services.events.get(actor, event_id)
    receivers_found = await services.receivers.get_many(actor, [found.event_receiver_id])
    return page(
        request,
        "event.html",
        event=found,
        receiver=receivers_found.get(found.event_receiver_id),
    )


HANDLERS = [artifact, receivers, new_receiver, create_receiver, receiver, events, event]
