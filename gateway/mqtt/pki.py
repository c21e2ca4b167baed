"""The gateway's own certificate authority: CA, MQTTS server certificate, device certificates, CRL.

Pure: every function takes and returns PEM text; the caller reads and writes the files and supplies
`now`. Keys come from the OS RNG. The shapes follow what the broker and the devices check:

* Mosquitto 2.0.11 listens with `require_certificate true`, `use_identity_as_username true` and a
  `crlfile`, so a device's username is the CN of its certificate, and OpenSSL checks every client
  certificate against the CRL (which must therefore always exist and be current: an expired CRL
  makes OpenSSL refuse every client).
* The Enapter SDK client uses `ssl.PROTOCOL_TLS_CLIENT` with `check_hostname=False`, so it only
  verifies the chain to our CA; the SANs still matter for clients that do check the host name.

Extensions follow RFC 5280 closely enough for OpenSSL's `X509_V_FLAG_X509_STRICT` (critical basic
constraints, SKI on the CA, AKI on everything the CA signs).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = timedelta(days=365 * 20)
SERVER_VALIDITY = timedelta(days=365)
DEVICE_VALIDITY = timedelta(days=365 * 10)
# Renew the server certificate when less than this remains.
SERVER_RENEW_BEFORE = timedelta(days=30)
# A CRL's next_update is now + CRL_VALIDITY; it is re-signed when less than CRL_RENEW_BEFORE remains.
CRL_VALIDITY = timedelta(days=30)
CRL_RENEW_BEFORE = timedelta(days=15)
# not_valid_before = now - BACKDATE, so devices whose clock is a little behind accept fresh certificates.
BACKDATE = timedelta(minutes=5)

ORGANIZATION = "enapter-gateway"
# Server certificate CN when there is no DNS name to use (X.520 ub-common-name is 64 characters).
DEFAULT_SERVER_COMMON_NAME = "enapter-gateway"
MAX_COMMON_NAME_LENGTH = 64

_HASH = hashes.SHA256()

_PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class PkiError(Exception):
    """A PEM that cannot be used (not parseable, wrong kind, key does not match...)."""


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A private key and its certificate, both as PEM text.

    Keys made here are EC P-256 in unencrypted PKCS#8 (`-----BEGIN PRIVATE KEY-----`).
    """

    key_pem: str
    certificate_pem: str


@dataclass(frozen=True, slots=True)
class ServerNames:
    """The DNS names and IP addresses the MQTTS server certificate must cover.

    Build it with `ServerNames.of`, which normalises, so two equal sets of names compare equal.
    """

    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]

    @classmethod
    def of(cls, dns_names: Iterable[str], ip_addresses: Iterable[str]) -> ServerNames:
        """Normalise: DNS names stripped, lower-cased, deduplicated and sorted; IP addresses parsed,
        stripped of any IPv6 zone (a certificate cannot carry one), deduplicated and sorted (IPv4
        first, then numerically), in their canonical text form.

        Raises ValueError for an empty or non-ASCII DNS name (IDNs must be given as A-labels) and
        for a string that is not an IP address.
        """
        dns: set[str] = set()
        for name in dns_names:
            normalised = name.strip().lower()
            if not normalised or not normalised.isascii():
                raise ValueError(f"not a usable DNS name: {name!r}")
            dns.add(normalised)
        ips = {_plain_ip(ipaddress.ip_address(address.strip())) for address in ip_addresses}
        ordered_ips = sorted(ips, key=lambda ip: (ip.version, int(ip)))
        return cls(tuple(sorted(dns)), tuple(str(ip) for ip in ordered_ips))


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A device certificate just made, with what the caller records about it."""

    pair: KeyPair
    serial: int
    not_after: datetime  # aware UTC, as written in the certificate (whole seconds)


@dataclass(frozen=True, slots=True)
class Revocation:
    """One revoked certificate, for the CRL."""

    serial: int
    revoked_at: datetime  # aware UTC


def create_authority(common_name: str, now: datetime) -> KeyPair:
    """Make a self-signed CA (EC P-256, SHA-256), valid from `now - BACKDATE` for CA_VALIDITY.

    path_length=0: the CA signs only end-entity certificates. Raises ValueError for a common name
    that is empty or longer than 64 characters, or for a naive `now`.
    """
    now = _utc(now)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        ]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            _key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, _HASH)
    )
    return KeyPair(key_pem=_key_pem(key), certificate_pem=_certificate_pem(certificate))


def issue_server(authority: KeyPair, names: ServerNames, now: datetime) -> KeyPair:
    """Make the MQTTS server certificate for `names`, signed by `authority`.

    CN is the first DNS name (or DEFAULT_SERVER_COMMON_NAME when there is none or it is too long
    for a CN); the SAN lists every DNS name and IP address (no SAN at all when `names` is empty,
    since an empty SAN is invalid). Valid for SERVER_VALIDITY, never past the CA's own expiry.
    Raises PkiError for an unusable or expired authority.
    """
    now = _utc(now)
    names = ServerNames.of(names.dns_names, names.ip_addresses)
    ca_certificate, ca_key = _load_authority(authority)
    common_name = DEFAULT_SERVER_COMMON_NAME
    if names.dns_names and len(names.dns_names[0]) <= MAX_COMMON_NAME_LENGTH:
        common_name = names.dns_names[0]
    key = ec.generate_private_key(ec.SECP256R1())
    builder = _leaf_builder(
        ca_certificate, key, common_name, now, now + SERVER_VALIDITY, ExtendedKeyUsageOID.SERVER_AUTH
    ).add_extension(_key_usage(digital_signature=True, key_agreement=True), critical=True)
    general_names: list[x509.GeneralName] = [x509.DNSName(name) for name in names.dns_names]
    general_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in names.ip_addresses]
    if general_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(general_names), critical=False)
    certificate = builder.sign(ca_key, _HASH)
    return KeyPair(key_pem=_key_pem(key), certificate_pem=_certificate_pem(certificate))


def issue_device(authority: KeyPair, hardware_id: str, now: datetime) -> IssuedCertificate:
    """Make a client certificate whose CN is exactly `hardware_id`, signed by `authority`.

    Mosquitto's `use_identity_as_username` makes the CN the MQTT username, so it is not altered.
    Valid for DEVICE_VALIDITY, never past the CA's own expiry. Raises ValueError for a hardware id
    that cannot be a CN (empty, longer than 64 characters, or containing NUL, which Mosquitto
    rejects as a username), PkiError for an unusable or expired authority.
    """
    now = _utc(now)
    if not hardware_id or len(hardware_id) > MAX_COMMON_NAME_LENGTH or "\x00" in hardware_id:
        raise ValueError(f"hardware id cannot be a certificate CN: {hardware_id!r}")
    ca_certificate, ca_key = _load_authority(authority)
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        _leaf_builder(
            ca_certificate, key, hardware_id, now, now + DEVICE_VALIDITY, ExtendedKeyUsageOID.CLIENT_AUTH
        )
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .sign(ca_key, _HASH)
    )
    return IssuedCertificate(
        pair=KeyPair(key_pem=_key_pem(key), certificate_pem=_certificate_pem(certificate)),
        serial=certificate.serial_number,
        not_after=certificate.not_valid_after_utc,
    )


def build_crl(authority: KeyPair, revoked: Iterable[Revocation], now: datetime) -> str:
    """Sign a PEM CRL listing `revoked` (one entry per serial, the earliest date wins).

    last_update is `now`, next_update `now + CRL_VALIDITY`. An empty `revoked` gives a valid empty
    CRL, which Mosquitto needs: its `crlfile` must exist. The CRLNumber is `now` in epoch seconds so
    it grows from one CRL to the next without keeping a counter. Raises PkiError for an unusable
    authority, ValueError for a naive datetime or a serial that is not positive.
    """
    now = _utc(now)
    ca_certificate, ca_key = _load_authority(authority)
    earliest: dict[int, datetime] = {}
    for revocation in revoked:
        revoked_at = _utc(revocation.revoked_at)
        if revocation.serial <= 0:
            raise ValueError(f"certificate serials are positive: {revocation.serial}")
        if revocation.serial not in earliest or revoked_at < earliest[revocation.serial]:
            earliest[revocation.serial] = revoked_at
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_certificate.subject)
        .last_update(now)
        .next_update(now + CRL_VALIDITY)
        .add_extension(x509.CRLNumber(int(now.timestamp())), critical=False)
        .add_extension(_authority_key_identifier(ca_certificate), critical=False)
    )
    for serial, revoked_at in sorted(earliest.items()):
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(revoked_at).build()
        builder = builder.add_revoked_certificate(entry)
    crl = builder.sign(ca_key, _HASH)
    return crl.public_bytes(serialization.Encoding.PEM).decode("ascii")


def server_needs_renewal(
    server_certificate_pem: str, authority: KeyPair, names: ServerNames, now: datetime
) -> str | None:
    """Say why the server certificate must be replaced, or None when it is fine.

    Reasons, checked in this order: "unreadable", "not signed by this authority", "not yet valid"
    (the clock went backwards since it was issued), "names changed" (the SAN's DNS names and IP
    addresses differ from `names`), "expires <YYYY-MM-DD>" (less than SERVER_RENEW_BEFORE left).
    Raises PkiError for an unusable authority.
    """
    now = _utc(now)
    ca_certificate, _ = _load_authority(authority)
    try:
        certificate = _load_certificate(server_certificate_pem)
    except PkiError:
        return "unreadable"
    if not _is_issued_by(certificate, ca_certificate):
        return "not signed by this authority"
    if certificate.not_valid_before_utc > now:
        return "not yet valid"
    if _certificate_names(certificate) != ServerNames.of(names.dns_names, names.ip_addresses):
        return "names changed"
    not_after = certificate.not_valid_after_utc
    if not_after - now < SERVER_RENEW_BEFORE:
        return f"expires {not_after.date().isoformat()}"
    return None


def crl_needs_renewal(crl_pem: str, authority: KeyPair, now: datetime) -> bool:
    """True when the CRL must be re-signed: unreadable, not signed by `authority`, not yet valid,
    without a next_update, or less than CRL_RENEW_BEFORE before its next_update.

    Raises PkiError for an unusable authority.
    """
    now = _utc(now)
    ca_certificate, _ = _load_authority(authority)
    try:
        crl = x509.load_pem_x509_crl(crl_pem.encode("utf-8"))
    except ValueError:
        return True
    if crl.issuer != ca_certificate.subject:
        return True
    try:
        signed = crl.is_signature_valid(_issuer_public_key(ca_certificate))
    except (TypeError, ValueError, UnsupportedAlgorithm):
        return True
    next_update = crl.next_update_utc
    return (
        not signed or crl.last_update_utc > now or next_update is None or next_update - now < CRL_RENEW_BEFORE
    )


def certificate_serial(certificate_pem: str) -> int:
    """The serial number of a PEM certificate. Raises PkiError if it does not parse."""
    return _load_certificate(certificate_pem).serial_number


def certificate_common_name(certificate_pem: str) -> str:
    """The subject CN of a PEM certificate. Raises PkiError if it does not parse or has no CN."""
    attributes = _load_certificate(certificate_pem).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attributes:
        raise PkiError("certificate has no common name")
    value = attributes[0].value
    return value if isinstance(value, str) else value.decode("utf-8", errors="replace")


def check_authority(authority: KeyPair) -> None:
    """Raise PkiError unless `authority` is a usable CA: both PEMs parse, the key is EC or RSA and
    matches the certificate, and the certificate is a CA allowed to sign certificates and CRLs.
    """
    _load_authority(authority)


def _utc(moment: datetime) -> datetime:
    """`moment` in UTC; a naive datetime is refused rather than guessed."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"datetime must be timezone-aware: {moment!r}")
    return moment.astimezone(UTC)


def _plain_ip(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address without an IPv6 zone (`fe80::1%eth0` -> `fe80::1`): a SAN holds only the bytes."""
    return ipaddress.ip_address(address.packed)


def _key_usage(
    *,
    digital_signature: bool = False,
    key_agreement: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    """A KeyUsage with the given bits set and all others clear."""
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=key_agreement,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf_builder(
    ca_certificate: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    common_name: str,
    now: datetime,
    not_after: datetime,
    purpose: x509.ObjectIdentifier,
) -> x509.CertificateBuilder:
    """What server and device certificates share; the validity is capped at the CA's expiry, since
    verifiers reject a chain once any certificate in it has expired anyway."""
    ca_not_after = ca_certificate.not_valid_after_utc
    not_before = now - BACKDATE
    not_after = min(not_after, ca_not_after)
    if not_after <= not_before:
        raise PkiError(f"the authority expired on {ca_not_after.isoformat()}")
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_identifier(ca_certificate), critical=False)
    )


def _authority_key_identifier(ca_certificate: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """The AKI for things the CA signs: a copy of the CA's SKI when it has one (a CA made elsewhere
    may compute its SKI differently, and OpenSSL matches AKI to SKI byte for byte)."""
    try:
        ski = ca_certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(_issuer_public_key(ca_certificate))
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _issuer_public_key(
    ca_certificate: x509.Certificate,
) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    """The CA's public key, as one of the kinds `_load_authority` accepts."""
    public_key = ca_certificate.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise PkiError("authority key is neither EC nor RSA")
    return public_key


def _load_certificate(certificate_pem: str) -> x509.Certificate:
    """Parse one PEM certificate (the first, if there are several)."""
    try:
        return x509.load_pem_x509_certificate(certificate_pem.encode("utf-8"))
    except ValueError as error:  # also covers UnicodeEncodeError
        raise PkiError(f"not a PEM certificate: {error}") from error


def _load_authority(authority: KeyPair) -> tuple[x509.Certificate, _PrivateKey]:
    """Parse and check the CA pair; see `check_authority`."""
    certificate = _load_certificate(authority.certificate_pem)
    try:
        key = serialization.load_pem_private_key(authority.key_pem.encode("utf-8"), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:  # TypeError: encrypted key
        raise PkiError(f"not an unencrypted PEM private key: {error}") from error
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PkiError("authority key is neither EC nor RSA")
    if _spki(key.public_key()) != _spki(certificate.public_key()):
        raise PkiError("authority key does not match its certificate")
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise PkiError("authority certificate has no basic constraints") from None
    if not constraints.ca:
        raise PkiError("authority certificate is not a CA")
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        pass  # RFC 5280 §4.2.1.3: without the extension every usage is allowed.
    else:
        if not (usage.key_cert_sign and usage.crl_sign):
            raise PkiError("authority certificate may not sign certificates and CRLs")
    return certificate, key


def _spki(public_key: object) -> bytes:
    """DER SubjectPublicKeyInfo, to compare public keys of any kind."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        return b""
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _is_issued_by(certificate: x509.Certificate, ca_certificate: x509.Certificate) -> bool:
    """Issuer name matches and the CA's key verifies the signature."""
    try:
        certificate.verify_directly_issued_by(ca_certificate)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _certificate_names(certificate: x509.Certificate) -> ServerNames:
    """The SAN's DNS names and IP addresses, normalised like `ServerNames.of` (empty without a SAN)."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ServerNames((), ())
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    try:
        return ServerNames.of(san.get_values_for_type(x509.DNSName), ips)
    except ValueError:  # e.g. an IP network in the SAN: not something we would issue
        return ServerNames(("<unusable SAN>",), ())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    """Unencrypted PKCS#8 PEM, the form both Mosquitto and Python's `ssl` load."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def _certificate_pem(certificate: x509.Certificate) -> str:
    """PEM text of a certificate."""
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
