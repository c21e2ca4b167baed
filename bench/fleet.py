"""A fleet of simulated Enapter devices for the benchmarks: hand-encoded MQTT 3.1.1 over raw sockets.

Every device has its own connection and broker credentials (the ones `generate_config` gave it)
and publishes Enapter telemetry on `v1/from/<hardware_id>/<channel_id>/v1/telemetry`: a compact
JSON object with `timestamp` (the send time, unix seconds with microseconds), `seq` (0, 1, 2, ...
per device) and sensor readings, so that a consumer can tell what was lost and how late it is.

Why not an MQTT library: an aiomqtt-based generator costs ~100 µs of CPU per message and was the
bottleneck of the measurements in perf-baselines.md §1b; this one pre-encodes the topic and formats
the payload with one `%`, a few µs per message. The devices are split over worker processes
(`multiprocessing`, spawn), each with one `selectors` loop over its sockets, so the generator is
not the limit either. What it speaks: CONNECT (username, password, clean session) and CONNACK,
PUBLISH at QoS 0, or QoS 1 with PUBACKs counted, PINGREQ when a device has been quiet for half its
keepalive, DISCONNECT at the end.

Also here, because both benchmarks need them: provisioning the devices through the gateway's HTTP
API (`provision`, `issue_logins`), reading a process's CPU time and peak memory from /proc,
profiling it with py-spy, the percentile they report, and `WrongAnswer`, which their answer checks
raise.

Used by bench/ingest.py and bench/api.py (see bench/README.md); not a script of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import math
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx

from tests.gateway_process import GatewayProcess, write_config
from tests.peers.raw_mqtt import connect_packet, mqtt_string, remaining_length

KEEPALIVE_S: Final = 60
# CONNECTs in flight per worker: more would overflow Mosquitto's listen backlog (lost SYNs are
# retried after a second) and gain nothing.
CONNECT_GROUP: Final = 100
CONNECT_TIMEOUT_S: Final = 30.0
# Unacknowledged QoS 1 PUBLISHes per device in unthrottled mode (paho's default window).
QOS1_WINDOW: Final = 20
# Throttled mode wakes up at most this often and sends what fell due meanwhile: every wakeup costs
# ~50 µs here (a timer and a cross-vCPU wakeup), which at one wakeup per message would cost more
# than the messages themselves. 5 ms of jitter in a device's send times changes nothing measured.
TICK_S: Final = 0.005
# After the last PUBLISH: how long to wait for output to drain and for the last PUBACKs.
FINISH_S: Final = 15.0
SENSORS: Final = ("temperature", "humidity", "pressure", "co2", "voc", "pm25", "battery", "rssi", "voltage")
"""Names of the sensor values a message carries besides `seq` (the first `values - 1` of them)."""

_READ: Final = selectors.EVENT_READ
_READ_WRITE: Final = selectors.EVENT_READ | selectors.EVENT_WRITE
_CONNACK: Final = 0x20
_PUBACK: Final = 0x40
_PINGRESP: Final = 0xD0
_PINGREQ: Final = b"\xc0\x00"
_DISCONNECT: Final = b"\xe0\x00"


@dataclass(frozen=True, slots=True)
class DeviceLogin:
    """What one simulated device needs: its ids and the credentials `generate_config` gave it."""

    device_id: str
    hardware_id: str
    channel_id: str
    username: str
    password: str

    @property
    def client_id(self) -> str:
        """The MQTT client id (the gateway binds none; the SDK uses the hardware id too)."""
        return self.hardware_id


@dataclass(frozen=True, slots=True)
class FleetPlan:
    """What the fleet does: who connects where, and how fast each device publishes."""

    host: str
    port: int
    devices: tuple[DeviceLogin, ...]
    # Messages per second per device; None = unthrottled (as fast as the broker takes them).
    rate: float | None
    seconds: float
    qos: int = 0
    workers: int = 2
    # Values per message: `seq` plus `values - 1` sensor readings (`timestamp` not counted).
    values: int = 8

    def __post_init__(self) -> None:
        if self.qos not in (0, 1):
            raise ValueError("qos must be 0 or 1")
        if not 1 <= self.values <= 1 + len(SENSORS):
            raise ValueError(f"values must be 1 to {1 + len(SENSORS)}")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive (None for unthrottled)")
        if self.seconds <= 0 or self.workers < 1 or not self.devices:
            raise ValueError("seconds, workers and the device count must be positive")


@dataclass(frozen=True, slots=True)
class WorkerReport:
    """What one worker did while publishing."""

    sent: int
    acked: int  # PUBACKs received (QoS 1); 0 at QoS 0
    seconds: float  # from the start time to the last PUBLISH (plan.seconds unless stopped early)
    cpu_seconds: float  # the worker's user+sys CPU from the start time to the end of its finish
    disconnected: int  # connections the broker closed (their devices stopped publishing)
    unflushed: int  # connections with output still unsent when the worker gave up waiting


@dataclass(frozen=True, slots=True)
class FleetResult:
    """The fleet's totals over every worker."""

    sent: int
    acked: int
    started_at: float  # wall-clock start of publishing (the `at` given to `Fleet.start`)
    seconds: float  # how long the devices published
    workers: tuple[WorkerReport, ...]

    @property
    def cpu_seconds(self) -> float:
        """User+sys CPU of all workers while publishing."""
        return sum(worker.cpu_seconds for worker in self.workers)

    @property
    def disconnected(self) -> int:
        return sum(worker.disconnected for worker in self.workers)

    @property
    def unflushed(self) -> int:
        return sum(worker.unflushed for worker in self.workers)


class FleetError(Exception):
    """A worker failed (cannot connect, refused credentials, ...); the message says why."""


class WrongAnswer(Exception):
    """A benchmark's check of an answer from the gateway failed: the run stops (SystemExit)."""


def telemetry_topic(hardware_id: str, channel_id: str) -> str:
    """The topic a device publishes telemetry on (enapter-device-protocol.md §1.2)."""
    return f"v1/from/{hardware_id}/{channel_id}/v1/telemetry"


def payload_template(index: int, values: int) -> bytes:
    """The `%`-template of device number `index`'s payloads, to fill with (timestamp, seq).

    The sensor readings are constants that differ per device: formatting one float and one
    integer per message is what keeps the generator cheap.
    """
    readings = b"".join(
        b',"%s":%.2f' % (name.encode(), 10.0 + 7.0 * i + (index % 97) / 10.0)
        for i, name in enumerate(SENSORS[: values - 1])
    )
    return b'{"timestamp":%.6f,"seq":%d' + readings.replace(b"%", b"%%") + b"}"


class _Connection:
    """One device's socket and its protocol state, in a worker."""

    __slots__ = (
        "acked",
        "alive",
        "connected",
        "inbuf",
        "last_sent",
        "next_id",
        "out",
        "seq",
        "sock",
        "template",
        "topic",
    )

    def __init__(self, sock: socket.socket, topic: bytes, template: bytes) -> None:
        self.sock = sock
        self.topic = topic  # the topic as an MQTT string (length bytes included)
        self.template = template
        self.out = bytearray()  # bytes the kernel did not take yet
        self.inbuf = bytearray()
        self.seq = 0  # = PUBLISHes generated so far
        self.acked = 0
        self.next_id = 1
        self.connected = False
        self.alive = True
        self.last_sent = time.monotonic()


class _Worker:
    """The publishing loop of one worker process over its share of the devices."""

    def __init__(
        self, plan: FleetPlan, indexes: Sequence[int], stop_requested: Callable[[], bool] = lambda: False
    ) -> None:
        self.plan = plan
        self.indexes = indexes
        # Asked about once a second while publishing: True ends the run early (`Fleet.stop`).
        self.stop_requested = stop_requested
        self.selector = selectors.DefaultSelector()
        self.connections: list[_Connection] = []
        self.disconnected = 0

    # --- connecting ---------------------------------------------------------------------------

    def connect(self) -> None:
        """Connect every device, CONNECT_GROUP at a time; raises FleetError if one is refused."""
        plan = self.plan
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        for first in range(0, len(self.indexes), CONNECT_GROUP):
            group: list[_Connection] = []
            for index in self.indexes[first : first + CONNECT_GROUP]:
                login = plan.devices[index]
                sock = socket.create_connection((plan.host, plan.port), timeout=CONNECT_TIMEOUT_S)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.sendall(connect_packet(login.username, login.password, login.client_id, KEEPALIVE_S))
                sock.setblocking(False)
                connection = _Connection(
                    sock,
                    mqtt_string(telemetry_topic(login.hardware_id, login.channel_id)),
                    payload_template(index, plan.values),
                )
                self.selector.register(sock, _READ, connection)
                group.append(connection)
                self.connections.append(connection)
            while not all(connection.connected for connection in group):
                if time.monotonic() > deadline:
                    raise FleetError(f"no CONNACK within {CONNECT_TIMEOUT_S:g} s")
                self.service(0.1)
            if any(not connection.alive for connection in group):
                raise FleetError("the broker closed a connection while connecting")

    # --- socket events ------------------------------------------------------------------------

    def service(self, timeout: float) -> None:
        """Wait up to `timeout` for socket events and handle them (reads, pending writes)."""
        for key, events in self.selector.select(timeout):
            connection: _Connection = key.data
            if events & selectors.EVENT_WRITE:
                self._flush(connection)
            if events & selectors.EVENT_READ:
                self._read(connection)

    def _read(self, connection: _Connection) -> None:
        try:
            data = connection.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._lost(connection)
            return
        buf = connection.inbuf
        buf += data
        start = 0
        while len(buf) - start >= 2:
            kind = buf[start]
            # Remaining length: every packet a broker sends a publisher is short (< 128 bytes).
            length = buf[start + 1]
            if length & 0x80:
                raise FleetError(f"unexpected long packet 0x{kind:02x} from the broker")
            end = start + 2 + length
            if end > len(buf):
                break
            if kind == _PUBACK:
                connection.acked += 1
            elif kind == _CONNACK:
                code = buf[start + 3]
                if code != 0:
                    # 4: bad user name or password, 5: not authorised (MQTT 3.1.1 §3.2.2.3).
                    raise FleetError(f"the broker refused a device's CONNECT with return code {code}")
                connection.connected = True
            elif kind != _PINGRESP:
                raise FleetError(f"unexpected packet 0x{kind:02x} from the broker")
            start = end
        del buf[:start]

    def _lost(self, connection: _Connection) -> None:
        if connection.alive:
            connection.alive = False
            self.disconnected += 1
            self.selector.unregister(connection.sock)
            connection.sock.close()

    def _flush(self, connection: _Connection) -> None:
        try:
            written = connection.sock.send(connection.out)
        except BlockingIOError:
            return
        except OSError:
            self._lost(connection)
            return
        del connection.out[:written]
        if not connection.out:
            self.selector.modify(connection.sock, _READ, connection)

    def _send(self, connection: _Connection, packet: bytes) -> None:
        connection.last_sent = time.monotonic()
        if connection.out:
            connection.out += packet
            return
        try:
            written = connection.sock.send(packet)
        except BlockingIOError:
            written = 0
        except OSError:
            self._lost(connection)
            return
        if written < len(packet):
            connection.out += packet[written:]
            self.selector.modify(connection.sock, _READ_WRITE, connection)

    def _publish(self, connection: _Connection, now: float) -> None:
        """Generate the device's next message and hand it to its socket."""
        body = connection.template % (now, connection.seq)
        connection.seq += 1
        topic = connection.topic
        if self.plan.qos == 0:
            header = b"\x30" + remaining_length(len(topic) + len(body))
            self._send(connection, header + topic + body)
        else:
            packet_id = connection.next_id
            connection.next_id = packet_id % 65535 + 1
            header = b"\x32" + remaining_length(len(topic) + 2 + len(body))
            self._send(connection, header + topic + packet_id.to_bytes(2, "big") + body)

    def _keepalive(self, now: float) -> None:
        """PINGREQ for devices quiet for half their keepalive (slow rates, long waits)."""
        quiet = now - KEEPALIVE_S / 2
        for connection in self.connections:
            if connection.alive and connection.last_sent < quiet:
                self._send(connection, _PINGREQ)

    def idle_until(self, deadline: float) -> None:
        """Serve the sockets (PINGRESPs, keepalive) until `deadline` (monotonic)."""
        while (left := deadline - time.monotonic()) > 0:
            self.service(min(left, 1.0))
            self._keepalive(time.monotonic())

    # --- publishing ---------------------------------------------------------------------------

    def run(self, start: float) -> WorkerReport:
        """Publish from `start` (monotonic) for plan.seconds, then drain; returns the counts."""
        self.idle_until(start)
        cpu_before = time.process_time()
        end = start + self.plan.seconds
        if self.plan.rate is None:
            self._unthrottled(end)
        else:
            self._throttled(start, end, self.plan.rate)
        seconds = min(time.monotonic(), end) - start
        unflushed = self._finish()
        return WorkerReport(
            sent=sum(connection.seq for connection in self.connections),
            acked=sum(connection.acked for connection in self.connections),
            seconds=seconds,
            cpu_seconds=time.process_time() - cpu_before,
            disconnected=self.disconnected,
            unflushed=unflushed,
        )

    def _throttled(self, start: float, end: float, rate: float) -> None:
        """Message m of the worker goes to device m % n at start + m / (n * rate): every device
        publishes at `rate`, and the devices' messages are spread evenly over time."""
        connections = self.connections
        n = len(connections)
        total_rate = n * rate
        m = 0
        next_keepalive = start + 1.0
        while (now := time.monotonic()) < end:
            due = int((now - start) * total_rate) + 1
            if due > m:
                wall = time.time()
                while m < due:
                    connection = connections[m % n]
                    if connection.alive:
                        self._publish(connection, wall)
                    m += 1
            if now >= next_keepalive:
                if self.stop_requested():
                    return
                self._keepalive(now)
                next_keepalive = now + 1.0
            next_due = max(start + m / total_rate, now + TICK_S)
            self.service(max(0.0, min(next_due, end) - time.monotonic()))

    def _unthrottled(self, end: float) -> None:
        """Round-robin over the devices, skipping one whose socket is full (or, at QoS 1, whose
        window of unacknowledged messages is): as fast as the broker takes them."""
        window = QOS1_WINDOW if self.plan.qos == 1 else None
        time_now = time.time
        next_check = time.monotonic() + 1.0
        while (now := time.monotonic()) < end:
            if now >= next_check:
                if self.stop_requested():
                    return
                next_check = now + 1.0
            published = False
            for connection in self.connections:
                if not connection.alive or connection.out:
                    continue
                if window is not None and connection.seq - connection.acked >= window:
                    continue
                self._publish(connection, time_now())
                published = True
            self.service(0.0 if published else 0.001)

    def _finish(self) -> int:
        """Flush every socket (and at QoS 1 wait for the PUBACKs), then DISCONNECT; returns the
        connections that still had output after FINISH_S."""
        deadline = time.monotonic() + FINISH_S

        def pending() -> bool:
            return any(
                connection.alive
                and (connection.out or (self.plan.qos == 1 and connection.acked < connection.seq))
                for connection in self.connections
            )

        while pending() and time.monotonic() < deadline:
            self.service(0.05)
        unflushed = 0
        for connection in self.connections:
            if not connection.alive:
                continue
            if connection.out:
                unflushed += 1
            else:
                with contextlib.suppress(OSError):  # closing anyway
                    connection.sock.send(_DISCONNECT)
            self.selector.unregister(connection.sock)
            connection.sock.close()
            connection.alive = False
        return unflushed


def _worker_main(
    plan: FleetPlan, indexes: Sequence[int], pipe: multiprocessing.connection.Connection
) -> None:
    """A worker process: connect, report ready, wait for the start time, publish, report."""
    # Ctrl-C reaches the whole process group; the parent stops the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # After "start", whatever the parent sends means "stop".
    worker = _Worker(plan, indexes, stop_requested=pipe.poll)
    try:
        began = time.monotonic()
        worker.connect()
        pipe.send(("ready", time.monotonic() - began))
        while not pipe.poll(1.0):
            worker.idle_until(time.monotonic() + 0.001)  # answer PINGRESPs while waiting
        kind, at = pipe.recv()
        if kind != "start":
            return
        start = time.monotonic() + (at - time.time())
        pipe.send(("done", worker.run(start)))
    except (OSError, FleetError) as exc:
        pipe.send(("error", f"{exc!r}\n{traceback.format_exc()}"))
    except EOFError:
        return  # the parent went away
    finally:
        for connection in worker.connections:
            connection.sock.close()


class Fleet:
    """The worker processes of one fleet run. Use as a context manager: every worker is stopped on
    exit, whatever happened.

    `connect()` connects every device (returns the seconds it took), `start(at)` makes them
    publish from wall-clock time `at` for plan.seconds (or until `stop()`), `finish()` waits for
    the totals.
    """

    def __init__(self, plan: FleetPlan) -> None:
        self.plan = plan
        self._processes: list[multiprocessing.process.BaseProcess] = []
        self._pipes: list[multiprocessing.connection.Connection] = []
        self._started_at = 0.0

    def __enter__(self) -> Fleet:
        # spawn, not fork: the parent may have threads (asyncio, httpx) that fork would copy mid-state.
        context = multiprocessing.get_context("spawn")
        workers = min(self.plan.workers, len(self.plan.devices))
        for w in range(workers):
            parent, child = context.Pipe()
            indexes = range(w, len(self.plan.devices), workers)
            process = context.Process(
                target=_worker_main, args=(self.plan, indexes, child), name=f"fleet-{w}", daemon=True
            )
            process.start()
            child.close()
            self._processes.append(process)
            self._pipes.append(parent)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def pids(self) -> tuple[int, ...]:
        """The worker processes' ids."""
        return tuple(process.pid for process in self._processes if process.pid is not None)

    def close(self) -> None:
        """Stop every worker still running (SIGTERM, then SIGKILL) and close the pipes."""
        for process in self._processes:
            if process.is_alive():
                process.terminate()
        for process in self._processes:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join()
        for pipe in self._pipes:
            pipe.close()
        self._processes.clear()
        self._pipes.clear()

    def _receive(self, expected: str, timeout: float) -> Iterator[object]:
        deadline = time.monotonic() + timeout
        for pipe, process in zip(self._pipes, self._processes, strict=True):
            while not pipe.poll(0.2):
                if not process.is_alive():
                    raise FleetError(f"fleet worker {process.name} exited with status {process.exitcode}")
                if time.monotonic() > deadline:
                    raise FleetError(f"fleet worker {process.name}: no {expected!r} within {timeout:g} s")
            kind, value = pipe.recv()
            if kind == "error":
                raise FleetError(f"fleet worker {process.name} failed: {value}")
            if kind != expected:
                raise FleetError(f"fleet worker {process.name} said {kind!r}, expected {expected!r}")
            yield value

    def connect(self, timeout: float = 120.0) -> float:
        """Wait until every device is connected (CONNACK); returns the seconds that took."""
        began = time.monotonic()
        for _ in self._receive("ready", timeout):
            pass
        return time.monotonic() - began

    def start(self, at: float) -> None:
        """Publish from wall-clock time `at` (give the workers a moment: they sleep until then)."""
        self._started_at = at
        for pipe in self._pipes:
            pipe.send(("start", at))

    def stop(self) -> None:
        """End publishing now (within a second) instead of after plan.seconds."""
        for pipe in self._pipes:
            pipe.send(("stop", 0.0))

    def finish(self, timeout: float | None = None) -> FleetResult:
        """Wait for every worker's report (blocking; call it after the run's end)."""
        wait = (
            timeout if timeout is not None else max(0.0, self._started_at - time.time()) + self.plan.seconds
        )
        reports = [
            report
            for report in self._receive("done", wait + FINISH_S + 30.0)
            if isinstance(report, WorkerReport)
        ]
        if len(reports) != len(self._processes):
            raise FleetError("a fleet worker sent no report")
        return FleetResult(
            sent=sum(report.sent for report in reports),
            acked=sum(report.acked for report in reports),
            started_at=self._started_at,
            seconds=max(report.seconds for report in reports),
            workers=tuple(reports),
        )


# --- provisioning through the HTTP API ----------------------------------------------------------

# Requests in flight while provisioning: each one is a durable transaction and a broker control
# command in the daemon, so a few at a time is what it can overlap.
PROVISION_CONCURRENCY: Final = 8


async def issue_logins(client: httpx.AsyncClient, device_ids: Sequence[str]) -> tuple[DeviceLogin, ...]:
    """`POST /v3/devices/{id}/generate_config` with protocol MQTT for each device (an INSTALLER
    token in `client`): the credentials each simulated device connects with, in the given order."""
    limit = asyncio.Semaphore(PROVISION_CONCURRENCY)

    async def one(device_id: str) -> DeviceLogin:
        async with limit:
            response = await client.post(
                f"/v3/devices/{device_id}/generate_config", json={"protocol": "MQTT"}
            )
        if response.status_code != 200:
            raise FleetError(f"generate_config answered {response.status_code}: {response.text[:300]}")
        config = response.json()["config"]
        credentials = config["mqtt_credentials"]
        return DeviceLogin(
            device_id=device_id,
            hardware_id=config["hardware_id"],
            channel_id=config["channel_id"],
            username=credentials["username"],
            password=credentials["password"],
        )

    return tuple(await asyncio.gather(*(one(device_id) for device_id in device_ids)))


async def provision(client: httpx.AsyncClient, count: int, name: str = "Bench") -> tuple[DeviceLogin, ...]:
    """Create `count` standalone devices (`POST /v3/provisioning/standalone`, named `<name> <i>`)
    and issue their MQTT credentials; needs an INSTALLER token in `client`."""
    limit = asyncio.Semaphore(PROVISION_CONCURRENCY)

    async def create(i: int) -> str:
        async with limit:
            response = await client.post("/v3/provisioning/standalone", json={"name": f"{name} {i}"})
        if response.status_code != 200:
            raise FleetError(f"provisioning answered {response.status_code}: {response.text[:300]}")
        device_id: str = response.json()["device_id"]
        return device_id

    device_ids = await asyncio.gather(*(create(i) for i in range(count)))
    return await issue_logins(client, device_ids)


# --- measuring processes ------------------------------------------------------------------------

_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far, all its threads (/proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces; everything after its ')' is space-separated,
    # starting with field 3, so utime and stime (fields 14 and 15) are at 11 and 12.
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def peak_rss_bytes(pid: int) -> int:
    """The peak resident set size of process `pid` (VmHWM in /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise LookupError(f"no VmHWM for process {pid}")


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (`fraction` in (0, 1]) of a non-empty sequence."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def detached() -> tuple[str, ...]:
    """A command prefix (`GatewayProcess.wrapper`) that runs the daemon in its own session, so that
    a Ctrl-C reaches only the benchmark, which then stops everything in order, and that makes it
    die with the benchmark (parent-death signal) if that is killed outright."""
    setsid, setpriv = shutil.which("setsid"), shutil.which("setpriv")
    return (setsid, setpriv, "--pdeathsig", "TERM", "--") if setsid and setpriv else ()


# --- profiling (optional) ----------------------------------------------------------------------


PROFILE_HZ: Final = 100


def py_spy() -> str | None:
    """The py-spy executable (on PATH or next to this interpreter), if installed."""
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def check_work_options(parser: argparse.ArgumentParser, options: argparse.Namespace) -> None:
    """What the benches' shared `--dir` and `--profile` flags need: an empty work directory, and
    py-spy for a profile (whose path is made absolute: the daemon runs elsewhere)."""
    if options.dir is not None and options.dir.exists() and any(options.dir.iterdir()):
        parser.error(f"{options.dir} is not empty")
    if options.profile is not None:
        options.profile = options.profile.resolve()
        if py_spy() is None:
            parser.error("--profile needs py-spy (pip install py-spy)")


def start_profiler(pid: int, seconds: float, output: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling every thread of process `pid` (PROFILE_HZ, without pausing it) for
    `seconds`; collapsed stacks go to `output`. Raises FileNotFoundError without py-spy."""
    executable = py_spy()
    if executable is None:
        raise FileNotFoundError("py-spy is not installed (pip install py-spy)")
    duration = str(math.ceil(seconds))
    return subprocess.Popen(
        [
            *(executable, "record", "--pid", str(pid), "--rate", str(PROFILE_HZ), "--duration", duration),
            *("--threads", "--nonblocking", "--format", "raw", "--output", str(output)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_profiler(profiler: subprocess.Popen[bytes]) -> None:
    """Stop py-spy at once (the run failed: nothing to report)."""
    if profiler.poll() is None:
        profiler.kill()
        profiler.wait()


async def finish_profiler(profiler: subprocess.Popen[bytes], output: Path, seconds: float) -> None:
    """Wait for py-spy to end its recording, then print where each busy thread spent its time."""
    try:
        await asyncio.wait_for(asyncio.to_thread(profiler.wait), 60)
    except TimeoutError:
        profiler.kill()
        profiler.wait()
    try:
        collapsed = await asyncio.to_thread(output.read_text)
    except FileNotFoundError:
        print(f"  profile: py-spy wrote nothing (exit status {profiler.returncode})")
        return
    print_profile(collapsed, seconds)


def _package(location: str) -> str:
    """What a frame's file belongs to: `gateway/store`, `paho`, `asyncio`, `json`, ..."""
    parts = location.split("/")
    if parts[0] == "gateway" and len(parts) > 2:
        return "/".join(parts[:2])
    return parts[0].removesuffix(".py") if len(parts) > 1 else location.removesuffix(".py")


def print_profile(collapsed: str, seconds: float) -> None:
    """Per thread of a py-spy `--threads --format raw` recording: how busy it was (share of the
    recording's wall-clock time), its functions by own samples (where the CPU was, native code
    counted to the Python function that called it) and the same summed by package."""
    own: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    packages: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if len(frames) < 2:
            continue
        # "thread (<tid>): <name>" then "function (file.py:line)" frames, innermost last.
        thread = frames[0].partition(": ")[2] or frames[0]
        name, _, where = frames[-1].partition(" (")
        location = where.rsplit(":", 1)[0].rstrip(")")
        own[thread][f"{name} ({location})"] += int(count)
        packages[thread][_package(location)] += int(count)
    ticks = PROFILE_HZ * seconds
    print(f"  profile: py-spy at {PROFILE_HZ} Hz over {seconds:g} s; % = share of wall-clock time")
    for thread, functions in sorted(own.items(), key=lambda item: -item[1].total()):
        busy = functions.total()
        if busy < 0.02 * ticks:
            continue
        print(f"  thread {thread}: busy {100 * busy / ticks:.0f} %")
        shares = (f"{package} {100 * n / ticks:.1f}" for package, n in packages[thread].most_common(8))
        print(f"    by package (%): {', '.join(shares)}")
        for function, samples in functions.most_common(12):
            print(f"    {100 * samples / ticks:5.1f} %  {function}")


_DAY: Final = 86_400.0
QUIET: Final[dict[str, dict[str, object]]] = {
    # Nothing loaded or sent may be deleted, and no request refused, while a benchmark runs.
    "retention": {
        "telemetry_raw": 7 * _DAY,
        "telemetry_1m": 90 * _DAY,
        "telemetry_1h": 3650 * _DAY,
        "max_database_mb": 0,
    },
    "api.rate_limit": {"requests": 0, "anonymous_requests": 0},
}
"""The config overrides every load benchmark runs with (plus its own)."""


@contextlib.contextmanager
def bench_gateway(
    work_dir: Path | None, keep: bool, overrides: dict[str, dict[str, object]]
) -> Iterator[GatewayProcess]:
    """A daemon (not started yet, detached: see `detached`) on a `QUIET` config with `overrides`, in
    `work_dir` (kept) or a new temporary directory (deleted unless `keep`).

    On the way out it is stopped; a wrong answer ends the run with its message, Ctrl-C with status
    130, anything else after the tail of the daemon's log.
    """
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
        directory = work_dir.resolve()
    else:
        directory = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    config, api_port, mqtt_port = write_config(directory, {**QUIET, **overrides})
    gateway = GatewayProcess(directory, config, api_port, mqtt_port, wrapper=detached())
    try:
        yield gateway
    except WrongAnswer as exc:
        raise SystemExit(f"wrong answer: {exc}") from None
    except KeyboardInterrupt:
        print("interrupted; stopping everything", file=sys.stderr)
        raise SystemExit(130) from None
    except BaseException:
        if gateway.process is not None:
            print(gateway.log()[-4000:], file=sys.stderr)
        raise
    finally:
        gateway.stop()
        if keep or work_dir is not None:
            print(f"kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
