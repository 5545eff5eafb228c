"""The worker process: load one handler, then run one invocation at a time.

    controller --invoke--> reader thread --queue--> main thread: handler(event, context)
    controller <--------------- done (header + result JSON) ---------------'

The main thread owns the handler, its module globals and the event loop for
async handlers. The reader thread owns the pipe's receiving side: when the
controller goes away (the pipe reaches EOF), it kills the worker's whole
process group at once, so no worker or child of a handler outlives the
controller. The parent-death signal backs this up for the worker itself.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib
import inspect
import json
import os
import queue
import resource
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

from minicloud.worker import wire
from minicloud.worker.capture import DescriptorPump, OutputBuffer
from minicloud.worker.cputime import CpuMeter
from minicloud.worker.context import LambdaContext

# AWS Lambda's limit for a synchronous response: 6 MB.
MAX_RESULT_BYTES = 6 * 1024 * 1024

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15

# Resolved once in the fork server, so a forked worker need not load it again.
try:
    _prctl: Any = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None  # Not Linux.


@dataclass
class Preparation:
    """The part of a worker's setup that needs no spec: output capture and CPU meter."""

    output: OutputBuffer
    pump: DescriptorPump
    cpu: CpuMeter


def prepare(parent_pid: int) -> Preparation:
    """Do the part of a worker's start that needs no spec, in the forked child.

    `parent_pid` is the pid of the fork server, taken before the fork. A
    spare worker runs this before any spawn request arrives.
    """
    _detach_from_controller(parent_pid)
    output = OutputBuffer()
    pump = DescriptorPump(output)
    pump.start()
    return Preparation(output, pump, CpuMeter())


def main(connection: Any, spec: dict[str, Any], preparation: Preparation) -> None:
    """Run one worker until it exits, in the forked child after `prepare()`.

    `spec` contains "worker_id", "function", "directory", "handler",
    "memory_mb" and "environment" (the complete environment of the worker).
    """
    _isolate_environment(spec)

    requests: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    reader = threading.Thread(target=_read_requests, args=(connection, requests), name="pipe-reader", daemon=True)
    reader.start()

    runtime = Runtime(connection, spec, preparation)
    if not runtime.initialize():
        os._exit(0)
    while True:
        runtime.invoke(requests.get())


def set_process_name(name: bytes) -> None:
    """Set the name that ps and /proc/PID/comm show for this process (at most 15 bytes, Linux only)."""
    if _prctl is not None:
        _prctl(_PR_SET_NAME, ctypes.c_char_p(name[:15]), 0, 0, 0)


def _detach_from_controller(parent_pid: int) -> None:
    """Become a process group leader and die with the parent process (the fork server)."""
    os.setpgid(0, 0)
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # Without prctl (not Linux), the pipe reader thread still ends the worker.
    if os.getppid() != parent_pid:
        os._exit(1)  # The parent died before the signal was armed.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)


def _isolate_environment(spec: dict[str, Any]) -> None:
    # Nothing of the controller's environment, which may hold broker
    # credentials, reaches the handler or its children.
    os.environ.clear()
    os.environ.update(spec["environment"])
    directory = spec["directory"]
    os.chdir(directory)
    sys.path.insert(0, directory)


def _read_requests(connection: Any, requests: queue.SimpleQueue[bytes]) -> None:
    while True:
        try:
            requests.put(connection.recv_bytes())
        except (EOFError, OSError):
            # The controller is gone: end this worker and every process it started.
            os.killpg(0, signal.SIGKILL)


class Runtime:
    """The handler of one function and the invocations it runs."""

    def __init__(self, connection: Any, spec: dict[str, Any], preparation: Preparation) -> None:
        self._connection = connection
        self._spec = spec
        self._output = preparation.output
        self._pump = preparation.pump
        self._handler: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cpu = preparation.cpu
        self._log_stream = spec["environment"].get("AWS_LAMBDA_LOG_STREAM_NAME", spec["worker_id"])

    def initialize(self) -> bool:
        """Import the handler's module (the init phase); report ready or the error."""
        started = time.perf_counter()
        module_name, _, function_name = self._spec["handler"].rpartition(".")
        try:
            module = importlib.import_module(module_name)
            handler = getattr(module, function_name)
            if not callable(handler):
                raise TypeError(f"{self._spec['handler']} is a {type(handler).__name__}, not a function")
        except BaseException as exc:  # noqa: BLE001 - any failure of user code is reported
            error = {
                "type": "ImportModuleError",
                "message": f"Unable to import module {module_name!r} or find {function_name!r}: "
                f"{type(exc).__name__}: {exc}",
                "source": "platform",
                "stack": _stack_of(exc),
            }
            self._send({"t": "init_error", "error": error, "logs": self._take_logs()[0]})
            return False
        self._handler = handler
        init_ms = (time.perf_counter() - started) * 1000
        # The CPU of the init phase, so the controller can check the sum of the
        # invocations' CPU against what psutil reads for the whole process.
        init_cpu_ms = time.process_time_ns() / 1e6
        self._send({"t": "ready", "init_ms": init_ms, "init_cpu_ms": init_cpu_ms, "logs": self._take_logs()[0]})
        return True

    def invoke(self, message: bytes) -> None:
        header, body = wire.decode(message)
        request_id = header["id"]
        timeout_s = header["timeout_ms"] / 1000
        context = LambdaContext(
            request_id=request_id,
            function_name=self._spec["function"],
            memory_mb=self._spec["memory_mb"],
            log_stream_name=self._log_stream,
            deadline_monotonic=time.monotonic() + timeout_s,
        )

        self._cpu.start()
        started = time.perf_counter_ns()
        outcome, exit_code = self._call(body, context)
        duration_ms = (time.perf_counter_ns() - started) / 1e6
        cpu_ms = self._cpu.stop()

        header_out, result = outcome
        logs, dropped = self._take_logs()
        header_out.update(
            t="done",
            duration_ms=duration_ms,
            cpu_ms=cpu_ms,
            max_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            logs=logs,
            logs_dropped=dropped,
        )
        if exit_code is not None:
            header_out["exiting"] = True
        self._send(header_out, result)
        if exit_code is not None:
            os._exit(exit_code)

    def _call(self, body: bytes, context: LambdaContext) -> tuple[tuple[dict[str, Any], bytes], int | None]:
        """Run the handler; return ((header, result JSON), exit code if the handler asked to exit)."""
        try:
            event = json.loads(body).get("event", {}) if body else {}
            result = self._handler(event, context)
            if inspect.isawaitable(result):
                result = self._event_loop().run_until_complete(result)
        except SystemExit as exc:
            # sys.exit() and sys.exit(None) mean status 0, and sys.exit("text") status 1, as in CPython.
            if isinstance(exc.code, int):
                code = exc.code
            elif exc.code is None:
                code = 0
            else:
                code = 1
            error = {
                "type": "WorkerCrashed",
                "message": f"the handler called sys.exit({exc.code!r}); the worker exited with status {code}",
                "source": "platform",
            }
            return ({"ok": False, "error": error}, b""), code
        except BaseException as exc:  # noqa: BLE001 - the handler's own errors go to the caller
            error = {"type": type(exc).__name__, "message": str(exc), "source": "function", "stack": _stack_of(exc)}
            return ({"ok": False, "error": error}, b""), None
        finally:
            sys.stdout.flush()
            sys.stderr.flush()

        try:
            encoded = json.dumps(result, allow_nan=False, separators=(",", ":"), ensure_ascii=False).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            error = {
                "type": "SerializationError",
                "message": f"the result cannot be encoded as JSON: {exc}; return dicts, lists, "
                "strings, numbers, booleans or None (convert sets to lists, datetimes to strings)",
                "source": "platform",
            }
            return ({"ok": False, "error": error}, b""), None
        if len(encoded) > MAX_RESULT_BYTES:
            error = {
                "type": "PayloadTooLarge",
                "message": f"the result is {len(encoded)} bytes, over the limit of {MAX_RESULT_BYTES} bytes",
                "source": "platform",
            }
            return ({"ok": False, "error": error}, b""), None
        return ({"ok": True}, encoded), None

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        # One loop for the worker's life, so clients an async handler keeps in
        # globals stay bound to a live loop across warm invocations.
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
        return self._loop

    def _take_logs(self) -> tuple[list[list], int]:
        sys.stdout.flush()
        sys.stderr.flush()
        self._pump.drain()
        return self._output.take()

    def _send(self, header: dict[str, Any], body: bytes = b"") -> None:
        self._connection.send_bytes(wire.encode(header, body))


def _stack_of(exc: BaseException) -> list[str]:
    """Return the traceback of an exception as one string a frame, the runtime's own frames left out."""
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__) if frame.filename != __file__]
    return [line.rstrip("\n") for line in traceback.format_list(frames)]
