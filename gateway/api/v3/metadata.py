"""Metadata fields (issue 8): typed, site-wide definitions, and each device's values for them.

What the types and "required" mean is in `gateway.metadata`. Values that do not fit their field are
refused with a 400 naming the path (`metadata.serial_number`, `metadata.position.latitude`).
Reads need READONLY, changes OWNER.
"""

from __future__ import annotations

from aiohttp import web

from gateway.api import dto, errors, lookup, params
from gateway.api.render import json_response
from gateway.api.services import SERVICES
from gateway.api.v3.devices import device_response
from gateway.metadata import (
    MAX_FIELDS,
    MetadataError,
    MetadataField,
    changed_definition,
    field_definition,
    value_changes,
)
from gateway.store.store import FieldTakenError, OptionInUseError


async def _field(request: web.Request) -> MetadataField:
    fields = await request.app[SERVICES].store.metadata_fields()
    found = fields.get(request.match_info["field"])
    if found is None:
        raise errors.not_found("Metadata field")
    return found


async def list_fields(request: web.Request) -> web.Response:
    """GET /v3/metadata_fields: every definition, by name (at most 200 exist: no paging)."""
    await lookup.own_site(request)
    fields = await request.app[SERVICES].store.metadata_fields()
    return json_response(
        {"metadata_fields": [dto.metadata_field(f) for f in fields.values()], "total_count": len(fields)}
    )


async def create_field(request: web.Request) -> web.Response:
    """POST /v3/metadata_fields {name, type, required?, options?, default?, description?}."""
    body = params.json_object(await request.read())
    await lookup.own_site(request)
    services = request.app[SERVICES]
    try:
        field = field_definition(body, now=services.clock())
    except MetadataError as exc:
        raise errors.invalid_parameter(exc.path, exc.message) from None
    try:
        await services.store.create_metadata_field(field, max_fields=MAX_FIELDS)
    except FieldTakenError:
        raise errors.conflict(f"A metadata field named {field.name!r} already exists.") from None
    except ValueError as exc:
        raise errors.unprocessable(f"The site has too many metadata fields: {exc}.") from None
    return json_response({"metadata_field": dto.metadata_field(field)})


async def get_field(request: web.Request) -> web.Response:
    """GET /v3/metadata_fields/{field}."""
    await lookup.own_site(request)
    return json_response({"metadata_field": dto.metadata_field(await _field(request))})


async def update_field(request: web.Request) -> web.Response:
    """PATCH /v3/metadata_fields/{field} {required?, options?, default?, description?}: name and
    type never change; taking away enum options that devices hold is 409."""
    body = params.json_object(await request.read())
    await lookup.own_site(request)
    services = request.app[SERVICES]
    try:
        field = changed_definition(await _field(request), body, now=services.clock())
    except MetadataError as exc:
        raise errors.invalid_parameter(exc.path, exc.message) from None
    try:
        await services.store.update_metadata_field(field)
    except OptionInUseError as exc:
        raise errors.conflict(f"Devices hold values the new options leave out: {exc}.") from None
    except LookupError:
        raise errors.not_found("Metadata field") from None
    return json_response({"metadata_field": dto.metadata_field(field)})


async def delete_field(request: web.Request) -> web.Response:
    """DELETE /v3/metadata_fields/{field}: the definition and every device's value for it."""
    await lookup.own_site(request)
    if not await request.app[SERVICES].store.delete_metadata_field(request.match_info["field"]):
        raise errors.not_found("Metadata field")
    return json_response({})


async def update_device_metadata(request: web.Request) -> web.Response:
    """PATCH /v3/devices/{device}/metadata {"values": {field: value or null}}: set or (null) remove
    the device's own values, all or none; answers the device with `metadata`."""
    body = params.json_object(await request.read())
    site = await lookup.own_site(request)
    device = await lookup.device(request, site)
    store = request.app[SERVICES].store
    try:
        changes = value_changes(await store.metadata_fields(), body)
    except MetadataError as exc:
        raise errors.invalid_parameter(exc.path, exc.message) from None
    if not changes:  # `{"values": {}}` changes nothing, not even updated_at
        return await device_response(request, device, site, frozenset({"metadata"}))
    try:
        device = await store.set_device_metadata(device.id, changes)
    except LookupError:
        # A field deleted between the check and the write.
        raise errors.conflict("The metadata fields changed meanwhile; try again.") from None
    return await device_response(request, device, site, frozenset({"metadata"}))
