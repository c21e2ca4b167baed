"""sd_notify: tell systemd (Type=notify) that the daemon is ready or stopping.

A no-op unless systemd (or a test) set `NOTIFY_SOCKET`.
"""

from __future__ import annotations

import logging
import os
import socket

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
