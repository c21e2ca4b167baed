"""Resolving path parameters to records: the site scope and `{device}` (an id or a slug)."""

from __future__ import annotations

from aiohttp import web

from gateway.api import errors
from gateway.api.services import SERVICES
from gateway.model import Device, Site

# The site as read with the caller's token (`auth_middleware`): a request reads it once.
SITE = web.RequestKey("site", Site)


async def own_site(request: web.Request) -> Site:
    """The gateway's site; with a `{site_id}` in the path, 404 unless it names that site."""
    site = request.get(SITE)
    if site is None:
        site = await request.app[SERVICES].store.get_site()
    if site is None:  # ensure_site runs before the API starts
        raise errors.unavailable("The gateway has no site yet.")
    wanted = request.match_info.get("site_id")
    if wanted is not None and wanted != site.id:
        raise errors.not_found("Site")
    return site


async def device(request: web.Request, site: Site) -> Device:
    """The device named by `{device}` (id or slug) in `site` (from `own_site`); else 404."""
    found = await request.app[SERVICES].store.get_device(request.match_info["device"])
    if found is None or found.site_id != site.id:
        raise errors.not_found("Device")
    return found


async def device_seen(request: web.Request, site: Site) -> tuple[Device, float | None]:
    """`device` and when its last message arrived (None if never), in one query."""
    found = await request.app[SERVICES].store.device_seen(request.match_info["device"])
    if found is None or found[0].site_id != site.id:
        raise errors.not_found("Device")
    return found
