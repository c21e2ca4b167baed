"""Fixtures that start the real daemon (and its real Mosquitto) for end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway_process import GatewayProcess, running_gateway


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    """A running `enapter-gateway run`; it must stop cleanly (exit 0) on SIGTERM at the end."""
    with running_gateway(tmp_path) as process:
        yield process


@pytest.fixture
def installer_token(gateway: GatewayProcess) -> str:
    """An INSTALLER token (provisioning needs it) made with the CLI while the daemon runs."""
    return gateway.create_token("INSTALLER")
