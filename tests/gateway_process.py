"""Runs the real `enapter-gateway run` as a subprocess on free loopback ports, for end-to-end tests.

Readiness comes from the daemon's own sd_notify (`READY=1` on a NOTIFY_SOCKET the harness owns), so
the harness also checks that the daemon speaks the systemd protocol. Every process is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import enapter
import httpx
from enapter.http.api.devices import MQTTProtocol

from gateway.store.store import DATABASE_FILE

REPO = Path(__file__).resolve().parent.parent
START_DEADLINE_S = 30.0
STOP_DEADLINE_S = 15.0

T = TypeVar("T")


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, and never the same one twice.

    The kernel may give a just-closed port out again at once, so two calls in a row (the API and
    the MQTT port of one config) could otherwise collide.
    """
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:`port` right now."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def gateway_command(*args: str) -> list[str]:
    """argv for the gateway CLI, run from this interpreter (as the console script would)."""
    return [sys.executable, "-m", "gateway", *args]


def write_config(
    directory: Path, overrides: Mapping[str, Mapping[str, object]] | None = None
) -> tuple[Path, int, int]:
    """A config on free loopback ports; returns (path, api port, mqtt port)."""
    api_port, mqtt_port = free_port(), free_port()
    sections: dict[str, dict[str, object]] = {
        "gateway": {"state_dir": str(directory / "state"), "site_name": "Test Site"},
        "api": {"host": "127.0.0.1", "port": api_port},
        "mqtt": {
            "bind": "127.0.0.1",
            "port": mqtt_port,
            "tls_port": 0,
            "advertised_host": "127.0.0.1",
            "online_window": 3.0,
        },
        "mdns": {"enabled": False},
    }
    for name, values in (overrides or {}).items():
        sections.setdefault(name, {}).update(values)
    lines: list[str] = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        for key, value in values.items():
            rendered = str(value).lower() if isinstance(value, bool) else repr(value)
            lines.append(f"{key} = {rendered}".replace("'", '"'))
    path = directory / "gateway.toml"
    path.write_text("\n".join(lines) + "\n")
    return path, api_port, mqtt_port


@dataclass
class GatewayProcess:
    """A running daemon and what tests need to talk to it."""

    directory: Path
    config: Path
    api_port: int
    mqtt_port: int
    process: subprocess.Popen[bytes] | None = None
    # Runs the daemon inside something, e.g. `ip netns exec NS` (tests.netns).
    wrapper: Sequence[str] = ()
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.directory / "gateway.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/api"

    @property
    def state_dir(self) -> Path:
        return self.directory / "state"

    def start(self) -> None:
        """Start the daemon and wait for READY=1."""
        notify_path = self.directory / "notify.sock"
        notify_path.unlink(missing_ok=True)  # left over from an earlier start of this gateway
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.bind(str(notify_path))
            notify.settimeout(0.5)
            env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "PYTHONPATH": str(REPO)}
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    [*self.wrapper, *gateway_command("run", "--config", str(self.config))],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=self.directory,
                )
            deadline = time.monotonic() + START_DEADLINE_S
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"gateway exited at start:\n{self.log()}")
                try:
                    if b"READY=1" in notify.recv(4096):
                        return
                except TimeoutError:
                    continue
        self.stop()
        raise RuntimeError(f"gateway did not become ready:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the daemon and wait for it; returns its exit status."""
        process = self.process
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.process = None
        return process.returncode

    def log(self) -> str:
        """Everything the daemon printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        """`enapter-gateway <args> --config <this gateway's config>`, as an operator would run it."""
        return subprocess.run(
            gateway_command(*args, "--config", str(self.config)),
            capture_output=True,
            text=True,
            timeout=30,
            check=check,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )

    def create_token(self, role: str = "INSTALLER", name: str = "tests") -> str:
        """`enapter-gateway token create`: the token is the last line of stdout."""
        result = self.cli("token", "create", "--role", role, "--name", name, check=True)
        return result.stdout.strip().splitlines()[-1]

    def stored_telemetry(self, device_id: str, attribute: str) -> list[tuple[float, object]]:
        """(timestamp, value) of every raw telemetry value stored for one attribute, read from the
        database file itself (WAL lets a second connection read while the daemon writes)."""
        with contextlib.closing(sqlite3.connect(self.state_dir / DATABASE_FILE, timeout=5)) as db:
            db.execute("PRAGMA query_only = ON")
            rows = db.execute(
                "SELECT r.timestamp, r.value FROM telemetry_raw AS r"
                " JOIN telemetry_series AS s ON s.id = r.series_id"
                " WHERE s.device_id = ? AND s.attribute = ? ORDER BY r.rowid",
                (device_id, attribute),
            ).fetchall()
        return [(float(timestamp), value) for timestamp, value in rows]

    def metrics(self) -> dict[str, float]:
        """The daemon's /metrics as {"name{labels}": value}."""
        text = httpx.get(f"http://127.0.0.1:{self.api_port}/metrics", timeout=5).text
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values


@contextlib.contextmanager
def running_gateway(
    directory: Path,
    overrides: Mapping[str, Mapping[str, object]] | None = None,
    wrapper: Sequence[str] = (),
) -> Iterator[GatewayProcess]:
    """A started daemon on a fresh config (`write_config` overrides), inside `wrapper` if given; on
    exit it must stop cleanly, with exit status 0, on SIGTERM."""
    config, api_port, mqtt_port = write_config(directory, overrides)
    process = GatewayProcess(directory, config, api_port, mqtt_port, wrapper=wrapper)
    process.start()
    try:
        yield process
    finally:
        status = process.stop()
    assert status == 0, process.log()


@dataclass(frozen=True)
class ProvisionedDevice:
    """A standalone device with fresh MQTT credentials, as the gateway generated them."""

    device_id: str
    hardware_id: str
    password: str
    mqtt_port: int


async def provision(gateway: GatewayProcess, token: str, name: str) -> ProvisionedDevice:
    """Create a standalone device and generate its MQTT config, through the SDK's HTTP client."""
    api = enapter.http.api.Config(base_url=gateway.base_url, token=token)
    async with enapter.http.api.Client(config=api) as client:
        device = await client.devices.create_standalone(name=name)
        config = await client.devices.generate_communication_config(device.id, MQTTProtocol.MQTT)
    password: str = config.to_dto()["mqtt_credentials"]["password"]
    return ProvisionedDevice(device.id, config.hardware_id, password, config.mqtt_port)


async def eventually(
    condition: Callable[[], Awaitable[T | None]], within_s: float, interval: float = 0.2
) -> T:
    """Await `condition` until it returns something but None/False; fail after `within_s` seconds."""
    deadline = time.monotonic() + within_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = await condition()
        if last is not None and last is not False:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {within_s} s (last value: {last!r})")
