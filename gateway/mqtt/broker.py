"""The managed Mosquitto: its files in the state directory and the supervised `mosquitto -c` child.

SQLite is the source of truth for device accounts, so every (re)start writes the dynsec file afresh
from the store; there is nothing to reconcile afterwards. Mosquitto's own persistence is off (the
database is the durable store, and it saves SD-card writes).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import glob
import logging
import os
import random
import secrets
import shutil
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from gateway.config import MqttConfig
from gateway.mqtt import dynsec
from gateway.mqtt.endpoint import BrokerEndpoint

LOG = logging.getLogger("gateway.broker")

START_DEADLINE_S = 10.0
STOP_DEADLINE_S = 5.0
RELOAD_DEADLINE_S = 5.0
RELOADED_LINE = "Reloading config."
BACKOFF_FIRST_S = 0.5
BACKOFF_CAP_S = 30.0
# A child that ran this long before dying counts as healthy: the backoff starts over.
HEALTHY_RUN_S = 60.0
# sun_path is 108 bytes on Linux; Mosquitto fails obscurely past it.
MAX_SOCKET_PATH = 100
# Room for a 1 MiB payload, so that the daemon sees oversize messages and counts them.
MAX_PACKET_BYTES = 2 * 1024 * 1024

PLUGIN_GLOBS = (
    "/usr/lib/*/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto/mosquitto_dynamic_security.so",
)

INSTALL_HINT = "install it with: sudo apt-get install mosquitto"


class BrokerUnavailableError(Exception):
    """Mosquitto cannot be started: missing binary or plugin, bad path, or it exits at once."""


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    """Where the managed broker's files live inside the state directory."""

    directory: Path

    @property
    def config(self) -> Path:
        return self.directory / "mosquitto.conf"

    @property
    def dynsec(self) -> Path:
        return self.directory / "dynsec.json"

    @property
    def socket(self) -> Path:
        return self.directory / "admin.sock"

    @property
    def pid(self) -> Path:
        """The running child's pid, written by the daemon (Mosquitto writes one only as a daemon)."""
        return self.directory / "mosquitto.pid"


def is_our_broker(cmdline: bytes, config: Path) -> bool:
    """Whether a process's /proc/<pid>/cmdline is a broker started on `config` (pure): that file
    is in the gateway's own state directory, so nothing else runs with it."""
    argv = cmdline.rstrip(b"\0").split(b"\0")
    return b"-c" in argv[1:] and os.fsencode(config) in argv[1:]


def _orphan_pid(files: BrokerFiles) -> int | None:
    """The pid in the pid file, if that process is still a broker on our config."""
    try:
        pid = int(files.pid.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if is_our_broker(cmdline, files.config) else None


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped by its parent, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


async def stop_orphan(files: BrokerFiles) -> None:
    """Stop a Mosquitto that an earlier run of the daemon left behind on these files.

    The child dies with the daemon (parent-death signal), but where that could not be set, or a
    SIGKILL raced it, the orphan would hold the ports and the new broker could not start.
    """
    pid = _orphan_pid(files)
    if pid is None:
        return
    LOG.warning("stopping mosquitto (pid %s) left running by an earlier run of the gateway", pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        for _ in range(int(STOP_DEADLINE_S / 0.1)):
            await asyncio.sleep(0.1)
            if not _alive(pid):
                return
        os.kill(pid, signal.SIGKILL)


def find_mosquitto(configured: str) -> str:
    """The mosquitto executable, or BrokerUnavailableError saying how to install it."""
    found = shutil.which(configured)
    if found is None:
        raise BrokerUnavailableError(
            f"the mosquitto broker ({configured!r}) is not installed; {INSTALL_HINT}"
        )
    return found


def find_dynsec_plugin(configured: str) -> Path:
    """The dynamic-security plugin shipped with Debian's mosquitto package (or the configured one)."""
    if configured:
        path = Path(configured)
        if not path.is_file():
            raise BrokerUnavailableError(f"mqtt.dynsec_plugin: {configured} does not exist")
        return path
    for pattern in PLUGIN_GLOBS:
        for match in sorted(glob.glob(pattern)):
            return Path(match)
    raise BrokerUnavailableError(f"mosquitto's dynamic-security plugin was not found; {INSTALL_HINT}")


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """What the MQTTS listener is configured with (written by `gateway.mqtt.authority`)."""

    ca_certificate: Path
    server_certificate: Path
    server_key: Path
    crl: Path


def render_config(
    mqtt: MqttConfig, files: BrokerFiles, plugin: Path, user: str, tls: TlsFiles | None = None
) -> str:
    """mosquitto.conf for the managed broker (pure)."""
    lines = [
        "# Written by enapter-gateway at every start; edits are overwritten.",
        # Mosquitto drops privileges to `mosquitto` when started as root and could then not read
        # the state directory; run it as whoever runs the daemon.
        f"user {user}",
        "per_listener_settings false",
        "allow_anonymous false",
        "persistence false",
        # Connect/disconnect notices on $SYS/broker/log/N feed device connectivity.
        "connection_messages true",
        "log_dest topic",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        # Includes "Reloading config.", which tells `reload()` that SIGHUP was acted on.
        "log_type information",
        "log_timestamp false",
        # The daemon's subscription must not be the one that overflows first (mosquitto drops,
        # it does not push back: perf-baselines.md §1a).
        "max_queued_messages 100000",
        f"max_packet_size {MAX_PACKET_BYTES}",
        f"plugin {plugin}",
        f"plugin_opt_config_file {files.dynsec}",
        f"listener {mqtt.port} {mqtt.bind}",
    ]
    if tls is not None and mqtt.tls_port != 0:
        # Client certificates signed by the gateway's CA only; the CN is the dynsec username, so
        # the device's own role applies. SIGHUP re-reads the CRL and the server certificate.
        lines += [
            f"listener {mqtt.tls_port} {mqtt.bind}",
            f"cafile {tls.ca_certificate}",
            f"certfile {tls.server_certificate}",
            f"keyfile {tls.server_key}",
            f"crlfile {tls.crl}",
            "require_certificate true",
            "use_identity_as_username true",
        ]
    # Last: Mosquitto opens its listeners in this order and exits if one fails, so a connectable
    # admin socket (what `_wait_until_listening` waits for) means the device ports are bound too.
    lines.append(f"listener 0 {files.socket}")
    return "\n".join(lines) + "\n"


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as stream:
        stream.write(text)
    os.chmod(path, 0o600)


class ManagedBroker:
    """Runs Mosquitto as a child: `async with` starts it, `supervise()` restarts it when it dies."""

    def __init__(
        self,
        mqtt: MqttConfig,
        files: BrokerFiles,
        accounts: Callable[[], Awaitable[Sequence[dynsec.DeviceAccount]]],
        on_restart: Callable[[], None],
        tls: TlsFiles | None = None,
    ) -> None:
        self._mqtt = mqtt
        self._files = files
        self._tls = tls
        self._reloaded = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._accounts = accounts
        self._on_restart = on_restart
        self._admin_password = secrets.token_urlsafe(32)
        self._process: asyncio.subprocess.Process | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self.restarts = 0
        # Called after each successful restart (e.g. ingest reconnects at once instead of waiting
        # out its backoff, and misses fewer messages). They must not block.
        self.restart_listeners: list[Callable[[], None]] = []
        self.running = asyncio.Event()
        # Why the child is down, while it is (for health checks and `status`).
        self.down_reason = ""

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs, else None."""
        process = self._process
        if process is None or process.returncode is not None or not self.running.is_set():
            return None
        return process.pid

    @property
    def endpoint(self) -> BrokerEndpoint:
        """The admin endpoint (unix socket) for the daemon's own clients."""
        return BrokerEndpoint(
            hostname=str(self._files.socket),
            port=1883,  # unused on a unix socket, but paho rejects anything outside 1..65535
            transport="unix",
            username=dynsec.ADMIN_USERNAME,
            password=self._admin_password,
        )

    async def __aenter__(self) -> ManagedBroker:
        self._executable = find_mosquitto(self._mqtt.mosquitto)
        # setpriv (util-linux, in every Debian) gives the child a parent-death signal: a SIGKILLed
        # daemon takes its broker with it instead of leaving it holding the ports.
        setpriv = shutil.which("setpriv")
        self._die_with_us: tuple[str, ...] = (setpriv, "--pdeathsig", "TERM", "--") if setpriv else ()
        self._plugin = find_dynsec_plugin(self._mqtt.dynsec_plugin)
        if len(str(self._files.socket)) > MAX_SOCKET_PATH:
            raise BrokerUnavailableError(
                f"gateway.state_dir is too deep for a unix socket ({self._files.socket}); "
                "choose a shorter path"
            )
        await self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()

    async def supervise(self) -> None:
        """Wait for the child to die and start it again, with capped, jittered backoff."""
        backoff = BACKOFF_FIRST_S
        loop = asyncio.get_running_loop()
        while True:
            process = self._process
            if process is None:
                # The previous restart failed, and `_start` cleaned up after it: try again.
                delay = random.uniform(backoff / 2, backoff)
                LOG.warning("starting mosquitto again in %.1f s", delay)
            else:
                started = loop.time()
                code = await process.wait()
                self.running.clear()
                self.down_reason = f"it exited with status {code}"
                if loop.time() - started > HEALTHY_RUN_S:
                    backoff = BACKOFF_FIRST_S
                delay = random.uniform(backoff / 2, backoff)
                LOG.error("mosquitto exited with status %s; restarting in %.1f s", code, delay)
                self._on_restart()
            await asyncio.sleep(delay)
            backoff = min(backoff * 2, BACKOFF_CAP_S)
            try:
                await self._start()
            except BrokerUnavailableError as exc:
                self.down_reason = f"a restart failed: {exc}"
                LOG.error("mosquitto restart failed: %s", exc)
                continue
            self.restarts += 1
            for listener in self.restart_listeners:
                listener()

    async def _start(self) -> None:
        self._files.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        admin = dynsec.hash_password(self._admin_password, os.urandom(dynsec.SALT_BYTES))
        _write_private(self._files.dynsec, dynsec.render_file(admin, await self._accounts()))
        _write_private(
            self._files.config,
            render_config(self._mqtt, self._files, self._plugin, getpass.getuser(), self._tls),
        )
        with contextlib.suppress(FileNotFoundError):
            self._files.socket.unlink()
        await stop_orphan(self._files)
        process = await asyncio.create_subprocess_exec(
            *self._die_with_us,
            self._executable,
            "-c",
            str(self._files.config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=_child_environment(),
            start_new_session=True,  # a Ctrl-C in the terminal goes to the daemon, which stops it
        )
        self._process = process
        _write_private(self._files.pid, f"{process.pid}\n")
        recent: list[str] = []
        self._stderr_task = asyncio.create_task(
            _forward_stderr(process, recent, self._reloaded), name="mosquitto-stderr"
        )
        try:
            await _wait_until_listening(process, self._files.socket)
        except BrokerUnavailableError as exc:
            await self._stop()
            details = "; ".join(recent[-5:])
            raise BrokerUnavailableError(f"{exc}: {details}" if details else str(exc)) from None
        self.down_reason = ""
        self.running.set()
        LOG.info("mosquitto %s started (pid %s)", self._files.config, process.pid)

    async def reload(self) -> None:
        """Make Mosquitto re-read its CRL and server certificate (SIGHUP) and wait until it has.

        Connected clients stay connected. Mosquitto handles the signal in its single-threaded main
        loop before anything sent to it afterwards, so once it logs the reload, a control command
        that follows runs against the new CRL. BrokerUnavailableError if it is down or silent.
        """
        async with self._reload_lock:
            process = self._process
            if process is None or process.returncode is not None:
                raise BrokerUnavailableError("mosquitto is not running")
            self._reloaded.clear()
            process.send_signal(signal.SIGHUP)
            try:
                async with asyncio.timeout(RELOAD_DEADLINE_S):
                    await self._reloaded.wait()
            except TimeoutError:
                raise BrokerUnavailableError("mosquitto did not confirm the reload in time") from None

    async def _stop(self) -> None:
        process, self._process = self._process, None
        self.running.clear()
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(STOP_DEADLINE_S):
                    await process.wait()
            except TimeoutError:
                LOG.warning("mosquitto did not stop in %s s; killing it", STOP_DEADLINE_S)
                process.kill()
                await process.wait()
        if self._stderr_task is not None:
            await self._stderr_task
            self._stderr_task = None


def _child_environment() -> dict[str, str]:
    """Our environment minus systemd's notify variables: Debian's mosquitto is built with
    sd_notify support and would otherwise tell systemd READY=1 on the daemon's behalf."""
    hidden = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
    return {key: value for key, value in os.environ.items() if key not in hidden}


async def _wait_until_listening(process: asyncio.subprocess.Process, socket: Path) -> None:
    try:
        async with asyncio.timeout(START_DEADLINE_S):
            while True:
                if process.returncode is not None:
                    raise BrokerUnavailableError(
                        f"mosquitto exited at start with status {process.returncode}"
                    )
                with contextlib.suppress(OSError):
                    _, writer = await asyncio.open_unix_connection(str(socket))
                    writer.close()
                    await writer.wait_closed()
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise BrokerUnavailableError("mosquitto did not open its admin socket in time") from None


async def _forward_stderr(
    process: asyncio.subprocess.Process, recent: list[str], reloaded: asyncio.Event
) -> None:
    """Mosquitto's own log goes to ours; errors and warnings at their level, the rest at debug."""
    assert process.stderr is not None
    async for raw in process.stderr:
        line = raw.decode(errors="replace").rstrip()
        if line == RELOADED_LINE:
            reloaded.set()
        recent.append(line)
        del recent[:-20]
        if line.startswith(("Error", "error")):
            LOG.error("mosquitto: %s", line)
        elif line.startswith("Warning"):
            LOG.warning("mosquitto: %s", line)
        else:
            LOG.debug("mosquitto: %s", line)
