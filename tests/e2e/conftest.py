"""Fixtures that start the real daemon (and its real Mosquitto) for end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway_process import GatewayProcess, write_config


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    """A running `enapter-gateway run`; it must stop cleanly (exit 0) on SIGTERM at the end."""
    config, api_port, mqtt_port = write_config(tmp_path)
    process = GatewayProcess(tmp_path, config, api_port, mqtt_port)
    process.start()
    try:
        yield process
    finally:
        status = process.stop()
    assert status == 0, process.log()


@pytest.fixture
def installer_token(gateway: GatewayProcess) -> str:
    """An INSTALLER token (provisioning needs it) made with the CLI while the daemon runs."""
    return gateway.create_token("INSTALLER")
