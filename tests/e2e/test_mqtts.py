"""MQTTS against the running daemon: client certificates from the gateway's own CA, and their revocation.

The daemon's Mosquitto listens on `mqtt.tls_port` with `require_certificate`, the gateway CA as the
only trust anchor and a CRL. Devices are either the real SDK standalone peer (fed the generated
config as its base64 blob) or raw aiomqtt TLS clients built like the SDK's, so the test decides
which certificate is presented.

Acceptance and refusal are probed with a hand-written CONNECT (`connect_outcome`), which tells a
CONNACK from a TLS alert or a connection closed before CONNACK, and names the alert; every refusal
is checked next to an acceptance on the same listener, so a listener that is down cannot pass for
one. Sessions that must carry messages or be dropped are aiomqtt clients.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import ssl
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import enapter
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from enapter.http.api.devices import (
    DeviceConnectivityStatus,
    MQTTProtocol,
    MQTTSCredentials,
)

from gateway.mqtt import pki
from tests.gateway_process import GatewayProcess, eventually, free_port, write_config
from tests.peers.process import start_peer, stop_peer
from tests.peers.sdk_device import PROPERTIES

EXTRA_HOSTNAME = "gw.example"
# The broker answers a CONNECT on loopback in milliseconds, accepting or refusing it.
CONNECT_TIMEOUT_S = 3.0
DROP_WITHIN_S = 5.0
ACCEPTED = "accepted"
# Reasons of the TLS alerts Mosquitto (OpenSSL) refuses client certificates with, as Python names them.
UNKNOWN_CA = "TLSV1_ALERT_UNKNOWN_CA"
EXPIRED = "SSLV3_ALERT_CERTIFICATE_EXPIRED"
REVOKED = "SSLV3_ALERT_CERTIFICATE_REVOKED"
NO_CERTIFICATE = "SSLV3_ALERT_HANDSHAKE_FAILURE"


@dataclass(frozen=True, slots=True)
class MqttsGateway:
    """A running daemon with its MQTTS listener on, and an INSTALLER token for it."""

    process: GatewayProcess
    tls_port: int
    token: str


@dataclass(frozen=True, slots=True)
class Certificate:
    """Client credentials as a generated MQTTS config hands them out (PEM text)."""

    hardware_id: str
    channel_id: str
    certificate: str
    key: str
    ca: str

    @property
    def client(self) -> tuple[str, str]:
        """(certificate PEM, key PEM), what a TLS client presents."""
        return self.certificate, self.key


def start_mqtts_gateway(directory: Path) -> MqttsGateway:
    """Start a daemon on free ports with the TLS listener enabled (and one extra TLS host name)."""
    tls_port = free_port()
    config, api_port, mqtt_port = write_config(
        directory, {"mqtt": {"tls_port": tls_port, "tls_hostnames": [EXTRA_HOSTNAME]}}
    )
    process = GatewayProcess(directory, config, api_port, mqtt_port)
    process.start()
    try:
        token = process.create_token("INSTALLER")
    except BaseException:
        process.stop()
        raise
    return MqttsGateway(process, tls_port, token)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[MqttsGateway]:
    """A running daemon with MQTTS; it must stop cleanly (exit 0) on SIGTERM at the end."""
    started = start_mqtts_gateway(tmp_path)
    try:
        yield started
    finally:
        status = started.process.stop()
    assert status == 0, started.process.log()


def sdk_api(gateway: MqttsGateway) -> enapter.http.api.Client:
    """The SDK's HTTP client for the daemon's API."""
    return enapter.http.api.Client(
        config=enapter.http.api.Config(base_url=gateway.process.base_url, token=gateway.token)
    )


async def new_device(gateway: MqttsGateway, name: str) -> str:
    """A new standalone device (through the SDK); its id."""
    async with sdk_api(gateway) as client:
        device = await client.devices.create_standalone(name=name)
    return device.id


async def generate(
    gateway: MqttsGateway, device_id: str, protocol: MQTTProtocol
) -> enapter.http.api.devices.CommunicationConfig:
    """POST generate_config through the SDK (which parses the answer as Enapter's cloud would)."""
    async with sdk_api(gateway) as client:
        return await client.devices.generate_communication_config(device_id, protocol)


async def issue_certificate(gateway: MqttsGateway, device_id: str) -> Certificate:
    """Generate an MQTTS config for the device and return its client credentials."""
    config = await generate(gateway, device_id, MQTTProtocol.MQTTS)
    assert config.mqtt_protocol is MQTTProtocol.MQTTS
    assert config.mqtt_port == gateway.tls_port
    credentials = config.mqtt_credentials
    assert isinstance(credentials, MQTTSCredentials)
    return Certificate(
        hardware_id=config.hardware_id,
        channel_id=config.channel_id,
        certificate=credentials.certificate,
        key=credentials.private_key,
        ca=credentials.ca_chain,
    )


def gateway_authority(gateway: MqttsGateway) -> pki.KeyPair:
    """The gateway's CA, read from its state directory (as an attacker with the files could)."""
    directory = gateway.process.state_dir / "pki"
    return pki.KeyPair(
        key_pem=(directory / "ca.key").read_text(),
        certificate_pem=(directory / "ca.crt").read_text(),
    )


def tls_context(
    directory: Path,
    ca_pem: str,
    client: tuple[str, str] | None,
    maximum_version: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
) -> ssl.SSLContext:
    """A client context like the Enapter SDK's; `client` is (certificate PEM, key PEM) or None."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.maximum_version = maximum_version
    context.load_verify_locations(cadata=ca_pem)
    if client is not None:
        certificate_pem, key_pem = client
        stem = hashlib.sha256(certificate_pem.encode()).hexdigest()[:16]
        certificate_file, key_file = directory / f"{stem}.crt", directory / f"{stem}.key"
        certificate_file.write_text(certificate_pem)
        key_file.write_text(key_pem)
        context.load_cert_chain(certificate_file, key_file)
    return context


def certificate_context(directory: Path, certificate: Certificate) -> ssl.SSLContext:
    """The context a device with `certificate` uses."""
    return tls_context(directory, certificate.ca, certificate.client)


def tls_client(gateway: MqttsGateway, context: ssl.SSLContext) -> aiomqtt.Client:
    """A raw MQTT client on the TLS listener."""
    return aiomqtt.Client("127.0.0.1", gateway.tls_port, tls_context=context, timeout=CONNECT_TIMEOUT_S)


def connect_packet(client_id: str) -> bytes:
    """An MQTT 3.1.1 CONNECT with a clean session and no username (the certificate's CN is it)."""
    encoded = client_id.encode()
    variable = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(encoded).to_bytes(2, "big") + encoded
    assert len(variable) < 128  # one-byte remaining length
    return bytes([0x10, len(variable)]) + variable


async def connect_outcome(gateway: MqttsGateway, context: ssl.SSLContext) -> str:
    """Send an MQTT CONNECT over TLS with `context`: "accepted" on a successful CONNACK, else why
    not: the reason of the TLS alert the broker sent (e.g. "SSLV3_ALERT_CERTIFICATE_REVOKED"), or
    "closed" when it hung up before a CONNACK. Hanging is neither: TimeoutError.

    A raw CONNECT rather than aiomqtt, which reports a TLS alert after the handshake (TLS 1.3) only
    as its own connect timeout, so a refusal would look like a slow broker.
    """
    async with asyncio.timeout(CONNECT_TIMEOUT_S):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", gateway.tls_port, ssl=context)
        except ssl.SSLError as exc:
            return str(exc.reason)
        try:
            writer.write(connect_packet(f"probe-{os.getpid()}-{time.monotonic_ns()}"))
            await writer.drain()
            connack = await reader.readexactly(4)
        except ssl.SSLError as exc:
            return str(exc.reason)
        except (asyncio.IncompleteReadError, ConnectionError):  # reset, broken pipe
            return "closed"
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    # CONNACK, remaining length 2, no session present, return code 0.
    return ACCEPTED if connack == b"\x20\x02\x00\x00" else f"CONNACK {connack.hex()}"


async def outcome(gateway: MqttsGateway, directory: Path, ca_pem: str, client: tuple[str, str] | None) -> str:
    """How the broker answers a CONNECT from a client presenting `client` (certificate PEM, key PEM;
    None for no certificate): "accepted", or the reason of the TLS 1.2 alert that refused it.

    Devices negotiate TLS 1.3, which is probed too and must agree on accepted or not; but there the
    broker judges the certificate after the handshake and often just hangs up, while with TLS 1.2
    its alert names the reason (unknown CA, expired, revoked...) during the handshake.
    """
    modern = await connect_outcome(gateway, tls_context(directory, ca_pem, client))
    legacy = await connect_outcome(
        gateway, tls_context(directory, ca_pem, client, maximum_version=ssl.TLSVersion.TLSv1_2)
    )
    assert (modern == ACCEPTED) == (legacy == ACCEPTED), (modern, legacy)
    return legacy


async def wait_until_dropped(client: aiomqtt.Client) -> None:
    """Return when the broker closes `client`'s session (raises MqttError then), else time out."""
    async with asyncio.timeout(DROP_WITHIN_S):
        async for _ in client.messages:
            pass


async def publish_properties(
    client: aiomqtt.Client, certificate: Certificate, values: dict[str, str]
) -> None:
    """Publish the device's properties (register) on an open connection."""
    topic = f"v1/from/{certificate.hardware_id}/{certificate.channel_id}/v1/register"
    await client.publish(topic, json.dumps({"timestamp": int(time.time()), **values}), qos=1)


async def properties_of(gateway: MqttsGateway, device_id: str) -> dict[str, object]:
    """The device's properties as the API reports them."""
    async with httpx.AsyncClient(headers={"X-Enapter-Auth-Token": gateway.token}, timeout=5) as http:
        response = await http.get(
            f"{gateway.process.base_url}/v3/devices/{device_id}", params={"expand": "properties"}
        )
    response.raise_for_status()
    properties: dict[str, object] = response.json()["device"]["properties"]
    return properties


async def wait_for_properties(gateway: MqttsGateway, device_id: str, expected: dict[str, str]) -> None:
    """Fail unless the API shows exactly `expected` as the device's properties within 10 s."""

    async def arrived() -> bool:
        return await properties_of(gateway, device_id) == expected

    await eventually(arrived, 10)


def common_name(certificate_pem: str) -> str:
    """The subject CN of a PEM certificate."""
    certificate = x509.load_pem_x509_certificate(certificate_pem.encode())
    (attribute,) = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attribute.value)


async def test_sdk_device_works_over_mqtts(gateway: MqttsGateway) -> None:
    device_id = await new_device(gateway, "TLS Peer")
    config = await generate(gateway, device_id, MQTTProtocol.MQTTS)
    assert config.mqtt_protocol is MQTTProtocol.MQTTS
    assert config.mqtt_port == gateway.tls_port
    credentials = config.mqtt_credentials
    assert isinstance(credentials, MQTTSCredentials)
    # A client certificate for exactly this device, signed by the CA the config tells it to trust,
    # which is the gateway's own CA.
    assert common_name(credentials.certificate) == config.hardware_id
    ca = x509.load_pem_x509_certificate(credentials.ca_chain.encode())
    x509.load_pem_x509_certificate(credentials.certificate.encode()).verify_directly_issued_by(ca)
    assert credentials.ca_chain == (gateway.process.state_dir / "pki" / "ca.crt").read_text()
    blob = base64.b64encode(json.dumps(config.to_dto()).encode()).decode()

    peer = start_peer(blob)
    try:
        async with sdk_api(gateway) as client:

            async def online() -> bool:
                found = await client.devices.get(device_id, expand_properties=True, expand_connectivity=True)
                assert found.connectivity is not None
                return (
                    found.connectivity.status is DeviceConnectivityStatus.ONLINE
                    and found.properties == PROPERTIES
                )

            await eventually(online, 20)

        # The SDK's two connections (publisher + command subscription) stay up over TLS: no
        # reconnect loop after a failing handshake or a dropped session.
        async def both_connected() -> bool:
            return gateway.process.metrics()["gateway_device_connects_total"] == 2

        await eventually(both_connected, 10)
        await asyncio.sleep(3)
        metrics = gateway.process.metrics()
        assert metrics["gateway_device_connects_total"] == 2
        assert metrics["gateway_devices_connected"] == 1
        assert peer.poll() is None
    finally:
        peer_log = stop_peer(peer)
    assert "failed" not in peer_log.lower(), peer_log


async def test_certificates_the_gateway_did_not_issue_are_refused(
    gateway: MqttsGateway, tmp_path: Path
) -> None:
    device_id = await new_device(gateway, "Device A")
    issued = await issue_certificate(gateway, device_id)
    hardware_id, ca = issued.hardware_id, issued.ca
    now = datetime.now(UTC)

    # Positive control: what the gateway issued connects.
    assert await outcome(gateway, tmp_path, ca, issued.client) == ACCEPTED

    # The right CN, but signed by some other CA.
    forged = pki.issue_device(pki.create_authority("impostor CA", now), hardware_id, now).pair
    assert await outcome(gateway, tmp_path, ca, (forged.certificate_pem, forged.key_pem)) == UNKNOWN_CA

    # No client certificate at all.
    assert await outcome(gateway, tmp_path, ca, None) == NO_CERTIFICATE

    # Signed by the gateway's own CA with the right CN, but expired a year ago.
    expired = pki.issue_device(gateway_authority(gateway), hardware_id, now - timedelta(days=365 * 11))
    assert expired.not_after < now
    assert (
        await outcome(gateway, tmp_path, ca, (expired.pair.certificate_pem, expired.pair.key_pem)) == EXPIRED
    )

    # A certificate device has no password: its hardware id gets nowhere on the plain listener.
    for password in (None, ""):
        plain = aiomqtt.Client(
            "127.0.0.1", gateway.process.mqtt_port, username=hardware_id, password=password, timeout=5
        )
        with pytest.raises(aiomqtt.MqttCodeError):
            async with plain:
                pass

    # And the real thing still works end to end, the way a device uses it.
    async with tls_client(gateway, certificate_context(tmp_path, issued)) as device:
        await publish_properties(device, issued, {"model": "genuine"})
    await wait_for_properties(gateway, device_id, {"model": "genuine"})


async def test_regenerating_revokes_the_certificate_and_drops_its_session(
    gateway: MqttsGateway, tmp_path: Path
) -> None:
    device_id = await new_device(gateway, "Device A")
    first = await issue_certificate(gateway, device_id)
    # Another device's certificate: the control that the listener still accepts good ones.
    control = await issue_certificate(gateway, await new_device(gateway, "Device B"))
    ca = first.ca

    async with tls_client(gateway, certificate_context(tmp_path, first)) as held:
        await publish_properties(held, first, {"model": "first"})
        await wait_for_properties(gateway, device_id, {"model": "first"})
        second = await issue_certificate(gateway, device_id)
        with pytest.raises(aiomqtt.MqttError):
            await wait_until_dropped(held)

    assert second.hardware_id == first.hardware_id
    assert await outcome(gateway, tmp_path, ca, first.client) == REVOKED
    async with tls_client(gateway, certificate_context(tmp_path, second)) as device:
        await publish_properties(device, second, {"model": "second"})
    await wait_for_properties(gateway, device_id, {"model": "second"})

    # Back to a password: the second certificate is revoked too, the password works.
    config = await generate(gateway, device_id, MQTTProtocol.MQTT)
    assert config.mqtt_port == gateway.process.mqtt_port
    password = config.to_dto()["mqtt_credentials"]["password"]
    assert await outcome(gateway, tmp_path, ca, second.client) == REVOKED
    assert await outcome(gateway, tmp_path, ca, first.client) == REVOKED
    assert await outcome(gateway, tmp_path, ca, control.client) == ACCEPTED
    async with aiomqtt.Client(
        "127.0.0.1", gateway.process.mqtt_port, username=first.hardware_id, password=password, timeout=5
    ) as device:
        await publish_properties(device, first, {"model": "password"})
    await wait_for_properties(gateway, device_id, {"model": "password"})


async def test_deleting_a_device_revokes_its_certificate_for_good(
    gateway: MqttsGateway, tmp_path: Path
) -> None:
    doomed_id = await new_device(gateway, "Doomed")
    doomed = await issue_certificate(gateway, doomed_id)
    kept = await issue_certificate(gateway, await new_device(gateway, "Kept"))
    ca = doomed.ca

    async with tls_client(gateway, certificate_context(tmp_path, doomed)) as held:
        async with sdk_api(gateway) as client:
            await client.devices.delete(doomed_id)
        with pytest.raises(aiomqtt.MqttError):
            await wait_until_dropped(held)
    assert await outcome(gateway, tmp_path, ca, doomed.client) == REVOKED
    assert await outcome(gateway, tmp_path, ca, kept.client) == ACCEPTED

    # Restart without the CRL file, so the daemon must rebuild it from the database: only the CRL
    # stops this certificate, since Mosquitto takes its CN as the username without a password check.
    process = gateway.process
    assert await asyncio.to_thread(process.stop) == 0, process.log()
    (process.state_dir / "pki" / "crl.pem").unlink()
    await asyncio.to_thread(process.start)

    assert await outcome(gateway, tmp_path, ca, kept.client) == ACCEPTED
    assert await outcome(gateway, tmp_path, ca, doomed.client) == REVOKED


def key_needles(key_pem: str) -> list[bytes]:
    """Every form in which a stored copy of the private key would show: PEM body (whole and per
    line), DER, and the bare secret scalar."""
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    body_lines = [line for line in key_pem.splitlines() if line and not line.startswith("-----")]
    return [
        "".join(body_lines).encode(),
        *(line.encode() for line in body_lines),
        key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        key.private_numbers().private_value.to_bytes(32, "big"),
    ]


def check_private_tree(state_dir: Path, needles: list[bytes]) -> list[Path]:
    """Assert every directory under `state_dir` is 0700, every file has no group/other bits and
    contains none of `needles`; returns the files checked."""
    checked: list[Path] = []
    assert stat.S_IMODE(os.lstat(state_dir).st_mode) == 0o700
    for root, dirnames, filenames in os.walk(state_dir):
        for name in dirnames:
            mode = os.lstat(Path(root) / name).st_mode
            assert stat.S_IMODE(mode) == 0o700, f"{Path(root) / name}: {oct(mode)}"
        for name in filenames:
            path = Path(root) / name
            mode = os.lstat(path).st_mode
            if stat.S_ISSOCK(mode):
                # Mosquitto's admin unix socket (broker/admin.sock), which Mosquitto 2.0.11 itself
                # makes 0770; what guards it is the 0700 directory around it, since connecting
                # needs search permission on every directory of the path.
                continue
            assert stat.S_ISREG(mode), f"{path}: {oct(mode)}"
            assert stat.S_IMODE(mode) & 0o077 == 0, f"{path}: {oct(mode)}"
            content = path.read_bytes()
            assert not any(needle in content for needle in needles), f"{path} holds the device key"
            checked.append(path)
    return checked


async def test_state_files_are_private_and_hold_no_device_key(gateway: MqttsGateway, tmp_path: Path) -> None:
    device_id = await new_device(gateway, "Device A")
    revoked = await issue_certificate(gateway, device_id)
    issued = await issue_certificate(gateway, device_id)
    # A session, so the broker and the daemon have written whatever they write for one.
    async with tls_client(gateway, certificate_context(tmp_path, issued)) as device:
        await publish_properties(device, issued, {"model": "private"})
    await wait_for_properties(gateway, device_id, {"model": "private"})

    state_dir = gateway.process.state_dir
    checked = check_private_tree(state_dir, [*key_needles(issued.key), *key_needles(revoked.key)])
    names = {path.relative_to(state_dir).as_posix() for path in checked}
    assert {"pki/ca.key", "pki/ca.crt", "pki/server.key", "pki/server.crt", "pki/crl.pem"} <= names
    # The CRL on disk lists the first certificate.
    crl = x509.load_pem_x509_crl((state_dir / "pki" / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(pki.certificate_serial(revoked.certificate))


async def test_server_certificate_covers_the_gateway_names(gateway: MqttsGateway, tmp_path: Path) -> None:
    directory = gateway.process.state_dir / "pki"
    ca_pem = (directory / "ca.crt").read_text()
    ca = x509.load_pem_x509_certificate(ca_pem.encode())
    server = x509.load_pem_x509_certificate((directory / "server.crt").read_bytes())
    server.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns_names = set(san.get_values_for_type(x509.DNSName))
    assert {"enapter-gateway.local", "localhost", EXTRA_HOSTNAME} <= dns_names
    assert "127.0.0.1" in {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}

    # And it is what the listener presents: a client that checks host names (unlike the SDK)
    # accepts it for a configured name and refuses it for any other.
    issued = await issue_certificate(gateway, await new_device(gateway, "Device A"))
    context = certificate_context(tmp_path, issued)
    context.check_hostname = True

    async def presented(server_hostname: str) -> bytes:
        _, writer = await asyncio.open_connection(
            "127.0.0.1", gateway.tls_port, ssl=context, server_hostname=server_hostname
        )
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            assert isinstance(ssl_object, ssl.SSLObject)
            der = ssl_object.getpeercert(binary_form=True)
            assert der is not None
            return der
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    assert await presented(EXTRA_HOSTNAME) == server.public_bytes(serialization.Encoding.DER)
    assert await presented("127.0.0.1") == server.public_bytes(serialization.Encoding.DER)
    with pytest.raises(ssl.SSLCertVerificationError):
        await presented("not-a-gateway-name.example")
