"""Sites (v3). A gateway holds exactly one site; `GET /v3/site` is its shortcut."""

from __future__ import annotations

from aiohttp import web

from gateway.api import dto, lookup, params
from gateway.api.auth import ROLE
from gateway.api.render import json_response


async def get_site(request: web.Request) -> web.Response:
    """GET /v3/site (the gateway's shortcut) and GET /v3/sites/{site_id}."""
    site = await lookup.own_site(request)
    return json_response({"site": dto.site(site, request[ROLE])})


async def list_sites(request: web.Request) -> web.Response:
    """GET /v3/sites: the one site, paged like every list."""
    page = params.page(request.query)
    site = await lookup.own_site(request)
    sites = [dto.site(site, request[ROLE])][page.offset : page.offset + page.limit]
    return json_response({"sites": sites, "total_count": 1})
