"""Measure cold and warm invoke latency against the raw MQTT request/reply floor.

Starts its own cloud (`minicloud up` with the embedded broker) on a free
port of 127.0.0.1, with one no-op function, and prints p50 and p95 of:

- raw: a request/reply round trip between two MQTT clients on the same broker;
- warm: an invoke of the no-op function with a warm worker, client to client;
- cold: an invoke that has to start a worker (keep_warm_s = 0 retires the
  worker after each request, so the next one starts from zero).

Usage: python -m benchmarks.cold_warm [--count N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from minicloud.bus import connect
from minicloud.client import AsyncClient

NOOP = "def handler(event, context):\n    return None\n"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_cloud(functions: Path, port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "minicloud", "up", "--port", str(port), "--functions", str(functions), "--log-level", "WARNING"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )
    deadline = time.monotonic() + 30
    for line in process.stderr:
        if line.startswith("minicloud ready"):
            return process
        if time.monotonic() > deadline:
            break
    process.kill()
    raise RuntimeError("the cloud did not become ready within 30 s")


async def raw_round_trips(url: str, count: int) -> list[float]:
    """Time request/reply between two plain MQTT clients: the floor of any invoke."""
    async with connect(url) as server, connect(url) as client:
        await server.subscribe("bench/request")
        await client.subscribe("bench/reply")

        async def echo() -> None:
            async for message in server.messages():
                await server.publish("bench/reply", message.payload)

        echo_task = asyncio.create_task(echo())
        replies = client.messages()
        timings = []
        for index in range(count):
            started = time.perf_counter()
            await client.publish("bench/request", str(index).encode())
            await replies.__anext__()
            timings.append((time.perf_counter() - started) * 1000)
        echo_task.cancel()
    return timings


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


def describe(name: str, timings: list[float]) -> str:
    ordered = sorted(timings)
    p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
    return f"{name:6} p50 {statistics.median(ordered):7.2f} ms   p95 {p95:7.2f} ms   (n={len(ordered)})"


async def measure(url: str, count: int) -> None:
    await invoke_timings(url, "noop", 5)  # start the warm worker and the fork server's caches
    raw = await raw_round_trips(url, count)
    warm, warm_starts = await invoke_timings(url, "noop", count)
    # The retired worker must be gone before the next request, or it would be warm.
    cold, cold_starts = await invoke_timings(url, "noop-cold", count, settle_s=0.05)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()} {platform.release()}")
    print(describe("raw", raw))
    print(describe("warm", warm) + f"   warm starts: {warm_starts.count('warm')}")
    print(describe("cold", cold) + f"   cold starts: {cold_starts.count('cold')}")
    print(f"warm / raw p50 ratio: {statistics.median(warm) / statistics.median(raw):.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100, help="requests per measurement (default: 100)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as root:
        functions = Path(root)
        for name, keep_warm_s in (("noop", 900), ("noop-cold", 0)):
            folder = functions / name
            folder.mkdir()
            (folder / "main.py").write_text(NOOP)
            (folder / "function.toml").write_text(f'handler = "main.handler"\nkeep_warm_s = {keep_warm_s}\n')
        port = free_port()
        print(f"starting a cloud on 127.0.0.1:{port} ...", flush=True)
        cloud = start_cloud(functions, port)
        try:
            asyncio.run(measure(f"mqtt://127.0.0.1:{port}", args.count))
        finally:
            cloud.send_signal(signal.SIGTERM)
            cloud.wait(40)
    return 0


if __name__ == "__main__":
    sys.exit(main())
