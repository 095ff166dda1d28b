"""The crypto ports of the identity use cases (core.ports), over this package's modules.

- `ThreadedScrypt`: `PasswordHasher`, scrypt run in a worker thread (a hash costs
  tens of milliseconds of CPU and 32 MiB: never on the event loop);
- `Bearer`: `BearerSecrets`, API keys and refresh tokens (`apikeys`);
- `EnvelopeSealer`: `SecretSealer`, envelope encryption under the master key
  (`envelope`);
- `JwtSigner`: `TokenSigner`, access tokens signed with the active key of the
  key set it was last loaded with (`jwt`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Final

import anyio.to_thread

from adapters.crypto import apikeys
from adapters.crypto.envelope import EnvelopeCipher, SecretContext
from adapters.crypto.jwt import AccessTokens, Algorithm, KeySet, SigningKey, VerifyKey
from adapters.crypto.passwords import DEFAULT_PARAMS, ScryptHasher, ScryptParams
from core.domain.identity import ACCESS_TOKEN_TTL, LEEWAY, Claims, Principal, Refusal
from core.domain.rotation import SecretVersion, VersionState
from core.ports import MintedApiKey, MintedRefreshToken, NewSigningKey

__all__ = ["Bearer", "EnvelopeSealer", "JwtSigner", "NoKeys", "ThreadedScrypt"]


class ThreadedScrypt:
    def __init__(self, params: ScryptParams = DEFAULT_PARAMS) -> None:
        self._hasher = ScryptHasher(params)

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(self._hasher.hash, password)

    async def verify(self, password: str, encoded: str) -> bool:
        return await anyio.to_thread.run_sync(self._hasher.verify, password, encoded)

    async def verify_dummy(self, password: str) -> bool:
        return await anyio.to_thread.run_sync(self._hasher.verify_dummy, password)

    def needs_rehash(self, encoded: str) -> bool:
        return self._hasher.needs_rehash(encoded)


class Bearer:
    def new_api_key(self) -> MintedApiKey:
        made = apikeys.new_api_key()
        return MintedApiKey(text=made.text, prefix=made.prefix, hash=made.hash)

    def verify_api_key(self, text: str, stored_hash: str) -> bool:
        return apikeys.verify_api_key(text, stored_hash)

    def new_refresh_token(self) -> MintedRefreshToken:
        made = apikeys.new_refresh_token()
        return MintedRefreshToken(text=made.text, hash=made.hash)

    def hash_refresh_token(self, text: str) -> str:
        return apikeys.hash_refresh_token(text)


class EnvelopeSealer:
    def __init__(self, master_keys: Sequence[bytes]) -> None:
        self._cipher = EnvelopeCipher(master_keys)

    @property
    def key_id(self) -> str:
        return self._cipher.master_key_id

    def sealed_with(self, envelope: bytes) -> str:
        return self._cipher.sealed_with(envelope)

    def seal(self, plaintext: bytes, *, tenant_id: str | None, name: str, version: int) -> bytes:
        return self._cipher.encrypt(plaintext, SecretContext(tenant_id, name, version))

    def open(self, envelope: bytes, *, tenant_id: str | None, name: str, version: int) -> bytes:
        return self._cipher.decrypt(envelope, SecretContext(tenant_id, name, version))


class NoKeys(Exception):
    """The signer was asked to sign before any key was loaded."""


_NOT_LOADED: Final = "no signing key is loaded"


class JwtSigner:
    """Access tokens for one issuer and audience, under the key set of the last `load`."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        algorithm: Algorithm = "EdDSA",
        ttl: timedelta = ACCESS_TOKEN_TTL,
        leeway: timedelta = LEEWAY,
    ) -> None:
        self._tokens = AccessTokens(issuer=issuer, audience=audience, ttl=ttl, leeway=leeway)
        self._algorithm: Algorithm = algorithm
        self._keys: KeySet | None = None
        self._parsed: dict[bytes, SigningKey] = {}

    @property
    def ttl(self) -> timedelta:
        return self._tokens.ttl

    @property
    def keys(self) -> KeySet | None:
        return self._keys

    def new_key(self) -> NewSigningKey:
        key = SigningKey.generate(self._algorithm)
        return NewSigningKey(material=key.to_pkcs8(), kid=key.kid)

    def _key(self, material: bytes) -> SigningKey:
        key = self._parsed.get(material)
        if key is None:
            key = self._parsed[material] = SigningKey.from_pkcs8(material)
        return key

    def load(
        self, keys: Sequence[tuple[SecretVersion, bytes]], retired: Collection[str] = ()
    ) -> None:
        signing: SigningKey | None = None
        verify_only: list[tuple[VerifyKey, datetime]] = []
        pending: list[VerifyKey] = []
        for version, material in keys:
            key = self._key(material)
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
                case VersionState.RETIRED:  # pragma: no cover - the use case passes kids
                    continue
        if signing is None:
            raise ValueError("no active signing key")
        self._parsed = {m: self._parsed[m] for _, m in keys if m in self._parsed}
        self._keys = KeySet(signing, verify_only=verify_only, pending=pending, retired=retired)

    def issue(self, principal: Principal, *, jti: str, now: datetime) -> str:
        if self._keys is None:
            raise NoKeys(_NOT_LOADED)
        return self._tokens.issue(self._keys, principal, jti=jti, now=now)

    def verify(self, token: str, *, now: datetime) -> Claims | Refusal:
        if self._keys is None:
            raise NoKeys(_NOT_LOADED)
        return self._tokens.verify(self._keys, token, now=now)

    def jwks(self, now: datetime) -> dict[str, list[dict[str, str]]]:
        if self._keys is None:
            raise NoKeys(_NOT_LOADED)
        return self._keys.jwks(now)
