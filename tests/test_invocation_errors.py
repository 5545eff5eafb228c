"""What a caller gets when a handler fails, and that the pool keeps serving afterwards."""

from __future__ import annotations

import pytest

from cloudtest import pid_alive, wait_until, write_function
from minicloud.client import FunctionError, InvocationError

pytestmark = pytest.mark.both_brokers

FAILING = """
import datetime, math, os, sys, time

def handler(event, context):
    kind = event["kind"]
    if kind == "raise":
        raise ValueError("bad value 42")
    if kind == "set":
        return {1, 2}
    if kind == "datetime":
        return {"at": datetime.datetime(2026, 1, 1)}
    if kind == "nan":
        return math.nan
    if kind == "exit":
        sys.exit(3)
    if kind == "os_exit":
        os._exit(42)
    if kind == "hang":
        while True:
            pass
    if kind == "big":
        return "x" * (7 * 1024 * 1024)
    return {"pid": os.getpid()}
"""

PRINTER = """
def handler(event, context):
    for index in range(event["lines"]):
        print("line", index)
    return "printed"
"""

CONTEXT = """
import os

def handler(event, context):
    return {
        "aws_request_id": context.aws_request_id,
        "request_id": context.request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "identity": context.identity,
        "client_context": context.client_context,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "env": dict(os.environ),
    }
"""


@pytest.fixture
def failing_cloud(start_cloud, tmp_path):
    write_function(tmp_path, "failing", FAILING, "timeout_s = 1\n")
    write_function(tmp_path, "printer", PRINTER, "timeout_s = 30\n")
    write_function(tmp_path, "context", CONTEXT, "memory_mb = 256\n[env]\nCOLOR = \"blue\"\n")
    return start_cloud(tmp_path, env={"MINICLOUD_TEST_SECRET": "do-not-leak"})


@pytest.mark.timeout(60)
def test_handler_exception_is_function_error(failing_cloud):
    with failing_cloud.client() as client:
        with pytest.raises(FunctionError) as raised:
            client.invoke("failing", {"kind": "raise"})
        error = raised.value.error
        assert error["type"] == "ValueError"
        assert error["message"] == "bad value 42"
        assert error["source"] == "function"
        assert any("main.py" in frame for frame in error["stack"])
        assert raised.value.report["function"] == "failing"

        # The same worker serves the next request.
        assert client.invoke("failing", {"kind": "ok"}).report["start"] == "warm"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["set", "datetime", "nan"])
def test_unencodable_result_is_serialization_error(failing_cloud, kind):
    with failing_cloud.client() as client:
        with pytest.raises(InvocationError) as raised:
            client.invoke("failing", {"kind": kind})
        assert raised.value.error_type == "SerializationError"
        assert raised.value.error["source"] == "platform"
        assert client.invoke("failing", {"kind": "ok"}).report["start"] == "warm"


@pytest.mark.timeout(60)
def test_oversized_result_is_payload_too_large(failing_cloud):
    with failing_cloud.client() as client:
        with pytest.raises(InvocationError) as raised:
            client.invoke("failing", {"kind": "big"})
        assert raised.value.error_type == "PayloadTooLarge"


@pytest.mark.timeout(60)
def test_timeout_kills_the_worker(failing_cloud):
    import time

    with failing_cloud.client() as client:
        pid = client.invoke("failing", {"kind": "ok"}).result["pid"]
        started = time.monotonic()
        with pytest.raises(InvocationError) as raised:
            client.invoke("failing", {"kind": "hang"})
        elapsed = time.monotonic() - started
        assert raised.value.error_type == "Timeout"
        assert elapsed < 2.0
        # SIGKILL was sent when the reply went out; the exit follows within moments.
        wait_until(lambda: not pid_alive(pid), timeout=2, message=f"worker {pid} to be killed")

        after = client.invoke("failing", {"kind": "ok"})
        assert after.result["pid"] != pid


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("kind", "status"), [("exit", "3"), ("os_exit", "42")])
def test_exit_in_handler_is_worker_crashed(failing_cloud, kind, status):
    with failing_cloud.client() as client:
        pid = client.invoke("failing", {"kind": "ok"}).result["pid"]
        with pytest.raises(InvocationError) as raised:
            client.invoke("failing", {"kind": kind})
        assert raised.value.error_type == "WorkerCrashed"
        assert f"status {status}" in raised.value.error["message"]

        after = client.invoke("failing", {"kind": "ok"})
        assert after.result["pid"] != pid


@pytest.mark.timeout(60)
def test_endless_printing_is_captured_and_capped(failing_cloud):
    with failing_cloud.client() as client:
        result = client.invoke("printer", {"lines": 200_000})
        assert result.result == "printed"
        lines = client.logs("printer", limit=2000)
    output = [line for line in lines if line["stream"] == "stdout"]
    assert output, "no captured output"
    assert all(line["request_id"] == result.id for line in output)
    assert all(line["line"].startswith("line ") for line in output)
    marker = lines[-1]
    assert marker.get("truncated") is True
    assert "lines were dropped" in marker["line"]


@pytest.mark.timeout(60)
def test_context_and_environment(failing_cloud):
    with failing_cloud.client() as client:
        outcome = client.invoke("context", {})
    context = outcome.result
    assert context["aws_request_id"] == outcome.id
    assert context["request_id"] == outcome.id
    assert context["function_name"] == "context"
    assert context["function_version"] == "$LATEST"
    assert context["invoked_function_arn"].endswith(":function:context")
    assert context["memory_limit_in_mb"] == "256"
    assert context["log_group_name"] == "/aws/lambda/context"
    assert context["log_stream_name"]
    assert context["identity"] is None
    assert context["client_context"] is None
    assert 0 < context["remaining_ms"] <= 3000

    env = context["env"]
    assert env["COLOR"] == "blue"
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "context"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert "MINICLOUD_TEST_SECRET" not in env
    assert "MINICLOUD_BROKER" not in env
