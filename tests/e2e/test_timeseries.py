"""Time-series queries end to end: telemetry published as a device, read back through the SDK's
`wide_timeseries` and as raw CSV (`enapter-http-api.md` §7.2), and retention keeping coarse
answers after raw values are gone.

The values (at fixed offsets from an hour boundary two hours ago) and the expected answers are
worked out by hand in the comments.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import enapter
import httpx
import pytest
from enapter.http.api.telemetry import DataType, Selector

from tests.gateway_process import GatewayProcess, ProvisionedDevice, eventually, provision, running_gateway

# An hour boundary two hours ago: every value is older than a tiny raw retention.
BASE = (int(time.time()) // 3600 - 2) * 3600
# t: 1, 3, 2 in the first minute, 10 in the second, nothing in the third, 4 in the fourth.
MESSAGES: list[dict[str, object]] = [
    {"timestamp": BASE + 0, "t": 1, "on": False, "mode": "idle", "errs": [], "f": 0.5},
    {"timestamp": BASE + 20, "t": 3, "on": True, "mode": "run, fast", "errs": ["a", "b"]},
    {"timestamp": BASE + 40, "t": 2, "on": False, "mode": 'say "hi"'},
    {"timestamp": BASE + 70, "t": 10, "on": False, "mode": "idle"},
    {"timestamp": BASE + 190, "t": 4, "on": False},
]


async def publish(gateway: GatewayProcess, device: ProvisionedDevice) -> None:
    topic = f"v1/from/{device.hardware_id}/s/v1/telemetry"
    async with aiomqtt.Client(
        "127.0.0.1", gateway.mqtt_port, username=device.hardware_id, password=device.password, timeout=5
    ) as client:
        for message in MESSAGES:
            await client.publish(topic, json.dumps(message), qos=1)


async def query(gateway: GatewayProcess, token: str, body: dict[str, object], path: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(
            f"http://127.0.0.1:{gateway.api_port}{path}",
            json=body,
            headers={"X-Enapter-Auth-Token": token, "Accept": "text/csv"},
        )


def body(device: str, **selector: object) -> dict[str, object]:
    return {
        "from": BASE,
        "to": BASE + 240,
        "granularity": "60s",
        "telemetry": [{"device": device, **selector}],
    }


async def stored(gateway: GatewayProcess, token: str, device: ProvisionedDevice) -> None:
    async def all_there() -> bool:
        response = await query(
            gateway,
            token,
            body(device.device_id, attribute="t", aggregation="last"),
            "/api/v3/telemetry/query_timeseries",
        )
        return response.status_code == 200 and response.text.strip().endswith(f"{BASE + 180},4")

    await eventually(all_there, 10)


async def test_the_sdk_reads_wide_time_series(gateway: GatewayProcess, installer_token: str) -> None:
    device = await provision(gateway, installer_token, "Meter")
    await publish(gateway, device)
    await stored(gateway, installer_token, device)
    api = enapter.http.api.Config(base_url=gateway.base_url, token=installer_token)
    async with enapter.http.api.Client(config=api) as client:
        series = await client.telemetry.wide_timeseries(
            from_=dt.datetime.fromtimestamp(BASE, dt.UTC),
            to=dt.datetime.fromtimestamp(BASE + 240, dt.UTC),
            granularity=60,
            selectors=[Selector(device="meter", attributes=["t", "on", "mode", "errs"])],
        )
    assert [int(ts.timestamp()) for ts in series.timestamps] == [BASE, BASE + 60, BASE + 180]
    columns = {column.labels.telemetry: column for column in series.columns}
    assert {column.labels.device for column in series.columns} == {"meter"}
    # auto: avg for numbers, bool_or for booleans, last for strings and arrays.
    assert columns["t"].data_type is DataType.FLOAT
    assert columns["t"].values == [2.0, 10.0, 4.0]
    assert columns["on"].data_type is DataType.BOOLEAN
    assert columns["on"].values == [True, False, False]
    assert columns["mode"].data_type is DataType.STRING
    assert columns["mode"].values == ['say "hi"', "idle", None]
    assert columns["errs"].data_type is DataType.STRING_ARRAY
    assert columns["errs"].values == [["a", "b"], None, None]


async def test_csv_aggregations_gap_filling_and_errors(gateway: GatewayProcess, installer_token: str) -> None:
    device = await provision(gateway, installer_token, "Meter")
    await publish(gateway, device)
    await stored(gateway, installer_token, device)
    path = "/api/v3/telemetry/query_timeseries"
    d = device.device_id

    response = await query(
        gateway,
        installer_token,
        {
            "from": dt.datetime.fromtimestamp(BASE, dt.UTC).isoformat(),
            "to": BASE + 240,
            "granularity": "1m",
            "aggregation": "max",
            "telemetry": [
                {"device": d, "attribute": ["t"]},
                {"device": d, "attribute": "t", "aggregation": "min"},
                {"device": d, "attribute": "on", "aggregation": "bool_or"},
                {"device": d, "attribute": "errs", "aggregation": "last"},
                {"device": d, "attribute": "f", "aggregation": "avg"},
            ],
        },
        path,
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "text/csv"
    assert response.headers.get_list("X-Enapter-Timeseries-Data-Types") == [
        "integer",
        "integer",
        "boolean",
        "string_array",
        "float",
    ]
    assert response.text.splitlines() == [
        f"ts,device={d} telemetry=t,device={d} telemetry=t,device={d} telemetry=on,"
        f"device={d} telemetry=errs,device={d} telemetry=f",
        # max 3 / min 1; bool_or of false,true,false; the newest array, quoted; avg of 0.5 alone.
        f'{BASE},3,1,true,"[""a"",""b""]",0.5',
        f"{BASE + 60},10,10,false,,",
        f"{BASE + 180},4,4,false,,",
    ]

    # locf: the empty third minute takes the second minute's value while it is within reach.
    for look_around, third in (("60s", "10"), ("30s", "")):
        filled = await query(
            gateway,
            installer_token,
            body(
                d,
                attribute="t",
                aggregation="last",
                gap_filling={"method": "locf", "look_around": look_around},
            ),
            path,
        )
        rows = filled.text.splitlines()[1:]
        expected = [
            f"{BASE},2",
            f"{BASE + 60},10",
            *([f"{BASE + 120},{third}"] if third else []),
            f"{BASE + 180},4",
        ]
        assert rows == expected, look_around

    # Seconds: the raw values; the v1 path answers the same.
    raw_body = {**body(d, attribute="t"), "to": BASE + 60, "granularity": "20s"}
    raw = await query(gateway, installer_token, raw_body, path)
    assert raw.text.splitlines()[1:] == [f"{BASE},1.0", f"{BASE + 20},3.0", f"{BASE + 40},2.0"]
    v1 = await query(gateway, installer_token, raw_body, "/telemetry/v1/timeseries")
    assert v1.text == raw.text

    # Errors: nothing known -> 404 with the code Grafana knows; bad values -> 422 naming them.
    missing = await query(gateway, installer_token, body(d, attribute="nope"), path)
    assert missing.status_code == 404
    assert missing.json()["errors"][0]["code"] == "telemetrypersistence/NO_TELEMETRY_ATTRIBUTES_FOUND"
    unknown_device = await query(gateway, installer_token, body("no-such-device", attribute="t"), path)
    assert unknown_device.status_code == 404
    for bad, field in (
        ({**body(d, attribute="t"), "to": BASE}, "to"),
        ({**body(d, attribute="t"), "granularity": "soon"}, "granularity"),
        (body(d, attribute="t", aggregation="median"), "telemetry[0].aggregation"),
        (body(d, attribute="mode", aggregation="avg"), "telemetry[0].aggregation"),
    ):
        refused = await query(gateway, installer_token, bad, path)
        assert refused.status_code == 422, (bad, refused.text)
        assert refused.json()["errors"][0]["details"] == {"parameter": field}


@pytest.fixture
def short_retention(tmp_path: Path) -> Iterator[GatewayProcess]:
    with running_gateway(tmp_path, {"retention": {"telemetry_raw": 2}}) as process:
        yield process


async def test_rollups_answer_after_raw_values_are_deleted(short_retention: GatewayProcess) -> None:
    gateway = short_retention
    token = gateway.create_token("INSTALLER")
    device = await provision(gateway, token, "Meter")
    await publish(gateway, device)
    path = "/api/v3/telemetry/query_timeseries"
    fine = {**body(device.device_id, attribute="t"), "granularity": "20s"}

    coarse_rows = [f"{BASE},2.0", f"{BASE + 60},10.0", f"{BASE + 180},4.0"]

    async def only_rollups_left() -> bool:
        # Raw values and rollups are written in one transaction: rollups present means the raw
        # values were stored too. Two hours old, they outlive a 2 s raw retention by < 1 s.
        fine_rows = (await query(gateway, token, fine, path)).text.splitlines()[1:]
        coarse = await query(gateway, token, body(device.device_id, attribute="t"), path)
        return coarse.text.splitlines()[1:] == coarse_rows and fine_rows == []

    await eventually(only_rollups_left, 10)
    hourly = await query(gateway, token, {**body(device.device_id, attribute="t"), "granularity": "1h"}, path)
    # One hour bucket: avg of 1, 3, 2, 10, 4.
    assert hourly.text.splitlines()[1:] == [f"{BASE},4.0"]
