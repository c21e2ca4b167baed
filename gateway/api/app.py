"""The aiohttp application: routes, the auth and error middlewares, and serving it.

Every v3 device route is served under `/api/v3/devices/...` and `/api/v3/sites/{site_id}/devices/...`
(the newest CLI and VS Code use the site-scoped form); the Assets API v1 under `/api/assets/v1` and at
the root `/assets/v1` (the Go client drops the base path), see `enapter-http-api.md` §1.3, §10.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.api import assets_v1, metrics
from gateway.api.auth import auth_middleware
from gateway.api.render import error_middleware
from gateway.api.services import SERVICES, Services
from gateway.api.v3 import devices, provisioning, sites

LOG = logging.getLogger("gateway.api")


def create_app(services: Services) -> web.Application:
    """The whole HTTP surface of the gateway."""
    app = web.Application(middlewares=[error_middleware, auth_middleware], client_max_size=1024**2)
    app[SERVICES] = services
    for prefix in ("/api/v3", "/api/v3/sites/{site_id}"):
        app.router.add_get(prefix + "/devices", devices.list_devices)
        app.router.add_get(prefix + "/devices/{device}", devices.get_device)
        app.router.add_post(prefix + "/devices/{device}/generate_config", devices.generate_config)
    app.router.add_get("/api/v3/site", sites.get_site)
    app.router.add_get("/api/v3/sites", sites.list_sites)
    app.router.add_get("/api/v3/sites/{site_id}", sites.get_site)
    app.router.add_post("/api/v3/provisioning/standalone", provisioning.standalone)
    for prefix in ("/api/assets/v1", "/assets/v1"):
        app.router.add_get(prefix + "/devices", assets_v1.list_devices)
        app.router.add_get(prefix + "/devices/{device}", assets_v1.get_device)
    app.router.add_get("/metrics", metrics.metrics)
    return app


@contextlib.asynccontextmanager
async def serve(services: Services, host: str, port: int) -> AsyncIterator[None]:
    """Serve the API until the context exits; then stop accepting and finish in-flight requests."""
    runner = web.AppRunner(create_app(services), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, shutdown_timeout=5.0)
        await site.start()
        bound = runner.addresses[0]
        LOG.info("API listening on http://%s:%s/api", bound[0], bound[1])
        yield
    finally:
        await runner.cleanup()
