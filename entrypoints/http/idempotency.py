"""Idempotency-Key on POST: the header, and the answers a replay sends.

The rules and the records are the core's (`core.domain.idempotency`, committed by the
use cases with the writes they answer, in the store); this module only handles the
header:

- a route that honours the key says so (`opt=... | IDEMPOTENT`), reads the request's
  claim (`claim_of(scope)`) and hands it to its use case with the answer it would send
  (`once(claim, render)`), built by `answer(...)` exactly as the route answers. `guard`
  gives exactly those routes `IdempotencyMiddleware` and the header in the OpenAPI
  document: a route that takes no claim never reads, checks or documents a key;
- `IdempotencyMiddleware` checks the key (400 when unusable), reads the body and makes
  the request's `Claim`: the caller's key space (its tenant; the platform's for the
  platform's routes), the key, and a fingerprint of method, path, query and body;
- a request answered before comes back from the use case as `AlreadyAnswered`, which
  the exception handlers (`problems.py`) send again, with `Idempotent-Replayed: true`.

Routes that take no claim: the token endpoints (their answers are credentials),
GraphQL (a document may hold several mutations: there is no one write to tie a key
to) and the console's forms (a browser sends a form once; CSRF tokens guard them).
`POST /api/v1/api-keys` stores an answer without the key's secret (`api_keys.py`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any, Final, TypeVar

import anyio
import msgspec
from litestar import Request
from litestar.enums import ScopeType
from litestar.handlers import HTTPRouteHandler
from litestar.types import ASGIApp, ControllerRouterHandler, Message, Receive, Scope, Send

from core.domain.errors import FieldError
from core.domain.idempotency import (
    HEADER,
    Answer,
    Claim,
    fingerprint,
    key_problem,
)
from core.usecases.common import Once
from entrypoints.http.auth import idempotency_scope
from entrypoints.http.openapi import IdempotentOperation
from entrypoints.http.problems import BadRequest
from entrypoints.http.views import IdData

__all__ = [
    "HEADER",
    "IDEMPOTENT",
    "IdempotencyMiddleware",
    "answer",
    "claim_of",
    "created_answer",
    "guard",
    "once",
    "takes_claim",
]

_HEADER_KEY: Final = b"idempotency-key"
_CLAIM_KEY: Final = "waypost.idempotency"
#: For the crash tests only (tests/e2e/test_processes.py): seconds a keyed request's
#: answer waits after its write committed, so that a test can kill the process in
#: between. Read once from the environment; 0 (unset) everywhere else.
TEST_ANSWER_DELAY_VARIABLE: Final = "WAYPOST_TEST_ANSWER_DELAY_SECONDS"
_ANSWER_DELAY: Final = float(os.environ.get(TEST_ANSWER_DELAY_VARIABLE, "0") or 0)

T = TypeVar("T")
_encode = msgspec.json.Encoder().encode

#: The `opt` a POST route adds when it honours Idempotency-Key: it reads the request's
#: claim (`claim_of`) and hands it to its use case (`opt=requires(...) | IDEMPOTENT`).
_MARK: Final = "idempotent"
IDEMPOTENT: Final = {_MARK: True}


def _key_of(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == _HEADER_KEY:
            key = value.decode("latin-1")
            problem = key_problem(key)
            if problem is not None:
                raise BadRequest(
                    "The Idempotency-Key header is not usable.", [FieldError(HEADER, problem)]
                )
            return key
    return None


class IdempotencyMiddleware:
    """A pure ASGI middleware for POST routes; a request without the header passes untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope["method"] == "POST":
            key = _key_of(scope)
            if key is not None:
                # Litestar keeps the body in the scope: the handler reads it again for free,
                # and the route's body size limit (413) applies here just the same.
                body = await Request[Any, Any, Any](scope, receive).body()
                parts = (b"POST", scope["path"].encode(), scope["query_string"], body)
                scope["state"][_CLAIM_KEY] = Claim(
                    idempotency_scope(scope), key, fingerprint(parts)
                )
                if _ANSWER_DELAY:
                    send = _delayed(send)
        await self.app(scope, receive, send)


def takes_claim(handler: object) -> bool:
    """Whether `handler` is a POST route that honours Idempotency-Key (`IDEMPOTENT`)."""
    return (
        isinstance(handler, HTTPRouteHandler)
        and "POST" in handler.http_methods
        and handler.opt.get(_MARK) is True
    )


def guard(handlers: Iterable[ControllerRouterHandler]) -> None:
    """Give the POST handlers among `handlers` marked `IDEMPOTENT` `IdempotencyMiddleware`
    (innermost: after authentication and the rate limit) and the header in the OpenAPI
    document. Idempotent: the handlers of a module are shared by every app built."""
    for handler in handlers:
        if isinstance(handler, HTTPRouteHandler) and takes_claim(handler):
            given = list(handler.middleware or [])
            if IdempotencyMiddleware not in given:
                handler.middleware = [*given, IdempotencyMiddleware]
            handler.operation_class = IdempotentOperation


def _delayed(send: Send) -> Send:
    async def later(message: Message) -> None:
        if message["type"] == "http.response.start":
            await anyio.sleep(_ANSWER_DELAY)
        await send(message)

    return later


def claim_of(scope: Scope) -> Claim | None:
    """The request's Idempotency-Key claim, if it sent one (routes marked `IDEMPOTENT`)."""
    found: Claim | None = scope["state"].get(_CLAIM_KEY)
    return found


def once(claim: Claim | None, render: Callable[[T], Answer]) -> Once[T] | None:
    """What a route hands its use case: the claim and how it answers (None: no key)."""
    return None if claim is None else Once(claim, render)


def answer(
    status: int,
    data: object,
    *,
    location: str | None = None,
    content_type: str = "application/json",
) -> Answer:
    """The answer a route sends, as it is stored: the body as Litestar encodes it."""
    return Answer(status=status, body=_encode(data), content_type=content_type, location=location)


def created_answer(location: str, ident: str) -> Answer:
    """The stored form of `common.created`: 201 `{"data": "<id>"}` with its `Location`."""
    return answer(201, IdData(ident), location=location)
