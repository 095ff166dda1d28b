"""Access tokens: JWS compact serialization signed with EdDSA (Ed25519) or RS256.

A small, closed implementation over `cryptography` rather than a general JOSE
library: it knows two algorithms and refuses everything else, and the algorithm
a token may use is the one of the key its `kid` names (RFC 8725, 3.1). So
`alg: none`, HS256 signed with a public key, an RSA key used as EdDSA and the
like are refused before any signature is computed, whatever the header says.
Headers that point at other keys (`jwk`, `jku`, `x5u`, `x5c`) are never used,
and a `crit` header is refused (we implement no extension).

Verification order: shape and size -> header -> algorithm is one we sign with ->
`kid` names a key we trust now (unknown, pending and retired keys are refused) ->
the header's `alg` is that key's -> signature -> payload JSON -> the claim checks
of `core.domain.identity.check_access_claims`.

Key ids are RFC 7638 thumbprints of the public keys. Private keys are kept as
unencrypted PKCS#8 DER *inside* a secret envelope (`adapters.crypto.envelope`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Final, Literal

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from core.domain.identity import (
    ACCESS_TOKEN_TTL,
    ACCESS_TOKEN_TYPE,
    LEEWAY,
    BearerKind,
    Claims,
    Principal,
    Refusal,
    access_claims,
    bearer_kind,
    check_access_claims,
)
from core.domain.rotation import SecretVersion, VersionState

__all__ = [
    "MAX_TOKEN_LENGTH",
    "AccessTokens",
    "Algorithm",
    "KeySet",
    "SigningKey",
    "VerifyKey",
    "decode_verified",
    "key_set",
    "sign",
]

Algorithm = Literal["EdDSA", "RS256"]
ALGORITHMS: Final[frozenset[str]] = frozenset({"EdDSA", "RS256"})
MIN_RSA_BITS: Final = 2048
DEFAULT_RSA_BITS: Final = 3072
MAX_TOKEN_LENGTH: Final = 8192

_PublicKey = ed25519.Ed25519PublicKey | rsa.RSAPublicKey
_PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


# --- base64url and JSON, strictly -----------------------------------------------------------


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    """Strict: base64url alphabet, no padding, canonical (re-encodes to the same text)."""
    if "=" in text or len(text) % 4 == 1:
        raise ValueError("not base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None
    if b64url(raw) != text:
        raise ValueError("not canonical base64url")
    return raw


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"duplicate member {key!r}")
        found[key] = value
    return found


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_refuse_constant,
        )
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _int_b64(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))


# --- keys -----------------------------------------------------------------------------------


def _public_members(public: _PublicKey) -> dict[str, str]:
    """The JWK members that define a public key (the RFC 7638 thumbprint input)."""
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"crv": "Ed25519", "kty": "OKP", "x": b64url(raw)}
    numbers = public.public_numbers()
    return {"e": _int_b64(numbers.e), "kty": "RSA", "n": _int_b64(numbers.n)}


def _thumbprint(public: _PublicKey) -> str:
    members = json.dumps(_public_members(public), separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(members.encode()).digest())


class VerifyKey:
    """A public key we trust, with the one algorithm it may verify."""

    def __init__(self, public: _PublicKey) -> None:
        if isinstance(public, rsa.RSAPublicKey) and public.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA keys have at least {MIN_RSA_BITS} bits")
        self.public = public
        self.alg: Algorithm = "EdDSA" if isinstance(public, ed25519.Ed25519PublicKey) else "RS256"
        self.kid = _thumbprint(public)

    def jwk(self) -> dict[str, str]:
        return {**_public_members(self.public), "kid": self.kid, "alg": self.alg, "use": "sig"}

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        try:
            if isinstance(self.public, ed25519.Ed25519PublicKey):
                self.public.verify(signature, signing_input)
            else:
                self.public.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return False
        return True


class SigningKey:
    """A private signing key: Ed25519 (alg EdDSA) or RSA (alg RS256)."""

    def __init__(self, private: _PrivateKey) -> None:
        self.private = private
        self.verify_key = VerifyKey(private.public_key())

    @property
    def kid(self) -> str:
        return self.verify_key.kid

    @property
    def alg(self) -> Algorithm:
        return self.verify_key.alg

    @classmethod
    def generate(cls, alg: Algorithm = "EdDSA", *, rsa_bits: int = DEFAULT_RSA_BITS) -> SigningKey:
        if alg == "EdDSA":
            return cls(ed25519.Ed25519PrivateKey.generate())
        if alg == "RS256":
            if rsa_bits < MIN_RSA_BITS:
                raise ValueError(f"RSA keys have at least {MIN_RSA_BITS} bits")
            return cls(rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits))
        raise ValueError(f"unsupported algorithm {alg!r}")

    @classmethod
    def from_pkcs8(cls, der: bytes) -> SigningKey:
        private = serialization.load_der_private_key(der, password=None)
        if not isinstance(private, ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey):
            raise ValueError("only Ed25519 and RSA signing keys are supported")
        return cls(private)

    def to_pkcs8(self) -> bytes:
        """Unencrypted PKCS#8 DER: seal it in a secret envelope, never store it bare."""
        return self.private.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def sign(self, signing_input: bytes) -> bytes:
        if isinstance(self.private, ed25519.Ed25519PrivateKey):
            return self.private.sign(signing_input)
        return self.private.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())


class _Trusted(msgspec.Struct, frozen=True):
    key: VerifyKey
    #: None while the key signs; the end of its grace once it no longer does.
    until: datetime | None


class KeySet:
    """The keys of one moment of the rotation: the signing key and the keys that verify.

    A verify-only key carries the end of its grace, and `find` compares it with
    the time of each verification: a key set kept in a cache never stretches a
    grace period.
    """

    def __init__(
        self,
        signing: SigningKey,
        *,
        verify_only: Iterable[tuple[VerifyKey, datetime]] = (),
        pending: Iterable[VerifyKey] = (),
        retired: Iterable[str] = (),
    ) -> None:
        self.signing = signing
        self._trusted: dict[str, _Trusted] = {signing.kid: _Trusted(signing.verify_key, None)}
        for key, until in verify_only:
            self._trusted.setdefault(key.kid, _Trusted(key, until))
        self._pending = {k.kid: k for k in pending if k.kid not in self._trusted}
        self._retired = frozenset(retired) - set(self._trusted)

    def find(self, kid: str, now: datetime) -> VerifyKey | Refusal:
        trusted = self._trusted.get(kid)
        if trusted is None:
            # A pending key signs nothing yet: a token under it is not ours (yet).
            return Refusal.KEY_RETIRED if kid in self._retired else Refusal.UNKNOWN_KID
        if trusted.until is not None and now >= trusted.until:
            return Refusal.KEY_RETIRED
        return trusted.key

    def jwks(self, now: datetime) -> dict[str, list[dict[str, str]]]:
        """The public keys to publish at `now`: the signing one first, the verifying ones,
        then pending ones (so that caches know them before they sign)."""
        keys = [t.key.jwk() for t in self._trusted.values() if t.until is None or now < t.until]
        keys += [k.jwk() for k in self._pending.values()]
        return {"keys": keys}


def key_set(versions: Iterable[tuple[SecretVersion, SigningKey]]) -> KeySet:
    """The key set of a rotated secret's versions (`core.domain.rotation`) and their keys."""
    signing: SigningKey | None = None
    verify_only: list[tuple[VerifyKey, datetime]] = []
    pending: list[VerifyKey] = []
    retired: list[str] = []
    for version, key in versions:
        match version.state:
            case VersionState.ACTIVE:
                if signing is not None:
                    raise ValueError("more than one active signing key")
                signing = key
            case VersionState.VERIFY_ONLY:
                assert version.verify_until is not None
                verify_only.append((key.verify_key, version.verify_until))
            case VersionState.PENDING:
                pending.append(key.verify_key)
            case VersionState.RETIRED:
                retired.append(key.kid)
    if signing is None:
        raise ValueError("no active signing key")
    return KeySet(signing, verify_only=verify_only, pending=pending, retired=retired)


# --- JWS ------------------------------------------------------------------------------------


def _encode_json(value: Mapping[str, Any]) -> str:
    return b64url(msgspec.json.encode(dict(value)))


def sign(key: SigningKey, claims: Mapping[str, Any], *, typ: str = ACCESS_TOKEN_TYPE) -> str:
    header = {"alg": key.alg, "kid": key.kid, "typ": typ}
    signing_input = f"{_encode_json(header)}.{_encode_json(claims)}"
    return f"{signing_input}.{b64url(key.sign(signing_input.encode('ascii')))}"


def _split(token: str) -> tuple[str, dict[str, Any], bytes, bytes] | Refusal:
    """The signing input, header, payload bytes and signature of a compact JWS."""
    if len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        return Refusal.MALFORMED_TOKEN
    parts = token.split(".")
    if len(parts) != 3:
        return Refusal.MALFORMED_TOKEN
    try:
        header_raw, payload, signature = (unb64url(p) for p in parts)
    except ValueError:
        return Refusal.MALFORMED_TOKEN
    header = _json_object(header_raw)
    if header is None or "crit" in header:
        return Refusal.MALFORMED_TOKEN
    return f"{parts[0]}.{parts[1]}", header, payload, signature


def _pinned_key(header: Mapping[str, Any], keys: KeySet, now: datetime) -> VerifyKey | Refusal:
    """The trusted key the header names, if the header's algorithm is that key's own."""
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALGORITHMS:
        return Refusal.ALGORITHM_NOT_ALLOWED
    kid = header.get("kid")
    if not isinstance(kid, str):
        return Refusal.UNKNOWN_KID
    key = keys.find(kid, now)
    if isinstance(key, VerifyKey) and alg != key.alg:
        return Refusal.ALGORITHM_NOT_ALLOWED
    return key


def decode_verified(
    token: str, keys: KeySet, *, now: datetime
) -> tuple[dict[str, Any], dict[str, Any]] | Refusal:
    """The header and claims of a token whose signature a trusted key verifies, or why not.

    No claim is checked here (see `check_access_claims`).
    """
    split = _split(token)
    if isinstance(split, Refusal):
        return split
    signing_input, header, payload, signature = split
    key = _pinned_key(header, keys, now)
    if isinstance(key, Refusal):
        return key
    if not key.verify(signing_input.encode("ascii"), signature):
        return Refusal.BAD_SIGNATURE
    claims = _json_object(payload)
    return Refusal.MALFORMED_TOKEN if claims is None else (header, claims)


class AccessTokens:
    """Issues and verifies access tokens for one issuer and audience."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        ttl: timedelta = ACCESS_TOKEN_TTL,
        leeway: timedelta = LEEWAY,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl
        self.leeway = leeway

    def issue(self, keys: KeySet, principal: Principal, *, jti: str, now: datetime) -> str:
        claims = access_claims(
            issuer=self.issuer,
            audience=self.audience,
            principal=principal,
            jti=jti,
            now=now,
            ttl=self.ttl,
        )
        return sign(keys.signing, claims)

    def verify(self, keys: KeySet, token: str, *, now: datetime) -> Claims | Refusal:
        """The accepted claims, or the first reason to refuse. Revocation, the principal and
        its tenant are checked afterwards, against the store (`core.domain.identity.admit`)."""
        if not token:
            return Refusal.MISSING_CREDENTIALS
        if bearer_kind(token) == BearerKind.REFRESH_TOKEN:
            return Refusal.REFRESH_TOKEN_AS_ACCESS
        verified = decode_verified(token, keys, now=now)
        if isinstance(verified, Refusal):
            return verified
        header, claims = verified
        return check_access_claims(
            header, claims, issuer=self.issuer, audience=self.audience, now=now, leeway=self.leeway
        )
