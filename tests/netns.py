"""Two network namespaces joined by a veth pair: a private LAN for mDNS tests (needs root).

`gateway` side 192.0.2.1/24, `client` side 192.0.2.2/24 (TEST-NET-1, never routed), multicast
routed onto the link. Nothing touches the host's own interfaces. The client side gets a
resolv.conf pointing at itself, so the SDK's unicast-DNS step fails at once instead of waiting on
a name server it cannot reach (`ip netns exec` mounts /etc/netns/<name>/resolv.conf). Everything is
removed on exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.gateway_process import REPO

GATEWAY_ADDRESS = "192.0.2.1"
CLIENT_ADDRESS = "192.0.2.2"
NETNS_ETC = Path("/etc/netns")


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@dataclass(frozen=True)
class Lan:
    """The two ends of the link."""

    gateway_ns: str
    client_ns: str

    def on_gateway(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside the gateway's namespace."""
        return ["ip", "netns", "exec", self.gateway_ns, *argv]

    def on_client(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside the client's namespace."""
        return ["ip", "netns", "exec", self.client_ns, *argv]

    def client_side(self, *args: str, timeout: float = 60.0) -> Any:
        """`tests.peers.lan_host` run on the client's side of the LAN; its JSON output."""
        result = subprocess.run(
            self.on_client([sys.executable, "-m", "tests.peers.lan_host", *args]),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


@contextlib.contextmanager
def lan(tag: str) -> Iterator[Lan]:
    """Make the namespaces and the link; `tag` (a few letters) keeps names unique per test."""
    prefix = f"egw{os.getpid() % 100000}{tag}"
    net = Lan(gateway_ns=f"{prefix}g", client_ns=f"{prefix}c")
    resolv_dir = NETNS_ETC / net.client_ns
    try:
        for ns in (net.gateway_ns, net.client_ns):
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        # Interface names are the namespaces' own: each link is created right inside its namespace.
        _ip(
            "link",
            "add",
            "lan0",
            "netns",
            net.gateway_ns,
            "type",
            "veth",
            "peer",
            "name",
            "lan0",
            "netns",
            net.client_ns,
        )
        for ns, address in ((net.gateway_ns, GATEWAY_ADDRESS), (net.client_ns, CLIENT_ADDRESS)):
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "lan0")
            _ip("-n", ns, "link", "set", "lan0", "up")
            _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", "lan0")
        resolv_dir.mkdir(parents=True, exist_ok=True)
        (resolv_dir / "resolv.conf").write_text("nameserver 127.0.0.1\n")
        yield net
    finally:
        for ns in (net.gateway_ns, net.client_ns):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=10, check=False)
        shutil.rmtree(resolv_dir, ignore_errors=True)
