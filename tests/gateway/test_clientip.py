"""Client IP resolution: X-Forwarded-For counts only as far as trusted proxies vouch for it."""

import ipaddress

import pytest

from gateway.clientip import UNKNOWN, client_ip, parse_address, parse_networks

TRUSTED = parse_networks(["127.0.0.1/32", "10.0.0.0/8", "fd00::/8"])


def test_parse_networks_accepts_addresses_cidrs_and_ipv4_mapped():
    assert parse_networks([" 10.0.0.0/8", "::1", "192.0.2.7", "::ffff:172.16.0.0/108"]) == [
        ipaddress.IPv4Network("10.0.0.0/8"),
        ipaddress.IPv6Network("::1/128"),
        ipaddress.IPv4Network("192.0.2.7/32"),
        ipaddress.IPv4Network("172.16.0.0/12"),
    ]


@pytest.mark.parametrize("entry", ["10.0.0.1/8", "not-an-ip", "10.0.0.0/33", ""])
def test_parse_networks_rejects_malformed_entries(entry):
    with pytest.raises(ValueError, match="not an IP network"):
        parse_networks([entry])


def test_spoofed_header_from_an_untrusted_peer_is_ignored():
    assert client_ip("198.51.100.7", ["1.2.3.4"], TRUSTED) == "198.51.100.7"
    assert client_ip("198.51.100.7", ["10.0.0.1, 127.0.0.1"], TRUSTED) == "198.51.100.7"


def test_no_header_from_a_trusted_peer_gives_the_peer():
    assert client_ip("10.0.0.5", [], TRUSTED) == "10.0.0.5"


def test_walk_from_the_right_skips_trusted_hops():
    # The client wrote the leftmost entry itself; only what trusted hops appended counts.
    header = ["6.6.6.6, 203.0.113.9, 10.1.1.1"]
    assert client_ip("10.0.0.2", header, TRUSTED) == "203.0.113.9"


def test_multiple_header_lines_are_one_list_and_whitespace_is_ignored():
    lines = ["6.6.6.6 ,203.0.113.9", "  10.1.1.1,\t10.2.2.2  "]
    assert client_ip("127.0.0.1", lines, TRUSTED) == "203.0.113.9"


def test_an_all_trusted_chain_gives_its_leftmost_hop():
    assert client_ip("10.0.0.2", ["10.9.9.9, 10.1.1.1"], TRUSTED) == "10.9.9.9"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (["203.0.113.9, garbage, 10.1.1.1"], "10.1.1.1"),  # last trusted hop seen
        (["203.0.113.9, unknown"], "10.0.0.2"),  # nothing walked yet: the peer
        (["203.0.113.9,,10.1.1.1"], "10.1.1.1"),  # an empty element is malformed too
        (["203.0.113.9, 10.1.1.1:"], "10.0.0.2"),
        (["203.0.113.9, [2001:db8::1"], "10.0.0.2"),
        (["203.0.113.9, 1.2.3.4:99999"], "10.0.0.2"),
        ([""], "10.0.0.2"),
    ],
)
def test_malformed_entries_stop_the_walk(header, expected):
    assert client_ip("10.0.0.2", header, TRUSTED) == expected


def test_ipv6_chain_and_canonical_form():
    header = ["2001:DB8:0:0::1, fd00::2"]
    assert client_ip("fd00::1", header, TRUSTED) == "2001:db8::1"
    assert client_ip("2001:db8::5", ["203.0.113.9"], TRUSTED) == "2001:db8::5"


def test_ipv4_mapped_addresses_are_ipv4():
    # Dual-stack listeners report IPv4 peers as ::ffff:a.b.c.d.
    assert client_ip("::ffff:10.0.0.2", ["::ffff:203.0.113.9"], TRUSTED) == "203.0.113.9"
    assert client_ip("::ffff:198.51.100.7", ["1.2.3.4"], TRUSTED) == "198.51.100.7"


def test_ports_in_entries_are_dropped():
    header = ["[2001:db8::1]:443, 203.0.113.9:5123"]
    assert client_ip("10.0.0.2", header, TRUSTED) == "203.0.113.9"
    assert client_ip("10.0.0.2", ["[2001:db8::1]:443, 10.1.1.1:80"], TRUSTED) == "2001:db8::1"


def test_unparsable_or_missing_peer():
    # A peer that is no IP (a Unix socket, a test client) is never trusted.
    assert client_ip("testclient", ["203.0.113.9"], TRUSTED) == "testclient"
    assert client_ip(None, ["203.0.113.9"], TRUSTED) == UNKNOWN


def test_nothing_is_trusted_without_configuration():
    assert client_ip("127.0.0.1", ["203.0.113.9"], []) == "127.0.0.1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("192.0.2.1:8080", "192.0.2.1"),
        ("[::1]", "::1"),
        ("[::1]:80", "::1"),
        ("fe80::1%eth0", "fe80::1%eth0"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("192.0.2.1:", None),
        ("[::1]x", None),
        ("::1]", None),
        ("192.0.2.256", None),
        ("host.example", None),
        ("192.0.2.1:\uff18\uff10", None),  # fullwidth digits are no port
    ],
)
def test_parse_address(text, expected):
    address = parse_address(text)
    assert (str(address) if address is not None else None) == expected
