"""Device logs (v3): `GET /v3/devices/{device}/logs` with the filters of `enapter-http-api.md` §7.3."""

from __future__ import annotations

from aiohttp import web

from gateway.api import dto, lookup, params
from gateway.api.render import json_response
from gateway.api.services import SERVICES


async def device_logs(request: web.Request) -> web.Response:
    """The device's logs, filtered, ordered by arrival and paged, with `total_count`."""
    query = params.log_query(request.query)
    device = await lookup.device(request, await lookup.own_site(request))
    severities = None if query.severity is None else query.severity.and_more_severe()
    entries, total = await request.app[SERVICES].store.logs(
        device.id,
        offset=query.page.offset,
        limit=query.page.limit,
        received_from=query.received_from,
        received_to=query.received_to,
        severities=severities,
        persisted=query.persisted,
        newest_first=query.newest_first,
    )
    body = [dto.log_entry(entry, received_at) for entry, received_at in entries]
    return json_response({"logs": body, "total_count": total})
