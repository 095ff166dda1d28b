"""Domain errors: plain exceptions that the HTTP layer maps to problem details in one place.

Each class names the refusal, never the status code: the mapping lives in the
HTTP layer (ARCHITECTURE.md, rule 5). Messages are for users: they never carry
internal state, SQL or stack traces.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from core.domain.access import Permission
from core.domain.refusals import REFUSAL_DETAIL, Refusal


class FieldError(msgspec.Struct, frozen=True):
    """One thing wrong with one field: a JSON pointer (or a plain name) and a message."""

    field: str
    message: str


class DomainError(Exception):
    """A rule of the domain refused the request."""

    title = "Request refused"

    def __init__(self, detail: str, errors: Iterable[FieldError] = ()) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors: tuple[FieldError, ...] = tuple(errors)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.detail!r}, errors={list(self.errors)!r})"


class Invalid(DomainError):
    """Well-formed input that the rules refuse (a bad slug, a payload that fails its schema)."""

    title = "Validation failed"


class NotFound(DomainError):
    """Nothing there, or it belongs to another tenant: the two are never told apart."""

    title = "Not found"


class Conflict(DomainError):
    """The request clashes with what is stored (a unique triple, an expected version)."""

    title = "Conflict"


class StreamVersionConflict(Conflict):
    """An append stated a stream version that is not the stream's current one."""

    title = "Stream version conflict"


class TooLarge(DomainError):
    """Input over a size limit."""

    title = "Too large"


class Unauthenticated(DomainError):
    """No acceptable credential (401). `reason` is for the audit log, `detail` for the caller.

    The caller is told `REFUSAL_DETAIL[reason]`, never the reason itself: which of
    the cryptographic checks failed, or whether a username exists, stays in the
    audit log.
    """

    title = "Unauthenticated"

    def __init__(self, reason: Refusal, detail: str | None = None) -> None:
        super().__init__(detail if detail is not None else REFUSAL_DETAIL[reason])
        self.reason = reason


class Forbidden(DomainError):
    """Authenticated, but not allowed: no role of the principal grants the permission (403)."""

    title = "Forbidden"

    def __init__(self, permission: Permission | None, detail: str | None = None) -> None:
        if detail is None:
            detail = f"This needs {permission}." if permission else "This is not allowed."
        super().__init__(detail)
        self.permission = permission


def raise_if(errors: list[FieldError], detail: str) -> None:
    """Raise `Invalid` carrying every collected error, if there is any."""
    if errors:
        raise Invalid(detail, errors)
