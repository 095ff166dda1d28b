"""The live page: the tenant's messages as they commit, from the log (the same as
`GET /api/v1/messages`), filtered by type and subject.

`/console/live/stream` is an event stream the page's script reads with
`EventSource`: its `id` is the log position, so a reconnection (`Last-Event-ID`, which
the browser sends by itself) resumes where it stopped. The stream ends when the
session's access token expires or stops being valid (checked every
`RECHECK_SECONDS`), and when the server stops; the browser then reconnects, and the
session middleware refreshes the tokens or sends it to the sign-in page. The type and
subject filters are the API's (`MessageFilter`, applied by the Messages use case).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Final

import anyio
from litestar import Request, get
from litestar.params import FromQuery
from litestar.response import ServerSentEvent, ServerSentEventMessage, Template

from core.domain.access import Permission
from core.domain.errors import FieldError, Invalid, Unauthenticated
from core.domain.messages import encode_message
from core.usecases import Actor, Services
from core.usecases.messages import MessageFilter, message_filter
from entrypoints.http.auth import actor_of, request_context, requires, services_of
from entrypoints.http.console.common import BASE, errors_by_field, page
from entrypoints.http.console.session import Session, session_of
from entrypoints.http.problems import BadRequest
from entrypoints.http.routes.messages import Streams, streams_of

POLL_SECONDS: Final = 0.25
RECHECK_SECONDS: Final = 15.0


def _values(text: str) -> list[str]:
    """The values of a filter field: separated by commas."""
    return list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))


@get(f"{BASE}/live", opt=requires(Permission.EVENTS_READ), include_in_schema=False)
async def live(
    request: Request[Any, Any, Any], type: FromQuery[str] = "", subject: FromQuery[str] = ""
) -> Template:
    """The page: filters, and the messages the script appends as they come."""
    filters = {"type": type, "subject": subject}
    try:
        message_filter(_values(type), _values(subject))
    except Invalid as exc:  # said on the page; the stream would only fail
        return page(
            request, "live.html", status=422, filters=filters, errors=errors_by_field(exc.errors)
        )
    return page(request, "live.html", filters=filters, errors={})


def _position(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise BadRequest(
            "The request is malformed.", [FieldError("Last-Event-ID", "not a position")]
        )
    return int(text)


@get(
    f"{BASE}/live/stream",
    opt=requires(Permission.EVENTS_READ),
    include_in_schema=False,
    media_type="text/event-stream",
)
async def stream(
    *, request: Request[Any, Any, Any], type: FromQuery[str] = "", subject: FromQuery[str] = ""
) -> ServerSentEvent:
    """The messages after `Last-Event-ID`, or from now on, that match the filters."""
    services = services_of(request.scope)
    actor = actor_of(request.scope)
    start = _position(request.headers.get("last-event-id"))
    if start is None:
        start = await services.messages.head(actor)
    wanted = message_filter(_values(type), _values(subject))
    return ServerSentEvent(
        _messages(
            services,
            actor,
            start,
            wanted=wanted,
            session=session_of(request.scope),
            streams=streams_of(request.app.state),
            request=request,
        ),
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _messages(
    services: Services,
    actor: Actor,
    position: int,
    *,
    wanted: MessageFilter,
    session: Session,
    streams: Streams,
    request: Request[Any, Any, Any],
) -> AsyncIterator[ServerSentEventMessage]:
    # Tell the page the stream is open, and to reconnect after a second when it ends.
    yield ServerSentEventMessage(event="ready", data="ready", retry=1000)
    since_check = 0.0
    while not streams.stopping:
        page_ = await services.messages.after(actor, position, only=wanted)
        for item in page_.messages:
            yield ServerSentEventMessage(
                id=item.position, data=encode_message(item.message).decode()
            )
        if page_.last != position:
            position = page_.last
            continue
        await anyio.sleep(POLL_SECONDS)
        since_check += POLL_SECONDS
        if since_check >= RECHECK_SECONDS:
            since_check = 0.0
            if not await _still_valid(services, session, request):
                return
            # The reconnection (with Last-Event-ID) is where the tokens are refreshed.
            yield ServerSentEventMessage(comment="keep-alive", data=None)
        if services.deps.clock.now().timestamp() >= session.expires_at:
            # Resume here (the id) once the browser reconnected with fresh tokens.
            yield ServerSentEventMessage(id=position, event="reconnect", data="reconnect")
            return


async def _still_valid(
    services: Services, session: Session, request: Request[Any, Any, Any]
) -> bool:
    try:
        await services.identity.authenticate(
            session.access_token, tenant=session.tenant, ctx=request_context(request.scope)
        )
    except Unauthenticated:
        return False
    return True


HANDLERS = [live, stream]
