"""The control socket: `GET /status` on `<state_dir>/control.sock`, read by `enapter-gateway status`.

The status holds the daemon's latest warnings and errors, which may name devices and addresses, so
it is not served on the LAN: the socket is a unix socket with mode 0600 in the 0700 state
directory, and only root or the gateway's own user can connect. No token is involved.

Server side: `serve_control` (entered by `gateway.api.app.serve`) with `RecentProblems`, a logging
handler keeping the last PROBLEMS_KEPT WARNING/ERROR records in memory. Client side: `read_status`
and the pure `render_status`.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TypedDict, cast, get_type_hints

import aiohttp
from aiohttp import web

from gateway import __version__
from gateway.api import health
from gateway.api.render import json_response
from gateway.api.services import SERVICES, Services
from gateway.model import Connectivity, DeviceType, JsonValue, Role

LOG = logging.getLogger("gateway.control")

SOCKET_NAME = "control.sock"
PROBLEMS_KEPT = 10
# Longer messages are cut: the ring is for a glance, the journal has the rest.
MAX_MESSAGE_CHARS = 500
CLIENT_TIMEOUT_S = 5.0
# sun_path is 108 bytes on Linux.
MAX_SOCKET_PATH = 100
_PAGE = 1000


def socket_path(state_dir: Path) -> Path:
    """Where the daemon with this state directory serves its status."""
    return state_dir / SOCKET_NAME


# --- the status document ----------------------------------------------------------------------


class DeviceCounts(TypedDict):
    """Devices other than the gateway itself."""

    online: int
    total: int


class BrokerStatus(TypedDict):
    mode: Literal["managed", "external"]
    running: bool
    restarts: int
    pid: int | None
    # Why it is down ("" while it runs).
    detail: str


class IngestStatus(TypedDict):
    connected: bool
    received: int
    accepted: int
    dropped: int


class StoreStatus(TypedDict):
    database_bytes: int
    queue_depth: int
    committed: int
    failed_batches: int
    # The unusable database moved aside at this start ("" if none) and why.
    set_aside: str
    set_aside_problem: str


class ProblemRecord(TypedDict):
    time: float
    level: str
    logger: str
    message: str


class StatusDocument(TypedDict):
    """The body of `GET /status` on the control socket."""

    version: str
    pid: int
    uptime_s: float
    devices: DeviceCounts
    broker: BrokerStatus
    ingest: IngestStatus
    store: StoreStatus
    health: health.HealthDocument
    # Filled by the mDNS advertiser (`Services.mdns`): e.g. the advertised name.
    mdns: dict[str, JsonValue]
    # Oldest first.
    recent_problems: list[ProblemRecord]


@dataclass(frozen=True, slots=True)
class Problem:
    """A WARNING or ERROR record, as `status` shows it."""

    time: float
    level: str
    logger: str
    message: str


class RecentProblems(logging.Handler):
    """Keeps the last `size` WARNING and ERROR records (message text only, no tracebacks)."""

    def __init__(self, size: int = PROBLEMS_KEPT) -> None:
        super().__init__(logging.WARNING)
        self._problems: collections.deque[Problem] = collections.deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        """Remember `record` (logging calls this for WARNING and above)."""
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format string: logging's own policy applies
            self.handleError(record)
            return
        if record.exc_info is not None and record.exc_info[1] is not None:
            error = record.exc_info[1]
            message += f" ({type(error).__name__}: {error})"
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[: MAX_MESSAGE_CHARS - 1] + "…"
        self._problems.append(Problem(record.created, record.levelname, record.name, message))

    def problems(self) -> list[Problem]:
        """The kept records, oldest first."""
        return list(self._problems)


PROBLEMS = web.AppKey("problems", RecentProblems)


async def device_counts(services: Services) -> DeviceCounts:
    """How many devices there are, and how many of them are online, the gateway not counted."""
    kinds = [kind for kind in DeviceType if kind is not DeviceType.GATEWAY]
    online = seen = 0
    while True:
        page, total = await services.store.list_devices(offset=seen, limit=_PAGE, types=kinds)
        views = await services.views(page, frozenset({"connectivity"}), Role.SYSTEM)
        online += sum(view.connectivity is Connectivity.ONLINE for view in views)
        seen += len(page)
        if not page or seen >= total:
            return {"online": online, "total": total}


async def status_document(services: Services, problems: RecentProblems) -> StatusDocument:
    """What `enapter-gateway status` shows, as it is now."""
    broker, ingest, store = services.broker, services.ingest, services.store
    stats = store.stats
    running = health.check_broker(broker, ingest).problem is None
    if broker is None:
        broker_status: BrokerStatus = {
            "mode": "external",
            "running": running,
            "restarts": 0,
            "pid": None,
            "detail": "" if running else ingest.last_error,
        }
    else:
        broker_status = {
            "mode": "managed",
            "running": running,
            "restarts": broker.restarts,
            "pid": broker.pid,
            "detail": "" if running else broker.down_reason,
        }
    return {
        "version": __version__,
        "pid": os.getpid(),
        "uptime_s": round(time.monotonic() - services.started, 3),
        "devices": await device_counts(services),
        "broker": broker_status,
        "ingest": {
            "connected": ingest.connected,
            "received": ingest.received,
            "accepted": ingest.accepted,
            "dropped": sum(ingest.dropped.values()),
        },
        "store": {
            "database_bytes": store.file_size(),
            "queue_depth": store.queue_depth,
            "committed": stats.committed,
            "failed_batches": stats.failed_batches,
            "set_aside": "" if store.set_aside is None else str(store.set_aside.moved_to),
            "set_aside_problem": "" if store.set_aside is None else store.set_aside.problem,
        },
        "health": (await health.check(services)).document(),
        "mdns": dict(services.mdns()),
        "recent_problems": [
            {"time": p.time, "level": p.level, "logger": p.logger, "message": p.message}
            for p in problems.problems()
        ],
    }


async def _status(request: web.Request) -> web.Response:
    return json_response(await status_document(request.app[SERVICES], request.app[PROBLEMS]))


def create_control_app(services: Services, problems: RecentProblems) -> web.Application:
    """The application served on the control socket."""
    app = web.Application()
    app[SERVICES] = services
    app[PROBLEMS] = problems
    app.router.add_get("/status", _status)
    return app


@contextlib.asynccontextmanager
async def serve_control(services: Services, path: Path) -> AsyncIterator[None]:
    """Serve `GET /status` on the unix socket `path` (mode 0600), and keep the recent problems of
    every logger meanwhile. The gateway runs on without it if the socket cannot be made."""
    if len(str(path)) > MAX_SOCKET_PATH:
        LOG.warning("no control socket (`enapter-gateway status`): %s is too long a path", path)
        yield
        return
    problems = RecentProblems()
    root = logging.getLogger()
    root.addHandler(problems)
    runner = web.AppRunner(create_control_app(services, problems), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        try:
            # asyncio replaces a socket file left by a daemon that died.
            await web.UnixSite(runner, str(path), shutdown_timeout=1.0).start()
            os.chmod(path, 0o600)
        except OSError as exc:
            LOG.error("no control socket (`enapter-gateway status`): cannot listen on %s: %s", path, exc)
        yield
    finally:
        root.removeHandler(problems)
        await runner.cleanup()
        path.unlink(missing_ok=True)  # noqa: ASYNC240 - one local file, at stop


# --- the client (`enapter-gateway status`) ----------------------------------------------------


class DaemonUnreachableError(Exception):
    """No daemon answers on the control socket (not running, or not ours to talk to)."""


async def read_status(path: Path) -> StatusDocument:
    """The running daemon's status; DaemonUnreachableError saying why there is none (or when it
    does not answer within CLIENT_TIMEOUT_S)."""
    connector = aiohttp.UnixConnector(path=str(path))
    try:
        async with (
            aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)
            ) as http,
            http.get("http://gateway/status") as response,
        ):
            response.raise_for_status()
            document = await response.json()
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, PermissionError):
            raise DaemonUnreachableError(
                f"not allowed to connect to {path}: run this as root or as the gateway's user"
            ) from None
        raise DaemonUnreachableError(f"the gateway is not running (nothing answers on {path})") from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise DaemonUnreachableError(f"the gateway did not answer on {path}: {exc or 'timeout'}") from None
    if not isinstance(document, dict) or "version" not in document:
        raise DaemonUnreachableError(f"{path} answered something that is not a gateway status")
    missing = missing_status_fields(document)
    if missing:
        raise DaemonUnreachableError(
            f"the running gateway ({document['version']}) answered a status this enapter-gateway"
            f" ({__version__}) cannot read (no {', '.join(missing)}); after an upgrade, restart the"
            " daemon"
        )
    return cast(StatusDocument, document)


def missing_status_fields(document: Mapping[str, object]) -> list[str]:
    """The fields of StatusDocument (and of its sections) that `document` lacks, as dotted paths:
    a daemon of another version may answer in another shape."""
    missing: list[str] = []
    hints = get_type_hints(StatusDocument)
    for key in sorted(StatusDocument.__required_keys__):
        if key not in document:
            missing.append(key)
            continue
        section = hints[key]
        required = getattr(section, "__required_keys__", None)
        value = document[key]
        if required is not None:
            if not isinstance(value, dict):
                missing.append(key)
                continue
            missing += [f"{key}.{name}" for name in sorted(required) if name not in value]
    return missing


def _duration(seconds: float) -> str:
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _mdns(mdns: Mapping[str, JsonValue]) -> str:
    return ", ".join(f"{key}: {value}" for key, value in mdns.items())


def render_status(document: StatusDocument) -> str:
    """A summary for people (pure)."""
    checks = document["health"]["checks"]
    failing = [
        f"{name} ({check.get('detail', 'failing')})" for name, check in checks.items() if not check["ok"]
    ]
    broker = document["broker"]
    if broker["running"]:
        state = "running" if broker["pid"] is None else f"running (pid {broker['pid']})"
    else:
        state = "DOWN" + (f": {broker['detail']}" if broker["detail"] else "")
    ingest, store, devices = document["ingest"], document["store"], document["devices"]
    uptime = _duration(document["uptime_s"])
    lines = [
        f"enapter-gateway {document['version']}, up {uptime} (pid {document['pid']})",
        "health:   " + ("ok" if not failing else "UNHEALTHY: " + "; ".join(failing)),
        f"devices:  {devices['online']} online of {devices['total']}",
        f"broker:   {broker['mode']}, {state}, restarted {broker['restarts']} times",
        f"ingest:   {'connected' if ingest['connected'] else 'NOT CONNECTED'}, {ingest['received']} messages"
        f" received, {ingest['accepted']} accepted, {ingest['dropped']} dropped",
        f"database: {_size(store['database_bytes'])}, {store['committed']} messages stored,"
        f" {store['queue_depth']} queued, {store['failed_batches']} failed batches",
    ]
    if store["set_aside"]:
        lines.append(
            f"          THE DATABASE WAS UNUSABLE AT START ({store['set_aside_problem']}) and was moved"
            f" to {store['set_aside']}; this one started empty"
        )
    if document["mdns"]:
        lines.append(f"mdns:     {_mdns(document['mdns'])}")
    problems = document["recent_problems"]
    if problems:
        lines.append("recent warnings and errors (oldest first):")
        lines += [f"  {_when(p['time'])} {p['level']:7} {p['logger']}: {p['message']}" for p in problems]
    else:
        lines.append("recent warnings and errors: none")
    return "\n".join(lines)
