"""API keys and refresh tokens: high-entropy bearer secrets, stored only as hashes.

An API key reads `wp_<prefix>_<secret>` (`core.domain.identity` owns the format):
the prefix (8 of a-z0-9) is stored in clear to find the key, the secret is 32
random bytes (256 bits) in base64url. A refresh token reads `wprt_<secret>`, the
same 256 bits.

Why a plain SHA-256 and not a password hash: a password hash is slow because
passwords are guessable; a 256-bit random secret is not, so one fast hash is
already preimage-resistant far beyond any search, and checking a key on every
request stays cheap. The hash covers the whole key text (prefix included, under
a domain label), so a secret cannot be moved to another prefix, and the store
never holds anything that authenticates. Verification compares in constant time.
A refresh token's hash is also its lookup key (the token has no prefix).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Final

import msgspec

from core.domain.identity import (
    API_KEY_PREFIX_ALPHABET,
    API_KEY_PREFIX_LENGTH,
    format_api_key,
    format_refresh_token,
    parse_api_key,
    parse_refresh_token,
)

__all__ = [
    "SECRET_BYTES",
    "NewApiKey",
    "NewRefreshToken",
    "hash_api_key",
    "hash_refresh_token",
    "new_api_key",
    "new_refresh_token",
    "verify_api_key",
]

SECRET_BYTES: Final = 32
_SCHEME: Final = "sha256"
_API_KEY_LABEL: Final = b"waypost/api-key/v1\x00"
_REFRESH_LABEL: Final = b"waypost/refresh-token/v1\x00"


class NewApiKey(msgspec.Struct, frozen=True, kw_only=True):
    """A freshly made key: `text` is shown once and never stored; store `prefix` and `hash`."""

    text: str
    prefix: str
    hash: str


class NewRefreshToken(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    hash: str


def _digest(label: bytes, text: str) -> str:
    return f"{_SCHEME}${hashlib.sha256(label + text.encode()).hexdigest()}"


def new_api_key() -> NewApiKey:
    prefix = "".join(secrets.choice(API_KEY_PREFIX_ALPHABET) for _ in range(API_KEY_PREFIX_LENGTH))
    text = format_api_key(prefix, secrets.token_urlsafe(SECRET_BYTES))
    return NewApiKey(text=text, prefix=prefix, hash=hash_api_key(text))


def hash_api_key(text: str) -> str:
    """The stored form of a whole key (`wp_<prefix>_<secret>`)."""
    if parse_api_key(text) is None:
        raise ValueError("not an API key")
    return _digest(_API_KEY_LABEL, text)


def verify_api_key(text: str, stored_hash: str) -> bool:
    """Whether the presented key is the one `stored_hash` was made from (constant time)."""
    if parse_api_key(text) is None:
        return False
    return hmac.compare_digest(_digest(_API_KEY_LABEL, text), stored_hash)


def new_refresh_token() -> NewRefreshToken:
    text = format_refresh_token(secrets.token_urlsafe(SECRET_BYTES))
    return NewRefreshToken(text=text, hash=hash_refresh_token(text))


def hash_refresh_token(text: str) -> str:
    """The stored form of a refresh token, which is also how it is looked up."""
    if parse_refresh_token(text) is None:
        raise ValueError("not a refresh token")
    return _digest(_REFRESH_LABEL, text)
