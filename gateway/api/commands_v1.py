"""Commands API v1 (Gateway 2.x clients): `POST /commands/v1/execute[?show_progress=true]`
(`enapter-http-api.md` §10.2).

The same executions as v3, answered the v1 way: one JSON object `{"state", "payload"}` with the
lower-case states `succeeded | error | platform_error`, or, with `show_progress=true`, one JSON
object per line as things happen: `started`, `device_in_progress` for each progress response, then
the final state. A command that timed out is a `platform_error`; one the gateway could not deliver
(an offline device) is an `error` whose message says so, as in v3.
"""

from __future__ import annotations

import json

from aiohttp import web

from gateway.api import errors, params
from gateway.api.lookup import own_site
from gateway.api.render import json_response
from gateway.api.services import SERVICES
from gateway.api.v3.commands import declared_name
from gateway.model import CommandExecution, CommandResponse, Device, ExecutionState, JsonObject

_TRUE = frozenset({"true", "1", "yes"})


async def execute(request: web.Request) -> web.StreamResponse:
    """POST /commands/v1/execute {device_id | hardware_id, command_name, arguments}."""
    body = params.json_object(await request.read())
    device = await _device(request, body)
    command = params.command_request(body, name_field="command_name")
    manifest_name = declared_name(request, device, command.name, command.arguments)
    commands = request.app[SERVICES].commands
    if request.query.get("show_progress", "").lower() not in _TRUE:
        try:
            execution = await commands.execute(
                device, command.name, command.arguments, manifest_name=manifest_name
            )
        except LookupError:  # deleted while its command ran
            raise errors.not_found("Device") from None
        return json_response(outcome(execution))
    stream = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await stream.prepare(request)

    async def line(item: JsonObject) -> None:
        await stream.write(json.dumps(item, separators=(",", ":")).encode() + b"\n")

    async def progress(response: CommandResponse) -> None:
        await line({"state": "device_in_progress", "payload": dict(response.payload)})

    await line({"state": "started"})
    try:
        execution = await commands.execute(
            device, command.name, command.arguments, manifest_name=manifest_name, on_progress=progress
        )
    except LookupError:  # deleted while its command ran; the 200 status line is already sent
        await line({"state": "platform_error", "payload": {"message": "The device was deleted."}})
    else:
        await line(outcome(execution))
    await stream.write_eof()
    return stream


def outcome(execution: CommandExecution) -> JsonObject:
    """The v1 final answer for an ended execution."""
    payload: JsonObject = dict(execution.responses[-1].payload) if execution.responses else {}
    if execution.state is ExecutionState.SUCCESS:
        return {"state": "succeeded", "payload": payload}
    if execution.state is ExecutionState.TIMEOUT:
        return {"state": "platform_error", "payload": {"message": "The device did not answer in time."}}
    return {"state": "error", "payload": payload}


async def _device(request: web.Request, body: JsonObject) -> Device:
    site = await own_site(request)
    store = request.app[SERVICES].store
    device_id = params.optional_string(body, "device_id")
    hardware_id = params.optional_string(body, "hardware_id")
    if device_id is not None:
        found = await store.get_device(device_id)
    elif hardware_id is not None:
        found = await store.device_by_hardware_id(hardware_id)
    else:
        raise errors.invalid_parameter("device_id", "device_id or hardware_id is required")
    if found is None or found.site_id != site.id:
        raise errors.not_found("Device")
    return found
