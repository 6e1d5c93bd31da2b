"""The client's IP address: X-Forwarded-For is believed only as far as trusted proxies vouch."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# What RFC 7239 calls a node that cannot be identified (e.g. a peer on a Unix socket).
UNKNOWN = "unknown"

_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def parse_networks(entries: Iterable[str]) -> list[Network]:
    """Parse a config list such as ["127.0.0.1/32", "10.0.0.0/8", "::1"] into networks."""
    networks: list[Network] = []
    for entry in entries:
        try:
            # strict: "10.0.0.1/8" is more likely a typo than a wish to trust 10/8.
            network = ipaddress.ip_network(entry.strip(), strict=True)
        except ValueError as exc:
            raise ValueError(f"not an IP network: {entry!r} ({exc})") from None
        if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_IPV4_MAPPED):
            # Addresses are compared as IPv4 once unmapped, so the networks must be too.
            mapped = ipaddress.IPv4Address(int(network.network_address) & 0xFFFFFFFF)
            network = ipaddress.IPv4Network((mapped, network.prefixlen - 96))
        networks.append(network)
    return networks


def client_ip(
    peer: str | None, x_forwarded_for: list[str], trusted_proxies: Sequence[Network]
) -> str:
    """The address of the first untrusted hop, walking X-Forwarded-For from the right."""
    peer_address, peer_text = _peer(peer) if peer is not None else (None, UNKNOWN)
    if peer_address is None or not _trusted(peer_address, trusted_proxies):
        # Anyone can write X-Forwarded-For; only a trusted proxy's account of it counts.
        return peer_text
    hops = [hop.strip() for line in x_forwarded_for for hop in line.split(",")]
    last_trusted = peer_address
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None:
            # Whatever lies left of garbage was not written by a proxy we can vouch for.
            break
        if not _trusted(address, trusted_proxies):
            return str(address)
        last_trusted = address
    return str(last_trusted)


@functools.lru_cache(maxsize=4096)
def _peer(peer: str) -> tuple[Address | None, str]:
    # A client sends many requests from one address: parsing and printing it once rather
    # than per request is a measurable saving on the gateway's hot path.
    address = parse_address(peer)
    return address, str(address) if address is not None else (peer or UNKNOWN)


def parse_address(text: str) -> Address | None:
    """An address from a peer or X-Forwarded-For entry ("a.b.c.d[:port]", "[v6][:port]", "v6")."""
    text = text.strip()
    if text.startswith("["):
        # Bracketed IPv6, optionally with a port, as some proxies write it.
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not _is_port_suffix(rest)):
            return None
        text = host
    elif text.count(":") == 1:
        # IPv4 with a port; a bare IPv6 address has at least two colons.
        text, _, port = text.partition(":")
        if not _is_port_suffix(":" + port):
            return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; they are IPv4 clients.
        return address.ipv4_mapped
    return address


def _is_port_suffix(text: str) -> bool:
    port = text[1:]
    return text.startswith(":") and port.isascii() and port.isdigit() and int(port) <= 65535


def _trusted(address: Address, networks: Sequence[Network]) -> bool:
    # `in` is simply False across IP versions, so mixed lists need no special care.
    return any(address in network for network in networks)
