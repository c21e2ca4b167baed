"""What health checks and metrics read, on real parts: the store's signals on a real SQLite file, the
request counter in a real aiohttp server, the status client on a real unix socket."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.api.control import DaemonUnreachableError, read_status
from gateway.api.health import Check, check_store
from gateway.api.metrics import REQUEST_COUNTS, RequestCounts, count_requests
from gateway.model import LogEntry, LogSeverity
from gateway.store.store import BATCH_SECONDS_BOUNDS, Store
from tests.integration.test_store import add_device, ingested, raw, telemetry


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "gateway.db"


async def test_batch_durations_are_counted_in_cumulative_buckets(db_path: Path) -> None:
    async with Store.open(db_path, max_batch=2) as store:
        assert store.stats.batch_seconds_buckets[-1] == (float("inf"), 0)
        device = await add_device(store)
        for i in range(5):
            store.enqueue(ingested(device, telemetry(float(i), {"i": i})))
        await store.flush()
        stats = store.stats
    buckets = stats.batch_seconds_buckets
    assert [bound for bound, _ in buckets] == [*BATCH_SECONDS_BOUNDS, float("inf")]
    counts = [count for _, count in buckets]
    assert counts == sorted(counts)  # cumulative
    assert counts[-1] == stats.batches == 3  # 2 + 2 + 1
    assert 0 < stats.batch_seconds_sum < 10


def size_of(path: Path) -> int:
    return path.stat().st_size


async def test_file_size_counts_the_database_and_its_wal(db_path: Path) -> None:
    async with Store.open(db_path) as store:
        device = await add_device(store)
        store.enqueue(ingested(device, telemetry(1.0, {"payload": "x" * 100_000})))
        await store.flush()
        wal = db_path.with_name(db_path.name + "-wal")
        assert size_of(wal) > 100_000
        assert store.file_size() == size_of(db_path) + size_of(wal)


async def test_the_store_check_follows_the_writer_and_the_reader(db_path: Path) -> None:
    async with Store.open(db_path) as store:
        assert await check_store(store) == Check("store")
        device = await add_device(store)
        raw(
            db_path,
            "CREATE TRIGGER fail_boom BEFORE INSERT ON device_logs WHEN NEW.message = 'boom'"
            " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END",
        )
        store.enqueue(ingested(device, LogEntry(1.0, "boom", LogSeverity.INFO, True)))
        await store.flush()
        failing = await check_store(store)
        assert failing.problem == "the latest batch failed: disk on fire"
        # One good batch and the writer is healthy again.
        store.enqueue(ingested(device, LogEntry(2.0, "fine", LogSeverity.INFO, True)))
        await store.flush()
        assert await check_store(store) == Check("store")
    closed = await check_store(store)
    assert closed.problem is not None
    assert closed.problem.startswith("a trivial read failed")


@contextlib.asynccontextmanager
async def counted_app() -> AsyncIterator[tuple[TestClient[web.Request, web.Application], RequestCounts]]:
    async def thing(request: web.Request) -> web.Response:
        if request.match_info["id"] == "missing":
            raise web.HTTPNotFound()
        return web.Response(text="ok")

    app = web.Application(middlewares=[count_requests])
    counts = app[REQUEST_COUNTS] = RequestCounts()
    app.router.add_get("/things/{id}", thing)
    async with TestClient(TestServer(app)) as client:
        yield client, counts


async def test_requests_are_counted_by_route_template_and_status() -> None:
    async with counted_app() as (client, counts):
        for path in ("/things/1", "/things/2", "/things/missing", "/elsewhere"):
            await client.get(path)
        await client.post("/things/1")
        await client.request("PROPFIND", "/coffee")
    assert counts.counts == {
        ("GET", "/things/{id}", "200"): 2,
        ("GET", "/things/{id}", "404"): 1,
        ("GET", "unmatched", "404"): 1,
        ("POST", "unmatched", "405"): 1,
        ("OTHER", "unmatched", "404"): 1,
    }


async def test_status_of_a_socket_that_is_not_a_gateway(tmp_path: Path) -> None:
    async def other(request: web.Request) -> web.Response:
        return web.json_response(["something else"])

    app = web.Application()
    app.router.add_get("/status", other)
    runner = web.AppRunner(app)
    await runner.setup()
    path = tmp_path / "control.sock"
    try:
        await web.UnixSite(runner, str(path)).start()
        with pytest.raises(DaemonUnreachableError, match="not a gateway status"):
            await read_status(path)
    finally:
        await runner.cleanup()
    with pytest.raises(DaemonUnreachableError, match="the gateway is not running"):
        await read_status(tmp_path / "nothing.sock")
