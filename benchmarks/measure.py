"""Latency and throughput measurements over the bus: raw MQTT request/reply and minicloud invokes.

Every time is client to client, in milliseconds, taken with
time.perf_counter() in the benchmark's process.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from typing import Any

from minicloud.bus import Connection, connect
from minicloud.client import AsyncClient

WORKER_WAIT_S = 10.0


def percentile(values: list[float], fraction: float) -> float:
    """Return the nearest-rank percentile, `fraction` in (0, 1]."""
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * fraction + 0.5) - 1)]


def describe(name: str, timings: list[float]) -> str:
    return f"{name:6} p50 {statistics.median(timings):7.2f} ms   p95 {percentile(timings, 0.95):7.2f} ms   (n={len(timings)})"


class RawRequester:
    """A plain MQTT client that sends requests to `benchmarks.echo` and matches each reply by payload.

    `qos` is the QoS of the request, of the reply and of the subscription to it.
    """

    def __init__(self, connection: Connection, prefix: str, *, qos: int = 1) -> None:
        self._connection = connection
        self._qos = qos
        # The echo server replies at QoS 0 only to requests on its QoS 0 topic.
        suffix = "0" if qos == 0 else ""
        self._request_topic = f"{prefix}/request{suffix}"
        self._reply_topic = f"{prefix}/reply{suffix}"
        self._numbers = itertools.count()
        self._pending: dict[bytes, asyncio.Future[None]] = {}
        self._reader: asyncio.Task | None = None

    async def start(self) -> None:
        await self._connection.subscribe(self._reply_topic, qos=self._qos)
        self._reader = asyncio.create_task(self._read())

    def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()

    async def request(self) -> None:
        payload = str(next(self._numbers)).encode()
        future = asyncio.get_running_loop().create_future()
        self._pending[payload] = future
        try:
            await self._connection.publish(self._request_topic, payload, qos=self._qos)
            await asyncio.wait_for(future, WORKER_WAIT_S)
        finally:
            self._pending.pop(payload, None)

    async def _read(self) -> None:
        async for message in self._connection.messages():
            future = self._pending.get(message.payload)
            if future is not None and not future.done():
                future.set_result(None)


async def timed(call: Any) -> float:
    started = time.perf_counter()
    await call
    return (time.perf_counter() - started) * 1000


async def raw_round_trips(url: str, prefix: str, count: int) -> list[float]:
    """Time `count` request/reply round trips to the echo server listening on `prefix`."""
    async with connect(url) as connection:
        raw = RawRequester(connection, prefix)
        await raw.start()
        try:
            return [await timed(raw.request()) for _ in range(count)]
        finally:
            raw.close()


async def invoke_timings(url: str, function: str, count: int, *, settle_s: float = 0.0) -> tuple[list[float], list[str]]:
    timings, starts = [], []
    async with AsyncClient(url) as client:
        for _ in range(count):
            started = time.perf_counter()
            outcome = await client.invoke(function, {})
            timings.append((time.perf_counter() - started) * 1000)
            starts.append(outcome.report["start"])
            if settle_s:
                await asyncio.sleep(settle_s)
    return timings, starts


async def interleaved(url: str, prefix: str, function: str, count: int) -> dict[str, list]:
    """Alternate raw round trips at QoS 1 and at QoS 0 with warm invokes, `count` of each, so all see the same load.

    The order within each group of three rotates, so no kind always runs
    right after the same other kind. Returns a dict with the timings under
    "raw" (QoS 1), "raw_qos0" and "warm", and each invoke's reported start
    ("warm" or "cold") under "starts".
    """
    results: dict[str, list] = {"raw": [], "raw_qos0": [], "warm": [], "starts": []}
    kinds = ["raw", "raw_qos0", "warm"]
    async with connect(url) as connection, connect(url) as connection_qos0, AsyncClient(url) as client:
        raw = RawRequester(connection, prefix)
        raw_qos0 = RawRequester(connection_qos0, prefix, qos=0)
        await raw.start()
        await raw_qos0.start()
        try:
            for index in range(count):
                shift = index % len(kinds)
                for kind in kinds[shift:] + kinds[:shift]:
                    if kind == "raw":
                        results["raw"].append(await timed(raw.request()))
                    elif kind == "raw_qos0":
                        results["raw_qos0"].append(await timed(raw_qos0.request()))
                    else:
                        started = time.perf_counter()
                        outcome = await client.invoke(function, {})
                        results["warm"].append((time.perf_counter() - started) * 1000)
                        results["starts"].append(outcome.report["start"])
        finally:
            raw.close()
            raw_qos0.close()
    return results


async def worker_pids(client: AsyncClient, function: str, state: str | None = None) -> list[int]:
    """Return the PIDs of the function's workers, of every state or only of `state`, as `ls` lists them."""
    pools = (await client.ls())["functions"]
    workers = pools.get(function, {}).get("workers", [])
    return [worker["pid"] for worker in workers if worker.get("pid") and (state is None or worker["state"] == state)]


async def wait_for_workers(client: AsyncClient, function: str, count: int, *, state: str | None = "idle", timeout_s: float = 30.0) -> list[int]:
    """Wait until the function has exactly `count` workers (idle ones unless `state` is None)."""
    deadline = time.monotonic() + timeout_s
    while True:
        pids = await worker_pids(client, function, state)
        if len(pids) == count:
            return pids
        if time.monotonic() > deadline:
            raise RuntimeError(f"function {function} has {len(pids)} workers, not {count}, after {timeout_s:g} s")
        await asyncio.sleep(0.005)


async def cold_starts(url: str, function: str, count: int) -> tuple[list[float], list[str]]:
    """Time `count` invokes of a keep_warm_s = 0 function, each after its previous worker is gone."""
    timings, starts = [], []
    async with AsyncClient(url) as client:
        for _ in range(count):
            await wait_for_workers(client, function, 0, state=None)
            started = time.perf_counter()
            outcome = await client.invoke(function, {})
            timings.append((time.perf_counter() - started) * 1000)
            starts.append(outcome.report["start"])
    return timings, starts


async def _rate(send_batch: Any, batch: int, seconds: float) -> float:
    completed = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        await send_batch(batch)
        completed += batch
    return completed / (time.perf_counter() - started)


async def invoke_rate(url: str, function: str, batch: int, seconds: float) -> float:
    """Return invokes per second, sent in batches of `batch` requests in flight at once."""
    async with AsyncClient(url) as client:

        async def send_batch(size: int) -> None:
            await asyncio.gather(*(client.invoke(function, {}) for _ in range(size)))

        await send_batch(batch)  # warm-up
        return await _rate(send_batch, batch, seconds)


async def raw_rate(url: str, prefix: str, batch: int, seconds: float) -> float:
    """Return raw request/reply pairs per second to the echo server, `batch` in flight at once."""
    async with connect(url) as connection:
        raw = RawRequester(connection, prefix)
        await raw.start()
        try:

            async def send_batch(size: int) -> None:
                await asyncio.gather(*(raw.request() for _ in range(size)))

            await send_batch(batch)  # warm-up
            return await _rate(send_batch, batch, seconds)
        finally:
            raw.close()
