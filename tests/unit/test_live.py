"""The live feed on its own: routing by device and kind, bounded queues, the subscription cap."""

from __future__ import annotations

import asyncio

import pytest

from gateway.live import FeedClosed, LiveFeed, SlowConsumer, TooManySubscriptions
from gateway.model import CommandResponse, CommandResponseState, LogEntry, LogSeverity, Properties, Telemetry
from gateway.store.store import Ingested


def telemetry(device_id: str, n: int) -> Ingested:
    return Ingested(device_id, Telemetry(timestamp=float(n), values={"n": n}, alerts=None), received_at=n)


def log(device_id: str, text: str) -> Ingested:
    entry = LogEntry(timestamp=1.0, message=text, severity=LogSeverity.INFO, persist=True)
    return Ingested(device_id, entry, received_at=1.0)


async def test_a_subscriber_gets_its_devices_and_kinds_in_order() -> None:
    feed = LiveFeed()
    async with feed.subscribe(frozenset({"a", "b"}), frozenset({Telemetry})) as subscription:
        feed.publish(telemetry("a", 1))
        feed.publish(telemetry("c", 2))  # another device
        feed.publish(log("a", "not telemetry"))
        feed.publish(Ingested("a", Properties(timestamp=1.0, values={}), received_at=1.0))
        feed.publish(telemetry("b", 3))
        assert subscription.pending == 2
        assert [await subscription.get() for _ in range(2)] == [telemetry("a", 1), telemetry("b", 3)]


async def test_every_device_and_several_kinds() -> None:
    feed = LiveFeed()
    async with feed.subscribe(None, frozenset({Telemetry, LogEntry})) as subscription:
        sent = [telemetry("a", 1), log("b", "x"), telemetry("c", 2)]
        for item in sent:
            feed.publish(item)
        response = CommandResponse(execution_id="e", state=CommandResponseState.SUCCEEDED, payload={})
        feed.publish(Ingested("a", response, received_at=1.0))
        assert [await subscription.get() for _ in sent] == sent
        assert subscription.pending == 0


async def test_get_waits_for_the_next_message() -> None:
    feed = LiveFeed()
    async with feed.subscribe(frozenset({"a"}), frozenset({Telemetry})) as subscription:
        waiting = asyncio.create_task(subscription.get())
        await asyncio.sleep(0)
        assert not waiting.done()
        feed.publish(telemetry("a", 7))
        assert await asyncio.wait_for(waiting, 1) == telemetry("a", 7)


async def test_a_full_queue_drops_that_subscriber_only() -> None:
    feed = LiveFeed(queue_size=3)
    async with (
        feed.subscribe(frozenset({"a"}), frozenset({Telemetry})) as slow,
        feed.subscribe(frozenset({"a"}), frozenset({Telemetry})) as keeping_up,
    ):
        for n in range(3):
            feed.publish(telemetry("a", n))
            assert await keeping_up.get() == telemetry("a", n)
        assert (slow.pending, slow.ended, feed.dropped) == (3, False, 0)
        feed.publish(telemetry("a", 3))
        # Dropped at once: what it held is freed, and it is told on its next get.
        assert (slow.pending, slow.ended, feed.dropped) == (0, True, 1)
        with pytest.raises(SlowConsumer):
            await slow.get()
        feed.publish(telemetry("a", 4))  # nothing more is queued for it, nor counted again
        assert (slow.pending, feed.dropped) == (0, 1)
        assert [await keeping_up.get() for _ in range(2)] == [telemetry("a", 3), telemetry("a", 4)]


async def test_a_waiting_get_is_woken_by_the_drop() -> None:
    feed = LiveFeed(queue_size=1)
    async with feed.subscribe(frozenset({"a"}), frozenset({Telemetry})) as subscription:
        feed.publish(telemetry("a", 1))
        assert await subscription.get() == telemetry("a", 1)
        waiting = asyncio.create_task(subscription.get())
        await asyncio.sleep(0)
        feed.drop(subscription)  # e.g. it could not take a frame in time
        feed.drop(subscription)
        with pytest.raises(SlowConsumer):
            await asyncio.wait_for(waiting, 1)
        assert feed.dropped == 1


async def test_the_number_of_subscriptions_is_capped() -> None:
    feed = LiveFeed(max_subscriptions=2)
    kinds = frozenset({Telemetry})
    async with feed.subscribe(None, kinds), feed.subscribe(frozenset({"a"}), kinds):
        assert feed.subscriptions == 2
        with pytest.raises(TooManySubscriptions):
            async with feed.subscribe(None, kinds):
                pass
        assert feed.refused == 1
    assert feed.subscriptions == 0
    async with feed.subscribe(frozenset({"a"}), kinds) as again:
        feed.publish(telemetry("a", 1))
        assert await again.get() == telemetry("a", 1)


async def test_leaving_unsubscribes() -> None:
    feed = LiveFeed(queue_size=1)
    async with feed.subscribe(frozenset({"a"}), frozenset({Telemetry})) as subscription:
        pass
    feed.publish(telemetry("a", 1))
    feed.publish(telemetry("a", 2))  # would have overflowed a subscribed queue of one
    assert (feed.subscriptions, subscription.pending, feed.dropped) == (0, 0, 0)
    with pytest.raises(FeedClosed):
        await subscription.get()


async def test_close_ends_every_subscription_and_refuses_new_ones() -> None:
    feed = LiveFeed()
    async with feed.subscribe(None, frozenset({LogEntry})) as subscription:
        waiting = asyncio.create_task(subscription.get())
        await asyncio.sleep(0)
        feed.close()
        with pytest.raises(FeedClosed):
            await asyncio.wait_for(waiting, 1)
    with pytest.raises(FeedClosed):
        async with feed.subscribe(None, frozenset({LogEntry})):
            pass
