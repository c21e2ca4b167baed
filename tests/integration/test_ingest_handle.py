"""Ingest's per-message path (`Ingest.handle`, what the MQTT callback calls) into a real store."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.blueprints.catalog import ManifestCatalog
from gateway.mqtt import ingest as ingest_module
from gateway.mqtt.endpoint import BrokerEndpoint
from gateway.mqtt.ingest import Ingest
from gateway.presence import Presence
from gateway.store.store import Store
from tests.integration.test_store import add_device

NOWHERE = BrokerEndpoint(hostname="127.0.0.1", port=1, transport="tcp", username="", password="")


async def test_messages_are_taken_whatever_became_of_the_parsed_topics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Parsed topics are kept up to a bound, then forgotten: three devices over a bound of two.
    monkeypatch.setattr(ingest_module, "MAX_PARSED_TOPICS", 2)
    async with Store.open(tmp_path / "gateway.db") as store:
        devices = [await add_device(store, f"Meter {n}", hardware_id=f"HW{n}") for n in range(3)]
        ingest = Ingest(NOWHERE, store, Presence(90.0), ManifestCatalog())
        ingest.register(devices)
        for seq in range(3):
            for n in range(3):
                ingest.handle(
                    f"v1/from/HW{n}/ch/v1/telemetry", f'{{"timestamp": {seq}, "seq": {seq}}}'.encode()
                )
        ingest.handle("v1/from/HW0/ch/v1/unknown", b"{}")
        ingest.handle("v1/from/HW9/ch/v1/telemetry", b'{"seq": 1}')
        await store.flush()
        assert (ingest.received, ingest.accepted) == (11, 9)
        assert dict(ingest.dropped) == {"unknown_suffix": 1, "unknown_device": 1}
        latest = await store.latest_telemetry_of([device.id for device in devices])
        assert [latest[device.id]["seq"].value for device in devices] == [2, 2, 2]


async def test_a_full_writer_queue_drops_messages_before_they_are_decoded(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "gateway.db", queue_size=2) as store:
        device = await add_device(store, hardware_id="HW0")
        ingest = Ingest(NOWHERE, store, Presence(90.0), ManifestCatalog())
        ingest.register([device])
        topic = "v1/from/HW0/ch/v1/telemetry"
        # No await in between: the writer cannot take anything, so the third message finds the
        # queue full; being dropped unread, its broken JSON is never noticed.
        for payload in (b'{"seq": 1}', b'{"seq": 2}', b"not json", b'{"seq": 4}'):
            ingest.handle(topic, payload)
        assert not store.accepting
        assert dict(ingest.dropped) == {"queue_full": 2}
        await store.flush()
        assert store.accepting
        ingest.handle(topic, b"not json")
        assert dict(ingest.dropped) == {"queue_full": 2, "not_json": 1}
        assert (await store.latest_telemetry(device.id))["seq"].value == 2
