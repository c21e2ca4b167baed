"""The gateway's CA on real files: created once, reloaded, guarded, and its renewals."""

from __future__ import annotations

import asyncio
import contextlib
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from gateway.mqtt import pki
from gateway.mqtt.authority import Authority, keep_fresh, local_addresses, server_names
from gateway.mqtt.broker import BrokerUnavailableError
from gateway.store.store import RevokedCertificate

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
NAMES = pki.ServerNames.of(["enapter-gateway.local", "localhost"], ["127.0.0.1"])


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_ca_is_created_once_privately_and_reloaded(tmp_path: Path) -> None:
    directory = tmp_path / "pki"
    first = Authority.open(directory, NOW)
    assert mode(directory) == 0o700
    assert mode(directory / "ca.key") == 0o600
    assert mode(directory / "ca.crt") == 0o600
    again = Authority.open(directory, NOW + timedelta(days=1))
    assert again.ca == first.ca


def test_a_ca_key_that_does_not_match_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "pki"
    Authority.open(directory, NOW)
    other = pki.create_authority("other", NOW)
    (directory / "ca.key").write_text(other.key_pem)
    with pytest.raises(pki.PkiError):
        Authority.open(directory, NOW)


def test_half_a_ca_is_refused_not_replaced(tmp_path: Path) -> None:
    directory = tmp_path / "pki"
    Authority.open(directory, NOW)
    (directory / "ca.key").unlink()
    # Silently making a new CA would orphan every device certificate issued so far.
    with pytest.raises(pki.PkiError):
        Authority.open(directory, NOW)


def test_the_server_certificate_is_renewed_only_when_due(tmp_path: Path) -> None:
    authority = Authority.open(tmp_path / "pki", NOW)
    assert authority.ensure_server(NAMES, NOW)
    assert mode(authority.files.server_key) == 0o600
    first = authority.files.server_certificate.read_text()
    assert not authority.ensure_server(NAMES, NOW + timedelta(days=1))
    assert authority.files.server_certificate.read_text() == first
    moved = pki.ServerNames.of(NAMES.dns_names, ["127.0.0.1", "192.168.7.20"])
    assert authority.ensure_server(moved, NOW + timedelta(days=1))
    reissued = x509.load_pem_x509_certificate(authority.files.server_certificate.read_bytes())
    addresses = reissued.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in addresses.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "192.168.7.20"}
    assert authority.ensure_server(moved, NOW + timedelta(days=350))


def test_the_crl_lists_what_the_store_revoked_and_is_kept_fresh(tmp_path: Path) -> None:
    authority = Authority.open(tmp_path / "pki", NOW)
    assert authority.crl_due(NOW)
    revoked = [RevokedCertificate(serial=2**150 + 1, revoked_at=NOW.timestamp())]
    authority.write_crl(revoked, NOW)
    assert mode(authority.files.crl) == 0o600
    crl = x509.load_pem_x509_crl(authority.files.crl.read_bytes())
    assert [entry.serial_number for entry in crl] == [2**150 + 1]
    assert not authority.crl_due(NOW + timedelta(days=1))
    assert authority.crl_due(NOW + timedelta(days=20))


def test_server_names_cover_the_mdns_name_the_configured_ones_and_the_addresses() -> None:
    names = server_names("my-gw", "10.1.2.3", ["gw.example"])
    assert {"my-gw.local", "localhost", "gw.example"} <= set(names.dns_names)
    assert "10.1.2.3" in names.ip_addresses
    assert set(local_addresses()) <= set(names.ip_addresses)
    assert "127.0.0.1" in names.ip_addresses
    assert "broker.example" in server_names("gw", "broker.example", []).dns_names


async def test_keep_fresh_reissues_on_an_address_change_and_reloads_the_broker(tmp_path: Path) -> None:
    authority = Authority.open(tmp_path / "pki", NOW)
    authority.ensure_server(NAMES, NOW)
    authority.write_crl([], NOW)
    current = [NAMES]
    reloads: list[str] = []
    reloaded = asyncio.Event()

    async def reload() -> None:
        reloads.append(authority.files.server_certificate.read_text())
        if len(reloads) == 1:
            raise BrokerUnavailableError("restarting")  # a broker that is down must not end the loop
        reloaded.set()

    async def revoked(now: float) -> list[RevokedCertificate]:
        return []

    task = asyncio.create_task(
        keep_fresh(authority, lambda: current[0], revoked, reload, NOW.timestamp, interval=0.01)
    )
    try:
        await asyncio.sleep(0.1)
        assert reloads == []  # nothing changed, nothing reloaded
        current[0] = pki.ServerNames.of(NAMES.dns_names, ["127.0.0.1", "10.9.8.7"])
        await asyncio.sleep(0.05)
        current[0] = pki.ServerNames.of(NAMES.dns_names, ["127.0.0.1", "10.9.8.6"])
        async with asyncio.timeout(5):
            await reloaded.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    first, second = reloads
    for certificate, address in ((first, "10.9.8.7"), (second, "10.9.8.6")):
        reissued = x509.load_pem_x509_certificate(certificate.encode())
        names = reissued.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert address in {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
