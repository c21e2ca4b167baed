"""Latest telemetry: v3 across devices and per device (`enapter-http-api.md` §7.1), and v1 `now`
for Gateway 2.x clients (§10.2)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping
from typing import TypeVar

from aiohttp import web
from multidict import CIMultiDict

from gateway.api import dto, errors, lookup, params, timeseries
from gateway.api.auth import ROLE
from gateway.api.render import json_response
from gateway.api.services import SERVICES
from gateway.blueprints.conformance import readable
from gateway.model import Device, JsonObject, LatestValue, SeriesKind

V = TypeVar("V")

DEVICE_NOT_FOUND = "Device is not found."


async def latest(request: web.Request) -> web.Response:
    """GET /v3/telemetry/latest?devices[<id or slug>]=a,b&relevance_interval=30s.

    Answers per device under the key the caller used; a device that does not exist gets a warning
    for each attribute asked for rather than failing the whole request.
    """
    selectors = params.latest_selectors(request.query)
    relevance = params.relevance_interval(request.query)
    site = await lookup.own_site(request)
    services = request.app[SERVICES]
    now = services.clock()
    devices, values = await _latest_of(request, selectors, site.id)
    body: JsonObject = {}
    for key, attributes in selectors.items():
        device = devices.get(key)
        if device is None:
            body[key] = {attribute: {"warning": DEVICE_NOT_FOUND} for attribute in attributes}
            continue
        body[key] = dto.latest_telemetry(values[device.id], attributes, now=now, relevance=relevance)
    return json_response({"telemetry": body})


async def device_latest(request: web.Request) -> web.Response:
    """GET /v3/devices/{device}/telemetry?attribute.in=a,b&relevance_interval=30s (all when absent)."""
    attributes = params.comma_list(request.query.get("attribute.in", ""))
    relevance = params.relevance_interval(request.query)
    device = await lookup.device(request, await lookup.own_site(request))
    services = request.app[SERVICES]
    values = readable_telemetry(request, device, await services.store.latest_telemetry(device.id))
    body = dto.latest_telemetry(values, attributes, now=services.clock(), relevance=relevance)
    return json_response({"telemetry": body})


async def v1_now(request: web.Request) -> web.Response:
    """GET /telemetry/v1/now?devices[<id>]=a,b (Gateway 2.x clients, `enapter-http-api.md` §10.2).

    `{"devices": {id: {attribute: {"value", "timestamp"}}}}`: v1 has no relevance interval, so the
    newest value is given however old; what does not exist is left out and named in `errors`.
    """
    selectors = params.latest_selectors(request.query)
    site = await lookup.own_site(request)
    found, values = await _latest_of(request, selectors, site.id)
    devices: JsonObject = {}
    problems: list[JsonObject] = []
    for key, attributes in selectors.items():
        device = found.get(key)
        if device is None:
            problems.append(dto.not_found_problem(f"Device {key} not found.", device=key))
            continue
        current = values[device.id]
        devices[key] = dto.current_values(current, attributes)
        problems += [
            dto.not_found_problem(
                f"Telemetry attribute {name} of device {key} not found.", device=key, attribute=name
            )
            for name in attributes
            if name not in current
        ]
    body: JsonObject = {"devices": devices}
    if problems:
        body["errors"] = list(problems)
    return json_response(body)


async def _latest_of(
    request: web.Request, keys: Collection[str], site_id: str
) -> tuple[dict[str, Device], dict[str, dict[str, LatestValue]]]:
    """The site's devices named by `keys` (ids or slugs) and their latest values, in one query
    whatever the number of devices."""
    found = await request.app[SERVICES].store.latest_by_keys(keys)
    devices: dict[str, Device] = {}
    values: dict[str, dict[str, LatestValue]] = {}
    for key, (device, latest) in found.items():
        if device.site_id == site_id:
            devices[key] = device
            values[device.id] = readable_telemetry(request, device, latest)
    return devices, values


def readable_telemetry(request: web.Request, device: Device, values: Mapping[str, V]) -> dict[str, V]:
    """The attributes the caller's role may read: the others are answered as if they did not exist."""
    manifest = request.app[SERVICES].manifests.of(device.id)
    return readable(manifest, "telemetry", values, request[ROLE])


async def query_timeseries(request: web.Request) -> web.Response:
    """POST /v3/telemetry/query_timeseries (and v1 `timeseries`): the JSON query in, `text/csv` out
    with one `X-Enapter-Timeseries-Data-Types` header per column (`enapter-http-api.md` §7.2).

    A column whose device or attribute does not exist stays empty; when none exists the answer
    is 404 `telemetrypersistence/NO_TELEMETRY_ATTRIBUTES_FOUND`, as Grafana expects.
    """
    body = params.json_object(await request.read())
    try:
        query = timeseries.parse_query(body)
    except timeseries.QueryError as exc:
        raise errors.invalid_query(exc.field, exc.message) from None
    # Whole buckets only: raw values and rollups then give the same answer.
    step = query.granularity
    query = dataclasses.replace(
        query, start=math.floor(query.start / step) * step, end=math.ceil(query.end / step) * step
    )
    site = await lookup.own_site(request)
    store = request.app[SERVICES].store
    wanted: dict[str, list[str]] = {}
    for column in query.columns:
        wanted.setdefault(column.device, []).append(column.attribute)
    # The devices and their series in one query, whatever the number of devices.
    known: dict[str, dict[str, tuple[int, SeriesKind]]] = {
        key: readable_telemetry(request, device, series)
        for key, (device, series) in (await store.series_by_keys(wanted)).items()
        if device.site_id == site.id
    }
    series = {ids for per_device in known.values() for ids in per_device.values()}
    if not series:
        raise errors.ApiError(
            404,
            "telemetrypersistence/NO_TELEMETRY_ATTRIBUTES_FOUND",
            "No telemetry attributes found for the query.",
        )
    # One read for every column; the longest look-back serves all (locf ignores what is too old).
    history = await store.history(
        dict(series), start=query.start - query.lookback(), end=query.end, granularity=step
    )
    columns: list[timeseries.Column] = []
    for column in query.columns:
        found = known.get(column.device, {}).get(column.attribute)
        try:
            if found is None:
                columns.append(timeseries.aggregate(column, None, [], query))
            else:
                columns.append(timeseries.aggregate(column, found[1], history[found[0]], query))
        except timeseries.QueryError as exc:
            raise errors.invalid_query(exc.field, exc.message) from None
    data_types, csv_text = timeseries.render_csv(columns)
    headers = CIMultiDict(("X-Enapter-Timeseries-Data-Types", data_type) for data_type in data_types)
    return web.Response(body=csv_text.encode(), headers=headers, content_type="text/csv")
