"""Devices (v3): list, get, and generating a device's MQTT configuration."""

from __future__ import annotations

import logging
import os
import secrets

from aiohttp import web

from gateway.api import dto, errors, lookup, params
from gateway.api.auth import ROLE, require
from gateway.api.render import json_response
from gateway.api.services import SERVICES
from gateway.model import MqttProtocol, Role
from gateway.mqtt import dynsec
from gateway.mqtt.endpoint import BrokerAdminError

LOG = logging.getLogger("gateway.api")


async def list_devices(request: web.Request) -> web.Response:
    """GET /v3/devices and /v3/sites/{site_id}/devices, ordered by id."""
    page = params.page(request.query)
    expand = params.expand(request.query, params.DEVICE_EXPANDS)
    site = await lookup.own_site(request)
    services = request.app[SERVICES]
    records, total = await services.store.list_devices(offset=page.offset, limit=page.limit)
    views = await services.views(records, expand)
    role = request[ROLE]
    body = [dto.device(view, role=role, expand=expand, site_record=site) for view in views]
    return json_response({"devices": body, "total_count": total})


async def get_device(request: web.Request) -> web.Response:
    """GET /v3/devices/{device} (an id or a slug)."""
    expand = params.expand(request.query, params.DEVICE_EXPANDS)
    site = await lookup.own_site(request)
    device = await lookup.device(request, site)
    services = request.app[SERVICES]
    (view,) = await services.views([device], expand)
    body = dto.device(view, role=request[ROLE], expand=expand, site_record=site)
    return json_response({"device": body})


async def generate_config(request: web.Request) -> web.Response:
    """POST /v3/devices/{device}/generate_config: new credentials; the old ones stop working."""
    require(request, Role.OWNER)
    body = params.json_object(await request.read())
    raw_protocol = body.get("protocol")
    if not isinstance(raw_protocol, str) or raw_protocol.upper() not in MqttProtocol.__members__:
        raise errors.invalid_parameter("protocol", 'must be "MQTT" or "MQTTS"')
    protocol = MqttProtocol(raw_protocol.upper())
    if protocol is MqttProtocol.MQTTS:
        raise errors.unprocessable("MQTTS configurations are not available on this gateway yet; use MQTT.")
    device = await lookup.device(request, await lookup.own_site(request))
    if device.hardware_id is None or device.channel_id is None:
        raise errors.unprocessable(
            f"Device {device.slug} of type {device.type.value} does not connect over MQTT itself."
        )
    services = request.app[SERVICES]
    password = secrets.token_urlsafe(32)
    secret = dynsec.hash_password(password, os.urandom(dynsec.SALT_BYTES)).encode()
    # The store is the source of truth: written first (durably), so a broker restart applies it
    # even if the live update below fails.
    await services.store.set_credential(
        device_id=device.id, protocol=protocol.value, username=device.hardware_id, secret=secret
    )
    try:
        await services.admin.apply(dynsec.create_device_commands(device.hardware_id, password))
    except BrokerAdminError as exc:
        LOG.error("could not apply new credentials of %s to the broker: %s", device.slug, exc)
        raise errors.unavailable(
            "The MQTT broker is not reachable; the configuration was not issued. Try again."
        ) from None
    endpoint = services.device_endpoint
    config = dto.communication_config(
        host=endpoint.mqtt_host,
        port=endpoint.mqtt_port,
        protocol=protocol,
        credentials={"username": device.hardware_id, "password": password},
        hardware_id=device.hardware_id,
        channel_id=device.channel_id,
        time_sync=endpoint.time_sync,
    )
    LOG.info("issued new %s credentials for device %s", protocol.value, device.slug)
    return json_response({"config": config})
