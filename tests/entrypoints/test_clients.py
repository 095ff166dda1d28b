"""The client's address behind trusted proxies: the rightmost address that is not theirs."""

from __future__ import annotations

import ipaddress

import pytest

from entrypoints.http.clients import (
    ClientAddresses,
    forwarded_for,
    parse_address,
    resolve,
    x_forwarded_for,
)

PROXIES = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")]


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("192.0.2.1", "192.0.2.1"),
        (" 192.0.2.1:8080 ", "192.0.2.1"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]:4711", "2001:db8::1"),
        ('"[2001:db8::1]"', "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("unknown", None),
        ("_hidden", None),
        ("", None),
        ("999.1.1.1", None),
    ],
)
def test_addresses_as_headers_give_them(text: str, address: str | None) -> None:
    found = parse_address(text)
    assert (None if found is None else str(found)) == address


def test_header_lists() -> None:
    assert x_forwarded_for(["a, b", "c", " ", "d,,e"]) == ["a", "b", "c", "d", "e"]
    assert forwarded_for(
        [
            'for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711"',
            "proto=https",
            'for="a;b,c"',
        ]
    ) == ["192.0.2.60", "[2001:db8:cafe::17]:4711", "unknown", "a;b,c"]


@pytest.mark.parametrize(
    ("peer", "hops", "client"),
    [
        # a peer that is not a proxy is the client, whatever it claims
        ("198.51.100.7", ["127.0.0.1"], "198.51.100.7"),
        ("::ffff:198.51.100.7", [], "::ffff:198.51.100.7"),
        # through a proxy: the address it saw
        ("10.0.0.2", ["198.51.100.7"], "198.51.100.7"),
        # what the client put on the left is never believed
        ("10.0.0.2", ["127.0.0.1", "203.0.113.9", "198.51.100.7"], "198.51.100.7"),
        # through several proxies: past every one of them
        ("10.0.0.2", ["203.0.113.9", "198.51.100.7", "10.1.1.1", "10.2.2.2"], "198.51.100.7"),
        ("::1", ["[2001:db8::5]:443"], "2001:db8::5"),
        # only proxies: the leftmost
        ("10.0.0.2", ["10.3.3.3", "10.4.4.4"], "10.3.3.3"),
        ("10.0.0.2", [], "10.0.0.2"),
        # a proxy that says it does not know
        ("10.0.0.2", ["198.51.100.7", "unknown"], None),
        (None, ["198.51.100.7"], None),
    ],
)
def test_the_rightmost_untrusted_address_wins(
    peer: str | None, hops: list[str], client: str | None
) -> None:
    assert resolve(peer, hops, PROXIES) == client


def scope(peer: str, headers: list[tuple[bytes, bytes]]) -> dict[str, object]:
    return {"type": "http", "client": (peer, 1234), "headers": headers}


def test_only_the_configured_header_is_read() -> None:
    headers = [(b"x-forwarded-for", b"198.51.100.7"), (b"forwarded", b"for=203.0.113.9")]
    assert ClientAddresses(["10.0.0.0/8"]).of(scope("10.0.0.2", headers)) == "198.51.100.7"  # type: ignore[arg-type]
    forwarded = ClientAddresses(["10.0.0.0/8"], "forwarded")
    assert forwarded.of(scope("10.0.0.2", headers)) == "203.0.113.9"  # type: ignore[arg-type]
    # no trusted proxy (the default): headers ignored
    assert ClientAddresses().of(scope("10.0.0.2", headers)) == "10.0.0.2"  # type: ignore[arg-type]
