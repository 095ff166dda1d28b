"""X-Request-ID: the caller's when it is sane, else a new one; on every answer.

The id is decided once per request, lazily, and kept in the ASGI scope's
state: the tenant resolution uses it as the correlation id of what the request
writes, the 500 handler logs it, and the app's `before_send` hook
(`security.add_answer_headers`) puts it on the answer (404 and 405 included, which
never reach a route's middleware).
"""

from __future__ import annotations

import os
import re
from typing import Final

from litestar.types import Scope

HEADER: Final = b"x-request-id"
MAX_LENGTH: Final = 128
_STATE_KEY: Final = "waypost.request_id"
_SANE: Final = re.compile(rb"[A-Za-z0-9._-]{1,%d}" % MAX_LENGTH)


def new_request_id() -> str:
    return os.urandom(16).hex()


def request_id(scope: Scope) -> str:
    """This request's id: decided on first use, the same ever after."""
    state = scope.setdefault("state", {})
    found: str | None = state.get(_STATE_KEY)
    if found is None:
        found = _from_caller(scope) or new_request_id()
        state[_STATE_KEY] = found
    return found


def _from_caller(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == HEADER:
            return value.decode("ascii") if _SANE.fullmatch(value) else None
    return None


def request_id_header(scope: Scope) -> tuple[bytes, bytes]:
    """The `X-Request-ID` header of the answer (`security.add_answer_headers` adds it)."""
    return HEADER, request_id(scope).encode("ascii")
