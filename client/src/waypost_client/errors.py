"""Typed errors: every problem+json answer of the server becomes an `ApiError` subclass.

`ApiError` carries what RFC 9457 says (`status`, `type`, `title`, `detail`) and the
fields at fault (`errors`, each a `FieldError`), plus the answer's `X-Request-ID` to
quote to an operator. Connections that fail beyond the retry budget raise
`ConnectionFailed`; a `gate wait` that runs out of time raises `GateTimeout`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "ApiError",
    "BadRequest",
    "Conflict",
    "ConnectionFailed",
    "FieldError",
    "Forbidden",
    "GateTimeout",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "ServerError",
    "ServiceUnavailable",
    "Unauthorized",
    "Unprocessable",
    "WaypostError",
    "error_for",
]


class WaypostError(Exception):
    """Everything this library raises on purpose."""


@dataclass(frozen=True)
class FieldError:
    """One field at fault: a JSON pointer (`/events/3/payload/build`) or a parameter name."""

    field: str
    message: str


class ApiError(WaypostError):
    """The server answered with an error (a problem+json document, or a bare status)."""

    def __init__(
        self,
        status: int,
        *,
        type: str = "about:blank",
        title: str = "",
        detail: str = "",
        errors: list[FieldError] | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        self.errors = list(errors or [])
        self.request_id = request_id
        self.retry_after = retry_after
        fields = "; ".join(f"{e.field}: {e.message}" for e in self.errors)
        text = f"{status} {title or 'error'}" + (f": {detail}" if detail else "")
        super().__init__(text + (f" ({fields})" if fields else ""))


class BadRequest(ApiError):
    """400: malformed JSON, a wrong shape or type, an unknown field or parameter value."""


class Unauthorized(ApiError):
    """401: no credential, or one that is not valid (expired, revoked, tenant disabled)."""


class Forbidden(ApiError):
    """403: the credential is valid but its role may not do this."""


class NotFound(ApiError):
    """404: nothing there (or another tenant's: the same answer)."""


class Conflict(ApiError):
    """409: a unique rule (a receiver's name, type and version), or a request in progress."""


class PayloadTooLarge(ApiError):
    """413: the body is larger than the server takes."""


class Unprocessable(ApiError):
    """422: well-formed but refused (a payload that fails its schema, an unknown receiver)."""


class RateLimited(ApiError):
    """429: over the credential's rate limit; `retry_after` says when to try again."""


class ServiceUnavailable(ApiError):
    """503: the server is at its limit of work (or not ready); `retry_after` says when."""


class ServerError(ApiError):
    """Another 5xx: the server failed; `detail` holds an error id that is in its log."""


class ConnectionFailed(WaypostError):
    """The server could not be reached (or dropped the connection) within the retry budget."""


class GateTimeout(WaypostError):
    """A gate did not complete in the time given; `status` is how it was at the end."""

    def __init__(self, message: str, status: Any) -> None:
        super().__init__(message)
        self.status = status


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: Unprocessable,
    429: RateLimited,
    503: ServiceUnavailable,
}


def error_for(
    status: int,
    body: Any,
    *,
    request_id: str | None = None,
    retry_after: float | None = None,
) -> ApiError:
    """The typed error for an answer's status and (decoded JSON) body."""
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    problem = body if isinstance(body, dict) else {}
    errors = [
        FieldError(str(e.get("field", "")), str(e.get("message", "")))
        for e in problem.get("errors") or []
        if isinstance(e, dict)
    ]
    return cls(
        status,
        type=str(problem.get("type", "about:blank")),
        title=str(problem.get("title", "")),
        detail=str(problem.get("detail", "")),
        errors=errors,
        request_id=request_id,
        retry_after=retry_after,
    )
