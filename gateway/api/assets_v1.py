"""Assets API v1 (gateway firmware >= 2.1): devices with page tokens, `filter[type_in]`."""

from __future__ import annotations

from aiohttp import web

from gateway.api import dto, lookup, params
from gateway.api.auth import ROLE
from gateway.api.render import json_response
from gateway.api.services import SERVICES


async def list_devices(request: web.Request) -> web.Response:
    """GET /assets/v1/devices: `{"devices": [...], "next_page_token": str | null}`."""
    page = params.asset_page(request.query)
    expand = params.expand(request.query, params.ASSET_EXPANDS)
    wanted = params.asset_types(request.query)
    types = None if wanted is None else dto.asset_types_to_device_types(wanted)
    services = request.app[SERVICES]
    records, total = await services.store.list_devices(offset=page.offset, limit=page.limit, types=types)
    views = await services.views(records, expand, request[ROLE])
    following = page.offset + len(records)
    return json_response(
        {
            "devices": [dto.asset_device(view, expand=expand) for view in views],
            "next_page_token": str(following) if following < total else None,
        }
    )


async def get_device(request: web.Request) -> web.Response:
    """GET /assets/v1/devices/{device}."""
    expand = params.expand(request.query, params.ASSET_EXPANDS)
    device = await lookup.device(request, await lookup.own_site(request))
    (view,) = await request.app[SERVICES].views([device], expand, request[ROLE])
    return json_response({"device": dto.asset_device(view, expand=expand)})
