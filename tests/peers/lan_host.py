"""Another host on the gateway's LAN, for the mDNS tests: run inside the client's namespace.

    python -m tests.peers.lan_host resolve NAME WITHIN_S     the SDK's resolver (enapter.mdns)
    python -m tests.peers.lan_host browse TYPE... WITHIN_S    zeroconf's browser, each service found
    python -m tests.peers.lan_host request METHOD URL TOKEN [JSON]
    python -m tests.peers.lan_host rival NAME ADDRESS        a responder claiming NAME until stdin closes
    python -m tests.peers.lan_host watch TYPE                 browser events until stdin closes

Each prints one JSON document on stdout (`rival` prints "ready" once it is on the air; `watch`
prints one JSON line per event: added/updated/removed, with the instance's addresses).
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time

import dns.version
import enapter
import httpx
from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from tests.netns import CLIENT_ADDRESS

DNSPYTHON = (dns.version.MAJOR, dns.version.MINOR, dns.version.MICRO)


async def resolve(name: str, within_s: float) -> object:
    """Resolve as a standalone SDK device does; the SDK retries every 5 s, so do we."""
    resolver = enapter.mdns.Resolver()
    deadline = time.monotonic() + within_s
    errors: list[str] = []
    while time.monotonic() < deadline:
        try:
            return {"address": await resolver.resolve(name), "dnspython": list(DNSPYTHON)}
        except Exception as exc:  # noqa: BLE001 - reported to the test, which decides
            errors.append(repr(exc))
            await asyncio.sleep(0.5)
    return {"address": None, "dnspython": list(DNSPYTHON), "errors": errors[-3:]}


async def browse(types: list[str], within_s: float) -> object:
    """Every instance of `types` zeroconf's browser finds, with its resolved details."""
    found: dict[str, dict[str, object]] = {}
    pending: set[tuple[str, str]] = set()

    def on_change(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Added:
            pending.add((service_type, name))

    async with AsyncZeroconf(interfaces=[CLIENT_ADDRESS], ip_version=IPVersion.V4Only) as zeroconf:
        browser = AsyncServiceBrowser(zeroconf.zeroconf, types, handlers=[on_change])
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline and len(found) < len(types):
            for service_type, name in list(pending):
                info = AsyncServiceInfo(service_type, name)
                if await info.async_request(zeroconf.zeroconf, 2000):
                    pending.discard((service_type, name))
                    found[service_type] = {
                        "name": name,
                        "port": info.port,
                        "server": info.server,
                        "addresses": info.parsed_addresses(),
                        "txt": {k.decode(): (v or b"").decode() for k, v in info.properties.items()},
                    }
            await asyncio.sleep(0.2)
        await browser.async_cancel()
    return found


def request(method: str, url: str, token: str, body: str | None) -> object:
    """One HTTP request to the gateway's API."""
    response = httpx.request(
        method,
        url,
        headers={"X-Enapter-Auth-Token": token},
        json=None if body is None else json.loads(body),
        timeout=10,
    )
    return {"status": response.status_code, "body": response.json() if response.content else None}


async def rival(name: str, address: str) -> None:
    """Another host answering for `name` (a service with `name` as its server) until stdin closes."""
    async with AsyncZeroconf(interfaces=[CLIENT_ADDRESS], ip_version=IPVersion.V4Only) as zeroconf:
        info = AsyncServiceInfo(
            "_http._tcp.local.",
            "Rival._http._tcp.local.",
            port=80,
            server=f"{name}.",
            addresses=[socket.inet_aton(address)],
        )
        await (await zeroconf.async_register_service(info))
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def watch(service_type: str) -> None:
    """Print each change zeroconf's browser sees for `service_type` until stdin closes."""
    events: asyncio.Queue[tuple[str, ServiceStateChange]] = asyncio.Queue()

    def on_change(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        events.put_nowait((name, state_change))

    loop = asyncio.get_running_loop()
    async with AsyncZeroconf(interfaces=[CLIENT_ADDRESS], ip_version=IPVersion.V4Only) as zeroconf:
        browser = AsyncServiceBrowser(zeroconf.zeroconf, [service_type], handlers=[on_change])
        stdin_closed = loop.run_in_executor(None, sys.stdin.read)
        while not stdin_closed.done():
            try:
                name, change = await asyncio.wait_for(events.get(), 0.5)
            except TimeoutError:
                continue
            addresses: list[str] = []
            if change is not ServiceStateChange.Removed:
                info = AsyncServiceInfo(service_type, name)
                if await info.async_request(zeroconf.zeroconf, 2000):
                    addresses = sorted(info.parsed_addresses())
            event = {"event": change.name.lower(), "name": name, "addresses": addresses}
            print(json.dumps(event), flush=True)
        await browser.async_cancel()


def main(argv: list[str]) -> None:
    """Run one command and print its result as JSON."""
    command, args = argv[0], argv[1:]
    if command == "rival":
        asyncio.run(rival(args[0], args[1]))
        return
    if command == "watch":
        asyncio.run(watch(args[0]))
        return
    if command == "resolve":
        result = asyncio.run(resolve(args[0], float(args[1])))
    elif command == "browse":
        result = asyncio.run(browse(args[:-1], float(args[-1])))
    elif command == "request":
        result = request(args[0], args[1], args[2], args[3] if len(args) > 3 else None)
    else:
        raise SystemExit(f"unknown command {command!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
