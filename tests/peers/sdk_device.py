"""A standalone device written with the Enapter Python SDK, run unchanged as a test peer.

It reads its configuration from ENAPTER_STANDALONE_COMMUNICATION_CONFIG (base64 of the generated
config), exactly as the SDK documents, and sends properties, telemetry and a log line. Its
commands: `add` answers, `fail` raises, `hang` never answers, `say` logs through the SDK's logger,
`set_alerts` makes its telemetry raise these alerts from now on (and sends one message at once).
Run: `python -m tests.peers.sdk_device`.
"""

from __future__ import annotations

import asyncio
import itertools

import enapter

PROPERTIES = {"vendor": "enapter-gateway-tests", "model": "sdk-peer", "serial_number": "PEER-0001"}
PERIOD_S = 0.5


class PeerDevice(enapter.standalone.Device):
    """Properties once a second, a counter as telemetry twice a second, one log at start."""

    # The `alerts` telemetry field, once `set_alerts` was called (until then it is not sent).
    alerts: list[str] | None = None

    async def run(self) -> None:
        await self.logger.info("peer device started")
        for counter in itertools.count():
            if counter % 2 == 0:
                await self.send_properties(dict(PROPERTIES))
            await self.send_telemetry(self._telemetry(counter))
            await asyncio.sleep(PERIOD_S)

    def _telemetry(self, counter: int) -> dict[str, object]:
        telemetry: dict[str, object] = {"counter": counter, "healthy": True}
        if self.alerts is not None:
            telemetry["alerts"] = list(self.alerts)
        return telemetry

    async def cmd_set_alerts(self, names: list[str]) -> None:
        self.alerts = list(names)
        await self.send_telemetry(self._telemetry(-1))

    async def cmd_add(self, a: float, b: float) -> float:
        return a + b

    async def cmd_fail(self, reason: str) -> None:
        raise RuntimeError(reason)

    async def cmd_say(self, message: str, severity: str, persist: bool) -> None:
        log = {"debug": self.logger.debug, "info": self.logger.info, "warning": self.logger.warning}
        await log.get(severity, self.logger.error)(message, persist=persist)

    async def cmd_hang(self) -> None:
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(enapter.standalone.run(PeerDevice()))
