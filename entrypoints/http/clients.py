"""The client's address: the connection's own, or, behind trusted proxies, the one they saw.

A reverse proxy or load balancer connects to the server in the client's place and says
who the client was in a header: `X-Forwarded-For: client, proxy1, proxy2` or
`Forwarded: for=client, for=proxy1` (RFC 7239), each proxy appending the address it
received the request from. Only the right end of that list can be believed: anything
to its left may have come from the client itself. So the address is found walking from
the connection's peer leftwards through the list, past every address that is one of
the trusted proxies (`http.trusted_proxies`); the first one that is not is the client.
A peer that is not a trusted proxy is the client, whatever headers it sent.

That one address is what the administrators' network check, the token endpoints' rate
limit, the metrics' network check and the audit log use (`auth.client_address`).
Only the header the proxies are configured to set (`http.proxy_header`) is read.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Final, Literal

from litestar.types import Scope

__all__ = ["ClientAddresses", "forwarded_for", "resolve", "x_forwarded_for"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_XFF: Final = b"x-forwarded-for"
_FORWARDED: Final = b"forwarded"


def parse_address(text: str) -> Address | None:
    """An address as a header or a socket gives it: `1.2.3.4`, `1.2.3.4:80`, `::1`,
    `[::1]:80`, `fe80::1%eth0`; an IPv4-mapped IPv6 address as IPv4. None if not one."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.split(":", 1)[0]
    try:
        found = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(found, ipaddress.IPv6Address) and found.ipv4_mapped is not None:
        return found.ipv4_mapped
    return found


def x_forwarded_for(values: Sequence[str]) -> list[str]:
    """The hops of `X-Forwarded-For` headers (several headers: one list, in order)."""
    return [hop.strip() for value in values for hop in value.split(",") if hop.strip()]


def forwarded_for(values: Sequence[str]) -> list[str]:
    """The `for=` of each element of `Forwarded` headers, in order; an element without
    one counts as an unknown hop."""
    hops: list[str] = []
    for value in values:
        for element in _split_quoted(value, ","):
            found = "unknown"
            for pair in _split_quoted(element, ";"):
                name, sep, token = pair.partition("=")
                if sep and name.strip().lower() == "for":
                    found = token.strip().strip('"')
            hops.append(found)
    return hops


def _split_quoted(text: str, separator: str) -> list[str]:
    """`text` split at `separator`s outside double quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def resolve(peer: str | None, hops: Sequence[str], trusted: Sequence[Network]) -> str | None:
    """The client's address: from the peer leftwards through the forwarded hops, the first
    address that is not a trusted proxy (all trusted: the leftmost). None when the walk
    meets something that is not an address (`unknown`, an obfuscated name)."""
    current = None if peer is None else parse_address(peer)
    if current is None or not _trusted(current, trusted):
        return peer  # the peer is the client: as the connection gives it
    for hop in reversed(hops):
        if not _trusted(current, trusted):
            return str(current)
        found = parse_address(hop)
        if found is None:
            return None
        current = found
    return str(current)


def _trusted(address: Address, trusted: Sequence[Network]) -> bool:
    return any(address.version == network.version and address in network for network in trusted)


class ClientAddresses:
    """The client address of each request, under one configuration of trusted proxies."""

    def __init__(
        self,
        trusted: Iterable[str] = (),
        header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for",
    ) -> None:
        self.trusted: list[Network] = [
            ipaddress.ip_network(network.strip(), strict=False) for network in trusted
        ]
        self._header = _XFF if header == "x-forwarded-for" else _FORWARDED
        self._parse = x_forwarded_for if header == "x-forwarded-for" else forwarded_for

    def of(self, scope: Scope) -> str | None:
        client = scope.get("client")
        peer = None if not client else str(client[0])
        if not self.trusted:
            return peer
        values = [v.decode("latin-1") for k, v in scope["headers"] if k == self._header]
        return resolve(peer, self._parse(values), self.trusted)
