"""Running the SDK peer device (`tests.peers.sdk_device`) as a separate process, as users run it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

from tests.gateway_process import REPO


def start_peer(blob: str, wrapper: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """The SDK peer device, configured the documented way (ENAPTER_STANDALONE_COMMUNICATION_CONFIG),
    run inside `wrapper` if given (e.g. `ip netns exec NS`)."""
    env = {
        **os.environ,
        "ENAPTER_STANDALONE_COMMUNICATION_CONFIG": blob,
        "ENAPTER_LOG_LEVEL": "info",
        "PYTHONPATH": str(REPO),
    }
    return subprocess.Popen(
        [*wrapper, sys.executable, "-m", "tests.peers.sdk_device"],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def stop_peer(peer: subprocess.Popen[bytes]) -> str:
    """Stop the peer; returns what it logged."""
    if peer.poll() is None:
        peer.terminate()
    try:
        _, stderr = peer.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        peer.kill()
        _, stderr = peer.communicate()
    return stderr.decode(errors="replace")
