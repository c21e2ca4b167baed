"""Device broker accounts: issuing credentials, and revoking them so that they never work again.

The order of every change is what makes revocation airtight:
1. the store first (durably): a broker restart rebuilds dynsec and the CRL from it, so a failure
   further down cannot bring old credentials back;
2. the CRL, when certificates were revoked, and a confirmed Mosquitto reload: a client certificate
   carries only the hardware id, which the next step gives to a new dynsec client, so the old
   certificate must be refused at the TLS handshake before then;
3. dynsec last: `deleteClient` disconnects every session of the old identity, then the new client
   (with a new password, or none for a certificate) is created.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.model import CommunicationType, Device, JsonObject, MqttProtocol
from gateway.mqtt import dynsec, pki
from gateway.mqtt.authority import Authority
from gateway.mqtt.broker import BrokerUnavailableError
from gateway.mqtt.endpoint import BrokerAdmin, BrokerAdminError
from gateway.store.store import IssuedCertificateRecord, Store

LOG = logging.getLogger("gateway.accounts")

# What `device_credentials.secret` holds for a certificate device: the serial, not the certificate.
CERTIFICATE_SECRET_PREFIX = "x509:"


class BrokerChangeError(Exception):
    """The store has the change but the broker could not be told; it applies on the next start."""


class MqttsUnavailableError(Exception):
    """This gateway does not issue client certificates (no MQTTS listener it controls)."""


@dataclass(frozen=True, slots=True)
class CertificateIssuer:
    """The CA and the way to make the managed Mosquitto re-read the CRL."""

    authority: Authority
    reload: Callable[[], Awaitable[None]]


class DeviceAccounts:
    """Credentials of devices in the store, the broker's dynsec and the CRL, kept in step."""

    def __init__(
        self,
        store: Store,
        admin: BrokerAdmin,
        issuer: CertificateIssuer | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._admin = admin
        self._issuer = issuer
        self._clock = clock

    @property
    def ca_certificate(self) -> str | None:
        """The CA devices must trust (PEM), when MQTTS is available."""
        return None if self._issuer is None else self._issuer.authority.ca.certificate_pem

    async def issue_password(self, device: Device, hardware_id: str) -> str:
        """A new password for the device; its previous credentials stop working."""
        password = secrets.token_urlsafe(32)
        secret = dynsec.hash_password(password, os.urandom(dynsec.SALT_BYTES)).encode()
        revokes_certificate = await self._had_certificate(device)
        await self._store.set_credential(
            device_id=device.id,
            protocol=MqttProtocol.MQTT.value,
            username=hardware_id,
            secret=secret,
            communication_type=CommunicationType.MQTT_V1_PLAINTEXT,
        )
        if revokes_certificate:
            await self._publish_crl()
        await self._apply(dynsec.create_device_commands(hardware_id, password))
        return password

    async def issue_certificate(self, device: Device, hardware_id: str) -> pki.IssuedCertificate:
        """A new client certificate (CN = hardware id); the device's previous credentials stop working."""
        if self._issuer is None:
            raise MqttsUnavailableError
        issued = self._issuer.authority.issue_device(hardware_id, self._now())
        await self._store.set_credential(
            device_id=device.id,
            protocol=MqttProtocol.MQTTS.value,
            username=hardware_id,
            secret=f"{CERTIFICATE_SECRET_PREFIX}{issued.serial:x}",
            certificate=IssuedCertificateRecord(
                serial=issued.serial, hardware_id=hardware_id, not_after=issued.not_after.timestamp()
            ),
            communication_type=CommunicationType.MQTT_V1_TLS,
        )
        # Always: even a device that never had a certificate may share a hardware id with a
        # deleted one whose certificates must stay refused.
        await self._publish_crl()
        await self._apply(dynsec.create_device_commands(hardware_id, None))
        return issued

    async def delete(self, device: Device) -> bool:
        """Delete the device and its data; its credentials stop working. False if it was gone.

        Raises HasChildrenError (from the store) while other devices run on it. Only a device with
        credentials of its own has a broker account: a Lua device shares its UCM's hardware id,
        and deleting it must not disconnect the UCM.
        """
        credential = await self._store.credential(device.id)
        if not await self._store.delete_device(device.id):
            return False
        if credential is None:
            return True
        if credential.protocol == MqttProtocol.MQTTS.value:
            await self._publish_crl()
        await self._apply(dynsec.delete_device_commands(credential.username))
        return True

    async def _had_certificate(self, device: Device) -> bool:
        credential = await self._store.credential(device.id)
        return credential is not None and credential.protocol == MqttProtocol.MQTTS.value

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def _publish_crl(self) -> None:
        if self._issuer is None:
            # External broker: no CRL of ours to publish; a certificate device cannot exist here.
            return
        self._issuer.authority.write_crl(await self._store.revoked_certificates(self._clock()), self._now())
        try:
            await self._issuer.reload()
        except BrokerUnavailableError as exc:
            raise BrokerChangeError(str(exc)) from None

    async def _apply(self, commands: list[JsonObject]) -> None:
        try:
            await self._admin.apply(commands)
        except BrokerAdminError as exc:
            raise BrokerChangeError(str(exc)) from None
