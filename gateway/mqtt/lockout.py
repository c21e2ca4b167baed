"""Shutting a flooding device out at the broker for a while, then letting it back in.

Ingest finds a flooding device (`gateway.mqtt.flood`) on its hot path, which must not wait, so it
only hands the identity over (`shut_out`, never blocks). The `run` task disables the device's
dynsec client, which disconnects every session it has and refuses its logins, and enables it again
`duration` seconds later. Its credentials are not changed: a device that behaves after the pause
carries on with the configuration it has.

A lockout does not outlive the broker's accounts: the managed broker's dynsec file is written from
the store at every (re)start, with every device enabled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from gateway.mqtt import dynsec
from gateway.mqtt.endpoint import BrokerAdmin, BrokerAdminError

LOG = logging.getLogger("gateway.flood")

# Identities waiting to be shut out; a fleet-wide flood past this is already being handled.
MAX_PENDING = 1_000
RETRY_S = 5.0


class Lockout:
    """Disables flooding devices' broker clients for `duration` seconds."""

    def __init__(
        self, admin: BrokerAdmin, duration: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._admin = admin
        self._duration = duration
        self._clock = clock
        self._pending: asyncio.Queue[str] = asyncio.Queue(MAX_PENDING)
        self._until: dict[str, float] = {}  # identity -> when it is let back in
        self.count = 0  # lockouts so far

    @property
    def locked_out(self) -> frozenset[str]:
        """Identities shut out now (or about to be)."""
        return frozenset(self._until)

    def shut_out(self, identity: str) -> None:
        """Ask for `identity` to be shut out (called from ingest; never blocks)."""
        if identity in self._until:
            return
        try:
            self._pending.put_nowait(identity)
        except asyncio.QueueFull:
            return  # the next flooding second asks again
        self._until[identity] = self._clock() + self._duration

    async def run(self) -> None:
        """Apply lockouts as they come and lift each when its time is up; runs until cancelled."""
        while True:
            due = [identity for identity, until in self._until.items() if until <= self._clock()]
            for identity in due:
                await self._lift(identity)
            wake = min(self._until.values(), default=self._clock() + self._duration)
            try:
                async with asyncio.timeout(max(0.0, wake - self._clock())):
                    identity = await self._pending.get()
            except TimeoutError:
                continue
            await self._apply(identity)

    async def _apply(self, identity: str) -> None:
        try:
            await self._admin.apply([dynsec.disable_client_command(identity)])
        except BrokerAdminError as exc:
            LOG.error("could not shut out flooding device %s: %s", identity, exc)
            # Forget it: if it goes on flooding, ingest asks again.
            self._until.pop(identity, None)
            return
        self.count += 1
        LOG.warning(
            "device %s sends more than its per-device message rate; disconnected and refused for %.0f s",
            identity,
            self._duration,
        )

    async def _lift(self, identity: str) -> None:
        try:
            await self._admin.apply([dynsec.enable_client_command(identity)])
        except BrokerAdminError as exc:
            LOG.error("could not let device %s back in (retrying in %.0f s): %s", identity, RETRY_S, exc)
            self._until[identity] = self._clock() + RETRY_S
            return
        del self._until[identity]
        LOG.info("device %s may connect again after its flood lockout", identity)
