"""Password hashing with scrypt (memory-hard), in a self-describing PHC-style string.

    $scrypt$ln=15,r=8,p=1$<salt, base64 without padding>$<hash, base64 without padding>

The parameters travel with each hash, so they can be raised later: a hash made
with weaker parameters still verifies, and `needs_rehash` tells the login use
case to store a new one made with the current parameters.

Why scrypt with N=2**15, r=8, p=1: it is in the standard library (`hashlib`,
OpenSSL), memory-hard (128 * r * N = 32 MiB per hash, which is what makes GPU and
ASIC guessing expensive), and those are the parameters OWASP's password storage
guidance lists for scrypt; a hash costs some tens of milliseconds on a server
core. Argon2id would be as good but needs another native dependency.

Passwords are NFKC-normalized (NIST SP 800-63B, 5.1.1.2) and UTF-8 encoded
before hashing, so the same password typed on two keyboards verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import unicodedata
from typing import Final

import msgspec

__all__ = ["DEFAULT_PARAMS", "ScryptHasher", "ScryptParams"]

_SALT_BYTES: Final = 16
_HASH_BYTES: Final = 32
# Refuse parameters a damaged or hostile stored hash could use to exhaust the server.
_MAX_LOG_N: Final = 20
_MAX_R: Final = 32
_MAX_P: Final = 16
_ENCODED = re.compile(
    r"\$scrypt\$ln=(?P<ln>[0-9]{1,2}),r=(?P<r>[0-9]{1,2}),p=(?P<p>[0-9]{1,2})"
    r"\$(?P<salt>[A-Za-z0-9+/]{11,88})\$(?P<hash>[A-Za-z0-9+/]{22,88})"
)


class ScryptParams(msgspec.Struct, frozen=True):
    """scrypt cost: N = 2**log_n, block size r, parallelism p."""

    log_n: int = 15
    r: int = 8
    p: int = 1

    def __post_init__(self) -> None:
        if not (1 <= self.log_n <= _MAX_LOG_N and 1 <= self.r <= _MAX_R and 1 <= self.p <= _MAX_P):
            raise ValueError("scrypt parameters out of range")

    @property
    def maxmem(self) -> int:
        """OpenSSL's bound (128 * r * (N + 2 + p)) with room to spare."""
        return 128 * self.r * ((1 << self.log_n) + 2 + self.p) + (1 << 20)


DEFAULT_PARAMS: Final = ScryptParams()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _encode(password: str) -> bytes:
    return unicodedata.normalize("NFKC", password).encode()


class ScryptHasher:
    def __init__(self, params: ScryptParams = DEFAULT_PARAMS) -> None:
        self.params = params
        # A hash of nothing anyone knows, for the timing of logins by unknown users.
        self._dummy = self._hash(os.urandom(_HASH_BYTES), params, os.urandom(_SALT_BYTES))

    def hash(self, password: str) -> str:
        return self._hash(_encode(password), self.params, os.urandom(_SALT_BYTES))

    def verify(self, password: str, encoded: str) -> bool:
        """Whether `password` matches; False (never an exception) for a malformed hash."""
        parsed = _parse(encoded)
        if parsed is None:
            return False
        params, salt, expected = parsed
        actual = _derive(_encode(password), params, salt, len(expected))
        return hmac.compare_digest(actual, expected)

    def verify_dummy(self, password: str) -> bool:
        """Spend the time of a verification and answer False (the user does not exist)."""
        self.verify(password, self._dummy)
        return False

    def needs_rehash(self, encoded: str) -> bool:
        """True when the hash was not made with the current parameters (or is unreadable)."""
        parsed = _parse(encoded)
        return parsed is None or parsed[0] != self.params or len(parsed[2]) != _HASH_BYTES

    @staticmethod
    def _hash(secret: bytes, params: ScryptParams, salt: bytes) -> str:
        digest = _derive(secret, params, salt, _HASH_BYTES)
        return f"$scrypt$ln={params.log_n},r={params.r},p={params.p}${_b64(salt)}${_b64(digest)}"


def _derive(secret: bytes, params: ScryptParams, salt: bytes, length: int) -> bytes:
    return hashlib.scrypt(
        secret,
        salt=salt,
        n=1 << params.log_n,
        r=params.r,
        p=params.p,
        maxmem=params.maxmem,
        dklen=length,
    )


def _parse(encoded: str) -> tuple[ScryptParams, bytes, bytes] | None:
    match = _ENCODED.fullmatch(encoded)
    if match is None:
        return None
    try:
        params = ScryptParams(int(match["ln"]), int(match["r"]), int(match["p"]))
        salt = _unb64(match["salt"])
        digest = _unb64(match["hash"])
    except (ValueError, binascii.Error):
        return None
    if len(salt) < 8 or len(digest) < 16:
        return None
    return params, salt, digest
