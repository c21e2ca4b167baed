"""Provisioning (v3): creating devices."""

from __future__ import annotations

import secrets

from aiohttp import web

from gateway.api import errors, lookup, params
from gateway.api.render import json_response
from gateway.api.services import SERVICES
from gateway.model import CommunicationType, DeviceType
from gateway.store.store import SlugTakenError

# Standalone devices: hardware id `S` + 32 upper-case hex, channel `s` (enapter-device-protocol.md §1.2).
STANDALONE_CHANNEL = "s"


def standalone_hardware_id() -> str:
    """A fresh hardware id for a standalone device."""
    return "S" + secrets.token_hex(16).upper()


async def standalone(request: web.Request) -> web.Response:
    """POST /v3/provisioning/standalone {name, slug?, site_id?} -> {"device_id"}."""
    body = params.json_object(await request.read())
    name = params.optional_string(body, "name")
    if name is None:
        raise errors.invalid_parameter("name", "is required")
    slug = params.optional_string(body, "slug", max_length=100)
    site = await lookup.own_site(request)
    site_id = params.optional_string(body, "site_id")
    if site_id is not None and site_id != site.id:
        raise errors.not_found("Site")
    services = request.app[SERVICES]
    try:
        device = await services.store.create_device(
            site_id=site.id,
            name=name,
            slug=slug,
            type=DeviceType.STANDALONE,
            communication_type=CommunicationType.MQTT_V1_PLAINTEXT,
            hardware_id=standalone_hardware_id(),
            channel_id=STANDALONE_CHANNEL,
        )
    except SlugTakenError:
        raise errors.conflict(f"A device with slug {slug!r} already exists.") from None
    services.ingest.register([device])
    return json_response({"device_id": device.id, "slug": device.slug})
