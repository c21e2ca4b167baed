"""Latest telemetry through the Enapter SDK's HTTP client and the per-device endpoint."""

from __future__ import annotations

import json
import time

import aiomqtt
import enapter
import httpx

from tests.gateway_process import GatewayProcess, eventually, provision


async def test_latest_telemetry_through_the_sdk(gateway: GatewayProcess, installer_token: str) -> None:
    device = await provision(gateway, installer_token, "Meter")
    now = int(time.time())
    topic = f"v1/from/{device.hardware_id}/s/v1/telemetry"
    async with aiomqtt.Client(
        "127.0.0.1", gateway.mqtt_port, username=device.hardware_id, password=device.password, timeout=5
    ) as publisher:
        # An older message first: the attribute it alone carries is 100 s old.
        await publisher.publish(topic, json.dumps({"timestamp": now - 100, "stale": 7, "voltage": 1.0}))
        await publisher.publish(
            topic,
            json.dumps({"timestamp": now, "voltage": 230.5, "on": True, "mode": "auto", "errors": ["e1"]}),
        )

    api = enapter.http.api.Config(base_url=gateway.base_url, token=installer_token)
    async with enapter.http.api.Client(config=api) as client:

        async def current() -> dict[str, object] | None:
            latest = await client.telemetry.latest({device.device_id: ["voltage", "on", "mode", "errors"]})
            points = latest[device.device_id]
            return None if any(point is None for point in points.values()) else dict(points)

        await eventually(current, 10)
        latest = await client.telemetry.latest(
            {
                device.device_id: ["voltage", "on", "mode", "errors", "stale", "missing"],
                "no-such-device": ["x"],
            }
        )
        points = latest[device.device_id]
        values = {name: None if point is None else point.value for name, point in points.items()}
        assert values == {
            "voltage": 230.5,
            "on": True,
            "mode": "auto",
            "errors": ["e1"],
            "stale": None,  # older than the default 30 s relevance interval
            "missing": None,
        }
        voltage = points["voltage"]
        assert voltage is not None
        assert int(voltage.timestamp.timestamp()) == now
        assert latest["no-such-device"] == {"x": None}

        # A wider relevance interval makes the old value current again; the slug works as a key.
        wider = await client.telemetry.latest({"meter": ["stale"]}, relevance_interval=300)
        stale = wider["meter"]["stale"]
        assert stale is not None
        assert (stale.value, int(stale.timestamp.timestamp())) == (7, now - 100)

    async with httpx.AsyncClient(headers={"X-Enapter-Auth-Token": installer_token}, timeout=5) as http:
        every = await http.get(f"{gateway.base_url}/v3/devices/{device.device_id}/telemetry")
        assert every.status_code == 200
        assert every.json()["telemetry"]["voltage"] == {"value": 230.5, "timestamp": now}
        assert set(every.json()["telemetry"]) == {"errors", "mode", "on", "stale", "voltage"}
        some = await http.get(
            f"{gateway.base_url}/v3/devices/meter/telemetry",
            params={"attribute.in": "on,missing", "relevance_interval": "1m"},
        )
        assert some.json() == {
            "telemetry": {
                "on": {"value": True, "timestamp": now},
                "missing": {"warning": "Telemetry attribute is not found."},
            }
        }
        # The Gateway 2.x API: newest values however old, the missing ones named in `errors`.
        for root in (gateway.base_url, gateway.base_url.removesuffix("/api")):
            v1 = await http.get(
                f"{root}/telemetry/v1/now", params={f"devices[{device.device_id}]": "stale,on,missing"}
            )
            assert v1.status_code == 200
            assert v1.json()["devices"] == {
                device.device_id: {
                    "stale": {"value": 7, "timestamp": now - 100},
                    "on": {"value": True, "timestamp": now},
                }
            }
            assert [error["details"] for error in v1.json()["errors"]] == [
                {"device": device.device_id, "attribute": "missing"}
            ]
        bad = await http.get(
            f"{gateway.base_url}/v3/telemetry/latest",
            params={f"devices[{device.device_id}]": "on", "relevance_interval": "soon"},
        )
        assert bad.status_code == 400
        assert bad.json()["errors"][0]["details"] == {"parameter": "relevance_interval"}


async def test_raised_alerts_follow_the_newest_telemetry(
    gateway: GatewayProcess, installer_token: str
) -> None:
    device = await provision(gateway, installer_token, "Stack")
    now = int(time.time())
    topic = f"v1/from/{device.hardware_id}/s/v1/telemetry"
    api = enapter.http.api.Config(base_url=gateway.base_url, token=installer_token)
    async with (
        aiomqtt.Client(
            "127.0.0.1", gateway.mqtt_port, username=device.hardware_id, password=device.password, timeout=5
        ) as publisher,
        enapter.http.api.Client(config=api) as client,
    ):

        async def alerts_become(expected: list[str]) -> None:
            async def current() -> bool:
                found = await client.devices.get(device.device_id, expand_raised_alert_names=True)
                return found.raised_alert_names == expected

            await eventually(current, 10)

        await publisher.publish(
            topic, json.dumps({"timestamp": now, "alerts": ["overheat", "low_h2o"], "t": 1})
        )
        await alerts_become(["overheat", "low_h2o"])
        # A late, older message does not bring back what a newer one said.
        await publisher.publish(topic, json.dumps({"timestamp": now + 1, "alerts": ["overheat"]}))
        await publisher.publish(
            topic, json.dumps({"timestamp": now - 5, "alerts": ["stale_alert"], "marker": 1})
        )

        async def late_one_stored() -> bool:
            latest = await client.telemetry.latest({device.device_id: ["marker"]})
            return latest[device.device_id]["marker"] is not None

        await eventually(late_one_stored, 10)
        found = await client.devices.get(device.device_id, expand_raised_alert_names=True)
        assert found.raised_alert_names == ["overheat"]
        # `null` (what the SDK sends when the code set no alerts) clears them, as does absence.
        await publisher.publish(topic, json.dumps({"timestamp": now + 2, "alerts": None, "t": 2}))
        await alerts_become([])
        listed = await client.devices.get(device.device_id, expand_raised_alert_names=True)
        assert listed.raised_alert_names == []
