"""The gateway's certificate authority on disk, and keeping the MQTTS listener's files fresh.

Files in `<state_dir>/pki/`, all mode 0600 in a 0700 directory: `ca.key` and `ca.crt` (made on first
start, kept for good: every device certificate hangs on them), `server.key` and `server.crt` (the
MQTTS listener's, reissued before expiry and whenever the gateway's names or addresses change),
and `crl.pem` (revoked device certificates; Mosquitto refuses them at the TLS handshake). Device
private keys are never written anywhere: they are handed to the device owner once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

import ifaddr

from gateway.mqtt import pki
from gateway.mqtt.broker import BrokerUnavailableError, TlsFiles
from gateway.store.store import RevokedCertificate

LOG = logging.getLogger("gateway.pki")

CA_COMMON_NAME = "enapter-gateway local CA"
RENEWAL_CHECK_S = 60.0
_HOST_NAME = re.compile(
    r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*", re.ASCII
)


def _write_private(path: Path, text: str) -> None:
    """Replace `path` atomically with a 0600 file, so Mosquitto never reads half a certificate."""
    temporary = path.with_name(path.name + ".new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)


class Authority:
    """The CA and the MQTTS listener's files; every method is quick, blocking file I/O."""

    def __init__(self, directory: Path, ca: pki.KeyPair) -> None:
        self.directory = directory
        self.ca = ca
        self.files = TlsFiles(
            ca_certificate=directory / "ca.crt",
            server_certificate=directory / "server.crt",
            server_key=directory / "server.key",
            crl=directory / "crl.pem",
        )

    @classmethod
    def open(cls, directory: Path, now: datetime) -> Authority:
        """Load the CA from `directory`, creating it on first start; PkiError if it is unusable."""
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        key_file, certificate_file = directory / "ca.key", directory / "ca.crt"
        if key_file.exists() or certificate_file.exists():
            try:
                ca = pki.KeyPair(key_pem=key_file.read_text(), certificate_pem=certificate_file.read_text())
            except OSError as exc:
                raise pki.PkiError(f"cannot read the gateway CA in {directory}: {exc.strerror}") from None
            pki.check_authority(ca)
            os.chmod(key_file, 0o600)
        else:
            ca = pki.create_authority(CA_COMMON_NAME, now)
            _write_private(key_file, ca.key_pem)
            _write_private(certificate_file, ca.certificate_pem)
            LOG.info("created the gateway's certificate authority in %s", directory)
        return cls(directory, ca)

    def ensure_server(self, names: pki.ServerNames, now: datetime) -> bool:
        """(Re)issue the server certificate if it is missing, expiring or lacks a name; True if so."""
        try:
            current = self.files.server_certificate.read_text()
        except FileNotFoundError:
            reason: str | None = "none yet"
        else:
            reason = pki.server_needs_renewal(current, self.ca, names, now)
        if reason is None:
            return False
        server = pki.issue_server(self.ca, names, now)
        _write_private(self.files.server_key, server.key_pem)
        _write_private(self.files.server_certificate, server.certificate_pem)
        shown = ", ".join((*names.dns_names, *names.ip_addresses))
        LOG.info("issued the MQTTS server certificate (%s) for %s", reason, shown)
        return True

    def crl_due(self, now: datetime) -> bool:
        """True when the CRL is missing or close to its next update (OpenSSL rejects a stale one)."""
        try:
            current = self.files.crl.read_text()
        except FileNotFoundError:
            return True
        return pki.crl_needs_renewal(current, self.ca, now)

    def write_crl(self, revoked: Iterable[RevokedCertificate], now: datetime) -> None:
        """Sign and write the CRL listing `revoked`."""
        entries = [
            pki.Revocation(serial=item.serial, revoked_at=datetime.fromtimestamp(item.revoked_at, UTC))
            for item in revoked
        ]
        _write_private(self.files.crl, pki.build_crl(self.ca, entries, now))

    def issue_device(self, hardware_id: str, now: datetime) -> pki.IssuedCertificate:
        """A new client certificate and key for the device (never written to disk)."""
        return pki.issue_device(self.ca, hardware_id, now)


def local_addresses() -> list[str]:
    """The gateway's IPv4 addresses and global IPv6 addresses, on every interface."""
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                found.append(ip.ip)
            elif not ipaddress.IPv6Address(ip.ip[0]).is_link_local:
                # Link-local IPv6 needs a zone id and changes with the interface: not certifiable.
                found.append(ip.ip[0])
    return found


def server_names(mdns_hostname: str, advertised_host: str, extra_hostnames: Iterable[str]) -> pki.ServerNames:
    """Every name and address devices may use for the broker (read from the system now)."""
    dns = [f"{mdns_hostname}.local", "localhost", *extra_hostnames]
    own = socket.gethostname().lower()
    if _HOST_NAME.fullmatch(own):  # e.g. "raspberrypi"; not "my_pi" or a non-ASCII name
        dns.append(own)
    addresses = local_addresses()
    if advertised_host:
        try:
            ipaddress.ip_address(advertised_host)
        except ValueError:
            dns.append(advertised_host)
        else:
            addresses.append(advertised_host)
    return pki.ServerNames.of(dns, addresses)


async def keep_fresh(
    authority: Authority,
    names: Callable[[], pki.ServerNames],
    revoked: Callable[[float], Awaitable[list[RevokedCertificate]]],
    reload: Callable[[], Awaitable[None]],
    clock: Callable[[], float],
    interval: float = RENEWAL_CHECK_S,
) -> None:
    """Reissue the server certificate and re-sign the CRL when due, then have Mosquitto reload."""
    while True:
        await asyncio.sleep(interval)
        now = datetime.fromtimestamp(clock(), UTC)
        changed = authority.ensure_server(names(), now)
        if authority.crl_due(now):
            authority.write_crl(await revoked(clock()), now)
            changed = True
        if changed:
            try:
                await reload()
            except BrokerUnavailableError as exc:
                # The files are written; a broker that is restarting reads them when it starts.
                LOG.warning("mosquitto did not reload the renewed certificates: %s", exc)
