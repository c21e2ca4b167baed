"""WebSocket streams (`enapter-http-api.md` §7.4): device logs, device telemetry, and the monitor;
and the gateway's own site event stream (timeline events as they happen).

The log and telemetry streams share their paths with plain JSON reads, so each route's handler here
looks at the request: a WebSocket upgrade streams, anything else goes to the JSON handler. Frames
are JSON text. Every stream pings (heartbeat), sends with a deadline, and closes with a code that
says why: 1008 for a consumer too slow to keep up (it is dropped, never buffered without bound),
1001 when the gateway stops.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

from aiohttp import WSCloseCode, web

from gateway.api import dto, errors, lookup, params
from gateway.api.auth import ROLE
from gateway.api.services import SERVICES
from gateway.api.v3 import logs, telemetry
from gateway.blueprints.catalog import ManifestCatalog
from gateway.blueprints.conformance import readable
from gateway.live import FeedClosed, SlowConsumer, StreamedKind, Subscription, TooManySubscriptions
from gateway.model import JsonObject, LogEntry, LogSeverity, Properties, Role, Site, Telemetry
from gateway.store.store import Ingested
from gateway.timeline import EventType

LOG = logging.getLogger("gateway.api.streams")

HEARTBEAT_S = 30.0
SEND_TIMEOUT_S = 5.0
CLOSE_TIMEOUT_S = 2.0
# Clients only ever send control frames on these streams.
MAX_INCOMING_BYTES = 4096
MAX_MONITORED_DEVICES = 100

SLOW_CONSUMER = (WSCloseCode.POLICY_VIOLATION, "Too slow: messages were not taken in time; reconnect.")
GOING_AWAY = (WSCloseCode.GOING_AWAY, "The gateway is stopping.")

# A frame for one message, or None when the stream's filters leave it out.
Framer = Callable[[Ingested], JsonObject | None]
Item = TypeVar("Item")
Kind = TypeVar("Kind")


def wants_websocket(request: web.Request) -> bool:
    """True for a WebSocket upgrade request (`Upgrade: websocket`)."""
    return request.headers.get("Upgrade", "").strip().lower() == "websocket"


# --- Frames (pure) -------------------------------------------------------------------------------


def log_frame(entry: LogEntry, received_at: float) -> JsonObject:
    """A log-stream frame in both shapes the CLI generations read: flat fields and a nested `log`."""
    body = dto.log_entry(entry, received_at)
    body["log"] = {"severity": entry.severity.value, "message": entry.message}
    return body


def telemetry_frame(message: Telemetry) -> JsonObject:
    """The telemetry message as the device sent it: `{"timestamp", <attr>: value, ..., "alerts"}`."""
    body: JsonObject = {"timestamp": int(message.timestamp)}
    body.update(message.values)
    body["alerts"] = None if message.alerts is None else list(message.alerts)
    return body


def monitor_frame(item: Ingested) -> JsonObject | None:
    """A monitor frame: `{"device_id", "received_at", "timestamp"}` plus one of `telemetry`,
    `properties` or `log` (`cmd_device_monitor.go`); None for what the monitor does not show."""
    message = item.message
    if not isinstance(message, Telemetry | Properties | LogEntry):
        return None
    body: JsonObject = {
        "device_id": item.device_id,
        "received_at": dto.rfc3339(item.received_at),
        "timestamp": int(message.timestamp),
    }
    if isinstance(message, Telemetry):
        values = telemetry_frame(message)
        del values["timestamp"]
        body["telemetry"] = values
    elif isinstance(message, Properties):
        body["properties"] = dict(message.values)
    else:
        body["log"] = {"severity": message.severity.value, "message": message.message}
    return body


def log_filter(severity: LogSeverity | None, persisted: bool | None) -> Framer:
    """Log frames of `severity` and more severe (all when None), persisted or temporary ones only."""
    shown = frozenset(LogSeverity) if severity is None else severity.and_more_severe()

    def frame(item: Ingested) -> JsonObject | None:
        entry = item.message
        if not isinstance(entry, LogEntry) or entry.severity not in shown:
            return None
        if persisted is not None and entry.persist != persisted:
            return None
        return log_frame(entry, item.received_at)

    return frame


def readable_only(manifests: ManifestCatalog, role: Role, frame: Framer) -> Framer:
    """`frame`, shown only the telemetry and properties `role` may read (`enapter-http-api.md` §2)."""

    def filtered(item: Ingested) -> JsonObject | None:
        manifest = manifests.of(item.device_id)
        message = item.message
        if manifest is not None and isinstance(message, Telemetry):
            values = readable(manifest, "telemetry", message.values, role)
            item = dataclasses.replace(item, message=dataclasses.replace(message, values=values))
        elif manifest is not None and isinstance(message, Properties):
            values = readable(manifest, "properties", message.values, role)
            item = dataclasses.replace(item, message=dataclasses.replace(message, values=values))
        return frame(item)

    return filtered


def _telemetry_only(item: Ingested) -> JsonObject | None:
    return telemetry_frame(item.message) if isinstance(item.message, Telemetry) else None


# --- Handlers ------------------------------------------------------------------------------------


async def device_logs(request: web.Request) -> web.StreamResponse:
    """GET .../devices/{device}/logs: new logs live over a WebSocket, else the JSON log query."""
    if not wants_websocket(request):
        return await logs.device_logs(request)
    query = params.log_query(request.query)
    device = await lookup.device(request, await lookup.own_site(request))
    frame = log_filter(query.severity, query.persisted)
    return await _stream(request, frozenset({device.id}), frozenset({LogEntry}), frame)


async def device_telemetry(request: web.Request) -> web.StreamResponse:
    """GET .../devices/{device}/telemetry: each telemetry message over a WebSocket, else the latest."""
    if not wants_websocket(request):
        return await telemetry.device_latest(request)
    device = await lookup.device(request, await lookup.own_site(request))
    return await _stream(request, frozenset({device.id}), frozenset({Telemetry}), _telemetry_only)


async def monitor(request: web.Request) -> web.StreamResponse:
    """GET .../devices/?id.in=a&id.in=b,c: telemetry, properties and logs of those devices (ids or
    slugs; every device of the site when none is named). WebSocket only."""
    if not wants_websocket(request):
        raise errors.bad_request("WebSocket upgrade required: this path only serves the device monitor.")
    site = await lookup.own_site(request)
    device_ids = await _named_devices(request, site, "id.in")
    kinds: frozenset[StreamedKind] = frozenset({Telemetry, Properties, LogEntry})
    return await _stream(request, device_ids, kinds, monitor_frame)


async def _named_devices(request: web.Request, site: Site, parameter: str) -> frozenset[str] | None:
    """The ids of the devices `parameter` names (ids or slugs, comma-separated, repeatable); None
    when it names none (every device). 404 for one that is not in the site."""
    keys = dict.fromkeys(key for raw in request.query.getall(parameter, []) for key in params.comma_list(raw))
    if len(keys) > MAX_MONITORED_DEVICES:
        raise errors.invalid_parameter(parameter, f"at most {MAX_MONITORED_DEVICES} devices")
    if not keys:
        return None
    store = request.app[SERVICES].store
    found = set()
    for key in keys:
        device = await store.get_device(key)
        if device is None or device.site_id != site.id:
            raise errors.not_found(f"Device {key[:100]!r}")
        found.add(device.id)
    return frozenset(found)


async def site_events(request: web.Request) -> web.StreamResponse:
    """GET /v3/site/events?device_id.in=a,b&type.in=connected,disconnected: timeline events of
    those devices (ids or slugs; all when none is named) and types (all when none), as they are
    recorded. WebSocket only."""
    if not wants_websocket(request):
        raise errors.bad_request("WebSocket upgrade required: this path only serves the event stream.")
    site = await lookup.own_site(request)
    types = params.event_types(request.query) or frozenset(EventType)
    device_ids = await _named_devices(request, site, "device_id.in")
    feed = request.app[SERVICES].events
    return await _serve(request, feed.subscribe(device_ids, types), feed.drop, dto.timeline_event)


async def close_streams(app: web.Application) -> None:
    """`on_shutdown`: end every stream (closed with 1001) so that shutdown does not wait for them."""
    app[SERVICES].live.close()
    app[SERVICES].events.close()


# --- The stream itself ---------------------------------------------------------------------------


async def _stream(
    request: web.Request,
    device_ids: frozenset[str] | None,
    kinds: frozenset[StreamedKind],
    frame: Framer,
) -> web.StreamResponse:
    live = request.app[SERVICES].live
    frame = readable_only(request.app[SERVICES].manifests, request[ROLE], frame)
    return await _serve(request, live.subscribe(device_ids, kinds), live.drop, frame)


async def _serve(
    request: web.Request,
    subscribing: AbstractAsyncContextManager[Subscription[Item, Kind]],
    drop: Callable[[Subscription[Item, Kind]], None],
    frame: Callable[[Item], JsonObject | None],
) -> web.StreamResponse:
    """Subscribe, upgrade, and stream until the end; `drop` is the feed's, for a slow consumer."""
    ws = web.WebSocketResponse(
        heartbeat=HEARTBEAT_S, timeout=CLOSE_TIMEOUT_S, max_msg_size=MAX_INCOMING_BYTES
    )
    try:
        # Subscribe before the upgrade, so that a refusal is still an HTTP error.
        async with subscribing as subscription:
            try:
                async with asyncio.timeout(SEND_TIMEOUT_S):
                    await ws.prepare(request)
            except TimeoutError:  # the 101 may be half sent: no HTTP error can follow it
                if request.transport is not None:
                    request.transport.abort()
                return ws
            await _run(request, ws, subscription, frame, drop)
    except TooManySubscriptions:
        raise errors.unavailable("Too many open streams; try again later.") from None
    except FeedClosed:
        raise errors.unavailable("The gateway is stopping.") from None
    return ws


async def _run(
    request: web.Request,
    ws: web.WebSocketResponse,
    subscription: Subscription[Item, Kind],
    frame: Callable[[Item], JsonObject | None],
    drop: Callable[[Subscription[Item, Kind]], None],
) -> None:
    """Send frames until the client leaves, the subscriber is dropped or the feed closes."""
    async with asyncio.TaskGroup() as group:
        receiver = group.create_task(_receive_until_closed(ws), name="stream-receive")
        sender = group.create_task(_send(ws, subscription, frame), name="stream-send")
        await asyncio.wait((receiver, sender), return_when=asyncio.FIRST_COMPLETED)
        if receiver.done():  # the client closed, or the connection failed
            sender.cancel()
            return
        ending = sender.result()
        if ending is None:  # the connection broke under a send
            receiver.cancel()
            return
        if ending is SLOW_CONSUMER:
            drop(subscription)
            LOG.warning("dropped a slow stream consumer at %s (%s)", request.path, request.remote)
        await _close(request, ws, ending)


async def _receive_until_closed(ws: web.WebSocketResponse) -> None:
    # Reading is what answers pings and notices the client's close; clients send nothing else
    # here, so whatever they do send is ignored.
    async for _ in ws:
        pass


async def _send(
    ws: web.WebSocketResponse,
    subscription: Subscription[Item, Kind],
    frame: Callable[[Item], JsonObject | None],
) -> tuple[WSCloseCode, str] | None:
    """Send until the subscription ends; returns how to close, or None if the connection broke."""
    while True:
        try:
            item = await subscription.get()
        except SlowConsumer:
            return SLOW_CONSUMER
        except FeedClosed:
            return GOING_AWAY
        body = frame(item)
        if body is None:
            continue
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                await ws.send_str(json.dumps(body, separators=(",", ":")))
        except TimeoutError:
            return SLOW_CONSUMER
        except ConnectionResetError:
            return None


async def _close(request: web.Request, ws: web.WebSocketResponse, ending: tuple[WSCloseCode, str]) -> None:
    """Close with a code and reason; a peer that cannot take even that is cut off."""
    code, reason = ending
    transport = request.transport
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await ws.close(code=code, message=reason.encode())
    except TimeoutError:
        if transport is not None:
            transport.abort()
        return
    if transport is not None and transport.get_write_buffer_size() > 0:
        # A peer that stopped reading would hold the socket (and what is buffered for it) open
        # forever; give it a moment to read the close frame, then reset the connection.
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, transport.abort)
