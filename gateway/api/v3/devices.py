"""Devices (v3): list, get, change, delete, assign a blueprint, and generate a device's MQTT
configuration (`enapter-http-api.md` §5)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from aiohttp import web

from gateway.api import dto, errors, lookup, params
from gateway.api.auth import ROLE
from gateway.api.render import json_response
from gateway.api.services import SERVICES
from gateway.model import Device, DeviceType, JsonObject, MqttProtocol, Site
from gateway.mqtt.accounts import BrokerChangeError, MqttsUnavailableError
from gateway.store.store import HasChildrenError, SlugTakenError

LOG = logging.getLogger("gateway.api")


async def list_devices(request: web.Request) -> web.Response:
    """GET /v3/devices and /v3/sites/{site_id}/devices: ordered by id unless `order` says, with
    `q` and the filters of `params.device_filter`; `total_count` counts what the filters select."""
    page = params.page(request.query)
    expand = params.expand(request.query, params.DEVICE_EXPANDS)
    search = params.device_filter(request.query)
    site = await lookup.own_site(request)
    services = request.app[SERVICES]
    online, seen = services.connectivity_sets() if search.connectivity is not None else ((), ())
    records, total = await services.store.find_devices(
        search, offset=page.offset, limit=page.limit, site_id=site.id, online=online, seen=seen
    )
    views = await services.views(records, expand, request[ROLE])
    role = request[ROLE]
    body = [dto.device(view, role=role, expand=expand, site_record=site) for view in views]
    return json_response({"devices": body, "total_count": total})


async def get_device(request: web.Request) -> web.Response:
    """GET /v3/devices/{device} (an id or a slug)."""
    expand = params.expand(request.query, params.DEVICE_EXPANDS)
    site = await lookup.own_site(request)
    device, seen = await lookup.device_seen(request, site)
    return await device_response(
        request, device, site, expand, last_seen={} if seen is None else {device.id: seen}
    )


async def device_response(
    request: web.Request,
    device: Device,
    site: Site,
    expand: frozenset[str] = frozenset(),
    *,
    last_seen: Mapping[str, float] | None = None,
) -> web.Response:
    """`{"device": ...}` as the caller's role sees it (`last_seen`: see `Services.views`)."""
    (view,) = await request.app[SERVICES].views([device], expand, request[ROLE], last_seen=last_seen)
    return json_response({"device": dto.device(view, role=request[ROLE], expand=expand, site_record=site)})


async def generate_config(request: web.Request) -> web.Response:
    """POST /v3/devices/{device}/generate_config: new credentials; the old ones stop working."""
    protocol = params.mqtt_protocol(params.json_object(await request.read()))
    device = await lookup.device(request, await lookup.own_site(request))
    config = await issue_config(request, device, protocol)
    return json_response({"config": config})


async def issue_config(request: web.Request, device: Device, protocol: MqttProtocol) -> JsonObject:
    """New credentials for the device (the old ones stop working) and the config that carries them."""
    if device.upstream_id is not None:
        raise errors.unprocessable(
            f"Device {device.slug} runs on its upstream device {device.upstream_id}, which connects "
            "for it: generate the configuration of that device."
        )
    if device.hardware_id is None or device.channel_id is None:
        raise errors.unprocessable(
            f"Device {device.slug} of type {device.type.value} does not connect over MQTT itself."
        )
    services = request.app[SERVICES]
    endpoint = services.device_endpoint
    credentials: JsonObject
    try:
        if protocol is MqttProtocol.MQTTS:
            if endpoint.mqtts_port is None:
                raise MqttsUnavailableError
            issued = await services.accounts.issue_certificate(device, device.hardware_id)
            credentials = {
                "private_key": issued.pair.key_pem,
                "certificate": issued.pair.certificate_pem,
                "ca_chain": services.accounts.ca_certificate or "",
            }
            port = endpoint.mqtts_port
        else:
            password = await services.accounts.issue_password(device, device.hardware_id)
            credentials = {"username": device.hardware_id, "password": password}
            port = endpoint.mqtt_port
    except MqttsUnavailableError:
        raise errors.unprocessable(
            'MQTTS is not available on this gateway: it needs mqtt.mode = "managed" and a non-zero '
            "mqtt.tls_port. Use MQTT."
        ) from None
    except BrokerChangeError as exc:
        LOG.error("could not apply new credentials of %s to the broker: %s", device.slug, exc)
        raise errors.unavailable(
            "The MQTT broker did not confirm the change; the old credentials are revoked and the "
            "new ones were not issued. Try again."
        ) from None
    LOG.info("issued new %s credentials for device %s", protocol.value, device.slug)
    return dto.communication_config(
        host=endpoint.mqtt_host,
        port=port,
        protocol=protocol,
        credentials=credentials,
        hardware_id=device.hardware_id,
        channel_id=device.channel_id,
        time_sync=endpoint.time_sync,
    )


async def update_device(request: web.Request) -> web.Response:
    """PATCH /v3/devices/{device} {name, slug}: null or "" leaves a field as it is."""
    changes = params.device_changes(params.json_object(await request.read()))
    site = await lookup.own_site(request)
    device = await lookup.device(request, site)
    services = request.app[SERVICES]
    if changes.name is not None or changes.slug is not None:
        try:
            device = await services.store.update_device(device.id, name=changes.name, slug=changes.slug)
        except SlugTakenError:
            raise errors.conflict(f"A device with slug {changes.slug!r} already exists.") from None
        except LookupError:
            raise errors.not_found("Device") from None
    return await device_response(request, device, site)


async def assign_blueprint(request: web.Request) -> web.Response:
    """POST /v3/devices/{device}/assign_blueprint {blueprint_id}: the device follows its manifest."""
    blueprint_id = params.optional_string(params.json_object(await request.read()), "blueprint_id")
    if blueprint_id is None:
        raise errors.invalid_parameter("blueprint_id", "is required")
    site = await lookup.own_site(request)
    device = await lookup.device(request, site)
    if device.type is DeviceType.GATEWAY:
        raise errors.unprocessable("The gateway's own device has no blueprint.")
    services = request.app[SERVICES]
    blueprint = await services.store.blueprint(blueprint_id)
    if blueprint is None:
        raise errors.not_found("Blueprint")
    try:
        device = await services.store.assign_blueprint(device.id, blueprint.id)
    except LookupError:
        raise errors.not_found("Device") from None
    services.manifests.assign(device.id, blueprint)
    LOG.info("device %s now follows blueprint %s", device.slug, blueprint.id)
    return await device_response(request, device, site)


async def get_manifest(request: web.Request) -> web.Response:
    """GET /v3/devices/{device}/manifest -> {"manifest"} (Grafana); null for a device without one."""
    device = await lookup.device(request, await lookup.own_site(request))
    blueprint = await request.app[SERVICES].store.blueprint(device.blueprint_id)
    return json_response({"manifest": None if blueprint is None else blueprint.manifest})


async def delete_device(request: web.Request) -> web.Response:
    """DELETE /v3/devices/{device}: the device, its data and its credentials are gone for good.

    A device other devices run on (a UCM with Lua devices) is refused with 409 until they are gone.
    """
    device = await lookup.device(request, await lookup.own_site(request))
    if device.type is DeviceType.GATEWAY:
        raise errors.unprocessable("The gateway's own device cannot be deleted.")
    services = request.app[SERVICES]
    try:
        await services.accounts.delete(device)
    except HasChildrenError as exc:
        raise errors.conflict(
            f"Device {device.slug} is the runtime of other devices ({exc}); delete them first."
        ) from None
    except BrokerChangeError as exc:
        services.manifests.forget(device.id)
        LOG.error("deleted device %s but the broker did not confirm revoking it: %s", device.slug, exc)
        raise errors.unavailable(
            "The device was deleted, but the MQTT broker did not confirm dropping its connections; "
            "its credentials are refused from the broker's next start."
        ) from None
    services.manifests.forget(device.id)
    LOG.info("deleted device %s (%s)", device.slug, device.id)
    return json_response({})
