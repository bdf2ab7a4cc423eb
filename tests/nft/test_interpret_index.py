"""The interpreter's set index answers exactly as the element-by-element definition does."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from stockade.nft.interpret import _set_has, _SetIndex
from stockade.nft.ir import NamedSet

ADDRESSES = st.sampled_from(["198.18.0.1", "198.18.0.2", "198.18.1.7", "2001:db8::1", "2001:db8:0:0::1",
                             "2001:db8::2", "198.19.255.255"])
NETWORKS = st.sampled_from(["198.18.0.0/24", "198.18.0.0/16", "198.18.0.1", "2001:db8::/64", "2001:db8::1/128",
                            "198.18.0.1/16", "not-a-network"])
INTERFACES = st.sampled_from(["wl-a", "wl-b", "wl-*", "fab0", "tap-*"])
PROTOCOLS = st.sampled_from(["tcp", "udp", "icmp", "ipv6-icmp", 6, 17, 1, 58])
PORTS = st.integers(min_value=0, max_value=70)
SCALARS = st.one_of(ADDRESSES, INTERFACES, PROTOCOLS, PORTS)


@st.composite
def sets_and_values(draw: st.DrawFn) -> tuple[NamedSet, tuple[object, ...]]:
    interval = draw(st.booleans())
    width = draw(st.sampled_from([1, 1, 2]))
    if width == 1:
        pool = st.one_of(NETWORKS, INTERFACES, SCALARS) if interval else SCALARS
        elements = tuple(draw(st.lists(pool, max_size=8)))
        value: tuple[object, ...] = (draw(SCALARS),)
    else:
        elements = tuple(draw(st.lists(st.tuples(st.one_of(ADDRESSES, INTERFACES), st.one_of(PROTOCOLS, PORTS)),
                                       max_size=8)))
        value = draw(st.one_of(st.tuples(st.one_of(ADDRESSES, INTERFACES), st.one_of(PROTOCOLS, PORTS)),
                               st.tuples(SCALARS)))
        if elements and draw(st.booleans()):
            value = draw(st.sampled_from(elements))
    if elements and width == 1 and draw(st.booleans()):
        value = (draw(st.sampled_from(elements)),)
    return NamedSet("s", ("x",) * width, elements, interval), value  # type: ignore[arg-type]


@settings(max_examples=600, deadline=None)
@given(sets_and_values())
def test_the_index_agrees_with_the_definition(case: tuple[NamedSet, tuple[object, ...]]) -> None:
    named, value = case
    assert _SetIndex(named).has(value) == _set_has(named, value)  # type: ignore[arg-type]


def test_addresses_match_by_value_and_protocols_by_name_or_number() -> None:
    exact = NamedSet("s", ("ipv6_addr", "inet_proto"), (("2001:db8:0:0::1", "tcp"),))
    assert _SetIndex(exact).has(("2001:db8::1", 6))
    assert not _SetIndex(exact).has(("2001:db8::1", 17))
    ranges = NamedSet("r", ("ipv4_addr",), ("198.18.0.0/24", "198.18.5.9"), interval=True)
    assert _SetIndex(ranges).has(("198.18.0.200",)) and _SetIndex(ranges).has(("198.18.5.9",))
    assert not _SetIndex(ranges).has(("198.18.5.10",))
