"""Parse Mosquitto's connect/disconnect log lines, as published on `$SYS/broker/log/N`.

Pure: no I/O. With `log_dest topic` and `connection_messages true`, Mosquitto publishes each log
line on `$SYS/broker/log/<level>`; this is how the daemon counts open connections per
authenticated identity on 2.0.x (`broker-storage-notes.md` §1.2). The lines are text, not an API,
so the formats below are pinned to captures from the packaged Mosquitto 2.0.11 (see
`tests/unit/test_notices.py`), with the 2.1.x wording accepted as well.

Client ids are chosen by clients and may contain almost anything, including spaces, `: ` and text
that looks like another log line. Every pattern therefore anchors on the broker-written text at
the *end* of the line and lets the client id take everything before it. Usernames are written by
the gateway (provisioned credentials), so the username in a connect line is trusted to be the last
`u'...'` group.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NOTICE_TOPIC = "$SYS/broker/log/N"

# Mosquitto formats every log line into a 1000-byte buffer and cuts the rest, so a longer line is
# truncated and carries no trustworthy trailing part. The bound also keeps regex cost linear.
MAX_LINE_CHARS = 1000


@dataclass(frozen=True, slots=True)
class ClientConnected:
    """A client passed authentication.

    `username` is None for a client without credentials. `address` is `host:port` as the broker
    printed it (`127.0.0.1:50538`, `::1:51290`, or `<socket path>:0` for a Unix socket listener).
    """

    client_id: str
    username: str | None
    address: str


@dataclass(frozen=True, slots=True)
class ClientDisconnected:
    """A client connection ended.

    `reason` is a short text: `disconnected` (clean DISCONNECT), `closed its connection` (socket
    closed without DISCONNECT, e.g. a killed process), `exceeded timeout`, `not authorised`,
    `session taken over`, `protocol error`, ... A rejected login (never announced as connected)
    reports client id `<unknown>` on 2.0.x and the client's IP address on 2.1.x.
    """

    client_id: str
    reason: str


# An optional `log_timestamp` prefix: `1700000000: ` by default, or what `log_timestamp_format`
# renders (without spaces, e.g. `%Y-%m-%dT%H:%M:%S`), then `: `.
_TIMESTAMP = re.compile(r"[^\s]+: ")

# 2.0.11 and 2.1.x, src/handle_connect.c. `p` is the protocol (2.0: 1=3.1, 2=3.1.1, 5=5; 2.1 uses
# the MQTT level numbers), `c` clean start, `k` keepalive. The address is lazy because an IPv6
# address contains colons; the id is greedy so that text inside it cannot end the match early.
_CONNECTED = re.compile(
    r"New client connected from (?P<address>.+?:\d+) as (?P<id>.+)"
    r" \(p\d+, c\d+, k\d+(?:, u'(?P<username>.*)')?\)\.",
    re.DOTALL,
)


def _one_of(reasons: tuple[str, ...]) -> str:
    return "(?P<reason>" + "|".join(re.escape(reason) for reason in reasons) + ")"


# The reasons are spelled out, not matched as free text: a free-text reason could swallow a client
# id that ends in, say, `disconnected, x` and report the wrong client.
# 2.0.11 has only `not authorised`; the rest are 2.1.0 (src/loop.c do_disconnect()).
_COMMA_REASONS = (
    "not authorised",
    "implementation specific error",
    "client identifier not valid",
    "bad username or password",
    "server unavailable",
    "server busy",
    "client banned",
    "bad authentication method",
    "quota exceeded",
    "connection rate exceeded",
    "session taken over",
    "topic alias invalid",
    "non-matching http origin",
)
_DUE_TO_REASONS = (
    "malformed packet",
    "protocol error",
    "oversize packet",
    "oversize payload",
    "out of memory",
    "QoS too high or retain not supported",
    "using not allowed feature (QoS too high, retain not supported, or bad AUTH method)",
    "exceeding the receive maximum",
)

# (pattern, reason) in match order; `reason=None` takes the reason from the `reason` group.
# 2.1.2 puts `[address:port]` after the id (src/loop.c, commit 9d8dba1). It is tried first: a 2.0
# client id containing `[x:1]` is mis-split by it, but such a client could as well take over a
# victim's client id outright, so this gives away nothing the broker does not already allow.
_DISCONNECTED: tuple[tuple[re.Pattern[str], str | None], ...] = tuple(
    (re.compile(pattern, re.DOTALL), reason)
    for pattern, reason in (
        (
            r"Client (?P<id>.+) \[[^\[\]]*:\d+\] disconnected(?:\.|: (?P<reason>[^\[\]]+?)\.?)",
            None,
        ),
        # 2.0.11 src/loop.c do_disconnect().
        (r"Client (?P<id>.+) disconnected\.", "disconnected"),
        (r"Client (?P<id>.+) closed its connection\.", "closed its connection"),
        (r"Client (?P<id>.+) has exceeded timeout, disconnecting\.", "exceeded timeout"),
        (
            r"Client (?P<id>.+) been disconnected by administrative action\.",
            "administrative action",
        ),
        (r"Client (?P<id>.+) disconnected, " + _one_of(_COMMA_REASONS) + r"\.", None),
        (r"Client (?P<id>.+) disconnected due to " + _one_of(_DUE_TO_REASONS) + r"\.", None),
        (r"Bad socket read/write on client (?P<id>.+): [^:]+", "socket error"),
        # Mosquitto 1.x wording, kept for the sake of old brokers.
        (r"Socket error on client (?P<id>.+), disconnecting\.", "socket error"),
        # 2.0.x logs a takeover at *error* level (`$SYS/broker/log/E`), before the new client's
        # connect line, and logs no disconnect for the old connection at all.
        (r"Client (?P<id>.+) already connected, closing old connection\.", "session taken over"),
        # Last, being free text: strerror(errno), e.g. `Connection reset by peer`.
        (r"Client (?P<id>.+) disconnected: (?P<reason>[^:.]+)\.", None),
    )
)

# 2.1.2 rewords some 2.0 reasons; report one spelling for both versions.
_REASON_ALIASES = {"connection closed by client": "closed its connection"}


def parse(line: str) -> ClientConnected | ClientDisconnected | None:
    """The connect/disconnect event in one broker log line, or None for any other line.

    Accepts lines with or without the `log_timestamp` prefix. Never raises.
    """
    if len(line) > MAX_LINE_CHARS:
        return None
    event = _parse_message(line, 0)
    if event is None:
        # Only the first `: ` can end a timestamp, so a `: ` inside a client id is never taken
        # for one.
        timestamp = _TIMESTAMP.match(line)
        if timestamp is not None:
            event = _parse_message(line, timestamp.end())
    return event


def _parse_message(line: str, start: int) -> ClientConnected | ClientDisconnected | None:
    match = _CONNECTED.fullmatch(line, start)
    if match is not None:
        return ClientConnected(client_id=match["id"], username=match["username"], address=match["address"])
    for pattern, fixed_reason in _DISCONNECTED:
        match = pattern.fullmatch(line, start)
        if match is not None:
            reason = fixed_reason or match["reason"] or "disconnected"
            if reason.startswith("bad socket read/write"):
                reason = "socket error"
            return ClientDisconnected(client_id=match["id"], reason=_REASON_ALIASES.get(reason, reason))
    return None
