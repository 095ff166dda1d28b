"""Envelope encryption of secret values at rest.

Each secret version gets a fresh 256-bit data key (DEK). The value is encrypted
with AES-256-GCM under the DEK; the DEK is encrypted ("wrapped") with AES-256-GCM
under a key-encryption key (KEK) derived by HKDF-SHA256 from the master key. The
master key is given to the process (the composition root reads it from the
environment or a file) and is never stored; only an 8-byte identifier of the KEK
travels with each envelope, so that a wrong master key is told apart from a
damaged envelope.

Both encryptions authenticate the envelope header and the secret's context
(tenant, name, version) as associated data: an envelope copied onto another
secret, version or tenant does not decrypt. Anything wrong raises an
`EnvelopeError`; nothing ever decrypts "silently" to something else.

Format, version 1 (all integers big-endian)::

    offset  size  field
    0       4     magic b"WPSE"
    4       1     format version (1)
    5       1     suite (1 = HKDF-SHA256 KEK, AES-256-GCM wrap, AES-256-GCM data)
    6       8     KEK id: HKDF-SHA256(master, info="waypost/secrets/kek-id/v1")[:8]
    14      12    wrap nonce (random)
    26      48    wrapped DEK: AES-256-GCM(KEK, wrap nonce, DEK, aad) = 32 + 16-byte tag
    74      12    data nonce (random)
    86      n+16  AES-256-GCM(DEK, data nonce, value, aad): ciphertext and tag

    aad = bytes 0..13 (the header) || context
    context = b"waypost-secret/v1\\0"
              || (b"\\0" if no tenant else b"\\1" || u16 len || tenant id UTF-8)
              || u16 len || name UTF-8 || u64 version
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
from collections.abc import Sequence
from typing import Final

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "MIN_MASTER_KEY_BYTES",
    "EnvelopeCipher",
    "EnvelopeError",
    "IntegrityError",
    "SecretContext",
    "UnsupportedFormat",
    "WrongMasterKey",
    "generate_master_key",
    "parse_master_key",
]

MAGIC: Final = b"WPSE"
FORMAT_VERSION: Final = 1
SUITE_HKDF_AESGCM: Final = 1
MIN_MASTER_KEY_BYTES: Final = 32

_KEK_INFO: Final = b"waypost/secrets/kek/v1"
_KEK_ID_INFO: Final = b"waypost/secrets/kek-id/v1"
_CONTEXT_LABEL: Final = b"waypost-secret/v1\x00"
_KEY_BYTES: Final = 32
_NONCE_BYTES: Final = 12
_TAG_BYTES: Final = 16
_KEK_ID_BYTES: Final = 8
_HEADER = struct.Struct(f">4sBB{_KEK_ID_BYTES}s")
_WRAPPED_BYTES: Final = _KEY_BYTES + _TAG_BYTES
_DATA_AT: Final = _HEADER.size + _NONCE_BYTES + _WRAPPED_BYTES
_MIN_LENGTH: Final = _DATA_AT + _NONCE_BYTES + _TAG_BYTES
_MAX_FIELD: Final = 0xFFFF


class EnvelopeError(Exception):
    """An envelope could not be opened. Never caught to mean "no value"."""


class UnsupportedFormat(EnvelopeError):
    """Not a Waypost envelope, or one of a format or suite this build does not know."""


class WrongMasterKey(EnvelopeError):
    """The envelope was sealed under a master key this process was not given."""


class IntegrityError(EnvelopeError):
    """Authentication failed: the envelope was altered, or belongs to another secret."""


class SecretContext(msgspec.Struct, frozen=True):
    """What an envelope is bound to: its tenant (None: the platform's), name and version."""

    tenant_id: str | None
    name: str
    version: int

    def encode(self) -> bytes:
        name = self.name.encode()
        if len(name) > _MAX_FIELD or not 0 <= self.version < 2**64:
            raise ValueError("secret name or version out of range")
        if self.tenant_id is None:
            tenant = b"\x00"
        else:
            raw = self.tenant_id.encode()
            if len(raw) > _MAX_FIELD:
                raise ValueError("tenant id out of range")
            tenant = b"\x01" + struct.pack(">H", len(raw)) + raw
        return (
            _CONTEXT_LABEL
            + tenant
            + struct.pack(">H", len(name))
            + name
            + struct.pack(">Q", self.version)
        )


class _Kek:
    def __init__(self, master_key: bytes) -> None:
        if len(master_key) < MIN_MASTER_KEY_BYTES:
            raise ValueError(f"a master key has at least {MIN_MASTER_KEY_BYTES} bytes")
        self.aead = AESGCM(_hkdf(master_key, _KEK_INFO, _KEY_BYTES))
        self.id = _hkdf(master_key, _KEK_ID_INFO, _KEK_ID_BYTES)


def _hkdf(master_key: bytes, info: bytes, length: int) -> bytes:
    # No salt: the master key is uniformly random already (RFC 5869, 3.1).
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(master_key)


class EnvelopeCipher:
    """Seals with the first master key; opens with any of them (for master-key rotation)."""

    def __init__(self, master_keys: Sequence[bytes]) -> None:
        if not master_keys:
            raise ValueError("at least one master key is needed")
        self._keks = [_Kek(k) for k in master_keys]
        self._by_id = {k.id: k for k in self._keks}

    @property
    def master_key_id(self) -> str:
        """The hex id of the master key that seals (safe to log)."""
        return self._keks[0].id.hex()

    def encrypt(self, plaintext: bytes, context: SecretContext) -> bytes:
        return self._seal(self._keks[0], os.urandom(_KEY_BYTES), plaintext, context)

    def decrypt(self, envelope: bytes, context: SecretContext) -> bytes:
        header, dek = self._open_dek(envelope, context)
        aad = header + context.encode()
        nonce = envelope[_DATA_AT : _DATA_AT + _NONCE_BYTES]
        try:
            return AESGCM(dek).decrypt(nonce, envelope[_DATA_AT + _NONCE_BYTES :], aad)
        except InvalidTag:
            raise IntegrityError("the secret envelope failed authentication") from None

    def rewrap(self, envelope: bytes, context: SecretContext) -> bytes:
        """The same value sealed under the current master key (after a master-key rotation)."""
        return self.encrypt(self.decrypt(envelope, context), context)

    def sealed_with(self, envelope: bytes) -> str:
        """The hex id of the master key an envelope was sealed with."""
        return _parse_header(envelope)[1].hex()

    # --- internals -----------------------------------------------------------------------

    def _seal(self, kek: _Kek, dek: bytes, plaintext: bytes, context: SecretContext) -> bytes:
        header = _HEADER.pack(MAGIC, FORMAT_VERSION, SUITE_HKDF_AESGCM, kek.id)
        aad = header + context.encode()
        wrap_nonce = os.urandom(_NONCE_BYTES)
        data_nonce = os.urandom(_NONCE_BYTES)
        wrapped = kek.aead.encrypt(wrap_nonce, dek, aad)
        sealed = AESGCM(dek).encrypt(data_nonce, plaintext, aad)
        return header + wrap_nonce + wrapped + data_nonce + sealed

    def _open_dek(self, envelope: bytes, context: SecretContext) -> tuple[bytes, bytes]:
        header, kek_id = _parse_header(envelope)
        kek = self._by_id.get(kek_id)
        if kek is None:
            raise WrongMasterKey(
                f"the secret was sealed under master key {kek_id.hex()}, which was not given"
            )
        at = _HEADER.size
        nonce = envelope[at : at + _NONCE_BYTES]
        wrapped = envelope[at + _NONCE_BYTES : _DATA_AT]
        try:
            dek = kek.aead.decrypt(nonce, wrapped, header + context.encode())
        except InvalidTag:
            raise IntegrityError("the secret envelope failed authentication") from None
        return header, dek


def _parse_header(envelope: bytes) -> tuple[bytes, bytes]:
    if len(envelope) < _MIN_LENGTH or envelope[:4] != MAGIC:
        raise UnsupportedFormat("not a Waypost secret envelope")
    _, version, suite, kek_id = _HEADER.unpack_from(envelope)
    if version != FORMAT_VERSION or suite != SUITE_HKDF_AESGCM:
        raise UnsupportedFormat(f"unknown envelope format {version} / suite {suite}")
    return envelope[: _HEADER.size], kek_id


def generate_master_key() -> str:
    """A new master key, as the text `parse_master_key` reads (base64url of 32 random bytes)."""
    return base64.urlsafe_b64encode(os.urandom(_KEY_BYTES)).decode().rstrip("=")


def parse_master_key(text: str) -> bytes:
    """A master key from its text form: base64 (standard or url-safe, padding optional)
    or hex; at least 32 bytes. Surrounding whitespace (a file's newline) is ignored."""
    value = text.strip()
    if len(value) == 2 * MIN_MASTER_KEY_BYTES or len(value) == 4 * MIN_MASTER_KEY_BYTES:
        try:
            return _check_length(bytes.fromhex(value))
        except ValueError:
            pass
    try:
        raw = base64.b64decode(
            value.replace("-", "+").replace("_", "/") + "=" * (-len(value) % 4), validate=True
        )
    except (binascii.Error, ValueError):
        raise ValueError("a master key is base64 or hex text") from None
    return _check_length(raw)


def _check_length(raw: bytes) -> bytes:
    if len(raw) < MIN_MASTER_KEY_BYTES:
        raise ValueError(f"a master key has at least {MIN_MASTER_KEY_BYTES} bytes")
    return raw
