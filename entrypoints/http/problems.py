"""Problem details (RFC 9457): the one place where every error becomes an HTTP answer.

Domain refusals (core.domain.errors), HTTP-level refusals raised by this
package (`HttpProblem`), Litestar's own exceptions (routing, parameters, body
size) and everything unexpected are all answered here, through Litestar's
`exception_handlers` (ARCHITECTURE.md, rule 5). An unexpected exception is
answered with a bare 500 carrying an error id; the traceback goes to the log
under that id, never to the client.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any, ClassVar

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.types import ExceptionHandlersMap

from core.domain.errors import (
    Conflict,
    DomainError,
    FieldError,
    Forbidden,
    Invalid,
    NotFound,
    TooLarge,
    Unauthenticated,
)
from core.domain.idempotency import AlreadyAnswered, KeyInUse, KeyReused
from core.domain.refusals import TOKEN_REFUSALS
from core.ports import Unavailable
from entrypoints.http.request_id import request_id

__all__ = [
    "EXCEPTION_HANDLERS",
    "PROBLEM_JSON",
    "UNAVAILABLE_RETRY_AFTER",
    "UNAVAILABLE_TYPE",
    "BadRequest",
    "HttpProblem",
    "InternalProblem",
    "Problem",
    "challenge",
    "status_of",
]

PROBLEM_JSON = "application/problem+json"
_PREFIX = "urn:waypost:problem:"

log = logging.getLogger("waypost.http")


class Problem(msgspec.Struct, kw_only=True):
    """An RFC 9457 problem document; `errors` names each field at fault."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] = msgspec.field(default_factory=list)


class InternalProblem(msgspec.Struct, kw_only=True):
    """The whole answer to an unexpected failure: nothing but an id to find it in the log."""

    type: str
    title: str
    status: int
    detail: str
    error_id: str


class HttpProblem(Exception):
    """A refusal decided by the HTTP layer itself (not by a domain rule)."""

    status: ClassVar[int] = 400
    type: ClassVar[str] = _PREFIX + "malformed-request"
    title: ClassVar[str] = "Malformed request"

    def __init__(
        self,
        detail: str,
        errors: Iterable[FieldError] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = list(errors)
        self.headers: dict[str, str] = dict(headers or {})


class BadRequest(HttpProblem):
    """Malformed JSON, a wrong shape or type, a bad query parameter or cursor: 400."""


REALM = "waypost"


def challenge(exc: Unauthenticated) -> str:
    """The `WWW-Authenticate` of a 401, naming both schemes a credential may come in:
    Bearer (RFC 6750, 3: `error="invalid_token"` when a credential was presented and
    refused, nothing more: its reason is the audit log's), then Basic (RFC 7617; the
    password is an API key)."""
    basic = f'Basic realm="{REALM}", charset="UTF-8"'
    if exc.reason in TOKEN_REFUSALS:
        return f'Bearer realm="{REALM}", error="invalid_token", {basic}'
    return f'Bearer realm="{REALM}", {basic}'


# Domain refusals: the class names the refusal, this table names the status.
_DOMAIN: tuple[tuple[type[DomainError], int, str], ...] = (
    (Unauthenticated, 401, "unauthenticated"),
    (Forbidden, 403, "forbidden"),
    (KeyReused, 422, "idempotency-key-reused"),
    (Invalid, 422, "validation-failed"),
    (NotFound, 404, "not-found"),
    (KeyInUse, 409, "idempotency-in-flight"),
    (Conflict, 409, "conflict"),
    (TooLarge, 413, "too-large"),
)


def status_of(exc: DomainError) -> int:
    """The HTTP status of a domain refusal (the console's pages answer the same)."""
    for cls, status, _ in _DOMAIN:
        if isinstance(exc, cls):
            return status
    return 500  # pragma: no cover - every DomainError subclass is in the table


def problem_response(
    status: int,
    *,
    type_: str,
    title: str,
    detail: str,
    errors: list[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response[bytes]:
    body = Problem(type=type_, title=title, status=status, detail=detail, errors=errors or [])
    return Response(
        content=msgspec.json.encode(body),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=dict(headers) if headers else None,
    )


def _domain(_: Request[Any, Any, Any], exc: DomainError) -> Response[bytes]:
    for cls, status, name in _DOMAIN:
        if isinstance(exc, cls):
            headers = None
            if isinstance(exc, Unauthenticated):
                headers = {"WWW-Authenticate": challenge(exc)}
            elif isinstance(exc, KeyInUse):
                headers = {"Retry-After": "1"}
            return problem_response(
                status,
                type_=_PREFIX + name,
                title=exc.title,
                detail=exc.detail,
                errors=list(exc.errors),
                headers=headers,
            )
    return _internal(_, exc)  # pragma: no cover - every DomainError subclass is in the table


def _http_problem(_: Request[Any, Any, Any], exc: HttpProblem) -> Response[bytes]:
    return problem_response(
        exc.status,
        type_=exc.type,
        title=exc.title,
        detail=exc.detail,
        errors=exc.errors,
        headers=exc.headers,
    )


# Litestar reports a missing parameter in its detail text only.
_MISSING = re.compile(r"Missing required (\w+) parameter '([^']+)'")
_LITESTAR_TYPES = {
    400: ("malformed-request", "Malformed request"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("too-large", "Too large"),
}


def _litestar(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    if status >= 500:
        return _internal(request, exc)
    errors: list[FieldError] = []
    name, title = _LITESTAR_TYPES.get(status, ("", ""))
    type_ = _PREFIX + name if name else "about:blank"
    title = title or HTTPStatus(status).phrase
    detail = exc.detail
    if isinstance(exc, ValidationException) or status == 400:
        detail = "The request is malformed."
        errors = _validation_errors(exc)
    elif status == 404:
        detail = "Nothing is there."
    elif status == 405:
        detail = f"{request.method} is not allowed here."
    elif status == 413:
        detail = _too_large_detail(request)
    return problem_response(
        status, type_=type_, title=title, detail=detail, errors=errors, headers=exc.headers
    )


def _validation_errors(exc: HTTPException) -> list[FieldError]:
    errors: list[FieldError] = []
    if isinstance(exc.extra, list):
        for item in exc.extra:
            if not isinstance(item, dict):
                continue
            key = str(item.get("key", ""))
            message = str(item.get("message", "is invalid"))
            if key == "data" and item.get("source") == "body":
                # Litestar's way of saying that the body was empty.
                errors.append(FieldError("", "a JSON body is required"))
            else:
                errors.append(FieldError(key, message))
    elif (match := _MISSING.search(exc.detail)) is not None:
        errors.append(FieldError(match.group(2), f"{match.group(1)} parameter is required"))
    elif exc.detail.startswith("Invalid content-length"):
        errors.append(FieldError("Content-Length", "must be a non-negative integer"))
    return errors


def _too_large_detail(request: Request[Any, Any, Any]) -> str:
    limit = None
    handler = request.scope.get("route_handler")
    if isinstance(handler, HTTPRouteHandler):
        limit = handler.resolve_request_max_body_size()
    if limit:
        return f"The request body is larger than {limit} bytes."
    return "The request body is too large."  # pragma: no cover - every route has a limit


def _internal(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    error_id = secrets.token_hex(8)
    rid = request_id(request.scope)
    method, path = request.scope.get("method", "-"), request.scope.get("path", "-")
    log.error(
        "internal error %s (request %s, %s %s)",
        error_id,
        rid,
        method,
        path,
        exc_info=exc,
        extra={"error_id": error_id, "request_id": rid, "method": method, "path": path},
    )
    body = InternalProblem(
        type=_PREFIX + "internal-error",
        title="Internal server error",
        status=500,
        detail="internal error",
        error_id=error_id,
    )
    return Response(content=msgspec.json.encode(body), status_code=500, media_type=PROBLEM_JSON)


#: The header a replayed answer carries (Idempotency-Key, `core.domain.idempotency`).
REPLAYED = "Idempotent-Replayed"


def _replayed(_: Request[Any, Any, Any], exc: AlreadyAnswered) -> Response[bytes]:
    """Not a refusal: the request was answered before, and gets that answer again."""
    stored = exc.answer
    headers = {REPLAYED: "true"}
    if stored.location is not None:
        headers["Location"] = stored.location
    return Response(
        content=stored.body,
        status_code=stored.status,
        media_type=stored.content_type,
        headers=headers,
    )


#: Seconds a caller is asked to wait while the database cannot serve.
UNAVAILABLE_RETRY_AFTER = 1
#: The problem type of that answer.
UNAVAILABLE_TYPE = _PREFIX + "unavailable"


def _unavailable(_: Request[Any, Any, Any], exc: Unavailable) -> Response[bytes]:
    """503 with Retry-After: nothing was written, the same request may work in a moment. The
    cause is the operator's (logged once per outage by the store), never the caller's."""
    return problem_response(
        503,
        type_=UNAVAILABLE_TYPE,
        title="Service unavailable",
        detail="The database cannot serve right now; nothing was written. Retry after "
        f"{UNAVAILABLE_RETRY_AFTER} s.",
        headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER)},
    )


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    AlreadyAnswered: _replayed,
    Unavailable: _unavailable,
    DomainError: _domain,
    HttpProblem: _http_problem,
    HTTPException: _litestar,
    Exception: _internal,
}
