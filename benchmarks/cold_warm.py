"""Measure cold and warm invoke latency against the raw MQTT request/reply floor.

Starts its own cloud (`minicloud up` with the embedded broker) on a free
port of 127.0.0.1, with one no-op function, and prints p50 and p95 of:

- raw: a request/reply round trip between two MQTT clients on the same
  broker, this process and `benchmarks.echo` in a process of its own;
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
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.cloud_process import Processes, free_port, start_cloud, start_echo, write_function
from benchmarks.measure import describe, invoke_timings, raw_round_trips

ECHO_PREFIX = "bench/cold-warm"


async def measure(url: str, count: int) -> None:
    await invoke_timings(url, "noop", 5)  # start the warm worker and the fork server's caches
    raw = await raw_round_trips(url, ECHO_PREFIX, count)
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

    processes = Processes()
    with tempfile.TemporaryDirectory() as root:
        functions = Path(root) / "functions"
        write_function(functions, "noop", keep_warm_s=900)
        write_function(functions, "noop-cold", keep_warm_s=0)
        port = free_port()
        print(f"starting a cloud on 127.0.0.1:{port} ...", flush=True)
        try:
            start_cloud(processes, functions, Path(root) / "cloud.log", port=port)
            url = f"mqtt://127.0.0.1:{port}"
            start_echo(processes, url, ECHO_PREFIX)
            asyncio.run(measure(url, args.count))
        finally:
            processes.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
