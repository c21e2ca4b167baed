"""Site statistics (a gateway addition): `GET /v3/site/stats?window=1h|24h|7d|30d`."""

from __future__ import annotations

from aiohttp import web

from gateway.api import dto, lookup, params
from gateway.api.auth import ROLE
from gateway.api.render import json_response
from gateway.api.services import SERVICES

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
    )
    return json_response({"stats": dto.site_stats(stats)})
