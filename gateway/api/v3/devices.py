"""Devices (v3): list, get, delete, and generating a device's MQTT configuration."""

from __future__ import annotations

import logging

from aiohttp import web

from gateway.api import dto, errors, lookup, params
from gateway.api.auth import ROLE
from gateway.api.render import json_response
from gateway.api.services import SERVICES
from gateway.model import DeviceType, JsonObject, MqttProtocol
from gateway.mqtt.accounts import BrokerChangeError, MqttsUnavailableError

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
    body = params.json_object(await request.read())
    raw_protocol = body.get("protocol")
    if not isinstance(raw_protocol, str) or raw_protocol.upper() not in MqttProtocol.__members__:
        raise errors.invalid_parameter("protocol", 'must be "MQTT" or "MQTTS"')
    protocol = MqttProtocol(raw_protocol.upper())
    device = await lookup.device(request, await lookup.own_site(request))
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
    config = dto.communication_config(
        host=endpoint.mqtt_host,
        port=port,
        protocol=protocol,
        credentials=credentials,
        hardware_id=device.hardware_id,
        channel_id=device.channel_id,
        time_sync=endpoint.time_sync,
    )
    LOG.info("issued new %s credentials for device %s", protocol.value, device.slug)
    return json_response({"config": config})


async def delete_device(request: web.Request) -> web.Response:
    """DELETE /v3/devices/{device}: the device, its data and its credentials are gone for good."""
    device = await lookup.device(request, await lookup.own_site(request))
    if device.type is DeviceType.GATEWAY:
        raise errors.unprocessable("The gateway's own device cannot be deleted.")
    try:
        await request.app[SERVICES].accounts.delete(device)
    except BrokerChangeError as exc:
        LOG.error("deleted device %s but the broker did not confirm revoking it: %s", device.slug, exc)
        raise errors.unavailable(
            "The device was deleted, but the MQTT broker did not confirm dropping its connections; "
            "its credentials are refused from the broker's next start."
        ) from None
    LOG.info("deleted device %s (%s)", device.slug, device.id)
    return json_response({})
