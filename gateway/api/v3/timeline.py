"""Device timelines (the gateway's own addition): read a device's events, post a user event, and
clear a device's data (which lands on its timeline).

Events are listed newest first, filtered by type and time, paged with `total_count` like every v3
list. What each event type means and carries is described in `gateway.timeline`.
"""

from __future__ import annotations

import logging

from aiohttp import web

from gateway.api import dto, errors, lookup, params
from gateway.api.render import json_response
from gateway.api.services import SERVICES
from gateway.model import DeviceType, JsonObject
from gateway.timeline import EventType, NewEvent

LOG = logging.getLogger("gateway.api")


async def device_timeline(request: web.Request) -> web.Response:
    """GET /v3/devices/{device}/timeline?type.in=&timestamp.gte=&timestamp.lt=&offset=&limit=."""
    query = params.timeline_query(request.query)
    device = await lookup.device(request, await lookup.own_site(request))
    events, total = await request.app[SERVICES].store.timeline(
        device.id,
        offset=query.page.offset,
        limit=query.page.limit,
        types=query.types,
        since=query.since,
        until=query.until,
    )
    return json_response({"events": [dto.timeline_event(event) for event in events], "total_count": total})


async def post_event(request: web.Request) -> web.Response:
    """POST /v3/devices/{device}/events {"code", "description"?}: a user event, returned as stored."""
    event = params.user_event(params.json_object(await request.read()))
    device = await lookup.device(request, await lookup.own_site(request))
    services = request.app[SERVICES]
    details: JsonObject = {"code": event.code, "description": event.description}
    try:
        written = await services.store.add_event(
            NewEvent(device.id, EventType.USER, services.clock(), details)
        )
    except LookupError:
        raise errors.not_found("Device") from None
    return json_response({"event": dto.timeline_event(written)})


async def clear_data(request: web.Request) -> web.Response:
    """POST /v3/devices/{device}/clear_data: the device's telemetry, alerts, logs and finished
    command executions are deleted; the device, its credentials, blueprint, properties, timeline
    and open executions stay. Returns the `data_cleared` event."""
    device = await lookup.device(request, await lookup.own_site(request))
    if device.type is DeviceType.GATEWAY:
        raise errors.unprocessable("The gateway's own device has no data to clear.")
    store = request.app[SERVICES].store
    # Messages already queued for the writer belong to the data being cleared.
    await store.flush()
    try:
        event = await store.clear_device_data(device.id)
    except LookupError:
        raise errors.not_found("Device") from None
    LOG.info("cleared the data of device %s", device.slug)
    return json_response({"event": dto.timeline_event(event)})
