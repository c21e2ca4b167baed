"""The dynsec file and control commands (the broker side is exercised in integration tests)."""

from __future__ import annotations

import base64
import json

import pytest

from gateway.model import JsonObject
from gateway.mqtt import dynsec

# Produced by `mosquitto_ctrl dynsec init dynsec.json admin secretpw` (Mosquitto 2.0.11).
MOSQUITTO_SALT = "I7GDDLGjIqIayPr6"
MOSQUITTO_HASH = "bV+yrxNPJQrePyU3uiEAcz0mi1ZN+5MD9Sv59qXX87TvEo7ax2VowcaBU0otOYZZJAglVGISeJox9BTrRLADOA=="


def test_hash_matches_what_mosquitto_itself_writes() -> None:
    hashed = dynsec.hash_password("secretpw", base64.b64decode(MOSQUITTO_SALT), iterations=101)
    assert hashed.hash_b64 == MOSQUITTO_HASH
    assert hashed.salt_b64 == MOSQUITTO_SALT


def test_password_hash_round_trips_through_its_storage_form() -> None:
    hashed = dynsec.hash_password("pw", b"0123456789ab")
    assert dynsec.PasswordHash.decode(hashed.encode()) == hashed
    with pytest.raises(ValueError, match="scheme"):
        dynsec.PasswordHash.decode("md5$1$a$b")


def test_rendered_file_scopes_each_device_to_its_own_topics() -> None:
    admin = dynsec.hash_password("admin", b"saltsaltsalt")
    devices = [
        dynsec.DeviceAccount("HWA", dynsec.hash_password("a", b"saltsaltsalt")),
        dynsec.DeviceAccount("HWB", None),
    ]
    document = json.loads(dynsec.render_file(admin, devices))
    clients = {client["username"]: client for client in document["clients"]}
    assert set(clients) == {dynsec.ADMIN_USERNAME, "HWA", "HWB"}
    assert "password" in clients["HWA"]
    assert "password" not in clients["HWB"]  # certificate identity: no password login
    roles = {role["rolename"]: role for role in document["roles"]}
    topics = {(acl["acltype"], acl["topic"]) for acl in roles["device-HWA"]["acls"]}
    assert topics == {
        ("publishClientSend", "v1/from/HWA/#"),
        ("subscribePattern", "v1/to/HWA/#"),
        ("publishClientReceive", "v1/to/HWA/#"),
        ("unsubscribePattern", "v1/to/HWA/#"),
    }
    assert not any(document["defaultACLAccess"].values())


def test_create_commands_delete_first_so_old_sessions_are_kicked() -> None:
    commands = dynsec.create_device_commands("HWA", "pw")
    assert [c["command"] for c in commands] == [
        "deleteClient",
        "deleteRole",
        "createRole",
        "createClient",
    ]
    assert commands[-1]["password"] == "pw"
    assert "password" not in dynsec.create_device_commands("HWA", None)[-1]


def test_response_errors_ignore_deleting_what_is_missing() -> None:
    response: JsonObject = {
        "responses": [
            {"command": "deleteClient", "error": "Client not found"},
            {"command": "createClient", "error": "Client already exists"},
            {"command": "createRole"},
        ]
    }
    assert dynsec.response_errors(response) == ["createClient: Client already exists"]
    assert dynsec.response_errors({"nope": 1}) == ["malformed dynsec response"]
