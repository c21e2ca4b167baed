"""The managed Mosquitto's config file (pure rendering)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gateway.config import default_config
from gateway.mqtt.broker import BrokerFiles, TlsFiles, is_our_broker, render_config

FILES = BrokerFiles(Path("/state/broker"))
TLS = TlsFiles(
    ca_certificate=Path("/state/pki/ca.crt"),
    server_certificate=Path("/state/pki/server.crt"),
    server_key=Path("/state/pki/server.key"),
    crl=Path("/state/pki/crl.pem"),
)
PLUGIN = Path("/usr/lib/dynsec.so")


def listeners(text: str) -> dict[str, list[str]]:
    """Each `listener` line with the lines that follow it (Mosquitto's per-listener settings)."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("listener "):
            current = found.setdefault(line, [])
        elif current is not None:
            current.append(line)
    return found


def test_the_tls_listener_requires_a_client_certificate_from_the_gateway_ca() -> None:
    mqtt = default_config(base_dir=Path("/etc")).mqtt
    text = render_config(mqtt, FILES, PLUGIN, "gateway", TLS)
    found = listeners(text)
    assert set(found) == {
        "listener 0 /state/broker/admin.sock",
        "listener 1883 0.0.0.0",
        "listener 8883 0.0.0.0",
    }
    assert found["listener 8883 0.0.0.0"] == [
        "cafile /state/pki/ca.crt",
        "certfile /state/pki/server.crt",
        "keyfile /state/pki/server.key",
        "crlfile /state/pki/crl.pem",
        "require_certificate true",
        "use_identity_as_username true",
    ]
    # Device connections must not be forced to one client id: the SDK opens several per device.
    assert "use_username_as_clientid" not in text
    assert "allow_anonymous false" in text.splitlines()


def test_no_tls_listener_without_a_port_or_an_authority() -> None:
    mqtt = default_config(base_dir=Path("/etc")).mqtt
    for text in (
        render_config(dataclasses.replace(mqtt, tls_port=0), FILES, PLUGIN, "gateway", TLS),
        render_config(mqtt, FILES, PLUGIN, "gateway", None),
    ):
        assert len(listeners(text)) == 2
        assert "cafile" not in text


def test_an_orphan_is_recognised_by_our_config_path() -> None:
    config = Path("/var/lib/enapter-gateway/broker/mosquitto.conf")
    ours = b"/usr/sbin/mosquitto\0-c\0/var/lib/enapter-gateway/broker/mosquitto.conf\0"
    assert is_our_broker(ours, config)
    assert not is_our_broker(b"/usr/sbin/mosquitto\0-c\0/etc/mosquitto/mosquitto.conf\0", config)
    assert not is_our_broker(b"/usr/bin/vim\0/var/lib/enapter-gateway/broker/mosquitto.conf\0", config)
    assert not is_our_broker(b"", config)


def test_the_admin_socket_is_the_last_listener() -> None:
    # Mosquitto binds listeners in order and exits when one fails; the daemon takes a connectable
    # admin socket for "started", so a busy device port must fail before that socket exists.
    mqtt = default_config(base_dir=Path("/etc")).mqtt
    for tls in (TLS, None):
        last = render_config(mqtt, FILES, PLUGIN, "gateway", tls).splitlines()[-1]
        assert last == "listener 0 /state/broker/admin.sock"
