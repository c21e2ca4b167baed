"""Which interface addresses the gateway advertises, the address to answer a querier with, and
the fallback name when another host holds ours. Pure: the caller lists the interfaces.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address

# Interfaces that are never "the LAN" unless named in `mdns.interfaces`: loopback, container and
# VM bridges, VPN tunnels and point-to-point WAN links. Devices on those would get an address they
# cannot reach, or the plant's name would leak into a VPN.
NOT_LAN_PREFIXES = (
    "docker",
    "br-",
    "veth",
    "virbr",
    "vnet",
    "vmnet",
    "vboxnet",
    "lxc",
    "lxd",
    "cni",
    "flannel",
    "tun",
    "tap",
    "wg",
    "tailscale",
    "zt",
    "ipsec",
    "ppp",
    "wwan",
)

# "<hostname>-<this many hex digits of the gateway id>.local"
ALIAS_ID_DIGITS = 6
_MAX_LABEL = 63


@dataclass(frozen=True, slots=True)
class InterfaceAddress:
    """One address of one network interface, with its prefix length."""

    interface: str
    address: IPv4Address | IPv6Address
    prefix: int


def is_lan_interface(name: str) -> bool:
    """Whether an interface counts as LAN when `mdns.interfaces` is empty."""
    return name != "lo" and not name.startswith(NOT_LAN_PREFIXES)


def choose(addresses: Iterable[InterfaceAddress], wanted: Sequence[str]) -> tuple[InterfaceAddress, ...]:
    """The addresses to advertise: those of the `wanted` interfaces, or of every LAN interface.

    Loopback and IPv6 link-local addresses are left out (a link-local AAAA without its scope is
    useless to a querier); IPv4 link-local (169.254/16) stays, it is what mDNS-only networks use.
    The result is sorted, so that two listings of the same state compare equal.
    """
    chosen = [
        entry
        for entry in addresses
        if (entry.interface in wanted if wanted else is_lan_interface(entry.interface))
        and not entry.address.is_loopback
        and not (entry.address.version == 6 and entry.address.is_link_local)
    ]
    return tuple(
        sorted(chosen, key=lambda entry: (entry.interface, entry.address.version, str(entry.address)))
    )


def answer_address(querier: IPv4Address, chosen: Sequence[InterfaceAddress]) -> IPv4Address | None:
    """Our IPv4 address on the querier's subnet (the one it can reach), else our first one."""
    ipv4 = [(entry.address, entry.prefix) for entry in chosen if isinstance(entry.address, IPv4Address)]
    for address, prefix in ipv4:
        if querier in IPv4Network((address, prefix), strict=False):
            return address
    return ipv4[0][0] if ipv4 else None


def alias(hostname: str, gateway_id: str) -> str:
    """The gateway's own fallback name: stable across restarts, unique to this gateway."""
    suffix = "".join(ch for ch in gateway_id.lower() if ch in "0123456789abcdef")[:ALIAS_ID_DIGITS]
    return f"{hostname[: _MAX_LABEL - len(suffix) - 1]}-{suffix}"
