"""Benchmark minicloud against the raw MQTT floor, on the embedded broker and on Mosquitto.

For each broker it starts its own cloud on a free port of 127.0.0.1. It
measures warm invokes interleaved with raw MQTT request/reply round trips,
cold starts, and throughput beside the raw bus's rate. It also reads the
idle CPU of a cloud and of a warm worker, and a warm worker's memory. It prints a Markdown
table with each figure, its target and whether the target is met.

With --guard it exits with status 1 when a figure is past its guard limit,
a bound 3 to 50 times looser than the target, so that only a gross
regression fails a CI run. Without --guard it exits 0 whatever the figures.

Usage: python -m benchmarks [--count N] [--idle-seconds S] [--quick] [--guard] [--mosquitto-nodelay]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks import measure, resources
from benchmarks.cloud_process import MOSQUITTO, Processes, free_port, start_cloud, start_echo, start_mosquitto, write_function
from benchmarks.report import Row, at_most, guard_failures, latency_figure, markdown_table, under
from minicloud.client import AsyncClient

CORES = os.cpu_count() or 1
IN_FLIGHT = 64
IDLE_SETTLE_S = 1.0

# Guard limits, set far past the targets so that a loaded CI machine
# should stay under them. They are meant to catch gross regressions, such
# as a lost TCP_NODELAY (about 40 ms a round trip), a worker that
# busy-waits, or a worker that imports far more than the runtime.
GUARD_WARM_OVER_RAW = at_most(5, "")
GUARD_COLD_P50 = at_most(150, "ms p50")
GUARD_IDLE_CLOUD_CPU = at_most(5, "%")
GUARD_IDLE_WORKER_CPU = at_most(5, "%")
GUARD_WORKER_USS = at_most(40, "MB")


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def write_functions(root: Path) -> None:
    write_function(root, "noop", keep_warm_s=900)
    write_function(root, "noop-cold", keep_warm_s=0)
    write_function(root, "noop-pool", keep_warm_s=900, min_warm=CORES, max_concurrency=CORES)


async def warm_up(url: str) -> tuple[int, int]:
    """Start the no-op worker, wait for the pool's workers; return the PIDs of the no-op worker and the pool's first."""
    await measure.invoke_timings(url, "noop", 5)
    async with AsyncClient(url) as client:
        pool = await measure.wait_for_workers(client, "noop-pool", CORES)
        (noop,) = await measure.wait_for_workers(client, "noop", 1)
    return noop, pool[0]


def bench_broker(broker: str, processes: Processes, folder: Path, args: argparse.Namespace, broker_url: str | None) -> list[Row]:
    """Run every measurement on one broker; `broker_url` None means the cloud's embedded broker."""
    functions = folder / "functions"
    write_functions(functions)
    port = None if broker_url else free_port()
    url = broker_url or f"mqtt://127.0.0.1:{port}"
    progress(f"{broker}: starting a cloud on {url}")
    cloud = start_cloud(processes, functions, folder / "cloud.log", port=port, broker_url=broker_url)
    prefix = f"bench/{uuid.uuid4().hex[:8]}"
    echo = start_echo(processes, url, prefix)
    noop_pid, _ = asyncio.run(warm_up(url))

    progress(f"{broker}: {args.count} raw round trips at QoS 1 and at QoS 0, interleaved with {args.count} warm invokes")
    timings = asyncio.run(measure.interleaved(url, prefix, "noop", args.count))
    raw, raw_qos0, warm, warm_starts = timings["raw"], timings["raw_qos0"], timings["warm"], timings["starts"]
    ratio = statistics.median(warm) / statistics.median(raw)

    cold_count = max(10, args.count // 4)
    progress(f"{broker}: {cold_count} cold starts")
    cold, cold_starts = asyncio.run(measure.cold_starts(url, "noop-cold", cold_count))

    progress(f"{broker}: throughput, {CORES} workers, {IN_FLIGHT} requests in flight, {args.throughput_seconds:g} s each")
    invoke_rate = asyncio.run(measure.invoke_rate(url, "noop-pool", IN_FLIGHT, args.throughput_seconds))
    raw_rate = asyncio.run(measure.raw_rate(url, prefix, IN_FLIGHT, args.throughput_seconds))
    processes.stop(echo)

    # A second cloud with no warm workers, idle while the first cloud's warm
    # worker idles too, so both readings share one window.
    idle_functions = folder / "idle-functions"
    write_function(idle_functions, "noop-idle", keep_warm_s=0)
    idle_port = None if broker_url else free_port()
    idle_cloud = start_cloud(
        processes, idle_functions, folder / "idle-cloud.log", port=idle_port, broker_url=broker_url, namespace="idle",
    )
    time.sleep(IDLE_SETTLE_S)
    progress(f"{broker}: idle CPU over {args.idle_seconds:g} s (a cloud with no warm workers, and a warm worker)")
    cpu = resources.idle_cpu_percent([idle_cloud.pid], [noop_pid], args.idle_seconds)
    uss_mb, rss_mb = resources.memory_mb(noop_pid)
    processes.stop(idle_cloud)
    processes.stop(cloud)

    return [
        Row(broker, "raw MQTT request/reply, QoS 0", latency_figure(raw_qos0)),
        Row(broker, "raw MQTT request/reply, QoS 1", latency_figure(raw)),
        Row(broker, "warm invoke, no-op", latency_figure(warm) + f", {warm_starts.count('warm')} warm"),
        Row(broker, "warm / raw QoS 1, p50", f"{ratio:.2f}", at_most(1.5, ""), ratio, GUARD_WARM_OVER_RAW),
        Row(broker, "cold start, no-op", latency_figure(cold) + f", {cold_starts.count('cold')} cold",
            at_most(15, "ms p50"), statistics.median(cold), GUARD_COLD_P50),
        Row(broker, f"throughput, {CORES} workers", f"{invoke_rate:,.0f} invokes/s"),
        Row(broker, "raw bus rate, same concurrency", f"{raw_rate:,.0f} pairs/s ({invoke_rate / raw_rate:.2f} of it for invokes)"),
        Row(broker, "idle cloud CPU, no warm workers", f"{cpu[idle_cloud.pid]:.3f} % of a core", under(0.5, "%"),
            cpu[idle_cloud.pid], GUARD_IDLE_CLOUD_CPU),
        Row(broker, "idle warm worker CPU", f"{cpu[noop_pid]:.3f} % of a core", under(0.1, "%"), cpu[noop_pid],
            GUARD_IDLE_WORKER_CPU),
        Row(broker, "idle warm worker USS", f"{uss_mb:.1f} MB", at_most(8, "MB"), uss_mb, GUARD_WORKER_USS),
        Row(broker, "idle warm worker RSS", f"{rss_mb:.1f} MB"),
    ]


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{platform.machine()}, {CORES} cores ({model}), Python {platform.python_version()}, {platform.system()} {platform.release()}"


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, help="interleaved raw/warm pairs; cold starts are a quarter of it, at least 10 (default: 200, 40 with --quick)")
    parser.add_argument("--idle-seconds", type=float, help="window of the idle CPU readings, in seconds (default: 20, 5 with --quick, 2 with --quick --guard)")
    parser.add_argument("--mosquitto-nodelay", action="store_true", help="start Mosquitto with set_tcp_nodelay true (default: its own default, Nagle's algorithm on)")
    parser.add_argument("--quick", action="store_true", help="smaller counts and shorter windows, for a smoke run")
    parser.add_argument("--guard", action="store_true", help="exit with status 1 when a figure is past its guard limit (a gross regression)")
    args = parser.parse_args()
    if args.count is None:
        args.count = 40 if args.quick else 200
    if args.idle_seconds is None:
        if args.quick and args.guard:
            args.idle_seconds = 2.0
        elif args.quick:
            args.idle_seconds = 5.0
        else:
            args.idle_seconds = 20.0
    args.throughput_seconds = 2.0 if args.quick else 5.0
    if args.count < 1 or args.idle_seconds <= 0:
        parser.error("--count must be at least 1 and --idle-seconds more than 0")
    return args


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    args = parse_arguments()
    # aiomqtt warns on the "mqtt" logger whenever more than 10 publishes
    # await their PUBACK, which the throughput runs do on purpose.
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    processes = Processes()
    rows: list[Row] = []
    skipped = []
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="minicloud-bench-") as root:
            rows += bench_broker("embedded amqtt", processes, Path(root) / "embedded", args, None)
            if MOSQUITTO is None:
                skipped.append("mosquitto: skipped: mosquitto not installed")
            else:
                folder = Path(root) / "mosquitto"
                folder.mkdir()
                broker_url = start_mosquitto(processes, folder, tcp_nodelay=args.mosquitto_nodelay)
                label = "mosquitto, TCP_NODELAY" if args.mosquitto_nodelay else "mosquitto"
                rows += bench_broker(label, processes, folder, args, broker_url)
    except KeyboardInterrupt:
        progress("interrupted; stopping every process this benchmark started")
        return 130
    finally:
        processes.stop_all()

    print(f"machine: {machine()}")
    print(f"command: python -m benchmarks {' '.join(sys.argv[1:])}".rstrip())
    print(f"total time: {time.monotonic() - started:.0f} s\n")
    print(markdown_table(rows))
    for line in skipped:
        print(line)
    not_met = [f"{row.broker}: {row.measurement}" for row in rows if row.status == "not met"]
    print("\ntargets not met: " + ("; ".join(not_met) if not_met else "none"))
    if not args.guard:
        return 0

    failures = guard_failures(rows)
    for failure in failures:
        print(f"guard failed: {failure}", file=sys.stderr)
    if failures:
        return 1
    print("guard: every figure is within its guard limit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
