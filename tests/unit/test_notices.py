"""Tests for gateway.mqtt.notices: Mosquitto connect/disconnect log lines.

The fixtures marked "captured" are payloads received verbatim with `mosquitto_sub -v -t
'$SYS/broker/log/#'` from the packaged Mosquitto 2.0.11 (`log_dest topic`, `connection_messages
true`, `log_type all`), once with `log_timestamp false` and once with `log_timestamp true`. Each
was provoked as its comment says. The 2.1.x fixtures are built from the format strings in
eclipse-mosquitto/mosquitto tags v2.1.0 and v2.1.2 (src/loop.c), not captured.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.mqtt import notices
from gateway.mqtt.notices import ClientConnected, ClientDisconnected

Event = ClientConnected | ClientDisconnected | None

# Captured from 2.0.11 with `log_timestamp false`.
CAPTURED: list[tuple[str, Event]] = [
    # mosquitto_pub -i dev1 -u alice
    (
        "New client connected from 127.0.0.1:50538 as dev1 (p2, c1, k60, u'alice').",
        ClientConnected("dev1", "alice", "127.0.0.1:50538"),
    ),
    ("Client dev1 disconnected.", ClientDisconnected("dev1", "disconnected")),
    # Empty client id with a username (as the Enapter SDK connects), then DISCONNECT.
    (
        "New client connected from 127.0.0.1:50566 as auto-8F5CDABC-94DD-4907-7B7C-E6FD5601DDCA"
        " (p2, c1, k60, u'bob').",
        ClientConnected("auto-8F5CDABC-94DD-4907-7B7C-E6FD5601DDCA", "bob", "127.0.0.1:50566"),
    ),
    (
        "Client auto-8F5CDABC-94DD-4907-7B7C-E6FD5601DDCA disconnected.",
        ClientDisconnected("auto-8F5CDABC-94DD-4907-7B7C-E6FD5601DDCA", "disconnected"),
    ),
    # Empty client id, no username, socket closed without DISCONNECT.
    (
        "New client connected from 127.0.0.1:50586 as auto-3F603A30-0ABD-12E8-5EE0-6DC8E19235E9"
        " (p2, c1, k60).",
        ClientConnected("auto-3F603A30-0ABD-12E8-5EE0-6DC8E19235E9", None, "127.0.0.1:50586"),
    ),
    (
        "Client auto-3F603A30-0ABD-12E8-5EE0-6DC8E19235E9 closed its connection.",
        ClientDisconnected("auto-3F603A30-0ABD-12E8-5EE0-6DC8E19235E9", "closed its connection"),
    ),
    # kill -9 of `mosquitto_sub -i killme -u carol`.
    (
        "New client connected from 127.0.0.1:50604 as killme (p2, c1, k60, u'carol').",
        ClientConnected("killme", "carol", "127.0.0.1:50604"),
    ),
    ("Client killme closed its connection.", ClientDisconnected("killme", "closed its connection")),
    # CONNECT with keepalive 1 s, then silence.
    (
        "New client connected from 127.0.0.1:50616 as sleepy (p2, c1, k1, u'dave').",
        ClientConnected("sleepy", "dave", "127.0.0.1:50616"),
    ),
    (
        "Client sleepy has exceeded timeout, disconnecting.",
        ClientDisconnected("sleepy", "exceeded timeout"),
    ),
    # Client-id takeover: the E line comes first, the old connection gets no N line at all.
    (
        "Client same already connected, closing old connection.",
        ClientDisconnected("same", "session taken over"),
    ),
    (
        "New client connected from 127.0.0.1:50630 as same (p2, c1, k60, u'frank').",
        ClientConnected("same", "frank", "127.0.0.1:50630"),
    ),
    # A hostile client id and an awkward username.
    (
        "New client connected from 127.0.0.1:50638 as we ird (p2, c1, k60, u'x') id: Client z"
        " disconnected. (p2, c1, k60, u'o'h (a) ü').",
        ClientConnected(
            "we ird (p2, c1, k60, u'x') id: Client z disconnected.", "o'h (a) ü", "127.0.0.1:50638"
        ),
    ),
    (
        "Client we ird (p2, c1, k60, u'x') id: Client z disconnected. disconnected.",
        ClientDisconnected("we ird (p2, c1, k60, u'x') id: Client z disconnected.", "disconnected"),
    ),
    # MQTT 5 and MQTT 3.1.
    (
        "New client connected from 127.0.0.1:50648 as v5client (p5, c1, k60, u'gina').",
        ClientConnected("v5client", "gina", "127.0.0.1:50648"),
    ),
    (
        "New client connected from 127.0.0.1:50664 as v31client (p1, c1, k60).",
        ClientConnected("v31client", None, "127.0.0.1:50664"),
    ),
    # IPv6 listener on ::1, socket closed.
    (
        "New client connected from ::1:51290 as six (p2, c1, k60, u'hank').",
        ClientConnected("six", "hank", "::1:51290"),
    ),
    ("Client six closed its connection.", ClientDisconnected("six", "closed its connection")),
    # Unix socket listener (how the daemon itself connects).
    (
        "New client connected from /tmp/mosqexpmi3sw318/mqtt.sock:0 as unixy (p2, c1, k60, u'gateway').",
        ClientConnected("unixy", "gateway", "/tmp/mosqexpmi3sw318/mqtt.sock:0"),
    ),
    # An AUTH packet (reserved type 15 in 3.1.1) right after CONNECT.
    (
        "Client garbage disconnected due to protocol error.",
        ClientDisconnected("garbage", "protocol error"),
    ),
    # password_file run: wrong password / anonymous / a valid client's id with a bad password.
    # The client id is never revealed, so a rejected login cannot end someone else's session.
    (
        "Client <unknown> disconnected, not authorised.",
        ClientDisconnected("<unknown>", "not authorised"),
    ),
    # Lines on the same topics that are not connect/disconnect notices.
    ("New connection from 127.0.0.1:50534 on port 39969.", None),
    ("New connection from /tmp/mosqexpmi3sw318/mqtt.sock:0 on port 0.", None),
    ("logwatcher 0 $SYS/broker/log/#", None),  # $SYS/broker/log/M/subscribe
    ("mosquitto version 2.0.11 running", None),
    ("Opening ipv4 listen socket on port 49031.", None),
]

# Captured from 2.0.11 with `log_timestamp true` (the default).
CAPTURED_TIMESTAMPED: list[tuple[str, Event]] = [
    (
        "1795388307: New client connected from 127.0.0.1:33430 as dev1 (p2, c1, k60, u'alice').",
        ClientConnected("dev1", "alice", "127.0.0.1:33430"),
    ),
    ("1795388307: Client dev1 disconnected.", ClientDisconnected("dev1", "disconnected")),
    (
        "1795388309: Client killme closed its connection.",
        ClientDisconnected("killme", "closed its connection"),
    ),
    (
        "1795388311: Client sleepy has exceeded timeout, disconnecting.",
        ClientDisconnected("sleepy", "exceeded timeout"),
    ),
    (
        "1795388313: Client same already connected, closing old connection.",
        ClientDisconnected("same", "session taken over"),
    ),
    (
        "1795388314: New client connected from 127.0.0.1:39828 as we ird (p2, c1, k60, u'x') id:"
        " Client z disconnected. (p2, c1, k60, u'o'h (a) ü').",
        ClientConnected(
            "we ird (p2, c1, k60, u'x') id: Client z disconnected.", "o'h (a) ü", "127.0.0.1:39828"
        ),
    ),
    (
        "1795388314: Client we ird (p2, c1, k60, u'x') id: Client z disconnected. disconnected.",
        ClientDisconnected("we ird (p2, c1, k60, u'x') id: Client z disconnected.", "disconnected"),
    ),
    (
        "1795388316: New client connected from ::1:57448 as six (p2, c1, k60, u'hank').",
        ClientConnected("six", "hank", "::1:57448"),
    ),
    (
        "1795388317: Client garbage disconnected due to protocol error.",
        ClientDisconnected("garbage", "protocol error"),
    ),
    (
        "1795388294: Client <unknown> disconnected, not authorised.",
        ClientDisconnected("<unknown>", "not authorised"),
    ),
    (
        "1795388295: New client connected from 127.0.0.1:53550 as"
        " auto-E136E81E-6E35-A188-E53D-DE9BB22C18CA (p2, c1, k60, u'alice').",
        ClientConnected("auto-E136E81E-6E35-A188-E53D-DE9BB22C18CA", "alice", "127.0.0.1:53550"),
    ),
    ("1795388306: New connection from 127.0.0.1:33428 on port 49031.", None),
    ("1795388308: killme 0 x", None),  # $SYS/broker/log/M/subscribe
]

# From the v2.1.0 / v2.1.2 sources, not captured.
MOSQUITTO_2_1: list[tuple[str, Event]] = [
    (
        "New client connected from 127.0.0.1:50538 as dev1 (p4, c1, k60, u'alice').",
        ClientConnected("dev1", "alice", "127.0.0.1:50538"),
    ),
    # 2.1.0
    (
        "Client dev1 disconnected, session taken over.",
        ClientDisconnected("dev1", "session taken over"),
    ),
    (
        "Client dev1 disconnected, bad username or password.",
        ClientDisconnected("dev1", "bad username or password"),
    ),
    (
        "Client dev1 disconnected due to using not allowed feature (QoS too high, retain not"
        " supported, or bad AUTH method).",
        ClientDisconnected(
            "dev1",
            "using not allowed feature (QoS too high, retain not supported, or bad AUTH method)",
        ),
    ),
    # 2.1.2
    (
        "Client dev1 [127.0.0.1:50538] disconnected.",
        ClientDisconnected("dev1", "disconnected"),
    ),
    (
        "Client dev1 [127.0.0.1:50538] disconnected: connection closed by client.",
        ClientDisconnected("dev1", "closed its connection"),
    ),
    (
        "Client dev1 [::1:50538] disconnected: exceeded timeout.",
        ClientDisconnected("dev1", "exceeded timeout"),
    ),
    (
        "Client dev1 [127.0.0.1:50538] disconnected: session taken over.",
        ClientDisconnected("dev1", "session taken over"),
    ),
    (
        "Client dev1 [127.0.0.1:50538] disconnected: Connection reset by peer.",
        ClientDisconnected("dev1", "Connection reset by peer"),
    ),
    (
        "Client dev1 [127.0.0.1:50538] disconnected: bad socket read/write: Lost connection",
        ClientDisconnected("dev1", "socket error"),
    ),
    # A rejected login: 2.1.2 prints the address where 2.0 printed `<unknown>`.
    (
        "Client 127.0.0.1 [127.0.0.1:50540] disconnected: not authorised.",
        ClientDisconnected("127.0.0.1", "not authorised"),
    ),
    ("Client dev1 negotiated TLSv1.3 cipher TLS_AES_256_GCM_SHA384", None),
]

# From the 2.0.11 source (src/loop.c), for reasons not provoked above.
OTHER_2_0: list[tuple[str, Event]] = [
    (
        "Client dev1 disconnected: Connection reset by peer.",
        ClientDisconnected("dev1", "Connection reset by peer"),
    ),
    (
        "Client dev1 been disconnected by administrative action.",
        ClientDisconnected("dev1", "administrative action"),
    ),
    (
        "Bad socket read/write on client dev1: The connection was lost.",
        ClientDisconnected("dev1", "socket error"),
    ),
    (
        "Client dev1 disconnected due to oversize packet.",
        ClientDisconnected("dev1", "oversize packet"),
    ),
    ("Expiring client dev1 due to timeout.", None),
    ('ACL denying access to client with dangerous client id "a+b"', None),
    # A custom `log_timestamp_format` (%Y-%m-%dT%H:%M:%S).
    (
        "2026-11-22T23:00:00: Client dev1 closed its connection.",
        ClientDisconnected("dev1", "closed its connection"),
    ),
]


@pytest.mark.parametrize(("line", "expected"), CAPTURED + CAPTURED_TIMESTAMPED + MOSQUITTO_2_1 + OTHER_2_0)
def test_parses_known_lines(line: str, expected: Event) -> None:
    assert notices.parse(line) == expected


@pytest.mark.parametrize(("line", "expected"), CAPTURED)
def test_timestamp_prefix_does_not_change_the_result(line: str, expected: Event) -> None:
    assert notices.parse(f"1700000000: {line}") == expected


def test_truncated_line_is_ignored() -> None:
    # Captured: a 2000-character client id. Mosquitto cuts every log line to 999 characters, so
    # neither line carries its trailing part and the connection is invisible to the daemon.
    connect_head = "New client connected from 127.0.0.1:53280 as "
    connect = connect_head + "L" * (999 - len(connect_head))
    disconnect = "Client " + "L" * (999 - len("Client "))
    assert notices.parse(connect) is None
    assert notices.parse(disconnect) is None


def test_overlong_input_is_ignored() -> None:
    line = "Client " + "x" * notices.MAX_LINE_CHARS + " disconnected."
    assert notices.parse(line) is None


def test_notice_topic_is_the_notice_level() -> None:
    assert notices.NOTICE_TOPIC == "$SYS/broker/log/N"


def test_takeover_sequence_keeps_one_connection() -> None:
    # Captured order for a takeover of client id `same` (E line, then N lines), replayed the way
    # a per-client-id table would: the old session must be gone before the new one is added.
    stream = [
        "New client connected from 127.0.0.1:50628 as same (p2, c1, k60, u'erin').",
        "Client same already connected, closing old connection.",
        "New client connected from 127.0.0.1:50630 as same (p2, c1, k60, u'frank').",
    ]
    open_by_id: dict[str, str | None] = {}
    for line in stream:
        event = notices.parse(line)
        if isinstance(event, ClientConnected):
            open_by_id[event.client_id] = event.username
        elif isinstance(event, ClientDisconnected):
            open_by_id.pop(event.client_id, None)
    assert open_by_id == {"same": "frank"}


# --- properties ----------------------------------------------------------------------------------

# Pieces of broker text, so generated client ids look like log lines as often as possible.
_TRICKY = st.sampled_from(
    [
        " ",
        ": ",
        ".",
        "Client ",
        " disconnected",
        " disconnected.",
        ", not authorised",
        " due to protocol error",
        " closed its connection",
        " has exceeded timeout, disconnecting",
        " already connected, closing old connection",
        " (p2, c1, k60, u'x')",
        " as ",
        ":1883 as ",
        "1700000000: ",
        "\n",
        "'",
        ")",
    ]
)
CLIENT_IDS = st.lists(_TRICKY | st.text(min_size=1, max_size=8), min_size=1, max_size=8).map("".join)
# Usernames are provisioned by the gateway, so only the one thing that would make them ambiguous
# is excluded.
USERNAMES = st.text(max_size=20).filter(lambda u: not re.search(r" \(p\d+, c\d+, k\d+, u'", u))
ADDRESSES = st.sampled_from(["127.0.0.1:50538", "::1:51290", "10.0.0.7:1", "/run/gw/mqtt.sock:0"])
PREFIXES = st.sampled_from(["", "1700000000: ", "2026-11-22T23:00:00: "])

DISCONNECT_TEMPLATES = [
    ("Client {} disconnected.", "disconnected"),
    ("Client {} closed its connection.", "closed its connection"),
    ("Client {} has exceeded timeout, disconnecting.", "exceeded timeout"),
    ("Client {} disconnected, not authorised.", "not authorised"),
    ("Client {} disconnected due to protocol error.", "protocol error"),
    ("Client {} disconnected due to malformed packet.", "malformed packet"),
    ("Client {} been disconnected by administrative action.", "administrative action"),
    ("Client {} disconnected: Connection reset by peer.", "Connection reset by peer"),
    ("Client {} already connected, closing old connection.", "session taken over"),
    ("Bad socket read/write on client {}: The connection was lost.", "socket error"),
]


@given(st.text(max_size=300))
def test_any_line_gives_an_event_or_none(line: str) -> None:
    assert isinstance(notices.parse(line), ClientConnected | ClientDisconnected | type(None))


@given(
    prefix=PREFIXES,
    address=ADDRESSES,
    client_id=CLIENT_IDS,
    username=st.none() | USERNAMES,
    protocol=st.sampled_from([1, 2, 4, 5]),
    keepalive=st.integers(0, 65535),
)
def test_connect_line_round_trips(
    prefix: str, address: str, client_id: str, username: str | None, protocol: int, keepalive: int
) -> None:
    user_part = "" if username is None else f", u'{username}'"
    line = (
        f"{prefix}New client connected from {address} as {client_id}"
        f" (p{protocol}, c1, k{keepalive}{user_part})."
    )
    assert notices.parse(line) == ClientConnected(client_id, username, address)


@given(
    prefix=PREFIXES,
    # `[` is excluded: a 2.0 id ending in ` [host:port]` reads as the 2.1.2 form (see notices.py).
    client_id=CLIENT_IDS.filter(lambda i: "[" not in i),
    template=st.sampled_from(DISCONNECT_TEMPLATES),
)
def test_disconnect_line_round_trips(prefix: str, client_id: str, template: tuple[str, str]) -> None:
    form, reason = template
    assert notices.parse(prefix + form.format(client_id)) == ClientDisconnected(client_id, reason)


@given(prefix=PREFIXES, client_id=CLIENT_IDS, address=ADDRESSES)
def test_2_1_disconnect_line_round_trips(prefix: str, client_id: str, address: str) -> None:
    line = f"{prefix}Client {client_id} [{address}] disconnected: session taken over."
    assert notices.parse(line) == ClientDisconnected(client_id, "session taken over")


# Broker phrases repeated up to the line limit: the shape that would make a backtracking pattern
# slow. Hypothesis's deadline turns such a slowdown into a failure.
_PHRASES = _TRICKY | st.sampled_from(
    [
        "New client connected from ",
        "127.0.0.1:1",
        "::1:5",
        " [",
        "]",
        " [::1:5]",
        "(p2, c1, k60)",
        " (p2, c1, k60, u'",
        " disconnected: ",
        "Bad socket read/write on client ",
        "Socket error on client ",
    ]
)
LONG_LINES = st.lists(st.tuples(_PHRASES, st.integers(1, 120)), min_size=1, max_size=6).map(
    lambda runs: "".join(phrase * count for phrase, count in runs)[: notices.MAX_LINE_CHARS + 1]
)


@given(PREFIXES, LONG_LINES)
def test_long_lines_of_broker_phrases_parse_quickly(prefix: str, line: str) -> None:
    event = notices.parse(prefix + line)
    assert isinstance(event, ClientConnected | ClientDisconnected | type(None))
    if event is not None:
        assert event.client_id
        assert event.client_id in line
