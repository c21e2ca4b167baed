"""The mDNS advertisement: python-zeroconf for the host name and DNS-SD services, and a small
legacy-unicast answerer beside it so that the Enapter SDK's resolver finds the host (see `wire`).

One task (`MdnsAdvertiser.run`) owns both. It lists the interface addresses every few seconds; when
the chosen set changes it withdraws the old advertisement (goodbye packets) and starts a new one, so
records always carry the current addresses. Before advertising it asks the LAN whether another host
already answers for the name; if one does, the gateway takes its own alias instead of fighting.
mDNS trouble (e.g. port 5353 not available) is logged and retried; it never stops the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, ip_address
from typing import cast

import ifaddr
from zeroconf import IPVersion

# `zeroconf` re-exports it but leaves it out of __all__, which mypy --strict holds against it.
from zeroconf._services.info import AddressResolverIPv4
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from gateway.config import MdnsConfig
from gateway.mdns.interfaces import InterfaceAddress, alias, answer_address, choose
from gateway.mdns.wire import MDNS_PORT, address_answer, parse_address_query
from gateway.model import JsonValue

LOG = logging.getLogger("gateway.mdns")

MDNS_GROUP = "224.0.0.251"
ADDRESS_POLL_S = 5.0
# How long to listen for another host answering for our name before taking it (RFC 6762 §8.1
# probes for 750 ms).
NAME_PROBE_MS = 1500
RETRY_CAP_S = 300.0
STOP_DEADLINE_S = 3.0
HTTP_SERVICE = "_enapter-gw-http._tcp.local."
MQTT_SERVICE = "_mqtt._tcp.local."
MQTTS_SERVICE = "_secure-mqtt._tcp.local."
# The instance name Enapter's own gateway publishes (its avahi http.service).
INSTANCE = "Enapter-GW"


@dataclass(frozen=True, slots=True)
class Advertisement:
    """What the services announce."""

    gateway_id: str
    version: str
    api_port: int
    api_path: str
    mqtt_port: int | None  # None: no broker of ours to announce (external mode)
    mqtts_port: int | None


def system_addresses() -> list[InterfaceAddress]:
    """Every address of every interface, as the OS lists them now."""
    found: list[InterfaceAddress] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            text = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            with contextlib.suppress(ValueError):
                found.append(InterfaceAddress(adapter.nice_name, ip_address(text), ip.network_prefix))
    return found


class LegacyUnicastAnswerer(asyncio.DatagramProtocol):
    """Answers one-shot (legacy unicast) A queries for the advertised name, from port 5353."""

    def __init__(self, name: str, chosen: Sequence[InterfaceAddress]) -> None:
        self._name = name.lower()
        self._chosen = chosen
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        host, port = addr[0], addr[1]
        # Queries from port 5353 are full mDNS queriers; zeroconf answers those.
        if port == MDNS_PORT or self._transport is None or not isinstance(host, str):
            return
        query = parse_address_query(data)
        if query is None or query.name != self._name:
            return
        try:
            querier = IPv4Address(host)
        except ValueError:
            return
        address = answer_address(querier, self._chosen)
        if address is not None:
            self._transport.sendto(address_answer(query, address), (host, port))

    def error_received(self, exc: Exception) -> None:
        LOG.debug("mDNS legacy-unicast answer not sent: %s", exc)


def _answer_socket(interfaces: Sequence[str]) -> socket.socket:
    """A UDP socket on the mDNS group and port, joined on each interface.

    Bound to the group address, not 0.0.0.0: it then gets only multicast queries and cannot take
    unicast packets meant for zeroconf's socket on the same port; replies still leave from port
    5353 with the interface's own source address (Linux picks it by route for a multicast bind).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((MDNS_GROUP, MDNS_PORT))
        for interface in interfaces:
            # struct ip_mreqn: by interface index, so an interface with two addresses joins once
            # (a second join of the same group on the same interface is EADDRINUSE).
            membership = struct.pack(
                "4s4si", socket.inet_aton(MDNS_GROUP), bytes(4), socket.if_nametoindex(interface)
            )
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass
class _Running:
    """One live advertisement: zeroconf, the answerer and what they announce."""

    zeroconf: AsyncZeroconf
    transport: asyncio.DatagramTransport | None = None
    name: str | None = None
    chosen: tuple[InterfaceAddress, ...] = ()
    services: list[AsyncServiceInfo] = field(default_factory=list)

    async def close(self) -> None:
        """Goodbye packets for every record, then every socket closed."""
        if self.transport is not None:
            self.transport.close()
        try:
            async with asyncio.timeout(STOP_DEADLINE_S):
                await self.zeroconf.async_close()  # unregisters: the goodbyes
        except TimeoutError:
            LOG.warning("mDNS: goodbye packets not sent within %.0f s", STOP_DEADLINE_S)


class MdnsAdvertiser:
    """Advertises `<hostname>.local` and the gateway's services on the chosen interfaces."""

    def __init__(
        self,
        config: MdnsConfig,
        advertisement: Advertisement,
        list_addresses: Callable[[], list[InterfaceAddress]] = system_addresses,
        poll_s: float = ADDRESS_POLL_S,
    ) -> None:
        self._config = config
        self._advertisement = advertisement
        self._list_addresses = list_addresses
        self._poll_s = poll_s
        self._running: _Running | None = None

    def status(self) -> dict[str, JsonValue]:
        """The name and addresses on the air right now (for `enapter-gateway status`)."""
        running = self._running
        name = None if running is None else running.name
        return {
            "hostname": f"{self._config.hostname}.local",
            "advertised_as": None if name is None else f"{name}.local",
            "alias_in_use": name is not None and name != self._config.hostname,
            "addresses": [] if running is None else [str(entry.address) for entry in running.chosen],
            "services": [] if running is None else [info.name for info in running.services],
        }

    async def run(self) -> None:
        """Advertise until cancelled, following address changes; goodbyes on the way out.

        A failed attempt (e.g. UDP 5353 held by a program that does not share it) is retried with
        a doubling delay up to RETRY_CAP_S, and logged as an ERROR once per different cause.
        """
        advertised: tuple[InterfaceAddress, ...] | None = None
        failures = 0
        last_error = ""
        try:
            while True:
                chosen = choose(self._list_addresses(), self._config.interfaces)
                delay = self._poll_s
                if chosen != advertised:
                    try:
                        advertised = await self._readvertise(chosen)
                        failures, last_error = 0, ""
                    except OSError as exc:
                        await self._withdraw()
                        advertised = None
                        failures += 1
                        delay = min(self._poll_s * 2**failures, RETRY_CAP_S)
                        level = logging.DEBUG if str(exc) == last_error else logging.ERROR
                        LOG.log(level, "mDNS: cannot advertise (%s); trying again in %.0f s", exc, delay)
                        last_error = str(exc)
                await asyncio.sleep(delay)
        finally:
            await self._withdraw()

    async def _readvertise(self, chosen: tuple[InterfaceAddress, ...]) -> tuple[InterfaceAddress, ...]:
        """Withdraw what is on the air and advertise `chosen`; returns what now stands."""
        await self._withdraw()
        if not any(entry.address.version == 4 for entry in chosen):
            where = ", ".join(self._config.interfaces) or "any LAN interface"
            LOG.warning("mDNS: no IPv4 address on %s; waiting for one", where)
        else:
            await self._advertise(chosen)
        return chosen

    async def _withdraw(self) -> None:
        running, self._running = self._running, None
        if running is not None:
            await running.close()
            if running.name is not None:
                LOG.info("mDNS: %s.local withdrawn", running.name)

    async def _advertise(self, chosen: tuple[InterfaceAddress, ...]) -> None:
        ipv4 = [str(entry.address) for entry in chosen if entry.address.version == 4]
        running = _Running(AsyncZeroconf(interfaces=ipv4, ip_version=IPVersion.V4Only), chosen=chosen)
        self._running = running
        name = await self._free_name(running.zeroconf, {str(entry.address) for entry in chosen})
        loop = asyncio.get_running_loop()
        interfaces = sorted({entry.interface for entry in chosen if entry.address.version == 4})
        running.transport, _ = await loop.create_datagram_endpoint(
            lambda: LegacyUnicastAnswerer(f"{name}.local", chosen), sock=_answer_socket(interfaces)
        )
        infos = self._service_infos(name, chosen)
        # Each registration probes its instance name for about a second: all at once, not in turn.
        announced = [
            await running.zeroconf.async_register_service(info, allow_name_change=True) for info in infos
        ]
        running.services = infos
        await asyncio.gather(*announced)
        running.name = name
        LOG.info(
            "mDNS: advertising %s.local at %s with %s",
            name,
            ", ".join(ipv4),
            ", ".join(info.type.removesuffix(".local.") for info in running.services),
        )

    async def _free_name(self, zeroconf: AsyncZeroconf, ours: set[str]) -> str:
        """Our host name, or our alias when another host already answers for it."""
        wanted = self._config.hostname
        fallback = alias(wanted, self._advertisement.gateway_id)
        for candidate in (wanted, fallback):
            resolver = AddressResolverIPv4(f"{candidate}.local.")
            if not await resolver.async_request(zeroconf.zeroconf, NAME_PROBE_MS):
                return candidate
            others = sorted(set(resolver.parsed_addresses()) - ours)
            if not others:
                return candidate  # e.g. avahi on this same host publishing our own addresses
            LOG.error(
                "mDNS: %s.local is already taken by %s on this network; NOT advertising it%s",
                candidate,
                ", ".join(others),
                f", advertising {fallback}.local instead" if candidate == wanted else "",
            )
        LOG.error("mDNS: %s.local is taken as well; advertising it anyway", fallback)
        return fallback

    def _service_infos(self, name: str, chosen: Sequence[InterfaceAddress]) -> list[AsyncServiceInfo]:
        ad = self._advertisement
        common = {"gateway_id": ad.gateway_id, "version": ad.version}
        wanted: list[tuple[str, int, dict[str, str]]] = [
            (HTTP_SERVICE, ad.api_port, {"path": ad.api_path, **common})
        ]
        if ad.mqtt_port is not None:
            wanted.append((MQTT_SERVICE, ad.mqtt_port, common))
        if ad.mqtts_port is not None:
            wanted.append((MQTTS_SERVICE, ad.mqtts_port, common))
        addresses = [entry.address.packed for entry in chosen]
        return [
            AsyncServiceInfo(
                service,
                f"{INSTANCE}.{service}",
                port=port,
                properties=dict(txt),
                server=f"{name}.local.",
                addresses=addresses,
            )
            for service, port, txt in wanted
        ]
