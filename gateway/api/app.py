"""The aiohttp application: the route table with each route's minimum role, the middlewares, serving.

Every v3 device route is served under `/api/v3/devices/...` and `/api/v3/sites/{site_id}/devices/...`
(the newest CLI and VS Code use the site-scoped form); the Assets API v1 under `/api/assets/v1` and at
the root `/assets/v1` (the Go client drops the base path), see `enapter-http-api.md` §1.3, §10.
Minimum roles follow §2 of that reference: every read for READONLY, site and device changes,
credentials and blueprint uploads for OWNER, provisioning for INSTALLER (its §12 recommendation);
a command's own `access_level` is checked by the command handlers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from gateway.api import assets_v1, commands_v1, control, health, metrics, openapi
from gateway.api.auth import ACCESS, Access, auth_middleware, rate_limit_headers
from gateway.api.render import SERVER_LOG, Handler, error_middleware
from gateway.api.services import SERVICES, Services
from gateway.api.v3 import (
    blueprints,
    commands,
    devices,
    metadata,
    provisioning,
    sites,
    stats,
    streams,
    tags,
    telemetry,
    timeline,
)
from gateway.config import ApiConfig
from gateway.model import Role

LOG = logging.getLogger("gateway.api")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One route and the lowest role that may call it (None: no token needed)."""

    method: str
    path: str
    handler: Handler
    minimum_role: Role | None


def endpoints() -> list[Endpoint]:
    """The whole HTTP surface of the gateway."""
    table: list[Endpoint] = []
    for prefix in ("/api/v3", "/api/v3/sites/{site_id}"):
        table += [
            Endpoint("GET", prefix + "/devices", devices.list_devices, Role.READONLY),
            Endpoint("GET", prefix + "/devices/{device}", devices.get_device, Role.READONLY),
            Endpoint("PATCH", prefix + "/devices/{device}", devices.update_device, Role.OWNER),
            Endpoint("DELETE", prefix + "/devices/{device}", devices.delete_device, Role.OWNER),
            Endpoint(
                "POST", prefix + "/devices/{device}/assign_blueprint", devices.assign_blueprint, Role.OWNER
            ),
            Endpoint("GET", prefix + "/devices/{device}/manifest", devices.get_manifest, Role.READONLY),
            Endpoint(
                "POST", prefix + "/devices/{device}/generate_config", devices.generate_config, Role.OWNER
            ),
            # The WebSocket streams (§7.4) share these paths with the JSON reads; streams.* dispatch.
            Endpoint("GET", prefix + "/devices/", streams.monitor, Role.READONLY),
            Endpoint("GET", prefix + "/devices/{device}/telemetry", streams.device_telemetry, Role.READONLY),
            Endpoint("GET", prefix + "/devices/{device}/logs", streams.device_logs, Role.READONLY),
            # Each command's own `access_level` (USER unless its manifest says) is checked inside.
            Endpoint(
                "POST", prefix + "/devices/{device}/execute_command", commands.execute_command, Role.READONLY
            ),
            Endpoint(
                "POST",
                prefix + "/devices/{device}/command_executions",
                commands.create_execution,
                Role.READONLY,
            ),
            Endpoint(
                "GET",
                prefix + "/devices/{device}/command_executions",
                commands.list_device_executions,
                Role.READONLY,
            ),
            Endpoint(
                "GET",
                prefix + "/devices/{device}/command_executions/{execution_id}",
                commands.get_execution,
                Role.READONLY,
            ),
            # Issue 8: tags and metadata values on a device (changes: OWNER, like device changes).
            Endpoint("PUT", prefix + "/devices/{device}/tags/{tag}", tags.attach_tag, Role.OWNER),
            Endpoint("DELETE", prefix + "/devices/{device}/tags/{tag}", tags.detach_tag, Role.OWNER),
            Endpoint(
                "PATCH", prefix + "/devices/{device}/metadata", metadata.update_device_metadata, Role.OWNER
            ),
            # The timeline (the gateway's own addition): anyone may read it, a USER may add to it
            # (like running a command), clearing data is a device change (OWNER).
            Endpoint("GET", prefix + "/devices/{device}/timeline", timeline.device_timeline, Role.READONLY),
            Endpoint("POST", prefix + "/devices/{device}/events", timeline.post_event, Role.USER),
            Endpoint("POST", prefix + "/devices/{device}/clear_data", timeline.clear_data, Role.OWNER),
        ]
    table += [
        Endpoint("GET", "/api/v3/site", sites.get_site, Role.READONLY),
        # The site's timeline events live, over a WebSocket (a plain GET is a 400).
        Endpoint("GET", "/api/v3/site/events", streams.site_events, Role.READONLY),
        Endpoint("PATCH", "/api/v3/site", sites.update_site, Role.OWNER),
        Endpoint("GET", "/api/v3/sites", sites.list_sites, Role.READONLY),
        Endpoint("POST", "/api/v3/sites", sites.create_site, Role.OWNER),
        Endpoint("GET", "/api/v3/users/me/sites", sites.list_sites, Role.READONLY),
        Endpoint("GET", "/api/v3/sites/{site_id}", sites.get_site, Role.READONLY),
        Endpoint("PATCH", "/api/v3/sites/{site_id}", sites.update_site, Role.OWNER),
        Endpoint("DELETE", "/api/v3/sites/{site_id}", sites.delete_site, Role.OWNER),
        # Gateway additions that Enapter's clients never call.
        Endpoint("GET", "/api/v3/site/stats", stats.site_stats, Role.READONLY),
        Endpoint("GET", "/api/v3/sites/{site_id}/stats", stats.site_stats, Role.READONLY),
        Endpoint("POST", "/api/v3/provisioning/standalone", provisioning.standalone, Role.INSTALLER),
        Endpoint("POST", "/api/v3/provisioning/vucm", provisioning.vucm, Role.INSTALLER),
        Endpoint("POST", "/api/v3/provisioning/ucm", provisioning.ucm, Role.INSTALLER),
        Endpoint("POST", "/api/v3/provisioning/lua_device", provisioning.lua_device, Role.INSTALLER),
        # Fixed blueprint paths before `{blueprint_id}`, which would match them too.
        Endpoint("POST", "/api/v3/blueprints/upload", blueprints.upload, Role.OWNER),
        # Validation needs no token (`enapter-http-api.md` §8).
        Endpoint("POST", "/api/v3/blueprints/validate", blueprints.validate, None),
        Endpoint("POST", "/api/v3/blueprints/upload_device_profiles", blueprints.upload_profiles, Role.OWNER),
        # python-sdk and the CLI call the same download by two paths.
        Endpoint(
            "GET", "/api/v3/blueprints/device_profiles/download", blueprints.download_profiles, Role.READONLY
        ),
        Endpoint(
            "GET", "/api/v3/blueprints/download_device_profiles", blueprints.download_profiles, Role.READONLY
        ),
        Endpoint("GET", "/api/v3/blueprints/enapter/{name}/{tag}", blueprints.get_named, Role.READONLY),
        Endpoint("GET", "/api/v3/blueprints/{blueprint_id}", blueprints.get_blueprint, Role.READONLY),
        # The docs let the archive download run without a token (§8).
        Endpoint("GET", "/api/v3/blueprints/{blueprint_id}/zip", blueprints.download, None),
        Endpoint("GET", "/api/v3/telemetry/latest", telemetry.latest, Role.READONLY),
        Endpoint("POST", "/api/v3/telemetry/query_timeseries", telemetry.query_timeseries, Role.READONLY),
        Endpoint(
            "GET", "/api/v3/sites/{site_id}/commands/executions", commands.list_site_executions, Role.READONLY
        ),
        # Issue 8: tags (`{tag}` = id or name) and site-wide metadata field definitions.
        Endpoint("GET", "/api/v3/tags", tags.list_tags, Role.READONLY),
        Endpoint("POST", "/api/v3/tags", tags.create_tag, Role.OWNER),
        Endpoint("GET", "/api/v3/tags/{tag}", tags.get_tag, Role.READONLY),
        Endpoint("PATCH", "/api/v3/tags/{tag}", tags.rename_tag, Role.OWNER),
        Endpoint("DELETE", "/api/v3/tags/{tag}", tags.delete_tag, Role.OWNER),
        Endpoint("GET", "/api/v3/metadata_fields", metadata.list_fields, Role.READONLY),
        Endpoint("POST", "/api/v3/metadata_fields", metadata.create_field, Role.OWNER),
        Endpoint("GET", "/api/v3/metadata_fields/{field}", metadata.get_field, Role.READONLY),
        Endpoint("PATCH", "/api/v3/metadata_fields/{field}", metadata.update_field, Role.OWNER),
        Endpoint("DELETE", "/api/v3/metadata_fields/{field}", metadata.delete_field, Role.OWNER),
    ]
    # Gateway 2.x (v1) APIs, under /api and at the root as the Go client calls them.
    for root in ("/api", ""):
        table += [
            Endpoint("GET", root + "/assets/v1/devices", assets_v1.list_devices, Role.READONLY),
            Endpoint("GET", root + "/assets/v1/devices/{device}", assets_v1.get_device, Role.READONLY),
            Endpoint("GET", root + "/telemetry/v1/now", telemetry.v1_now, Role.READONLY),
            Endpoint("POST", root + "/commands/v1/execute", commands_v1.execute, Role.READONLY),
            Endpoint("POST", root + "/telemetry/v1/timeseries", telemetry.query_timeseries, Role.READONLY),
            Endpoint("GET", root + "/blueprints/v1/download", blueprints.download_v1, Role.READONLY),
        ]
    # Monitoring: no token (nothing secret; errors and logs are on the control socket only).
    table.append(Endpoint("GET", "/api/health", health.health, None))
    table.append(Endpoint("GET", "/metrics", metrics.metrics, None))
    # This API's own description, and a page rendered from it (no token: nothing secret).
    table.append(Endpoint("GET", openapi.DOCUMENT_PATH, openapi.openapi_json, None))
    table.append(Endpoint("GET", openapi.DOCS_PATH, openapi.docs_page, None))
    return table


def create_app(services: Services, api: ApiConfig) -> web.Application:
    """The application serving `endpoints()` with auth, rate limits and the error envelope."""
    # Requests are counted outermost, with the status the client finally gets.
    app = web.Application(
        middlewares=[metrics.count_requests, error_middleware, auth_middleware], client_max_size=1024**2
    )
    app[SERVICES] = services
    metrics.install(app, services)
    access = Access(api.rate_limit)
    for endpoint in endpoints():
        route = app.router.add_route(endpoint.method, endpoint.path, endpoint.handler)
        access.minimum_roles[route] = endpoint.minimum_role
        if endpoint.method == "GET":
            # aiohttp's add_get also answers HEAD; keep HEAD under the same rule.
            head = app.router.add_route("HEAD", endpoint.path, endpoint.handler)
            access.minimum_roles[head] = endpoint.minimum_role
    app[ACCESS] = access
    app.on_response_prepare.append(rate_limit_headers)
    # Open streams would otherwise hold shutdown for its whole timeout.
    app.on_shutdown.append(streams.close_streams)
    return app


@contextlib.asynccontextmanager
async def serve(services: Services, api: ApiConfig, state_dir: Path | None = None) -> AsyncIterator[None]:
    """Serve the API until the context exits; then stop accepting and finish in-flight requests.

    With `state_dir`, also the control socket there (`gateway.api.control`, for `status`).
    """
    runner = web.AppRunner(
        create_app(services, api), access_log=None, handle_signals=False, logger=SERVER_LOG
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, api.host, api.port, shutdown_timeout=5.0)
        await site.start()
        bound = runner.addresses[0]
        LOG.info("API listening on http://%s:%s/api", bound[0], bound[1])
        async with contextlib.AsyncExitStack() as stack:
            if state_dir is not None:
                await stack.enter_async_context(
                    control.serve_control(services, control.socket_path(state_dir))
                )
            yield
    finally:
        await runner.cleanup()
