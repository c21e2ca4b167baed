"""The timeline's pure parts: event rules, connection counts to events, parameters, encoding, the
event feed."""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import MultiDict

from gateway.api import dto, params
from gateway.api.errors import ApiError
from gateway.live import EventFeed, FeedClosed, SlowConsumer, TooManySubscriptions
from gateway.presence import Presence
from gateway.timeline import (
    USER_CODE,
    ConnectivityChange,
    DeviceEvent,
    EventType,
    NewEvent,
    alert_changes,
    renamed,
)

# --- Rules ---------------------------------------------------------------------------------------


def test_alert_changes_clear_then_raise_per_name() -> None:
    events = alert_changes("d", ["a", "b"], ["b", "c", "c"], 5.0)
    assert events == [
        NewEvent("d", EventType.ALERT_CLEARED, 5.0, {"alert": "a"}),
        NewEvent("d", EventType.ALERT_RAISED, 5.0, {"alert": "c"}),
    ]
    assert alert_changes("d", ["a"], ["a"], 5.0) == []


@given(st.lists(st.sampled_from("abcde")), st.lists(st.sampled_from("abcde")))
def test_alert_changes_take_the_old_set_to_the_new_one(before: list[str], after: list[str]) -> None:
    now = set(before)
    for event in alert_changes("d", before, after, 1.0):
        name = event.details["alert"]
        assert isinstance(name, str)
        if event.type is EventType.ALERT_RAISED:
            assert name not in now
            now.add(name)
        else:
            assert name in now
            now.remove(name)
    assert now == set(after)


def test_renamed_only_for_a_change() -> None:
    assert renamed("d", ("A", "a"), ("A", "a"), 1.0) is None
    event = renamed("d", ("A", "a"), ("B", "a"), 1.0)
    assert event is not None
    assert event.details == {"old_name": "A", "new_name": "B", "old_slug": "a", "new_slug": "a"}


def test_a_connectivity_change_becomes_the_holders_event() -> None:
    assert ConnectivityChange("HW", True, 3.0).event_for("d") == NewEvent("d", EventType.CONNECTED, 3.0)
    gone = ConnectivityChange("HW", False, 4.0, "exceeded timeout").event_for("d")
    assert gone == NewEvent("d", EventType.DISCONNECTED, 4.0, {"reason": "exceeded timeout"})


# --- Connection counts -> connected / disconnected ---------------------------------------------


def test_an_identity_is_connected_from_its_first_connection_to_the_end_of_its_last() -> None:
    presence = Presence(90.0)
    assert presence.connected("auto-1", "HW") == (None, True)
    assert presence.connected("auto-2", "HW") == (None, False)
    assert presence.connected("auto-3", "HW") == (None, False)
    assert presence.disconnected("auto-1") is None
    assert presence.disconnected("auto-3") is None
    assert presence.disconnected("auto-2") == "HW"
    assert presence.disconnected("auto-2") is None  # already gone
    assert presence.connected("auto-4", "HW") == (None, True)


def test_a_takeover_by_the_same_identity_is_no_change() -> None:
    presence = Presence(90.0)
    presence.connected("same", "HW")
    assert presence.connected("same", "HW") == (None, False)
    assert presence.open_connections("HW") == 1


def test_a_takeover_by_another_identity_takes_the_old_one_offline() -> None:
    presence = Presence(90.0)
    presence.connected("same", "OLD")
    assert presence.connected("same", "NEW") == ("OLD", True)
    assert presence.connected("anon", None) == (None, False)


def test_a_broker_restart_lists_who_was_online() -> None:
    presence = Presence(90.0)
    presence.connected("a", "HW2")
    presence.connected("b", "HW1")
    presence.connected("c", "HW1")
    presence.disconnected("a")
    assert presence.reset_connections() == ["HW1"]
    assert presence.reset_connections() == []


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5), st.sampled_from(["A", "B"]))))
def test_transitions_alternate_per_identity(steps: list[tuple[bool, int, str]]) -> None:
    presence = Presence(90.0)
    online: dict[str, bool] = {"A": False, "B": False}
    for connect, client, identity in steps:
        if connect:
            gone, came = presence.connected(f"c{client}", identity)
            if gone is not None:
                assert online[gone]
                online[gone] = False
            if came:
                assert not online[identity]
                online[identity] = True
        else:
            went = presence.disconnected(f"c{client}")
            if went is not None:
                assert online[went]
                online[went] = False
        for name, is_online in online.items():
            assert is_online == (presence.open_connections(name) > 0)


# --- Parameters ----------------------------------------------------------------------------------


def test_type_filter_takes_comma_lists_and_repeats() -> None:
    query = MultiDict([("type.in", "connected, Disconnected"), ("type.in", "user")])
    assert params.event_types(query) == frozenset(
        {EventType.CONNECTED, EventType.DISCONNECTED, EventType.USER}
    )
    assert params.event_types(MultiDict()) is None
    assert params.event_types({"type.in": "alert_raised"}) == frozenset({EventType.ALERT_RAISED})


def bad_parameter(call: object) -> str:
    assert callable(call)
    with pytest.raises(ApiError) as caught:
        call()
    assert caught.value.status == 400
    parameter = (caught.value.details or {}).get("parameter")
    assert isinstance(parameter, str)
    return parameter


def test_bad_timeline_parameters_name_themselves() -> None:
    assert bad_parameter(lambda: params.event_types({"type.in": "connected,exploded"})) == "type.in"
    assert bad_parameter(lambda: params.timeline_query({"timestamp.gte": "yesterday"})) == "timestamp.gte"
    assert (
        bad_parameter(lambda: params.timeline_query({"timestamp.lt": "2025-01-01T00:00:00"}))
        == "timestamp.lt"
    )
    assert bad_parameter(lambda: params.timeline_query({"limit": "0"})) == "limit"


def test_timeline_query_reads_times_and_paging() -> None:
    query = params.timeline_query(
        MultiDict(
            {"timestamp.gte": "1970-01-01T00:01:40Z", "timestamp.lt": "200", "offset": "5", "limit": "7"}
        )
    )
    assert query == params.TimelineQuery(types=None, since=100.0, until=200.0, page=params.Page(5, 7))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "code"),
        ({"code": ""}, "code"),
        ({"code": 5}, "code"),
        ({"code": "9lives"}, "code"),
        ({"code": "has space"}, "code"),
        ({"code": "x" * 65}, "code"),
        ({"code": "ok", "description": 1}, "description"),
        ({"code": "ok", "description": "d" * 1001}, "description"),
    ],
)
def test_bad_user_events_name_the_field(body: dict[str, object], field: str) -> None:
    assert bad_parameter(lambda: params.user_event(body)) == field  # type: ignore[arg-type]


def test_a_user_event() -> None:
    assert params.user_event({"code": "door.opened", "description": "by Ann"}) == params.UserEvent(
        "door.opened", "by Ann"
    )
    assert params.user_event({"code": "x-1_2"}) == params.UserEvent("x-1_2", None)


@given(st.dictionaries(st.sampled_from(["code", "description", "other"]), st.from_type(object)))
def test_any_body_gives_an_event_or_a_400(body: dict[str, object]) -> None:
    try:
        event = params.user_event(body)  # type: ignore[arg-type]
    except ApiError as exc:
        status = exc.status
    else:
        assert USER_CODE.fullmatch(event.code)
        return
    assert status == 400


# --- Encoding ------------------------------------------------------------------------------------


def test_an_event_as_json() -> None:
    event = DeviceEvent(7, "d", EventType.DISCONNECTED, 1754292127.988115, {"reason": "disconnected"})
    assert dto.timeline_event(event) == {
        "id": 7,
        "device_id": "d",
        "type": "disconnected",
        "timestamp": "2025-08-04T07:22:07.988115Z",
        "details": {"reason": "disconnected"},
    }
    json.dumps(dto.timeline_event(event))


# --- The event feed ------------------------------------------------------------------------------


def event(device_id: str, event_type: EventType, n: int = 0) -> DeviceEvent:
    return DeviceEvent(n, device_id, event_type, float(n), {})


async def test_the_feed_routes_by_device_and_type() -> None:
    feed = EventFeed()
    async with (
        feed.subscribe(frozenset({"a"}), frozenset({EventType.CONNECTED})) as only_a,
        feed.subscribe(None, frozenset(EventType)) as everything,
    ):
        sent = [event("a", EventType.CONNECTED, 1), event("b", EventType.CONNECTED, 2)]
        sent.append(event("a", EventType.ALERT_RAISED, 3))
        feed.publish(sent)
        assert only_a.pending == 1
        assert await only_a.get() == sent[0]
        assert [await everything.get() for _ in range(3)] == sent
    assert feed.subscriptions == 0


async def test_a_slow_subscriber_is_dropped_not_buffered() -> None:
    feed = EventFeed(queue_size=2)
    async with feed.subscribe(None, frozenset(EventType)) as slow:
        feed.publish([event("a", EventType.USER, n) for n in range(3)])
        assert slow.ended
        assert slow.pending == 0
        assert feed.dropped == 1
        with pytest.raises(SlowConsumer):
            await slow.get()


async def test_the_feed_caps_subscriptions_and_closes() -> None:
    feed = EventFeed(max_subscriptions=1)
    async with feed.subscribe(None, frozenset(EventType)) as first:
        with pytest.raises(TooManySubscriptions):
            async with feed.subscribe(None, frozenset(EventType)):
                pass
        assert feed.refused == 1
        waiting = asyncio.create_task(first.get())
        await asyncio.sleep(0)
        feed.close()
        with pytest.raises(FeedClosed):
            await waiting
    with pytest.raises(FeedClosed):
        async with feed.subscribe(None, frozenset(EventType)):
            pass
