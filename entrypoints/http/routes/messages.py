"""The live tail: a tenant's messages as Server-Sent Events, from the log, resumable.

`GET /api/v1/messages` streams the CloudEvents of every published change of the
caller's tenant, in log order, as they commit. Each SSE event carries the log
position as its `id` and the CloudEvent (structured JSON) as its `data`, so a
client that reconnects with `Last-Event-ID` (browsers' EventSource does so by
itself) or `?after=<position>` misses nothing and gets each message once more at
most (the CloudEvent `id` tells duplicates apart). Without either it starts at the
end of the log: what happens from now on. With `follow=false` it sends what is
there and ends. `type` and `subject` (each repeatable) keep only the messages of
those types and subjects; the positions stay the log's, so resuming works alike.

The stream polls the log every `POLL_SECONDS` while idle and sends an SSE comment
every `KEEPALIVE_SECONDS`, so proxies keep the connection open. It ends when the
server shuts down (`stop_streams`), so a graceful stop never waits for a tail.

It also ends when its credential stops being valid (a key revoked or expired, an
access token expired or revoked, the tenant disabled, the user disabled, deleted or
no longer allowed to read events): the credential is checked again as every request
checks it (`auth.authenticate`, then the route's permission) before each batch of
messages is sent, and every `CHECK_SECONDS` while idle. Not per message: the check
costs what a request's authentication costs, and the identity's small cache makes
repeated checks cheap. A stream that ends so sends a last comment saying why.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Final

import anyio
from litestar import Request, get
from litestar.datastructures import State
from litestar.params import HeaderParameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage
from litestar.types import Scope

from core.domain.access import Permission
from core.domain.errors import FieldError, Forbidden, Invalid, Unauthenticated
from core.domain.messages import encode_message
from core.usecases import Actor, Services
from core.usecases.messages import MAX_FILTER_VALUES, MessageFilter, message_filter
from entrypoints.http.auth import actor_of, authenticate, request_context, requires, services_of
from entrypoints.http.common import API, problems
from entrypoints.http.problems import BadRequest

PATH = f"{API}/messages"
POLL_SECONDS: Final = 0.25
KEEPALIVE_SECONDS: Final = 15.0
#: How often an idle stream checks its credential again (a batch is always checked first).
CHECK_SECONDS: Final = 1.0
ENDED_COMMENT: Final = "the credential is no longer valid"
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


class Credential:
    """The stream's credential, checked again as the request's was: still the same
    principal, still allowed to read events."""

    def __init__(self, scope: Scope, services: Services, actor: Actor) -> None:
        self._scope = scope
        self._identity = services.identity
        self._subject = actor.principal
        self._tenant_id = actor.tenant_id

    async def valid(self) -> bool:
        try:
            access = await authenticate(self._scope)
            await self._identity.authorize(
                access, Permission.EVENTS_READ, request_context(self._scope)
            )
        except (Unauthenticated, Forbidden):
            return False
        return access.principal.subject == self._subject and access.tenant_id == self._tenant_id


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
    "either the stream starts now. `follow=false` sends what is there and ends. `type` and "
    "`subject` (each repeatable) keep only messages of those types and subjects, filtered on "
    "the server; ids stay log positions, so resuming works alike.\n\n"
    "An open stream ends when its credential stops being valid: an API key revoked or "
    "expired, an access token expired or revoked, the tenant disabled, the user disabled, "
    "deleted or no longer allowed to read events. The credential is checked again before "
    f"each batch of messages and every {CHECK_SECONDS:g} s while idle (a last comment "
    f"`: {ENDED_COMMENT}` says so); reconnecting with it is then a 401 or 403.",
    media_type="text/event-stream",
    responses=problems(400, 401, 403),
)
async def tail(
    *,
    request: Request[object, object, State],
    after: Annotated[
        str | None, QueryParameter(description="The log position to continue after.")
    ] = None,
    follow: Annotated[
        bool, QueryParameter(description="Keep the stream open for what comes (default).")
    ] = True,
    types: Annotated[
        list[str] | None,
        QueryParameter(
            name="type",
            description="Only messages of this CloudEvent `type` (repeatable: any of them; "
            f"at most {MAX_FILTER_VALUES}).",
        ),
    ] = None,
    subjects: Annotated[
        list[str] | None,
        QueryParameter(
            name="subject",
            description="Only messages about this receiver or group id, the CloudEvent "
            f"`subject` (repeatable: any of them; at most {MAX_FILTER_VALUES}).",
        ),
    ] = None,
    last_event_id: Annotated[
        str | None,
        HeaderParameter(
            name="Last-Event-ID", description="The last `id` received; wins over `after`."
        ),
    ] = None,
) -> ServerSentEvent:
    services = services_of(request.scope)
    actor = actor_of(request.scope)
    if last_event_id is not None:
        start = _position("Last-Event-ID", last_event_id.strip())
    elif after is not None:
        start = _position("after", after)
    else:
        start = await services.messages.head(actor)
    try:
        only = message_filter(types or [], subjects or [])
    except Invalid as error:
        raise BadRequest("The request is malformed.", error.errors) from None
    streams: Streams = request.app.state[_KEY]
    credential = Credential(request.scope, services, actor)
    return ServerSentEvent(
        _messages(
            services, actor, start, only, follow=follow, streams=streams, credential=credential
        ),
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _messages(
    services: Services,
    actor: Actor,
    position: int,
    only: MessageFilter,
    *,
    follow: bool,
    streams: Streams,
    credential: Credential,
) -> AsyncIterator[ServerSentEventMessage]:
    # the request's own authentication was just now; nothing was sent yet
    checked = sent = anyio.current_time()
    while not streams.stopping:
        page = await services.messages.after(actor, position, only=only)
        now = anyio.current_time()
        if page.messages or now - checked >= CHECK_SECONDS:
            if not await credential.valid():
                yield ServerSentEventMessage(comment=ENDED_COMMENT, data=None)
                return
            checked = now
        for item in page.messages:
            yield ServerSentEventMessage(
                id=item.position, data=encode_message(item.message).decode()
            )
            sent = now
        # quiet for long (idle, or every message filtered out): tell proxies we are here
        if now - sent >= KEEPALIVE_SECONDS:
            yield ServerSentEventMessage(comment="keep-alive", data=None)
            sent = now
        if page.last != position:  # entries were read: look again at once
            position = page.last
            continue
        if not follow:
            return
        await anyio.sleep(POLL_SECONDS)


HANDLERS = [tail]


def streams_of(state: State) -> Streams:
    """The app's `Streams` (the console's live page ends with them too)."""
    streams: Streams = state[_KEY]
    return streams
