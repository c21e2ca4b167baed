"""Ingest: the daemon's subscriber. Device messages -> decoded values -> the store's writer queue;
broker notices -> presence.

The per-message path is synchronous on purpose (no await between receiving and enqueueing): it is
the hot path, measured in `perf-baselines.md`. Bad input from a device is counted by reason, logged
once per device and reason, and never stops ingest.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable

import aiomqtt

from gateway.blueprints import conformance
from gateway.blueprints.catalog import ManifestCatalog
from gateway.model import ChannelRef, Device, Mismatch, Properties, Telemetry
from gateway.mqtt import dynsec, notices, payloads, topics
from gateway.mqtt.endpoint import BrokerEndpoint
from gateway.mqtt.flood import FloodGuard, Verdict
from gateway.presence import Presence
from gateway.store.store import Ingested, Store
from gateway.timeline import ConnectivityChange

LOG = logging.getLogger("gateway.ingest")

BACKOFF_FIRST_S = 0.2
BACKOFF_CAP_S = 5.0
# Cap on remembered (device, reason) pairs so a hostile fleet cannot grow memory through logging.
MAX_WARNED = 10_000
PUBLISH_TIMEOUT_S = 5.0
# Device topics kept parsed (a device uses a few): parsing is a good part of a message's cost.
MAX_PARSED_TOPICS = 20_000


class Ingest:
    """Subscribes to every device topic and to the broker's connection notices."""

    def __init__(
        self,
        endpoint: BrokerEndpoint,
        store: Store,
        presence: Presence,
        manifests: ManifestCatalog,
        clock: Callable[[], float] = time.time,
        *,
        flood_guard: FloodGuard | None = None,
        on_flood: Callable[[str], None] | None = None,
    ) -> None:
        """`flood_guard` (None = no per-device limit) judges each device message before it is
        decoded; `on_flood` is told the identity of a device found flooding (it must not block)."""
        self._endpoint = endpoint
        self._flood_guard = flood_guard
        self._on_flood = on_flood
        self._store = store
        self._presence = presence
        self._manifests = manifests
        self._clock = clock
        # Called with every accepted message, after it was queued for the store (live consumers:
        # command waiters, streams). They must not block.
        self.listeners: list[Callable[[Ingested], None]] = []
        # Called when a device identity comes online or goes offline (the timeline). They must
        # not block.
        self.connectivity_listeners: list[Callable[[ConnectivityChange], None]] = []
        self._client: aiomqtt.Client | None = None
        self._devices: dict[ChannelRef, str] = {}
        self._parsed: dict[str, topics.DeviceTopic] = {}
        self._warned: set[tuple[str, str]] = set()
        self.received = 0
        self.accepted = 0
        self.dropped: collections.Counter[str] = collections.Counter()
        # Values kept although their manifest does not declare or allow them, by section.
        self.flagged: collections.Counter[str] = collections.Counter()
        # Why the latest connection attempt or connection failed ("" before any failure).
        self.last_error = ""
        self._internal_error_logged = False
        # Set by `reconnect_now` to cut a backoff delay short.
        self._broker_back = asyncio.Event()

    @property
    def connected(self) -> bool:
        """True while ingest holds a subscribed connection to the broker."""
        return self._client is not None

    def register(self, devices: Iterable[Device]) -> None:
        """Devices whose messages are accepted (their channel -> device id)."""
        for device in devices:
            if device.channel is not None:
                self._devices[device.channel] = device.id

    async def run(self) -> None:
        """Receive until cancelled, reconnecting with capped, jittered backoff."""
        backoff = BACKOFF_FIRST_S
        while True:
            # Cleared before the attempt, so that a restart announced during a failing attempt
            # still cuts the following delay short.
            self._broker_back.clear()
            try:
                async with self._endpoint.delivering_client(self._deliver) as client:
                    await client.subscribe(topics.DEVICE_SUBSCRIPTION)
                    await client.subscribe(notices.NOTICE_TOPIC)
                    LOG.info("ingest subscribed to %s", topics.DEVICE_SUBSCRIPTION)
                    backoff = BACKOFF_FIRST_S
                    self._client = client
                    try:
                        # Messages go to `_deliver` as they arrive; this only waits for the end.
                        async for _ in client.messages:
                            pass
                    finally:
                        self._client = None
            except aiomqtt.MqttError as exc:
                self.last_error = str(exc)
                delay = random.uniform(backoff / 2, backoff)
                LOG.warning("ingest lost the broker (%s); reconnecting in %.1f s", exc, delay)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._broker_back.wait()
                backoff = min(backoff * 2, BACKOFF_CAP_S)

    def reconnect_now(self) -> None:
        """The broker is back (restarted): end a reconnect delay now; device messages published
        before ingest subscribes again reach nobody."""
        self._broker_back.set()

    def _deliver(self, topic: str, payload: bytes) -> None:
        """`handle`, called from paho's callback: a bug here must cost one message, not the
        connection (paho would re-raise into aiomqtt, which drops it)."""
        try:
            self.handle(topic, payload)
        except Exception:  # logged with its traceback, counted; ingest goes on
            self.dropped["internal_error"] += 1
            if not self._internal_error_logged:
                self._internal_error_logged = True
                LOG.exception("ingest failed on a message on %s; further ones are only counted", topic[:100])

    def handle(self, topic: str, payload: bytes) -> None:
        """One message from the broker."""
        if topic == notices.NOTICE_TOPIC:
            self._notice(payload)
            return
        self.received += 1
        parsed = self._parsed.get(topic)
        if parsed is None:
            parsed_now = topics.parse(topic)
            if isinstance(parsed_now, topics.UnknownTopic):
                self._drop(parsed_now.reason, topic[:100], f"unexpected topic {topic[:100]!r}")
                return
            if len(self._parsed) >= MAX_PARSED_TOPICS:
                self._parsed.clear()  # a fleet's topics come back on their next messages
            parsed = self._parsed[topic] = parsed_now
        hardware_id = parsed.channel.hardware_id
        device_id = self._devices.get(parsed.channel)
        if device_id is None:
            self._drop("unknown_device", hardware_id, f"no device has channel {parsed.channel}")
            return
        now = self._clock()
        if self._flood_guard is not None:
            verdict = self._flood_guard.admit(hardware_id, now)
            if verdict is not Verdict.ADMIT:
                if verdict is Verdict.FLOODING and self._on_flood is not None:
                    self._on_flood(hardware_id)
                self._drop("rate_limited", hardware_id, f"over {self._flood_guard.rate} messages a second")
                return
        self._presence.message(hardware_id, now)
        if not self._store.accepting:
            # Dropped before decoding: under a flood, decoding what cannot be queued would take
            # the CPU the writer needs to catch up.
            self._drop("queue_full", hardware_id, "the store's writer queue is full")
            return
        decoded = payloads.decode(parsed.kind, payload, now)
        if isinstance(decoded, payloads.PayloadError):
            self._drop(decoded.reason, hardware_id, f"{parsed.kind.value}: {decoded.detail}")
            return
        mismatches: tuple[Mismatch, ...] = ()
        manifest = self._manifests.of(device_id)
        if manifest is not None:
            if isinstance(decoded, Telemetry):
                decoded, mismatches = conformance.check_telemetry(manifest, decoded)
            elif isinstance(decoded, Properties):
                mismatches = conformance.check_properties(manifest, decoded)
            for mismatch in mismatches:
                self.flagged[mismatch.section] += 1
        item = Ingested(device_id=device_id, message=decoded, received_at=now, mismatches=mismatches)
        if self._store.enqueue(item):
            self.accepted += 1
            for listener in self.listeners:
                listener(item)
        else:
            self._drop("queue_full", hardware_id, "the store's writer queue is full")

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1, never retained, on ingest's own connection; waits for the broker's
        PUBACK. Raises aiomqtt.MqttError when not connected or after PUBLISH_TIMEOUT_S."""
        client = self._client
        if client is None:
            raise aiomqtt.MqttError("the gateway is not connected to the broker")
        await client.publish(topic, payload, qos=1, retain=False, timeout=PUBLISH_TIMEOUT_S)

    def _notice(self, payload: bytes) -> None:
        event = notices.parse(payload.decode(errors="replace"))
        changes: list[ConnectivityChange] = []
        if isinstance(event, notices.ClientConnected):
            if event.username != dynsec.ADMIN_USERNAME:
                gone, came_online = self._presence.connected(event.client_id, event.username)
                now = self._clock()
                if gone is not None:
                    changes.append(ConnectivityChange(gone, False, now, "session taken over"))
                if came_online and event.username is not None:
                    changes.append(ConnectivityChange(event.username, True, now))
        elif isinstance(event, notices.ClientDisconnected):
            gone = self._presence.disconnected(event.client_id)
            if gone is not None:
                changes.append(ConnectivityChange(gone, False, self._clock(), event.reason))
        for change in changes:
            for listener in self.connectivity_listeners:
                listener(change)

    def _drop(self, reason: str, source: str, detail: str) -> None:
        self.dropped[reason] += 1
        key = (source, reason)
        if key in self._warned or len(self._warned) >= MAX_WARNED:
            return
        self._warned.add(key)
        LOG.warning(
            "dropped a message from %s (%s): %s; further ones are only counted",
            source,
            reason,
            detail,
        )
