"""Connectivity events onto the timeline: broker notices in, `connected`/`disconnected` rows out.

Ingest tells `ConnectivityRecorder.record` when a device identity comes online or goes offline (from
Mosquitto's notices, `gateway.presence`); that call only appends to a bounded queue, so the notice
path never waits for the disk. `run` writes what is queued in batches, one transaction each
(`Store.record_connectivity`), which also hands the events to the live event feed. A full queue or
a failed write drops events and counts them (`dropped`), never ingest.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sqlite3
from collections.abc import Callable

from gateway.store.store import Store
from gateway.timeline import BROKER_RESTARTED, ConnectivityChange

LOG = logging.getLogger("gateway.events")

DEFAULT_QUEUE_SIZE = 10_000
MAX_BATCH = 1000


class ConnectivityRecorder:
    """Queues connectivity changes and writes them to the timeline in batches."""

    def __init__(
        self, store: Store, clock: Callable[[], float], *, queue_size: int = DEFAULT_QUEUE_SIZE
    ) -> None:
        self._store = store
        self._clock = clock
        self._queue: collections.deque[ConnectivityChange] = collections.deque()
        self._queue_size = queue_size
        self._wakeup = asyncio.Event()
        self.recorded = 0
        # Changes lost: queue full, or their write failed (e.g. a full disk).
        self.dropped = 0

    @property
    def pending(self) -> int:
        """Changes waiting to be written."""
        return len(self._queue)

    def record(self, change: ConnectivityChange) -> None:
        """Queue a change (an ingest listener: never blocks); counted as dropped when full."""
        if len(self._queue) >= self._queue_size:
            self.dropped += 1
            return
        self._queue.append(change)
        self._wakeup.set()

    def broker_restarted(self, identities: list[str]) -> None:
        """The managed broker went down: every identity that was online is disconnected."""
        now = self._clock()
        for identity in identities:
            self.record(ConnectivityChange(identity, False, now, BROKER_RESTARTED))

    async def run(self) -> None:
        """Write queued changes until cancelled."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                await self.write_pending()

    async def write_pending(self) -> None:
        """Write up to MAX_BATCH queued changes in one transaction."""
        batch = [self._queue.popleft() for _ in range(min(MAX_BATCH, len(self._queue)))]
        try:
            written = await self._store.record_connectivity(batch)
        except sqlite3.Error as exc:
            self.dropped += len(batch)
            LOG.error("could not record %d connectivity event(s): %s", len(batch), exc)
            return
        self.recorded += len(written)
