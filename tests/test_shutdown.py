"""No worker outlives the cloud: SIGTERM drains, SIGKILL still takes every worker and the fork server down."""

from __future__ import annotations

import signal
import threading
import time

import psutil
import pytest

from cloudtest import pid_alive, wait_until, write_function

# Starts a child process that would sleep for a minute, to check that
# processes a handler started die with its worker.
SPAWNER = """
import os, subprocess, time

def handler(event, context):
    child = subprocess.Popen(["sleep", "60"])
    time.sleep(event.get("seconds", 0))
    return {"pid": os.getpid(), "child": child.pid}
"""


@pytest.mark.timeout(60)
def test_sigkill_of_cloud_kills_workers_and_children(start_cloud, tmp_path):
    write_function(tmp_path, "spawner", SPAWNER, "max_concurrency = 3\n")
    cloud = start_cloud(tmp_path)
    with cloud.client() as client:
        outcome = client.invoke("spawner", {})
    worker_pid, child_pid = outcome.result["pid"], outcome.result["child"]
    assert pid_alive(worker_pid)
    assert pid_alive(child_pid)
    workers = cloud.worker_pids()
    assert worker_pid in workers
    fork_server = cloud.fork_server_pid()
    assert fork_server is not None
    spare = wait_until(cloud.spare_pid, timeout=5, message="the spare worker")

    cloud.process.kill()
    cloud.process.wait(5)
    started = time.monotonic()
    every_pid = workers | {child_pid, fork_server, spare}
    wait_until(lambda: not any(pid_alive(pid) for pid in every_pid), timeout=5, message="the fork server and workers to exit")
    assert time.monotonic() - started < 5
    # No zombie stays either: the fork server reaps its workers, and init reaps the fork server.
    wait_until(
        lambda: not any(psutil.pid_exists(pid) for pid in every_pid),
        timeout=10,
        message="the fork server and workers to be reaped",
    )


@pytest.mark.timeout(90)
def test_sigterm_drains_in_flight_then_exits(start_cloud, tmp_path):
    write_function(tmp_path, "spawner", SPAWNER, "timeout_s = 10\n")
    cloud = start_cloud(tmp_path)
    outcome: dict = {}

    def invoke() -> None:
        with cloud.client() as client:
            outcome["result"] = client.invoke("spawner", {"seconds": 2})

    caller = threading.Thread(target=invoke)
    caller.start()
    wait_until(lambda: cloud.worker_pids(), timeout=10, message="a worker to start")
    workers = cloud.worker_pids()
    time.sleep(0.5)  # the invocation is running now

    status = cloud.stop(signal.SIGTERM)
    caller.join(15)
    assert status == 0
    assert outcome["result"].result["pid"] in workers  # the in-flight invocation finished
    assert not any(pid_alive(pid) for pid in workers)
    assert not pid_alive(outcome["result"].result["child"])
    assert "no workers left" in cloud.log_text()


@pytest.mark.timeout(60)
def test_worker_killed_from_outside_is_replaced(start_cloud, tmp_path):
    write_function(tmp_path, "spawner", SPAWNER, "timeout_s = 10\n")
    cloud = start_cloud(tmp_path)
    from minicloud.client import InvocationError

    with cloud.client() as client:
        first = client.invoke("spawner", {})
        outcome: dict = {}

        def invoke() -> None:
            try:
                client.invoke("spawner", {"seconds": 5})
            except InvocationError as exc:
                outcome["error"] = exc

        caller = threading.Thread(target=invoke)
        caller.start()
        time.sleep(0.5)
        psutil.Process(first.result["pid"]).send_signal(signal.SIGKILL)
        caller.join(5)
        assert outcome["error"].error_type == "WorkerCrashed"
        assert "SIGKILL" in outcome["error"].error["message"]
        assert not pid_alive(first.result["child"])

        again = client.invoke("spawner", {})
        assert again.result["pid"] != first.result["pid"]


@pytest.mark.timeout(60)
def test_fork_server_killed_cloud_serves_next_invoke(start_cloud, tmp_path):
    write_function(tmp_path, "spawner", SPAWNER, "timeout_s = 10\n")
    cloud = start_cloud(tmp_path)
    from minicloud.client import InvocationError

    with cloud.client() as client:
        first = client.invoke("spawner", {})
        old_fork_server = cloud.fork_server_pid()
        assert old_fork_server is not None
        outcome: dict = {}

        def invoke() -> None:
            try:
                client.invoke("spawner", {"seconds": 5})
            except InvocationError as exc:
                outcome["error"] = exc

        caller = threading.Thread(target=invoke)
        caller.start()
        time.sleep(0.5)  # the invocation is running now
        psutil.Process(old_fork_server).send_signal(signal.SIGKILL)
        caller.join(5)

        # Its workers die with it, and so do the children of their handlers.
        assert outcome["error"].error_type == "WorkerCrashed"
        assert "SIGKILL" in outcome["error"].error["message"]
        wait_until(lambda: not pid_alive(first.result["pid"]), timeout=5, message="the old worker to exit")
        wait_until(lambda: not pid_alive(first.result["child"]), timeout=5, message="the handler's child to exit")
        wait_until(lambda: not psutil.pid_exists(old_fork_server), timeout=5, message="the old fork server to be reaped")

        again = client.invoke("spawner", {})
    assert again.result["pid"] != first.result["pid"]
    new_fork_server = cloud.fork_server_pid()
    assert new_fork_server not in (None, old_fork_server)
    assert again.result["pid"] in cloud.worker_pids()
    assert f"fork server pid {old_fork_server} exited" in cloud.log_text()


@pytest.mark.timeout(60)
def test_spare_killed_next_cold_start_works(start_cloud, tmp_path):
    write_function(tmp_path, "spawner", SPAWNER, "keep_warm_s = 0\n")
    cloud = start_cloud(tmp_path)
    spare = wait_until(cloud.spare_pid, timeout=5, message="the spare worker")
    psutil.Process(spare).send_signal(signal.SIGKILL)
    wait_until(lambda: not psutil.pid_exists(spare), timeout=5, message="the spare worker to be reaped")

    with cloud.client() as client:
        outcome = client.invoke("spawner", {})
    assert outcome.report["start"] == "cold"
    assert outcome.result["pid"] != spare
    # The fork server forks a new spare after each spawn.
    new_spare = wait_until(cloud.spare_pid, timeout=5, message="a new spare worker")
    assert new_spare != spare
    # The spare was no worker yet, so its death is no crash.
    assert f"pid {spare}" not in cloud.log_text()
