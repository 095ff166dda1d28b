"""What every route module shares: the Services dependency, created answers, documented errors."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, TypeVar, cast

from litestar import Litestar, Request, Response
from litestar.background_tasks import BackgroundTask, BackgroundTasks
from litestar.datastructures import Cookie, ResponseHeader
from litestar.enums import MediaType
from litestar.openapi.datastructures import ResponseSpec
from litestar.response.base import ASGIResponse
from litestar.serialization import default_serializer, encode_json
from litestar.types import (
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Receive,
    Scope,
    Send,
    TypeEncodersMap,
)

from core.domain.ids import is_ulid
from core.usecases.common import not_found
from entrypoints.http.problems import PROBLEM_JSON, Problem
from entrypoints.http.views import IdData

API: Final = "/api/v1"
T = TypeVar("T")

_DESCRIPTIONS: Final = {
    400: "Malformed JSON, wrong shape or type, bad query parameter or cursor.",
    401: "No credential, or one that is not accepted (WWW-Authenticate says so).",
    403: "Authenticated, but no role of the principal grants this.",
    404: "Nothing there, or another tenant's.",
    409: "Conflict with what is stored, or the same Idempotency-Key still running.",
    413: "Body or batch too large.",
    422: "Well-formed but refused by the rules; every error is listed.",
    429: "Over the credential's (or the address's) rate limit; Retry-After says when to retry.",
    503: "The server is at its limit of requests in flight, or the database cannot serve "
    "right now (nothing was written); Retry-After says when to retry.",
}
#: What every API route may answer besides its own refusals: 422 for a query parameter
#: holding NUL (entrypoints/http/queries.py), 429 and 503 (entrypoints/http/limits.py).
LIMITED: Final = (422, 429, 503)


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI descriptions of the problem answers a route may give (and `LIMITED`'s).

    400 is always among them: Litestar documents a 400 of its own shape for any route
    with parameters, and every 400 of this API is a problem document."""
    return {
        status: ResponseSpec(
            data_container=Problem,
            media_type=PROBLEM_JSON,
            description=_DESCRIPTIONS[status],
            generate_examples=False,
        )
        for status in sorted({400, *statuses, *LIMITED})
    }


#: The OpenAPI description of a create's `Location` header.
LOCATION: Final = [
    ResponseHeader(
        name="Location",
        description="Where the new thing is read.",
        documentation_only=True,
    )
]


class JsonAnswer(Response[T]):
    """A `Response` of JSON that Litestar sends the short way: its body encoded once, its
    head written as ASGI wants it, sent in two messages by a small ASGI app. Litestar's
    own way (`Response.to_asgi_response`: merged type encoders, a media-type pattern
    match, `ASGIResponse` and its header objects) cost about 5% of a single event's
    instructions (callgrind). What only that way handles (cookies, background tasks,
    HEAD, type encoders, another media type) goes through it unchanged."""

    def to_asgi_response(
        self,
        app: Litestar | None,
        request: Request[Any, Any, Any],
        *,
        background: BackgroundTask | BackgroundTasks | None = None,
        cookies: Iterable[Cookie] | None = None,
        encoded_headers: Iterable[tuple[bytes, bytes]] | None = None,
        headers: dict[str, str] | None = None,
        is_head_response: bool = False,
        media_type: MediaType | str | None = None,
        status_code: int | None = None,
        type_encoders: TypeEncodersMap | None = None,
    ) -> ASGIResponse:
        plain = not (
            app or background or self.background or cookies or self.cookies
            or encoded_headers or is_head_response or type_encoders
            or self.response_type_encoders
            or (self.media_type or media_type or MediaType.JSON) != MediaType.JSON
        )  # fmt: skip
        if not plain:
            return super().to_asgi_response(
                app, request, background=background, cookies=cookies,
                encoded_headers=encoded_headers, headers=headers,
                is_head_response=is_head_response, media_type=media_type,
                status_code=status_code, type_encoders=type_encoders,
            )  # fmt: skip
        body = encode_json(self.content, default_serializer)
        head = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        merged = {**headers, **self.headers} if headers else self.headers
        head += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in merged.items()]
        # Not an `ASGIResponse`, but what Litestar does with one: call it.
        return cast(ASGIResponse, _Send(self.status_code or status_code or 200, head, body))


class _Send:
    """An answer's two ASGI messages."""

    __slots__ = ("body", "head", "status")

    def __init__(self, status: int, head: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status, self.head, self.body = status, head, body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start: HTTPResponseStartEvent = {
            "type": "http.response.start",
            "status": self.status,
            "headers": self.head,
        }
        await send(start)
        body: HTTPResponseBodyEvent = {
            "type": "http.response.body",
            "body": self.body,
            "more_body": False,
        }
        await send(body)


def created(location: str, ident: str) -> Response[IdData]:
    """201 `{"data": "<id>"}` with the new thing's address."""
    return JsonAnswer(IdData(ident), status_code=201, headers={"Location": location})


def check_id(kind: str, ident: str) -> None:
    """Something that is not an id names nothing: 404 before any store is asked."""
    if not is_ulid(ident):
        raise not_found(kind, ident)
