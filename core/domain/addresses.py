"""Which IP addresses a webhook may reach: the address guard's rule.

A webhook goes to the public internet. An address that is not globally reachable
(loopback, private, link-local, shared, multicast, documentation, reserved ...)
is *refused*: a subscriber could otherwise make the registry call into the
operator's own network, the cloud metadata endpoint (169.254.169.254) included.
An operator may allow networks (`allowed`, CIDRs) as exceptions, e.g. 127.0.0.0/8
to deliver to a receiver on the same machine.

The rule, for one address:
1. An IPv6 address that carries an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`,
   IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96` and `64:ff9b:1::/48` with
   the address in the last 32 bits, 6to4 `2002::/16`, Teredo `2001::/32` with
   its server and client) is refused when a carried IPv4 address is refused:
   the packet ends up there. An allowed IPv6 network never lifts this.
2. Otherwise an address inside an allowed network is allowed.
3. Otherwise the most specific special-purpose range that holds it decides
   (`IPV4_RANGES`, `IPV6_RANGES`, after the IANA special-purpose registries):
   a reason refuses it; `None` lets it pass (the IPv4-mapped, NAT64 and 6to4
   and Teredo ranges are judged by step 1 alone). An address in no range is
   global unicast and allowed. IPv6 outside 2000::/3 is refused as reserved.

`literal_address` reads a URL's host as an address when it is one, including the
forms that resolvers accept for IPv4 (`2130706433`, `0x7f.1`, `017700000001`,
`127.1`), so that a literal refused address is refused when a URL is saved. A
host name is checked only at connection time, on what it resolves to: that is
the guard that counts (adapters/webhooks).

Pure: the standard library's `ipaddress` and nothing that does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_network,
)

__all__ = [
    "IPV4_RANGES",
    "IPV6_RANGES",
    "Address",
    "Network",
    "carried_ipv4",
    "literal_address",
    "parse_networks",
    "refusal",
]

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

#: IPv4 special-purpose ranges -> why an address in them is refused (RFC 6890 and the IANA
#: registry; the globally reachable anycast ranges 192.31.196/24, 192.52.193/24 and
#: 192.175.48/24 are not listed: they pass).
IPV4_RANGES: dict[IPv4Network, str] = {
    IPv4Network("0.0.0.0/32"): "unspecified",
    IPv4Network("0.0.0.0/8"): "'this network' (0.0.0.0/8)",
    IPv4Network("10.0.0.0/8"): "private (10.0.0.0/8)",
    IPv4Network("100.64.0.0/10"): "shared address space (100.64.0.0/10)",
    IPv4Network("127.0.0.0/8"): "loopback (127.0.0.0/8)",
    IPv4Network("169.254.0.0/16"): "link-local (169.254.0.0/16)",
    IPv4Network("172.16.0.0/12"): "private (172.16.0.0/12)",
    IPv4Network("192.0.0.0/24"): "IETF protocol assignments (192.0.0.0/24)",
    IPv4Network("192.0.2.0/24"): "documentation (192.0.2.0/24)",
    IPv4Network("192.88.99.0/24"): "reserved: former 6to4 relay anycast (192.88.99.0/24)",
    IPv4Network("192.168.0.0/16"): "private (192.168.0.0/16)",
    IPv4Network("198.18.0.0/15"): "benchmarking (198.18.0.0/15)",
    IPv4Network("198.51.100.0/24"): "documentation (198.51.100.0/24)",
    IPv4Network("203.0.113.0/24"): "documentation (203.0.113.0/24)",
    IPv4Network("224.0.0.0/4"): "multicast (224.0.0.0/4)",
    IPv4Network("240.0.0.0/4"): "reserved (240.0.0.0/4)",
    IPv4Network("255.255.255.255/32"): "broadcast",
}

_OUTSIDE_GLOBAL_UNICAST = "reserved: outside global unicast 2000::/3"

#: IPv6 special-purpose ranges -> why an address in them is refused, or None: judged only
#: by the IPv4 address it carries (see the module's rule). The most specific range wins.
IPV6_RANGES: dict[IPv6Network, str | None] = {
    IPv6Network("::/128"): "unspecified",
    IPv6Network("::1/128"): "loopback (::1)",
    IPv6Network("::ffff:0:0/96"): None,  # IPv4-mapped: it is the IPv4 address
    IPv6Network("::/96"): "IPv4-compatible, deprecated (::/96)",
    IPv6Network("64:ff9b::/96"): None,  # NAT64, well-known prefix: global
    IPv6Network("64:ff9b:1::/48"): "local-use NAT64 (64:ff9b:1::/48)",
    IPv6Network("100::/64"): "discard-only (100::/64)",
    IPv6Network("2001::/23"): "IETF protocol assignments (2001::/23)",
    IPv6Network("2001::/32"): None,  # Teredo: judged by its server and client
    IPv6Network("2001:2::/48"): "benchmarking (2001:2::/48)",
    IPv6Network("2001:db8::/32"): "documentation (2001:db8::/32)",
    IPv6Network("2002::/16"): None,  # 6to4: judged by the IPv4 address it carries
    IPv6Network("3fff::/20"): "documentation (3fff::/20)",
    IPv6Network("5f00::/16"): "SRv6 segment identifiers (5f00::/16)",
    IPv6Network("fc00::/7"): "unique local, private (fc00::/7)",
    IPv6Network("fe80::/10"): "link-local (fe80::/10)",
    IPv6Network("fec0::/10"): "site-local, deprecated (fec0::/10)",
    IPv6Network("ff00::/8"): "multicast (ff00::/8)",
    # everything outside 2000::/3 not named above
    IPv6Network("::/3"): _OUTSIDE_GLOBAL_UNICAST,
    IPv6Network("4000::/2"): _OUTSIDE_GLOBAL_UNICAST,
    IPv6Network("8000::/1"): _OUTSIDE_GLOBAL_UNICAST,
}

# As integers (network, mask, reason), most specific first, so that the first range that
# holds an address is the one that decides: a few integer operations per range.
_V4_LOOKUP = tuple(
    (int(n.network_address), int(n.netmask), reason)
    for n, reason in sorted(IPV4_RANGES.items(), key=lambda item: -item[0].prefixlen)
)
_V6_LOOKUP = tuple(
    (int(n.network_address), int(n.netmask), reason)
    for n, reason in sorted(IPV6_RANGES.items(), key=lambda item: -item[0].prefixlen)
)
_LOW_32_BITS = 0xFFFF_FFFF
_MAPPED = 0xFFFF  # ::ffff:0:0/96, the 96 high bits
_NAT64 = 0x0064_FF9B_0000_0000_0000_0000  # 64:ff9b::/96, the 96 high bits
_NAT64_LOCAL = 0x0064_FF9B_0001  # 64:ff9b:1::/48, the 48 high bits
_SIXTOFOUR = 0x2002  # 2002::/16
_TEREDO = 0x2001_0000  # 2001::/32


def refusal(address: Address, allowed: Collection[Network] = ()) -> str | None:
    """Why `address` may not be reached (a short phrase for people), or None: it may.

    `allowed`: the networks an operator allows as exceptions (`parse_networks`)."""
    if address.version == 6:
        for form, carried in carried_ipv4(address):
            reason = refusal(carried, allowed)
            if reason is not None:
                return f"{form} form of {carried}, {reason}"
    for exception in allowed:
        if address in exception:
            return None
    value = int(address)
    for network, mask, found in _V4_LOOKUP if address.version == 4 else _V6_LOOKUP:
        if value & mask == network:
            return found
    return None


def carried_ipv4(address: IPv6Address) -> Iterator[tuple[str, IPv4Address]]:
    """The IPv4 addresses an IPv6 address carries, each with the name of its form."""
    value = int(address)
    high_96 = value >> 32
    if high_96 == _MAPPED:
        yield "IPv4-mapped", IPv4Address(value & _LOW_32_BITS)
    elif high_96 == 0:
        if value > 1:  # :: and ::1 are themselves, not 0.0.0.0 and 0.0.0.1
            yield "IPv4-compatible", IPv4Address(value)
    elif high_96 == _NAT64 or value >> 80 == _NAT64_LOCAL:
        yield "NAT64", IPv4Address(value & _LOW_32_BITS)
    elif value >> 112 == _SIXTOFOUR:
        yield "6to4", IPv4Address((value >> 80) & _LOW_32_BITS)
    elif value >> 96 == _TEREDO:
        yield "Teredo server", IPv4Address((value >> 64) & _LOW_32_BITS)
        yield "Teredo client", IPv4Address(~value & _LOW_32_BITS)


# One part of an IPv4 address as resolvers read it (inet_aton, the WHATWG URL standard):
# hexadecimal after 0x (digits optional: "0x" is 0), octal after a leading 0, else decimal.
_IPV4_PART = re.compile(r"(0[xX])([0-9a-fA-F]*)|(0)([0-7]*)|([1-9][0-9]*)")
_MAX_DECIMAL_DIGITS = 10  # 4294967295: anything longer is out of range


def literal_address(host: str) -> Address | None:
    """`host` (a URL's host, with or without IPv6 brackets, no port) as an IP address, or
    None when it is a name to resolve.

    IPv4 is read as resolvers read it: one to four dot-separated numbers, each decimal,
    octal (leading 0) or hexadecimal (0x), the last filling the remaining bytes
    (`127.1`, `2130706433`, `0x7f.1`, `017700000001`), a trailing dot allowed. Non-ASCII
    hosts are first mapped as IDNA maps them (full-width digits are digits)."""
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    if host.startswith("[") and host.endswith("]"):
        return _ipv6(host[1:-1])
    if ":" in host:
        return _ipv6(host)
    return _ipv4(host)


def _ipv6(text: str) -> IPv6Address | None:
    text = text.replace("%25", "%")  # a zone id in a URL is percent-encoded (RFC 6874)
    try:
        return IPv6Address(text)
    except ValueError:
        return None


def _ipv4(host: str) -> IPv4Address | None:
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()  # a trailing dot: the root of the DNS
    if not 1 <= len(parts) <= 4:
        return None
    numbers: list[int] = []
    for part in parts:
        found = _IPV4_PART.fullmatch(part)
        if found is None:
            return None
        hexadecimal, octal, decimal = found.group(2), found.group(4), found.group(5)
        if hexadecimal is not None:
            numbers.append(int(hexadecimal or "0", 16))
        elif octal is not None:
            numbers.append(int(octal or "0", 8))
        elif len(decimal) > _MAX_DECIMAL_DIGITS:
            return None
        else:
            numbers.append(int(decimal))
    *leading, last = numbers
    if any(number > 255 for number in leading) or last >= 256 ** (4 - len(leading)):
        return None
    value = last
    for index, number in enumerate(leading):
        value |= number << (8 * (3 - index))
    return IPv4Address(value)


def parse_networks(texts: Iterable[str]) -> tuple[Network, ...]:
    """Networks in CIDR notation (`10.0.0.0/8`, `fd00::/8`; a bare address is one host).

    Raises ValueError naming the first text that is not one (host bits set included:
    `10.0.0.1/8` is refused, not silently widened)."""
    networks: list[Network] = []
    for text in texts:
        try:
            networks.append(ip_network(text.strip()))
        except ValueError as error:
            example = "like 10.0.0.0/8 or fd00::/8"
            raise ValueError(
                f"{text!r} is not a network in CIDR notation ({example}): {error}"
            ) from None
    return tuple(networks)
