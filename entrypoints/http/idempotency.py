"""Idempotency-Key on POST: the same key and the same request replay the first answer.

- same key, same request (method, path, query and body hashed): the first
  answer again (status, Content-Type, Location, body) with `Idempotent-Replayed:
  true`;
- same key, another request: 422;
- same key while the first request is still running: 409.

Keys live in a space per tenant (`auth.idempotency_scope`). Answers of 500
and above, and refusals that depend on the moment rather than on the request
(401, 403, 408, 429), are not kept: the key may be used again.

The records are kept in this process, bounded and expiring (`MemoryRecords`);
several server processes need a shared store behind the same small interface.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final, Protocol

import msgspec
from litestar import Request
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from core.domain.errors import FieldError
from entrypoints.http.auth import idempotency_scope
from entrypoints.http.problems import BadRequest, HttpProblem

HEADER: Final = "Idempotency-Key"
_HEADER_KEY: Final = b"idempotency-key"
MAX_KEY_LENGTH: Final = 255
TTL_SECONDS: Final = 24 * 3600.0
CAPACITY: Final = 10_000
_KEPT_HEADERS: Final = frozenset({b"content-type", b"location"})
_NOT_KEPT: Final = frozenset({401, 403, 408, 429})
_STATE_KEY: Final = "idempotency"


class KeyReused(HttpProblem):
    status = 422
    type = "urn:waypost:problem:idempotency-key-reused"
    title = "Idempotency key reused"


class StillRunning(HttpProblem):
    status = 409
    type = "urn:waypost:problem:idempotency-in-flight"
    title = "Request still running"


class Answer(msgspec.Struct, frozen=True):
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class Record(msgspec.Struct):
    fingerprint: bytes
    expires: float
    answer: Answer | None = None  # None while the first request runs


class Records(Protocol):
    def get(self, key: tuple[str, str]) -> Record | None: ...
    def begin(self, key: tuple[str, str], fingerprint: bytes) -> None: ...
    def finish(self, key: tuple[str, str], answer: Answer) -> None: ...
    def abandon(self, key: tuple[str, str]) -> None: ...


class MemoryRecords:
    """Records in this process: at most `capacity`, each for `ttl` seconds."""

    def __init__(
        self,
        *,
        ttl: float = TTL_SECONDS,
        capacity: int = CAPACITY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._capacity = capacity
        self._clock = clock
        self._records: OrderedDict[tuple[str, str], Record] = OrderedDict()

    def get(self, key: tuple[str, str]) -> Record | None:
        record = self._records.get(key)
        if record is not None and record.expires <= self._clock():
            del self._records[key]
            return None
        return record

    def begin(self, key: tuple[str, str], fingerprint: bytes) -> None:
        self._records[key] = Record(fingerprint=fingerprint, expires=self._clock() + self._ttl)
        self._records.move_to_end(key)
        while len(self._records) > self._capacity:
            self._records.popitem(last=False)

    def finish(self, key: tuple[str, str], answer: Answer) -> None:
        record = self._records.get(key)
        if record is not None:
            record.answer = answer

    def abandon(self, key: tuple[str, str]) -> None:
        self._records.pop(key, None)

    def __len__(self) -> int:
        return len(self._records)


def _key_of(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == _HEADER_KEY:
            key = value.decode("latin-1")
            if not 0 < len(key) <= MAX_KEY_LENGTH or not key.isprintable() or not key.isascii():
                message = f"must be 1 to {MAX_KEY_LENGTH} printable ASCII characters"
                raise BadRequest(
                    "The Idempotency-Key header is not usable.", [FieldError(HEADER, message)]
                )
            return key
    return None


def install(state: State, records: Records) -> None:
    """Where the middleware finds its records: the app's state (Litestar deep-copies
    routers and their middleware arguments, so a shared store cannot travel there)."""
    state[_STATE_KEY] = records


class IdempotencyMiddleware:
    """A pure ASGI middleware for POST routes; a request without the header passes untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        key = _key_of(scope)
        if key is None:
            await self.app(scope, receive, send)
            return
        # Litestar keeps the body in the scope: the handler reads it again for free, and
        # the route's body size limit (413) applies here just the same.
        body = await Request[Any, Any, Any](scope, receive).body()
        request = (scope["method"].encode(), scope["path"].encode(), scope["query_string"], body)
        fingerprint = hashlib.sha256(b"\0".join(request)).digest()
        space = (idempotency_scope(scope), key)
        records: Records = scope["app"].state[_STATE_KEY]
        record = records.get(space)
        if record is not None:
            if record.fingerprint != fingerprint:
                raise KeyReused(
                    "This Idempotency-Key was used for another request.",
                    [FieldError(HEADER, "was used with another request body")],
                )
            if record.answer is None:
                raise StillRunning(
                    "The first request with this Idempotency-Key is still running.",
                    [FieldError(HEADER, "is in use by a request still running")],
                    headers={"Retry-After": "1"},
                )
            await _replay(record.answer, send)
            return
        await self._first(records, space, fingerprint, scope=scope, receive=receive, send=send)

    async def _first(
        self,
        records: Records,
        space: tuple[str, str],
        fingerprint: bytes,
        *,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        status = 0
        headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []
        complete = False

        async def capture(message: Message) -> None:
            nonlocal status, headers, complete
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", ()) if k in _KEPT_HEADERS]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                complete = not message.get("more_body", False)
            await send(message)

        records.begin(space, fingerprint)
        kept = False
        try:
            await self.app(scope, receive, capture)
            if complete and status < 500 and status not in _NOT_KEPT:
                records.finish(space, Answer(status, headers, b"".join(chunks)))
                kept = True
        finally:
            if not kept:
                records.abandon(space)


async def _replay(answer: Answer, send: Send) -> None:
    headers = [
        *answer.headers,
        (b"content-length", str(len(answer.body)).encode("ascii")),
        (b"idempotent-replayed", b"true"),
    ]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body, "more_body": False})
