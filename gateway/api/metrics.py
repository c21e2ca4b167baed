"""`GET /metrics` (no token): Prometheus exposition of ingest, store, broker, API and command counters.

Each application has its own `CollectorRegistry` (never prometheus_client's global one: tests run
several applications in one process). The counters live where they are counted (ingest, the store,
presence, the broker supervisor, commands, the request middleware here); `GatewayCollector` reads
them at scrape time, so nothing is copied on the hot paths. The series:

- `gateway_build_info{version}`;
- `gateway_mqtt_messages_received_total`, `..._accepted_total`, `..._dropped_total{reason}`: device
  messages into ingest, queued for the store, and dropped with why; `gateway_ingest_connected`;
- `gateway_manifest_mismatches_total{section}`: values kept although their manifest disagrees;
- `gateway_store_items_committed_total` (stored), `gateway_store_items_dropped_total{reason}`
  (`write_failed`, `unknown_device`), `gateway_store_batches_total`,
  `gateway_store_batches_failed_total`, `gateway_store_queue_depth`,
  `gateway_store_batch_duration_seconds` (histogram), `gateway_database_size_bytes` (file + WAL);
- `gateway_devices_connected` (identities with an open broker connection),
  `gateway_device_connects_total`;
- `gateway_broker_up`, `gateway_broker_restarts_total`;
- `gateway_streams_open`, `gateway_streams_dropped_total`, `gateway_streams_refused_total`;
- `gateway_api_requests_total{method,route,status}`: `route` is the route's template
  (`/api/v3/devices/{device}`), or `unmatched`, so that the series stay few whatever is requested;
- `gateway_command_executions_total{state}`: executions by how they ended;
- `process_*`: prometheus_client's process collector (CPU, memory, start time, file descriptors).
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterator

from aiohttp import hdrs, web
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from gateway import __version__
from gateway.api.health import check_broker
from gateway.api.render import Handler
from gateway.api.services import Services
from gateway.model import ExecutionState

UNMATCHED_ROUTE = "unmatched"
# Methods of unmatched requests are clients' free text: anything else is counted as OTHER.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Always exposed, at 0 until one happens, so that rates and alerts work from the start.
FINAL_STATES = (ExecutionState.SUCCESS, ExecutionState.ERROR, ExecutionState.TIMEOUT)


class RequestCounts:
    """API requests by (method, route template, status)."""

    def __init__(self) -> None:
        self.counts: collections.Counter[tuple[str, str, str]] = collections.Counter()

    def add(self, request: web.Request, status: int) -> None:
        """Count `request`, answered with `status`."""
        resource = request.match_info.route.resource
        if resource is None:  # no route matched (404, 405)
            method = request.method if request.method in KNOWN_METHODS else "OTHER"
            route = UNMATCHED_ROUTE
        else:
            method, route = request.method, resource.canonical
        self.counts[(method, route, str(status))] += 1


def _bucket_bound(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(bound)


class GatewayCollector:
    """Reads the gateway's live counters at scrape time (a prometheus_client custom collector)."""

    def __init__(self, services: Services, requests: RequestCounts) -> None:
        self._services = services
        self._requests = requests

    def collect(self) -> Iterator[Metric]:
        """Every gateway series, as they are right now."""
        services = self._services
        yield InfoMetricFamily("gateway_build", "The gateway's version.", value={"version": __version__})
        yield from self._ingest()
        yield from self._store()
        presence = services.presence
        yield GaugeMetricFamily(
            "gateway_devices_connected",
            "Device identities with at least one open broker connection.",
            value=presence.online_count(),
        )
        yield CounterMetricFamily(
            "gateway_device_connects", "Device connections the broker accepted.", value=presence.connects
        )
        broker = services.broker
        up = check_broker(broker, services.ingest).problem is None
        yield GaugeMetricFamily(
            "gateway_broker_up",
            "1 while the managed Mosquitto runs (an external one: while ingest is connected to it).",
            value=int(up),
        )
        yield CounterMetricFamily(
            "gateway_broker_restarts",
            "Times the managed Mosquitto was restarted after it died.",
            value=0 if broker is None else broker.restarts,
        )
        live = services.live
        yield GaugeMetricFamily("gateway_streams_open", "Open WebSocket streams.", value=live.subscriptions)
        yield CounterMetricFamily(
            "gateway_streams_dropped", "Streams closed because the client fell behind.", value=live.dropped
        )
        yield CounterMetricFamily(
            "gateway_streams_refused", "Streams refused at the cap on open streams.", value=live.refused
        )
        events = services.events
        yield GaugeMetricFamily(
            "gateway_event_streams_open", "Open site event streams.", value=events.subscriptions
        )
        yield CounterMetricFamily(
            "gateway_event_streams_dropped",
            "Site event streams closed because the client fell behind.",
            value=events.dropped,
        )
        yield CounterMetricFamily(
            "gateway_timeline_events_dropped",
            "Connectivity events not recorded: their queue was full or their write failed.",
            value=0 if services.recorder is None else services.recorder.dropped,
        )
        requests = CounterMetricFamily(
            "gateway_api_requests",
            "HTTP requests by method, route template and status.",
            labels=("method", "route", "status"),
        )
        for (method, route, status), count in sorted(self._requests.counts.items()):
            requests.add_metric((method, route, status), count)
        yield requests
        outcomes = CounterMetricFamily(
            "gateway_command_executions",
            "Command executions by the state they ended in.",
            labels=("state",),
        )
        counted = services.commands.outcomes
        for state in sorted({*FINAL_STATES, *counted}):
            outcomes.add_metric((state.value,), counted[state])
        yield outcomes

    def _ingest(self) -> Iterator[Metric]:
        ingest = self._services.ingest
        yield CounterMetricFamily(
            "gateway_mqtt_messages_received", "Device messages ingest received.", value=ingest.received
        )
        yield CounterMetricFamily(
            "gateway_mqtt_messages_accepted",
            "Device messages decoded and queued for the store.",
            value=ingest.accepted,
        )
        dropped = CounterMetricFamily(
            "gateway_mqtt_messages_dropped", "Device messages dropped, by reason.", labels=("reason",)
        )
        for reason, count in sorted(ingest.dropped.items()):
            dropped.add_metric((reason,), count)
        yield dropped
        flagged = CounterMetricFamily(
            "gateway_manifest_mismatches",
            "Values stored although their device's manifest does not declare or allow them.",
            labels=("section",),
        )
        for section, count in sorted(ingest.flagged.items()):
            flagged.add_metric((section,), count)
        yield flagged
        yield GaugeMetricFamily(
            "gateway_ingest_connected",
            "1 while ingest holds a subscribed connection to the broker.",
            value=int(ingest.connected),
        )

    def _store(self) -> Iterator[Metric]:
        store = self._services.store
        stats = store.stats
        yield CounterMetricFamily(
            "gateway_store_items_committed", "Device messages stored.", value=stats.committed
        )
        lost = CounterMetricFamily(
            "gateway_store_items_dropped",
            "Queued device messages not stored: their batch failed, or their device was deleted.",
            labels=("reason",),
        )
        lost.add_metric(("write_failed",), stats.dropped_write_failed)
        lost.add_metric(("unknown_device",), stats.skipped_unknown_device)
        yield lost
        yield CounterMetricFamily("gateway_store_batches", "Batches committed.", value=stats.batches)
        yield CounterMetricFamily(
            "gateway_store_batches_failed", "Batches whose transaction failed.", value=stats.failed_batches
        )
        yield GaugeMetricFamily(
            "gateway_store_queue_depth", "Device messages waiting for the writer.", value=store.queue_depth
        )
        yield HistogramMetricFamily(
            "gateway_store_batch_duration_seconds",
            "Time each batch's transaction took, committed or failed (lock wait included).",
            buckets=[(_bucket_bound(bound), count) for bound, count in stats.batch_seconds_buckets],
            sum_value=stats.batch_seconds_sum,
        )
        yield GaugeMetricFamily(
            "gateway_database_size_bytes",
            "The database file and its write-ahead log, in bytes.",
            value=store.file_size(),
        )


METRICS_REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)
REQUEST_COUNTS = web.AppKey("request_counts", RequestCounts)


def install(app: web.Application, services: Services) -> None:
    """Give `app` its own registry and request counter (and `count_requests` something to count)."""
    registry = CollectorRegistry()
    requests = RequestCounts()
    registry.register(GatewayCollector(services, requests))
    ProcessCollector(registry=registry)
    app[METRICS_REGISTRY] = registry
    app[REQUEST_COUNTS] = requests


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every answered request by route template and status (the outermost middleware)."""
    counts = request.app[REQUEST_COUNTS]
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # what the error middleware lets through (redirects)
        counts.add(request, exc.status)
        raise
    counts.add(request, response.status)
    return response


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics (no token: counters only, nothing secret), in the format the scraper accepts."""
    encoder, content_type = choose_encoder(request.headers.get(hdrs.ACCEPT, ""))
    body = encoder(request.app[METRICS_REGISTRY])
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: content_type})
