"""The installed service under a real systemd: scripts/install.sh run in a container whose PID 1 is
systemd (systemd-nspawn), then what an operator relies on: enabled and active as its own user with
port 80 through the capability and every hardening setting of the unit in force, `systemctl restart`
returning only once the API serves (Type=notify), the watchdog restarting a frozen daemon, logs in
the journal, a clean stop, and the service back after a reboot.

The container is the host's own OS booted a second time: the host's /usr read-only, /etc, /var and
/opt as overlays whose upper layers live in the test's directory (so a reboot keeps what install.sh
wrote). Its network is the gateway side of a LAN the test makes (tests.netns); the other side is
"another host" where API requests and SDK devices come from, finding the gateway by its mDNS name
as a real device would. The container's pip has no network: the package and its dependencies come
from a wheelhouse built on the host. Needs root, `ip` and systemd-nspawn (apt: systemd-container;
.ci/setup installs it).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import netns
from tests.gateway_process import REPO
from tests.peers.process import start_peer, stop_peer

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(netns.unavailable() is not None, reason=str(netns.unavailable())),
    pytest.mark.skipif(
        shutil.which("systemd-nspawn") is None,
        reason="systemd-nspawn is not installed (apt: systemd-container)",
    ),
]

UNIT = "enapter-gateway.service"
CLI = "/opt/enapter-gateway/venv/bin/enapter-gateway"
CONFIG = "/etc/enapter-gateway/config.toml"
# Inside the container: the checkout (read-only) and the wheelhouse pip installs from.
SOURCE = "/srv/enapter-gateway"
WHEELS = "/srv/wheels"
BOOT_DEADLINE_S = 90.0
DEVICE_WITHIN_S = 30.0
RESOLVE_WITHIN_S = 25.0  # the advertisement takes a few seconds, the SDK's resolver 5.4 s a try
COMMAND_TIMEOUT_S = 120.0
# The unit's 30 s, shortened by a drop-in so the test waits seconds, not minutes.
TEST_WATCHDOG_S = 3
DROP_IN = f"/etc/systemd/system/{UNIT}.d/test-watchdog.conf"
# Journal lines that carry a timestamp of their own, e.g. "2026-11-23 10:56:54,123 INFO ...".
OWN_TIMESTAMP = re.compile(r"^\[?\d{4}-\d\d-\d\d[ T]\d\d:\d\d")


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc, so no procps is needed)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            # The command name may contain spaces and parentheses: the fields follow the last ")".
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


@dataclass
class Machine:
    """A booted container: systemd is its PID 1 (`leader` on the host)."""

    leader: int

    def run(
        self, *command: str, env: Mapping[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """`command` inside the container, with a service's plain environment, output captured."""
        environment = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8"]
        environment += [f"{key}={value}" for key, value in (env or {}).items()]
        result = subprocess.run(
            ["nsenter", f"--target={self.leader}", "--all", "env", "-i", *environment, *command],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{command} exited {result.returncode}:\n{result.stdout}{result.stderr}")
        return result

    def show(self, *properties: str) -> dict[str, str]:
        """`systemctl show` of the gateway's unit: property -> value."""
        output = self.run("systemctl", "show", UNIT, "--property", ",".join(properties)).stdout
        return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)

    def cursor(self) -> str:
        """The journal's current end, to read only what comes after it."""
        output = self.run("journalctl", "--quiet", "--lines=0", "--show-cursor").stdout.strip()
        assert output.startswith("-- cursor: "), output  # else "after it" would be the whole journal
        return output.removeprefix("-- cursor: ")

    def journal(self, after: str | None = None, *, own_lines_only: bool = False) -> str:
        """The unit's journal: systemd's lines about it and the daemon's own, or the latter only."""
        select = [f"_SYSTEMD_UNIT={UNIT}"] if own_lines_only else ["--unit", UNIT]
        since = [f"--after-cursor={after}"] if after else []
        return self.run("journalctl", "--no-pager", "--output=cat", *since, *select).stdout

    def wait_for(self, condition: str, test: Callable[[], bool], deadline_s: float) -> None:
        deadline = time.monotonic() + deadline_s
        while not test():
            if time.monotonic() > deadline:
                raise AssertionError(f"not {condition} within {deadline_s} s:\n{self.journal()}")
            time.sleep(0.2)


@contextlib.contextmanager
def booted(directory: Path, wheels: Path, network: str, name: str) -> Iterator[Machine]:
    """Boot the host's OS in a container whose writable layers are in `directory`, on the network
    namespace `network`, and power it off (or kill it) at the end."""
    layers = []
    for path in ("etc", "var", "opt"):
        (directory / path).mkdir(parents=True, exist_ok=True)
        layers.append(f"--overlay=/{path}:{directory / path}:/{path}")
    console = directory / f"console-{time.monotonic_ns()}.log"
    with console.open("wb") as output:
        process = subprocess.Popen(
            [
                "systemd-nspawn",
                "--quiet",
                f"--machine={name}",
                # No systemd on the host to register with or to run the container in a unit of.
                "--register=no",
                "--keep-unit",
                "--directory=/",
                "--volatile=yes",  # a tmpfs root with the host's /usr; the layers go on top
                *layers,
                f"--network-namespace-path=/run/netns/{network}",
                "--console=passive",
                f"--bind-ro={REPO}:{SOURCE}",
                f"--bind-ro={wheels}:{WHEELS}",
                "--boot",
                # The host's /etc has no machine id of the container's; no wizard asking for one.
                "systemd.firstboot=off",
                "systemd.mask=systemd-firstboot.service",
            ],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    machine: Machine | None = None
    try:
        deadline = time.monotonic() + BOOT_DEADLINE_S
        while machine is None:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the container did not start:\n{console.read_text()}")
            leaders = children(process.pid)
            if leaders:
                machine = Machine(leaders[0])
            else:
                time.sleep(0.1)
        # `is-system-running --wait` returns when the boot is over; before systemd's bus is up it
        # fails at once, so ask again until the deadline.
        state = ""
        while state not in {"running", "degraded"}:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the container did not boot ({state}):\n{console.read_text()}")
            state = machine.run("systemctl", "is-system-running", "--wait", check=False).stdout.strip()
            if state not in {"running", "degraded"}:
                time.sleep(0.2)
        yield machine
    finally:
        if machine is not None and process.poll() is None:
            machine.run("systemctl", "poweroff", check=False)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            # SIGKILL to a PID namespace's init ends every process in it.
            for leader in children(process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(leader, signal.SIGKILL)
            process.kill()
            process.wait(timeout=30)


@dataclass
class Service:
    """The gateway installed in a booted container on `net`; `reboot` swaps in the next boot."""

    directory: Path
    wheels: Path
    net: netns.Lan
    machine: Machine
    install_output: str
    token: str
    boots: contextlib.ExitStack

    def api(self, method: str, path: str, body: object = None, *, token: str | None = None) -> Any:
        """One request from the other host to `http://192.0.2.1/api{path}` (port 80): status and
        body; it fails if nothing answers."""
        url = f"http://{netns.GATEWAY_ADDRESS}/api{path}"
        content = [] if body is None else [json.dumps(body)]
        return self.net.client_side("request", method, url, self.token if token is None else token, *content)

    def reboot(self) -> None:
        self.boots.close()
        self.boots = contextlib.ExitStack()
        self.machine = self.boots.enter_context(
            booted(self.directory, self.wheels, self.net.gateway_ns, f"egw-test-{os.getpid()}-2")
        )


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    directory = tmp_path_factory.mktemp("machine")
    wheels = tmp_path_factory.mktemp("wheels")
    # hatchling: the build backend pip needs to build the checkout inside the container.
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check"]
    built = subprocess.run(
        [*pip_wheel, "--wheel-dir", str(wheels), str(REPO), "hatchling"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    with netns.lan("sd") as net, contextlib.ExitStack() as boots:
        machine = boots.enter_context(booted(directory, wheels, net.gateway_ns, f"egw-test-{os.getpid()}-1"))
        installed = machine.run(
            "bash",
            f"{SOURCE}/scripts/install.sh",
            env={"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": WHEELS},
        )
        created = machine.run(
            "runuser", "-u", "enapter-gateway", "--",
            CLI, "token", "create", "--role", "INSTALLER", "--name", "systemd-test", "--config", CONFIG,
        )  # fmt: skip
        token = created.stdout.strip().splitlines()[-1]
        service = Service(directory, wheels, net, machine, installed.stdout, token, boots)
        try:
            yield service
        finally:
            service.boots.close()  # the boot after a reboot, if there was one


def test_install_enables_and_starts_it_as_its_own_user_on_port_80(service: Service) -> None:
    machine = service.machine
    assert "install: enapter-gateway is active" in service.install_output
    assert machine.run("systemctl", "is-enabled", UNIT).stdout.strip() == "enabled"
    state = machine.show("ActiveState", "SubState", "MainPID")
    assert (state["ActiveState"], state["SubState"]) == ("active", "running")
    main = state["MainPID"]
    # Port 80 without root: the daemon holds it, and runs as the service's user.
    assert machine.run("stat", "--format=%U", f"/proc/{main}").stdout.strip() == "enapter-gateway"
    listening = machine.run("ss", "--no-header", "--listening", "--tcp", "--processes", "sport = :80")
    assert f"pid={main}," in listening.stdout
    assert service.api("GET", "/v3/site")["status"] == 200
    assert service.api("GET", "/v3/site", token="egw_wrong")["status"] == 403
    # Debian's own broker would hold 1883: install.sh stopped and disabled it.
    enabled = machine.run("systemctl", "is-enabled", "mosquitto.service", check=False)
    assert enabled.stdout.strip() == "disabled"
    # The hardening is in force, not just written down: what systemd applied to the process.
    status = machine.run("grep", "-E", "^(NoNewPrivs|Seccomp|CapEff):", f"/proc/{main}/status").stdout
    fields = {key: value.strip() for key, _, value in (line.partition(":") for line in status.splitlines())}
    assert fields["NoNewPrivs"] == "1"
    assert fields["Seccomp"] == "2"  # a filter (SystemCallFilter=)
    assert int(fields["CapEff"], 16) == 1 << 10  # CAP_NET_BIND_SERVICE and nothing else


def test_restart_returns_only_once_the_api_serves(service: Service) -> None:
    machine = service.machine
    before = machine.show("MainPID")["MainPID"]
    machine.run("systemctl", "restart", UNIT)
    # Type=notify: systemctl came back after READY=1, so the new daemon answers at once.
    assert service.api("GET", "/v3/site")["status"] == 200
    assert machine.show("MainPID")["MainPID"] != before


def test_the_watchdog_restarts_a_frozen_daemon(service: Service) -> None:
    machine = service.machine
    drop_in = f"[Service]\nWatchdogSec={TEST_WATCHDOG_S}\n"
    machine.run("sh", "-c", f'mkdir -p "$(dirname {DROP_IN})" && printf "{drop_in}" > {DROP_IN}')
    try:
        machine.run("systemctl", "daemon-reload")
        machine.run("systemctl", "restart", UNIT)
        start = machine.show("MainPID", "NRestarts", "WatchdogUSec")
        assert start["WatchdogUSec"] == f"{TEST_WATCHDOG_S}s"
        # Pings keep it alive well past the limit...
        time.sleep(2.5 * TEST_WATCHDOG_S)
        assert machine.show("MainPID", "NRestarts") == {
            "MainPID": start["MainPID"],
            "NRestarts": start["NRestarts"],
        }
        # ...and a frozen event loop sends none: systemd kills the daemon and starts it again.
        cursor = machine.cursor()
        machine.run("kill", "-STOP", start["MainPID"])

        def restarted() -> bool:
            now = machine.show("ActiveState", "NRestarts", "MainPID")
            return now["ActiveState"] == "active" and int(now["NRestarts"]) == int(start["NRestarts"]) + 1

        machine.wait_for("restarted by the watchdog", restarted, deadline_s=30)
        journal = machine.journal(cursor)
        assert f"Watchdog timeout (limit {TEST_WATCHDOG_S}s)!" in journal
        assert "Failed with result 'watchdog'" in journal
        assert service.api("GET", "/v3/site")["status"] == 200
    finally:
        machine.run("rm", "-f", DROP_IN)
        machine.run("systemctl", "daemon-reload")
        machine.run("systemctl", "restart", UNIT)


def test_logs_reach_the_journal_without_a_second_timestamp(service: Service) -> None:
    machine = service.machine
    cursor = machine.cursor()
    machine.run("systemctl", "restart", UNIT)
    lines = machine.journal(cursor, own_lines_only=True).splitlines()
    assert "INFO gateway: gateway ready" in lines
    assert any(line.startswith("INFO gateway.broker: mosquitto ") for line in lines), lines
    assert [line for line in lines if OWN_TIMESTAMP.match(line)] == []


def test_stop_is_clean_and_quick(service: Service) -> None:
    machine = service.machine
    cursor = machine.cursor()
    began = time.monotonic()
    machine.run("systemctl", "stop", UNIT)
    took = time.monotonic() - began
    try:
        state = machine.show("ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
        # ExecMainCode 1: CLD_EXITED, i.e. it exited by itself rather than by a signal.
        assert state == {
            "ActiveState": "inactive",
            "Result": "success",
            "ExecMainCode": "1",
            "ExecMainStatus": "0",
        }
        assert took < 30  # TimeoutStopSec: after it systemd would have used SIGKILL
        journal = machine.journal(cursor)
        assert "SIGKILL" not in journal
        assert "INFO gateway: stopped" in journal
        # Nothing of the service is left: Mosquitto went with the daemon.
        running = machine.run("sh", "-c", "cat /proc/[0-9]*/comm", check=False).stdout.split()
        assert "mosquitto" not in running
    finally:
        machine.run("systemctl", "start", UNIT)


@pytest.mark.parametrize("protocol", ["MQTT", "MQTTS"])
def test_an_sdk_device_on_the_lan_sends_telemetry_and_runs_commands(service: Service, protocol: str) -> None:
    """Through every hardening setting: Mosquitto under the syscall filter, TLS, and the database
    under a read-only OS."""
    created = service.api("POST", "/v3/provisioning/standalone", {"name": f"On the LAN {protocol}"})
    assert created["status"] == 200, created
    device_id = created["body"]["device_id"]
    generated = service.api("POST", f"/v3/devices/{device_id}/generate_config", {"protocol": protocol})
    assert generated["status"] == 200, generated
    config = generated["body"]["config"]
    assert config["mqtt_host"] == netns.GATEWAY_ADDRESS  # the default: the LAN address
    peer = start_peer(base64.b64encode(json.dumps(config).encode()).decode(), service.net.on_client([]))
    try:
        deadline = time.monotonic() + DEVICE_WITHIN_S
        counter: dict[str, object] = {}
        while "timestamp" not in counter:
            assert time.monotonic() < deadline, f"no telemetry within {DEVICE_WITHIN_S} s"
            time.sleep(0.5)
            latest = service.api("GET", f"/v3/telemetry/latest?devices[{device_id}]=counter")
            counter = latest["body"]["telemetry"][device_id]["counter"] or {}
        executed = service.api(
            "POST",
            f"/v3/devices/{device_id}/execute_command",
            {"name": "add", "arguments": {"a": 2, "b": 3}},
        )
        assert executed["status"] == 200, executed
        execution = executed["body"]["execution"]
        assert (execution["state"], execution["response"]["payload"]) == ("SUCCESS", {"result": 5}), execution
    finally:
        stop_peer(peer)


def test_the_gateway_is_found_by_its_mdns_name_on_the_lan(service: Service) -> None:
    # With the SDK's own resolver, from the other host: multicast through the service's sandbox.
    resolved = service.net.client_side("resolve", "enapter-gateway.local", str(RESOLVE_WITHIN_S))
    assert resolved["address"] == netns.GATEWAY_ADDRESS, resolved


def test_it_is_back_after_a_reboot_with_its_state(service: Service) -> None:
    service.reboot()
    machine = service.machine
    # Started at boot by multi-user.target, not by anyone here.
    assert machine.run("systemctl", "is-active", UNIT).stdout.strip() == "active"
    assert machine.show("NRestarts")["NRestarts"] == "0"
    # The token made before the reboot still opens the API: the database was kept.
    assert service.api("GET", "/v3/site")["status"] == 200
