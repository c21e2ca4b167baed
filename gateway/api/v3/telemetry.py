"""Latest telemetry: v3 across devices and per device (`enapter-http-api.md` §7.1), and v1 `now`
for Gateway 2.x clients (§10.2)."""

from __future__ import annotations

import dataclasses
import math

from aiohttp import web
from multidict import CIMultiDict

from gateway.api import dto, errors, lookup, params, timeseries
from gateway.api.render import json_response
from gateway.api.services import SERVICES
from gateway.model import JsonObject, SeriesKind

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
    body: JsonObject = {}
    for key, attributes in selectors.items():
        device = await services.store.get_device(key)
        if device is None or device.site_id != site.id:
            body[key] = {attribute: {"warning": DEVICE_NOT_FOUND} for attribute in attributes}
            continue
        values = await services.store.latest_telemetry(device.id)
        body[key] = dto.latest_telemetry(values, attributes, now=now, relevance=relevance)
    return json_response({"telemetry": body})


async def device_latest(request: web.Request) -> web.Response:
    """GET /v3/devices/{device}/telemetry?attribute.in=a,b&relevance_interval=30s (all when absent)."""
    attributes = params.comma_list(request.query.get("attribute.in", ""))
    relevance = params.relevance_interval(request.query)
    device = await lookup.device(request, await lookup.own_site(request))
    services = request.app[SERVICES]
    values = await services.store.latest_telemetry(device.id)
    body = dto.latest_telemetry(values, attributes, now=services.clock(), relevance=relevance)
    return json_response({"telemetry": body})


async def v1_now(request: web.Request) -> web.Response:
    """GET /telemetry/v1/now?devices[<id>]=a,b (Gateway 2.x clients, `enapter-http-api.md` §10.2).

    `{"devices": {id: {attribute: {"value", "timestamp"}}}}`: v1 has no relevance interval, so the
    newest value is given however old; what does not exist is left out and named in `errors`.
    """
    selectors = params.latest_selectors(request.query)
    site = await lookup.own_site(request)
    store = request.app[SERVICES].store
    devices: JsonObject = {}
    problems: list[JsonObject] = []
    for key, attributes in selectors.items():
        device = await store.get_device(key)
        if device is None or device.site_id != site.id:
            problems.append(dto.not_found_problem(f"Device {key} not found.", device=key))
            continue
        values = await store.latest_telemetry(device.id)
        devices[key] = dto.current_values(values, attributes)
        problems += [
            dto.not_found_problem(
                f"Telemetry attribute {name} of device {key} not found.", device=key, attribute=name
            )
            for name in attributes
            if name not in values
        ]
    body: JsonObject = {"devices": devices}
    if problems:
        body["errors"] = list(problems)
    return json_response(body)


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
    known: dict[str, dict[str, tuple[int, SeriesKind]]] = {}
    for key in {column.device for column in query.columns}:
        device = await store.get_device(key)
        wanted = [column.attribute for column in query.columns if column.device == key]
        found = device is not None and device.site_id == site.id
        known[key] = await store.series(device.id, wanted) if device is not None and found else {}
    columns: list[timeseries.Column] = []
    for column in query.columns:
        series = known[column.device].get(column.attribute)
        if series is None:
            columns.append(timeseries.aggregate(column, None, [], query))
            continue
        series_id, kind = series
        look_back = (
            column.gap_filling.look_around
            if column.gap_filling.method is timeseries.GapFillingMethod.LOCF
            else 0.0
        )
        partials = await store.history(
            series_id, kind, start=query.start - look_back, end=query.end, granularity=step
        )
        try:
            columns.append(timeseries.aggregate(column, kind, partials, query))
        except timeseries.QueryError as exc:
            raise errors.invalid_query(exc.field, exc.message) from None
    if not any(known[column.device].get(column.attribute) for column in query.columns):
        raise errors.ApiError(
            404,
            "telemetrypersistence/NO_TELEMETRY_ATTRIBUTES_FOUND",
            "No telemetry attributes found for the query.",
        )
    data_types, csv_text = timeseries.render_csv(columns)
    headers = CIMultiDict(("X-Enapter-Timeseries-Data-Types", data_type) for data_type in data_types)
    return web.Response(body=csv_text.encode(), headers=headers, content_type="text/csv")
