"""The live feeds: accepted device messages, and timeline events, fanned out to stream subscribers
(the WebSocket streams).

`publish` is an ingest listener on the per-message hot path: it never awaits and does nothing but a
length check when nobody is subscribed. Each subscription has a bounded queue; a subscriber that
lets it fill is dropped (its queue is freed and its next `get` raises `SlowConsumer`) rather than
buffered without bound. The number of subscriptions is capped too.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Generic, TypeAlias, TypeVar

from gateway.model import LogEntry, Properties, Telemetry
from gateway.store.store import Ingested
from gateway.timeline import DeviceEvent, EventType

# What can be streamed; command responses have their own waiters (`gateway.commands`).
StreamedKind: TypeAlias = type[Telemetry] | type[Properties] | type[LogEntry]

DEFAULT_QUEUE_SIZE = 1000
DEFAULT_MAX_SUBSCRIPTIONS = 100


class SubscriptionEnded(Exception):
    """A subscription gives nothing more; the subclass says why."""


class SlowConsumer(SubscriptionEnded):
    """The subscriber fell behind: its queue was full, or it could not take a message in time."""


class FeedClosed(SubscriptionEnded):
    """The feed was closed (the gateway is stopping)."""


class TooManySubscriptions(Exception):
    """`subscribe` refused: the cap on concurrent subscriptions is reached."""


Item = TypeVar("Item")
Kind = TypeVar("Kind")


class Subscription(Generic[Item, Kind]):
    """One subscriber's view of a feed: the items it asked for, in arrival order."""

    def __init__(self, device_ids: frozenset[str] | None, kinds: frozenset[Kind], size: int) -> None:
        self.device_ids = device_ids
        self.kinds = kinds
        self._size = size
        self._items: collections.deque[Item] = collections.deque()
        self._wakeup = asyncio.Event()
        self._ended: type[SubscriptionEnded] | None = None

    @property
    def ended(self) -> bool:
        """True once the subscription was dropped or its feed closed."""
        return self._ended is not None

    @property
    def pending(self) -> int:
        """Messages waiting to be taken with `get`."""
        return len(self._items)

    async def get(self) -> Item:
        """The next message; raises `SlowConsumer` once dropped, `FeedClosed` once the feed closed."""
        while True:
            if self._ended is not None:
                raise self._ended()
            if self._items:
                return self._items.popleft()
            self._wakeup.clear()
            await self._wakeup.wait()

    def offer(self, item: Item) -> bool:
        """Queue `item`; False (and the subscription dropped) when the queue is already full."""
        if self._ended is not None:
            return True
        if len(self._items) >= self._size:
            self.end(SlowConsumer)
            return False
        self._items.append(item)
        self._wakeup.set()
        return True

    def end(self, why: type[SubscriptionEnded]) -> None:
        """End the subscription: the queue is freed and the waiting `get` raises `why`."""
        if self._ended is None:
            self._ended = why
            self._items.clear()
            self._wakeup.set()


class _Feed(Generic[Item, Kind]):
    """What both feeds share: bounded subscriptions, the cap on them, dropping and closing.
    Subclasses publish, and may index subscriptions (`_add`, `_remove`)."""

    def __init__(
        self, *, queue_size: int = DEFAULT_QUEUE_SIZE, max_subscriptions: int = DEFAULT_MAX_SUBSCRIPTIONS
    ) -> None:
        self._queue_size = queue_size
        self._max_subscriptions = max_subscriptions
        self._subscriptions: set[Subscription[Item, Kind]] = set()
        self._closed = False
        self.dropped = 0  # subscriptions ended as slow consumers
        self.refused = 0  # subscriptions refused at the cap

    @property
    def subscriptions(self) -> int:
        """Open subscriptions (dropped ones count until their subscriber leaves)."""
        return len(self._subscriptions)

    def drop(self, subscription: Subscription[Item, Kind]) -> None:
        """Drop a subscriber that could not take an item in time (counted like a full queue)."""
        if not subscription.ended:
            subscription.end(SlowConsumer)
            self.dropped += 1

    @contextlib.asynccontextmanager
    async def subscribe(
        self, device_ids: frozenset[str] | None, kinds: frozenset[Kind]
    ) -> AsyncIterator[Subscription[Item, Kind]]:
        """Subscribe to `kinds` of items of `device_ids` (None: every device) until exit.

        Raises `TooManySubscriptions` at the cap and `FeedClosed` once the feed is closed.
        """
        if self._closed:
            raise FeedClosed()
        if len(self._subscriptions) >= self._max_subscriptions:
            self.refused += 1
            raise TooManySubscriptions()
        subscription = Subscription[Item, Kind](device_ids, kinds, self._queue_size)
        self._subscriptions.add(subscription)
        self._add(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)
            self._remove(subscription)
            subscription.end(FeedClosed)

    def close(self) -> None:
        """End every subscription and refuse new ones (the gateway is stopping)."""
        self._closed = True
        for subscription in self._subscriptions:
            subscription.end(FeedClosed)

    def _add(self, subscription: Subscription[Item, Kind]) -> None:
        """Index a new subscription (nothing to do unless a subclass indexes)."""

    def _remove(self, subscription: Subscription[Item, Kind]) -> None:
        """Forget an ended subscription's index entries."""


class LiveFeed(_Feed[Ingested, StreamedKind]):
    """Fans out every accepted device message to the subscriptions that asked for its device and kind."""

    def __init__(
        self, *, queue_size: int = DEFAULT_QUEUE_SIZE, max_subscriptions: int = DEFAULT_MAX_SUBSCRIPTIONS
    ) -> None:
        super().__init__(queue_size=queue_size, max_subscriptions=max_subscriptions)
        # Indexed by device: `publish` runs for every message.
        self._by_device: dict[str, set[Subscription[Ingested, StreamedKind]]] = {}
        self._every_device: set[Subscription[Ingested, StreamedKind]] = set()

    def publish(self, item: Ingested) -> None:
        """Offer one accepted message to its subscribers (an ingest listener: never blocks)."""
        if not self._subscriptions:
            return
        kind = type(item.message)
        for group in (self._by_device.get(item.device_id), self._every_device):
            if not group:
                continue
            for subscription in group:
                if kind in subscription.kinds and not subscription.offer(item):
                    self.dropped += 1

    def _add(self, subscription: Subscription[Ingested, StreamedKind]) -> None:
        if subscription.device_ids is None:
            self._every_device.add(subscription)
            return
        for device_id in subscription.device_ids:
            self._by_device.setdefault(device_id, set()).add(subscription)

    def _remove(self, subscription: Subscription[Ingested, StreamedKind]) -> None:
        if subscription.device_ids is None:
            self._every_device.discard(subscription)
            return
        for device_id in subscription.device_ids:
            group = self._by_device.get(device_id)
            if group is not None:
                group.discard(subscription)
                if not group:
                    del self._by_device[device_id]


class EventFeed(_Feed[DeviceEvent, EventType]):
    """Fans out committed timeline events (a store event listener) to the event stream's
    subscribers, each with a bounded queue, as `LiveFeed` does for device messages."""

    def publish(self, events: Sequence[DeviceEvent]) -> None:
        """Offer events to the subscriptions that asked for their device and type (never blocks)."""
        for event in events:
            for subscription in self._subscriptions:
                if subscription.device_ids is not None and event.device_id not in subscription.device_ids:
                    continue
                if event.type in subscription.kinds and not subscription.offer(event):
                    self.dropped += 1
