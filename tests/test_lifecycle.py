"""Cold starts, warm reuse, scale to zero and drain, with real workers and a real broker."""

from __future__ import annotations

import concurrent.futures
import time

import psutil
import pytest

from cloudtest import pid_alive, wait_until, write_function

pytestmark = pytest.mark.both_brokers

COUNTER = """
import os
count = 0

def handler(event, context):
    global count
    count += 1
    return {"count": count, "pid": os.getpid()}
"""

SLOW = """
import os, time

def handler(event, context):
    time.sleep(event.get("seconds", 0.3))
    return {"pid": os.getpid()}
"""

# A worker that takes a second to exit after SIGTERM, so the test can see it draining.
SLOW_TO_DRAIN = """
import os, signal, sys, time

def _on_term(signum, frame):
    time.sleep(1.0)
    sys.exit(0)

signal.signal(signal.SIGTERM, _on_term)

def handler(event, context):
    return {"pid": os.getpid()}
"""


@pytest.mark.timeout(60)
def test_cold_then_warm_reuses_worker(start_cloud, tmp_path):
    write_function(tmp_path, "counter", COUNTER)
    cloud = start_cloud(tmp_path)
    with cloud.client() as client:
        first = client.invoke("counter", {})
        second = client.invoke("counter", {})

    assert first.report["start"] == "cold"
    assert "init_ms" in first.report
    assert second.report["start"] == "warm"
    assert "init_ms" not in second.report
    assert first.result["pid"] == second.result["pid"]
    assert second.result["count"] == 2  # module globals survive between warm invocations
    assert first.report["worker_id"] == second.report["worker_id"]


@pytest.mark.timeout(60)
def test_idle_worker_scales_to_zero(start_cloud, tmp_path):
    write_function(tmp_path, "counter", COUNTER, "keep_warm_s = 1\n")
    cloud = start_cloud(tmp_path)
    with cloud.client() as client:
        first = client.invoke("counter", {})
        pid = first.result["pid"]
        assert psutil.pid_exists(pid)

        wait_until(lambda: not pid_alive(pid), timeout=10, message=f"worker {pid} to exit after keep_warm_s")
        state = client.ls()["functions"]["counter"]
        assert state["workers"] == []

        again = client.invoke("counter", {})
    assert again.report["start"] == "cold"
    assert again.result["pid"] != pid
    assert again.result["count"] == 1


@pytest.mark.timeout(60)
def test_burst_starts_at_most_max_concurrency(start_cloud, tmp_path):
    write_function(tmp_path, "slow", SLOW, "max_concurrency = 3\ntimeout_s = 10\n")
    cloud = start_cloud(tmp_path)
    max_workers_seen = 0
    with cloud.client() as client, concurrent.futures.ThreadPoolExecutor(10) as pool:
        futures = [pool.submit(client.invoke, "slow", {"seconds": 0.4}) for _ in range(10)]
        while not all(future.done() for future in futures):
            max_workers_seen = max(max_workers_seen, len(cloud.worker_pids()))
            time.sleep(0.02)
        results = [future.result() for future in futures]

    workers = {result.report["worker_id"] for result in results}
    assert len(results) == 10
    assert len(workers) <= 3
    assert max_workers_seen <= 3
    assert sum(result.report["start"] == "cold" for result in results) == len(workers)


@pytest.mark.timeout(60)
def test_min_warm_starts_workers_at_deploy(start_cloud, tmp_path):
    write_function(tmp_path, "counter", COUNTER, "min_warm = 2\nkeep_warm_s = 0.5\n")
    cloud = start_cloud(tmp_path)
    with cloud.client() as client:
        wait_until(lambda: _count_state(client, "counter", "idle") == 2, timeout=15, message="two warm workers")
        time.sleep(1.5)  # past keep_warm_s: min_warm keeps them anyway
        assert _count_state(client, "counter", "idle") == 2
        result = client.invoke("counter", {})
    assert result.report["start"] == "warm"


@pytest.mark.timeout(60)
def test_request_during_drain_is_served(start_cloud, tmp_path):
    write_function(tmp_path, "drainer", SLOW_TO_DRAIN, "keep_warm_s = 0.5\n")
    cloud = start_cloud(tmp_path)
    with cloud.client() as client:
        old_pid = client.invoke("drainer", {}).result["pid"]
        wait_until(lambda: _count_state(client, "drainer", "draining") == 1, timeout=10, message="the worker to drain")

        result = client.invoke("drainer", {})
        assert result.result["pid"] != old_pid
        assert result.report["start"] == "cold"
    wait_until(lambda: not pid_alive(old_pid), timeout=10, message="the draining worker to exit")


@pytest.mark.timeout(60)
def test_deploy_update_gives_new_code(start_cloud, tmp_path):
    folder = write_function(tmp_path, "versioned", "def handler(event, context):\n    return 1\n")
    cloud = start_cloud(tmp_path)
    with cloud.client() as client:
        assert client.invoke("versioned").result == 1
        (folder / "main.py").write_text("def handler(event, context):\n    return 2\n")
        assert client.deploy(str(folder))["status"] == "updated"
        assert client.invoke("versioned").result == 2


@pytest.mark.timeout(60)
def test_scale_max_zero_throttles(start_cloud, tmp_path):
    write_function(tmp_path, "counter", COUNTER)
    cloud = start_cloud(tmp_path)
    from minicloud.client import InvocationError

    with cloud.client() as client:
        client.invoke("counter")
        client.scale("counter", max_concurrency=0)
        with pytest.raises(InvocationError) as raised:
            client.invoke("counter")
        assert raised.value.error_type == "Throttled"
        assert "minicloud scale counter --max" in raised.value.error["message"]

        client.scale("counter", max_concurrency=2)
        assert client.invoke("counter").result["count"] == 1


def _count_state(client, function: str, state: str) -> int:
    workers = client.ls()["functions"][function]["workers"]
    return sum(1 for worker in workers if worker["state"] == state)


@pytest.mark.timeout(60)
def test_exit_during_init_fails_fast_without_fork_loop(start_cloud, tmp_path):
    write_function(tmp_path, "dies", "import os\nos._exit(1)\n\ndef handler(event, context):\n    return 1\n")
    cloud = start_cloud(tmp_path)
    from minicloud.client import InvocationError

    with cloud.client() as client:
        with pytest.raises(InvocationError) as raised:
            client.invoke("dies", timeout=5)
        assert raised.value.error_type == "WorkerCrashed"
        assert "init phase" in raised.value.error["message"]
        time.sleep(1.0)
        assert client.ls()["functions"]["dies"]["workers"] == []
    starts = [line for line in cloud.log_lines if "of dies starting" in line]
    assert len(starts) == 1


@pytest.mark.timeout(60)
def test_removed_function_busy_worker_exits(start_cloud, tmp_path):
    write_function(tmp_path, "slow", SLOW, "timeout_s = 10\n")
    cloud = start_cloud(tmp_path)
    with cloud.client() as client, concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(client.invoke, "slow", {"seconds": 1.0})
        wait_until(lambda: _count_state(client, "slow", "busy") == 1, timeout=10, message="a busy worker")
        client.control("remove", {"function": "slow"})
        outcome = running.result(timeout=10)
        assert "slow" not in client.ls()["functions"]
    wait_until(lambda: not pid_alive(outcome.result["pid"]), timeout=5, message="the removed function's worker to exit")


@pytest.mark.timeout(60)
def test_shutdown_starts_no_min_warm_workers(start_cloud, tmp_path):
    write_function(tmp_path, "counter", COUNTER, "min_warm = 1\n")
    cloud = start_cloud(tmp_path)
    with cloud.client() as client:
        wait_until(lambda: _count_state(client, "counter", "idle") == 1, timeout=10, message="a warm worker")
    assert cloud.stop() == 0
    starts = [line for line in cloud.log_lines if "of counter starting" in line]
    assert len(starts) == 1
    assert "no workers left" in cloud.log_text()


@pytest.mark.timeout(60)
def test_pools_state_is_current_after_warm_invocation(start_cloud, tmp_path):
    import asyncio
    import json

    from minicloud import protocol
    from minicloud.bus import connect

    write_function(tmp_path, "counter", COUNTER)
    cloud = start_cloud(tmp_path)
    with cloud.client() as client:
        for _ in range(3):
            client.invoke("counter")
            time.sleep(0.3)

    async def read_state() -> dict:
        async with connect(cloud.url) as connection:
            await connection.subscribe(protocol.Topics().pools_state)
            async for message in connection.messages():
                return json.loads(message.payload)

    state = asyncio.run(asyncio.wait_for(read_state(), 10))
    (worker,) = state["functions"]["counter"]["workers"]
    assert worker["state"] == "idle"
    assert worker["invocations"] == 3
