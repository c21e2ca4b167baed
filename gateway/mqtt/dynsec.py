"""Mosquitto dynamic-security: the file the managed broker starts from, and the control commands.

Pure: builds JSON documents; the caller does the I/O. One client and one role per device, because
Mosquitto 2.0.x does not substitute `%u` in dynsec ACLs (eclipse-mosquitto#2222), see
`broker-storage-notes.md` §1.2. A device may publish only under `v1/from/<hw>/` and subscribe and
receive only under `v1/to/<hw>/`; everything else is denied by the default ACL access.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.model import JsonObject

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = "$CONTROL/dynamic-security/v1/response"
ADMIN_USERNAME = "gateway-admin"
ADMIN_ROLE = "gateway-admin"

# The salt length and iteration count Mosquitto 2.0 itself uses. The device passwords are 256-bit
# random strings, so the iteration count is not what protects them.
SALT_BYTES = 12
ITERATIONS = 101


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """A dynsec password entry: PBKDF2-HMAC-SHA512 over the raw salt, base64 on the wire."""

    salt_b64: str
    hash_b64: str
    iterations: int

    def encode(self) -> str:
        """One opaque string for storage: `pbkdf2-sha512$<iterations>$<salt>$<hash>`."""
        return f"pbkdf2-sha512${self.iterations}${self.salt_b64}${self.hash_b64}"

    @classmethod
    def decode(cls, text: str) -> PasswordHash:
        """Inverse of `encode`; raises ValueError on anything else."""
        scheme, iterations, salt_b64, hash_b64 = text.split("$")
        if scheme != "pbkdf2-sha512":
            raise ValueError(f"unknown password hash scheme {scheme!r}")
        return cls(salt_b64=salt_b64, hash_b64=hash_b64, iterations=int(iterations))


@dataclass(frozen=True, slots=True)
class DeviceAccount:
    """A device's broker identity; `password` is None for certificate devices."""

    hardware_id: str
    password: PasswordHash | None


def hash_password(password: str, salt: bytes, iterations: int = ITERATIONS) -> PasswordHash:
    """Hash `password` the way Mosquitto's dynsec plugin verifies it."""
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return PasswordHash(
        salt_b64=base64.b64encode(salt).decode(),
        hash_b64=base64.b64encode(digest).decode(),
        iterations=iterations,
    )


def device_role(hardware_id: str) -> str:
    """The per-device role name."""
    return f"device-{hardware_id}"


def _acl(acltype: str, topic: str) -> JsonObject:
    return {"acltype": acltype, "topic": topic, "allow": True, "priority": 0}


def device_acls(hardware_id: str) -> list[JsonObject]:
    """What a device may do: publish its own data, receive its own commands."""
    return [
        _acl("publishClientSend", f"v1/from/{hardware_id}/#"),
        _acl("subscribePattern", f"v1/to/{hardware_id}/#"),
        _acl("publishClientReceive", f"v1/to/{hardware_id}/#"),
        _acl("unsubscribePattern", f"v1/to/{hardware_id}/#"),
    ]


def admin_acls() -> list[JsonObject]:
    """The daemon's own account: everything, including `$CONTROL` and `$SYS` (which `#` skips)."""
    acls: list[JsonObject] = []
    for topic in ("$CONTROL/dynamic-security/#", "$SYS/#", "#"):
        acls += [
            _acl("publishClientSend", topic),
            _acl("publishClientReceive", topic),
            _acl("subscribePattern", topic),
            _acl("unsubscribePattern", topic),
        ]
    return acls


def _client_entry(username: str, password: PasswordHash | None, role: str) -> JsonObject:
    entry: JsonObject = {"username": username, "roles": [{"rolename": role, "priority": 0}]}
    if password is not None:
        entry |= {
            "password": password.hash_b64,
            "salt": password.salt_b64,
            "iterations": password.iterations,
        }
    return entry


def render_file(admin_password: PasswordHash, devices: Iterable[DeviceAccount]) -> str:
    """The whole dynsec file: the admin account plus one client and role per device."""
    clients = [_client_entry(ADMIN_USERNAME, admin_password, ADMIN_ROLE)]
    roles: list[JsonObject] = [{"rolename": ADMIN_ROLE, "acls": list(admin_acls())}]
    for device in devices:
        role = device_role(device.hardware_id)
        clients.append(_client_entry(device.hardware_id, device.password, role))
        roles.append({"rolename": role, "acls": list(device_acls(device.hardware_id))})
    document: JsonObject = {
        "clients": list(clients),
        "groups": [],
        "roles": list(roles),
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": False,
        },
    }
    return json.dumps(document, indent=1)


def create_device_commands(hardware_id: str, password: str | None) -> list[JsonObject]:
    """Control commands that (re)create a device's role and client from scratch.

    Deleting first makes this idempotent and, because `deleteClient` disconnects the client,
    regenerating credentials drops every session that used the old ones.
    """
    role = device_role(hardware_id)
    client: JsonObject = {
        "command": "createClient",
        "username": hardware_id,
        "roles": [{"rolename": role, "priority": 0}],
    }
    if password is not None:
        client["password"] = password
    return [
        *delete_device_commands(hardware_id),
        {"command": "createRole", "rolename": role, "acls": list(device_acls(hardware_id))},
        client,
    ]


def delete_device_commands(hardware_id: str) -> list[JsonObject]:
    """Control commands that remove a device's client (kicking its sessions) and role."""
    return [
        {"command": "deleteClient", "username": hardware_id},
        {"command": "deleteRole", "rolename": device_role(hardware_id)},
    ]


def disable_client_command(username: str) -> JsonObject:
    """The control command that disconnects every session of `username` and refuses its logins."""
    return {"command": "disableClient", "username": username}


def enable_client_command(username: str) -> JsonObject:
    """The control command that lets `username` log in again."""
    return {"command": "enableClient", "username": username}


# Errors dynsec reports for deleting what does not exist; harmless in create_device_commands.
_MISSING = ("Client not found", "Role not found")


def response_errors(response: JsonObject) -> list[str]:
    """The real errors in a `$CONTROL/.../response` document (ignoring deletes of missing items)."""
    problems: list[str] = []
    responses = response.get("responses")
    if not isinstance(responses, list):
        return ["malformed dynsec response"]
    for item in responses:
        if not isinstance(item, dict):
            problems.append("malformed dynsec response item")
            continue
        error = item.get("error")
        if isinstance(error, str) and error not in _MISSING:
            problems.append(f"{item.get('command')}: {error}")
    return problems
