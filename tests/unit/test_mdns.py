"""The pure mDNS parts: legacy-unicast queries and answers (checked with dnspython, the SDK's own
DNS library), the interface choice, the answer address and the alias."""

from __future__ import annotations

import re
import struct
import uuid
from ipaddress import IPv4Address, IPv6Address, ip_address

import dns.flags
import dns.message
import dns.rdatatype
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.mdns.interfaces import InterfaceAddress, alias, answer_address, choose, is_lan_interface
from gateway.mdns.wire import LEGACY_TTL_S, AddressQuery, address_answer, parse_address_query
from gateway.systemd import watchdog_interval


def sdk_query(name: str = "enapter-gateway.local", rdtype: str = "A") -> dns.message.Message:
    """The query dnspython's stub resolver sends (what `enapter.mdns.Resolver` uses)."""
    return dns.message.make_query(name, rdtype)


def test_the_sdk_query_is_parsed() -> None:
    query = sdk_query("Enapter-Gateway.LOCAL")
    parsed = parse_address_query(query.to_wire())
    assert parsed == AddressQuery(
        id=query.id,
        recursion_desired=True,
        name="enapter-gateway.local",
        question=query.to_wire()[12:],
    )


def test_dnspython_accepts_the_answer_as_a_reply_to_its_query() -> None:
    query = sdk_query()
    parsed = parse_address_query(query.to_wire())
    assert parsed is not None
    wire = address_answer(parsed, IPv4Address("192.0.2.1"))
    reply = dns.message.from_wire(wire)  # dnspython >= 2.9.1 is strict about compression
    assert query.is_response(reply)
    assert reply.flags & dns.flags.AA
    (rrset,) = reply.answer
    assert rrset.rdtype == dns.rdatatype.A
    assert rrset.ttl == LEGACY_TTL_S
    assert [item.address for item in rrset] == ["192.0.2.1"]
    assert not reply.additional


def test_any_query_gets_the_address() -> None:
    parsed = parse_address_query(sdk_query(rdtype="ANY").to_wire())
    assert parsed is not None
    assert parsed.name == "enapter-gateway.local"


@pytest.mark.parametrize("rdtype", ["AAAA", "TXT", "PTR", "SRV"])
def test_other_record_types_are_not_ours_to_answer(rdtype: str) -> None:
    assert parse_address_query(sdk_query(rdtype=rdtype).to_wire()) is None


def test_responses_and_multi_question_queries_are_ignored() -> None:
    query = sdk_query()
    parsed = parse_address_query(query.to_wire())
    assert parsed is not None
    assert parse_address_query(address_answer(parsed, IPv4Address("192.0.2.1"))) is None
    two = bytearray(query.to_wire())
    struct.pack_into("!H", two, 4, 2)
    assert parse_address_query(bytes(two)) is None


def test_a_compression_pointer_in_the_question_is_refused() -> None:
    header = struct.pack("!6H", 1, 0, 1, 0, 0, 0)
    assert parse_address_query(header + b"\xc0\x0c" + struct.pack("!HH", 1, 1)) is None


def test_the_unicast_response_bit_of_the_class_is_accepted() -> None:
    header = struct.pack("!6H", 7, 0, 1, 0, 0, 0)
    question = b"\x02gw\x05local\x00" + struct.pack("!HH", 1, 0x8001)
    parsed = parse_address_query(header + question)
    assert parsed is not None
    assert (parsed.id, parsed.name, parsed.recursion_desired) == (7, "gw.local", False)


@given(st.binary(max_size=600))
def test_any_bytes_give_a_query_or_none(data: bytes) -> None:
    parsed = parse_address_query(data)
    if parsed is not None:
        reply = dns.message.from_wire(address_answer(parsed, IPv4Address("10.0.0.1")))
        assert reply.id == parsed.id


@given(
    st.lists(st.from_regex(r"[a-z0-9-]{1,20}", fullmatch=True), min_size=1, max_size=4), st.integers(0, 65535)
)
def test_every_name_roundtrips(labels: list[str], query_id: int) -> None:
    query = sdk_query(".".join(labels))
    query.id = query_id
    parsed = parse_address_query(query.to_wire())
    assert parsed is not None
    assert parsed.name == ".".join(labels)
    assert query.is_response(dns.message.from_wire(address_answer(parsed, IPv4Address("10.0.0.1"))))


@st.composite
def near_queries(draw: st.DrawFn) -> tuple[bytes, list[bytes] | None]:
    """A query packet near the one we answer, and its labels if it is well formed up to the tail."""
    flags = draw(st.sampled_from([0, 0x0100, 0x8000, 0x0800, 0x0400]) | st.integers(0, 0xFFFF))
    questions = draw(st.sampled_from([1, 1, 0, 2]))
    counts = draw(st.lists(st.integers(0, 3), min_size=3, max_size=3))
    header = struct.pack("!6H", draw(st.integers(0, 0xFFFF)), flags, questions, *counts)
    drawn = draw(
        st.lists(
            st.binary(min_size=1, max_size=20)
            | st.from_regex(rb"[A-Za-z0-9-]{1,63}", fullmatch=True)
            | st.just(b"x" * 64),
            max_size=6,
        )
    )
    name = b"".join(bytes([len(label)]) + label for label in drawn) + b"\0"
    labels: list[bytes] | None = drawn
    if draw(st.booleans()):
        # A wrong length byte, a pointer, or the name cut short.
        at = draw(st.integers(0, len(name) - 1))
        name = name[:at] + draw(st.sampled_from([b"\xc0\x0c", b"\x3f", b"\x00", b""])) + name[at + 1 :]
        labels = None
    qtype = draw(st.sampled_from([1, 255, 28, 12]) | st.integers(0, 0xFFFF))
    qclass = draw(st.sampled_from([1, 0x8001, 3, 0xFF]) | st.integers(0, 0xFFFF))
    tail = struct.pack("!HH", qtype, qclass)[: draw(st.sampled_from([4, 4, 3, 0]))]
    return header + name + tail + draw(st.binary(max_size=8)), labels


@given(near_queries())
def test_near_queries_give_a_query_we_can_answer_or_none(packet: tuple[bytes, list[bytes] | None]) -> None:
    data, labels = packet
    parsed = parse_address_query(data)
    if parsed is None:
        return
    assert data.startswith(struct.pack("!H", parsed.id))
    if labels is not None:
        assert parsed.name == ".".join(label.decode("ascii").lower() for label in labels)
    reply = dns.message.from_wire(address_answer(parsed, IPv4Address("10.0.0.1")))
    assert reply.id == parsed.id
    (rrset,) = reply.answer
    assert [item.address for item in rrset] == ["10.0.0.1"]


def entry(interface: str, address: str, prefix: int = 24) -> InterfaceAddress:
    return InterfaceAddress(interface, ip_address(address), prefix)


HOST = [
    entry("lo", "127.0.0.1", 8),
    entry("lo", "::1", 128),
    entry("eth0", "192.168.1.20"),
    entry("eth0", "fe80::1", 64),
    entry("eth0", "2001:db8::20", 64),
    entry("wlan0", "10.0.0.5"),
    entry("docker0", "172.17.0.1", 16),
    entry("br-3f2a", "172.18.0.1", 16),
    entry("veth12ab", "169.254.7.7", 16),
    entry("wg0", "10.8.0.2"),
    entry("tailscale0", "100.64.0.3", 10),
    entry("tun0", "10.9.0.2"),
]


def test_the_default_choice_is_the_lan_interfaces() -> None:
    chosen = choose(HOST, ())
    assert [(item.interface, str(item.address)) for item in chosen] == [
        ("eth0", "192.168.1.20"),
        ("eth0", "2001:db8::20"),
        ("wlan0", "10.0.0.5"),
    ]


def test_named_interfaces_are_used_even_when_they_would_not_count_as_lan() -> None:
    chosen = choose(HOST, ("wg0", "wlan0"))
    assert [str(item.address) for item in chosen] == ["10.8.0.2", "10.0.0.5"]


def test_the_choice_does_not_depend_on_listing_order() -> None:
    assert choose(list(reversed(HOST)), ()) == choose(HOST, ())


@pytest.mark.parametrize(
    ("name", "lan"),
    [("eth0", True), ("enp3s0", True), ("wlan0", True), ("end0", True), ("lo", False), ("docker0", False)],
)
def test_lan_interfaces(name: str, lan: bool) -> None:
    assert is_lan_interface(name) is lan


def test_ipv4_link_local_stays_ipv6_link_local_goes() -> None:
    chosen = choose([entry("eth0", "169.254.3.4", 16), entry("eth0", "fe80::2", 64)], ())
    assert [str(item.address) for item in chosen] == ["169.254.3.4"]


def test_the_answer_is_our_address_on_the_queriers_subnet() -> None:
    chosen = choose(HOST, ())
    assert answer_address(IPv4Address("10.0.0.77"), chosen) == IPv4Address("10.0.0.5")
    assert answer_address(IPv4Address("192.168.1.9"), chosen) == IPv4Address("192.168.1.20")
    # A querier on no subnet of ours (routed, or link-local) still gets an address.
    assert answer_address(IPv4Address("172.30.0.1"), chosen) == IPv4Address("192.168.1.20")
    assert answer_address(IPv4Address("10.0.0.1"), [entry("eth0", "2001:db8::1", 64)]) is None


def test_the_alias_is_stable_and_a_valid_label() -> None:
    gateway_id = "3f2a9c1e-0b7d-4e5f-9a8b-123456789abc"
    assert alias("enapter-gateway", gateway_id) == "enapter-gateway-3f2a9c"
    long = alias("g" * 63, gateway_id)
    assert len(long) == 63
    assert long.endswith("-3f2a9c")


@given(st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", fullmatch=True), st.uuids())
def test_the_alias_of_any_host_name_is_a_valid_label(hostname: str, gateway_id: uuid.UUID) -> None:
    label = alias(hostname, str(gateway_id))
    assert re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", label)
    assert label.endswith("-" + gateway_id.hex[:6])
    assert label != hostname


def test_ipv6_addresses_are_kept_as_such() -> None:
    (only,) = choose([entry("eth0", "2001:db8::5", 64)], ())
    assert isinstance(only.address, IPv6Address)


@pytest.mark.parametrize(
    ("environment", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # another process's watchdog
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "9" * 400}, None),  # no float holds it; no one sets such a watchdog
        ({}, None),
    ],
)
def test_watchdog_interval(environment: dict[str, str], interval: float | None) -> None:
    assert watchdog_interval(environment, 4242) == interval
