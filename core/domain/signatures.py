"""Standard Webhooks signatures: what every delivery attempt carries so targets can trust it.

A subscription's secret is `whsec_` followed by the base64 of 32 random bytes. Each
attempt is signed afresh: `webhook-signature` is `v1,` and the base64 of the
HMAC-SHA256, under the secret's bytes, of `<webhook-id>.<webhook-timestamp>.<body>`
(the id is the message's, the same on every attempt; the timestamp is the attempt's,
in seconds since the epoch). While a rotated secret is in its grace period, the old
and the new one both sign: their `v1,` entries are separated by a space, newest first,
and a target that knows either secret verifies.

Pure: the random bytes and the time are arguments.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from typing import Final

__all__ = [
    "SECRET_BYTES",
    "SECRET_PREFIX",
    "headers",
    "new_secret",
    "secret_key",
    "sign",
    "signature_header",
    "verify",
]

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - a prefix, not a secret
SECRET_BYTES: Final = 32
CONTENT_TYPE: Final = "application/cloudevents+json"


def new_secret(random_bytes: bytes) -> str:
    """A secret from `SECRET_BYTES` random bytes."""
    if len(random_bytes) != SECRET_BYTES:
        raise ValueError(f"a webhook secret is made of {SECRET_BYTES} random bytes")
    return SECRET_PREFIX + base64.b64encode(random_bytes).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key a `whsec_...` secret stands for; ValueError if it is not one."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error:
        raise ValueError("a webhook secret is base64 after its prefix") from None
    if not key:
        raise ValueError("a webhook secret is not empty")
    return key


def _signed_content(message_id: str, timestamp: int, body: bytes) -> bytes:
    return f"{message_id}.{timestamp}.".encode() + body


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature entry."""
    digest = hmac.new(
        secret_key(secret), _signed_content(message_id, timestamp, body), hashlib.sha256
    ).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(secrets: Sequence[str], message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one entry per secret, space-separated, in their order."""
    if not secrets:
        raise ValueError("a webhook is signed by at least one secret")
    return " ".join(sign(s, message_id, timestamp, body) for s in secrets)


def headers(
    secrets: Sequence[str], message_id: str, timestamp: int, body: bytes, user_agent: str
) -> list[tuple[str, str]]:
    """Every header a delivery attempt sends (the sender adds only Host and Content-Length)."""
    return [
        ("Content-Type", CONTENT_TYPE),
        ("User-Agent", user_agent),
        ("webhook-id", message_id),
        ("webhook-timestamp", str(timestamp)),
        ("webhook-signature", signature_header(secrets, message_id, timestamp, body)),
    ]


def verify(
    secret: str,
    message_id: str,
    timestamp: int,
    body: bytes,
    signatures: str,
    *,
    now: int,
    tolerance: int = 300,
) -> bool:
    """What a target does: one of the header's `v1,` entries is this secret's signature, and
    the timestamp is within `tolerance` seconds of `now` (a replayed request is refused)."""
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, message_id, timestamp, body)
    return any(
        hmac.compare_digest(expected.encode(), entry.encode()) for entry in signatures.split(" ")
    )
