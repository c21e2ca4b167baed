"""Benchmark of the ingest path: a fleet of simulated devices against a real daemon, and against a
bare aiomqtt subscriber on the same broker with the same load, in one run.

1. Starts `enapter-gateway run` (managed Mosquitto) on free loopback ports, provisions `--devices`
   standalone devices through the HTTP API (provisioning, then generate_config for MQTT) and
   restarts the daemon, so that what is measured is a daemon that starts with its fleet known.
2. Gateway phase: the fleet (bench/fleet.py) publishes `--rate` messages/s per device (or as fast
   as the broker takes them, `--unthrottled`) for `--seconds`. Measured: messages sent, stored
   (counted in the database afterwards; `/metrics` while running) and lost; the ingest rate; the
   delay from publish to visible in `GET /api/v3/telemetry/latest` on a sample of devices; the
   daemon's CPU and peak RSS, and Mosquitto's.
3. Bare phase: the daemon stops; the same Mosquitto binary starts from the config and accounts the
   daemon's broker ran with, plus one account for the bench; an aiomqtt subscriber that only counts
   (`async for message in client.messages`), connected as ingest is (the admin unix socket, the
   same subscription), receives the same fleet's load. Its receive rate is the
   denominator of the ratio gateway/bare.

Run from the repository root: `PYTHONPATH=. python bench/ingest.py`. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import dataclasses
import json
import logging
import math
import multiprocessing
import multiprocessing.synchronize
import os
import random
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiomqtt
import httpx
from fleet import (
    DeviceLogin,
    Fleet,
    FleetPlan,
    FleetResult,
    WrongAnswer,
    bench_gateway,
    check_work_options,
    cpu_seconds,
    finish_profiler,
    peak_rss_bytes,
    percentile,
    provision,
    start_profiler,
    stop_profiler,
)

from gateway.mqtt import dynsec, topics
from gateway.mqtt.broker import BrokerFiles, find_mosquitto
from gateway.store.store import DATABASE_FILE
from tests.gateway_process import GatewayProcess

# Targets (issue 7): at TARGET_DEVICES x TARGET_RATE no loss and p99 under LATENCY_TARGET_S;
# unthrottled, the gateway stores at least RATIO_TARGET x what the bare subscriber receives;
# the daemon's peak RSS under RSS_TARGET_BYTES (150 MB, decimal: the stricter reading).
TARGET_DEVICES: Final = 1_000
TARGET_RATE: Final = 5.0
LATENCY_TARGET_S: Final = 2.0
RATIO_TARGET: Final = 0.6
RSS_TARGET_BYTES: Final = 150_000_000

# The fleet starts publishing this long after it is told to (every worker sleeps until then).
START_DELAY_S: Final = 1.0
# A phase is over when everything sent was handled, or when nothing more arrived for this long.
DRAIN_QUIET_S: Final = 10.0
DRAIN_LIMIT_S: Final = 180.0
PROGRESS_EVERY_S: Final = 10.0
BARE_USERNAME: Final = "bench-bare-subscriber"
# aiomqtt's queue of received messages is unbounded by default; an overloaded subscriber would grow
# without limit. 50,000 is the bound ingest used when it read through that queue too.
BARE_QUEUE: Final = 50_000


@dataclass(frozen=True, slots=True)
class Usage:
    """CPU seconds of the consumer (daemon or bare subscriber) and of the broker, at a moment."""

    at: float  # wall clock
    handled: int  # messages stored (gateway) or received (bare) so far in the phase
    consumer_cpu: float
    broker_cpu: float


@dataclass(frozen=True, slots=True)
class Phase:
    """What one phase measured."""

    fleet: FleetResult
    handled: int  # stored (gateway) or received (bare), drain included
    window_start: Usage  # when publishing started
    window_end: Usage  # when publishing ended
    drained: Usage  # when everything was handled (or nothing more came)
    consumer_peak_rss: int
    broker_peak_rss: int

    @property
    def lost(self) -> int:
        return self.fleet.sent - self.handled

    @property
    def rate(self) -> float:
        """Messages handled per second from the first publish to the last message handled: what
        the consumer sustained, its queues' backlog drained after the fleet stopped included."""
        return (self.drained.handled - self.window_start.handled) / self._span()

    @property
    def window_rate(self) -> float:
        """Messages handled per second while the fleet was publishing."""
        return (self.window_end.handled - self.window_start.handled) / (
            self.window_end.at - self.window_start.at
        )

    @property
    def drain_seconds(self) -> float:
        return self.drained.at - self.window_end.at

    def consumer_cpu_percent(self) -> float:
        """The consumer's CPU from the start of publishing to the end of the drain, % of one core."""
        return 100 * (self.drained.consumer_cpu - self.window_start.consumer_cpu) / self._span()

    def broker_cpu_percent(self) -> float:
        return 100 * (self.drained.broker_cpu - self.window_start.broker_cpu) / self._span()

    def consumer_us_per_message(self) -> float:
        handled = self.drained.handled - self.window_start.handled
        cpu = self.drained.consumer_cpu - self.window_start.consumer_cpu
        return 1e6 * cpu / handled if handled else math.nan

    def _span(self) -> float:
        return max(self.drained.at - self.window_start.at, 1e-9)


# --- the daemon's side --------------------------------------------------------------------------


async def scrape(client: httpx.AsyncClient) -> dict[str, float]:
    """The daemon's /metrics as {"name{labels}": value}."""
    response = await client.get("/metrics")
    response.raise_for_status()
    values: dict[str, float] = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


class LatencyProbe:
    """Polls `telemetry/latest` for the `seq` of a sample of devices; every new `seq` seen gives one
    latency: when the answer arrived minus the message's `timestamp` (its send time). The poll
    interval bounds how much that overstates the true delay."""

    def __init__(self, client: httpx.AsyncClient, sample: Sequence[DeviceLogin], interval: float) -> None:
        self._client = client
        self._sample = sample
        self._interval = interval
        self._last: dict[str, int] = {}
        self.latencies: list[float] = []
        self.polls = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until `stop` is set; a wrong answer raises WrongAnswer."""
        params = {f"devices[{login.device_id}]": "seq" for login in self._sample}
        while not stop.is_set():
            began = time.time()
            response = await self._client.get("/v3/telemetry/latest", params=params)
            seen = time.time()
            self.polls += 1
            if response.status_code != 200:
                raise WrongAnswer(f"telemetry/latest answered {response.status_code}: {response.text[:500]}")
            body = response.json()["telemetry"]
            for login in self._sample:
                entry = body[login.device_id]["seq"]
                if "value" not in entry:
                    continue  # nothing stored yet for this device
                self._check_and_count(login.device_id, entry, seen)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, self._interval - (time.time() - began)))

    def _check_and_count(self, device_id: str, entry: dict[str, object], seen: float) -> None:
        seq, timestamp = entry["value"], entry.get("timestamp")
        if not isinstance(seq, int) or not isinstance(timestamp, int | float):
            raise WrongAnswer(f"telemetry/latest: device {device_id} seq: {entry!r}")
        if timestamp > seen + 1:
            raise WrongAnswer(f"telemetry/latest: device {device_id} seq {seq} is from the future: {entry!r}")
        previous = self._last.get(device_id)
        if previous is not None and seq < previous:
            raise WrongAnswer(f"telemetry/latest: device {device_id}: seq went back from {previous} to {seq}")
        if seq != previous:
            self._last[device_id] = seq
            self.latencies.append(seen - timestamp)


def stored_messages(database: Path) -> tuple[int, int]:
    """(messages stored, distinct (device, seq) among them), counted in the database of a stopped
    daemon: every stored message has exactly one `seq` row in telemetry_raw."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        row = db.execute(
            "SELECT count(*), count(DISTINCT r.series_id || '/' || r.value) FROM telemetry_raw AS r"
            " JOIN telemetry_series AS s ON s.id = r.series_id WHERE s.attribute = 'seq'"
        ).fetchone()
    return int(row[0]), int(row[1])


async def sleep_until(at: float) -> None:
    """Sleep until wall-clock time `at`."""
    await asyncio.sleep(max(0.0, at - time.time()))


async def measure(
    fleet: Fleet,
    count: Callable[[], Awaitable[int]],
    consumer_pid: int,
    broker_pid: int,
    progress: Callable[[], Awaitable[str]],
) -> tuple[FleetResult, Usage, Usage, Usage]:
    """Start the connected fleet, sample usage at the start and end of publishing, wait for the
    fleet's totals and for the consumer to handle everything (or go quiet)."""

    async def usage() -> Usage:
        handled = await count()
        return Usage(time.time(), handled, cpu_seconds(consumer_pid), cpu_seconds(broker_pid))

    at = time.time() + START_DELAY_S
    fleet.start(at)
    await sleep_until(at)
    start = await usage()
    end_at = at + fleet.plan.seconds
    while (left := end_at - time.time()) > PROGRESS_EVERY_S:
        await asyncio.sleep(PROGRESS_EVERY_S)
        print(f"  {time.time() - at:5.0f} s: {await progress()}", flush=True)
    await asyncio.sleep(max(0.0, left))
    end = await usage()
    result = await asyncio.to_thread(fleet.finish)
    # The drain ends with the last message handled: the quiet wait after it does not count.
    drained = end
    deadline = time.monotonic() + DRAIN_LIMIT_S
    while drained.handled < result.sent and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        now = await usage()
        if now.handled != drained.handled:
            drained = now
        elif now.at - drained.at > DRAIN_QUIET_S:
            break
    return result, start, end, drained


@dataclass(frozen=True, slots=True)
class GatewayRun:
    """The gateway phase: the common figures, the latencies, and the daemon's own loss counters."""

    phase: Phase
    latencies: list[float]
    polls: int
    # Counter name -> increase over the phase, for the counters that say where messages went.
    counters: dict[str, int]


LOSS_COUNTERS: Final = (
    "gateway_mqtt_messages_received_total",
    "gateway_mqtt_messages_dropped_total",
    "gateway_store_items_dropped_total",
)


async def gateway_phase(
    gateway: GatewayProcess, logins: Sequence[DeviceLogin], options: argparse.Namespace
) -> GatewayRun:
    """Run the fleet against the daemon."""
    assert gateway.process is not None
    daemon_pid = gateway.process.pid
    broker_pid = int(BrokerFiles(gateway.state_dir / "broker").pid.read_text())
    token = gateway.create_token("READONLY", name="bench-latency")
    metrics_client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.api_port}", timeout=30)
    api = httpx.AsyncClient(base_url=gateway.base_url, headers={"X-Enapter-Auth-Token": token}, timeout=30)
    async with metrics_client, api:
        before = await scrape(metrics_client)
        baseline = before["gateway_store_items_committed_total"]

        async def committed() -> int:
            return int((await scrape(metrics_client))["gateway_store_items_committed_total"] - baseline)

        async def progress() -> str:
            m = await scrape(metrics_client)
            dropped = sum(v for k, v in m.items() if k.startswith("gateway_mqtt_messages_dropped_total"))
            return (
                f"received {m['gateway_mqtt_messages_received_total']:,.0f},"
                f" stored {m['gateway_store_items_committed_total'] - baseline:,.0f},"
                f" store queue {m['gateway_store_queue_depth']:,.0f}, dropped {dropped:,.0f}"
            )

        with Fleet(plan(gateway.mqtt_port, logins, options)) as fleet:
            connect_s = await asyncio.to_thread(fleet.connect)
            # The broker's connect notices reach ingest as messages too: let them pass first.
            deadline = time.monotonic() + 60
            while (await scrape(metrics_client))["gateway_devices_connected"] < len(logins):
                if time.monotonic() > deadline:
                    raise SystemExit("the daemon did not see every device connect within 60 s")
                await asyncio.sleep(0.2)
            print(f"  {len(logins):,} devices connected in {connect_s:.1f} s", flush=True)
            sample = random.sample(list(logins), min(options.sample, len(logins)))
            probe = LatencyProbe(api, sample, options.poll)
            stop = asyncio.Event()
            poller = asyncio.create_task(probe.run(stop))
            measuring = asyncio.create_task(measure(fleet, committed, daemon_pid, broker_pid, progress))
            profiler = (
                start_profiler(daemon_pid, options.seconds + START_DELAY_S, options.profile)
                if options.profile
                else None
            )
            try:
                # The probe only ends early on a wrong answer: that stops the run at once.
                await asyncio.wait((poller, measuring), return_when=asyncio.FIRST_COMPLETED)
                if poller.done():
                    measuring.cancel()
                    await poller  # raises what the probe found
                result, start, end, drained = await measuring
            except BaseException:
                if profiler is not None:
                    stop_profiler(profiler)
                raise
            finally:
                stop.set()
                measuring.cancel()
                await asyncio.gather(poller, measuring, return_exceptions=True)
            if profiler is not None:
                await finish_profiler(profiler, options.profile, options.seconds)
        after = await scrape(metrics_client)
    counters = {
        name: int(value - before.get(name, 0.0))
        for name, value in after.items()
        if name.startswith(LOSS_COUNTERS) and value != before.get(name, 0.0)
    }
    phase = Phase(
        fleet=result,
        handled=drained.handled,
        window_start=start,
        window_end=end,
        drained=drained,
        consumer_peak_rss=peak_rss_bytes(daemon_pid),
        broker_peak_rss=peak_rss_bytes(broker_pid),
    )
    return GatewayRun(phase=phase, latencies=probe.latencies, polls=probe.polls, counters=counters)


# --- the bare phase -----------------------------------------------------------------------------


def write_bare_broker(state_dir: Path, directory: Path) -> tuple[Path, str]:
    """A copy of the daemon's broker config whose dynsec file (a copy too) has one more account,
    allowed what the daemon's admin account is; returns (config path, that account's password)."""
    files = BrokerFiles(state_dir / "broker")
    password = secrets.token_urlsafe(24)
    hashed = dynsec.hash_password(password, os.urandom(dynsec.SALT_BYTES))
    document = json.loads(files.dynsec.read_text())
    document["clients"].append(
        {
            "username": BARE_USERNAME,
            "roles": [{"rolename": dynsec.ADMIN_ROLE, "priority": 0}],
            "password": hashed.hash_b64,
            "salt": hashed.salt_b64,
            "iterations": hashed.iterations,
        }
    )
    directory.mkdir(mode=0o700, exist_ok=True)
    bare_dynsec = directory / "dynsec.json"
    bare_dynsec.write_text(json.dumps(document))
    lines = [
        f"plugin_opt_config_file {bare_dynsec}" if line.startswith("plugin_opt_config_file ") else line
        for line in files.config.read_text().splitlines()
    ]
    config = directory / "mosquitto.conf"
    config.write_text("\n".join(lines) + "\n")
    return config, password


def start_broker(config: Path, socket_path: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """Mosquitto on `config`, dying with this process (as the daemon starts it); waits until both
    the admin unix socket and the device port accept connections."""
    setpriv = shutil.which("setpriv")
    mosquitto = find_mosquitto("mosquitto")
    socket_path.unlink(missing_ok=True)
    with log.open("ab") as output:
        process = subprocess.Popen(
            [*((setpriv, "--pdeathsig", "TERM", "--") if setpriv else ()), mosquitto, "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"mosquitto exited with status {process.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with socket.socket(socket.AF_UNIX) as unix:
                unix.connect(str(socket_path))
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            time.sleep(0.05)
    stop_process(process)
    raise SystemExit(f"mosquitto did not listen within 10 s:\n{log.read_text()[-2000:]}")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 5 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def bare_subscriber(
    socket_path: str, password: str, counter: ctypes.c_longlong, ready: multiprocessing.synchronize.Event
) -> None:
    """The bare subscriber's process: connect over the admin socket as ingest does, subscribe to
    the device topics as ingest does, and count what `client.messages` yields."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it
    # aiomqtt warns once per message it discards from its full queue: hundreds of thousands of
    # lines on the terminal when overloaded, which would slow the very thing measured. The drops
    # themselves count as lost.
    logging.getLogger("mqtt").setLevel(logging.ERROR)

    async def receive() -> None:
        async with aiomqtt.Client(
            socket_path,
            1883,  # unused on a unix socket, but paho wants a valid port
            transport="unix",
            username=BARE_USERNAME,
            password=password,
            max_queued_incoming_messages=BARE_QUEUE,
        ) as client:
            await client.subscribe(topics.DEVICE_SUBSCRIPTION)
            ready.set()
            async for _ in client.messages:
                counter.value += 1

    asyncio.run(receive())


async def bare_phase(
    state_dir: Path,
    directory: Path,
    mqtt_port: int,
    logins: Sequence[DeviceLogin],
    options: argparse.Namespace,
) -> Phase:
    """Run the same fleet against the bare subscriber on the daemon's broker config (daemon stopped)."""
    config, password = write_bare_broker(state_dir, directory / "bare-broker")
    socket_path = BrokerFiles(state_dir / "broker").socket
    broker = start_broker(config, socket_path, mqtt_port, directory / "bare-broker" / "mosquitto.log")
    context = multiprocessing.get_context("spawn")
    counter = context.RawValue(ctypes.c_longlong, 0)
    ready = context.Event()
    subscriber = context.Process(
        target=bare_subscriber, args=(str(socket_path), password, counter, ready), daemon=True
    )
    subscriber.start()
    try:
        if not await asyncio.to_thread(ready.wait, 30):
            raise SystemExit("the bare subscriber did not subscribe within 30 s")
        assert subscriber.pid is not None

        async def received() -> int:
            return int(counter.value)

        async def progress() -> str:
            return f"received {counter.value:,}"

        with Fleet(plan(mqtt_port, logins, options)) as fleet:
            connect_s = await asyncio.to_thread(fleet.connect)
            print(f"  {len(logins):,} devices connected in {connect_s:.1f} s", flush=True)
            result, start, end, drained = await measure(fleet, received, subscriber.pid, broker.pid, progress)
        return Phase(
            fleet=result,
            handled=drained.handled,
            window_start=start,
            window_end=end,
            drained=drained,
            consumer_peak_rss=peak_rss_bytes(subscriber.pid),
            broker_peak_rss=peak_rss_bytes(broker.pid),
        )
    finally:
        if subscriber.is_alive():
            subscriber.terminate()
        subscriber.join(5)
        if subscriber.is_alive():
            subscriber.kill()
            subscriber.join()
        stop_process(broker)


# --- the run ------------------------------------------------------------------------------------


def plan(port: int, logins: Sequence[DeviceLogin], options: argparse.Namespace) -> FleetPlan:
    """The fleet of one phase (both phases get the same)."""
    return FleetPlan(
        host="127.0.0.1",
        port=port,
        devices=tuple(logins),
        rate=None if options.unthrottled else options.rate,
        seconds=options.seconds,
        qos=options.qos,
        workers=options.fleet_workers,
        values=options.values,
    )


def mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def print_phase(phase: Phase, handled: str) -> None:
    """The figures both phases share."""
    fleet = phase.fleet
    lost = phase.lost
    print(
        f"  sent {fleet.sent:,} ({fleet.sent / fleet.seconds:,.0f} msg/s offered),"
        f" {handled} {phase.handled:,}, lost {lost:,} ({100 * lost / fleet.sent if fleet.sent else 0:.3f} %);"
        f" drained {phase.drain_seconds:.1f} s after the last send"
    )
    if fleet.disconnected or fleet.unflushed:
        print(
            f"  WARNING: the broker closed {fleet.disconnected} device connections;"
            f" {fleet.unflushed} had unsent output at the end"
        )
    if fleet.acked:
        print(f"  QoS 1: {fleet.acked:,} PUBACKs for {fleet.sent:,} PUBLISHes")
    print(
        f"  {handled} rate {phase.rate:,.0f} msg/s ({phase.window_rate:,.0f} while publishing);"
        f" CPU {phase.consumer_cpu_percent():.0f} % of one core"
        f" ({phase.consumer_us_per_message():.0f} µs/msg),"
        f" peak RSS {mb(phase.consumer_peak_rss)}"
    )
    print(
        f"  mosquitto: CPU {phase.broker_cpu_percent():.0f} %, peak RSS {mb(phase.broker_peak_rss)};"
        f" generator: {len(fleet.workers)} process{'es' if len(fleet.workers) != 1 else ''},"
        f" {100 * fleet.cpu_seconds / (fleet.seconds * len(fleet.workers)):.0f} % of one core each"
    )


def verdict(met: bool | None) -> str:
    return "n/a" if met is None else "met" if met else "MISSED"


async def run(gateway: GatewayProcess, directory: Path, options: argparse.Namespace) -> bool:
    """Provision, both phases, the report; True when every target that applies is met."""
    gateway.start()
    token = gateway.create_token("INSTALLER", name="bench-provisioning")
    began = time.perf_counter()
    async with httpx.AsyncClient(
        base_url=gateway.base_url, headers={"X-Enapter-Auth-Token": token}, timeout=60
    ) as client:
        logins = await provision(client, options.devices)
    print(f"provisioned {len(logins):,} devices through the API in {time.perf_counter() - began:.1f} s")
    # Measure a daemon that starts with its fleet known, not one that just provisioned it.
    gateway.stop()
    gateway.start()

    print(f"gateway phase (load average {load_average()}):", flush=True)
    measured = await gateway_phase(gateway, logins, options)
    status = gateway.stop()
    if status != 0:
        raise SystemExit(f"the daemon exited with status {status}:\n{gateway.log()[-4000:]}")
    gateway_run = count_stored(measured.phase, gateway.state_dir / DATABASE_FILE)
    print_phase(gateway_run, "stored")
    print_losses(gateway_run, measured.counters)
    latencies = measured.latencies
    p50 = percentile(latencies, 0.5) if latencies else math.nan
    p99 = percentile(latencies, 0.99) if latencies else math.nan
    print(
        f"  publish -> telemetry/latest: p50 {p50 * 1000:,.0f} ms / p99 {p99 * 1000:,.0f} ms"
        f" / max {max(latencies, default=math.nan) * 1000:,.0f} ms over {len(latencies):,} new values"
        f" ({min(options.sample, len(logins))} devices polled every {options.poll * 1000:.0f} ms,"
        f" {measured.polls:,} polls)"
    )

    print(f"bare aiomqtt subscriber phase (load average {load_average()}):", flush=True)
    bare = await bare_phase(gateway.state_dir, directory, gateway.mqtt_port, logins, options)
    print_phase(bare, "received")
    ratio = gateway_run.rate / bare.rate if bare.rate else math.nan
    print(f"ingest rate gateway/bare: {gateway_run.rate:,.0f} / {bare.rate:,.0f} = {ratio:.2f}")
    return report_targets(options, gateway_run, p99 if latencies else None, ratio)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def count_stored(phase: Phase, database: Path) -> Phase:
    """The phase with `handled` counted in the (stopped) daemon's database; a duplicate or a
    message that was never sent is a wrong answer."""
    stored, distinct = stored_messages(database)
    if stored != distinct or stored > phase.fleet.sent:
        raise WrongAnswer(
            f"the database holds {stored:,} messages, {distinct:,} distinct, for {phase.fleet.sent:,} sent"
        )
    if stored != phase.handled:
        print(f"  note: /metrics counted {phase.handled:,} stored after the drain, the database {stored:,}")
    return dataclasses.replace(phase, handled=stored)


def print_losses(phase: Phase, counters: dict[str, int]) -> None:
    """Where the lost messages went, from the daemon's counters."""
    if not phase.lost:
        return
    received = counters.get("gateway_mqtt_messages_received_total", 0)
    reasons = ", ".join(
        f"{name.partition('{')[2].rstrip('}')}: {count:,}"
        for name, count in sorted(counters.items())
        if name != "gateway_mqtt_messages_received_total"
    )
    print(
        f"  where the {phase.lost:,} lost went: {phase.fleet.sent - received:,} never reached ingest's count"
        f" (dropped by the broker, or on their way into the daemon); dropped by ingest or the store:"
        f" {reasons or 'none'}"
    )


def report_targets(options: argparse.Namespace, gateway_run: Phase, p99: float | None, ratio: float) -> bool:
    """Print each target with met/MISSED (n/a where this run does not measure it); True when every
    target that applies is met."""
    at_target = options.devices == TARGET_DEVICES and options.rate == TARGET_RATE
    rate = "unthrottled" if options.unthrottled else f"{options.rate:g} msg/s"
    load = "" if at_target and not options.unthrottled else f" (this run: {options.devices:,} x {rate})"
    throttled = not options.unthrottled
    targets: list[tuple[str, bool | None]] = [
        (
            f"zero loss at {TARGET_DEVICES:,} x {TARGET_RATE:g} msg/s{load}: lost {gateway_run.lost:,}",
            gateway_run.lost == 0 if throttled else None,
        ),
        (
            f"p99 publish -> API latency < {LATENCY_TARGET_S:g} s{load}: "
            + ("no value seen" if p99 is None else f"{p99:.2f} s"),
            (p99 is not None and p99 < LATENCY_TARGET_S) if throttled else None,
        ),
        (
            f"unthrottled ingest >= {RATIO_TARGET:g} x bare: {ratio:.2f}"
            + ("" if options.unthrottled else " (measured with --unthrottled)"),
            ratio >= RATIO_TARGET if options.unthrottled else None,
        ),
        (
            f"daemon peak RSS < {mb(RSS_TARGET_BYTES)}: {mb(gateway_run.consumer_peak_rss)}",
            gateway_run.consumer_peak_rss < RSS_TARGET_BYTES,
        ),
    ]
    print("targets:")
    for text, met in targets:
        print(f"  {text}: {verdict(met)}")
    return all(met is not False for _, met in targets)


def arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, default=TARGET_DEVICES, help="simulated devices (1000)")
    parser.add_argument("--rate", type=float, default=TARGET_RATE, help="messages/s per device (5)")
    parser.add_argument("--seconds", type=float, default=60.0, help="publishing time per phase (60)")
    parser.add_argument("--unthrottled", action="store_true", help="publish as fast as the broker takes it")
    parser.add_argument(
        "--qos", type=int, choices=(0, 1), default=0, help="QoS of the devices' PUBLISHes (0)"
    )
    parser.add_argument("--values", type=int, default=8, help="values per message, seq included (8)")
    parser.add_argument("--fleet-workers", type=int, default=2, help="generator processes (2)")
    parser.add_argument("--sample", type=int, default=20, help="devices polled for latency (20)")
    parser.add_argument("--poll", type=float, default=0.1, help="latency poll interval in seconds (0.1)")
    parser.add_argument("--profile", type=Path, help="py-spy the daemon while publishing, raw stacks to FILE")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (config, state, logs)")
    parser.add_argument("--dir", type=Path, help="work directory to use (must be empty); implies --keep")
    options = parser.parse_args(argv)
    if options.devices < 1 or options.rate <= 0 or options.seconds <= 0 or options.sample < 1:
        parser.error("--devices, --rate, --seconds and --sample must be positive")
    if options.poll <= 0 or options.fleet_workers < 1:
        parser.error("--poll and --fleet-workers must be positive")
    check_work_options(parser, options)
    return options


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when every target that applies is met, 1 otherwise."""
    options = arguments(argv)
    # The per-device message limit set so high that it never drops a message but still judges
    # every one (its cost stays in what is measured).
    limit: dict[str, dict[str, object]] = {"mqtt": {"device_rate_limit": 1_000_000_000}}
    with bench_gateway(options.dir, options.keep, limit) as gateway:
        print(f"work directory: {gateway.directory}")
        print(
            f"fleet: {options.devices:,} devices x "
            + ("unthrottled" if options.unthrottled else f"{options.rate:g} msg/s")
            + f" x {options.seconds:g} s, QoS {options.qos}, {options.values} values per message;"
            f" {os.cpu_count()} CPUs",
            flush=True,
        )
        return 0 if asyncio.run(run(gateway, gateway.directory, options)) else 1


if __name__ == "__main__":
    sys.exit(main())
