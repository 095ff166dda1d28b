"""GraphQL errors: every failure becomes `{"message", "locations"?, "path"?, "extensions":
{"code", ...}}`, in this one place.

Domain refusals keep EPR's wording where EPR had one (`object not found: ...`,
`invalid input: ...`) and carry a code a client can branch on; an invalid input
lists its field errors. A database that cannot serve is `UNAVAILABLE` (the store
logged why, once; the whole answer is then a 503, see `execution`). Anything
unexpected is `internal error` with an id that is in the server log, never the
exception's text.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any, Final

from graphql import GraphQLError

from core.domain.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Invalid,
    NotFound,
    TooLarge,
    Unauthenticated,
)
from core.ports import Unavailable
from entrypoints.http.problems import HttpProblem

__all__ = ["CODES", "QueryRefused", "format_error", "request_error"]

log = logging.getLogger("waypost.graphql")

#: Every `extensions.code` an answer may carry.
CODES: Final = (
    "NOT_FOUND",
    "INVALID",
    "CONFLICT",
    "FORBIDDEN",
    "UNAUTHENTICATED",
    "TOO_LARGE",
    "UNAVAILABLE",
    "BAD_REQUEST",
    "BAD_USER_INPUT",
    "GRAPHQL_PARSE_FAILED",
    "GRAPHQL_VALIDATION_FAILED",
    "INTROSPECTION_DISABLED",
    "QUERY_TOO_LARGE",
    "QUERY_TOO_DEEP",
    "QUERY_TOO_COSTLY",
    "INTERNAL",
)

# The class names the refusal; this table its code and its prefix (EPR's where it had one).
_DOMAIN: Final[tuple[tuple[type[DomainError], str, str], ...]] = (
    (NotFound, "NOT_FOUND", "object not found"),
    (Invalid, "INVALID", "invalid input"),
    (Conflict, "CONFLICT", "conflict"),
    (Forbidden, "FORBIDDEN", "forbidden"),
    (Unauthenticated, "UNAUTHENTICATED", "unauthenticated"),
    (TooLarge, "TOO_LARGE", "too large"),
)


class QueryRefused(Exception):
    """A request refused before anything ran: too large, too deep, too costly."""

    def __init__(self, code: str, message: str, **extensions: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extensions = extensions


def request_error(code: str, message: str, **extensions: Any) -> dict[str, Any]:
    """An error of the whole request (nothing was executed)."""
    return {"message": message, "extensions": {"code": code, **extensions}}


def _domain(exc: DomainError) -> tuple[str, dict[str, Any]]:
    for cls, code, prefix in _DOMAIN:
        if isinstance(exc, cls):
            extensions: dict[str, Any] = {"code": code}
            if exc.errors:
                extensions["errors"] = [
                    {"field": e.field, "message": e.message} for e in exc.errors
                ]
            return f"{prefix}: {exc.detail}", extensions
    return _internal(exc)  # pragma: no cover - every DomainError subclass is in the table


def _internal(exc: BaseException) -> tuple[str, dict[str, Any]]:
    error_id = secrets.token_hex(8)
    log.error("internal error %s in a GraphQL resolver", error_id, exc_info=exc)
    return "internal error", {"code": "INTERNAL", "error_id": error_id}


def format_error(error: GraphQLError, *, phase: str) -> dict[str, Any]:
    """One error of a result. `phase`: `validation` or `execution`."""
    original = error.original_error
    if isinstance(original, DomainError):
        message, extensions = _domain(original)
    elif isinstance(original, Unavailable):
        message = "unavailable: the database cannot serve right now; retry later"
        extensions = {"code": "UNAVAILABLE"}
    elif isinstance(original, HttpProblem):  # a bad cursor: the REST answer's 400
        extensions = {"code": "BAD_REQUEST"}
        if original.errors:
            extensions["errors"] = [
                {"field": e.field, "message": e.message} for e in original.errors
            ]
        message = f"invalid input: {original.detail}"
    elif phase == "validation":
        message = error.message
        extensions = {"code": (error.extensions or {}).get("code", "GRAPHQL_VALIDATION_FAILED")}
    elif error.path is None:
        # Before any resolver ran: a variable of the wrong type, a scalar that refused.
        message, extensions = error.message, {"code": "BAD_USER_INPUT"}
    elif original is not None and not isinstance(original, GraphQLError):
        message, extensions = _internal(original)
    else:
        message, extensions = error.message, {"code": "INTERNAL"}
    formatted: dict[str, Any] = {"message": message}
    if error.locations:
        formatted["locations"] = [
            {"line": loc.line, "column": loc.column} for loc in error.locations
        ]
    if error.path is not None:
        formatted["path"] = list(error.path)
    formatted["extensions"] = extensions
    return formatted
