"""sd_notify: tell systemd (Type=notify) that the daemon is ready, alive or stopping.

A no-op unless systemd (or a test) set `NOTIFY_SOCKET`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping

LOG = logging.getLogger("gateway.systemd")


def notify(message: str) -> bool:
    """Send `message` (e.g. "READY=1") to NOTIFY_SOCKET; False when there is none or it is gone.

    Like sd_notify(3), a failure is not an error for the daemon: the supervisor may have gone away.
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        LOG.debug("sd_notify %s failed: %s", message, exc)
        return False
    return True


_YEAR_USEC = 365 * 86400 * 1_000_000


def watchdog_interval(environment: Mapping[str, str], pid: int) -> float | None:
    """Seconds between WATCHDOG=1 pings, or None when systemd does not watch this process.

    Half of `WATCHDOG_USEC` (sd_watchdog_enabled(3)), so that one late ping is not yet a miss. A
    `WATCHDOG_PID` naming another process means the watchdog is not ours.
    """
    try:
        usec = int(environment.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    owner = environment.get("WATCHDOG_PID")
    # More than a year is no watchdog anyone set (and a float cannot hold every int).
    if not 0 < usec <= _YEAR_USEC or (owner is not None and owner != str(pid)):
        return None
    return usec / 2 / 1_000_000


async def keep_watchdog_fed(interval: float) -> None:
    """Ping systemd's watchdog from the event loop: if the loop is stuck, the pings stop and systemd
    restarts the daemon (WatchdogSec= in the unit)."""
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)
