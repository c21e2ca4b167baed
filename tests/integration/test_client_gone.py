"""A client that goes away mid-response (a streamed answer) is nobody's error: nothing at ERROR, no
traceback, and the server keeps serving. The real aiohttp server with the gateway's middleware and
server logger; the handler is a stand-in for the streamed time-series and log answers."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct

import pytest
from aiohttp import web

from gateway.api.render import SERVER_LOG, error_middleware

CHUNK = b"x" * 65536


async def endless(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    while True:
        await response.write(CHUNK)


async def test_a_client_gone_mid_response_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/", endless)
    runner = web.AppRunner(app, access_log=None, logger=SERVER_LOG)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        with caplog.at_level(logging.INFO):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await reader.read(1000)  # the answer has started
            # Reset, not a polite close: what a killed client or a dropped Wi-Fi link does.
            writer.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            writer.transport.abort()
            await asyncio.sleep(0.5)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await reader.read(15)).startswith(b"HTTP/1.1 200")
        writer.close()
    finally:
        await runner.cleanup()
    assert [record for record in caplog.records if record.levelno >= logging.WARNING] == []
