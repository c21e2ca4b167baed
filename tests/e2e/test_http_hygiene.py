"""What any client on the LAN can make the API do without a token: malformed requests are answered
400 and leave no ERROR or traceback in the daemon's log (it goes to the journal, on an SD card)."""

from __future__ import annotations

import asyncio

from tests.gateway_process import GatewayProcess

MALFORMED = (
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET /api/\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /api/health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),  # a TLS hello on the plain port
)


async def answer(gateway: GatewayProcess, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.api_port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(5):
            return await reader.read(100)
    finally:
        writer.close()


async def test_malformed_requests_get_400_and_no_traceback_in_the_log(gateway: GatewayProcess) -> None:
    before = len(gateway.log())
    for request in MALFORMED:
        assert b" 400 " in (await answer(gateway, request)).split(b"\r\n")[0]
    # The daemon is still serving, and said nothing about it.
    assert (await answer(gateway, b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(b"HTTP/1.1 200")
    logged = gateway.log()[before:]
    assert "Traceback" not in logged, logged
    assert " ERROR " not in logged, logged
