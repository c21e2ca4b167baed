"""Tests for gateway.mqtt.topics: device topic parsing and the command topic."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.model import ChannelRef
from gateway.mqtt import topics
from gateway.mqtt.topics import DeviceTopic, MessageKind, UnknownTopic

HW = "V" + "0123456789ABCDEF" * 2


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        (
            f"v1/from/{HW}/ucm/v1/telemetry",
            DeviceTopic(ChannelRef(HW, "ucm"), MessageKind.TELEMETRY),
        ),
        (f"v1/from/{HW}/s/v1/register", DeviceTopic(ChannelRef(HW, "s"), MessageKind.PROPERTIES)),
        (f"v1/from/{HW}/s/v1/properties", DeviceTopic(ChannelRef(HW, "s"), MessageKind.PROPERTIES)),
        (f"v1/from/{HW}/s/v3/logs", DeviceTopic(ChannelRef(HW, "s"), MessageKind.LOGS)),
        (
            f"v1/from/{HW}/gio/v1/command/responses",
            DeviceTopic(ChannelRef(HW, "gio"), MessageKind.COMMAND_RESPONSE),
        ),
        # Ids are opaque apart from the forbidden characters.
        (
            "v1/from/a b/ü-1$/v1/telemetry",
            DeviceTopic(ChannelRef("a b", "ü-1$"), MessageKind.TELEMETRY),
        ),
        ("v1/from/x/y/v1/telemetry", DeviceTopic(ChannelRef("x", "y"), MessageKind.TELEMETRY)),
    ],
)
def test_known_device_topics(topic: str, expected: DeviceTopic) -> None:
    assert topics.parse(topic) == expected


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        # Not under v1/from at all.
        (f"v1/to/{HW}/s/v1/command/requests", "not_device_topic"),
        ("$SYS/broker/log/N", "not_device_topic"),
        ("", "not_device_topic"),
        ("v1", "not_device_topic"),
        ("v1/from", "not_device_topic"),
        (f"v1/from/{HW}", "not_device_topic"),
        (f"v2/from/{HW}/s/v1/telemetry", "not_device_topic"),
        (f"V1/from/{HW}/s/v1/telemetry", "not_device_topic"),
        (f"/v1/from/{HW}/s/v1/telemetry", "not_device_topic"),
        # Identifier rules.
        ("v1/from//s/v1/telemetry", "bad_identifier"),
        (f"v1/from/{HW}//v1/telemetry", "bad_identifier"),
        ("v1/from/+/s/v1/telemetry", "bad_identifier"),
        (f"v1/from/{HW}/#/v1/telemetry", "bad_identifier"),
        ("v1/from/a+b/s/v1/telemetry", "bad_identifier"),
        ("v1/from/a\x00b/s/v1/telemetry", "bad_identifier"),
        ("v1/from/" + "h" * 129 + "/s/v1/telemetry", "bad_identifier"),
        (f"v1/from/{HW}/" + "c" * 129 + "/v1/telemetry", "bad_identifier"),
        # `#` in the subscription also matches the channel level itself.
        (f"v1/from/{HW}/s", "unknown_suffix"),
        (f"v1/from/{HW}/s/", "unknown_suffix"),
        (f"v1/from/{HW}/s/v1/telemetry/", "unknown_suffix"),
        (f"v1/from/{HW}/s/v3/telemetry", "unknown_suffix"),
        (f"v1/from/{HW}/s/v1/logs", "unknown_suffix"),
        (f"v1/from/{HW}/s/V1/telemetry", "unknown_suffix"),
        (f"v1/from/{HW}/s/v1/command/requests", "unknown_suffix"),
        (f"v1/from/{HW}/s/v1/command", "unknown_suffix"),
        (f"v1/from/{HW}/s/v1/heartbeat", "unknown_suffix"),
    ],
)
def test_unknown_topics(topic: str, reason: str) -> None:
    assert topics.parse(topic) == UnknownTopic(reason)


def test_identifier_length_limit_is_inclusive() -> None:
    longest = "h" * topics.MAX_IDENTIFIER_LENGTH
    assert topics.parse(f"v1/from/{longest}/{longest}/v1/telemetry") == DeviceTopic(
        ChannelRef(longest, longest), MessageKind.TELEMETRY
    )


def test_subscription_covers_every_device_topic() -> None:
    assert topics.DEVICE_SUBSCRIPTION == "v1/from/+/+/#"


def test_command_requests_topic() -> None:
    assert topics.command_requests_topic(ChannelRef(HW, "s")) == f"v1/to/{HW}/s/v1/command/requests"


@pytest.mark.parametrize(
    "channel",
    [
        ChannelRef("", "s"),
        ChannelRef(HW, ""),
        ChannelRef("+", "s"),
        ChannelRef(HW, "#"),
        ChannelRef("a/b", "s"),
        ChannelRef("h" * 129, "s"),
    ],
)
def test_command_requests_topic_refuses_unsafe_ids(channel: ChannelRef) -> None:
    with pytest.raises(ValueError, match="not a valid channel"):
        topics.command_requests_topic(channel)


# --- properties ----------------------------------------------------------------------------------

IDENTIFIERS = st.text(min_size=1, max_size=topics.MAX_IDENTIFIER_LENGTH).filter(
    lambda s: not (set(s) & set("/+#\x00"))
)
SUFFIXES = {
    "v1/telemetry": MessageKind.TELEMETRY,
    "v1/register": MessageKind.PROPERTIES,
    "v1/properties": MessageKind.PROPERTIES,
    "v3/logs": MessageKind.LOGS,
    "v1/command/responses": MessageKind.COMMAND_RESPONSE,
}


@given(st.text(max_size=300))
def test_any_topic_gives_a_device_topic_or_unknown(topic: str) -> None:
    assert isinstance(topics.parse(topic), DeviceTopic | UnknownTopic)


@given(
    levels=st.lists(
        st.sampled_from(["v1", "from", "to", "s", "+", "#", "", "telemetry", "v3", "logs"])
        | st.text(max_size=5),
        max_size=7,
    )
)
def test_any_level_mix_gives_a_device_topic_or_unknown(levels: list[str]) -> None:
    result = topics.parse("/".join(levels))
    assert isinstance(result, DeviceTopic | UnknownTopic)
    if isinstance(result, DeviceTopic):
        assert "/".join(levels[4:]) in SUFFIXES


@given(hardware_id=IDENTIFIERS, channel_id=IDENTIFIERS, suffix=st.sampled_from(sorted(SUFFIXES)))
def test_valid_topics_round_trip(hardware_id: str, channel_id: str, suffix: str) -> None:
    assert topics.parse(f"v1/from/{hardware_id}/{channel_id}/{suffix}") == DeviceTopic(
        ChannelRef(hardware_id, channel_id), SUFFIXES[suffix]
    )


@given(hardware_id=IDENTIFIERS, channel_id=IDENTIFIERS)
def test_command_topic_names_the_same_channel(hardware_id: str, channel_id: str) -> None:
    topic = topics.command_requests_topic(ChannelRef(hardware_id, channel_id))
    assert topic.split("/") == ["v1", "to", hardware_id, channel_id, "v1", "command", "requests"]


# Levels a device topic is made of, valid and not, so that most examples are near a real topic.
LEVELS = st.sampled_from(
    ["v1", "from", "to", "v3", "telemetry", "logs", "command", "responses", "", "+", "#"]
)
NEAR_IDENTIFIERS = IDENTIFIERS | st.sampled_from(["", "a/b", "+", "#", "a\x00", "h" * 129, "h" * 128])


@given(
    hardware_id=NEAR_IDENTIFIERS,
    channel_id=NEAR_IDENTIFIERS,
    prefix=st.sampled_from(["v1/from", "v1/to", "v2/from", "v1", "", "/v1/from"]),
    suffix=st.lists(LEVELS, max_size=4).map("/".join) | st.sampled_from(sorted(SUFFIXES)),
)
def test_near_device_topics_are_classified_by_a_known_reason(
    hardware_id: str, channel_id: str, prefix: str, suffix: str
) -> None:
    topic = f"{prefix}/{hardware_id}/{channel_id}/{suffix}"
    result = topics.parse(topic)
    if isinstance(result, UnknownTopic):
        assert result.reason in {"not_device_topic", "bad_identifier", "unknown_suffix"}
        return
    # A recognised topic re-renders to itself from what was parsed; its ids are safe to publish to.
    channel = result.channel
    rendered = {f"v1/from/{channel.hardware_id}/{channel.channel_id}/{known}" for known in SUFFIXES}
    assert topic in rendered
    assert SUFFIXES[topic.split("/", 4)[4]] is result.kind
    topics.command_requests_topic(channel)


@given(hardware_id=NEAR_IDENTIFIERS | st.text(max_size=5), channel_id=NEAR_IDENTIFIERS | st.text(max_size=5))
def test_any_channel_gives_a_command_topic_or_value_error(hardware_id: str, channel_id: str) -> None:
    channel = ChannelRef(hardware_id, channel_id)
    try:
        topic = topics.command_requests_topic(channel)
    except ValueError:
        assert not (topics.valid_identifier(hardware_id) and topics.valid_identifier(channel_id))
        return
    # Exactly the seven levels: no id can add a level or a wildcard.
    assert topic.split("/") == ["v1", "to", hardware_id, channel_id, "v1", "command", "requests"]
    assert not set("+#\x00") & set(topic)
