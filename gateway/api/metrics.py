"""`/metrics`: Prometheus text exposition of ingest, store and broker counters."""

from __future__ import annotations

from aiohttp import web

from gateway.api.services import SERVICES


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics (no token: counters only, nothing secret)."""
    services = request.app[SERVICES]
    ingest = services.ingest
    store = services.store.stats
    lines = [
        "# TYPE gateway_mqtt_messages_received_total counter",
        f"gateway_mqtt_messages_received_total {ingest.received}",
        "# TYPE gateway_mqtt_messages_accepted_total counter",
        f"gateway_mqtt_messages_accepted_total {ingest.accepted}",
        "# TYPE gateway_mqtt_messages_dropped_total counter",
    ]
    lines += [
        f'gateway_mqtt_messages_dropped_total{{reason="{_escape(reason)}"}} {count}'
        for reason, count in sorted(ingest.dropped.items())
    ]
    lines.append("# TYPE gateway_manifest_mismatches_total counter")
    lines += [
        f'gateway_manifest_mismatches_total{{section="{section}"}} {count}'
        for section, count in sorted(ingest.flagged.items())
    ]
    lines += [
        "# TYPE gateway_store_items_committed_total counter",
        f"gateway_store_items_committed_total {store.committed}",
        "# TYPE gateway_store_batches_failed_total counter",
        f"gateway_store_batches_failed_total {store.failed_batches}",
        "# TYPE gateway_store_queue_depth gauge",
        f"gateway_store_queue_depth {services.store.queue_depth}",
        "# TYPE gateway_devices_connected gauge",
        f"gateway_devices_connected {services.presence.online_count()}",
        "# TYPE gateway_device_connects_total counter",
        f"gateway_device_connects_total {services.presence.connects}",
        "# TYPE gateway_broker_restarts_total counter",
        f"gateway_broker_restarts_total {services.broker_restarts()}",
        "# TYPE gateway_streams_open gauge",
        f"gateway_streams_open {services.live.subscriptions}",
        "# TYPE gateway_streams_dropped_total counter",
        f"gateway_streams_dropped_total {services.live.dropped}",
        "# TYPE gateway_streams_refused_total counter",
        f"gateway_streams_refused_total {services.live.refused}",
    ]
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")
