"""Why a credential was not accepted: one value per cause, and what a caller may be told.

`Refusal` names the precise cause for the audit log; `REFUSAL_DETAIL` is the one
text a caller sees for it, and it never tells a wrong username from a wrong
password, nor one cryptographic failure from another.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

__all__ = ["LOGIN_REFUSALS", "REFUSAL_DETAIL", "TOKEN_REFUSALS", "Refusal"]


class Refusal(StrEnum):
    """Why a credential was not accepted: one value per cause, for the audit log."""

    MISSING_CREDENTIALS = "missing_credentials"
    MALFORMED_TOKEN = "malformed_token"  # noqa: S105 - a name, not a secret
    BAD_SIGNATURE = "bad_signature"
    ALGORITHM_NOT_ALLOWED = "algorithm_not_allowed"
    UNKNOWN_KID = "unknown_kid"
    KEY_RETIRED = "key_retired"
    WRONG_TYPE = "wrong_type"
    REFRESH_TOKEN_AS_ACCESS = "refresh_token_as_access_token"  # noqa: S105 - a name, not a secret
    MISSING_CLAIM = "missing_claim"
    INVALID_CLAIM = "invalid_claim"
    WRONG_ISSUER = "wrong_issuer"
    WRONG_AUDIENCE = "wrong_audience"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    ISSUED_IN_FUTURE = "issued_in_future"
    TOKEN_REVOKED = "token_revoked"  # noqa: S105 - a name, not a secret
    REVOCATION_UNAVAILABLE = "revocation_check_unavailable"
    BAD_CREDENTIALS = "bad_credentials"
    MALFORMED_API_KEY = "malformed_api_key"
    API_KEY_EXPIRED = "api_key_expired"
    API_KEY_REVOKED = "api_key_revoked"
    PRINCIPAL_GONE = "principal_gone"
    PRINCIPAL_DISABLED = "principal_disabled"
    TENANT_DISABLED = "tenant_disabled"
    UNKNOWN_REFRESH_TOKEN = "unknown_refresh_token"  # noqa: S105 - a name, not a secret
    REFRESH_TOKEN_REUSED = "refresh_token_reused"  # noqa: S105 - a name, not a secret
    FAMILY_REVOKED = "refresh_family_revoked"
    #: A client certificate (mTLS) that no service identity maps.
    UNMAPPED_CERTIFICATE = "unmapped_client_certificate"


_BAD_LOGIN = "The credentials were not accepted."
_BAD_TOKEN = "The access token is not valid."  # noqa: S105 - a name, not a secret

#: What a caller is told for each refusal: never the reason itself (the audit log has
#: it). Every refused access token reads the same, every refused login the same (nobody
#: learns which usernames exist or that a password was right), every refused refresh
#: token the same. A client that gets a 401 refreshes, or logs in again.
REFUSAL_DETAIL: Mapping[Refusal, str] = MappingProxyType(
    {
        Refusal.MISSING_CREDENTIALS: "Credentials are required.",
        Refusal.MALFORMED_TOKEN: _BAD_TOKEN,
        Refusal.BAD_SIGNATURE: _BAD_TOKEN,
        Refusal.ALGORITHM_NOT_ALLOWED: _BAD_TOKEN,
        Refusal.UNKNOWN_KID: _BAD_TOKEN,
        Refusal.KEY_RETIRED: _BAD_TOKEN,
        Refusal.WRONG_TYPE: _BAD_TOKEN,
        Refusal.REFRESH_TOKEN_AS_ACCESS: _BAD_TOKEN,
        Refusal.MISSING_CLAIM: _BAD_TOKEN,
        Refusal.INVALID_CLAIM: _BAD_TOKEN,
        Refusal.WRONG_ISSUER: _BAD_TOKEN,
        Refusal.WRONG_AUDIENCE: _BAD_TOKEN,
        Refusal.EXPIRED: _BAD_TOKEN,
        Refusal.NOT_YET_VALID: _BAD_TOKEN,
        Refusal.ISSUED_IN_FUTURE: _BAD_TOKEN,
        Refusal.TOKEN_REVOKED: _BAD_TOKEN,
        Refusal.REVOCATION_UNAVAILABLE: _BAD_TOKEN,
        Refusal.BAD_CREDENTIALS: _BAD_LOGIN,
        Refusal.MALFORMED_API_KEY: _BAD_LOGIN,
        Refusal.API_KEY_EXPIRED: _BAD_LOGIN,
        Refusal.API_KEY_REVOKED: _BAD_LOGIN,
        Refusal.UNMAPPED_CERTIFICATE: _BAD_LOGIN,
        Refusal.PRINCIPAL_GONE: _BAD_LOGIN,
        Refusal.PRINCIPAL_DISABLED: _BAD_LOGIN,
        Refusal.TENANT_DISABLED: _BAD_LOGIN,
        Refusal.UNKNOWN_REFRESH_TOKEN: "The refresh token is not valid.",
        Refusal.REFRESH_TOKEN_REUSED: "The refresh token is not valid.",
        Refusal.FAMILY_REVOKED: "The refresh token is not valid.",
    }
)


#: Refusals of a credential presented to log in (the token endpoint, an API key): they
#: all read alike to the caller.
LOGIN_REFUSALS: frozenset[Refusal] = frozenset(
    {
        Refusal.BAD_CREDENTIALS,
        Refusal.MALFORMED_API_KEY,
        Refusal.API_KEY_EXPIRED,
        Refusal.API_KEY_REVOKED,
        Refusal.PRINCIPAL_GONE,
        Refusal.PRINCIPAL_DISABLED,
        Refusal.TENANT_DISABLED,
    }
)

#: Refusals of a bearer token (RFC 6750 `error="invalid_token"`): everything but a
#: missing credential.
TOKEN_REFUSALS: frozenset[Refusal] = frozenset(Refusal) - {Refusal.MISSING_CREDENTIALS}
