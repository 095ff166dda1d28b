"""The verification snippets of docs/how-to/webhooks.md work on what Waypost sends."""

from __future__ import annotations

import pathlib
import re
import time
from typing import Any

import pytest

from core.domain import signatures

HOWTO = pathlib.Path(__file__).parents[2] / "docs" / "how-to" / "webhooks.md"
SECRET = signatures.new_secret(bytes(range(32)))
OTHER = signatures.new_secret(bytes(range(1, 33)))
BODY = b'{"specversion":"1.0","id":"01JNZ3NDEKTSV4RRFFQ69G5FAV","type":"ci.build"}'


def snippets() -> dict[str, Any]:
    blocks = re.findall(r"^```python\n(.*?)^```", HOWTO.read_text(), flags=re.M | re.S)
    assert len(blocks) == 2
    namespace: dict[str, Any] = {}
    for block in blocks:
        exec(compile(block, str(HOWTO), "exec"), namespace)
    return namespace


def sent(secrets: list[str], at: int) -> dict[str, str]:
    return dict(signatures.headers(secrets, "01JNZ3NDEKTSV4RRFFQ69G5FAV", at, BODY, "Waypost/x"))


def test_the_plain_python_check() -> None:
    verify = snippets()["verify"]
    now = int(time.time())
    assert verify(SECRET, BODY, sent([SECRET], now))
    assert verify(SECRET, BODY, sent([OTHER, SECRET], now))  # during a rotation
    assert not verify(OTHER, BODY, sent([SECRET], now))
    assert not verify(SECRET, BODY + b" ", sent([SECRET], now))
    assert not verify(SECRET, BODY, sent([SECRET], now - 3600))


def test_the_standardwebhooks_check() -> None:
    from standardwebhooks.webhooks import WebhookVerificationError

    verified = snippets()["verified"]
    now = int(time.time())
    assert verified(SECRET, BODY, sent([SECRET], now))["type"] == "ci.build"
    assert verified(OTHER, BODY, sent([SECRET, OTHER], now))
    with pytest.raises(WebhookVerificationError):
        verified(OTHER, BODY, sent([SECRET], now))
