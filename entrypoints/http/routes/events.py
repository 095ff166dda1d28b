"""Events: record one, record a batch (all or nothing), read, list with filters."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from litestar import Response, get, post
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.types import Scope

from core.domain.access import Permission
from core.domain.commands import RecordBatch, RecordEvent
from core.domain.errors import FieldError
from core.domain.fields import in_utc
from core.domain.idempotency import Answer
from core.ports import EventFilter
from core.usecases import Recorded
from entrypoints.http.auth import actor_of, requires, services_of
from entrypoints.http.bodies import Body
from entrypoints.http.common import (
    API,
    LOCATION,
    check_id,
    created,
    problems,
)
from entrypoints.http.idempotency import IDEMPOTENT, answer, claim_of, once
from entrypoints.http.metrics import count_recorded
from entrypoints.http.paging import Cursor, Limit, OrderParam, page_of, page_request
from entrypoints.http.problems import BadRequest
from entrypoints.http.views import EventData, EventPage, IdData, IdsData, event_view

PATH = f"{API}/events"
BATCH_PATH = f"{PATH}/batch"
KIND = "events"

Filter = Annotated[str | None, QueryParameter(description="Exact match.")]
Moment = Annotated[
    str | None,
    QueryParameter(
        description="RFC 3339 date-time with a time zone (`2026-01-31T12:00:00Z`).",
        schema_extra={"format": "date-time"},
    ),
]


@post(
    "/",
    opt=requires(Permission.EVENTS_CREATE) | IDEMPOTENT,
    dto=Body[RecordEvent],
    return_dto=None,
    summary="Record an event",
    description="The payload is checked against the receiver's JSON Schema (422 with every "
    "error by JSON pointer); every enabled group containing the receiver is "
    "evaluated and fires once when it becomes complete for the artifact.",
    response_headers=LOCATION,
    responses=problems(400, 401, 403, 409, 413, 422),
)
async def record_event(*, data: JSONBody[RecordEvent], scope: Scope) -> Response[IdData]:
    services = services_of(scope)
    actor = actor_of(scope)
    claim = claim_of(scope)
    outcome = await services.events.record_outcome(actor, data, once(claim, _recorded))
    count_recorded(scope, outcome)
    [event] = outcome.events
    return created(f"{PATH}/{event.id}", event.id)


def _recorded(outcome: Recorded) -> Answer:
    [event] = outcome.events
    return answer(201, IdData(event.id), location=f"{PATH}/{event.id}")


def _batch_recorded(outcome: Recorded) -> Answer:
    return answer(201, IdsData([event.id for event in outcome.events]))


@post(
    "/",
    opt=requires(Permission.EVENTS_CREATE) | IDEMPOTENT,
    dto=Body[RecordBatch],
    return_dto=None,
    summary="Record a batch of events, all or nothing",
    description="Up to 1000 events. One refused event refuses the batch (422, fields as "
    "`/events/<index>/...`); the ids answer in input order.",
    responses=problems(400, 401, 403, 409, 413, 422),
)
async def record_batch(*, data: JSONBody[RecordBatch], scope: Scope) -> IdsData:
    services = services_of(scope)
    actor = actor_of(scope)
    claim = claim_of(scope)
    outcome = await services.events.record_batch_outcome(
        actor, data.events, once(claim, _batch_recorded)
    )
    count_recorded(scope, outcome)
    return IdsData([event.id for event in outcome.events])


@get(
    "/{event_id:str}",
    summary="Read an event",
    description="One event with its payload.",
    responses=problems(401, 403, 404),
    opt=requires(Permission.EVENTS_READ),
)
async def get_event(*, event_id: FromPath[str], scope: Scope) -> EventData:
    services = services_of(scope)
    actor = actor_of(scope)
    check_id("event", event_id)
    return EventData(event_view(await services.events.get(actor, event_id)))


@get(
    "/",
    summary="List events",
    description="The tenant's events, newest first unless `order=asc`; every filter is an "
    "exact match, ANDed; `since` (inclusive) and `until` (exclusive) on "
    "`created_at`.",
    responses=problems(400, 401, 403),
    opt=requires(Permission.EVENTS_READ),
)
async def list_events(
    *,
    name: Filter = None,
    version: Filter = None,
    release: Filter = None,
    platform_id: Filter = None,
    package: Filter = None,
    success: Annotated[bool | None, QueryParameter(description="`true` or `false`.")] = None,
    event_receiver_id: Filter = None,
    since: Moment = None,
    until: Moment = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    order: OrderParam = "desc",
    scope: Scope,
) -> EventPage:
    services = services_of(scope)
    actor = actor_of(scope)
    page = page_request(KIND, limit, cursor, order)
    where = EventFilter(
        name=name,
        version=version,
        release=release,
        platform_id=platform_id,
        package=package,
        success=success,
        event_receiver_id=event_receiver_id,
        since=moment("since", since),
        until=moment("until", until),
    )
    found = await services.events.list(actor, where, page)
    return page_of(KIND, found, limit=limit, order=order, view=event_view, page=EventPage)


def moment(field: str, text: str | None) -> datetime | None:
    """An RFC 3339 date-time with a time zone, or a 400 naming the parameter."""
    if text is None:
        return None
    try:
        value = msgspec.convert(text, datetime)
    except msgspec.ValidationError:
        value = None
    if value is None or value.tzinfo is None:
        raise BadRequest(
            "A query parameter is malformed.",
            [FieldError(field, "must be an RFC 3339 date-time with a time zone")],
        )
    if in_utc(value) is None:
        raise BadRequest(
            "A query parameter is out of range.",
            [FieldError(field, "must be a time within the years 1 to 9999 in UTC")],
        )
    return value


HANDLERS = [record_event, get_event, list_events]
BATCH_HANDLERS = [record_batch]
