"""DeliveringClient's read path (gateway/mqtt/reader.py) on real sockets: a real Mosquitto reached over
TCP, a unix socket and TLS, and a scripted peer that cuts packets wherever the test wants."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway.mqtt import pki, reader
from gateway.mqtt.endpoint import DeliveringClient
from tests.gateway_process import eventually, free_port, listening

Received = list[tuple[str, bytes]]

# --- MQTT 3.1.1 packets, encoded by hand so the peers control every byte ---------------------------


def _remaining_length(length: int) -> bytes:
    """§2.2.3: 7 bits per byte, least significant first, high bit = more."""
    out = bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out)


def _packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + _remaining_length(len(body)) + body


def _string(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def publish(topic: str, payload: bytes, *, qos: int = 0, mid: int = 1, retain: bool = False) -> bytes:
    """A PUBLISH packet (§3.3)."""
    header = _string(topic) + (mid.to_bytes(2, "big") if qos else b"")
    return _packet(0x30 | qos << 1 | int(retain), header + payload)


def connect(client_id: str) -> bytes:
    """A CONNECT packet (§3.1): MQTT 3.1.1, clean session, keepalive 60 s."""
    return _packet(0x10, _string("MQTT") + bytes([4, 0x02]) + (60).to_bytes(2, "big") + _string(client_id))


CONNACK = bytes([0x20, 2, 0, 0])
PINGREQ = bytes([0xC0, 0])
PINGRESP = bytes([0xD0, 0])
DISCONNECT = bytes([0xE0, 0])


def payload_for(index: int, size: int) -> bytes:
    """`size` bytes that differ from message to message, so a mix-up or a lost byte shows."""
    stamp = f"{index}:".encode()
    return (stamp * (size // len(stamp) + 1))[:size]


# --- a real Mosquitto with a TCP, a unix socket and a TLS listener --------------------------------


@dataclass(frozen=True, slots=True)
class Broker:
    """Where the test broker listens; `process` is the mosquitto child."""

    tcp_port: int
    unix_path: Path
    tls_port: int
    ca_file: Path
    process: subprocess.Popen[bytes]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """Mosquitto, anonymous, with no limit on queued messages (a flooded subscriber loses nothing)."""
    now = datetime.now(UTC)
    authority = pki.create_authority("test CA", now)
    server = pki.issue_server(authority, pki.ServerNames.of([], ["127.0.0.1"]), now)
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"
    ca_file.write_text(authority.certificate_pem)
    cert_file.write_text(server.certificate_pem)
    key_file.write_text(server.key_pem)
    tcp_port, tls_port = free_port(), free_port()
    unix_path = tmp_path / "mqtt.sock"
    (tmp_path / "mosquitto.conf").write_text(
        "\n".join(
            [
                "user root",
                "allow_anonymous true",
                "persistence false",
                "max_queued_messages 0",
                "max_queued_bytes 0",
                f"listener {tcp_port} 127.0.0.1",
                f"listener {tls_port} 127.0.0.1",
                f"cafile {ca_file}",
                f"certfile {cert_file}",
                f"keyfile {key_file}",
                f"listener 0 {unix_path}",
                "",
            ]
        )
    )
    process = subprocess.Popen(
        ["mosquitto", "-c", str(tmp_path / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not unix_path.exists() or not listening(tls_port):
            assert time.monotonic() < deadline, "mosquitto did not start"
            assert process.poll() is None, "mosquitto exited"
            time.sleep(0.02)
        yield Broker(tcp_port, unix_path, tls_port, ca_file, process)
    finally:
        process.kill()
        process.wait(10)


TRANSPORTS = ["tcp", "unix", "tls"]


class CountingClient(DeliveringClient):
    """Counts the messages that went through paho (its on_message) rather than the fast path."""

    through_paho = 0

    def _on_message(self, client: object, userdata: object, message: Any) -> None:
        self.through_paho += 1
        super()._on_message(client, userdata, message)


def client_for(broker: Broker, transport: str, deliver: Callable[[str, bytes], None]) -> CountingClient:
    """A DeliveringClient reaching `broker` over `transport`."""
    options: dict[str, Any] = {"timeout": 5.0}
    if transport == "unix":
        return CountingClient(deliver, str(broker.unix_path), 1883, transport="unix", **options)
    port = broker.tcp_port
    if transport == "tls":
        context = ssl.create_default_context(cafile=str(broker.ca_file))
        options["tls_context"] = context
        port = broker.tls_port
    return CountingClient(deliver, "127.0.0.1", port, **options)


async def publish_raw(port: int, packets: bytes, client_id: str = "burst") -> None:
    """Send `packets` (QoS 0 PUBLISHes) as fast as TCP takes them; return once the broker has routed
    them all (it answers a PINGREQ only after everything sent before it)."""
    reader_, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(connect(client_id))
        assert await reader_.readexactly(4) == CONNACK
        writer.write(packets + PINGREQ)
        await writer.drain()
        assert await asyncio.wait_for(reader_.readexactly(2), 10) == PINGRESP
        writer.write(DISCONNECT)
        await writer.drain()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def until(condition: Callable[[], bool], within_s: float = 10.0) -> None:
    """Wait until `condition()` holds (checked every 10 ms)."""

    async def check() -> bool:
        return condition()

    await eventually(check, within_s, interval=0.01)


# --- against the real broker -----------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_burst_arrives_whole_once_and_in_order(broker: Broker, transport: str) -> None:
    # Sizes around the remaining-length steps (127/128, 16383/16384) and well over one 64 KiB read;
    # the rest are ~200-byte telemetry. Nothing follows the burst: its last packet must arrive all
    # the same (no byte may wait in the buffer for a readable event that never comes).
    special = [0, 1, 124, 125, 126, 127, 128, 16380, 16384, reader.READ_SIZE + 1, 300_000]
    sizes = special + [200] * 5000 + special
    topics = ["v1/from/HW1/s/v1/telemetry", "v1/from/HW2/s/v1/properties", "t/ümlaut/€", "t/" + "x" * 300]
    expected = [(topics[i % len(topics)], payload_for(i, size)) for i, size in enumerate(sizes)]
    got: Received = []
    async with client_for(broker, transport, lambda t, p: got.append((t, p))) as client:
        await client.subscribe("v1/#")
        await client.subscribe("t/#")
        await publish_raw(broker.tcp_port, b"".join(publish(t, p) for t, p in expected))
        await until(lambda: len(got) >= len(expected))
        await asyncio.sleep(0.05)  # nothing extra trickles in
    assert client.through_paho == 0  # all QoS 0: none took paho's slow path
    assert len(got) == len(expected)
    for index, (message, want) in enumerate(zip(got, expected, strict=True)):
        assert message == want, f"message {index} differs"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_qos1_publish_completes_while_messages_flood_in(broker: Broker, transport: str) -> None:
    got: Received = []
    stop = asyncio.Event()

    async def flood() -> None:
        reader_, writer = await asyncio.open_connection("127.0.0.1", broker.tcp_port)
        writer.write(connect("flood"))
        assert await reader_.readexactly(4) == CONNACK
        chunk = b"".join(publish("flood/x", payload_for(i, 200)) for i in range(500))
        while not stop.is_set():
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0)
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    async with client_for(broker, transport, lambda t, p: got.append((t, p))) as client:
        await client.subscribe("flood/#")
        await client.subscribe("echo/#", qos=1)  # echoes come back at QoS 1: through paho
        flooding = asyncio.create_task(flood())
        try:
            await until(lambda: len(got) > 1000)
            for i in range(30):
                await client.publish("echo/x", f"echo {i}".encode(), qos=1, timeout=5)
        finally:
            stop.set()
            await flooding
        await until(lambda: sum(1 for t, _ in got if t == "echo/x") == 30)
    assert client.through_paho == 30
    echoes = [index for index, (topic, _) in enumerate(got) if topic == "echo/x"]
    assert [got[i][1] for i in echoes] == [f"echo {i}".encode() for i in range(30)]
    # The flood really went on around the publishes, not just before them.
    assert any(topic == "flood/x" for topic, _ in got[echoes[0] : echoes[-1]])


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_losing_the_broker_ends_messages_with_mqtt_error(broker: Broker, transport: str) -> None:
    got: Received = []
    async with client_for(broker, transport, lambda t, p: got.append((t, p))) as client:
        await client.subscribe("v1/#")
        await publish_raw(broker.tcp_port, publish("v1/a", b"before"))
        await until(lambda: got == [("v1/a", b"before")])

        async def drain() -> None:
            async for _ in client.messages:
                pass

        iterating = asyncio.create_task(drain())
        await asyncio.sleep(0.05)
        broker.process.send_signal(signal.SIGKILL)
        with pytest.raises(aiomqtt.MqttError):
            await asyncio.wait_for(iterating, 10)


# --- against a scripted peer: where packets are cut is up to the test --------------------------------


@contextlib.asynccontextmanager
async def scripted_peer(
    script: Callable[[asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[int]:
    """A one-connection "broker" on a free port: reads CONNECT, answers CONNACK, runs `script`,
    then waits for the client to hang up. Yields the port."""

    async def serve(reader_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            first = await reader_.readexactly(2)
            await reader_.readexactly(first[1])  # a short CONNECT: one length byte
            writer.write(CONNACK)
            await writer.drain()
            await script(writer)
            if not writer.is_closing():
                await reader_.read()  # until the client disconnects
        except ConnectionError:
            pass
        finally:
            writer.close()

    port = free_port()
    server = await asyncio.start_server(serve, "127.0.0.1", port)
    try:
        yield port
    finally:
        server.close()
        await server.wait_closed()


async def send_in_pieces(writer: asyncio.StreamWriter, stream: bytes, cuts: Sequence[int]) -> None:
    """Write `stream` cut at `cuts`, pausing between pieces so that each is a read of its own."""
    bounds = [0, *sorted(set(cuts)), len(stream)]
    for start, end in itertools.pairwise(bounds):
        if start < end:
            writer.write(stream[start:end])
            await writer.drain()
            await asyncio.sleep(0.003)


def writes(stream: bytes) -> Callable[[asyncio.StreamWriter], Awaitable[None]]:
    """A `scripted_peer` script that sends `stream` in one write."""

    async def script(writer: asyncio.StreamWriter) -> None:
        writer.write(stream)
        await writer.drain()

    return script


async def delivered_from(
    script: Callable[[asyncio.StreamWriter], Awaitable[None]], count: int, within_s: float = 10.0
) -> Received:
    """What a DeliveringClient connected to a `scripted_peer` running `script` delivers, once it
    has delivered `count` messages (or fail after `within_s`)."""
    got: Received = []
    async with scripted_peer(script) as port:
        client = DeliveringClient(lambda t, p: got.append((t, p)), "127.0.0.1", port, timeout=5.0)
        async with client:
            await until(lambda: len(got) >= count, within_s=within_s)
    return got


async def messages_end_with(client: DeliveringClient) -> aiomqtt.MqttError:
    """Read `client.messages` to its end, which must be an MqttError within 5 s; that error."""

    async def drain() -> None:
        async for _ in client.messages:
            pass

    with pytest.raises(aiomqtt.MqttError) as caught:
        await asyncio.wait_for(drain(), 5)
    return caught.value


def split_stream() -> tuple[bytes, Received]:
    """Packets of every kind the read path tells apart, and what `deliver` must get from them."""
    messages: Received = [
        ("a/b", b"x" * 10),  # one length byte
        ("a/ü", payload_for(1, 200)),  # two length bytes
        ("a/c", payload_for(2, 20_000)),  # three length bytes
        ("a/d", b""),  # empty payload
        ("a/e", payload_for(3, 100)),  # sent at QoS 1: paho handles it
        ("a/f", payload_for(4, 130)),  # retained, QoS 0
        ("a/g", payload_for(5, 300_000)),  # several reads long
        ("a/h", b"last"),
    ]
    packets = [
        publish(*messages[0]),
        publish(*messages[1]),
        publish(*messages[2]),
        publish(*messages[3]),
        PINGRESP,  # not asked for; paho takes it in its stride
        publish(*messages[4], qos=1, mid=7),
        publish(*messages[5], retain=True),
        publish(*messages[6]),
        publish(*messages[7]),
    ]
    return b"".join(packets), messages


@pytest.mark.parametrize("seed", range(4))
async def test_packets_cut_anywhere_arrive_whole(seed: int) -> None:
    stream, expected = split_stream()
    rng = random.Random(seed)
    # Byte by byte through the first three packets' headers, then random cuts through the rest.
    cuts = list(range(1, 40)) + [rng.randrange(1, len(stream)) for _ in range(25)]

    async def script(writer: asyncio.StreamWriter) -> None:
        await send_in_pieces(writer, stream, cuts)

    assert await delivered_from(script, len(expected)) == expected


async def test_the_last_of_many_buffered_packets_is_delivered_without_more_traffic() -> None:
    # More packets than one readable event handles, all in one read, then silence: the rest must be
    # handled without another readable event.
    count = reader.MAX_PACKETS_PER_WAKEUP * 3 + 7
    expected = [(f"s/{i}", str(i).encode()) for i in range(count)]
    stream = b"".join(publish(t, p) for t, p in expected)
    assert len(stream) < reader.READ_SIZE
    assert await delivered_from(writes(stream), count, within_s=5) == expected


async def test_a_read_of_exactly_read_size_then_silence() -> None:
    # A read that fills the buffer exactly looks like "there may be more"; there is not. (Whether
    # the kernel hands it over in one read is up to it; no stall either way.)
    first = publish("s/x", b"")
    size = next(
        n for n in range(reader.READ_SIZE, 0, -1) if len(first + publish("s/y", bytes(n))) == reader.READ_SIZE
    )
    stream = first + publish("s/y", bytes(size))
    got = await delivered_from(writes(stream), 2, within_s=5)
    assert [topic for topic, _ in got] == ["s/x", "s/y"]


@pytest.mark.parametrize(
    ("tail", "name"),
    [
        (b"", "clean end after whole packets"),
        (publish("s/cut", b"z" * 500)[:300], "end in the middle of a packet"),
        (bytes([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]), "a fifth length byte (malformed)"),
        (bytes([0x00, 0x00]), "packet type 0 (reserved)"),
        (bytes([0x30, 0x00]), "a PUBLISH too short for its topic length"),
        (bytes([0x30, 0x01, 0x00]), "a PUBLISH with half a topic length"),
        (bytes([0x30, 0x04, 0x00, 0x05, 0x61, 0x62]), "a PUBLISH whose topic overruns it"),
        (_packet(0x30, b"\x00\x03s/\xff" + b"x"), "a topic that is not UTF-8 (paho gives up)"),
    ],
)
async def test_the_peer_ending_or_misbehaving_ends_messages_with_mqtt_error(tail: bytes, name: str) -> None:
    before = [("s/1", b"one"), ("s/2", b"two")]

    async def script(writer: asyncio.StreamWriter) -> None:
        writer.write(b"".join(publish(t, p) for t, p in before) + tail)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()

    got: Received = []
    async with scripted_peer(script) as port:
        client = DeliveringClient(lambda t, p: got.append((t, p)), "127.0.0.1", port, timeout=5.0)
        async with client:
            await messages_end_with(client)
    assert got == before, name


@pytest.mark.parametrize("delay", [0.0, 0.1], ids=["with CONNACK", "later"])
async def test_an_exception_in_deliver_ends_messages_with_mqtt_error(delay: float) -> None:
    async def script(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(delay)
        writer.write(publish("s/1", b"one") + publish("s/2", b"two"))
        await writer.drain()

    calls: list[str] = []

    def deliver(topic: str, payload: bytes) -> None:
        calls.append(topic)
        raise ValueError("a bug in deliver")

    async with scripted_peer(script) as port:
        client = DeliveringClient(deliver, "127.0.0.1", port, timeout=5.0)
        async with client:
            error = await messages_end_with(client)
    assert isinstance(error.__cause__, ValueError)
    assert calls == ["s/1"]  # nothing more is read from a connection given up on


async def test_a_flood_leaves_the_event_loop_room() -> None:
    # ~200 KB of small messages in the socket at once; each costs deliver ~10 us. Handled in one go
    # that would block the loop for 0.2 s or more; bounded, other tasks get a turn every few ms.
    count = 20_000
    stream = b"".join(publish("f/x", str(i).encode()) for i in range(count))

    async def script(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.1)  # the client is connected and the ticker runs
        writer.write(stream)
        await writer.drain()

    delivered: list[float] = []

    def deliver(topic: str, payload: bytes) -> None:
        now = time.perf_counter()
        delivered.append(now)
        while time.perf_counter() < now + 10e-6:
            pass

    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0)

    ticking = asyncio.create_task(ticker())
    try:
        async with scripted_peer(script) as port, DeliveringClient(deliver, "127.0.0.1", port, timeout=5.0):
            await until(lambda: len(delivered) >= count, within_s=20)
    finally:
        ticking.cancel()
        await asyncio.gather(ticking, return_exceptions=True)
    first, last = delivered[0], delivered[-1]
    took = last - first
    assert took > 0.15, took  # the flood was long enough to tell
    during = [tick for tick in ticks if first <= tick <= last]
    # At most two bounded callbacks a turn (a readable event and one continuation): 39 turns or more
    # at 256 packets a callback; unbounded, a handful. Counting turns rather than timing the longest
    # gap keeps a busy machine's preemptions out of it.
    least = max(10, count // (2 * reader.MAX_PACKETS_PER_WAKEUP) * 3 // 4)
    assert len(during) >= least, (len(during), took)
