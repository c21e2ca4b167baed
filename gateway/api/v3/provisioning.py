"""Provisioning (v3): creating devices of every kind (`enapter-http-api.md` §5.1).

| kind        | type          | communication                 | hardware id / channel         |
|-------------|---------------|-------------------------------|-------------------------------|
| standalone  | STANDALONE    | MQTT_V1_PLAINTEXT (TLS later) | `S` + 32 hex (generated) / s  |
| vucm        | VIRTUAL_UCM   | MQTT_V1_PLAINTEXT (TLS later) | `V` + 32 hex (given or made) / ucm |
| ucm         | HARDWARE_UCM  | as its `protocol`             | given / ucm                   |
| lua_device  | LUA           | UCM_LUA, upstream = the UCM   | the UCM's / its own channel   |

A Lua device runs on its UCM, which connects for it: it has no credentials of its own and its
messages come on the UCM's hardware id under the Lua device's channel (the UCM's broker account
may publish on every channel of its hardware id). Provisioning again with the same arguments (a UCM
after a Wi-Fi change) returns the device already there instead of a second one.
"""

from __future__ import annotations

import re
import secrets

from aiohttp import web

from gateway.api import errors, lookup, params
from gateway.api.render import json_response
from gateway.api.services import SERVICES
from gateway.api.v3.devices import issue_config
from gateway.model import NO_BLUEPRINT_ID, CommunicationType, Device, DeviceType, JsonObject, Site
from gateway.store.store import ChannelTakenError, SlugTakenError

# Hardware ids and channels (enapter-device-protocol.md §1.2).
STANDALONE_CHANNEL = "s"
UCM_CHANNEL = "ucm"
_VUCM_HARDWARE_ID = re.compile(r"V[0-9A-F]{32}")
# Hardware UCM ids are printed on the module; keep them to what is safe in an MQTT topic level.
_HARDWARE_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")
_UCMS = frozenset({DeviceType.HARDWARE_UCM, DeviceType.VIRTUAL_UCM, DeviceType.EMBEDDED_UCM})


def standalone_hardware_id() -> str:
    """A fresh hardware id for a standalone device."""
    return "S" + secrets.token_hex(16).upper()


def virtual_ucm_hardware_id() -> str:
    """A fresh hardware id for a virtual UCM (python-sdk makes the same shape)."""
    return "V" + secrets.token_hex(16).upper()


async def standalone(request: web.Request) -> web.Response:
    """POST /v3/provisioning/standalone {name, slug?, site_id?} -> {"device_id", "slug"}."""
    body = params.json_object(await request.read())
    name = _name(body)
    slug = params.slug(body)
    site = await _site(request, body)
    device = await _create(
        request,
        site=site,
        name=name,
        slug=slug,
        type=DeviceType.STANDALONE,
        communication_type=CommunicationType.MQTT_V1_PLAINTEXT,
        hardware_id=standalone_hardware_id(),
        channel_id=STANDALONE_CHANNEL,
    )
    return json_response({"device_id": device.id, "slug": device.slug})


async def vucm(request: web.Request) -> web.Response:
    """POST /v3/provisioning/vucm {name, hardware_id?, site_id?} -> {"device_id", "slug"}."""
    body = params.json_object(await request.read())
    name = _name(body)
    hardware_id = params.optional_string(body, "hardware_id", max_length=33)
    if hardware_id is not None and not _VUCM_HARDWARE_ID.fullmatch(hardware_id):
        raise errors.invalid_parameter("hardware_id", 'must be "V" followed by 32 upper-case hex digits')
    site = await _site(request, body)
    device = await _ucm(request, site, name, hardware_id or virtual_ucm_hardware_id(), DeviceType.VIRTUAL_UCM)
    return json_response({"device_id": device.id, "slug": device.slug})


async def ucm(request: web.Request) -> web.Response:
    """POST /v3/provisioning/ucm {hardware_id, name?, protocol?, site_id?} -> {"config", "device_id",
    "slug"}: a hardware UCM, with new credentials each time (its config is typed into the UCM)."""
    body = params.json_object(await request.read())
    hardware_id = params.optional_string(body, "hardware_id", max_length=64)
    if hardware_id is None:
        raise errors.invalid_parameter("hardware_id", "is required")
    if not _HARDWARE_ID.fullmatch(hardware_id):
        raise errors.invalid_parameter("hardware_id", "must be 1 to 64 letters, digits, '-' or '_'")
    protocol = params.mqtt_protocol({"protocol": body.get("protocol") or "MQTTS"})
    name = params.optional_string(body, "name") or f"UCM {hardware_id}"
    site = await _site(request, body)
    device = await _ucm(request, site, name, hardware_id, DeviceType.HARDWARE_UCM)
    config = await issue_config(request, device, protocol)
    return json_response({"config": config, "device_id": device.id, "slug": device.slug})


async def lua_device(request: web.Request) -> web.Response:
    """POST /v3/provisioning/lua_device {name, runtime_id, blueprint_id, slug?} -> {"device_id", "slug"}."""
    body = params.json_object(await request.read())
    name = _name(body)
    slug = params.slug(body)
    runtime_id = params.optional_string(body, "runtime_id")
    if runtime_id is None:
        raise errors.invalid_parameter("runtime_id", "is required (the UCM the Lua device runs on)")
    blueprint_id = params.optional_string(body, "blueprint_id")
    if blueprint_id is None:
        raise errors.invalid_parameter("blueprint_id", "is required")
    site = await _site(request, body)
    services = request.app[SERVICES]
    runtime = await services.store.get_device(runtime_id)
    if runtime is None or runtime.site_id != site.id:
        raise errors.not_found("Runtime device")
    if runtime.type not in _UCMS or runtime.hardware_id is None:
        raise errors.unprocessable(
            f"Device {runtime.slug} of type {runtime.type.value} cannot run Lua devices; use a UCM."
        )
    blueprint = await services.store.blueprint(blueprint_id)
    if blueprint is None:
        raise errors.not_found("Blueprint")
    for child in await services.store.children(runtime.id):
        if child.blueprint_id == blueprint.id and child.name == name and slug in (None, child.slug):
            return json_response({"device_id": child.id, "slug": child.slug})
    device = await _create(
        request,
        site=site,
        name=name,
        slug=slug,
        type=DeviceType.LUA,
        communication_type=CommunicationType.UCM_LUA,
        hardware_id=runtime.hardware_id,
        channel_id=f"lua-{secrets.token_hex(4)}",
        upstream_id=runtime.id,
        blueprint_id=blueprint.id,
    )
    services.manifests.assign(device.id, blueprint)
    return json_response({"device_id": device.id, "slug": device.slug})


def _name(body: JsonObject) -> str:
    name = params.optional_string(body, "name")
    if name is None or not name.strip():
        raise errors.invalid_parameter("name", "is required")
    return name


async def _site(request: web.Request, body: JsonObject) -> Site:
    """The gateway's site; a `site_id` in the body (optional on a gateway) must name it."""
    site = await lookup.own_site(request)
    site_id = params.optional_string(body, "site_id")
    if site_id is not None and site_id != site.id:
        raise errors.not_found("Site")
    return site


async def _ucm(request: web.Request, site: Site, name: str, hardware_id: str, type: DeviceType) -> Device:
    """The UCM with this hardware id: the one already provisioned, or a new one."""
    existing = await request.app[SERVICES].store.device_by_hardware_id(hardware_id)
    if existing is not None:
        if existing.type is not type or existing.site_id != site.id:
            raise errors.conflict(
                f"Hardware id {hardware_id} belongs to device {existing.slug} of type {existing.type.value}."
            )
        return existing
    return await _create(
        request,
        site=site,
        name=name,
        slug=None,
        type=type,
        communication_type=CommunicationType.MQTT_V1_PLAINTEXT,
        hardware_id=hardware_id,
        channel_id=UCM_CHANNEL,
    )


async def _create(
    request: web.Request,
    *,
    site: Site,
    name: str,
    slug: str | None,
    type: DeviceType,
    communication_type: CommunicationType,
    hardware_id: str,
    channel_id: str,
    upstream_id: str | None = None,
    blueprint_id: str = NO_BLUEPRINT_ID,
) -> Device:
    services = request.app[SERVICES]
    try:
        device = await services.store.create_device(
            site_id=site.id,
            name=name,
            slug=slug,
            type=type,
            communication_type=communication_type,
            hardware_id=hardware_id,
            channel_id=channel_id,
            upstream_id=upstream_id,
            blueprint_id=blueprint_id,
        )
    except SlugTakenError:
        raise errors.conflict(f"A device with slug {slug!r} already exists.") from None
    except ChannelTakenError as exc:
        raise errors.conflict(f"Another device already uses MQTT channel {exc}.") from None
    services.ingest.register([device])
    return device
