"""Fixed cloud data, a fixed clock and a fake CloudClient for the UI tests."""

from __future__ import annotations

import socket
from typing import Any

from minicloud.client import FunctionError, InvokeResult

NOW = 1_800_000_000.0


def fixed_clock() -> float:
    return NOW


def config(name: str, memory_mb: int = 128) -> dict[str, Any]:
    return {
        "name": name,
        "handler": "main.handler",
        "memory_mb": memory_mb,
        "timeout_s": 3.0,
        "keep_warm_s": 900.0,
        "max_concurrency": 10,
        "min_warm": 0,
        "queue_size": 100,
        "env": [],
        "directory": f"/srv/functions/{name}",
    }


def worker(worker_id: str, pid: int, state: str, since: float, invocations: int) -> dict[str, Any]:
    return {"id": worker_id, "pid": pid, "state": state, "since": since, "invocations": invocations, "cpu_ms": 12.5 * invocations, "rss_mb": 18.7}


def pools_state(hello_workers: list[dict[str, Any]] | None = None, queued: int = 0) -> dict[str, Any]:
    if hello_workers is None:
        hello_workers = [worker("hello-1-1", 4101, "idle", NOW - 65, 7), worker("hello-1-2", 4102, "busy", NOW - 3, 2)]
    return {
        "ts": NOW,
        "functions": {
            "cpu-burn": {"config": config("cpu-burn", 1769), "queued": 0, "workers": [worker("cpu-burn-1-1", 4201, "starting", NOW - 1, 0)]},
            "hello": {"config": config("hello"), "queued": queued, "workers": hello_workers},
            "sleep-io": {"config": config("sleep-io"), "queued": 0, "workers": []},
        },
    }


def energy_state(watts: float = 0.25, joules: float = 12.5) -> dict[str, Any]:
    return {
        "ts": NOW,
        "watts": watts,
        "joules": joules,
        "by_function": {
            "hello": {"joules": 0.0042, "cpu_ms": 3.4, "invocations": 9},
            "cpu-burn": {"joules": 0.84, "cpu_ms": 200.0, "invocations": 1},
            "sleep-io": {"joules": 0.0, "cpu_ms": 0.0, "invocations": 0},
        },
        "baseline": {"joules": 310.0, "watts": 3.1},
        "model": {},
        "measured": None,
    }


def report(request_id: str, function: str = "hello", start: str = "warm", duration_ms: float = 0.3, queue_ms: float = 0.02) -> dict[str, Any]:
    body = {
        "request_id": request_id,
        "function": function,
        "worker_id": f"{function}-1-1",
        "pid": 4101,
        "start": start,
        "queue_ms": queue_ms,
        "duration_ms": duration_ms,
        "billed_ms": 1,
        "cpu_ms": 0.29,
        "max_rss_mb": 18.7,
        "memory_mb": 128,
        "energy_j": 0.00085,
    }
    if start == "cold":
        body["init_ms"] = 1.1
    return body


def event(request_id: str, function: str = "hello", start: str = "warm", ok: bool = True, error_type: str | None = None, duration_ms: float = 0.3, queue_ms: float = 0.02) -> dict[str, Any]:
    body: dict[str, Any] = {"id": request_id, "function": function, "ok": ok, "report": report(request_id, function, start, duration_ms, queue_ms)}
    if error_type is not None:
        body["error_type"] = error_type
    return body


def sample_events() -> list[dict[str, Any]]:
    return [
        event("00000001-cold", start="cold", duration_ms=0.4, queue_ms=27.0),
        event("00000002-warm", duration_ms=0.2),
        event("00000003-warm", duration_ms=0.3),
        event("00000004-fail", ok=False, error_type="ValueError", duration_ms=0.5),
        event("00000005-burn", function="cpu-burn", start="cold", duration_ms=202.0, queue_ms=14.0),
        {"id": "00000006-throttled", "function": "hello", "ok": False, "error_type": "Throttled", "report": None},
    ]


class FakeCloudClient:
    """Records every request and returns canned results."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, Any]] = []
        self.invocations = 0
        self.closed = False

    async def invoke(self, function: str, event: Any) -> InvokeResult:
        self.requests.append(("invoke", (function, event)))
        if function == "broken":
            raise FunctionError({"type": "ValueError", "message": "bad input", "source": "function"}, report(f"r{self.invocations}"), "r")
        self.invocations += 1
        start = "cold" if self.invocations == 1 else "warm"
        return InvokeResult(f"r{self.invocations}", {"message": f"hello, {event.get('name')}!"}, report(f"r{self.invocations}", function, start))

    async def deploy(self, path: str) -> dict[str, Any]:
        self.requests.append(("deploy", path))
        return {"function": "new", "status": "deployed"}

    async def scale(self, function: str, *, min_warm: int | None, max_concurrency: int | None) -> dict[str, Any]:
        self.requests.append(("scale", (function, min_warm, max_concurrency)))
        return {"config": {"min_warm": min_warm, "max_concurrency": max_concurrency}}

    async def logs(self, function: str, *, limit: int) -> list[dict[str, Any]]:
        self.requests.append(("logs", function))
        return [{"ts": NOW, "request_id": "00000002-warm", "stream": "stdout", "line": "greeting x"}]

    async def energy(self) -> dict[str, Any]:
        self.requests.append(("energy", None))
        return energy_state()

    async def close(self) -> None:
        self.closed = True


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
