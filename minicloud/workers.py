"""Worker processes on the controller's side: spawn, send, kill, reap.

Workers are forked by a multiprocess fork server (a zygote) that has
imported the worker runtime once, so a cold start pays for a fork, not for
starting Python. Each worker gets one end of a pipe. The controller's
event loop watches the pipe for messages and the process sentinel for the
exit, so nothing polls.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import multiprocess
import multiprocess.spawn

from minicloud.manifest import FunctionConfig
from minicloud.worker import wire

log = logging.getLogger(__name__)

_context = multiprocess.get_context("forkserver")
_context.set_forkserver_preload(["minicloud.worker.runtime"])

WORKER_PROCESS_PREFIX = "minicloud-worker-"


def _preparation_without_main(name: str) -> dict[str, Any]:
    """Leave the parent's main module out of a worker's preparation data.

    multiprocess re-runs the parent's main module in every child (about
    20 ms under the console script), and a script without an
    `if __name__ == "__main__"` guard would run again. A worker needs only
    its target, which lives in an importable module.
    """
    data = _original_preparation_data(name)
    if name.startswith(WORKER_PROCESS_PREFIX):
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
    return data


_original_preparation_data = multiprocess.spawn.get_preparation_data
multiprocess.spawn.get_preparation_data = _preparation_without_main

MessageCallback = Callable[["WorkerProcess", dict[str, Any], bytes], None]
ExitCallback = Callable[["WorkerProcess", int], None]


def start_fork_server() -> None:
    """Start the fork server now, so that the first cold start does not pay for it."""
    from multiprocess import forkserver

    forkserver.ensure_running()


def worker_environment(config: FunctionConfig, worker_id: str) -> dict[str, str]:
    """Build a worker's whole environment: a fixed base plus the function's [env]."""
    python_bin = os.path.dirname(sys.executable)
    base = {
        "PATH": f"{python_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": os.path.expanduser("~"),
        "LANG": "C.UTF-8",
        "TZ": ":UTC",
        "PYTHONUNBUFFERED": "1",
        "AWS_LAMBDA_FUNCTION_NAME": config.name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_mb),
        "AWS_LAMBDA_FUNCTION_TIMEOUT": f"{config.timeout_s:g}",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{config.name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": log_stream_name(worker_id),
        "AWS_EXECUTION_ENV": "minicloud_python",
        "LAMBDA_TASK_ROOT": str(config.directory),
        "_HANDLER": config.handler,
    }
    return base | config.env


def log_stream_name(worker_id: str) -> str:
    """Name a worker's log stream as AWS Lambda does: date, version, instance."""
    return f"{time.strftime('%Y/%m/%d')}/[$LATEST]{worker_id}"


class WorkerProcess:
    """One live worker process and the pipe to it."""

    def __init__(self, worker_id: str, config: FunctionConfig) -> None:
        self.id = worker_id
        self.function = config.name
        self._config = config
        self._process: Any = None
        self._connection: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.pid: int | None = None

    def __repr__(self) -> str:
        return f"<WorkerProcess {self.function} {self.id} pid={self.pid}>"

    def spawn(self) -> None:
        """Fork the process; blocking, so the controller runs it in a thread."""
        parent_end, child_end = _context.Pipe(duplex=True)
        spec = {
            "worker_id": self.id,
            "function": self._config.name,
            "directory": str(self._config.directory),
            "handler": self._config.handler,
            "memory_mb": self._config.memory_mb,
            "environment": worker_environment(self._config, self.id),
        }
        from minicloud.worker.runtime import main

        process = _context.Process(target=main, args=(child_end, spec), name=f"{WORKER_PROCESS_PREFIX}{self.id}", daemon=True)
        process.start()
        child_end.close()
        self._process = process
        self._connection = parent_end
        self.pid = process.pid

    def watch(self, loop: asyncio.AbstractEventLoop, on_message: MessageCallback, on_exit: ExitCallback) -> None:
        """Call `on_message` for each message and `on_exit` once, when the process has exited."""
        self._loop = loop
        loop.add_reader(self._connection.fileno(), self._read_message, on_message)
        loop.add_reader(self._process.sentinel, self._read_exit, on_exit)

    def send_invoke(self, request_id: str, timeout_ms: int, event_json: bytes) -> None:
        self._connection.send_bytes(wire.encode({"t": "invoke", "id": request_id, "timeout_ms": timeout_ms}, event_json))

    def terminate(self) -> None:
        """Send SIGTERM to the worker, so it can exit on its own."""
        self._signal(signal.SIGTERM, group=False)

    def kill(self) -> None:
        """Send SIGKILL to the worker and every process in its group."""
        self._signal(signal.SIGKILL, group=True)

    def _signal(self, signum: int, *, group: bool) -> None:
        if self.pid is None:
            return
        try:
            if group:
                os.killpg(self.pid, signum)
            else:
                os.kill(self.pid, signum)
        except ProcessLookupError:
            # The group is gone, or the worker died before it made its group.
            if group:
                try:
                    os.kill(self.pid, signum)
                except ProcessLookupError:
                    pass
        except PermissionError as exc:
            log.error("signal %d to worker %s pid %s failed: %s", signum, self.id, self.pid, exc)

    def _read_message(self, on_message: MessageCallback) -> None:
        try:
            data = self._connection.recv_bytes()
        except (EOFError, OSError):
            # The worker closed its end: its exit is reported by the sentinel.
            self._loop.remove_reader(self._connection.fileno())
            return
        header, body = wire.decode(data)
        on_message(self, header, body)

    def _read_exit(self, on_exit: ExitCallback) -> None:
        loop = self._loop
        loop.remove_reader(self._process.sentinel)
        self._process.join(0)
        exit_code = self._process.exitcode
        if exit_code is None:
            exit_code = 255
        # Children a handler left behind die with the worker's group.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            loop.remove_reader(self._connection.fileno())
        except (OSError, ValueError):
            pass
        self._connection.close()
        self._process.close()
        on_exit(self, exit_code)


def describe_exit(exit_code: int) -> str:
    """Describe an exit code as a person reads it: status 3, or signal SIGKILL."""
    if exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = str(-exit_code)
        return f"killed by signal {name}"
    return f"exited with status {exit_code}"
