"""A minimal MQTT 3.1.1 publisher over a plain socket, for loads no real client library can make.

A library client spends tens of microseconds per message; a flooding device in a test must outrun
the daemon by far, so this one writes pre-encoded QoS 0 PUBLISH packets in large chunks. Only what
the tests need: CONNECT with username and password, CONNACK, QoS 0 PUBLISH, DISCONNECT. The
encoders are also what bench/fleet.py's simulated devices send.
"""

from __future__ import annotations

import socket
import struct
from typing import Final

CONNECT_TIMEOUT_S: Final = 5.0
# CONNACK return codes (MQTT 3.1.1 §3.2.2.3).
ACCEPTED: Final = 0
NOT_AUTHORIZED: Final = 5


class ConnectRefusedError(Exception):
    """The broker answered CONNECT with a non-zero return code."""

    def __init__(self, code: int) -> None:
        super().__init__(f"CONNACK return code {code}")
        self.code = code


def remaining_length(length: int) -> bytes:
    """The MQTT variable-length integer (MQTT 3.1.1 §2.2.3)."""
    encoded = bytearray()
    while True:
        digit, length = length % 128, length // 128
        encoded.append(digit | (0x80 if length else 0))
        if not length:
            return bytes(encoded)


def mqtt_string(value: str) -> bytes:
    """An MQTT UTF-8 string: two length bytes, then the bytes."""
    data = value.encode()
    return struct.pack("!H", len(data)) + data


def publish_packet(topic: str, payload: bytes) -> bytes:
    """One QoS 0, non-retained PUBLISH packet."""
    body = mqtt_string(topic) + payload
    return b"\x30" + remaining_length(len(body)) + body


def connect_packet(username: str, password: str, client_id: str = "", keepalive: int = 60) -> bytes:
    """CONNECT with clean session, username and password (MQTT 3.1.1 §3.1)."""
    flags = 0x80 | 0x40 | 0x02  # username, password, clean session
    variable = mqtt_string("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
    body = variable + mqtt_string(client_id) + mqtt_string(username) + mqtt_string(password)
    return b"\x10" + remaining_length(len(body)) + body


def connect(host: str, port: int, username: str, password: str, client_id: str = "") -> socket.socket:
    """A socket on which the broker accepted our CONNECT (clean session, keepalive 60 s).

    Raises ConnectRefusedError with the broker's return code, or OSError.
    """
    sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
    try:
        sock.sendall(connect_packet(username, password, client_id))
        connack = b""
        while len(connack) < 4:
            chunk = sock.recv(4 - len(connack))
            if not chunk:
                raise ConnectionResetError("the broker closed the connection before CONNACK")
            connack += chunk
        if connack[0] != 0x20:
            raise ConnectionError(f"expected CONNACK, got packet type {connack[0] >> 4}")
        if connack[3] != ACCEPTED:
            raise ConnectRefusedError(connack[3])
    except BaseException:
        sock.close()
        raise
    return sock


def disconnect(sock: socket.socket) -> None:
    """Send DISCONNECT (if the connection still stands) and close."""
    try:
        sock.sendall(b"\xe0\x00")
    except OSError:
        pass
    finally:
        sock.close()
