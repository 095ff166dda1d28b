"""Standard Webhooks signatures, checked by the independent `standardwebhooks` library."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from core.domain import signatures

OLD = signatures.new_secret(bytes(range(32)))
NEW = signatures.new_secret(bytes(range(100, 132)))
MESSAGE_ID = "01JNZ3NDEKTSV4RRFFQ69G5FAV"
BODY = b'{"specversion":"1.0","id":"01JNZ3NDEKTSV4RRFFQ69G5FAV","data":{"x":"\xc3\xa9"}}'


def _now() -> int:
    # the library checks the timestamp against its own clock: sign with the real time
    return int(datetime.now(UTC).timestamp())


def _headers(secrets: list[str], timestamp: int, body: bytes = BODY) -> dict[str, str]:
    return dict(signatures.headers(secrets, MESSAGE_ID, timestamp, body, "Waypost/test"))


def test_a_secret_is_whsec_and_32_bytes() -> None:
    assert OLD.startswith("whsec_")
    assert signatures.secret_key(OLD) == bytes(range(32))
    with pytest.raises(ValueError):  # noqa: PT011
        signatures.new_secret(b"short")
    for bad in ("", "whsec_", "sk_abc", "whsec_!!!"):
        with pytest.raises(ValueError):  # noqa: PT011
            signatures.secret_key(bad)


def test_the_headers_of_an_attempt() -> None:
    sent = _headers([OLD], 1_700_000_000)
    assert sent["Content-Type"] == "application/cloudevents+json"
    assert sent["User-Agent"] == "Waypost/test"
    assert sent["webhook-id"] == MESSAGE_ID
    assert sent["webhook-timestamp"] == "1700000000"
    assert sent["webhook-signature"].startswith("v1,")
    assert " " not in sent["webhook-signature"]


def test_the_reference_library_verifies_a_signature() -> None:
    timestamp = _now()
    assert Webhook(OLD).verify(BODY, _headers([OLD], timestamp)) is not None


def test_plain_hmac_as_the_docs_show_it() -> None:
    timestamp = _now()
    sent = _headers([OLD], timestamp)
    key = base64.b64decode(OLD.removeprefix("whsec_"))
    signed = f"{sent['webhook-id']}.{sent['webhook-timestamp']}.".encode() + BODY
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert f"v1,{expected}" in sent["webhook-signature"].split(" ")


def test_during_a_rotation_both_secrets_sign_and_each_verifies_alone() -> None:
    timestamp = _now()
    sent = _headers([NEW, OLD], timestamp)
    entries = sent["webhook-signature"].split(" ")
    assert len(entries) == 2
    assert all(e.startswith("v1,") for e in entries)
    for secret in (NEW, OLD):
        Webhook(secret).verify(BODY, sent)
        assert signatures.verify(
            secret, MESSAGE_ID, timestamp, BODY, sent["webhook-signature"], now=timestamp
        )
    stranger = signatures.new_secret(b"\x07" * 32)
    with pytest.raises(WebhookVerificationError):
        Webhook(stranger).verify(BODY, sent)


def test_a_changed_body_id_or_timestamp_does_not_verify() -> None:
    timestamp = _now()
    sent = _headers([OLD], timestamp)
    with pytest.raises(WebhookVerificationError):
        Webhook(OLD).verify(BODY + b" ", sent)
    with pytest.raises(WebhookVerificationError):
        Webhook(OLD).verify(BODY, {**sent, "webhook-id": "other"})
    with pytest.raises(WebhookVerificationError):
        Webhook(OLD).verify(BODY, {**sent, "webhook-timestamp": str(timestamp + 1)})


def test_our_verify_refuses_stale_timestamps() -> None:
    sig = signatures.signature_header([OLD], MESSAGE_ID, 1000, BODY)
    assert signatures.verify(OLD, MESSAGE_ID, 1000, BODY, sig, now=1000 + 300)
    assert not signatures.verify(OLD, MESSAGE_ID, 1000, BODY, sig, now=1000 + 301)
    with pytest.raises(ValueError):  # noqa: PT011
        signatures.signature_header([], MESSAGE_ID, 1000, BODY)


@given(st.binary(min_size=32, max_size=32), st.binary(max_size=2000), st.integers(0, 2**35))
def test_every_secret_and_body_verifies_with_the_reference(
    raw: bytes, body: bytes, timestamp: int
) -> None:
    secret = signatures.new_secret(raw)
    entry = signatures.sign(secret, MESSAGE_ID, timestamp, body)
    reference = Webhook(secret).sign(
        MESSAGE_ID, datetime.fromtimestamp(timestamp, UTC), body.decode("latin-1")
    )
    if body.isascii():  # the library signs text (UTF-8): compare where text is bytes
        assert entry == reference
    assert signatures.verify(secret, MESSAGE_ID, timestamp, body, entry, now=timestamp)
