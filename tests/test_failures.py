"""Failure modes with real crashes, hangs, memory hogs and broker outages."""

from __future__ import annotations

import concurrent.futures
import signal
import threading
import time

import pytest

from cloudtest import pid_alive, wait_until, write_function
from minicloud.client import FunctionError, InvocationError

TROUBLE = """
import ctypes, os, subprocess, sys, time

def handler(event, context):
    kind = event["kind"]
    if kind == "ok":
        return {"pid": os.getpid()}
    if kind == "print-forever":
        child = subprocess.Popen(["sleep", "60"])
        print("child", child.pid, flush=True)
        with open("/tmp/minicloud-test-child-%d" % os.getpid(), "w") as note:
            note.write(str(child.pid))
        while True:
            print("spam " * 20)
    if kind == "segfault":
        ctypes.string_at(0)
    if kind == "memory-error":
        raise MemoryError("no room")
    if kind == "hog":
        block = bytearray(300 * 1024 * 1024)
        for index in range(0, len(block), 4096):
            block[index] = 1
        time.sleep(5)
        return "survived"
    if kind == "bytes":
        return b"raw"
    if kind == "near-limit":
        return "x" * (6 * 1024 * 1024 - 1024)
    if kind == "flood":
        chunk = "y" * 1023 + "\\n"
        for _ in range(50 * 1024):
            sys.stdout.write(chunk)
        return "flooded"
    raise ValueError(kind)
"""


@pytest.fixture
def cloud(start_cloud, tmp_path):
    write_function(tmp_path, "trouble", TROUBLE, "timeout_s = 1\nmemory_mb = 128\n")
    write_function(tmp_path, "patient", TROUBLE, "timeout_s = 30\nmemory_mb = 128\n")
    return start_cloud(tmp_path)


@pytest.mark.timeout(60)
def test_timeout_while_printing_kills_worker_and_children(cloud):
    with cloud.client() as client:
        started = time.monotonic()
        with pytest.raises(InvocationError) as raised:
            client.invoke("trouble", {"kind": "print-forever"})
        assert raised.value.error_type == "Timeout"
        assert time.monotonic() - started < 2.0
        pid = raised.value.report["pid"]
        wait_until(lambda: not pid_alive(pid), timeout=2, message="the worker to die")
        child_pid = int(open(f"/tmp/minicloud-test-child-{pid}").read())
        wait_until(lambda: not pid_alive(child_pid), timeout=2, message="its child to die")

        after = client.invoke("trouble", {"kind": "ok"})
        assert after.result["pid"] != pid


@pytest.mark.timeout(60)
def test_segfault_is_worker_crashed(cloud):
    with cloud.client() as client:
        started = time.monotonic()
        with pytest.raises(InvocationError) as raised:
            client.invoke("trouble", {"kind": "segfault"})
        assert time.monotonic() - started < 1.0 + 0.5
        assert raised.value.error_type == "WorkerCrashed"
        assert "SIGSEGV" in raised.value.error["message"]
        assert client.invoke("trouble", {"kind": "ok"}).result["pid"]


@pytest.mark.timeout(60)
def test_memory_error_is_function_error(cloud):
    with cloud.client() as client:
        with pytest.raises(FunctionError) as raised:
            client.invoke("trouble", {"kind": "memory-error"})
        assert raised.value.error_type == "MemoryError"
        assert client.invoke("trouble", {"kind": "ok"}).report["start"] == "warm"


@pytest.mark.timeout(60)
def test_memory_limit_is_out_of_memory(cloud):
    with cloud.client() as client:
        with pytest.raises(InvocationError) as raised:
            client.invoke("patient", {"kind": "hog"})
        assert raised.value.error_type == "OutOfMemory"
        assert "memory_mb of 128" in raised.value.error["message"]
        pid = raised.value.report["pid"]
        wait_until(lambda: not pid_alive(pid), timeout=2, message="the worker to die")
        assert client.invoke("patient", {"kind": "ok"}).result["pid"] != pid


@pytest.mark.timeout(60)
def test_bytes_result_is_serialization_error(cloud):
    with cloud.client() as client:
        with pytest.raises(InvocationError) as raised:
            client.invoke("trouble", {"kind": "bytes"})
        assert raised.value.error_type == "SerializationError"


@pytest.mark.timeout(60)
def test_result_near_limit_arrives_intact(cloud):
    with cloud.client() as client:
        outcome = client.invoke("patient", {"kind": "near-limit"})
    assert len(outcome.result) == 6 * 1024 * 1024 - 1024
    assert set(outcome.result) == {"x"}


@pytest.mark.timeout(60)
def test_50mb_of_output_is_capped(cloud):
    with cloud.client() as client:
        outcome = client.invoke("patient", {"kind": "flood"})
        assert outcome.result == "flooded"
        lines = client.logs("patient", limit=2000)
    assert lines[-1].get("truncated") is True
    assert sum(len(line["line"]) for line in lines) < 2 * 1024 * 1024


@pytest.mark.timeout(60)
def test_queue_bound_throttles_at_once(start_cloud, tmp_path):
    write_function(tmp_path, "slow", "import time\n\ndef handler(event, context):\n    time.sleep(1)\n    return 1\n",
                   "max_concurrency = 1\nqueue_size = 2\ntimeout_s = 5\n")
    cloud = start_cloud(tmp_path)
    outcomes = []

    def invoke(client):
        started = time.monotonic()
        try:
            client.invoke("slow")
            outcomes.append(("ok", time.monotonic() - started))
        except InvocationError as exc:
            outcomes.append((exc.error_type, time.monotonic() - started))

    with cloud.client() as client, concurrent.futures.ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda _: invoke(client), range(6)))
    kinds = sorted(kind for kind, _ in outcomes)
    assert kinds == ["Throttled"] * 3 + ["ok"] * 3
    assert all(seconds < 0.5 for kind, seconds in outcomes if kind == "Throttled")


INIT_FAILURES = {
    "import": ("import no_such_package_here\n\ndef handler(event, context):\n    return 1\n", "No module named"),
    "syntax": ("import helper\n\ndef handler(event, context):\n    return 1\n", "SyntaxError"),
    "name": ("def other(event, context):\n    return 1\n", "handler"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", sorted(INIT_FAILURES))
def test_init_failure_is_import_module_error(start_cloud, tmp_path, case):
    folder = write_function(tmp_path, "broken", "def handler(event, context):\n    return 1\n")
    cloud = start_cloud(tmp_path)
    code, words = INIT_FAILURES[case]
    # Deploy checks the handler statically, so break the code after the deploy.
    (folder / "main.py").write_text(code)
    (folder / "helper.py").write_text("def oops(:\n")
    with cloud.client() as client:
        with pytest.raises(InvocationError) as raised:
            client.invoke("broken")
        assert raised.value.error_type == "ImportModuleError"
        assert words in raised.value.error["message"]

        # Within the back-off the next request fails at once, starting no worker.
        with pytest.raises(InvocationError) as again:
            client.invoke("broken")
        assert again.value.error_type == "ImportModuleError"
        assert "init failed 1 times" in again.value.error["message"]
        state = client.ls()["functions"]["broken"]
        assert state["broken"] is True
        assert state["workers"] == []
    starts = [line for line in cloud.log_lines if "of broken starting" in line]
    assert len(starts) == 1


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_slow_init_is_init_timeout(start_cloud, tmp_path):
    write_function(tmp_path, "sleepy", "import time\ntime.sleep(30)\n\ndef handler(event, context):\n    return 1\n", "timeout_s = 20\n")
    cloud = start_cloud(tmp_path)
    with cloud.client() as client:
        started = time.monotonic()
        with pytest.raises(InvocationError) as raised:
            client.invoke("sleepy")
        elapsed = time.monotonic() - started
    assert raised.value.error_type == "InitTimeout"
    assert 9.5 < elapsed < 12


@pytest.mark.timeout(90)
def test_broker_restart_is_survived(start_cloud, tmp_path):
    write_function(tmp_path, "slow", "import time\n\ndef handler(event, context):\n    time.sleep(event['s'])\n    return 'done'\n", "timeout_s = 10\n")
    cloud = start_cloud(tmp_path)
    outcome: dict = {}
    with cloud.client() as client:
        client.invoke("slow", {"s": 0})

        def in_flight() -> None:
            try:
                outcome["reply"] = client.invoke("slow", {"s": 1.5})
            except Exception as exc:
                outcome["error"] = exc

        caller = threading.Thread(target=in_flight)
        caller.start()
        time.sleep(0.5)
        cloud.process.send_signal(signal.SIGUSR1)  # the broker is down for 3 s
        time.sleep(0.5)

        # A request during the outage fails fast, or, when the client has not
        # noticed the outage yet, is sent again and served after it: it never hangs.
        started = time.monotonic()
        try:
            during = client.invoke("slow", {"s": 0})
        except Exception as exc:
            assert time.monotonic() - started < 1.0
            assert "not connected" in str(exc)
        else:
            assert during.result == "done"
            assert time.monotonic() - started < 15

        # The in-flight invocation finished during the outage; its reply arrives afterwards.
        caller.join(20)
        assert "error" not in outcome, outcome
        assert outcome["reply"].result == "done"

        after = wait_until(lambda: _try_invoke(client), timeout=15, message="the cloud to serve again")
        assert after.result == "done"
    assert "restarting the embedded broker" in cloud.log_text()
    assert cloud.log_text().count("connected to mqtt://") >= 2


def _try_invoke(client):
    try:
        return client.invoke("slow", {"s": 0})
    except Exception:
        return None
