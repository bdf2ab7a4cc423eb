"""compile.addresses: address arithmetic for nft interval sets (cidrs minus excepts, split by family,
collapsed, order-independent) and the fast address conversions.
"""

from __future__ import annotations

import ipaddress
import random

import pytest

from stockade.compile.addresses import address_text, address_value, interval_elements


# ------------------------------------------------------------------ cidr arithmetic

def _addresses(nets) -> set:
    return {a for n in nets for a in ipaddress.ip_network(n)}


def test_cidr_except_is_subtracted():
    assert interval_elements([], ["198.19.0.0/16"], ["198.19.5.0/24"], 4) == tuple(sorted((
        "198.19.0.0/22", "198.19.4.0/24", "198.19.6.0/23", "198.19.8.0/21", "198.19.16.0/20",
        "198.19.32.0/19", "198.19.64.0/18", "198.19.128.0/17"), key=lambda n: ipaddress.ip_network(n)))


def test_cidr_with_multiple_excepts_covers_exactly_the_rest():
    cidr, excepts = "10.1.0.0/24", ["10.1.0.0/26", "10.1.0.128/28", "10.1.0.200/30", "10.1.0.255/32"]
    got = interval_elements([], [cidr], excepts, 4)
    assert _addresses(got) == _addresses([cidr]) - _addresses(excepts)
    nets = [ipaddress.ip_network(n) for n in got]
    assert all(not a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1:]), "interval sets refuse overlaps"


def test_nested_excepts_and_except_equal_to_cidr():
    got = interval_elements([], ["10.2.0.0/24"], ["10.2.0.0/25", "10.2.0.0/26"], 4)
    assert got == ("10.2.0.128/25",)
    assert interval_elements([], ["10.3.0.0/24"], ["10.3.0.0/24"], 4) == ()
    assert interval_elements([], ["10.3.0.0/24"], ["10.0.0.0/8"], 4) == ()


def test_ipv6_cidr_except():
    got = interval_elements([], ["2001:db8:ff::/120"], ["2001:db8:ff::80/121", "2001:db8:ff::10/124"], 6)
    assert _addresses(got) == _addresses(["2001:db8:ff::/120"]) - _addresses(["2001:db8:ff::80/121",
                                                                             "2001:db8:ff::10/124"])
    big = interval_elements([], ["2001:db8:ff::/48"], ["2001:db8:ff:1::/64"], 6)
    total = sum(ipaddress.ip_network(n).num_addresses for n in big)
    assert total == 2 ** 80 - 2 ** 64
    assert not any(ipaddress.ip_network(n).overlaps(ipaddress.ip_network("2001:db8:ff:1::/64")) for n in big)
    assert all(ipaddress.ip_network(n).subnet_of(ipaddress.ip_network("2001:db8:ff::/48")) for n in big)


def test_interval_elements_split_by_family_and_collapse():
    mixed = ["198.18.0.1", "198.18.0.0", "2001:db8::1", "198.19.1.7"]
    assert interval_elements(mixed, ["2001:db8:1::/64", "198.20.0.0/24"], ["198.20.0.0/25", "2001:db8:1::/65"], 4) \
        == ("198.18.0.0/31", "198.19.1.7/32", "198.20.0.128/25")
    assert interval_elements(mixed, ["2001:db8:1::/64"], ["2001:db8:1::/65"], 6) == (
        "2001:db8::1/128", "2001:db8:1:0:8000::/65")
    # An address inside a cidr is absorbed; addresses are a union, not subject to excepts.
    assert interval_elements(["10.0.0.5", "10.0.0.130"], ["10.0.0.0/25"], ["10.0.0.128/25"], 4) == (
        "10.0.0.0/25", "10.0.0.130/32")


def test_address_conversions_agree_with_ipaddress():
    """The fast inet_pton/inet_ntop paths give exactly ipaddress's values and text, also for the
    IPv6 forms glibc writes differently (IPv4-mapped, IPv4-compatible)."""
    rng = random.Random(7)
    samples4 = ["0.0.0.0", "255.255.255.255", "198.18.0.1"] + [
        str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(2000)]
    samples6 = ["::", "::1", "::ffff:198.18.0.1", "::198.18.0.1", "2001:db8::", "2001:db8:0:1::1",
                "1:0:0:1::1", "2001:DB8::AB"]
    for _ in range(5000):
        groups = [rng.choice([0, 0, 1, 0xffff, rng.getrandbits(16)]) for _ in range(8)]
        samples6.append(":".join(f"{g:x}" for g in groups))
    for version, samples in ((4, samples4), (6, samples6)):
        for text in samples:
            want = ipaddress.ip_address(text)
            assert address_value(text, version) == int(want), text
            assert address_text(int(want), version) == str(want), text
    with pytest.raises(ValueError):
        address_value("198.18.0.256", 4)


def test_interval_elements_are_order_independent():
    a = interval_elements(["10.0.0.9", "10.0.0.1"], ["10.1.0.0/16", "10.2.0.0/16"], ["10.1.5.0/24", "10.2.9.0/24"])
    b = interval_elements(["10.0.0.1", "10.0.0.9"], ["10.2.0.0/16", "10.1.0.0/16"], ["10.2.9.0/24", "10.1.5.0/24"])
    assert a == b
