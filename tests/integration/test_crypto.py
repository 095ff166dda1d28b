"""The crypto adapters: envelope encryption, password and API-key hashing, JWT signing and
verification (with the negative suite at the token level), and interop with PyJWT."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from adapters.crypto import apikeys
from adapters.crypto.envelope import (
    FORMAT_VERSION,
    MAGIC,
    EnvelopeCipher,
    EnvelopeError,
    IntegrityError,
    SecretContext,
    UnsupportedFormat,
    WrongMasterKey,
    generate_master_key,
    parse_master_key,
)
from adapters.crypto.jwt import (
    MAX_TOKEN_LENGTH,
    AccessTokens,
    KeySet,
    SigningKey,
    VerifyKey,
    b64url,
    decode_verified,
    key_set,
    sign,
    unb64url,
)
from adapters.crypto.passwords import DEFAULT_PARAMS, ScryptHasher, ScryptParams
from core.domain import identity as idn
from core.domain.access import Role
from core.domain.identity import Claims, Principal, PrincipalKind, Refusal
from core.domain.rotation import (
    RotationEvent,
    RotationPolicy,
    SecretVersion,
    VersionState,
    apply,
    plan,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ISS = "https://waypost.example"
AUD = "waypost-api"
TENANT_ID = "01HXAAAAAAAAAAAAAAAAAAAAAA"
USER_ID = "01HXBBBBBBBBBBBBBBBBBBBBBB"
MASTER = bytes(range(32))
OTHER_MASTER = bytes(range(1, 33))
CTX = SecretContext(TENANT_ID, "webhook-signing", 3)
PLAINTEXT = b"the-plaintext-secret-value-0123456789-that-must-never-be-stored"

# --- envelope encryption ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def cipher() -> EnvelopeCipher:
    return EnvelopeCipher([MASTER])


@pytest.mark.parametrize("size", [0, 1, 31, 32, 1000, 70_000])
def test_envelope_round_trip(cipher: EnvelopeCipher, size: int) -> None:
    value = bytes(i % 251 for i in range(size))
    sealed = cipher.encrypt(value, CTX)
    assert len(sealed) == 86 + size + 16
    assert cipher.decrypt(sealed, CTX) == value


def test_envelope_layout(cipher: EnvelopeCipher) -> None:
    sealed = cipher.encrypt(PLAINTEXT, CTX)
    assert sealed[:4] == MAGIC == b"WPSE"
    assert sealed[4] == FORMAT_VERSION == 1
    assert sealed[5] == 1
    assert sealed[6:14].hex() == cipher.master_key_id == cipher.sealed_with(sealed)


def test_stored_bytes_never_contain_the_plaintext(cipher: EnvelopeCipher) -> None:
    sealed = cipher.encrypt(PLAINTEXT, CTX)
    for form in (
        PLAINTEXT,
        PLAINTEXT[:16],
        PLAINTEXT[-16:],
        base64.b64encode(PLAINTEXT)[:16],
        PLAINTEXT.hex().encode()[:16],
    ):
        assert form not in sealed
    # Fresh data key and nonces every time: the same value never seals the same way.
    assert cipher.encrypt(PLAINTEXT, CTX) != sealed
    assert cipher.encrypt(PLAINTEXT, CTX)[14:] != sealed[14:]


def test_a_wrong_master_key_fails_loudly(cipher: EnvelopeCipher) -> None:
    sealed = cipher.encrypt(PLAINTEXT, CTX)
    with pytest.raises(WrongMasterKey, match="master key"):
        EnvelopeCipher([OTHER_MASTER]).decrypt(sealed, CTX)


def test_a_wrong_master_key_with_a_forged_id_still_fails(cipher: EnvelopeCipher) -> None:
    """Even if the key id were made to match, the wrapped data key does not open."""
    other = EnvelopeCipher([OTHER_MASTER])
    sealed = bytearray(cipher.encrypt(PLAINTEXT, CTX))
    sealed[6:14] = bytes.fromhex(other.master_key_id)
    with pytest.raises(IntegrityError):
        other.decrypt(bytes(sealed), CTX)


def test_tampering_with_any_byte_fails(cipher: EnvelopeCipher) -> None:
    sealed = cipher.encrypt(PLAINTEXT, CTX)
    for index in range(len(sealed)):
        for flip in (0x01, 0x80):
            damaged = bytearray(sealed)
            damaged[index] ^= flip
            with pytest.raises(EnvelopeError):
                cipher.decrypt(bytes(damaged), CTX)


def test_truncation_and_extension_fail(cipher: EnvelopeCipher) -> None:
    sealed = cipher.encrypt(PLAINTEXT, CTX)
    for length in range(len(sealed)):
        with pytest.raises(EnvelopeError):
            cipher.decrypt(sealed[:length], CTX)
    with pytest.raises(IntegrityError):
        cipher.decrypt(sealed + b"\x00", CTX)


@pytest.mark.parametrize(
    "other",
    [
        SecretContext("01HXOTHERTENANTAAAAAAAAAAAA", "webhook-signing", 3),
        SecretContext(None, "webhook-signing", 3),
        SecretContext(TENANT_ID, "jwt-signing", 3),
        SecretContext(TENANT_ID, "webhook-signing", 4),
    ],
)
def test_an_envelope_is_bound_to_its_secret(cipher: EnvelopeCipher, other: SecretContext) -> None:
    with pytest.raises(IntegrityError):
        cipher.decrypt(cipher.encrypt(PLAINTEXT, CTX), other)


def test_context_encoding_is_unambiguous() -> None:
    assert SecretContext("a", "bc", 1).encode() != SecretContext("ab", "c", 1).encode()
    assert SecretContext(None, "x", 1).encode() != SecretContext("", "x", 1).encode()
    with pytest.raises(ValueError, match="range"):
        SecretContext(None, "x", -1).encode()


def test_unknown_formats(cipher: EnvelopeCipher) -> None:
    sealed = bytearray(cipher.encrypt(PLAINTEXT, CTX))
    with pytest.raises(UnsupportedFormat):
        cipher.decrypt(b"not an envelope at all" * 10, CTX)
    sealed[4] = 2
    with pytest.raises(UnsupportedFormat, match="format 2"):
        cipher.decrypt(bytes(sealed), CTX)


def test_master_key_rotation(cipher: EnvelopeCipher) -> None:
    old = cipher.encrypt(PLAINTEXT, CTX)
    both = EnvelopeCipher([OTHER_MASTER, MASTER])
    assert both.decrypt(old, CTX) == PLAINTEXT
    new = both.rewrap(old, CTX)
    assert both.sealed_with(new) == EnvelopeCipher([OTHER_MASTER]).master_key_id
    assert EnvelopeCipher([OTHER_MASTER]).decrypt(new, CTX) == PLAINTEXT
    with pytest.raises(WrongMasterKey):
        cipher.decrypt(new, CTX)


def test_master_keys() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        EnvelopeCipher([b"short"])
    with pytest.raises(ValueError, match="at least one"):
        EnvelopeCipher([])
    text = generate_master_key()
    assert len(parse_master_key(text)) == 32
    assert parse_master_key(f"  {text}\n") == parse_master_key(text)
    assert parse_master_key(MASTER.hex()) == MASTER
    assert parse_master_key(base64.b64encode(MASTER).decode()) == MASTER
    assert parse_master_key(base64.urlsafe_b64encode(MASTER).decode().rstrip("=")) == MASTER
    for bad in ["", "not base64!", base64.b64encode(b"x" * 31).decode()]:
        with pytest.raises(ValueError, match="master key"):
            parse_master_key(bad)
    assert generate_master_key() != text


# --- passwords -------------------------------------------------------------------------------

CHEAP = ScryptParams(log_n=4, r=1, p=1)


@pytest.fixture(scope="module")
def hasher() -> ScryptHasher:
    return ScryptHasher(CHEAP)


def test_password_hash_and_verify(hasher: ScryptHasher) -> None:
    encoded = hasher.hash("correct horse battery staple")
    assert re.fullmatch(r"\$scrypt\$ln=4,r=1,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}", encoded)
    assert "correct" not in encoded
    assert hasher.verify("correct horse battery staple", encoded)
    assert not hasher.verify("correct horse battery stapler", encoded)
    assert not hasher.verify("", encoded)
    assert hasher.hash("correct horse battery staple") != encoded  # a salt per hash


def test_password_hash_known_answer(hasher: ScryptHasher) -> None:
    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(b"pa55word-pa55word", salt=salt, n=16, r=1, p=1, dklen=32)
    encoded = (
        "$scrypt$ln=4,r=1,p=1$"
        + base64.b64encode(salt).decode().rstrip("=")
        + "$"
        + base64.b64encode(digest).decode().rstrip("=")
    )
    assert hasher.verify("pa55word-pa55word", encoded)


def test_passwords_are_nfkc_normalized(hasher: ScryptHasher) -> None:
    encoded = hasher.hash("ﬁne-password-here")  # "ﬁ" ligature
    assert hasher.verify("fine-password-here", encoded)
    assert hasher.verify("ﬁne-password-here", encoded)


def test_default_parameters_work() -> None:
    assert ScryptParams(log_n=15, r=8, p=1) == DEFAULT_PARAMS
    strong = ScryptHasher()
    encoded = strong.hash("a perfectly fine password")
    assert encoded.startswith("$scrypt$ln=15,r=8,p=1$")
    assert strong.verify("a perfectly fine password", encoded)
    assert not strong.needs_rehash(encoded)


def test_needs_rehash(hasher: ScryptHasher) -> None:
    weak = hasher.hash("password-one-two")
    assert not hasher.needs_rehash(weak)
    stronger = ScryptHasher(ScryptParams(log_n=5, r=1, p=1))
    assert stronger.needs_rehash(weak)
    assert stronger.verify("password-one-two", weak)  # the old hash still verifies
    assert hasher.needs_rehash("garbage")


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "garbage",
        "$scrypt$ln=4,r=1,p=1$$",
        "$scrypt$ln=99,r=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + "A" * 43,  # hostile cost
        "$scrypt$ln=4,r=99,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + "A" * 43,
        "$scrypt$ln=4,r=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + "A" * 43 + "!",
        "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2g",
    ],
)
def test_malformed_stored_hashes_never_verify(hasher: ScryptHasher, stored: str) -> None:
    assert not hasher.verify("anything at all", stored)
    assert hasher.needs_rehash(stored)


def test_dummy_verification(hasher: ScryptHasher) -> None:
    assert hasher.verify_dummy("whatever") is False


def test_scrypt_params_are_bounded() -> None:
    for bad in [(0, 1, 1), (21, 8, 1), (15, 0, 1), (15, 33, 1), (15, 8, 17)]:
        with pytest.raises(ValueError, match="out of range"):
            ScryptParams(*bad)


# --- API keys and refresh tokens -------------------------------------------------------------


def test_new_api_keys() -> None:
    made = apikeys.new_api_key()
    parts = idn.parse_api_key(made.text)
    assert parts is not None
    assert parts.prefix == made.prefix
    assert len(parts.secret) >= 43  # 256 bits of base64url
    assert len(base64.urlsafe_b64decode(parts.secret + "=")) == 32
    assert parts.secret not in made.hash
    assert made.hash.startswith("sha256$")
    assert apikeys.verify_api_key(made.text, made.hash)
    assert apikeys.hash_api_key(made.text) == made.hash


def test_api_keys_are_unique() -> None:
    made = [apikeys.new_api_key() for _ in range(200)]
    assert len({m.text for m in made}) == len({m.hash for m in made}) == 200


def test_api_key_verification_refuses_others() -> None:
    made = apikeys.new_api_key()
    other = apikeys.new_api_key()
    assert not apikeys.verify_api_key(other.text, made.hash)
    parts = idn.parse_api_key(made.text)
    assert parts is not None
    # The same secret under another prefix is another key.
    moved = idn.format_api_key(
        "zzzzzzzz" if parts.prefix != "zzzzzzzz" else "yyyyyyyy", parts.secret
    )
    assert not apikeys.verify_api_key(moved, made.hash)
    assert not apikeys.verify_api_key(made.text + "x", made.hash)
    assert not apikeys.verify_api_key("", made.hash)
    with pytest.raises(ValueError, match="API key"):
        apikeys.hash_api_key("not a key")


def test_refresh_tokens() -> None:
    made = apikeys.new_refresh_token()
    assert idn.bearer_kind(made.text) == idn.BearerKind.REFRESH_TOKEN
    assert apikeys.hash_refresh_token(made.text) == made.hash
    assert apikeys.new_refresh_token().hash != made.hash
    secret = idn.parse_refresh_token(made.text)
    assert secret is not None
    assert secret not in made.hash
    # Domain separation: an API key's hash never equals a refresh token's hash.
    key = apikeys.new_api_key()
    assert (
        apikeys.hash_api_key(key.text).split("$")[1]
        != hashlib.sha256(key.text.encode()).hexdigest()
    )
    with pytest.raises(ValueError, match="refresh token"):
        apikeys.hash_refresh_token(key.text)


# --- JWT keys --------------------------------------------------------------------------------

RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"


def test_rfc8037_vectors() -> None:
    """RFC 8037 A.3 (thumbprint) and A.4 (signature) with our key classes."""
    private = ed25519.Ed25519PrivateKey.from_private_bytes(unb64url(RFC8037_D))
    key = SigningKey(private)
    assert key.verify_key.jwk()["x"] == RFC8037_X
    assert key.kid == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    signing_input = b"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc"
    signature = key.sign(signing_input)
    assert b64url(signature) == (
        "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
    )
    assert key.verify_key.verify(signing_input, signature)


def test_strict_base64url() -> None:
    assert unb64url("AQAB") == b"\x01\x00\x01"
    for bad in ["AQAB=", "AQ+B", "A", "AR"]:  # padding, alphabet, length, non-canonical bits
        with pytest.raises(ValueError, match="base64url"):
            unb64url(bad)


def test_signing_keys_round_trip_through_an_envelope(cipher: EnvelopeCipher) -> None:
    key = SigningKey.generate()
    context = SecretContext(None, "jwt-signing", 1)
    sealed = cipher.encrypt(key.to_pkcs8(), context)
    assert key.to_pkcs8() not in sealed
    again = SigningKey.from_pkcs8(cipher.decrypt(sealed, context))
    assert again.kid == key.kid
    assert again.alg == "EdDSA"


def test_small_rsa_keys_are_refused() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    der = small.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="2048"):
        SigningKey.from_pkcs8(der)
    with pytest.raises(ValueError, match="2048"):
        SigningKey.generate("RS256", rsa_bits=1024)


# --- access tokens: the negative suite -------------------------------------------------------


@dataclass(frozen=True)
class Env:
    ed: SigningKey
    rsa: SigningKey
    old: SigningKey
    gone: SigningKey
    pending: SigningKey
    stranger: SigningKey
    keys: KeySet
    tokens: AccessTokens


GRACE_END = T0 + timedelta(hours=1)


@pytest.fixture(scope="module")
def env() -> Env:
    ed = SigningKey.generate()
    old = SigningKey.generate()
    gone = SigningKey.generate()
    pending = SigningKey.generate()
    keys = KeySet(
        ed,
        verify_only=[(old.verify_key, GRACE_END)],
        pending=[pending.verify_key],
        retired=[gone.kid],
    )
    return Env(
        ed=ed,
        rsa=SigningKey.generate("RS256", rsa_bits=2048),
        old=old,
        gone=gone,
        pending=pending,
        stranger=SigningKey.generate(),
        keys=keys,
        tokens=AccessTokens(issuer=ISS, audience=AUD),
    )


ALICE = Principal(
    kind=PrincipalKind.USER,
    id=USER_ID,
    tenant_id=TENANT_ID,
    name="alice",
    roles=(Role.EVENT_MANAGER,),
)


def claims(**changes: Any) -> dict[str, Any]:
    base = idn.access_claims(issuer=ISS, audience=AUD, principal=ALICE, jti="01HXJTI", now=T0)
    base.update(changes)
    return base


def forge(header: dict[str, Any], body: dict[str, Any], signature: bytes = b"") -> str:
    def part(value: dict[str, Any]) -> str:
        return b64url(json.dumps(value, separators=(",", ":")).encode())

    return f"{part(header)}.{part(body)}.{b64url(signature)}"


def hs256_with_public_key(env: Env) -> str:
    """The classic key-confusion forgery: HMAC keyed with the server's public key."""
    assert isinstance(env.ed.private, ed25519.Ed25519PrivateKey)
    pem = env.ed.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "kid": env.ed.kid, "typ": "at+jwt"}
    unsigned = forge(header, claims()).rsplit(".", 1)[0]
    mac = hmac.new(pem, unsigned.encode(), hashlib.sha256).digest()
    return f"{unsigned}.{b64url(mac)}"


def tampered_payload(env: Env) -> str:
    head, _, sig = sign(env.ed, claims()).split(".")
    body = b64url(json.dumps(claims(roles=["admin"]), separators=(",", ":")).encode())
    return f"{head}.{body}.{sig}"


def tampered_signature(env: Env) -> str:
    token = sign(env.ed, claims())
    head, body, sig = token.split(".")
    raw = bytearray(unb64url(sig))
    raw[0] ^= 1
    return f"{head}.{body}.{b64url(bytes(raw))}"


def embedded_jwk(env: Env) -> str:
    """An attacker's key inside the header, our kid: never trusted."""
    header = {
        "alg": "EdDSA",
        "kid": env.ed.kid,
        "typ": "at+jwt",
        "jwk": env.stranger.verify_key.jwk(),
    }
    unsigned = forge(header, claims()).rsplit(".", 1)[0]
    return f"{unsigned}.{b64url(env.stranger.sign(unsigned.encode()))}"


def signed_with_header(key: SigningKey, header: dict[str, Any], body: dict[str, Any]) -> str:
    unsigned = forge(header, body).rsplit(".", 1)[0]
    return f"{unsigned}.{b64url(key.sign(unsigned.encode()))}"


def duplicate_claim(env: Env) -> str:
    """Validly signed, but two `sub` members: which one counts is never guessed."""
    body = json.dumps(claims(), separators=(",", ":"))[:-1] + ',"sub":"user:someone-else"}'
    header = b64url(json.dumps({"alg": "EdDSA", "kid": env.ed.kid, "typ": "at+jwt"}).encode())
    unsigned = f"{header}.{b64url(body.encode())}"
    return f"{unsigned}.{b64url(env.ed.sign(unsigned.encode()))}"


MINUTE = timedelta(minutes=1)

#: name -> (token maker, verification time, expected refusal). The table of the closing note.
NEGATIVE: dict[str, tuple[Callable[[Env], str], datetime, Refusal]] = {
    "alg none": (
        lambda e: forge({"alg": "none", "kid": e.ed.kid, "typ": "at+jwt"}, claims()),
        T0,
        Refusal.ALGORITHM_NOT_ALLOWED,
    ),
    "alg none, no kid": (
        lambda e: forge({"alg": "none", "typ": "at+jwt"}, claims()),
        T0,
        Refusal.ALGORITHM_NOT_ALLOWED,
    ),
    "alg None (case)": (
        lambda e: forge({"alg": "None", "kid": e.ed.kid, "typ": "at+jwt"}, claims()),
        T0,
        Refusal.ALGORITHM_NOT_ALLOWED,
    ),
    "HS256 signed with the public key": (hs256_with_public_key, T0, Refusal.ALGORITHM_NOT_ALLOWED),
    "RS256 header on an Ed25519 kid": (
        lambda e: signed_with_header(
            e.ed, {"alg": "RS256", "kid": e.ed.kid, "typ": "at+jwt"}, claims()
        ),
        T0,
        Refusal.ALGORITHM_NOT_ALLOWED,
    ),
    "expired": (lambda e: sign(e.ed, claims()), T0 + 16 * MINUTE + MINUTE, Refusal.EXPIRED),
    "nbf in the future": (
        lambda e: sign(e.ed, claims(nbf=int(T0.timestamp()) + 300)),
        T0,
        Refusal.NOT_YET_VALID,
    ),
    "wrong aud": (lambda e: sign(e.ed, claims(aud="other-api")), T0, Refusal.WRONG_AUDIENCE),
    "wrong iss": (
        lambda e: sign(e.ed, claims(iss="https://evil.example")),
        T0,
        Refusal.WRONG_ISSUER,
    ),
    "wrong typ (JWT)": (lambda e: sign(e.ed, claims(), typ="JWT"), T0, Refusal.WRONG_TYPE),
    "no typ": (
        lambda e: signed_with_header(e.ed, {"alg": "EdDSA", "kid": e.ed.kid}, claims()),
        T0,
        Refusal.WRONG_TYPE,
    ),
    "unknown kid": (lambda e: sign(e.stranger, claims()), T0, Refusal.UNKNOWN_KID),
    "no kid": (
        lambda e: signed_with_header(e.ed, {"alg": "EdDSA", "typ": "at+jwt"}, claims()),
        T0,
        Refusal.UNKNOWN_KID,
    ),
    "kid of a pending key": (lambda e: sign(e.pending, claims()), T0, Refusal.UNKNOWN_KID),
    "kid retired past its grace": (
        lambda e: sign(
            e.old,
            claims(
                iat=int(GRACE_END.timestamp()) - 60,
                nbf=int(GRACE_END.timestamp()) - 60,
                exp=int(GRACE_END.timestamp()) + 600,
            ),
        ),
        GRACE_END,
        Refusal.KEY_RETIRED,
    ),
    "kid of a retired version": (lambda e: sign(e.gone, claims()), T0, Refusal.KEY_RETIRED),
    "tampered payload": (tampered_payload, T0, Refusal.BAD_SIGNATURE),
    "tampered signature": (tampered_signature, T0, Refusal.BAD_SIGNATURE),
    "attacker key embedded as jwk": (embedded_jwk, T0, Refusal.BAD_SIGNATURE),
    "refresh token used as access token": (
        lambda e: apikeys.new_refresh_token().text,
        T0,
        Refusal.REFRESH_TOKEN_AS_ACCESS,
    ),
    "crit header": (
        lambda e: signed_with_header(
            e.ed, {"alg": "EdDSA", "kid": e.ed.kid, "typ": "at+jwt", "crit": ["exp"]}, claims()
        ),
        T0,
        Refusal.MALFORMED_TOKEN,
    ),
    "duplicate claim (signed)": (duplicate_claim, T0, Refusal.MALFORMED_TOKEN),
    "two parts": (lambda e: sign(e.ed, claims()).rsplit(".", 1)[0], T0, Refusal.MALFORMED_TOKEN),
    "JWE shape": (lambda e: "a.b.c.d.e", T0, Refusal.MALFORMED_TOKEN),
    "padded base64": (lambda e: sign(e.ed, claims()) + "=", T0, Refusal.MALFORMED_TOKEN),
    "not ASCII": (lambda e: sign(e.ed, claims()) + "é", T0, Refusal.MALFORMED_TOKEN),
    "too long": (
        lambda e: sign(e.ed, claims(pad="x" * MAX_TOKEN_LENGTH)),
        T0,
        Refusal.MALFORMED_TOKEN,
    ),
    "header not an object": (
        lambda e: b64url(b"[1]") + "." + b64url(b"{}") + ".",
        T0,
        Refusal.MALFORMED_TOKEN,
    ),
    "empty": (lambda e: "", T0, Refusal.MISSING_CREDENTIALS),
    "missing claim": (
        lambda e: sign(e.ed, {k: v for k, v in claims().items() if k != "jti"}),
        T0,
        Refusal.MISSING_CLAIM,
    ),
    "API key as access token": (
        lambda e: apikeys.new_api_key().text,
        T0,
        Refusal.MALFORMED_TOKEN,
    ),
}


@pytest.mark.parametrize("name", list(NEGATIVE))
def test_negative_suite(env: Env, name: str) -> None:
    make, at, expected = NEGATIVE[name]
    assert env.tokens.verify(env.keys, make(env), now=at) == expected


def test_the_negative_suite_is_about_the_token_not_the_time(env: Env) -> None:
    """Each refused token but the time-bound ones is refused at any instant."""
    for name, (make, _, expected) in NEGATIVE.items():
        if expected in (Refusal.EXPIRED, Refusal.KEY_RETIRED, Refusal.NOT_YET_VALID):
            continue
        assert env.tokens.verify(env.keys, make(env), now=T0 + MINUTE) == expected, name


def test_a_good_token_is_accepted(env: Env) -> None:
    token = env.tokens.issue(env.keys, ALICE, jti="01HXJTI", now=T0)
    header = pyjwt.get_unverified_header(token)
    assert header == {"alg": "EdDSA", "kid": env.ed.kid, "typ": "at+jwt"}
    got = env.tokens.verify(env.keys, token, now=T0 + 10 * MINUTE)
    assert isinstance(got, Claims)
    assert got.sub == f"user:{USER_ID}"
    assert got.tenant == TENANT_ID
    assert got.roles == (Role.EVENT_MANAGER,)
    assert got.exp - got.iat == 900
    assert got.kid == env.ed.kid


def test_leeway_at_the_token_level(env: Env) -> None:
    token = env.tokens.issue(env.keys, ALICE, jti="j", now=T0)
    assert isinstance(
        env.tokens.verify(env.keys, token, now=T0 + 16 * MINUTE - timedelta(seconds=1)), Claims
    )
    assert env.tokens.verify(env.keys, token, now=T0 + 16 * MINUTE) == Refusal.EXPIRED
    early = env.tokens.issue(env.keys, ALICE, jti="j", now=T0 + MINUTE)
    assert isinstance(env.tokens.verify(env.keys, early, now=T0), Claims)


def test_old_key_verifies_until_its_grace_ends(env: Env) -> None:
    token = sign(env.old, claims(exp=int(T0.timestamp()) + 7200))
    assert isinstance(env.tokens.verify(env.keys, token, now=GRACE_END - MINUTE), Claims)
    assert env.tokens.verify(env.keys, token, now=GRACE_END) == Refusal.KEY_RETIRED


def test_decode_verified_checks_no_claims(env: Env) -> None:
    verified = decode_verified(sign(env.ed, {"anything": True}), env.keys, now=T0)
    assert verified == ({"alg": "EdDSA", "kid": env.ed.kid, "typ": "at+jwt"}, {"anything": True})


def test_rs256_tokens(env: Env) -> None:
    keys = KeySet(env.rsa)
    token = env.tokens.issue(keys, ALICE, jti="j", now=T0)
    assert pyjwt.get_unverified_header(token)["alg"] == "RS256"
    assert isinstance(env.tokens.verify(keys, token, now=T0), Claims)
    # The same token against the Ed25519 key set: its kid is unknown there.
    assert env.tokens.verify(env.keys, token, now=T0) == Refusal.UNKNOWN_KID
    # HS256 keyed with the RSA public key, RSA kid: refused as well.
    pem = env.rsa.verify_key.public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    unsigned = forge({"alg": "HS256", "kid": env.rsa.kid, "typ": "at+jwt"}, claims()).rsplit(
        ".", 1
    )[0]
    forged = f"{unsigned}.{b64url(hmac.new(pem, unsigned.encode(), hashlib.sha256).digest())}"
    assert env.tokens.verify(keys, forged, now=T0) == Refusal.ALGORITHM_NOT_ALLOWED
    # An EdDSA header on the RSA kid (signed by an Ed25519 key): the kid fixes RS256.
    confused = signed_with_header(
        env.ed, {"alg": "EdDSA", "kid": env.rsa.kid, "typ": "at+jwt"}, claims()
    )
    assert env.tokens.verify(keys, confused, now=T0) == Refusal.ALGORITHM_NOT_ALLOWED


def test_jwks(env: Env) -> None:
    jwks = env.keys.jwks(T0)
    kids = [k["kid"] for k in jwks["keys"]]
    assert kids == [env.ed.kid, env.old.kid, env.pending.kid]
    assert env.gone.kid not in kids
    assert all(
        k["use"] == "sig" and k["alg"] == "EdDSA" and k["kty"] == "OKP" for k in jwks["keys"]
    )
    assert all("d" not in k for k in jwks["keys"])  # public parts only
    assert [k["kid"] for k in env.keys.jwks(GRACE_END)["keys"]] == [env.ed.kid, env.pending.kid]
    rsa_jwk = KeySet(env.rsa).jwks(T0)["keys"][0]
    assert set(rsa_jwk) == {"kty", "n", "e", "kid", "alg", "use"}
    assert rsa_jwk["e"] == "AQAB"
    json.dumps(jwks)  # serializable as is


# --- rotation drives the key set -------------------------------------------------------------


def test_rotation_while_issuing() -> None:
    """Keys follow core.domain.rotation: tokens issued before a rotation verify until the
    old key's grace ends; the JWKS shows current and previous keys."""
    policy = RotationPolicy(rotate_every=timedelta(days=30), grace=timedelta(hours=1))
    tokens = AccessTokens(issuer=ISS, audience=AUD)
    material: dict[int, SigningKey] = {}
    versions: tuple[SecretVersion, ...] = ()

    def tick(now: datetime) -> KeySet:
        nonlocal versions
        steps = plan(versions, policy, now)
        for step in steps:
            if step.event == RotationEvent.CREATE:
                material[step.version] = SigningKey.generate()
        versions = apply(versions, steps, policy=policy, now=now)
        return key_set((v, material[v.version]) for v in versions)

    keys = tick(T0)
    before = tokens.issue(keys, ALICE, jti="a", now=T0 + timedelta(days=30) - MINUTE)
    rotated_at = T0 + timedelta(days=30)
    keys = tick(rotated_at)
    assert keys.signing.kid == material[2].kid
    after = tokens.issue(keys, ALICE, jti="b", now=rotated_at)
    assert pyjwt.get_unverified_header(after)["kid"] == material[2].kid
    assert [k["kid"] for k in keys.jwks(rotated_at)["keys"]] == [material[2].kid, material[1].kid]
    for token in (before, after):
        assert isinstance(tokens.verify(keys, token, now=rotated_at + 10 * MINUTE), Claims)
    # The old token would still be in date with a longer lifetime; its key's grace is over.
    late = rotated_at + timedelta(hours=1)
    long_lived = sign(
        material[1],
        claims(
            iat=int(late.timestamp()) - 600,
            nbf=int(late.timestamp()) - 600,
            exp=int(late.timestamp()) + 600,
        ),
    )
    assert tokens.verify(keys, long_lived, now=late) == Refusal.KEY_RETIRED
    keys = tick(late)
    assert tokens.verify(keys, long_lived, now=late) == Refusal.KEY_RETIRED
    assert [k["kid"] for k in keys.jwks(late)["keys"]] == [material[2].kid]


def test_key_set_needs_exactly_one_active_key() -> None:
    key = SigningKey.generate()
    with pytest.raises(ValueError, match="no active"):
        key_set([])
    active = SecretVersion(version=1, state=VersionState.ACTIVE, created_at=T0, activated_at=T0)
    with pytest.raises(ValueError, match="more than one"):
        key_set([(active, key), (active, SigningKey.generate())])


# --- interop: PyJWT reads what we sign, we read what PyJWT signs -----------------------------


@pytest.mark.parametrize("alg", ["EdDSA", "RS256"])
def test_pyjwt_verifies_our_tokens_with_our_jwks(env: Env, alg: str) -> None:
    key = env.ed if alg == "EdDSA" else env.rsa
    keys = KeySet(key, verify_only=[(env.old.verify_key, GRACE_END)])
    token = env.tokens.issue(keys, ALICE, jti="01HXJTI", now=T0)
    jwk_set = pyjwt.PyJWKSet.from_dict(keys.jwks(T0))
    kid = pyjwt.get_unverified_header(token)["kid"]
    decoded = pyjwt.decode(
        token,
        jwk_set[kid].key,
        algorithms=[alg],
        audience=AUD,
        issuer=ISS,
        leeway=timedelta(days=365 * 100),  # PyJWT reads the wall clock; ours is fixed
        options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
    )
    assert decoded == claims()


@pytest.mark.parametrize("alg", ["EdDSA", "RS256"])
def test_we_verify_tokens_pyjwt_signs(env: Env, alg: str) -> None:
    key = env.ed if alg == "EdDSA" else env.rsa
    token = pyjwt.encode(
        claims(), key.private, algorithm=alg, headers={"kid": key.kid, "typ": "at+jwt"}
    )
    got = env.tokens.verify(KeySet(key), token, now=T0)
    assert isinstance(got, Claims)
    assert got.sub == f"user:{USER_ID}"


def test_pyjwt_refuses_a_token_under_a_key_not_in_our_jwks(env: Env) -> None:
    token = sign(env.stranger, claims())
    jwk_set = pyjwt.PyJWKSet.from_dict(env.keys.jwks(T0))
    with pytest.raises(KeyError):
        jwk_set[env.stranger.kid]
    with pytest.raises(pyjwt.InvalidSignatureError):
        pyjwt.decode(
            token,
            jwk_set[env.ed.kid].key,
            algorithms=["EdDSA"],
            audience=AUD,
            options={"verify_exp": False},
        )


def test_verify_key_from_a_public_key_only() -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    assert VerifyKey(private.public_key()).kid == SigningKey(private).kid
