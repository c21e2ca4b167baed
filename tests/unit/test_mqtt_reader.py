"""The paho-mqtt/aiomqtt internals that gateway/mqtt/reader.py relies on (listed in its docstring) are
there in the installed versions, and one going missing fails loudly, not quietly."""

from __future__ import annotations

import importlib.metadata
import inspect
from types import ModuleType

import aiomqtt
import paho.mqtt.client as paho_mqtt
import pytest

from gateway.mqtt import reader
from gateway.mqtt.endpoint import DeliveringClient


def _client() -> DeliveringClient:
    return DeliveringClient(lambda topic, payload: None, "127.0.0.1", 1883)


async def test_the_installed_versions_have_every_internal() -> None:
    client = _client()
    reader.check_seam(client)
    # aiomqtt hands paho the subclass's hooks: the reader's installer and the delivering callback.
    assert client._client.on_socket_open == client._on_socket_open
    assert client._client.on_message == client._on_message


def test_the_pins_this_was_written_against() -> None:
    assert importlib.metadata.version("aiomqtt").split(".")[0] == "2"
    assert importlib.metadata.version("paho-mqtt").split(".")[:2] == ["2", "2"]


def test_paho_reads_packets_only_through_sock_recv() -> None:
    # The reader hands paho one whole packet by serving `_sock_recv`; paho reading the socket any
    # other way would take bytes the reader never saw and break the framing.
    source = inspect.getsource(paho_mqtt.Client._packet_read)
    assert source.count("self._sock_recv(") == 3
    assert ".recv(" not in source.replace("self._sock_recv(", "")
    assert "self._sock.recv(" in inspect.getsource(paho_mqtt.Client._sock_recv)


async def test_a_client_is_not_made_without_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(paho_mqtt.Client, "_sock_recv")
    with pytest.raises(reader.SeamError, match="_sock_recv"):
        _client()


@pytest.mark.parametrize(
    ("owner", "name"),
    [
        (paho_mqtt.Client, "_sock_recv"),
        (paho_mqtt, "time_func"),
        (aiomqtt.Client, "_on_socket_open"),
    ],
)
async def test_a_missing_module_or_class_internal_fails_loudly(
    monkeypatch: pytest.MonkeyPatch, owner: type | ModuleType, name: str
) -> None:
    client = _client()
    monkeypatch.delattr(owner, name)
    with pytest.raises(reader.SeamError, match=name):
        reader.check_seam(client)


@pytest.mark.parametrize(
    ("on_paho", "name"),
    [
        (False, "_disconnected"),
        (False, "_loop"),
        (True, "_msgtime_mutex"),
        (True, "_last_bytes_received"),
        (True, "on_socket_open"),
    ],
)
async def test_a_missing_instance_internal_fails_loudly(on_paho: bool, name: str) -> None:
    client = _client()
    target: object = client._client if on_paho else client
    if name == "on_socket_open":
        client._client.on_socket_open = None  # aiomqtt no longer wiring its hook
    else:
        delattr(target, name)
    with pytest.raises(reader.SeamError, match=name):
        reader.check_seam(client)
