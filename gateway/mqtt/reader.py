"""A buffered read path for one paho connection under aiomqtt: one recv() per 64 KiB read, and QoS 0
PUBLISH packets delivered straight from that buffer.

paho 2.x reads every packet with 3-4 recv() calls (the type byte, the remaining length one byte at a
time, then the body), builds an MQTTMessage per PUBLISH and goes through its callback machinery; aiomqtt
handles one packet per readable event. Under a flood that is most of ingest's CPU (perf-baselines.md,
"Why aiomqtt costs what it does"). Here the socket is read in large chunks, packets are framed from
the buffer (MQTT 3.1.1 §2.2), and a QoS 0 PUBLISH (§3.3) goes to `deliver(topic, payload)` without
paho. Every other packet (CONNACK, SUBACK, PUBACK, PINGRESP, PUBLISH at QoS 1/2, anything odd) is
handed to paho's own `loop_read()`, which sees exactly that one complete packet and nothing else:
paho never holds half a packet, so the framing here and paho's can never disagree.

What a QoS 0 PUBLISH skips of paho: its MQTTMessage, its DEBUG log line per message, its
`message_callback_add` topic filters (aiomqtt registers none) and its callback locks. A topic that is
not UTF-8, a PUBLISH too short for its topic, and MQTT 5 go to paho, so they end as they did before.

The seam into paho/aiomqtt internals (versions pinned: aiomqtt <3, with paho-mqtt 2.2.x) is exactly:

- paho `Client._sock_recv(bufsize) -> bytes`: replaced on the instance per connection by
  `PacketReader.paho_recv`; the original (class) method does the real reads, because it maps
  `ssl.SSLWantReadError`/`SSLWantWriteError` to BlockingIOError the way paho expects.
- paho `Client._msgtime_mutex`, `Client._last_bytes_received` and the module's `time_func`: the
  keepalive bookkeeping paho does per packet it reads, done here per chunk read.
- aiomqtt `Client._on_socket_open` (extended by DeliveringClient to install this reader; aiomqtt must
  still hand it to paho as `on_socket_open`), `Client._client` (the paho client), `Client._loop`
  and `Client._disconnected` (the future aiomqtt's own reader fails with an exception;
  `client.messages` then ends with MqttError; DeliveringClient.__aenter__ also sets it again when
  aiomqtt's reset after CONNACK dropped it).

`check_seam` verifies all of them and runs when a DeliveringClient is made; a paho or aiomqtt release
that renames one fails there, loudly, and in tests/unit/test_mqtt_reader.py.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import ssl
from collections.abc import Callable
from typing import Protocol

import aiomqtt
import paho.mqtt.client as paho_mqtt

# One recv() per this many bytes: ~300 telemetry messages of ~200 bytes.
READ_SIZE = 65536
# Packets (and reads) handled per readable event before the event loop gets a turn (other tasks,
# the API). Ingest spends some 20-50 us per message, so a turn comes every 5-13 ms in a flood; the
# read path's own cost per wakeup is ~10 us, negligible over 256 packets (64 or 1024: no change).
MAX_PACKETS_PER_WAKEUP = 256
# Fixed-header type byte of a PUBLISH with QoS 0 (§3.3.1): type 3, QoS bits 0; DUP is 0 at QoS 0
# (§3.3.1.1) and RETAIN (bit 0) does not matter to the receiver.
_PUBLISH_QOS0 = 0x30
_PUBLISH_QOS_MASK = 0xF6


class SeamError(RuntimeError):
    """The installed paho-mqtt or aiomqtt lacks an internal this read path relies on."""


def check_seam(client: aiomqtt.Client) -> None:
    """Raise SeamError unless every paho/aiomqtt internal listed in the module docstring is there."""
    problems: list[str] = []
    recv = getattr(paho_mqtt.Client, "_sock_recv", None)
    if recv is None or list(inspect.signature(recv).parameters) != ["self", "bufsize"]:
        problems.append("paho.mqtt.client.Client._sock_recv(self, bufsize)")
    if not callable(getattr(paho_mqtt, "time_func", None)):
        problems.append("paho.mqtt.client.time_func")
    if not callable(getattr(aiomqtt.Client, "_on_socket_open", None)):
        problems.append("aiomqtt.Client._on_socket_open")
    for name in ("_client", "_loop", "_disconnected"):
        if not hasattr(client, name):
            problems.append(f"aiomqtt.Client().{name}")
    paho = getattr(client, "_client", None)
    if paho is not None:
        for name in ("_msgtime_mutex", "_last_bytes_received"):
            if not hasattr(paho, name):
                problems.append(f"paho.mqtt.client.Client().{name}")
        # The hook is only ours if aiomqtt still hands paho this method.
        if getattr(paho, "on_socket_open", None) != getattr(client, "_on_socket_open", None):
            problems.append("aiomqtt.Client() setting paho's on_socket_open to its _on_socket_open")
    if problems:
        raise SeamError(
            "the buffered MQTT read path (gateway/mqtt/reader.py) needs internals this "
            f"paho-mqtt/aiomqtt lacks: {', '.join(problems)}"
        )


class _Socket(Protocol):
    def fileno(self) -> int: ...


class PacketReader:
    """Reads one connection's socket for paho: call `start()` on the event loop once the socket is
    open; it then runs on every readable event until paho closes that socket.

    `deliver(topic, payload)` receives each QoS 0 PUBLISH (MQTT 3.1/3.1.1 only: `fast_publish`);
    `fail(exc)` is told of an exception escaping the read path (the connection is then dead to
    aiomqtt, as with its own reader).
    """

    def __init__(
        self,
        paho: paho_mqtt.Client,
        sock: _Socket,
        loop: asyncio.AbstractEventLoop,
        deliver: Callable[[str, bytes], None],
        fail: Callable[[Exception], None],
        *,
        fast_publish: bool,
    ) -> None:
        self._paho = paho
        self._sock = sock
        self._fd = sock.fileno()
        self._loop = loop
        self._deliver = deliver
        self._fail = fail
        self._fast_publish = fast_publish
        # TLS: recv() returns at most one record, so a short read does not mean the kernel is empty,
        # and decrypted bytes can wait inside the SSLSocket where epoll does not see them.
        self._tls = isinstance(sock, ssl.SSLSocket)
        # paho's own recv, unbound from any reader installed on an earlier connection.
        self._recv: Callable[[int], bytes] = functools.partial(paho_mqtt.Client._sock_recv, paho)
        # Unprocessed bytes are self._buf[self._pos:]; paho may read up to self._limit.
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self._limit = 0
        # After end of stream (or a read error, kept to re-raise to paho) paho reads the rest.
        self._ended = False
        self._error: OSError | None = None
        self._scheduled = False
        self._dead = False

    def install(self) -> None:
        """Make paho read through this reader; call before paho can read this socket."""
        self._paho._sock_recv = self.paho_recv  # type: ignore[method-assign]

    def start(self) -> None:
        """On the event loop: take the socket's readable events, then handle what is already here."""
        if self._paho.socket() is not self._sock:
            return  # closed before we got here
        self._loop.add_reader(self._fd, self.on_readable)
        self.on_readable()

    def paho_recv(self, bufsize: int) -> bytes:
        """paho's `_sock_recv`: the bytes of the one packet handed to paho, never more."""
        start = self._pos
        end = min(start + bufsize, self._limit)
        if end <= start:
            if not self._ended:
                raise BlockingIOError  # paho: MQTT_ERR_AGAIN, its packet state untouched
            if self._error is not None:
                raise self._error
            return b""
        self._pos = end
        return bytes(self._buf[start:end])

    def on_readable(self) -> None:
        """The socket is readable, or a previous call left work: handle a bounded number of packets."""
        if self._dead or self._paho.socket() is not self._sock:
            return
        try:
            more = self._read_packets()
        except Exception as exc:  # noqa: BLE001  # as aiomqtt's reader: it ends the connection
            self._dead = True
            self._loop.remove_reader(self._fd)
            self._fail(exc)
            return
        if more and not self._scheduled:
            # Bytes already read (or decrypted inside an SSLSocket) raise no readable event. One
            # continuation at most: a readable event meanwhile must not add another each turn.
            self._scheduled = True
            self._loop.call_soon(self._resume)

    def _resume(self) -> None:
        self._scheduled = False
        self.on_readable()

    def _read_packets(self) -> bool:
        """Handle up to MAX_PACKETS_PER_WAKEUP packets; True if some may be left that no readable
        event would announce."""
        may_read = True
        budget = MAX_PACKETS_PER_WAKEUP
        fast = self._fast_publish
        deliver = self._deliver
        buf = self._buf
        pos = self._pos
        size = len(buf)
        while budget:
            # Fixed header (§2.2): type byte, then the remaining length in 1-4 bytes, 7 bits each.
            need = 0  # the head packet's full size, 0 while its header is incomplete
            if size - pos >= 2:
                length = buf[pos + 1]
                body = pos + 2
                if length & 0x80:
                    length &= 0x7F
                    shift = 7
                    while body < size:
                        byte = buf[body]
                        body += 1
                        length |= (byte & 0x7F) << shift
                        if not byte & 0x80:
                            need = body + length - pos
                            break
                        shift += 7
                        if shift > 21:
                            # A fifth length byte makes it malformed (§2.2.3): paho reads the
                            # type and five length bytes, then reports a protocol error.
                            need = body + 1 - pos
                            break
                else:
                    need = body + length - pos
            if need and pos + need <= size:
                end = pos + need
                budget -= 1
                if fast and buf[pos] & _PUBLISH_QOS_MASK == _PUBLISH_QOS0 and body + 2 <= end:
                    # Variable header (§3.3.2): topic length, topic; at QoS 0 no packet id.
                    topic_end = body + 2 + (buf[body] << 8 | buf[body + 1])
                    if topic_end <= end:
                        try:
                            topic = str(buf[body + 2 : topic_end], "utf-8")
                        except UnicodeDecodeError:
                            pass  # paho's handling, whatever it is, applies
                        else:
                            self._pos = pos = end
                            deliver(topic, bytes(buf[topic_end:end]))
                            continue
                # Anything else: paho handles this one packet itself.
                self._pos = pos
                self._limit = end
                try:
                    self._paho.loop_read()
                finally:
                    self._limit = self._pos
                if self._paho.socket() is not self._sock:
                    return False  # paho closed the connection (protocol error, DISCONNECT)
                buf = self._buf
                pos = self._pos
                continue
            # No complete packet buffered: read more, unless the socket was just found empty.
            self._pos = pos
            if not may_read:
                return False
            budget -= 1  # a read counts too: one huge packet must not hold the loop either
            may_read = self._fill(need)
            if self._ended:
                self._limit = len(self._buf)
                self._paho.loop_read()  # paho reads what is left, meets the end, and closes
                return False
            buf = self._buf
            pos = self._pos
            size = len(buf)
        self._pos = pos
        sock = self._sock
        return pos < size or (isinstance(sock, ssl.SSLSocket) and sock.pending() > 0)

    def _fill(self, need: int) -> bool:
        """One recv() appended to the buffer (`need`: the head packet's full size, 0 if unknown);
        True if another recv() may find more right away."""
        try:
            data = self._recv(READ_SIZE)
        except BlockingIOError:
            return False
        except OSError as exc:
            self._ended = True
            self._error = exc
            return False
        if not data:
            self._ended = True
            return False
        paho = self._paho
        with paho._msgtime_mutex:  # keepalive (§3.1.2.10): paho's bookkeeping of traffic
            paho._last_bytes_received = paho_mqtt.time_func()
        buf = self._buf
        rest = len(buf) - self._pos
        if rest == 0:
            merged: bytes | bytearray = data
        elif isinstance(buf, bytearray):
            del buf[: self._pos]
            buf += data
            merged = buf
        elif rest < READ_SIZE:
            merged = buf[self._pos :] + data
        else:
            # A large packet in progress: grow it in place rather than copy it again every read.
            merged = bytearray(memoryview(buf)[self._pos :])
            merged += data
        if isinstance(merged, bytearray) and len(merged) >= need:
            merged = bytes(merged)  # complete: slices of bytes are what deliver() gets
        self._buf = merged
        self._pos = 0
        self._limit = 0
        return self._tls or len(data) == READ_SIZE
