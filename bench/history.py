"""Benchmark of the telemetry read path against a real daemon holding a day of 1 Hz history.

Loads, straight through `gateway.store.store.Store` (the same writer, batches and rollups that
ingest uses), one device with `--attributes` float attributes sampled every second for `--hours`,
ending at the last whole minute before now, and `--devices` more devices with a few current
values each. Then starts `enapter-gateway run` on free loopback ports and times, over HTTP:

- `POST /api/v3/telemetry/query_timeseries` for 10 of the attributes over the whole span at 60 s
  granularity (the answer is checked: one CSV row per minute, one column per attribute, and the
  first bucket's average equal to the one computed from the generator);
- `GET /api/v3/telemetry/latest` for all the other devices with their attributes (every device
  must answer with a value for every attribute).

Run from the repository root: `PYTHONPATH=. python bench/history.py`. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx

from gateway.api.v3.provisioning import STANDALONE_CHANNEL, standalone_hardware_id
from gateway.model import CommunicationType, DeviceType, Telemetry
from gateway.store.store import DATABASE_FILE, Ingested, Store
from tests.gateway_process import GatewayProcess, write_config

QUERY_TARGET_MS: Final = 100.0
LATEST_TARGET_MS: Final = 20.0
QUERY_ATTRIBUTES: Final = 10
GRANULARITY_S: Final = 60
LATEST_ATTRIBUTES: Final = 5
# One store batch (`Store.open`'s max_batch): enqueued, then flushed, so memory stays flat.
CHUNK: Final = 2_000
WARM_UP: Final = 3
_DAY: Final = 86_400.0


@dataclass(frozen=True, slots=True)
class Dataset:
    """What was loaded: the history device, its time span [start, end), the latest devices."""

    history_device: str
    attributes: tuple[str, ...]
    start: int
    end: int
    latest_devices: tuple[str, ...]
    latest_attributes: tuple[str, ...]
    database_bytes: int  # in live pages, once loaded


@dataclass(frozen=True, slots=True)
class Timings:
    """Wall-clock times of one kind of request, in milliseconds, in the order they were made."""

    first: float
    samples: tuple[float, ...]

    @property
    def minimum(self) -> float:
        return min(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p95(self) -> float:
        """Nearest-rank 95th percentile."""
        ordered = sorted(self.samples)
        return ordered[math.ceil(0.95 * len(ordered)) - 1]


def sample(attribute: int, t: int) -> float:
    """The value of attribute number `attribute` at unix second `t`: a slow wave plus noise.

    Deterministic, so that the benchmark can check an aggregated bucket against it; rounded to
    three decimals like a real sensor reading.
    """
    base = 10.0 + 7.0 * attribute
    amplitude = 1.0 + (attribute % 7)
    period = 600.0 + 97.0 * attribute
    # A cheap integer hash in [-0.5, 0.5): noise that differs per second and per attribute.
    noise = ((t * 2_654_435_761 + attribute * 40_503) % 1000 - 500) / 1000.0
    return round(base + amplitude * math.sin(2 * math.pi * t / period + attribute) + noise, 3)


def telemetry_at(t: int, names: Sequence[str]) -> Telemetry:
    """One 1 Hz message of the history device."""
    return Telemetry(
        timestamp=float(t), values={name: sample(i, t) for i, name in enumerate(names)}, alerts=()
    )


async def load(database: Path, *, hours: float, attributes: int, devices: int) -> Dataset:
    """Create the site and devices and write the history and latest values; prints progress."""
    async with Store.open(database) as store:
        site = await store.ensure_site(name="Benchmark Site", timezone="UTC")

        async def standalone(name: str) -> str:
            device = await store.create_device(
                site_id=site.id,
                name=name,
                slug=None,
                type=DeviceType.STANDALONE,
                communication_type=CommunicationType.MQTT_V1_PLAINTEXT,
                hardware_id=standalone_hardware_id(),
                channel_id=STANDALONE_CHANNEL,
            )
            return device.id

        history_device = await standalone("History")
        names = tuple(f"a{i}" for i in range(attributes))
        # Whole minutes, so that the 60 s query covers exactly span / 60 buckets.
        end = int(time.time()) // GRANULARITY_S * GRANULARITY_S
        start = end - round(hours * 3600) // GRANULARITY_S * GRANULARITY_S
        total = end - start
        generating = writing = 0.0
        began = time.perf_counter()
        next_report = 0.1
        for chunk_start in range(start, end, CHUNK):
            t0 = time.perf_counter()
            items = [
                Ingested(history_device, telemetry_at(t, names), float(t))
                for t in range(chunk_start, min(chunk_start + CHUNK, end))
            ]
            t1 = time.perf_counter()
            for item in items:
                if not store.enqueue(item):
                    raise RuntimeError("the store refused a message (queue full?)")
            await store.flush()
            generating += t1 - t0
            writing += time.perf_counter() - t1
            done = (min(chunk_start + CHUNK, end) - start) / total
            if done >= next_report:
                print(f"  loaded {done:4.0%} in {time.perf_counter() - began:6.1f} s", flush=True)
                next_report += 0.1
        history_s = time.perf_counter() - began

        latest_names = tuple(f"v{i}" for i in range(LATEST_ATTRIBUTES))
        latest_devices = tuple([await standalone(f"Latest {i}") for i in range(devices)])
        now = time.time()
        for n, device_id in enumerate(latest_devices):
            values = {name: sample(n + i, int(now)) for i, name in enumerate(latest_names)}
            store.enqueue(Ingested(device_id, Telemetry(timestamp=now, values=values, alerts=()), now))
        await store.flush()
        stats = store.stats
        if stats.committed != stats.enqueued:
            raise RuntimeError(f"not every message was committed: {stats}")
        size = await store.database_size()
    values_written = total * attributes
    print(
        f"load: {values_written:,} values ({total:,} messages x {attributes} attributes, 1 Hz,"
        f" {total / 3600:g} h) in {history_s:.1f} s: {values_written / history_s:,.0f} values/s"
        f" (generating {generating:.1f} s, store enqueue+flush {writing:.1f} s);"
        f" + {devices} devices x {LATEST_ATTRIBUTES} latest values"
    )
    return Dataset(
        history_device=history_device,
        attributes=names,
        start=start,
        end=end,
        latest_devices=latest_devices,
        latest_attributes=latest_names,
        database_bytes=size,
    )


def timed(
    request: Callable[[], httpx.Response], check: Callable[[httpx.Response], None], repeat: int
) -> Timings:
    """Make the request once cold, WARM_UP more times, then `repeat` timed times; check every answer."""

    def once() -> float:
        began = time.perf_counter()
        response = request()
        elapsed = (time.perf_counter() - began) * 1000
        check(response)
        return elapsed

    first = once()
    for _ in range(WARM_UP):
        once()
    return Timings(first=first, samples=tuple(once() for _ in range(repeat)))


def check_csv(dataset: Dataset, queried: Sequence[str]) -> Callable[[httpx.Response], None]:
    """A check of the query_timeseries answer: shape, no empty cell, the first bucket's average."""
    buckets = (dataset.end - dataset.start) // GRANULARITY_S
    first = range(dataset.start, dataset.start + GRANULARITY_S)
    index = dataset.attributes.index(queried[0])
    expected = sum(sample(index, t) for t in first) / len(first)

    def check(response: httpx.Response) -> None:
        if response.status_code != 200:
            raise SystemExit(f"query_timeseries answered {response.status_code}: {response.text[:500]}")
        lines = response.text.splitlines()
        header = lines[0].split(",")
        if len(header) != 1 + len(queried) or len(lines) != 1 + buckets:
            raise SystemExit(
                f"query_timeseries: expected {buckets} rows + header and {len(queried)} columns,"
                f" got {len(lines) - 1} rows and {len(header) - 1} columns"
            )
        for line in lines[1:]:
            cells = line.split(",")
            if len(cells) != len(header) or "" in cells:
                raise SystemExit(f"query_timeseries: incomplete row {line!r}")
        cells = lines[1].split(",")
        if int(cells[0]) != dataset.start or not math.isclose(float(cells[1]), expected, rel_tol=1e-9):
            raise SystemExit(
                f"query_timeseries: first row {lines[1]!r}, expected ts {dataset.start} and"
                f" {queried[0]} = {expected!r}"
            )

    return check


def check_latest(dataset: Dataset) -> Callable[[httpx.Response], None]:
    """A check of the telemetry/latest answer: a value and a timestamp for every attribute asked."""

    def check(response: httpx.Response) -> None:
        if response.status_code != 200:
            raise SystemExit(f"telemetry/latest answered {response.status_code}: {response.text[:500]}")
        body = response.json()["telemetry"]
        for device_id in dataset.latest_devices:
            answer = body.get(device_id, {})
            for name in dataset.latest_attributes:
                entry = answer.get(name, {})
                if not isinstance(entry.get("value"), float) or "timestamp" not in entry:
                    raise SystemExit(f"telemetry/latest: device {device_id} {name}: {entry!r}")

    return check


def report(what: str, timings: Timings, target_ms: float) -> bool:
    """Print one line of figures and the verdict against the target (on the median)."""
    met = timings.median < target_ms
    verdict = "met" if met else f"MISSED by {timings.median - target_ms:.1f} ms"
    print(
        f"{what}: first {timings.first:.1f} ms; min {timings.minimum:.1f} / median {timings.median:.1f}"
        f" / p95 {timings.p95:.1f} ms over {len(timings.samples)};"
        f" target median < {target_ms:g} ms: {verdict}"
    )
    return met


def bench(gateway: GatewayProcess, dataset: Dataset, repeat: int) -> bool:
    """Start the daemon, time both requests; True when both targets are met."""
    gateway.start()
    token = gateway.create_token("READONLY", name="bench")
    queried = dataset.attributes[:QUERY_ATTRIBUTES]
    query = {
        "from": dataset.start,
        "to": dataset.end,
        "granularity": f"{GRANULARITY_S}s",
        "telemetry": [{"device": dataset.history_device, "attribute": list(queried)}],
    }
    # One `devices[<id>]=a,b` pair per device. The values were written before the daemon started;
    # do not let a slow start make them "outdated" (the default relevance is 30 s): the check
    # costs the same either way.
    latest = (
        *((f"devices[{d}]", ",".join(dataset.latest_attributes)) for d in dataset.latest_devices),
        ("relevance_interval", "1h"),
    )
    headers = {"X-Enapter-Auth-Token": token}
    with httpx.Client(base_url=gateway.base_url, headers=headers, timeout=60) as client:
        history = timed(
            lambda: client.post("/v3/telemetry/query_timeseries", json=query, headers={"Accept": "text/csv"}),
            check_csv(dataset, queried),
            repeat,
        )
        current = timed(
            lambda: client.get("/v3/telemetry/latest", params=latest),
            check_latest(dataset),
            repeat,
        )
    span_h = (dataset.end - dataset.start) / 3600
    query_met = report(
        f"query_timeseries ({len(queried)} attributes, {span_h:g} h at {GRANULARITY_S}s,"
        f" {(dataset.end - dataset.start) // GRANULARITY_S} rows)",
        history,
        QUERY_TARGET_MS,
    )
    latest_met = report(
        f"telemetry/latest ({len(dataset.latest_devices)} devices"
        f" x {len(dataset.latest_attributes)} attributes)",
        current,
        LATEST_TARGET_MS,
    )
    return query_met and latest_met


def arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--hours", type=float, default=24.0, help="history span at 1 Hz (default 24)")
    parser.add_argument("--attributes", type=int, default=100, help="attributes of the history device")
    parser.add_argument("--devices", type=int, default=100, help="devices asked for by telemetry/latest")
    parser.add_argument("--repeat", type=int, default=20, help="timed requests of each kind (default 20)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (config, state, log)")
    parser.add_argument("--dir", type=Path, help="work directory to use (must be empty); implies --keep")
    options = parser.parse_args(argv)
    if options.attributes < QUERY_ATTRIBUTES:
        parser.error(f"--attributes must be at least {QUERY_ATTRIBUTES}")
    if options.hours * 3600 < GRANULARITY_S or options.devices < 1 or options.repeat < 1:
        parser.error("--hours must cover a minute, --devices and --repeat must be positive")
    if options.dir is not None and options.dir.exists() and any(options.dir.iterdir()):
        parser.error(f"{options.dir} is not empty")
    return options


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when both targets are met, 1 when one is missed."""
    options = arguments(argv)
    keep = options.keep or options.dir is not None
    if options.dir is not None:
        options.dir.mkdir(parents=True, exist_ok=True)
        directory = options.dir.resolve()
    else:
        directory = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    span = options.hours * 3600
    config, api_port, mqtt_port = write_config(
        directory,
        {
            # Nothing loaded may be deleted while the benchmark runs.
            "retention": {
                "telemetry_raw": max(7 * _DAY, 2 * span),
                "telemetry_1m": max(90 * _DAY, 2 * span),
                "telemetry_1h": max(3650 * _DAY, 2 * span),
                "max_database_mb": 0,
            },
            "api.rate_limit": {"requests": 0},
        },
    )
    gateway = GatewayProcess(directory, config, api_port, mqtt_port)
    print(f"work directory: {directory}", flush=True)
    database = gateway.state_dir / DATABASE_FILE
    try:
        dataset = asyncio.run(
            load(database, hours=options.hours, attributes=options.attributes, devices=options.devices)
        )
        print(
            f"database: {dataset.database_bytes / 2**20:.1f} MiB in live pages"
            f" ({database.stat().st_size / 2**20:.1f} MiB file)",
            flush=True,
        )
        return 0 if bench(gateway, dataset, options.repeat) else 1
    except BaseException:
        if gateway.process is not None:
            print(gateway.log()[-4000:], file=sys.stderr)
        raise
    finally:
        gateway.stop()
        if keep:
            print(f"kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
