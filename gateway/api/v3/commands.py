"""Device commands (v3): execute, start, list and read executions (`enapter-http-api.md` §6)."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from gateway.api import dto, errors, lookup, params
from gateway.api.auth import ROLE
from gateway.api.render import json_response
from gateway.api.services import SERVICES
from gateway.blueprints.manifest import check_arguments
from gateway.model import Device, JsonValue, Role

# A command's `access_level` when its manifest does not say, or the device has none (§2).
DEFAULT_COMMAND_ACCESS = Role.USER


def declared_name(request: web.Request, device: Device, name: str, arguments: Mapping[str, JsonValue]) -> str:
    """The command's name in the device's manifest, after checking that the manifest declares
    it (or an alias), that the caller's role reaches its `access_level` (403) and that the
    arguments fit (422). A device without a blueprint takes any command under its own name."""
    manifest = request.app[SERVICES].manifests.of(device.id)
    if manifest is None:
        _check_role(request, name, DEFAULT_COMMAND_ACCESS)
        return name
    command = manifest.command(name)
    if command is None:
        raise errors.ApiError(
            422,
            "command_not_declared",
            f"Command {name!r} is not declared in the blueprint of device {device.slug}.",
            {"command": name},
        )
    _check_role(request, command.name, command.access_level)
    problems = check_arguments(command, arguments)
    if problems:
        raise errors.ApiError(
            422,
            "invalid_command_arguments",
            f"Command {command.name!r}: " + "; ".join(problems),
            {"command": command.name, "problems": list(problems)},
        )
    return command.name


def _check_role(request: web.Request, name: str, access_level: Role) -> None:
    if not request[ROLE].at_least(access_level):
        raise errors.forbidden(f"Command {name!r} needs the {access_level.value} role or higher.")


async def execute_command(request: web.Request) -> web.Response:
    """POST .../execute_command: blocks until the execution ends or times out -> {"execution"}."""
    device = await lookup.device(request, await lookup.own_site(request))
    with_log = "log" in params.expand(request.query, {"log"})
    command = params.command_request(params.json_object(await request.read()))
    manifest_name = declared_name(request, device, command.name, command.arguments)
    try:
        execution = await request.app[SERVICES].commands.execute(
            device,
            command.name,
            command.arguments,
            manifest_name=manifest_name,
            ephemeral=command.ephemeral,
        )
    except LookupError:  # deleted while its command ran
        raise errors.not_found("Device") from None
    return json_response({"execution": dto.execution(execution, with_log=with_log)})


async def create_execution(request: web.Request) -> web.Response:
    """POST .../command_executions: sends the command and answers at once -> {"execution_id"}."""
    device = await lookup.device(request, await lookup.own_site(request))
    command = params.command_request(params.json_object(await request.read()))
    manifest_name = declared_name(request, device, command.name, command.arguments)
    execution = await request.app[SERVICES].commands.start(
        device, command.name, command.arguments, manifest_name=manifest_name, ephemeral=command.ephemeral
    )
    return json_response({"execution_id": execution.id})


async def get_execution(request: web.Request) -> web.Response:
    """GET .../command_executions/{execution_id}[?expand=log] -> {"execution"}."""
    device = await lookup.device(request, await lookup.own_site(request))
    with_log = "log" in params.expand(request.query, params.EXECUTION_EXPANDS)
    found = await request.app[SERVICES].store.execution(device.id, request.match_info["execution_id"])
    if found is None:
        raise errors.not_found("Command execution")
    return json_response({"execution": dto.execution(found, with_log=with_log)})


async def list_device_executions(request: web.Request) -> web.Response:
    """GET .../devices/{device}/command_executions with the filters of §6."""
    device = await lookup.device(request, await lookup.own_site(request))
    return await _list(request, params.execution_query(request.query), frozenset({device.id}))


async def list_site_executions(request: web.Request) -> web.Response:
    """GET /v3/sites/{site_id}/commands/executions: every device's, or those of `device_id.in`."""
    await lookup.own_site(request)
    query = params.execution_query(request.query)
    return await _list(request, query, query.device_ids)


async def _list(
    request: web.Request, query: params.ExecutionQuery, device_ids: frozenset[str] | None
) -> web.Response:
    found, total = await request.app[SERVICES].store.executions(
        device_ids=device_ids,
        offset=query.page.offset,
        limit=query.page.limit,
        created_from=query.created_from,
        created_before=query.created_before,
        states=query.states,
        names=query.names,
        include_ephemeral=query.include_ephemeral,
        newest_first=query.newest_first,
    )
    bodies: list[JsonValue] = [dto.execution(execution, with_log=query.with_log) for execution in found]
    return json_response({"executions": bodies, "total_count": total})
