"""Command executions: record, send to the device over MQTT, follow its responses, time out.

Data path (`enapter-http-api.md` §6, `enapter-device-protocol.md` §1.3):
API -> execution row (NEW) -> publish `{id, name, arguments}` to `v1/to/<hw>/<ch>/v1/command/requests`
(QoS 1, never retained: a retained request would run again after a reconnect) -> IN_PROGRESS ->
the device's responses, written by the store's batch writer (`log` keeps it IN_PROGRESS,
`completed` -> SUCCESS, `error` -> ERROR) -> or TIMEOUT once `timeout` has passed with no end.

A device that is not online gets a fast, recorded failure (ERROR with a message) instead of a
request that nobody receives: brokers drop messages for clean sessions that are gone. Executions
left open by a stopped daemon are timed out after a restart like any other.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import aiomqtt

from gateway.model import (
    CommandExecution,
    CommandResponse,
    CommandResponseState,
    Device,
    ExecutionResponse,
    ExecutionState,
    JsonValue,
)
from gateway.mqtt import topics
from gateway.store.store import Ingested, Store

LOG = logging.getLogger("gateway.commands")

# How often open executions are checked against their deadline.
SWEEP_INTERVAL_S = 0.5

# Progress responses kept for a waiting caller that has not taken them yet; older ones are dropped.
MAX_PROGRESS = 100

Publish = Callable[[str, bytes], Awaitable[None]]


@dataclass(slots=True)
class _Watcher:
    """What arrived for an execution a caller waits for."""

    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    progress: collections.deque[CommandResponse] = field(
        default_factory=lambda: collections.deque(maxlen=MAX_PROGRESS)
    )
    finished: bool = False


class Commands:
    """Starts executions, wakes the callers waiting for them, and ends the ones past their time."""

    def __init__(
        self,
        store: Store,
        publish: Publish,
        is_online: Callable[[Device], bool],
        *,
        timeout: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._publish = publish
        self._is_online = is_online
        self.timeout = timeout
        self._clock = clock
        # Open executions -> (device id, when they time out). Filled by `start` and, after a
        # restart, by `run`.
        self._deadlines: dict[str, tuple[str, float]] = {}
        # Executions a caller waits for -> what has arrived for them.
        self._watchers: dict[str, _Watcher] = {}
        # Executions this daemon saw end, by final state (for /metrics).
        self.outcomes: collections.Counter[ExecutionState] = collections.Counter()

    async def start(
        self,
        device: Device,
        name: str,
        arguments: Mapping[str, JsonValue],
        *,
        manifest_name: str | None = None,
        ephemeral: bool = False,
        watcher: _Watcher | None = None,
    ) -> CommandExecution:
        """Record an execution and send its request; returns the recorded execution.

        `name` is what the caller asked for (maybe an alias); the device is sent `manifest_name`,
        the command's name in its manifest, when there is one.

        Never raises for delivery problems: an offline device or an unreachable broker ends the
        execution as ERROR with a message saying why. A `watcher` is registered before the
        request goes out, so that it sees even the quickest response.
        """
        manifest_name = manifest_name or name
        execution = await self._store.create_execution(
            device_id=device.id,
            name=name,
            manifest_name=manifest_name,
            arguments=arguments,
            ephemeral=ephemeral,
        )
        channel = device.channel
        if channel is None or not self._is_online(device):
            await self._fail(execution, "The device is offline; the command was not sent.")
            return execution
        self._deadlines[execution.id] = (device.id, execution.created_at + self.timeout)
        if watcher is not None:
            self._watchers[execution.id] = watcher
        request = {"id": execution.id, "name": manifest_name, "arguments": dict(arguments)}
        try:
            await self._publish(
                topics.command_requests_topic(channel),
                json.dumps(request, separators=(",", ":"), ensure_ascii=False).encode(),
            )
        except (aiomqtt.MqttError, TimeoutError) as exc:
            self._deadlines.pop(execution.id, None)
            self._watchers.pop(execution.id, None)
            LOG.warning("could not send command %r to %s: %s", name, device.id, exc)
            await self._fail(execution, f"The command could not be sent to the device: {exc}")
            return execution
        await self._store.advance_execution(execution, ExecutionState.IN_PROGRESS)
        return execution

    async def execute(
        self,
        device: Device,
        name: str,
        arguments: Mapping[str, JsonValue],
        *,
        manifest_name: str | None = None,
        ephemeral: bool = False,
        on_progress: Callable[[CommandResponse], Awaitable[None]] | None = None,
    ) -> CommandExecution:
        """Start an execution and wait until it ends or times out; returns it as stored then.

        `on_progress` is called with each non-final response as it arrives.
        """
        watcher = _Watcher()
        execution = await self.start(
            device, name, arguments, manifest_name=manifest_name, ephemeral=ephemeral, watcher=watcher
        )
        try:
            if execution.id in self._watchers:
                deadline = execution.created_at + self.timeout
                await self._follow(execution.id, deadline, watcher, on_progress)
        finally:
            self._watchers.pop(execution.id, None)
        # The final response was queued; make sure the writer has stored it before reading.
        await self._store.flush()
        stored = await self._store.execution(device.id, execution.id)
        if stored is None:  # the device was deleted meanwhile
            raise LookupError(execution.id)
        return stored

    async def _follow(
        self,
        execution_id: str,
        deadline: float,
        watcher: _Watcher,
        on_progress: Callable[[CommandResponse], Awaitable[None]] | None,
    ) -> None:
        while True:
            try:
                async with asyncio.timeout(max(0.0, deadline - self._clock())):
                    await watcher.arrived.wait()
            except TimeoutError:
                await self._time_out([execution_id])
                return
            watcher.arrived.clear()
            # Progress first, even when the final response came in the same breath.
            while watcher.progress:
                response = watcher.progress.popleft()
                if on_progress is not None:
                    await on_progress(response)
            if watcher.finished:
                return

    def on_ingested(self, item: Ingested) -> None:
        """Ingest listener: hands responses to whoever waits for their execution."""
        message = item.message
        if not isinstance(message, CommandResponse):
            return
        pending = self._deadlines.get(message.execution_id)
        if pending is None or pending[0] != item.device_id:  # not ours, or another device's
            return
        final = message.state.execution_state.terminal
        if final:
            del self._deadlines[message.execution_id]
            self.outcomes[message.state.execution_state] += 1
        watcher = self._watchers.get(message.execution_id)
        if watcher is not None:
            if final:
                watcher.finished = True
            else:
                watcher.progress.append(message)
            watcher.arrived.set()

    async def run(self) -> None:
        """Time out open executions, including those a previous run of the daemon left open."""
        for execution_id, (device_id, created_at) in (await self._store.open_executions()).items():
            self._deadlines.setdefault(execution_id, (device_id, created_at + self.timeout))
        while True:
            now = self._clock()
            # A waiting caller times its own execution out.
            mine = {
                execution_id: deadline
                for execution_id, (_, deadline) in self._deadlines.items()
                if execution_id not in self._watchers
            }
            due = [execution_id for execution_id, deadline in mine.items() if deadline <= now]
            if due:
                try:
                    await self._time_out(due)
                except sqlite3.Error as exc:  # e.g. a full disk: they stay due, try again
                    LOG.error("could not time out %d command execution(s): %s", len(due), exc)
                    await asyncio.sleep(SWEEP_INTERVAL_S)
                    continue
            later = [deadline for deadline in mine.values() if deadline > now]
            await asyncio.sleep(min(SWEEP_INTERVAL_S, min(later, default=math.inf) - now))

    async def _time_out(self, execution_ids: list[str]) -> None:
        # Responses that arrived before the deadline must win over TIMEOUT: store them first.
        await self._store.flush()
        ended = await self._store.time_out_executions(execution_ids)
        for execution_id in execution_ids:
            self._deadlines.pop(execution_id, None)
        self.outcomes[ExecutionState.TIMEOUT] += ended
        if ended:
            LOG.info("%d command execution(s) timed out after %.1f s", ended, self.timeout)

    async def _fail(self, execution: CommandExecution, message: str) -> None:
        response = ExecutionResponse(
            state=CommandResponseState.ERROR, payload={"message": message}, received_at=self._clock()
        )
        await self._store.advance_execution(execution, ExecutionState.ERROR, response)
        self.outcomes[ExecutionState.ERROR] += 1
