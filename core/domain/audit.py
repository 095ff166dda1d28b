"""The audit log's records: who did what, when, from which address, and how it ended.

The log is append-only (the port has no update and no delete). One record per
security-relevant act: a login that worked or not, a credential refused on a
request, an access denied, a key created or revoked, a refresh-token family
revoked, a user created, changed (its roles above all) or deleted, a tenant
created or changed, a secret created, rotated or opened.

A record belongs to a tenant, or to the platform (`tenant_id` None) when no
tenant can be trusted (a token whose signature does not verify names nobody).
`reason` holds the precise cause of a refusal (`core.domain.refusals.Refusal`),
which the caller is never told.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Final

import msgspec

__all__ = [
    "ANONYMOUS",
    "MAX_ACTOR_LENGTH",
    "AuditAction",
    "AuditRecord",
    "Outcome",
    "attempted_actor",
]

#: The actor of a request that proved no identity.
ANONYMOUS: Final = "anonymous"
MAX_ACTOR_LENGTH: Final = 128


class AuditAction(StrEnum):
    LOGIN = "auth.login"
    REFRESH = "auth.refresh"
    CREDENTIAL_REFUSED = "auth.refused"
    TOKEN_REVOKED = "auth.token_revoked"  # noqa: S105 - a name, not a secret
    FAMILY_REVOKED = "auth.family_revoked"
    ACCESS_DENIED = "access.denied"
    API_KEY_CREATED = "api_key.created"
    API_KEY_REVOKED = "api_key.revoked"
    USER_CREATED = "user.created"
    USER_CHANGED = "user.changed"
    ROLE_CHANGED = "user.roles_changed"
    USER_DELETED = "user.deleted"
    TENANT_CREATED = "tenant.created"
    TENANT_CHANGED = "tenant.changed"
    SECRET_CREATED = "secret.created"  # noqa: S105 - a name, not a secret
    SECRET_ROTATED = "secret.rotated"  # noqa: S105 - a name, not a secret
    SECRET_ACCESSED = "secret.accessed"  # noqa: S105 - a name, not a secret
    #: A secret version sealed again under a new master key (`waypost secrets rewrap`).
    SECRET_REWRAPPED = "secret.rewrapped"  # noqa: S105 - a name, not a secret
    PLATFORM_BOOTSTRAPPED = "platform.bootstrapped"
    #: Records older than `audit.retention_days` were deleted (how many: the reason).
    AUDIT_PURGED = "audit.purged"


class Outcome(StrEnum):
    SUCCESS = "success"
    #: A credential was not accepted (401).
    FAILURE = "failure"
    #: A known principal was not allowed (403).
    DENIED = "denied"


class AuditRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    #: None: the platform's own log.
    tenant_id: str | None
    at: datetime
    #: The principal's subject (`user:<id>`, `api_key:<id>`), `anonymous`, or an
    #: operator's tool (`cli`, `system`).
    actor: str
    action: AuditAction
    #: What was acted on: `user:<id>`, `api_key:<id>`, `token:<jti>`, `family:<id>`,
    #: `secret:<name>/<version>`, `tenant:<slug>`, or `<METHOD> <path>` for a request.
    target: str
    outcome: Outcome
    address: str | None = None
    request_id: str | None = None
    reason: str | None = None


def attempted_actor(kind: str, name: str) -> str:
    """The actor of a failed login by a name nobody may trust (`username:<as typed>`),
    kept short and printable."""
    printable = "".join(c if c.isprintable() else "?" for c in name)
    return f"{kind}:{printable}"[:MAX_ACTOR_LENGTH]
