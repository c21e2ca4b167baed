"""Site statistics (a gateway addition): `GET /v3/site/stats?window=1h|24h|7d|30d`."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from gateway.api import dto, lookup, params
from gateway.api.auth import ROLE
from gateway.api.render import json_response
from gateway.api.services import SERVICES
from gateway.model import Device, DeviceType
from gateway.stats import online_fraction
from gateway.store.store import Store
from gateway.timeline import CONNECTIVITY, EventType

# Every device of the site is counted; the store pages, so ask for all of them at once.
_ALL_DEVICES = 10**9


async def site_stats(request: web.Request) -> web.Response:
    """GET /v3/site/stats and /v3/sites/{site_id}/stats."""
    window, seconds = params.stats_window(request.query)
    await lookup.own_site(request)
    services = request.app[SERVICES]
    end = services.clock()
    start = end - seconds
    devices, _ = await services.store.list_devices(offset=0, limit=_ALL_DEVICES)
    views = await services.views(devices, frozenset({"connectivity"}), request[ROLE])
    activity = await services.store.activity_since(start)
    dropped = services.drops_since(start)
    online = await online_fractions(services.store, devices, start, end)
    stats = dto.SiteStats(
        window=window,
        start=start,
        end=end,
        devices=views,
        provisioned=activity.provisioned,
        data_points=activity.data_points,
        executions_by_state=activity.executions_by_state,
        dropped_by_reason=dropped.counts,
        dropped_since=max(dropped.counted_since, start),
        by_tag=await services.store.device_count_by_tag(),
        online_fractions=online,
    )
    return json_response({"stats": dto.site_stats(stats)})


async def online_fractions(
    store: Store, devices: Sequence[Device], start: float, end: float
) -> dict[str, float]:
    """device id -> the part of [start, end] it was online, from the connectivity timeline.

    For the devices that connect to the broker: those with a hardware id, the gateway aside. A
    device on a UCM (Lua) is online when its UCM is, so it reads its upstream's events. A device
    created inside the window is measured from its creation.
    """
    sources = {
        device.id: device.upstream_id or device.id
        for device in devices
        if device.hardware_id is not None and device.type is not DeviceType.GATEWAY
    }
    wanted = set(sources.values())
    at_start = await store.last_events_before(wanted, CONNECTIVITY, start)
    changes: dict[str, list[tuple[float, bool]]] = {}
    for event in await store.timeline_events(wanted, CONNECTIVITY, start, end):
        changes.setdefault(event.device_id, []).append((event.timestamp, event.type is EventType.CONNECTED))
    created = {device.id: device.created_at for device in devices}
    fractions: dict[str, float] = {}
    for device_id, source in sources.items():
        before = at_start.get(source)
        fractions[device_id] = online_fraction(
            changes.get(source, []),
            online_at_start=before is not None and before.type is EventType.CONNECTED,
            start=max(start, created[device_id]),
            end=end,
        )
    return fractions
