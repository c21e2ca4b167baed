"""Tests for gateway.mqtt.pki: the certificates it makes, the CRL, renewal checks, and real TLS handshakes."""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.mqtt import pki
from gateway.mqtt.pki import KeyPair, PkiError, Revocation, ServerNames

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
HW = "V" + "0123456789ABCDEF" * 2
NAMES = ServerNames.of(
    ["enapter-gateway.local", "gw.example", "localhost"], ["192.168.1.10", "127.0.0.1", "fe80::1"]
)
HANDSHAKE_TIMEOUT = 5.0


# One CA for the module: key generation is cheap, but sharing keeps the tests about behaviour.
@pytest.fixture(scope="module")
def ca() -> KeyPair:
    return pki.create_authority("Test Gateway CA", NOW)


@pytest.fixture(scope="module")
def other_ca() -> KeyPair:
    return pki.create_authority("Test Gateway CA", NOW)  # same name, different key


def cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def crl_of(pem: str) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl(pem.encode())


# --- the authority ---------------------------------------------------------------------------------


def test_authority_is_a_self_signed_ca(ca: KeyPair) -> None:
    certificate = cert(ca.certificate_pem)
    certificate.verify_directly_issued_by(certificate)
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length == 0
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign
    assert usage.value.crl_sign
    assert usage.value.digital_signature
    certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Test Gateway CA"
    assert certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "enapter-gateway"
    assert certificate.not_valid_before_utc == NOW - pki.BACKDATE
    assert certificate.not_valid_after_utc == NOW + pki.CA_VALIDITY


def test_authority_key_is_unencrypted_pkcs8_p256(ca: KeyPair) -> None:
    assert ca.key_pem.startswith("-----BEGIN PRIVATE KEY-----")
    key = serialization.load_pem_private_key(ca.key_pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    pki.check_authority(ca)


def test_check_authority_rejects_a_key_that_does_not_match(ca: KeyPair, other_ca: KeyPair) -> None:
    with pytest.raises(PkiError, match="does not match"):
        pki.check_authority(KeyPair(key_pem=other_ca.key_pem, certificate_pem=ca.certificate_pem))


def test_check_authority_rejects_a_leaf_certificate(ca: KeyPair) -> None:
    device = pki.issue_device(ca, HW, NOW)
    with pytest.raises(PkiError, match="not a CA"):
        pki.check_authority(device.pair)


@pytest.mark.parametrize(
    "broken",
    [
        lambda ca: KeyPair(key_pem="garbage", certificate_pem=ca.certificate_pem),
        lambda ca: KeyPair(key_pem=ca.key_pem, certificate_pem="garbage"),
        lambda ca: KeyPair(key_pem=ca.certificate_pem, certificate_pem=ca.key_pem),
    ],
)
def test_check_authority_rejects_unparseable_pems(ca: KeyPair, broken: Callable[[KeyPair], KeyPair]) -> None:
    pair = broken(ca)
    with pytest.raises(PkiError):
        pki.check_authority(pair)
    # Every function that signs refuses the same pair the same way.
    with pytest.raises(PkiError):
        pki.issue_device(pair, HW, NOW)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        pki.create_authority("CA", datetime(2025, 1, 1))  # noqa: DTZ001 - the point of the test


# --- device certificates ---------------------------------------------------------------------------


def test_device_certificate_is_a_client_certificate_for_the_hardware_id(ca: KeyPair) -> None:
    issued = pki.issue_device(ca, HW, NOW)
    certificate = cert(issued.pair.certificate_pem)
    certificate.verify_directly_issued_by(cert(ca.certificate_pem))
    assert certificate.subject.rfc4514_string() == f"CN={HW}"
    eku = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not usage.value.key_cert_sign
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert not constraints.value.ca
    aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = cert(ca.certificate_pem).extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert issued.serial == certificate.serial_number
    assert issued.not_after == certificate.not_valid_after_utc == NOW + pki.DEVICE_VALIDITY
    assert certificate.not_valid_before_utc == NOW - pki.BACKDATE
    key = serialization.load_pem_private_key(issued.pair.key_pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key() == certificate.public_key()


def test_device_serials_differ(ca: KeyPair) -> None:
    first = pki.issue_device(ca, HW, NOW)
    second = pki.issue_device(ca, HW, NOW)
    assert first.serial != second.serial
    assert first.pair.key_pem != second.pair.key_pem


def test_device_validity_is_capped_at_the_authority_expiry(ca: KeyPair) -> None:
    late = NOW + pki.CA_VALIDITY - timedelta(days=100)
    issued = pki.issue_device(ca, HW, late)
    assert issued.not_after == cert(ca.certificate_pem).not_valid_after_utc
    assert cert(issued.pair.certificate_pem).not_valid_before_utc == late - pki.BACKDATE


def test_an_expired_authority_issues_nothing(ca: KeyPair) -> None:
    with pytest.raises(PkiError, match="expired"):
        pki.issue_device(ca, HW, NOW + pki.CA_VALIDITY + timedelta(days=1))


def test_now_in_another_zone_means_the_same_instant(ca: KeyPair) -> None:
    tokyo = NOW.astimezone(timezone(timedelta(hours=9)))
    assert pki.issue_device(ca, HW, tokyo).not_after == NOW + pki.DEVICE_VALIDITY


@pytest.mark.parametrize("hardware_id", ["", "x" * 65, "a\x00b"])
def test_hardware_ids_that_cannot_be_a_cn_are_refused(ca: KeyPair, hardware_id: str) -> None:
    with pytest.raises(ValueError, match="hardware id"):
        pki.issue_device(ca, hardware_id, NOW)


def test_serial_and_common_name_round_trip(ca: KeyPair) -> None:
    issued = pki.issue_device(ca, "ucm-ü 1", NOW)
    assert pki.certificate_serial(issued.pair.certificate_pem) == issued.serial
    assert pki.certificate_common_name(issued.pair.certificate_pem) == "ucm-ü 1"
    assert pki.certificate_common_name(ca.certificate_pem) == "Test Gateway CA"


@pytest.mark.parametrize(
    "garbage", ["", "garbage", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"]
)
def test_serial_and_common_name_raise_on_garbage(garbage: str) -> None:
    with pytest.raises(PkiError):
        pki.certificate_serial(garbage)
    with pytest.raises(PkiError):
        pki.certificate_common_name(garbage)


# --- the server certificate ------------------------------------------------------------------------


def test_server_names_are_normalised() -> None:
    names = ServerNames.of(
        ["LocalHost", "gw.example", "localhost "], ["::0:1", "127.0.0.1", "10.0.0.2", "fe80::1%eth0"]
    )
    assert names == ServerNames(("gw.example", "localhost"), ("10.0.0.2", "127.0.0.1", "::1", "fe80::1"))
    with pytest.raises(ValueError, match="DNS name"):
        ServerNames.of([""], [])
    with pytest.raises(ValueError, match="DNS name"):
        ServerNames.of(["ünï.example"], [])
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        ServerNames.of([], ["gw.example"])


def test_server_certificate_covers_exactly_the_names(ca: KeyPair) -> None:
    pair = pki.issue_server(ca, NAMES, NOW)
    certificate = cert(pair.certificate_pem)
    certificate.verify_directly_issued_by(cert(ca.certificate_pem))
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == [
        "enapter-gateway.local",
        "gw.example",
        "localhost",
    ]
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("192.168.1.10"),
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("fe80::1"),
    }
    assert certificate.subject.rfc4514_string() == "CN=enapter-gateway.local"
    eku = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert usage.value.key_agreement
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert not constraints.value.ca
    certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    assert certificate.not_valid_before_utc == NOW - pki.BACKDATE
    assert certificate.not_valid_after_utc == NOW + pki.SERVER_VALIDITY


def test_server_certificate_without_dns_names(ca: KeyPair) -> None:
    pair = pki.issue_server(ca, ServerNames.of([], ["10.1.2.3"]), NOW)
    assert pki.certificate_common_name(pair.certificate_pem) == "enapter-gateway"
    assert pki.server_needs_renewal(pair.certificate_pem, ca, ServerNames.of([], ["10.1.2.3"]), NOW) is None


def test_server_validity_is_capped_at_the_authority_expiry(ca: KeyPair) -> None:
    late = NOW + pki.CA_VALIDITY - timedelta(days=10)
    pair = pki.issue_server(ca, NAMES, late)
    assert cert(pair.certificate_pem).not_valid_after_utc == NOW + pki.CA_VALIDITY


def test_fresh_server_certificate_needs_no_renewal(ca: KeyPair) -> None:
    pair = pki.issue_server(ca, NAMES, NOW)
    assert pki.server_needs_renewal(pair.certificate_pem, ca, NAMES, NOW) is None
    # Equal names given in another order and case are the same names.
    shuffled = ServerNames(
        ("LOCALHOST", "gw.example", "enapter-gateway.local"), tuple(reversed(NAMES.ip_addresses))
    )
    assert pki.server_needs_renewal(pair.certificate_pem, ca, shuffled, NOW + timedelta(days=300)) is None


@pytest.mark.parametrize(
    "names",
    [
        ServerNames.of(NAMES.dns_names, [*NAMES.ip_addresses, "192.168.1.11"]),
        ServerNames.of(NAMES.dns_names, ["127.0.0.1", "fe80::1"]),
        ServerNames.of(["localhost"], NAMES.ip_addresses),
        ServerNames.of([], []),
    ],
)
def test_server_certificate_is_renewed_when_names_change(ca: KeyPair, names: ServerNames) -> None:
    pair = pki.issue_server(ca, NAMES, NOW)
    assert pki.server_needs_renewal(pair.certificate_pem, ca, names, NOW) == "names changed"


def test_server_certificate_is_renewed_before_it_expires(ca: KeyPair) -> None:
    pair = pki.issue_server(ca, NAMES, NOW)
    later = NOW + timedelta(days=340)
    expiry = (NOW + pki.SERVER_VALIDITY).date().isoformat()
    assert pki.server_needs_renewal(pair.certificate_pem, ca, NAMES, later) == f"expires {expiry}"
    assert pki.server_needs_renewal(pair.certificate_pem, ca, NAMES, NOW + timedelta(days=334)) is None


def test_server_certificate_from_another_authority_is_renewed(ca: KeyPair, other_ca: KeyPair) -> None:
    pair = pki.issue_server(other_ca, NAMES, NOW)
    assert pki.server_needs_renewal(pair.certificate_pem, ca, NAMES, NOW) == "not signed by this authority"


def test_server_certificate_from_the_future_is_renewed(ca: KeyPair) -> None:
    pair = pki.issue_server(ca, NAMES, NOW)
    assert (
        pki.server_needs_renewal(pair.certificate_pem, ca, NAMES, NOW - timedelta(hours=1)) == "not yet valid"
    )


@pytest.mark.parametrize(
    "garbage", ["", "garbage", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"]
)
def test_unreadable_server_certificate_is_renewed(ca: KeyPair, garbage: str) -> None:
    assert pki.server_needs_renewal(garbage, ca, NAMES, NOW) == "unreadable"


# --- the CRL ---------------------------------------------------------------------------------------


def test_crl_lists_exactly_the_revoked_serials(ca: KeyPair) -> None:
    revoked = [
        Revocation(serial=12345, revoked_at=NOW - timedelta(days=3)),
        Revocation(serial=pki.issue_device(ca, HW, NOW).serial, revoked_at=NOW - timedelta(hours=1)),
        Revocation(serial=12345, revoked_at=NOW - timedelta(days=1)),  # a repeat: the earlier date wins
    ]
    crl = crl_of(pki.build_crl(ca, revoked, NOW))
    ca_certificate = cert(ca.certificate_pem)
    assert crl.is_signature_valid(ca_certificate.public_key())  # type: ignore[arg-type]
    assert crl.issuer == ca_certificate.subject
    assert {entry.serial_number: entry.revocation_date_utc for entry in crl} == {
        12345: NOW - timedelta(days=3),
        revoked[1].serial: NOW - timedelta(hours=1),
    }
    assert crl.last_update_utc == NOW
    assert crl.next_update_utc == NOW + pki.CRL_VALIDITY
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number == int(NOW.timestamp())
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca_certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest


def test_empty_crl_is_valid(ca: KeyPair) -> None:
    crl = crl_of(pki.build_crl(ca, [], NOW))
    assert crl.is_signature_valid(cert(ca.certificate_pem).public_key())  # type: ignore[arg-type]
    assert len(crl) == 0
    assert not pki.crl_needs_renewal(pki.build_crl(ca, [], NOW), ca, NOW)


def test_crl_numbers_grow() -> None:
    ca = pki.create_authority("CA", NOW)
    first = crl_of(pki.build_crl(ca, [], NOW)).extensions.get_extension_for_class(x509.CRLNumber)
    second = crl_of(pki.build_crl(ca, [], NOW + timedelta(days=16))).extensions.get_extension_for_class(
        x509.CRLNumber
    )
    assert second.value.crl_number > first.value.crl_number


def test_crl_renewal(ca: KeyPair, other_ca: KeyPair) -> None:
    crl = pki.build_crl(ca, [Revocation(7, NOW)], NOW)
    assert not pki.crl_needs_renewal(crl, ca, NOW)
    assert not pki.crl_needs_renewal(crl, ca, NOW + timedelta(days=14))
    assert pki.crl_needs_renewal(crl, ca, NOW + timedelta(days=20))
    assert pki.crl_needs_renewal(crl, ca, NOW - timedelta(hours=1))  # not valid yet
    assert pki.crl_needs_renewal(crl, other_ca, NOW)  # same subject, different key
    assert pki.crl_needs_renewal("garbage", ca, NOW)
    assert pki.crl_needs_renewal(ca.certificate_pem, ca, NOW)


def test_revocation_dates_must_be_aware(ca: KeyPair) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        pki.build_crl(ca, [Revocation(7, datetime(2025, 1, 1))], NOW)  # noqa: DTZ001 - the point of the test


# --- real TLS handshakes, with the client context the Enapter SDK builds ----------------------------


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def server_context(tmp_path: Path, ca: KeyPair, crl_pem: str | None = None) -> ssl.SSLContext:
    """What Mosquitto does with `cafile`, `require_certificate true` and `crlfile`."""
    server = pki.issue_server(ca, NAMES, datetime.now(UTC))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(
        write(tmp_path / "server.crt", server.certificate_pem), write(tmp_path / "server.key", server.key_pem)
    )
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=ca.certificate_pem)
    if crl_pem is not None:
        # `cadata` takes only certificates; a CRL is loaded from a file, as Mosquitto does.
        context.load_verify_locations(cafile=write(tmp_path / "ca.crl", crl_pem))
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return context


def sdk_client_context(tmp_path: Path, ca: KeyPair, device: KeyPair) -> ssl.SSLContext:
    """A copy of `enapter.mqtt.api.client.Client._new_tls_context` (enapter 0.25.0)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = False
    context.load_verify_locations(None, None, ca.certificate_pem)
    context.load_cert_chain(
        write(tmp_path / "device.crt", device.certificate_pem),
        keyfile=write(tmp_path / "device.key", device.key_pem),
    )
    return context


@pytest.fixture
def socket_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    left, right = socket.socketpair()
    left.settimeout(HANDSHAKE_TIMEOUT)
    right.settimeout(HANDSHAKE_TIMEOUT)
    with left, right:
        yield left, right


def serve_once(context: ssl.SSLContext, raw: socket.socket) -> str:
    """Handshake as the server, echo one byte, return the client certificate's CN."""
    with context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False) as tls:
        tls.do_handshake()
        peer = tls.getpeercert(binary_form=True)
        tls.sendall(tls.recv(1))
    assert peer is not None
    return pki.certificate_common_name(
        x509.load_der_x509_certificate(peer).public_bytes(serialization.Encoding.PEM).decode()
    )


def echo(tls: ssl.SSLSocket) -> bytes:
    """Handshake as the client and send one byte; what comes back (b"" if the server hung up)."""
    tls.do_handshake()
    assert tls.getpeercert()  # the server's chain to our CA was verified
    tls.sendall(b"x")
    return tls.recv(1)


def accepted_common_name(
    server: ssl.SSLContext, client: ssl.SSLContext, socket_pair: tuple[socket.socket, socket.socket]
) -> str:
    """Run a handshake that must succeed; the client CN the server saw."""
    server_raw, client_raw = socket_pair
    with ThreadPoolExecutor(max_workers=1) as pool:
        served = pool.submit(serve_once, server, server_raw)
        with client.wrap_socket(client_raw, do_handshake_on_connect=False) as tls:
            assert echo(tls) == b"x"
        return served.result(timeout=HANDSHAKE_TIMEOUT)


def test_sdk_client_handshakes_with_a_device_certificate(
    tmp_path: Path, ca: KeyPair, socket_pair: tuple[socket.socket, socket.socket]
) -> None:
    device = pki.issue_device(ca, HW, datetime.now(UTC))
    server = server_context(tmp_path, ca)
    client = sdk_client_context(tmp_path, ca, device.pair)
    assert accepted_common_name(server, client, socket_pair) == HW


def test_revoked_device_certificate_is_refused(
    tmp_path: Path, ca: KeyPair, socket_pair: tuple[socket.socket, socket.socket]
) -> None:
    now = datetime.now(UTC)
    device = pki.issue_device(ca, HW, now)
    crl = pki.build_crl(ca, [Revocation(12345, now), Revocation(device.serial, now)], now)
    server = server_context(tmp_path, ca, crl)
    client = sdk_client_context(tmp_path, ca, device.pair)
    server_raw, client_raw = socket_pair
    with ThreadPoolExecutor(max_workers=1) as pool:
        served = pool.submit(serve_once, server, server_raw)
        # In TLS 1.3 the client finishes its side before the server has checked the client
        # certificate; the refusal arrives on the first read, as an alert naming the reason or,
        # when the server's close wins the race, as an EOF. The server's side below says why.
        with (
            client.wrap_socket(client_raw, do_handshake_on_connect=False) as tls,
            pytest.raises(ssl.SSLError, match=r"revoked|EOF occurred"),
        ):
            echo(tls)
        with pytest.raises(ssl.SSLCertVerificationError, match="revoked"):
            served.result(timeout=HANDSHAKE_TIMEOUT)


def test_device_not_on_the_crl_still_connects(
    tmp_path: Path, ca: KeyPair, socket_pair: tuple[socket.socket, socket.socket]
) -> None:
    now = datetime.now(UTC)
    device = pki.issue_device(ca, HW, now)
    crl = pki.build_crl(ca, [Revocation(device.serial + 1, now)], now)
    server = server_context(tmp_path, ca, crl)
    client = sdk_client_context(tmp_path, ca, device.pair)
    assert accepted_common_name(server, client, socket_pair) == HW
