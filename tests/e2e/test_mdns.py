"""The gateway found by name on a LAN: two network namespaces joined by a veth pair (tests.netns),
the daemon in one, "another host" in the other (tests.peers.lan_host).

On the client side run, unchanged, the Enapter SDK's own resolver (`enapter.mdns`, with the
dnspython a fresh `pip install enapter` brings, which rejects python-zeroconf's own answer) and
python-zeroconf's service browser; then an SDK standalone device whose config names the broker
`enapter-gateway.local`. A rival responder claiming the name makes the gateway take its alias.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import netns
from tests.gateway_process import REPO, GatewayProcess, free_port, running_gateway, write_config
from tests.peers.process import start_peer, stop_peer

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(netns.unavailable() is not None, reason=str(netns.unavailable())),
]

HOSTNAME = "enapter-gateway.local"
SERVICES = ("_enapter-gw-http._tcp.local.", "_mqtt._tcp.local.", "_secure-mqtt._tcp.local.")
# The SDK's resolver gives up after 5.4 s per attempt; the advertisement itself takes a few seconds
# (a name probe, then zeroconf's own probing of the service names).
RESOLVE_WITHIN_S = 25.0
TELEMETRY_WITHIN_S = 30.0
ADVERTISED_WITHIN_S = 15.0
ADDRESS_POLL_S = 5.0  # gateway.mdns.advertiser.ADDRESS_POLL_S
GOODBYE_WITHIN_S = 5.0
SECOND_ADDRESS = "192.0.2.3"


def lan_config(tls_port: int) -> dict[str, dict[str, object]]:
    """Everything on the LAN side, mDNS on with its defaults, configs naming the broker by mDNS."""
    return {
        "api": {"host": "0.0.0.0"},
        "mqtt": {"bind": "0.0.0.0", "tls_port": tls_port, "advertised_host": HOSTNAME},
        "mdns": {"enabled": True},
    }


@pytest.fixture(scope="module")
def lan_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[netns.Lan, GatewayProcess]]:
    """The daemon on the gateway's side, with the default interface choice (the veth is `lan0`)."""
    with (
        netns.lan("m") as net,
        running_gateway(
            tmp_path_factory.mktemp("mdns"), lan_config(free_port()), wrapper=net.on_gateway([])
        ) as gateway,
    ):
        yield net, gateway


def api_url(gateway: GatewayProcess, path: str) -> str:
    return f"http://{netns.GATEWAY_ADDRESS}:{gateway.api_port}/api{path}"


def test_sdk_resolver_and_zeroconf_browser_find_the_gateway(
    lan_gateway: tuple[netns.Lan, GatewayProcess],
) -> None:
    net, gateway = lan_gateway
    resolved = net.client_side("resolve", HOSTNAME, str(RESOLVE_WITHIN_S))
    # The dnspython that rejects zeroconf's NSEC-carrying answer, so this is the real test.
    assert tuple(resolved["dnspython"]) >= (2, 9, 1)
    assert resolved["address"] == netns.GATEWAY_ADDRESS, resolved

    token = gateway.create_token("READONLY")
    own = net.client_side("request", "GET", api_url(gateway, "/v3/devices/gateway"), token)
    assert own["status"] == 200
    gateway_id = own["body"]["device"]["id"]

    found = net.client_side("browse", *SERVICES, "15")
    assert set(found) == set(SERVICES), found
    ports = {
        "_enapter-gw-http._tcp.local.": gateway.api_port,
        "_mqtt._tcp.local.": gateway.mqtt_port,
        "_secure-mqtt._tcp.local.": _tls_port(gateway),
    }
    for service, seen in found.items():
        assert seen["name"] == f"Enapter-GW.{service}"
        assert seen["port"] == ports[service]
        assert seen["server"] == f"{HOSTNAME}."
        assert seen["addresses"] == [netns.GATEWAY_ADDRESS]
        assert seen["txt"]["gateway_id"] == gateway_id
    assert found["_enapter-gw-http._tcp.local."]["txt"]["path"] == "/api"
    assert "advertising enapter-gateway.local at 192.0.2.1" in gateway.log()


def test_sdk_device_with_the_gateway_name_as_broker_reports_telemetry(
    lan_gateway: tuple[netns.Lan, GatewayProcess],
) -> None:
    net, gateway = lan_gateway
    token = gateway.create_token("INSTALLER")
    created = net.client_side(
        "request", "POST", api_url(gateway, "/v3/provisioning/standalone"), token, '{"name": "By Name"}'
    )
    assert created["status"] == 200, created
    device_id = created["body"]["device_id"]
    generated = net.client_side(
        "request",
        "POST",
        api_url(gateway, f"/v3/devices/{device_id}/generate_config"),
        token,
        '{"protocol": "MQTT"}',
    )
    config = generated["body"]["config"]
    assert config["mqtt_host"] == HOSTNAME
    blob = base64.b64encode(json.dumps(config).encode()).decode()

    peer = start_peer(blob, wrapper=net.on_client([]))
    try:
        latest_url = api_url(gateway, f"/v3/telemetry/latest?devices[{device_id}]=counter")
        deadline = time.monotonic() + TELEMETRY_WITHIN_S
        value: dict[str, object] = {}
        while time.monotonic() < deadline and "timestamp" not in value:
            time.sleep(1.0)
            value = net.client_side("request", "GET", latest_url, token)["body"]["telemetry"][device_id][
                "counter"
            ]
        assert "timestamp" in value, value
    finally:
        log = stop_peer(peer)
    assert f"'{HOSTNAME}' resolved using mDNS: '{netns.GATEWAY_ADDRESS}'" in log, log


def release(process: subprocess.Popen[bytes]) -> None:
    """Close a held process's pipes (it ends when its stdin closes) and wait for it to end."""
    for pipe in (process.stdin, process.stdout):
        if pipe is not None and not pipe.closed:
            pipe.close()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def held(argv: list[str], first_line: bytes | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A process that runs until its stdin closes (tests.peers.lan_host rival/watch, the 5353
    blocker), after its `first_line` if given; released on exit."""
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO, env=_env())
    try:
        if first_line is not None:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == first_line
        yield process
    finally:
        release(process)


def test_a_rival_holding_the_name_makes_the_gateway_take_its_alias(tmp_path: Path) -> None:
    claim = [sys.executable, "-m", "tests.peers.lan_host", "rival", HOSTNAME, netns.CLIENT_ADDRESS]
    with (
        netns.lan("a") as net,
        held(net.on_client(claim), b"ready"),
        running_gateway(tmp_path, lan_config(0), wrapper=net.on_gateway([])) as gateway,
    ):
        token = gateway.create_token("READONLY")
        own = net.client_side("request", "GET", api_url(gateway, "/v3/devices/gateway"), token)
        alias = f"enapter-gateway-{own['body']['device']['id'].replace('-', '')[:6]}.local"
        resolved = net.client_side("resolve", alias, str(RESOLVE_WITHIN_S))
        assert resolved["address"] == netns.GATEWAY_ADDRESS, resolved
        log = gateway.log()
        assert f"enapter-gateway.local is already taken by {netns.CLIENT_ADDRESS}" in log
        assert f"advertising {alias} instead" in log
        status = json.loads(gateway.cli("status", "--json", check=True).stdout)
        assert status["mdns"]["advertised_as"] == alias
        assert status["mdns"]["alias_in_use"] is True
        # The gateway no longer answers for the name it gave up. (The rival, plain
        # python-zeroconf, answers in a form this dnspython drops, so nothing resolves.)
        held_name = net.client_side("resolve", HOSTNAME, "6")
        assert held_name["address"] != netns.GATEWAY_ADDRESS, held_name


class Lines:
    """The JSON lines a process prints, read by a thread so that a test can wait with a deadline."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        self._stdout = process.stdout
        self._lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self._stdout:
            self._lines.put(json.loads(line))

    def until(self, wanted: Callable[[dict[str, Any]], bool], within_s: float) -> dict[str, Any]:
        """The first line `wanted` accepts; fails after `within_s` seconds."""
        deadline = time.monotonic() + within_s
        seen: list[dict[str, Any]] = []
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if wanted(line):
                return line
            seen.append(line)
        raise AssertionError(f"nothing wanted within {within_s} s; saw {seen}")


def test_records_follow_address_changes_and_goodbyes_withdraw_them(tmp_path: Path) -> None:
    service = "_enapter-gw-http._tcp.local."
    watch = [sys.executable, "-m", "tests.peers.lan_host", "watch", service]
    with netns.lan("w") as net, held(net.on_client(watch)) as watcher:
        gateway = GatewayProcess(tmp_path, *write_config(tmp_path, lan_config(0)), wrapper=net.on_gateway([]))
        gateway.start()
        try:
            events = Lines(watcher)
            events.until(lambda e: e["addresses"] == [netns.GATEWAY_ADDRESS], ADVERTISED_WITHIN_S)

            subprocess.run(
                ["ip", "-n", net.gateway_ns, "addr", "add", f"{SECOND_ADDRESS}/24", "dev", "lan0"], check=True
            )
            both = sorted([netns.GATEWAY_ADDRESS, SECOND_ADDRESS])
            events.until(lambda e: e["addresses"] == both, ADVERTISED_WITHIN_S + ADDRESS_POLL_S)

            assert gateway.stop() == 0
            # Goodbye packets (TTL 0) take the service off the network at once; without them a
            # browser would keep it for its TTL (75 minutes for the PTR record).
            events.until(lambda e: e["event"] == "removed", GOODBYE_WITHIN_S)
        finally:
            gateway.stop()
    assert "mDNS: enapter-gateway.local withdrawn" in gateway.log()


BLOCK_5353 = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # no SO_REUSEADDR: nobody may share the port
s.bind(("0.0.0.0", 5353))
print("holding", flush=True)
sys.stdin.read()
"""


def test_mdns_trouble_is_logged_and_retried_while_the_gateway_serves(tmp_path: Path) -> None:
    block = [sys.executable, "-c", BLOCK_5353]
    with (
        netns.lan("b") as net,
        held(net.on_gateway(block), b"holding") as blocker,
        running_gateway(tmp_path, lan_config(0), wrapper=net.on_gateway([])) as gateway,
    ):
        deadline = time.monotonic() + ADVERTISED_WITHIN_S
        while "mDNS: cannot advertise" not in gateway.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "mDNS: cannot advertise" in gateway.log()
        token = gateway.create_token("READONLY")
        site = net.client_side("request", "GET", api_url(gateway, "/v3/site"), token)
        assert site["status"] == 200  # the API serves all the same
        release(blocker)  # frees the port
        # The first retry comes 10 s after the failure.
        resolved = net.client_side("resolve", HOSTNAME, "30")
        assert resolved["address"] == netns.GATEWAY_ADDRESS, resolved


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _tls_port(gateway: GatewayProcess) -> int:
    port = tomllib.loads(gateway.config.read_text())["mqtt"]["tls_port"]
    assert isinstance(port, int)
    return port
