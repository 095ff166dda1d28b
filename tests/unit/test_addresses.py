"""The address guard's rule: refused ranges, carried IPv4 addresses, exceptions, literals."""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from core.domain.addresses import (
    IPV4_RANGES,
    IPV6_RANGES,
    Address,
    carried_ipv4,
    literal_address,
    parse_networks,
    refusal,
)

# --- refused and allowed addresses ------------------------------------------------------------

REFUSED = {
    # IPv4
    "0.0.0.0": "unspecified",
    "0.1.2.3": "'this network'",
    "10.0.0.1": "private",
    "10.255.255.255": "private",
    "100.64.0.1": "shared address space",
    "100.127.255.254": "shared address space",
    "127.0.0.1": "loopback",
    "127.255.255.254": "loopback",
    "169.254.169.254": "link-local",  # the cloud metadata endpoint
    "172.16.0.1": "private",
    "172.31.255.255": "private",
    "192.0.0.8": "IETF protocol assignments",
    "192.0.2.1": "documentation",
    "192.88.99.1": "reserved: former 6to4",
    "192.168.1.1": "private",
    "198.18.0.1": "benchmarking",
    "198.19.255.255": "benchmarking",
    "198.51.100.7": "documentation",
    "203.0.113.9": "documentation",
    "224.0.0.1": "multicast",
    "239.255.255.250": "multicast",
    "240.0.0.1": "reserved",
    "255.255.255.254": "reserved",
    "255.255.255.255": "broadcast",
    # IPv6
    "::": "unspecified",
    "::1": "loopback",
    "fe80::1": "link-local",
    "fe80::1%eth0": "link-local",
    "fc00::1": "unique local",
    "fd12:3456::1": "unique local",
    "fec0::1": "site-local",
    "ff02::1": "multicast",
    "ff0e::1": "multicast",
    "2001:db8::1": "documentation",
    "3fff::1": "documentation",
    "2001:2::1": "benchmarking",
    "2001:10::1": "IETF protocol assignments",
    "100::1": "discard-only",
    "5f00::1": "SRv6",
    "::8.8.8.8": "IPv4-compatible, deprecated",
    "64:ff9b:1::808:808": "local-use NAT64",
    "1::1": "reserved: outside global unicast",
    "4000::1": "reserved: outside global unicast",
    "e000::1": "reserved: outside global unicast",
    # IPv6 forms of refused IPv4 addresses
    "::ffff:127.0.0.1": "IPv4-mapped form of 127.0.0.1, loopback",
    "::ffff:169.254.169.254": "IPv4-mapped form of 169.254.169.254, link-local",
    "::ffff:0.0.0.0": "IPv4-mapped form of 0.0.0.0, unspecified",
    "::127.0.0.1": "IPv4-compatible form of 127.0.0.1, loopback",
    "::10.0.0.1": "IPv4-compatible form of 10.0.0.1, private",
    "64:ff9b::127.0.0.1": "NAT64 form of 127.0.0.1, loopback",
    "64:ff9b::a9fe:a9fe": "NAT64 form of 169.254.169.254, link-local",
    "64:ff9b:1::10.1.2.3": "NAT64 form of 10.1.2.3, private",
    "2002:7f00:1::": "6to4 form of 127.0.0.1, loopback",
    "2002:a9fe:a9fe:1::5": "6to4 form of 169.254.169.254, link-local",
    "2002:c0a8:101::1": "6to4 form of 192.168.1.1, private",
    # Teredo: server 65.54.227.120, client 127.0.0.1 (obfuscated: ~7f000001 = 80ff:fffe)
    "2001:0:4136:e378:8000:63bf:80ff:fffe": "Teredo client form of 127.0.0.1, loopback",
    # Teredo: server 10.0.0.1, client 8.8.8.8 (~08080808 = f7f7:f7f7)
    "2001:0:a00:1::f7f7:f7f7": "Teredo server form of 10.0.0.1, private",
}

ALLOWED = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.215.14",
    "100.63.255.255",  # just below 100.64/10
    "100.128.0.0",  # just above it
    "172.15.255.255",
    "172.32.0.0",
    "192.31.196.1",  # AS112: globally reachable anycast
    "192.52.193.1",  # AMT
    "192.175.48.1",  # AS112 direct delegation
    "198.17.255.255",
    "198.20.0.0",
    "223.255.255.255",  # last unicast address before multicast
    "2606:4700:4700::1111",
    "2a00:1450:4001:81c::200e",
    "2620:4f:8000::1",  # AS112 IPv6
    "::ffff:8.8.8.8",  # IPv4-mapped: it is 8.8.8.8
    "64:ff9b::8.8.8.8",  # NAT64 well-known prefix: global
    "2002:808:808::1",  # 6to4 of 8.8.8.8
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo: server 65.54.227.120, client 8.8.8.8
]


@pytest.mark.parametrize(("text", "reason"), REFUSED.items())
def test_refused_addresses_say_why(text: str, reason: str) -> None:
    found = refusal(ip_address(text))
    assert found is not None
    assert found.startswith(reason), found


@pytest.mark.parametrize("text", ALLOWED)
def test_global_unicast_addresses_pass(text: str) -> None:
    assert refusal(ip_address(text)) is None


def _decided_by(address: Address) -> IPv4Network | IPv6Network:
    """The most specific listed range that holds `address`."""
    ranges: list[IPv4Network] | list[IPv6Network]
    ranges = list(IPV4_RANGES) if isinstance(address, IPv4Address) else list(IPV6_RANGES)
    return max((n for n in ranges if address in n), key=lambda n: n.prefixlen)


@pytest.mark.parametrize(("network", "reason"), IPV4_RANGES.items())
def test_every_ipv4_range_refuses_from_its_first_to_its_last_address(
    network: IPv4Network, reason: str
) -> None:
    for address in (network.network_address, network.broadcast_address):
        if _decided_by(address) == network:  # else a more specific range decides
            assert refusal(address) == reason


@pytest.mark.parametrize(("network", "reason"), IPV6_RANGES.items())
def test_every_ipv6_range_decides_at_its_edges(network: IPv6Network, reason: str | None) -> None:
    edges = [network.network_address, network.broadcast_address]
    if network.num_addresses > 4:
        edges += [network.network_address + 2, network.broadcast_address - 1]
    for address in edges:
        if _decided_by(address) != network:  # a more specific range decides
            continue
        carried = [
            f"{form} form of {ipv4}, {refusal(ipv4)}"
            for form, ipv4 in carried_ipv4(address)
            if refusal(ipv4) is not None
        ]
        assert refusal(address) == (carried[0] if carried else reason)
        if reason is None:  # these ranges are judged by what they carry alone
            assert list(carried_ipv4(address))


def test_the_ranges_outside_global_unicast_cover_everything_but_2000_3() -> None:
    outside = [n for n, r in IPV6_RANGES.items() if r is not None and "2000::/3" in r]
    total = sum(n.num_addresses for n in outside)
    assert total == 2**128 - IPv6Network("2000::/3").num_addresses
    assert not any(n.overlaps(IPv6Network("2000::/3")) for n in outside)


# --- operator exceptions ----------------------------------------------------------------------

LOOPBACK = parse_networks(["127.0.0.0/8", "::1"])


@pytest.mark.parametrize("text", ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"])
def test_an_allowed_network_lets_its_addresses_and_their_mapped_forms_pass(text: str) -> None:
    assert refusal(ip_address(text)) is not None
    assert refusal(ip_address(text), LOOPBACK) is None


@pytest.mark.parametrize("text", ["10.0.0.1", "169.254.169.254", "::2", "fe80::1", "0.0.0.0"])
def test_an_allowed_network_lets_nothing_else_pass(text: str) -> None:
    assert refusal(ip_address(text), LOOPBACK) is not None


def test_allowing_an_ipv6_network_never_lets_a_refused_carried_ipv4_address_pass() -> None:
    everything_v6 = parse_networks(["::/0"])
    assert refusal(ip_address("fd00::1"), everything_v6) is None
    assert refusal(ip_address("::ffff:127.0.0.1"), everything_v6) is not None
    assert refusal(ip_address("2002:7f00:1::"), everything_v6) is not None
    nat64 = parse_networks(["64:ff9b:1::/48"])  # an operator's own NAT64
    assert refusal(ip_address("64:ff9b:1::808:808"), nat64) is None
    assert refusal(ip_address("64:ff9b:1::a9fe:a9fe"), nat64) is not None


def test_the_ipv4_compatible_form_of_an_allowed_address_is_still_deprecated() -> None:
    assert refusal(ip_address("::127.0.0.1"), LOOPBACK) == "IPv4-compatible, deprecated (::/96)"


def test_parse_networks_reads_cidrs_and_bare_addresses() -> None:
    assert parse_networks([" 10.0.0.0/8", "fd00::/8 ", "192.0.2.7", "::1"]) == (
        IPv4Network("10.0.0.0/8"),
        IPv6Network("fd00::/8"),
        IPv4Network("192.0.2.7/32"),
        IPv6Network("::1/128"),
    )
    assert parse_networks([]) == ()


@pytest.mark.parametrize("text", ["", "10.0.0.1/8", "10.0.0.0/33", "localhost", "fd00::/129", "*"])
def test_parse_networks_refuses_what_is_not_a_network_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match="is not a network in CIDR notation") as raised:
        parse_networks(["127.0.0.0/8", text])
    assert repr(text) in str(raised.value)


# --- literal addresses in URLs ----------------------------------------------------------------

LITERALS = {
    "127.0.0.1": "127.0.0.1",
    "2130706433": "127.0.0.1",
    "0x7f000001": "127.0.0.1",
    "0X7F000001": "127.0.0.1",
    "017700000001": "127.0.0.1",
    "0x7f.1": "127.0.0.1",
    "0x7f.0.0.1": "127.0.0.1",
    "0177.0.0.1": "127.0.0.1",
    "00000177.0.0.01": "127.0.0.1",
    "127.1": "127.0.0.1",
    "127.0.1": "127.0.0.1",
    "127.0.0.1.": "127.0.0.1",
    "169.254.43518": "169.254.169.254",
    "0xa9fea9fe": "169.254.169.254",
    "0": "0.0.0.0",
    "0x": "0.0.0.0",  # the URL standard reads an empty hexadecimal number as 0
    "4294967295": "255.255.255.255",
    "１２７.０.０.１": "127.0.0.1",  # full-width digits, as IDNA maps them  # noqa: RUF001
    "[::1]": "::1",
    "::1": "::1",
    "[::ffff:127.0.0.1]": "::ffff:7f00:1",
    "[0:0:0:0:0:ffff:7f00:1]": "::ffff:7f00:1",
    "[fe80::1%25eth0]": "fe80::1%eth0",
    "[2001:DB8::1]": "2001:db8::1",
}

NAMES = [
    "example.com",
    "localhost",
    "127.0.0.1.example.com",
    "1.2.3.4.5",
    "256.0.0.1",
    "1.256.0.1",
    "1.2.65536",
    "4294967296",
    "99999999999999999999999",
    "08",
    "09.1.1.1",
    "0x7g.1",
    "1..1",
    ".1",
    "",
    "1.2.3.4 ",
    "+1",
    "-1",
    "1e3",
    "[::1",
    "[v1.fe]",
    "[127.0.0.1]",
    "::1::",
    "xn--zz",
]


@pytest.mark.parametrize(("host", "expected"), LITERALS.items())
def test_literal_hosts_are_read_as_resolvers_read_them(host: str, expected: str) -> None:
    assert literal_address(host) == ip_address(expected)


@pytest.mark.parametrize("host", NAMES)
def test_anything_else_is_a_name(host: str) -> None:
    assert literal_address(host) is None


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost.", "[::1]", "[::ffff:127.0.0.1]", "2130706433", "0x7f.1"]
)
def test_the_briefs_loopback_literals_are_refused_and_names_are_left_to_resolution(
    host: str,
) -> None:
    address = literal_address(host)
    if host == "localhost.":
        assert address is None  # a name: refused at connection time, on what it resolves to
    else:
        assert address is not None
        assert refusal(address) is not None


# --- properties -------------------------------------------------------------------------------

ipv4s = st.integers(min_value=0, max_value=2**32 - 1).map(IPv4Address)
ipv6s = st.integers(min_value=0, max_value=2**128 - 1).map(IPv6Address)
# addresses near the special ranges, where the interesting edges are
near_ranges = st.one_of(
    st.sampled_from(sorted(IPV4_RANGES, key=str)).flatmap(
        lambda n: st.integers(-2, n.num_addresses + 1).map(
            lambda i: IPv4Address((int(n.network_address) + i) % 2**32)
        )
    ),
    st.sampled_from(sorted(IPV6_RANGES, key=str)).flatmap(
        lambda n: st.integers(-2, min(n.num_addresses, 2**64) + 1).map(
            lambda i: IPv6Address((int(n.network_address) + i) % 2**128)
        )
    ),
)
addresses = st.one_of(ipv4s, ipv6s, near_ranges)
networks = st.one_of(
    st.builds(
        lambda a, p: IPv4Network((int(a) >> (32 - p) << (32 - p), p)),
        ipv4s,
        st.integers(0, 32),
    ),
    st.builds(
        lambda a, p: IPv6Network((int(a) >> (128 - p) << (128 - p), p)),
        ipv6s,
        st.integers(0, 128),
    ),
)

TRANSLATION = [IPv6Network(n) for n in ("::ffff:0:0/96", "64:ff9b::/96", "2002::/16", "2001::/32")]


@given(addresses)
def test_what_passes_is_global_by_the_standard_library_too(address: Address) -> None:
    # one-sided: the standard library calls some ranges global that the guard refuses
    # (multicast, site-local, 192.0.0.0/24 ...), never the other way round
    assume(not any(address in n for n in TRANSLATION))  # judged by what they carry
    if refusal(address) is None:
        assert address.is_global


@given(ipv4s)
def test_every_ipv6_form_of_an_ipv4_address_is_judged_as_it_is(address: IPv4Address) -> None:
    refused = refusal(address) is not None
    value = int(address)
    forms = [
        IPv6Address(0xFFFF << 32 | value),  # IPv4-mapped
        IPv6Address(int(IPv6Address("64:ff9b::")) | value),  # NAT64
        IPv6Address(0x2002 << 112 | value << 80 | 0xABCD),  # 6to4, any subnet and host
    ]
    for form in forms:
        assert (refusal(form) is not None) == refused, form
    if refused:  # the deprecated and local-use forms are refused anyway
        assert refusal(IPv6Address(value)) is not None or value <= 1
        assert refusal(IPv6Address(int(IPv6Address("64:ff9b:1::")) | value)) is not None


@given(addresses, st.lists(networks, max_size=4))
def test_allowed_networks_only_ever_allow_more(
    address: Address, allowed: list[IPv4Network | IPv6Network]
) -> None:
    if refusal(address) is None:
        assert refusal(address, allowed) is None


@given(addresses)
def test_an_address_in_an_allowed_network_passes_unless_it_carries_a_refused_ipv4(
    address: Address,
) -> None:
    network = IPv4Network(address) if isinstance(address, IPv4Address) else IPv6Network(address)
    found = refusal(address, [network])
    if isinstance(address, IPv6Address) and any(
        refusal(carried) is not None for _, carried in carried_ipv4(address)
    ):
        assert found is not None
    else:
        assert found is None


def _renderings(address: IPv4Address) -> st.SearchStrategy[str]:
    """The ways a resolver may be given `address`: 1 to 4 parts, each in any radix."""
    octets = address.packed

    def part(value: int) -> st.SearchStrategy[str]:
        octal = "0" + oct(value)[2:]
        return st.sampled_from(
            [str(value), hex(value), hex(value).upper().replace("X", "x"), octal, "00" + octal]
        )

    def split(count: int) -> st.SearchStrategy[str]:
        leading = list(octets[: count - 1])
        last = int.from_bytes(octets[count - 1 :], "big")
        return st.tuples(*[part(v) for v in [*leading, last]]).map(".".join)

    return st.integers(1, 4).flatmap(split).flatmap(lambda t: st.sampled_from([t, t + "."]))


@given(ipv4s.flatmap(lambda a: st.tuples(st.just(a), _renderings(a))))
def test_every_rendering_of_an_ipv4_address_reads_back(case: tuple[IPv4Address, str]) -> None:
    address, text = case
    assert literal_address(text) == address


@given(st.text(alphabet="0123456789abcdefxX.", max_size=24))
def test_literals_agree_with_the_c_library_wherever_it_reads_an_address(text: str) -> None:
    # inet_aton is what getaddrinfo uses for numeric hosts: an independent reading
    try:
        packed = socket.inet_aton(text)
    except OSError:
        return
    assert literal_address(text) == IPv4Address(packed), text


@given(ipv6s)
def test_ipv6_literals_read_back_in_every_spelling(address: IPv6Address) -> None:
    for text in (address.compressed, address.exploded, address.exploded.upper()):
        assert literal_address(f"[{text}]") == address
        assert literal_address(text) == address


@given(st.text(max_size=40))
def test_literal_address_never_raises(host: str) -> None:
    literal_address(host)


@given(
    st.one_of(
        ipv6s,
        st.sampled_from(
            ["::ffff:0:0", "::", "64:ff9b::", "64:ff9b:1::", "2002::", "2001::"]
        ).flatmap(
            lambda prefix: st.integers(0, 2**96 - 1).map(
                lambda low: IPv6Address(int(IPv6Address(prefix)) | low)
            )
        ),
    )
)
def test_carried_addresses_agree_with_the_standard_library(address: IPv6Address) -> None:
    carried = dict(carried_ipv4(address))
    if address.ipv4_mapped is not None:
        assert carried == {"IPv4-mapped": address.ipv4_mapped}
    elif address.sixtofour is not None:
        assert carried == {"6to4": address.sixtofour}
    elif address.teredo is not None:
        server, client = address.teredo
        assert carried == {"Teredo server": server, "Teredo client": client}
    elif address in IPv6Network("64:ff9b::/96") or address in IPv6Network("64:ff9b:1::/48"):
        assert carried == {"NAT64": IPv4Address(int(address) & 0xFFFFFFFF)}
    elif address in IPv6Network("::/96") and int(address) > 1:
        assert carried == {"IPv4-compatible": IPv4Address(int(address))}
    else:
        assert carried == {}
