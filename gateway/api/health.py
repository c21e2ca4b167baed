"""`GET /api/health` (no token): are the store, the broker and ingest working, for monitoring.

200 `{"status": "ok", "checks": {"store": {"ok": true}, "broker": {...}, "ingest": {...}}}` when every
check passes; 503 with the same document, `"status": "unhealthy"` and a `detail` on each failing
check otherwise. It is not the error envelope: the body reports on the gateway, not on the request,
and monitors act on the status code.

- store: a trivial read answers within STORE_DEADLINE_S, and the writer runs and its latest batch
  committed (a full or failing disk fails every batch);
- broker: the managed Mosquitto child is running; with an external broker, ingest is connected to it;
- ingest: its MQTT connection to the broker is up and subscribed.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from typing import Literal, NotRequired, TypedDict

from aiohttp import web

from gateway.api.render import json_response
from gateway.api.services import SERVICES, Services
from gateway.mqtt.broker import ManagedBroker
from gateway.mqtt.ingest import Ingest
from gateway.store.store import Store

STORE_DEADLINE_S = 2.0


class CheckDocument(TypedDict):
    """One part's verdict in the health document."""

    ok: bool
    detail: NotRequired[str]


class HealthDocument(TypedDict):
    """The body of `GET /api/health`, and the `health` part of `enapter-gateway status`."""

    status: Literal["ok", "unhealthy"]
    checks: dict[str, CheckDocument]


@dataclass(frozen=True, slots=True)
class Check:
    """One part of the gateway and what is wrong with it (None: nothing)."""

    name: str
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class Health:
    """Every check, in a fixed order."""

    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        """True when no check found a problem."""
        return all(check.problem is None for check in self.checks)

    def document(self) -> HealthDocument:
        """The JSON document (pure)."""
        checks: dict[str, CheckDocument] = {}
        for check in self.checks:
            verdict: CheckDocument = {"ok": check.problem is None}
            if check.problem is not None:
                verdict["detail"] = check.problem
            checks[check.name] = verdict
        return {"status": "ok" if self.ok else "unhealthy", "checks": checks}


async def check_store(store: Store, deadline: float = STORE_DEADLINE_S) -> Check:
    """A read within `deadline` seconds, and a writer that is not failing."""
    try:
        async with asyncio.timeout(deadline):
            await store.ping()
    except TimeoutError:
        return Check("store", f"a trivial read did not answer within {deadline:g} s")
    except (sqlite3.Error, ValueError) as exc:  # aiosqlite raises ValueError once closed
        return Check("store", f"a trivial read failed: {exc}")
    return Check("store", store.writer_problem())


def check_broker(broker: ManagedBroker | None, ingest: Ingest) -> Check:
    """The managed child runs; an external broker counts as up while ingest is connected to it."""
    if broker is None:
        if ingest.connected:
            return Check("broker")
        return Check("broker", _with_reason("the external broker is not reachable", ingest.last_error))
    if broker.running.is_set():
        return Check("broker")
    return Check("broker", _with_reason("mosquitto is not running", broker.down_reason))


def check_ingest(ingest: Ingest) -> Check:
    """Ingest holds a subscribed connection to the broker."""
    if ingest.connected:
        return Check("ingest")
    return Check("ingest", _with_reason("ingest is not connected to the broker", ingest.last_error))


def _with_reason(problem: str, reason: str) -> str:
    return f"{problem}: {reason}" if reason else problem


async def check(services: Services, *, store_deadline: float = STORE_DEADLINE_S) -> Health:
    """Run every check."""
    return Health(
        (
            await check_store(services.store, store_deadline),
            check_broker(services.broker, services.ingest),
            check_ingest(services.ingest),
        )
    )


async def health(request: web.Request) -> web.Response:
    """GET /api/health: 200 when healthy, 503 naming what is not (no token: nothing secret)."""
    result = await check(request.app[SERVICES])
    response = json_response(result.document(), 200 if result.ok else 503)
    # A cached "ok" would hide an outage from the next probe.
    response.headers["Cache-Control"] = "no-store"
    return response
