"""Blueprints (v3): upload, validate, read and download them; the device profiles archive
(`enapter-http-api.md` §8), and `GET /blueprints/v1/download` for Gateway 2.x clients (§10.2).

Uploads come as raw zip bytes with any Content-Type (python-sdk, the CLI, VS Code) or as
multipart form data (the docs' `curl -F data=@bp.zip`); both are read with the archive size limit
rather than the API's general body limit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import BadHttpMessage

from gateway.api import dto, errors
from gateway.api.render import json_response
from gateway.api.services import SERVICES
from gateway.blueprints.archive import DEFAULT_LIMITS, ArchiveError, read_files, write_archive
from gateway.blueprints.package import BlueprintError, compiled_archive, load_package
from gateway.model import Blueprint

LOG = logging.getLogger("gateway.api")

_CHUNK = 64 * 1024
_Read = Callable[[int], Awaitable[bytes]]
# What `GET .../device_profiles/download` gives before any profiles were uploaded.
_NO_PROFILES_README = b"""No device profiles have been uploaded to this gateway.

The gateway works offline and does not ship Enapter's profile library. Upload one with
POST /api/v3/blueprints/upload_device_profiles (a zip), and it is served here.
"""


async def upload(request: web.Request) -> web.Response:
    """POST /v3/blueprints/upload -> {"blueprint": {"id", "created_at"}}; the same content again
    gives the same blueprint."""
    data = await read_upload(request)
    try:
        # Parsing a large manifest takes a while (PyYAML): off the event loop.
        package = await asyncio.to_thread(load_package, data)
    except BlueprintError as exc:
        raise invalid_blueprint(exc.problems) from None
    blueprint = await request.app[SERVICES].store.create_blueprint(
        digest=package.digest,
        name=package.name,
        archive=data,
        manifest=package.manifest.compiled,
    )
    LOG.info("blueprint %s (%s) uploaded", blueprint.id, package.name)
    return json_response({"blueprint": dto.blueprint(blueprint)})


async def validate(request: web.Request) -> web.Response:
    """POST /v3/blueprints/validate -> {"validation_errors": [...]}, empty when valid (no token needed)."""
    try:
        await asyncio.to_thread(load_package, await read_upload(request))
    except BlueprintError as exc:
        return json_response({"validation_errors": list(exc.problems)})
    return json_response({"validation_errors": []})


async def get_blueprint(request: web.Request) -> web.Response:
    """GET /v3/blueprints/{blueprint_id}."""
    return json_response(
        {"blueprint": dto.blueprint(await _blueprint(request, request.match_info["blueprint_id"]))}
    )


async def get_named(request: web.Request) -> web.Response:
    """GET /v3/blueprints/enapter/{name}/{tag}: `latest` is the newest upload with that name
    (the display name in snake case), any other tag a blueprint id."""
    store = request.app[SERVICES].store
    name, tag = request.match_info["name"], request.match_info["tag"]
    if tag == "latest":
        found = await store.newest_blueprint(name)
    else:
        found = await store.blueprint(tag)
        found = found if found is not None and found.name == name else None
    if found is None:
        raise errors.not_found("Blueprint")
    return json_response({"blueprint": dto.blueprint(found)})


async def download(request: web.Request) -> web.Response:
    """GET /v3/blueprints/{blueprint_id}/zip?view=ORIGINAL|COMPILED (default COMPILED)."""
    view = request.query.get("view", "COMPILED").upper()
    if view not in ("ORIGINAL", "COMPILED"):
        raise errors.invalid_parameter("view", "must be ORIGINAL or COMPILED")
    blueprint = await _blueprint(request, request.match_info["blueprint_id"])
    archive = await _archive(request, blueprint)
    if view == "COMPILED":
        archive = await asyncio.to_thread(compiled_archive, archive, blueprint.manifest)
    return _zip(archive, f"{blueprint.id}.zip")


async def download_v1(request: web.Request) -> web.Response:
    """GET /blueprints/v1/download?blueprint_id= (Gateway 2.x): the blueprint as uploaded."""
    blueprint_id = request.query.get("blueprint_id", "")
    if not blueprint_id:
        raise errors.invalid_parameter("blueprint_id", "is required")
    blueprint = await _blueprint(request, blueprint_id)
    return _zip(await _archive(request, blueprint), f"{blueprint.id}.zip")


async def download_profiles(request: web.Request) -> web.Response:
    """GET /v3/blueprints/device_profiles/download (python-sdk) and .../download_device_profiles (CLI)."""
    archive = await request.app[SERVICES].store.device_profiles()
    if archive is None:
        archive = write_archive({"README.txt": _NO_PROFILES_README})
    return _zip(archive, "device_profiles.zip")


async def upload_profiles(request: web.Request) -> web.Response:
    """POST /v3/blueprints/upload_device_profiles: a zip of profiles, served by the downloads."""
    try:
        # Inflating up to 50 MiB: off the event loop, like blueprint uploads.
        files = await asyncio.to_thread(read_files, await read_upload(request))
    except ArchiveError as exc:
        raise invalid_blueprint(exc.problems) from None
    await request.app[SERVICES].store.set_device_profiles(write_archive(files))
    return json_response({"files": len(files)})


async def read_upload(request: web.Request) -> bytes:
    """The uploaded zip: the raw body, or the first file of a multipart form; 413 past the limit."""
    limit = DEFAULT_LIMITS.archive_bytes
    if request.content_type.startswith("multipart/"):
        try:
            return await _form_upload(request, limit)
        except (ValueError, BadHttpMessage):
            # aiohttp's multipart reader raises these for a form it cannot parse (no boundary,
            # malformed part headers, a part cut short): the client's mistake, not ours.
            raise errors.bad_request("The multipart form could not be parsed.") from None
    return await _bounded(lambda size: request.content.read(size), limit)


async def _form_upload(request: web.Request, limit: int) -> bytes:
    """The first file of a multipart form (or its `data` or `file` field)."""
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if isinstance(part, BodyPartReader) and (part.filename is not None or part.name in ("data", "file")):
            return await _bounded(part.read_chunk, limit)
        # Other form fields are skipped unread; nested multiparts are not uploads.
    raise errors.invalid_parameter("data", "the form has no file")


async def _bounded(read: _Read, limit: int) -> bytes:
    data = bytearray()
    while chunk := await read(_CHUNK):
        data += chunk
        if len(data) > limit:
            raise errors.ApiError(
                413, "payload_too_large", f"A blueprint archive may be at most {limit // 1024**2} MiB."
            )
    return bytes(data)


def invalid_blueprint(problems: tuple[str, ...]) -> errors.ApiError:
    """422 listing every problem (the first in the message, all in `details.validation_errors`)."""
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return errors.ApiError(
        422,
        "invalid_blueprint",
        f"The blueprint is not valid: {problems[0]}{more}",
        {"validation_errors": list(problems)},
    )


async def _blueprint(request: web.Request, blueprint_id: str) -> Blueprint:
    found = await request.app[SERVICES].store.blueprint(blueprint_id)
    if found is None:
        raise errors.not_found("Blueprint")
    return found


async def _archive(request: web.Request, blueprint: Blueprint) -> bytes:
    archive = await request.app[SERVICES].store.blueprint_archive(blueprint.id)
    if archive is None:  # deleted between the two reads
        raise errors.not_found("Blueprint")
    return archive


def _zip(archive: bytes, filename: str) -> web.Response:
    return web.Response(
        body=archive,
        content_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
