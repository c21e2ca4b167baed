"""The composition root: builds every component once, runs them in one TaskGroup, stops them in order.

Start: store -> site -> CA and MQTTS files -> managed broker (or the external one's address) -> ingest
-> API -> READY=1; mDNS and the watchdog pings run beside them.
Stop (SIGTERM/SIGINT): API stops accepting, ingest stops, the broker child is terminated, and the
store drains its queue into a last transaction before both connections close. A component that
crashes ends the TaskGroup, and the daemon exits non-zero so systemd restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import logging
import os
import signal
import socket
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from gateway import __version__
from gateway.api.app import serve
from gateway.api.dto import TimeSync
from gateway.api.services import DeviceEndpoint, Services, no_mdns
from gateway.blueprints.catalog import ManifestCatalog
from gateway.commands import Commands
from gateway.config import Config, ConfigError, ExternalBrokerConfig, RetentionConfig
from gateway.events import ConnectivityRecorder
from gateway.live import EventFeed, LiveFeed
from gateway.mdns.advertiser import Advertisement, MdnsAdvertiser
from gateway.model import Connectivity, Device, MqttProtocol
from gateway.mqtt import dynsec
from gateway.mqtt.accounts import CertificateIssuer, DeviceAccounts
from gateway.mqtt.authority import Authority, keep_fresh, server_names
from gateway.mqtt.broker import BrokerFiles, ManagedBroker
from gateway.mqtt.endpoint import BrokerAdmin, BrokerEndpoint
from gateway.mqtt.flood import FloodGuard
from gateway.mqtt.ingest import Ingest
from gateway.mqtt.lockout import Lockout
from gateway.mqtt.pki import ServerNames
from gateway.presence import Presence
from gateway.store.store import DATABASE_FILE, SetAside, Store
from gateway.systemd import keep_watchdog_fed, notify, watchdog_interval
from gateway.timeline import GATEWAY_STOPPED

LOG = logging.getLogger("gateway")

RETENTION_CHECK_S = 60.0
EPHEMERAL_EXECUTIONS_S = 86400.0
DROP_SAMPLE_INTERVAL_S = 60.0


LOCK_FILE = "daemon.lock"


class _StopRequested(Exception):
    """Raised inside the TaskGroup to end it on SIGTERM/SIGINT."""


class StateDirInUseError(Exception):
    """Another daemon runs on this state directory."""


@contextlib.contextmanager
def hold_state_dir(state_dir: Path) -> Iterator[None]:
    """Hold `<state_dir>/daemon.lock` (an advisory lock, with our pid in the file) while the daemon runs.

    A second daemon on the same state directory must not start: it would take the first one's
    broker for an orphan and stop it, and write to the same database. The kernel drops the lock when
    the process ends, however it ends; the file itself stays (removing it would race a new start).
    The descriptor is not inherited, so Mosquitto never holds the lock.
    """
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise StateDirInUseError(
                f"another enapter-gateway daemon (pid {holder}) is running on {state_dir}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def primary_ipv4() -> str | None:
    """The address of the interface holding the default route (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed anywhere real
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return address


def device_endpoint(config: Config, *, mqtts: bool) -> DeviceEndpoint:
    """Where generated configs send devices: mqtt.advertised_host, else the primary LAN IPv4."""
    host = config.mqtt.advertised_host or primary_ipv4() or f"{config.mdns.hostname}.local"
    # The SDK ignores the time source (enapter-device-protocol.md §1.9); hardware UCMs use it.
    time_sync = config.time_sync
    return DeviceEndpoint(
        mqtt_host=host,
        mqtt_port=config.mqtt.port,
        mqtts_port=config.mqtt.tls_port if mqtts else None,
        time_sync=TimeSync(protocol=time_sync.protocol, host=time_sync.host or host, port=time_sync.port),
    )


async def open_authority(config: Config, store: Store) -> Authority:
    """The CA with a current server certificate and CRL, ready before Mosquitto reads them."""
    now = datetime.now(UTC)
    authority = Authority.open(config.gateway.state_dir / "pki", now)
    authority.ensure_server(certificate_names(config), now)
    authority.write_crl(await store.revoked_certificates(now.timestamp()), now)
    return authority


def certificate_names(config: Config) -> ServerNames:
    """What the MQTTS server certificate must cover right now."""
    return server_names(config.mdns.hostname, config.mqtt.advertised_host, config.mqtt.tls_hostnames)


def external_endpoint(external: ExternalBrokerConfig) -> BrokerEndpoint:
    """The admin account on a Mosquitto the user runs (with the dynamic-security plugin)."""
    password = ""
    if external.password_file:
        try:
            # One trailing newline is what `echo secret > file` leaves; it is not part of it.
            password = Path(external.password_file).read_text().removesuffix("\n")
        except OSError as exc:
            raise ConfigError(
                [f"mqtt.external.password_file: cannot read {external.password_file}: {exc.strerror}"]
            ) from None
    return BrokerEndpoint(
        hostname=external.host,
        port=external.port,
        transport="tcp",
        username=external.username,
        password=password,
    )


async def run(config: Config) -> None:
    """Run the daemon until SIGTERM/SIGINT."""
    state_dir = config.gateway.state_dir
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with contextlib.AsyncExitStack() as stack:
            stack.enter_context(hold_state_dir(state_dir))
            store = await stack.enter_async_context(
                Store.open(state_dir / DATABASE_FILE, set_aside_corrupt=True)
            )
            if store.set_aside is not None:
                report_set_aside(store.set_aside)
            site = await store.ensure_site(name=config.gateway.site_name, timezone=config.gateway.timezone)
            LOG.info("site %r (%s), state in %s", site.name, site.id, state_dir)
            presence = Presence(config.mqtt.online_window)
            recorder = ConnectivityRecorder(store, time.time)
            events = EventFeed()
            store.event_listeners.append(events.publish)

            async def accounts() -> list[dynsec.DeviceAccount]:
                return [
                    dynsec.DeviceAccount(
                        hardware_id=credential.username,
                        password=dynsec.PasswordHash.decode(credential.secret)
                        if credential.protocol == MqttProtocol.MQTT.value
                        else None,
                    )
                    for credential in await store.credentials()
                ]

            broker: ManagedBroker | None = None
            authority: Authority | None = None
            if config.mqtt.mode == "managed":
                # The previous run's broker stopped with it: its devices are not connected now.
                await store.end_open_connections(GATEWAY_STOPPED)
                if config.mqtt.tls_port != 0:
                    authority = await open_authority(config, store)
                broker = await stack.enter_async_context(
                    ManagedBroker(
                        config.mqtt,
                        BrokerFiles(state_dir / "broker"),
                        accounts,
                        on_restart=lambda: recorder.broker_restarted(presence.reset_connections()),
                        tls=None if authority is None else authority.files,
                    )
                )
                endpoint = broker.endpoint
            else:
                endpoint = external_endpoint(config.mqtt.external)
                LOG.info("using the external broker at %s:%s", endpoint.hostname, endpoint.port)
            manifests = await ManifestCatalog.load(store)
            # One admin for every dynsec change: its answers are told apart by a per-instance
            # sequence in their correlation data, so two instances could take each other's answers.
            admin = BrokerAdmin(endpoint)
            lockout = Lockout(admin, config.mqtt.flood_lockout)
            ingest = Ingest(
                endpoint,
                store,
                presence,
                manifests,
                flood_guard=FloodGuard(rate) if (rate := config.mqtt.device_rate_limit) else None,
                on_flood=lockout.shut_out,
            )
            ingest.register(await all_devices(store))
            ingest.connectivity_listeners.append(recorder.record)
            if broker is not None:
                broker.restart_listeners.append(ingest.reconnect_now)
            commands = Commands(
                store,
                ingest.publish,
                lambda device: (
                    presence.status(device.hardware_id, time.time(), seen_before=False) is Connectivity.ONLINE
                ),
                timeout=config.commands.timeout,
            )
            ingest.listeners.append(commands.on_ingested)
            live = LiveFeed()
            ingest.listeners.append(live.publish)
            issuer = None
            if broker is not None and authority is not None:
                issuer = CertificateIssuer(authority=authority, reload=broker.reload)
            advertiser = (
                MdnsAdvertiser(config.mdns, await advertisement(config, store, mqtts=issuer is not None))
                if config.mdns.enabled
                else None
            )
            services = Services(
                store=store,
                presence=presence,
                ingest=ingest,
                commands=commands,
                accounts=DeviceAccounts(store, admin, issuer),
                device_endpoint=device_endpoint(config, mqtts=issuer is not None),
                broker=broker,
                live=live,
                manifests=manifests,
                mdns=no_mdns if advertiser is None else advertiser.status,
                events=events,
                recorder=recorder,
            )
            async with asyncio.TaskGroup() as group:
                if broker is not None:
                    group.create_task(broker.supervise(), name="broker-supervisor")
                if issuer is not None:
                    group.create_task(
                        keep_fresh(
                            issuer.authority,
                            names=lambda: certificate_names(config),
                            revoked=store.revoked_certificates,
                            reload=issuer.reload,
                            clock=time.time,
                        ),
                        name="certificate-renewal",
                    )
                group.create_task(ingest.run(), name="ingest")
                group.create_task(recorder.run(), name="connectivity-events")
                group.create_task(lockout.run(), name="flood-lockout")
                group.create_task(commands.run(), name="command-timeouts")
                group.create_task(retention(store, config.retention), name="retention")
                group.create_task(_serve_until_stopped(services, config, stop), name="api")
                group.create_task(_sample_drops(services), name="drop-history")
                if advertiser is not None:
                    group.create_task(advertiser.run(), name="mdns")
                watchdog = watchdog_interval(os.environ, os.getpid())
                if watchdog is not None:
                    group.create_task(keep_watchdog_fed(watchdog), name="watchdog")
    except* _StopRequested:
        LOG.info("stopped")


async def _sample_drops(services: Services) -> None:
    """Sample the drop counters every minute, for the statistics' windows."""
    while True:
        services.sample_drops()
        await asyncio.sleep(DROP_SAMPLE_INTERVAL_S)


async def _serve_until_stopped(services: Services, config: Config, stop: asyncio.Event) -> None:
    async with serve(services, config.api, state_dir=config.gateway.state_dir):
        # What start-up made lives as long as the daemon: the cyclic collector need not look
        # at it again (each full collection walked all of it, a pause in every request).
        gc.freeze()
        notify("READY=1")
        LOG.info("gateway ready")
        await stop.wait()
        notify("STOPPING=1")
        LOG.info("stopping")
    raise _StopRequested


def report_set_aside(set_aside: SetAside) -> None:
    """Say loudly that the gateway starts over with an empty database, and how to get data back."""
    LOG.critical(
        "THE DATABASE WAS UNUSABLE (%s). It was moved to %s and the gateway starts with a new,"
        " empty one: devices, their credentials, tokens and history are not in it, so devices"
        " cannot connect until restored. Restore a backup with `enapter-gateway restore`, or"
        " salvage what is left with `sqlite3 %s .recover`.",
        set_aside.problem,
        set_aside.moved_to,
        set_aside.moved_to,
    )


async def advertisement(config: Config, store: Store, *, mqtts: bool) -> Advertisement:
    """What mDNS announces: the API, and the broker ports when the broker is ours."""
    managed = config.mqtt.mode == "managed"
    return Advertisement(
        gateway_id=(await store.gateway_device()).id,
        version=__version__,
        api_port=config.api.port,
        api_path="/api",
        mqtt_port=config.mqtt.port if managed else None,
        mqtts_port=config.mqtt.tls_port if managed and mqtts else None,
    )


async def retention(store: Store, keep: RetentionConfig) -> None:
    """Delete what is past its retention: telemetry by age and then by database size, temporary
    device logs (`persist: false`), ephemeral command executions (after a day, §3.3), timeline
    events."""
    # Often enough that nothing outlives its limit by more than a quarter of it.
    interval = min(RETENTION_CHECK_S, keep.temporary_logs / 4, keep.telemetry_raw / 4)
    while True:
        now = time.time()
        try:
            deleted = await store.purge_telemetry(
                {
                    "telemetry_raw": now - keep.telemetry_raw,
                    "telemetry_1m": now - keep.telemetry_1m,
                    "telemetry_1h": now - keep.telemetry_1h,
                }
            )
            if keep.max_database_mb:
                for table, count in (await store.shrink_to(keep.max_database_mb * 1024 * 1024)).items():
                    if count:
                        LOG.warning(
                            "the database is over retention.max_database_mb (%d MiB): deleted the"
                            " %d oldest rows of %s",
                            keep.max_database_mb,
                            count,
                            table,
                        )
            deleted["temporary logs"] = await store.purge_temporary_logs(now - keep.temporary_logs)
            deleted["ephemeral executions"] = await store.purge_ephemeral_executions(
                now - EPHEMERAL_EXECUTIONS_S
            )
            deleted["timeline events"] = await store.purge_timeline(now - keep.timeline)
        except sqlite3.Error as exc:  # e.g. a full disk: try again next round, ingest goes on
            LOG.error("could not delete old data: %s", exc)
        else:
            if any(deleted.values()):
                LOG.debug(
                    "retention deleted %s", ", ".join(f"{n} {what}" for what, n in deleted.items() if n)
                )
        await asyncio.sleep(interval)


async def all_devices(store: Store) -> list[Device]:
    """Every device, page by page (for ingest's channel table at start-up)."""
    found: list[Device] = []
    while True:
        page, total = await store.list_devices(offset=len(found), limit=1000)
        found += page
        if not page or len(found) >= total:
            return found
