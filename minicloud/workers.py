"""Worker processes on the controller's side: spawn, send, kill, exit.

Workers are forked by the fork server (`minicloud.forkserver`), a zygote
that has imported the worker runtime once, so a cold start pays for a
fork, not for starting Python. Each worker gets one end of a pipe. The
controller's event loop watches the pipe for messages, and the fork
server reports the exit, so nothing polls.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, Pipe
from typing import Any

from minicloud.forkserver import ForkServer
from minicloud.manifest import FunctionConfig
from minicloud.worker import wire

log = logging.getLogger(__name__)

MessageCallback = Callable[["WorkerProcess", dict[str, Any], bytes], None]
ExitCallback = Callable[["WorkerProcess", int], None]


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

    def __init__(self, worker_id: str, config: FunctionConfig, fork_server: ForkServer) -> None:
        self.id = worker_id
        self.function = config.name
        self._config = config
        self._fork_server = fork_server
        self._connection: Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_message: MessageCallback | None = None
        self._on_exit: ExitCallback | None = None
        # The exit code, when the worker exited before watch() was called.
        self._early_exit_code: int | None = None
        self.pid: int | None = None

    def __repr__(self) -> str:
        return f"<WorkerProcess {self.function} {self.id} pid={self.pid}>"

    async def spawn(self) -> None:
        """Have the fork server fork the worker; raise ForkServerError or OSError on failure."""
        parent_end, child_end = Pipe(duplex=True)
        spec = {
            "worker_id": self.id,
            "function": self._config.name,
            "directory": str(self._config.directory),
            "handler": self._config.handler,
            "memory_mb": self._config.memory_mb,
            "environment": worker_environment(self._config, self.id),
        }
        try:
            self.pid = await self._fork_server.spawn(spec, child_end.fileno(), self._exited)
        except BaseException:
            parent_end.close()
            raise
        finally:
            # The fork server has its own copy of this end from the moment it was sent.
            child_end.close()
        self._connection = parent_end

    def watch(self, loop: asyncio.AbstractEventLoop, on_message: MessageCallback, on_exit: ExitCallback) -> None:
        """Call `on_message` for each message and `on_exit` once, when the process has exited."""
        self._loop = loop
        self._on_message = on_message
        self._on_exit = on_exit
        loop.add_reader(self._connection.fileno(), self._read_message)
        if self._early_exit_code is not None:
            loop.call_soon(self._finish_exit, self._early_exit_code)

    def send_invoke(self, request_id: str, timeout_ms: int, request_json: bytes) -> None:
        self._connection.send_bytes(wire.encode({"t": "invoke", "id": request_id, "timeout_ms": timeout_ms}, request_json))

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

    def _read_message(self) -> bool:
        """Read and handle one message; return False once the pipe is closed."""
        try:
            data = self._connection.recv_bytes()
        except (EOFError, OSError):
            # The worker closed its end: the fork server reports its exit.
            self._loop.remove_reader(self._connection.fileno())
            return False
        header, body = wire.decode(data)
        self._on_message(self, header, body)
        return True

    def _exited(self, exit_code: int) -> None:
        """Receive the exit code from the fork server."""
        if self._on_exit is None:
            self._early_exit_code = exit_code
            return
        self._finish_exit(exit_code)

    def _finish_exit(self, exit_code: int) -> None:
        # The fork server's report can overtake the worker's last messages,
        # such as the result sent just before sys.exit(), so read those first.
        try:
            while not self._connection.closed and self._connection.poll(0):
                if not self._read_message():
                    break
        except OSError:
            pass
        # Children a handler left behind die with the worker's group.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self._loop.remove_reader(self._connection.fileno())
        except (OSError, ValueError):
            pass
        self._connection.close()
        self._on_exit(self, exit_code)


def describe_exit(exit_code: int) -> str:
    """Describe an exit code as a person reads it: status 3, or signal SIGKILL."""
    if exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = str(-exit_code)
        return f"killed by signal {name}"
    return f"exited with status {exit_code}"
