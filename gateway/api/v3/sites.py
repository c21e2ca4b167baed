"""Sites (v3). A gateway holds exactly one site; `GET /v3/site` is its shortcut (`enapter-http-api.md` §4)."""

from __future__ import annotations

from aiohttp import web

from gateway.api import dto, errors, lookup, params
from gateway.api.auth import ROLE
from gateway.api.render import json_response
from gateway.api.services import SERVICES
from gateway.config import is_iana_timezone


async def get_site(request: web.Request) -> web.Response:
    """GET /v3/site (the gateway's shortcut) and GET /v3/sites/{site_id}."""
    site = await lookup.own_site(request)
    return json_response({"site": dto.site(site, request[ROLE])})


async def list_sites(request: web.Request) -> web.Response:
    """GET /v3/sites and /v3/users/me/sites: the one site, paged like every list; `name` filters
    (VS Code) by a case-insensitive part of the name."""
    page = params.page(request.query)
    site = await lookup.own_site(request)
    wanted = request.query.get("name", "").casefold()
    matching = [dto.site(site, request[ROLE])] if wanted in site.name.casefold() else []
    return json_response(
        {"sites": matching[page.offset : page.offset + page.limit], "total_count": len(matching)}
    )


async def update_site(request: web.Request) -> web.Response:
    """PATCH /v3/site and /v3/sites/{site_id}: name, timezone, location; null = unchanged."""
    changes = params.site_changes(params.json_object(await request.read()))
    if changes.timezone is not None and not is_iana_timezone(changes.timezone):
        raise errors.invalid_parameter("timezone", f"{changes.timezone!r} is not an IANA time zone name")
    site = await lookup.own_site(request)
    updated = await request.app[SERVICES].store.update_site(
        site.id, name=changes.name, timezone=changes.timezone, location=changes.location
    )
    return json_response({"site": dto.site(updated, request[ROLE])})


async def create_site(request: web.Request) -> web.Response:
    """POST /v3/sites: a gateway holds one site, which exists from its first start."""
    site = await lookup.own_site(request)
    raise errors.conflict(
        f"This gateway holds exactly one site ({site.name!r}, id {site.id}); "
        "change it with PATCH /api/v3/site."
    )


async def delete_site(request: web.Request) -> web.Response:
    """DELETE /v3/sites/{site_id}: the gateway's one site cannot go (its devices live in it)."""
    await lookup.own_site(request)
    raise errors.conflict("The gateway's site cannot be deleted; delete its devices instead.")
