"""The live tail: a tenant's messages as Server-Sent Events, from the log, resumable.

`GET /api/v1/messages` streams the CloudEvents of every published change of the
caller's tenant, in log order, as they commit. Each SSE event carries the log
position as its `id` and the CloudEvent (structured JSON) as its `data`, so a
client that reconnects with `Last-Event-ID` (browsers' EventSource does so by
itself) or `?after=<position>` misses nothing and gets each message once more at
most (the CloudEvent `id` tells duplicates apart). Without either it starts at the
end of the log: what happens from now on. With `follow=false` it sends what is
there and ends.

The stream polls the log every `POLL_SECONDS` while idle and sends an SSE comment
every `KEEPALIVE_SECONDS`, so proxies keep the connection open. It ends when the
server shuts down (`stop_streams`), so a graceful stop never waits for a tail.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Final

import anyio
from litestar import Request, get
from litestar.datastructures import State
from litestar.params import HeaderParameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from core.domain.access import Permission
from core.domain.errors import FieldError
from core.domain.messages import encode_message
from core.usecases import Actor, Services
from entrypoints.http.auth import requires
from entrypoints.http.common import API, ActorDep, ServicesDep, problems
from entrypoints.http.problems import BadRequest

PATH = f"{API}/messages"
POLL_SECONDS: Final = 0.25
KEEPALIVE_SECONDS: Final = 15.0
_KEY: Final = "waypost.streams"


class Streams:
    """Whether the server is stopping: open streams end at their next poll."""

    def __init__(self) -> None:
        self.stopping = False


def install(state: State) -> Streams:
    streams = state[_KEY] = Streams()
    return streams


def stop_streams(state: State) -> None:
    """End every open stream (the server is shutting down)."""
    streams: Streams | None = state.get(_KEY)
    if streams is not None:
        streams.stopping = True


def _position(field: str, text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise BadRequest(
            "The request is malformed.", [FieldError(field, "must be a log position (0 or more)")]
        )
    return int(text)


@get(
    "/",
    opt=requires(Permission.EVENTS_READ),
    summary="Tail the tenant's messages (Server-Sent Events)",
    description="The CloudEvents of every published change (receivers, events, groups, "
    "completions) in log order, as `text/event-stream`: each event's `id` is its log "
    "position, its `data` the CloudEvent. Resume with `Last-Event-ID` or `after`; without "
    "either the stream starts now. `follow=false` sends what is there and ends.",
    media_type="text/event-stream",
    responses=problems(400, 401, 403),
)
async def tail(
    *,
    request: Request[object, object, State],
    services: ServicesDep,
    actor: ActorDep,
    after: Annotated[
        str | None, QueryParameter(description="The log position to continue after.")
    ] = None,
    follow: Annotated[
        bool, QueryParameter(description="Keep the stream open for what comes (default).")
    ] = True,
    last_event_id: Annotated[
        str | None,
        HeaderParameter(
            name="Last-Event-ID", description="The last `id` received; wins over `after`."
        ),
    ] = None,
) -> ServerSentEvent:
    if last_event_id is not None:
        start = _position("Last-Event-ID", last_event_id.strip())
    elif after is not None:
        start = _position("after", after)
    else:
        start = await services.messages.head(actor)
    streams: Streams = request.app.state[_KEY]
    return ServerSentEvent(
        _messages(services, actor, start, follow=follow, streams=streams),
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _messages(
    services: Services, actor: Actor, position: int, *, follow: bool, streams: Streams
) -> AsyncIterator[ServerSentEventMessage]:
    idle = 0.0
    while not streams.stopping:
        page = await services.messages.after(actor, position)
        for item in page.messages:
            yield ServerSentEventMessage(
                id=item.position, data=encode_message(item.message).decode()
            )
        if page.last != position:  # entries were read: look again at once
            position, idle = page.last, 0.0
            continue
        if not follow:
            return
        await anyio.sleep(POLL_SECONDS)
        idle += POLL_SECONDS
        if idle >= KEEPALIVE_SECONDS:
            idle = 0.0
            yield ServerSentEventMessage(comment="keep-alive", data=None)


HANDLERS = [tail]


def streams_of(state: State) -> Streams:
    """The app's `Streams` (the console's live page ends with them too)."""
    streams: Streams = state[_KEY]
    return streams
