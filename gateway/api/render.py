"""Rendering responses: JSON bodies and the one middleware that turns failures into the envelope."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import http_exceptions, web

from gateway.api import errors

LOG = logging.getLogger("gateway.api")
# aiohttp's own protocol logger for the API server (`web.AppRunner(logger=...)`).
SERVER_LOG = logging.getLogger("gateway.api.server")


class _ClientFaults(logging.Filter):
    """Keep what clients cause out of the journal unless debugging: a malformed request (answered
    400 by aiohttp) or a client gone mid-response would otherwise log an ERROR with a traceback,
    and any client on the LAN, token or not, could fill the journal with them."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, http_exceptions.HttpProcessingError | ConnectionError):
            return SERVER_LOG.isEnabledFor(logging.DEBUG)
        return True


SERVER_LOG.addFilter(_ClientFaults())

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_body(body: object) -> bytes:
    """Compact JSON, keys in the order given, non-ASCII characters as UTF-8.

    orjson, several times quicker than `json` (a device list page is 50 objects). What it refuses,
    `json` writes or refuses with its own error: integers beyond 64 bits, lone surrogates (escaped),
    keys that are not strings.
    """
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        return json.dumps(body, separators=(",", ":")).encode()


def json_response(body: object, status: int = 200) -> web.Response:
    """JSON with `Content-Type: application/json` exactly (Grafana rejects a charset suffix)."""
    return web.Response(body=json_body(body), status=status, content_type="application/json")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every failure as the Enapter error envelope."""
    try:
        return await handler(request)
    except errors.ApiError as exc:
        return json_response(exc.envelope(), exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status, "http_error"
        )
        response = json_response(errors.ApiError(exc.status, code, exc.reason).envelope(), exc.status)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception as exc:
        if isinstance(exc, ConnectionError) and (request.transport is None or request.transport.is_closing()):
            raise  # the client went away mid-response: nobody to answer (see _ClientFaults)
        LOG.exception("unhandled error in %s %s", request.method, request.path)
        return json_response(errors.ApiError(500, "internal_error", "Internal server error.").envelope(), 500)
