"""Ingest's reconnect delays against a broker address where nothing listens (a real refused TCP
connection, real aiomqtt): they grow with jitter, and `reconnect_now` cuts the current one short."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from pathlib import Path

import pytest

from gateway.blueprints.catalog import ManifestCatalog
from gateway.mqtt.endpoint import BrokerEndpoint
from gateway.mqtt.ingest import Ingest
from gateway.presence import Presence
from gateway.store.store import Store
from tests.gateway_process import eventually, free_port


async def test_reconnect_delays_grow_and_a_restarted_broker_cuts_them_short(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.ingest")
    nowhere = BrokerEndpoint(
        hostname="127.0.0.1", port=free_port(), transport="tcp", username="", password=""
    )
    attempts: list[float] = []
    delays: list[float] = []  # what each failed attempt announced as its delay

    class Stamp(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("ingest lost the broker"):
                attempts.append(time.monotonic())
                assert isinstance(record.args, tuple)
                delays.append(float(str(record.args[1])))

    stamp = Stamp()
    logging.getLogger("gateway.ingest").addHandler(stamp)
    try:
        async with Store.open(tmp_path / "gateway.db") as store:
            ingest = Ingest(nowhere, store, Presence(90.0), ManifestCatalog())
            running = asyncio.create_task(ingest.run())
            try:

                async def five_attempts() -> bool:
                    return len(attempts) >= 5

                await eventually(five_attempts, 10, interval=0.01)
                gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
                # Jittered in [b/2, b] with b = 0.2, 0.4, 0.8, 1.6 s: each gap at least the last half.
                assert gaps[3] > gaps[0]
                assert gaps[3] >= 0.8 - 0.05
                # The fifth delay is 1.6 to 3.2 s; a restarted broker ends it at once, so the sixth
                # attempt comes well before the delay the fifth announced.
                assert delays[4] >= 1.6 - 0.05
                ingest.reconnect_now()

                async def sixth_attempt() -> bool:
                    return len(attempts) >= 6

                await eventually(sixth_attempt, 10, interval=0.01)
                assert attempts[5] - attempts[4] < delays[4] - 0.5, (attempts, delays)
                assert "Connection refused" in ingest.last_error
            finally:
                running.cancel()
                await asyncio.gather(running, return_exceptions=True)
    finally:
        logging.getLogger("gateway.ingest").removeHandler(stamp)
