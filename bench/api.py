"""Benchmark of the HTTP API's reads against a real daemon holding 1,000 devices and 10 million
telemetry values, while a fleet of those devices publishes.

1. Before the daemon starts, creates `--devices` standalone devices and loads, straight through
   `gateway.store.store.Store` (the writer, batches and rollups that ingest uses), `--rows` values:
   every device sends 5 attributes every 10 s, devices interleaved in time, ending at the last
   whole minute. Memory stays flat: the store takes bounded chunks.
2. Starts `enapter-gateway run` (managed Mosquitto), issues every device MQTT credentials through
   the API (generate_config), and has bench/fleet.py publish `--rate` messages/s per device.
3. `--clients` concurrent keep-alive HTTP clients (aiohttp) cycle, for `--seconds`, through:
   - `GET /api/v3/devices` (a page of 50 at a random offset),
   - `GET /api/v3/devices/{id}?expand=connectivity,communication`,
   - `GET /api/v3/telemetry/latest` for one device (its 5 loaded attributes and the live `seq`),
   - `POST /api/v3/telemetry/query_timeseries`: one device's 5 attributes over an hour at 60 s.
   Every answer is checked against the generator; a wrong answer stops the run.
4. Prints requests/s and p50/p99 per endpoint, and how ingest fared meanwhile.

Run from the repository root: `PYTHONPATH=. python bench/api.py`. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import itertools
import json
import math
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp
import httpx
from fleet import (
    Fleet,
    FleetPlan,
    WrongAnswer,
    bench_gateway,
    check_work_options,
    cpu_seconds,
    finish_profiler,
    issue_logins,
    peak_rss_bytes,
    percentile,
    start_profiler,
    stop_profiler,
)
from history import sample

from gateway.api.v3.provisioning import STANDALONE_CHANNEL, standalone_hardware_id
from gateway.model import CommunicationType, DeviceType, Telemetry
from gateway.store.store import DATABASE_FILE, Ingested, Store
from tests.gateway_process import GatewayProcess

POINT_TARGET_MS: Final = 50.0
ATTRIBUTES: Final = tuple(f"a{i}" for i in range(5))
INTERVAL_S: Final = 10
GRANULARITY_S: Final = 60
QUERY_SPAN_S: Final = 3600
LIST_PAGE: Final = 50
# Messages per store batch while loading (queue and batch size): 50,000 values, a few MB at a time.
CHUNK: Final = 10_000
WARM_UP_S: Final = 3.0
# The fleet starts this long before the clients, and then every device's `seq` must be visible
# (asked LIVE_CHUNK devices at a time) within LIVE_DEADLINE_S.
FLEET_LEAD_S: Final = 3.0
LIVE_CHUNK: Final = 100  # ~5.5 kB of URL: aiohttp refuses request lines over 8 kB
LIVE_DEADLINE_S: Final = 120.0
FINISH_WAIT_S: Final = 10.0


class Endpoint(enum.Enum):
    """The requests the clients make, in the order each client cycles through them."""

    DEVICE_LIST = "GET /v3/devices"
    DEVICE_GET = "GET /v3/devices/{id}"
    LATEST = "GET /v3/telemetry/latest"
    QUERY = "POST /v3/telemetry/query_timeseries"


POINT_READS: Final = (Endpoint.DEVICE_GET, Endpoint.LATEST)


@dataclass(frozen=True, slots=True)
class LoadedDevice:
    """A device of the dataset: its id and hardware id, and its index (which picks its values)."""

    index: int
    device_id: str
    hardware_id: str


@dataclass(frozen=True, slots=True)
class Dataset:
    """What was loaded: the devices, and the time span [start, end) of their history."""

    devices: tuple[LoadedDevice, ...]
    start: int
    end: int

    def value(self, device: LoadedDevice, attribute: int, t: int) -> float:
        """The loaded value of `device`'s attribute number `attribute` at `t`."""
        return sample(attribute + device.index % 10, t)

    @property
    def first_bucket(self) -> int:
        """The start of the first whole minute of the history (queries start on whole minutes)."""
        return -(-self.start // GRANULARITY_S) * GRANULARITY_S

    @property
    def query_span(self) -> int:
        """The time-series query's span: an hour, or all the whole minutes of history if fewer."""
        return min(QUERY_SPAN_S, self.end - self.first_bucket)


async def load(database: Path, *, devices: int, rows: int) -> Dataset:
    """Create the site and devices and write their history; prints progress and the load rate."""
    async with Store.open(database, queue_size=CHUNK, max_batch=CHUNK) as store:
        site = await store.ensure_site(name="Benchmark Site", timezone="UTC")
        created: list[LoadedDevice] = []
        for index in range(devices):
            hardware_id = standalone_hardware_id()
            device = await store.create_device(
                site_id=site.id,
                name=f"Bench {index}",
                slug=None,
                type=DeviceType.STANDALONE,
                communication_type=CommunicationType.MQTT_V1_PLAINTEXT,
                hardware_id=hardware_id,
                channel_id=STANDALONE_CHANNEL,
            )
            created.append(LoadedDevice(index, device.id, hardware_id))
        messages = max(1, rows // (devices * len(ATTRIBUTES)))
        end = int(time.time()) // GRANULARITY_S * GRANULARITY_S
        start = end - messages * INTERVAL_S
        dataset = Dataset(devices=tuple(created), start=start, end=end)
        # Time-major, as a live fleet writes it: every device's message at t, then at t + 10 s.
        items = (
            Ingested(
                device.device_id,
                Telemetry(
                    timestamp=float(t),
                    values={name: dataset.value(device, i, t) for i, name in enumerate(ATTRIBUTES)},
                    alerts=None,
                ),
                float(t),
            )
            for t in range(start, end, INTERVAL_S)
            for device in created
        )
        total = messages * devices
        began = time.perf_counter()
        done, next_report = 0, 0.1
        while chunk := list(itertools.islice(items, CHUNK)):
            for item in chunk:
                if not store.enqueue(item):
                    raise RuntimeError("the store refused a message (queue full?)")
            await store.flush()
            done += len(chunk)
            if done / total >= next_report:
                print(f"  loaded {done / total:4.0%} in {time.perf_counter() - began:6.1f} s", flush=True)
                next_report += 0.1
        elapsed = time.perf_counter() - began
        stats = store.stats
        if stats.committed != stats.enqueued:
            raise RuntimeError(f"not every message was committed: {stats}")
        size = await store.database_size()
    values = total * len(ATTRIBUTES)
    print(
        f"load: {values:,} values ({devices:,} devices x {messages:,} messages"
        f" x {len(ATTRIBUTES)} attributes, every {INTERVAL_S} s over {(end - start) / 3600:.1f} h)"
        f" in {elapsed:.1f} s: {values / elapsed:,.0f} values/s;"
        f" database {size / 2**20:,.1f} MiB in live pages"
    )
    return dataset


# --- the clients --------------------------------------------------------------------------------


@dataclass(slots=True)
class Results:
    """Latencies (ms) per endpoint, recorded only inside the timed window."""

    latencies: dict[Endpoint, list[float]]
    recording: bool = False


def _json(body: bytes, what: str) -> dict[str, object]:
    try:
        document = json.loads(body)
    except ValueError:
        raise WrongAnswer(f"{what}: not JSON: {body[:300]!r}") from None
    if not isinstance(document, dict):
        raise WrongAnswer(f"{what}: not an object: {body[:300]!r}")
    return document


class Client:
    """One HTTP client: makes the requests one after the other and checks every answer."""

    def __init__(self, session: aiohttp.ClientSession, dataset: Dataset, results: Results, seed: int) -> None:
        self._session = session
        self._dataset = dataset
        self._results = results
        self._random = random.Random(seed)

    async def run(self, until: float, first: int) -> None:
        """Cycle through the endpoints, starting at number `first`, until `until` (monotonic)."""
        order = list(Endpoint)
        for kind in itertools.cycle(order[first % len(order) :] + order[: first % len(order)]):
            if time.monotonic() >= until:
                return
            device = self._random.choice(self._dataset.devices)
            began = time.perf_counter()
            if kind is Endpoint.DEVICE_LIST:
                offset = self._random.randrange(len(self._dataset.devices) + 1 - LIST_PAGE + 1)
                async with self._session.get(
                    "/api/v3/devices", params={"offset": offset, "limit": LIST_PAGE}
                ) as response:
                    status, body = response.status, await response.read()
                elapsed = time.perf_counter() - began
                self._check_list(status, body)
            elif kind is Endpoint.DEVICE_GET:
                async with self._session.get(
                    f"/api/v3/devices/{device.device_id}", params={"expand": "connectivity,communication"}
                ) as response:
                    status, body = response.status, await response.read()
                elapsed = time.perf_counter() - began
                self._check_device(device, status, body)
            elif kind is Endpoint.LATEST:
                params = {
                    f"devices[{device.device_id}]": ",".join((*ATTRIBUTES, "seq")),
                    "relevance_interval": "24h",
                }
                async with self._session.get("/api/v3/telemetry/latest", params=params) as response:
                    status, body = response.status, await response.read()
                elapsed = time.perf_counter() - began
                self._check_latest(device, status, body)
            else:
                dataset = self._dataset
                window = self._random.randrange(
                    dataset.first_bucket, dataset.end - dataset.query_span + 1, GRANULARITY_S
                )
                query = {
                    "from": window,
                    "to": window + self._dataset.query_span,
                    "granularity": f"{GRANULARITY_S}s",
                    "telemetry": [{"device": device.device_id, "attribute": list(ATTRIBUTES)}],
                }
                async with self._session.post(
                    "/api/v3/telemetry/query_timeseries", json=query, headers={"Accept": "text/csv"}
                ) as response:
                    status, body = response.status, await response.read()
                elapsed = time.perf_counter() - began
                self._check_query(device, window, status, body)
            if self._results.recording:
                self._results.latencies[kind].append(elapsed * 1000)

    def _check_list(self, status: int, body: bytes) -> None:
        if status != 200:
            raise WrongAnswer(f"device list answered {status}: {body[:300]!r}")
        answer = _json(body, "device list")
        devices = answer.get("devices")
        # The dataset's devices and the gateway's own.
        if answer.get("total_count") != len(self._dataset.devices) + 1 or not isinstance(devices, list):
            raise WrongAnswer(f"device list: total_count {answer.get('total_count')!r}")
        ids = [device.get("id") for device in devices if isinstance(device, dict)]
        if len(ids) != LIST_PAGE or ids != sorted(str(i) for i in ids):
            raise WrongAnswer(f"device list: {len(ids)} devices, expected {LIST_PAGE} in id order")

    def _check_device(self, device: LoadedDevice, status: int, body: bytes) -> None:
        if status != 200:
            raise WrongAnswer(f"device get answered {status}: {body[:300]!r}")
        answer = _json(body, "device get").get("device")
        if not isinstance(answer, dict) or answer.get("id") != device.device_id:
            raise WrongAnswer(f"device get {device.device_id}: {body[:300]!r}")
        communication, connectivity = answer.get("communication"), answer.get("connectivity")
        if not isinstance(communication, dict) or communication.get("hardware_id") != device.hardware_id:
            raise WrongAnswer(f"device get {device.device_id}: communication {communication!r}")
        # Its simulated device publishes every second: it must be online.
        if not isinstance(connectivity, dict) or connectivity.get("status") != "ONLINE":
            raise WrongAnswer(f"device get {device.device_id}: connectivity {connectivity!r}")

    def _check_latest(self, device: LoadedDevice, status: int, body: bytes) -> None:
        if status != 200:
            raise WrongAnswer(f"telemetry/latest answered {status}: {body[:300]!r}")
        telemetry = _json(body, "telemetry/latest").get("telemetry")
        answer = telemetry.get(device.device_id) if isinstance(telemetry, dict) else None
        if not isinstance(answer, dict):
            raise WrongAnswer(f"telemetry/latest {device.device_id}: {body[:300]!r}")
        last = self._dataset.end - INTERVAL_S
        for i, name in enumerate(ATTRIBUTES):
            entry = answer.get(name)
            expected = self._dataset.value(device, i, last)
            found = (entry.get("value"), entry.get("timestamp")) if isinstance(entry, dict) else None
            if found != (expected, last):
                raise WrongAnswer(
                    f"telemetry/latest {device.device_id} {name}: {entry!r}, expected {expected!r} at {last}"
                )
        seq = answer.get("seq")
        if not isinstance(seq, dict) or not isinstance(seq.get("value"), int):
            raise WrongAnswer(f"telemetry/latest {device.device_id} seq (live): {seq!r}")

    def _check_query(self, device: LoadedDevice, window: int, status: int, body: bytes) -> None:
        if status != 200:
            raise WrongAnswer(f"query_timeseries answered {status}: {body[:300]!r}")
        lines = body.decode().splitlines()
        buckets = self._dataset.query_span // GRANULARITY_S
        if len(lines) != 1 + buckets or len(lines[0].split(",")) != 1 + len(ATTRIBUTES):
            raise WrongAnswer(f"query_timeseries: {len(lines) - 1} rows, expected {buckets}: {lines[:2]!r}")
        for line in lines[1:]:
            cells = line.split(",")
            if len(cells) != 1 + len(ATTRIBUTES) or "" in cells:
                raise WrongAnswer(f"query_timeseries: incomplete row {line!r}")
        cells = lines[1].split(",")
        first = range(window, window + GRANULARITY_S, INTERVAL_S)
        for i in range(len(ATTRIBUTES)):
            expected = sum(self._dataset.value(device, i, t) for t in first) / len(first)
            if int(cells[0]) != window or not math.isclose(float(cells[1 + i]), expected, rel_tol=1e-9):
                raise WrongAnswer(
                    f"query_timeseries {device.device_id}: first row {lines[1]!r}, expected {window} and"
                    f" {ATTRIBUTES[i]} = {expected!r}"
                )


async def run_clients(base_url: str, token: str, dataset: Dataset, clients: int, seconds: float) -> Results:
    """`clients` concurrent clients for WARM_UP_S (unrecorded) then `seconds` (recorded)."""
    results = Results(latencies={endpoint: [] for endpoint in Endpoint})
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(
        base_url=base_url,
        headers={"X-Enapter-Auth-Token": token},
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=60),
    ) as session:
        until = time.monotonic() + WARM_UP_S + seconds

        async def record() -> None:
            await asyncio.sleep(WARM_UP_S)
            results.recording = True
            await asyncio.sleep(seconds)
            results.recording = False

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(record())
                for n in range(clients):
                    group.create_task(Client(session, dataset, results, seed=n).run(until, first=n))
        except* WrongAnswer as wrong:
            # The first client to see a wrong answer stopped them all; its finding is the report.
            raise wrong.exceptions[0] from None
    return results


# --- the run ------------------------------------------------------------------------------------


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


async def wait_for_live_values(client: httpx.AsyncClient, dataset: Dataset) -> float:
    """Wait until `telemetry/latest` shows a `seq` from the fleet for every device (the latest-value
    check needs it); returns the seconds waited. Raises WrongAnswer after LIVE_DEADLINE_S."""
    began = time.monotonic()
    pending = [device.device_id for device in dataset.devices]
    while pending:
        params = {f"devices[{device_id}]": "seq" for device_id in pending[:LIVE_CHUNK]}
        response = await client.get("/v3/telemetry/latest", params=params)
        if response.status_code != 200:
            raise WrongAnswer(f"telemetry/latest answered {response.status_code}: {response.text[:300]}")
        body = response.json()["telemetry"]
        seen = {device_id for device_id, values in body.items() if "value" in values["seq"]}
        pending = [device_id for device_id in pending if device_id not in seen]
        if pending:
            if time.monotonic() - began > LIVE_DEADLINE_S:
                raise WrongAnswer(f"{len(pending)} devices' `seq` not visible after {LIVE_DEADLINE_S:g} s")
            await asyncio.sleep(0.5)
    return time.monotonic() - began


def report(results: Results, seconds: float) -> bool:
    """Requests/s and latency per endpoint; True when the point reads meet their target."""
    met = True
    print(f"requests over {seconds:g} s (client wall-clock per request; p50/p99 nearest-rank):")
    for endpoint in Endpoint:
        samples = results.latencies[endpoint]
        if not samples:
            print(f"  {endpoint.value}: no request completed")
            met = False
            continue
        p99 = percentile(samples, 0.99)
        line = (
            f"  {endpoint.value}: {len(samples):,} requests, {len(samples) / seconds:,.0f}/s;"
            f" p50 {percentile(samples, 0.5):.1f} / p99 {p99:.1f} / max {max(samples):.1f} ms"
        )
        if endpoint in POINT_READS:
            verdict = "met" if p99 < POINT_TARGET_MS else f"MISSED by {p99 - POINT_TARGET_MS:.1f} ms"
            line += f"; target p99 < {POINT_TARGET_MS:g} ms: {verdict}"
            met = met and p99 < POINT_TARGET_MS
        print(line)
    total = sum(len(samples) for samples in results.latencies.values())
    print(f"  all: {total:,} requests, {total / seconds:,.0f}/s")
    return met


async def bench(gateway: GatewayProcess, dataset: Dataset, options: argparse.Namespace) -> bool:
    """Start the daemon, the fleet and the clients; True when the targets are met."""
    gateway.start()
    assert gateway.process is not None
    daemon_pid = gateway.process.pid
    installer = gateway.create_token("INSTALLER", name="bench-provisioning")
    began = time.perf_counter()
    async with httpx.AsyncClient(
        base_url=gateway.base_url, headers={"X-Enapter-Auth-Token": installer}, timeout=60
    ) as client:
        logins = await issue_logins(client, [device.device_id for device in dataset.devices])
    print(f"issued MQTT credentials to {len(logins):,} devices in {time.perf_counter() - began:.1f} s")
    token = gateway.create_token("READONLY", name="bench-clients")
    fleet_plan = FleetPlan(
        host="127.0.0.1",
        port=gateway.mqtt_port,
        devices=tuple(logins),
        rate=options.rate,
        # Until stopped once the clients are done.
        seconds=FLEET_LEAD_S + LIVE_DEADLINE_S + WARM_UP_S + options.seconds + 60.0,
        qos=options.qos,
    )
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.api_port}", timeout=30) as metrics:
        with Fleet(fleet_plan) as fleet:
            await asyncio.to_thread(fleet.connect)
            deadline = time.monotonic() + 60
            while (await scrape(metrics))["gateway_devices_connected"] < len(logins):
                if time.monotonic() > deadline:
                    raise SystemExit("the daemon did not see every device connect within 60 s")
                await asyncio.sleep(0.2)
            before = await scrape(metrics)
            at = time.time() + 1.0
            fleet.start(at)
            await asyncio.sleep(at + FLEET_LEAD_S - time.time())
            async with httpx.AsyncClient(
                base_url=gateway.base_url, headers={"X-Enapter-Auth-Token": token}, timeout=30
            ) as api:
                waited = await wait_for_live_values(api, dataset)
            print(f"every device's `seq` was visible {FLEET_LEAD_S + waited:.1f} s after the fleet started")
            print(
                f"{options.clients} clients for {WARM_UP_S:g} + {options.seconds:g} s while"
                f" {len(logins):,} devices publish {options.rate:g} msg/s each"
                f" (load average {' '.join(f'{x:.2f}' for x in os.getloadavg())})",
                flush=True,
            )
            cpu_before, wall_before = cpu_seconds(daemon_pid), time.monotonic()
            profiler = (
                start_profiler(daemon_pid, WARM_UP_S + options.seconds, options.profile)
                if options.profile
                else None
            )
            try:
                results = await run_clients(
                    f"http://127.0.0.1:{gateway.api_port}", token, dataset, options.clients, options.seconds
                )
            except BaseException:
                if profiler is not None:
                    stop_profiler(profiler)
                raise
            cpu = (cpu_seconds(daemon_pid) - cpu_before) / (time.monotonic() - wall_before)
            if profiler is not None:
                await finish_profiler(profiler, options.profile, WARM_UP_S + options.seconds)
            fleet.stop()
            sent = (await asyncio.to_thread(fleet.finish, FINISH_WAIT_S)).sent
        await asyncio.sleep(1.0)  # the last batch
        after = await scrape(metrics)
    stored = int(after["gateway_store_items_committed_total"] - before["gateway_store_items_committed_total"])
    met = report(results, options.seconds)
    print(
        f"ingest meanwhile: {sent:,} messages sent, {stored:,} stored ({sent - stored:,} lost);"
        f" daemon CPU {100 * cpu:.0f} % of one core while the clients ran,"
        f" peak RSS {peak_rss_bytes(daemon_pid) / 1e6:.1f} MB"
    )
    return met


def arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, default=1_000, help="devices (1000)")
    parser.add_argument("--rows", type=int, default=10_000_000, help="telemetry values to load (10,000,000)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients (16)")
    parser.add_argument("--seconds", type=float, default=60.0, help="timed duration (60)")
    parser.add_argument("--rate", type=float, default=1.0, help="messages/s each device publishes (1)")
    parser.add_argument("--qos", type=int, choices=(0, 1), default=0, help="QoS of the PUBLISHes (0)")
    parser.add_argument("--profile", type=Path, help="py-spy the daemon meanwhile, into FILE")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (config, state, log)")
    parser.add_argument("--dir", type=Path, help="work directory to use (must be empty); implies --keep")
    options = parser.parse_args(argv)
    if options.devices < LIST_PAGE:
        parser.error(f"--devices must be at least {LIST_PAGE} (one page of the device list)")
    if options.rows < options.devices * len(ATTRIBUTES) * 2 * GRANULARITY_S // INTERVAL_S:
        parser.error("--rows must give every device at least two minutes of history")
    if options.clients < 1 or options.seconds <= 0 or options.rate <= 0:
        parser.error("--clients, --seconds and --rate must be positive")
    check_work_options(parser, options)
    return options


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when the point reads meet their target, 1 otherwise."""
    options = arguments(argv)
    with bench_gateway(options.dir, options.keep, {}) as gateway:
        print(f"work directory: {gateway.directory}; {os.cpu_count()} CPUs", flush=True)
        database = gateway.state_dir / DATABASE_FILE
        dataset = asyncio.run(load(database, devices=options.devices, rows=options.rows))
        return 0 if asyncio.run(bench(gateway, dataset, options)) else 1


if __name__ == "__main__":
    sys.exit(main())
