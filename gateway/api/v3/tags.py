"""Tags (issue 8): create, list, rename and delete tags; put them on and take them off devices.

A tag is named by its id or its name (names are unique in any letter case) wherever `{tag}` is in
a path. Deleting a tag takes it off every device. Changes need OWNER, like device changes.
"""

from __future__ import annotations

from aiohttp import web

from gateway.api import dto, errors, lookup, params
from gateway.api.render import json_response
from gateway.api.services import SERVICES
from gateway.api.v3.devices import device_response
from gateway.device_search import Tag, tag_name_problem
from gateway.model import JsonObject
from gateway.store.store import TagTakenError


def _name(body: JsonObject) -> str:
    name = body.get("name")
    if not isinstance(name, str):
        raise errors.invalid_parameter("name", "is required and must be a string")
    problem = tag_name_problem(name)
    if problem is not None:
        raise errors.invalid_parameter("name", problem)
    return name


async def _tag(request: web.Request) -> Tag:
    found = await request.app[SERVICES].store.tag(request.match_info["tag"])
    if found is None:
        raise errors.not_found("Tag")
    return found


async def list_tags(request: web.Request) -> web.Response:
    """GET /v3/tags: tags by name, each with its device count; offset/limit, `total_count`."""
    page = params.page(request.query)
    await lookup.own_site(request)
    tags, total = await request.app[SERVICES].store.tags(offset=page.offset, limit=page.limit)
    return json_response({"tags": [dto.tag(tag) for tag in tags], "total_count": total})


async def create_tag(request: web.Request) -> web.Response:
    """POST /v3/tags {name}: a new tag; 409 if one has this name in any letter case."""
    name = _name(params.json_object(await request.read()))
    await lookup.own_site(request)
    try:
        tag = await request.app[SERVICES].store.create_tag(name)
    except TagTakenError:
        raise errors.conflict(f"A tag named {name!r} already exists.") from None
    return json_response({"tag": dto.tag(tag)})


async def get_tag(request: web.Request) -> web.Response:
    """GET /v3/tags/{tag}."""
    await lookup.own_site(request)
    return json_response({"tag": dto.tag(await _tag(request))})


async def rename_tag(request: web.Request) -> web.Response:
    """PATCH /v3/tags/{tag} {name}: the devices keep the tag under its new name."""
    name = _name(params.json_object(await request.read()))
    await lookup.own_site(request)
    tag = await _tag(request)
    try:
        renamed = await request.app[SERVICES].store.rename_tag(tag.id, name)
    except TagTakenError:
        raise errors.conflict(f"A tag named {name!r} already exists.") from None
    except LookupError:
        raise errors.not_found("Tag") from None
    return json_response({"tag": dto.tag(renamed)})


async def delete_tag(request: web.Request) -> web.Response:
    """DELETE /v3/tags/{tag}: gone, and off every device."""
    await lookup.own_site(request)
    tag = await _tag(request)
    if not await request.app[SERVICES].store.delete_tag(tag.id):
        raise errors.not_found("Tag")
    return json_response({})


async def attach_tag(request: web.Request) -> web.Response:
    """PUT /v3/devices/{device}/tags/{tag}: the device carries the tag (again is fine); answers the
    device with its tags."""
    site = await lookup.own_site(request)
    device = await lookup.device(request, site)
    tag = await _tag(request)
    try:
        await request.app[SERVICES].store.attach_tag(device.id, tag.id)
    except LookupError:
        raise errors.not_found("Device or tag") from None
    return await device_response(request, device, site, frozenset({"tags"}))


async def detach_tag(request: web.Request) -> web.Response:
    """DELETE /v3/devices/{device}/tags/{tag}: the device no longer carries the tag (whether it did
    or not); answers the device with its tags."""
    site = await lookup.own_site(request)
    device = await lookup.device(request, site)
    tag = await _tag(request)
    await request.app[SERVICES].store.detach_tag(device.id, tag.id)
    return await device_response(request, device, site, frozenset({"tags"}))
