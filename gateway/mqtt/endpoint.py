"""Where and how the daemon's own MQTT clients reach the broker, and its admin control channel.

The managed broker is reached over a unix socket only: the admin account has no TCP listener at all.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Self

import aiomqtt
import paho.mqtt.client as paho_mqtt

from gateway.model import JsonObject
from gateway.mqtt import dynsec, reader

LOG = logging.getLogger("gateway.broker")

CONTROL_DEADLINE_S = 5.0


@dataclass(frozen=True, slots=True)
class BrokerEndpoint:
    """Address and admin credentials of the broker (unix socket path, or host and port)."""

    hostname: str
    port: int
    transport: Literal["unix", "tcp"]
    username: str
    password: str

    def client(self) -> aiomqtt.Client:
        """A new (not yet connected) aiomqtt client for this endpoint."""
        return aiomqtt.Client(
            self.hostname,
            self.port,
            transport=self.transport,
            username=self.username,
            password=self.password,
            timeout=CONTROL_DEADLINE_S,
        )

    def delivering_client(self, deliver: Callable[[str, bytes], None]) -> aiomqtt.Client:
        """A new client that hands every message to `deliver(topic, payload)` as it arrives;
        `client.messages` then yields nothing and only ends (MqttError) with the connection."""
        return DeliveringClient(
            deliver,
            self.hostname,
            self.port,
            transport=self.transport,
            username=self.username,
            password=self.password,
            timeout=CONTROL_DEADLINE_S,
            # Nothing is queued; should aiomqtt ever queue, it must not grow without bound.
            max_queued_incoming_messages=1,
        )


class DeliveringClient(aiomqtt.Client):
    """aiomqtt's client, delivering each message from its read path instead of its queue.

    `async for message in client.messages` costs a task and an `asyncio.wait` per message, about
    as much as everything else ingest does with it (perf-baselines.md §2: 100 against 55 us per
    message). paho's own packet reading is most of the rest, so each connection's socket is read by
    a `reader.PacketReader`: large reads, QoS 0 PUBLISH packets delivered from the buffer, every
    other packet through paho as before. This extends aiomqtt 2.x's `_on_socket_open` (to install
    the reader) and overrides its `_on_message` (the paho callback that fills the queue, still used
    for messages at QoS 1/2); the version is pinned below 3 in pyproject.toml, `reader.check_seam`
    lists and checks every internal used, and tests/integration/test_delivering_client.py covers it.
    """

    def __init__(self, deliver: Callable[[str, bytes], None], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deliver = deliver
        self._failure: Exception | None = None  # what ended the connection in the read path
        reader.check_seam(self)
        # Framing QoS 0 PUBLISH packets here assumes MQTT 3.1/3.1.1 (v5 adds properties).
        self._fast_publish = self._client.protocol in (paho_mqtt.MQTTv31, paho_mqtt.MQTTv311)

    async def __aenter__(self) -> Self:
        self._failure = None
        await super().__aenter__()
        # aiomqtt resets `_disconnected` once connected, forgetting an end of the connection
        # reported between CONNACK and here. One read can bring CONNACK and that end together, and
        # the reader handles both at once: report it again, or `messages` would wait forever.
        if not self._disconnected.done():
            if self._failure is not None:
                self._disconnected.set_exception(self._failure)
            elif self._client.socket() is None:
                self._disconnected.set_exception(aiomqtt.MqttError("the connection ended as it was made"))
        return self

    def _on_message(self, client: object, userdata: object, message: paho_mqtt.MQTTMessage) -> None:
        self._deliver(message.topic, bytes(message.payload))

    def _on_socket_open(self, client: paho_mqtt.Client, userdata: Any, sock: Any) -> None:
        # Called by paho from the executor thread that connects, before anything is read: paho must
        # read through the new reader from the start, so it is installed before aiomqtt registers
        # its own reader, which ours then replaces (call_soon_threadsafe keeps the order). Should
        # aiomqtt's fire in between, its loop_read finds nothing to read (the reader's buffer is
        # empty) and leaves the socket alone; nothing has been decrypted yet for its pending() loop.
        if client.transport == "websockets":
            super()._on_socket_open(client, userdata, sock)
            return
        packets = reader.PacketReader(
            client, sock, self._loop, self._deliver, self._fail, fast_publish=self._fast_publish
        )
        packets.install()
        super()._on_socket_open(client, userdata, sock)
        self._loop.call_soon_threadsafe(packets.start)

    def _fail(self, exc: Exception) -> None:
        # What aiomqtt's own reader does with an exception: the connection is over for aiomqtt
        # (`messages` ends with MqttError). Unlike aiomqtt, also hang up: nothing reads this socket
        # any more, and paho's keepalive task would otherwise outlive it.
        self._failure = exc
        if not self._disconnected.done():
            self._disconnected.set_exception(exc)
        self._client.disconnect()


class BrokerAdminError(Exception):
    """The broker refused a control command, or could not be reached in time."""


class BrokerAdmin:
    """Sends dynamic-security commands over `$CONTROL` and waits for the answer.

    One short-lived connection per call: provisioning is rare, and a per-call connection cannot be
    left half-broken by a broker restart.
    """

    def __init__(self, endpoint: BrokerEndpoint) -> None:
        self._endpoint = endpoint
        self._sequence = itertools.count(1)

    async def apply(self, commands: list[JsonObject]) -> None:
        """Run `commands` in order; raise BrokerAdminError on any real error or on timeout."""
        if not commands:
            return  # the broker would send no response to wait for
        tag = f"gw-{next(self._sequence)}"
        tagged = [{**command, "correlationData": f"{tag}-{i}"} for i, command in enumerate(commands)]
        try:
            async with asyncio.timeout(CONTROL_DEADLINE_S):
                async with self._endpoint.client() as client:
                    await client.subscribe(dynsec.RESPONSE_TOPIC)
                    await client.publish(dynsec.CONTROL_TOPIC, json.dumps({"commands": tagged}))
                    async for message in client.messages:
                        response = _decode(message.payload)
                        if response is None or not _answers(response, tag):
                            continue
                        problems = dynsec.response_errors(response)
                        if problems:
                            raise BrokerAdminError("; ".join(problems))
                        break
        except TimeoutError:
            raise BrokerAdminError("the broker did not answer a control command in time") from None
        except aiomqtt.MqttError as exc:
            raise BrokerAdminError(f"cannot reach the broker: {exc}") from None
        # A cancellation that arrived while the client disconnected can end up swallowed on the
        # way out (seen once in CI: a flood lockout lifted during shutdown, and the daemon never
        # stopped). A task being cancelled must not carry on as if nothing happened.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError


def _decode(payload: object) -> JsonObject | None:
    if not isinstance(payload, bytes | bytearray):
        return None
    try:
        value = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _answers(response: JsonObject, tag: str) -> bool:
    responses = response.get("responses")
    if not isinstance(responses, list):
        return False
    return any(
        isinstance(item, dict) and str(item.get("correlationData", "")).startswith(f"{tag}-")
        for item in responses
    )
