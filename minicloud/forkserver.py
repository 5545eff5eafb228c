"""The controller's side of the fork server (`minicloud.worker.zygote`).

The fork server is a child process of the cloud that has imported the
worker runtime once and forks each worker on request. The controller
talks to it over one SOCK_SEQPACKET socket pair, read with the event
loop's add_reader, so nothing polls. A spawn request goes out with the
worker's pipe end attached. The pid of the new worker comes back, and
later its exit status.

If the fork server dies, its workers die too (their parent-death signal
is SIGKILL). The controller then reports each of them as killed by
SIGKILL, and the next spawn starts a new fork server.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from minicloud.worker.zygote import MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0

ExitCallback = Callable[[int], None]


class ForkServerError(OSError):
    """The fork server could not be started, or could not fork a worker.

    An OSError, so that `minicloud up` reports a failed start as it
    reports a port in use: one line and exit status 2.
    """


class ForkServer:
    """One fork server process, started on first use and again after it dies."""

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._socket: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Future[None] | None = None
        self._starting: asyncio.Task[None] | None = None
        self._request_ids = itertools.count(1)
        # Spawn requests awaiting their pid: request id -> (future, exit callback).
        self._pending: dict[int, tuple[asyncio.Future[int], ExitCallback]] = {}
        # Live workers: pid -> the callback that receives the exit code.
        self._workers: dict[int, ExitCallback] = {}

    @property
    def pid(self) -> int | None:
        """The fork server's pid, or None when none runs."""
        return self._process.pid if self._process is not None else None

    async def start(self) -> None:
        """Start the fork server unless it runs; return once it is ready to fork."""
        # Concurrent callers share one start. A start that failed, or a
        # fork server that died since (its socket is closed), starts anew.
        if self._starting is None or (self._starting.done() and self._socket is None):
            self._starting = asyncio.get_running_loop().create_task(self._start())
        await asyncio.shield(self._starting)

    async def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            command = [sys.executable, "-m", "minicloud.worker.zygote", str(theirs.fileno()), str(os.getpid())]
            self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL, pass_fds=[theirs.fileno()])
        except OSError as exc:
            ours.close()
            raise ForkServerError(f"starting the fork server failed: {exc}") from exc
        finally:
            theirs.close()

        ours.setblocking(False)
        self._socket = ours
        self._ready = self._loop.create_future()
        self._loop.add_reader(ours.fileno(), self._read)
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), START_TIMEOUT_S)
        except asyncio.TimeoutError:
            self._lost(f"it did not report ready within {START_TIMEOUT_S:.0f} s")
            raise ForkServerError(f"the fork server did not start within {START_TIMEOUT_S:.0f} s") from None
        log.info("fork server pid %d ready", self._process.pid)

    async def spawn(self, spec: dict[str, Any], pipe_fd: int, on_exit: ExitCallback) -> int:
        """Fork a worker running `spec` on `pipe_fd`; return its pid.

        `on_exit` is called once with the exit code (negative: the signal
        number) when the worker has exited and been reaped.
        """
        await self.start()
        request_id = next(self._request_ids)
        message = json.dumps({"t": "spawn", "id": request_id, "spec": spec}).encode()
        if len(message) > MAX_MESSAGE_BYTES:
            raise ForkServerError(
                f"the worker spec is {len(message)} bytes, over the limit of {MAX_MESSAGE_BYTES}; shorten the function's [env]"
            )
        future: asyncio.Future[int] = self._loop.create_future()
        self._pending[request_id] = (future, on_exit)
        try:
            socket.send_fds(self._socket, [message], [pipe_fd])
        except OSError as exc:
            # NOTE: a full socket buffer (a fork server that stopped reading) also lands here.
            self._pending.pop(request_id, None)
            raise ForkServerError(f"sending a spawn request to the fork server failed: {exc}") from exc
        return await future

    async def stop(self) -> None:
        """Close the control socket, so the fork server kills what is left and exits; wait for it."""
        process = self._process
        self._close()
        if process is None:
            return
        try:
            await asyncio.to_thread(process.wait, STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.error("fork server pid %d did not exit within %.0f s; killing it", process.pid, STOP_TIMEOUT_S)
            process.kill()
            await asyncio.to_thread(process.wait)
        log.info("fork server pid %d stopped", process.pid)

    def _read(self) -> None:
        while self._socket is not None:
            try:
                data = self._socket.recv(MAX_MESSAGE_BYTES)
            except BlockingIOError:
                return
            except OSError as exc:
                self._lost(f"its control socket failed: {exc}")
                return
            if not data:
                self._lost("its control socket closed")
                return
            self._handle(json.loads(data))

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["t"]
        if kind == "ready":
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
        elif kind == "spawned":
            future, on_exit = self._pending.pop(message["id"])
            # Registered before the next message is read, so the exit of this
            # pid always finds its callback.
            self._workers[message["pid"]] = on_exit
            if not future.done():
                future.set_result(message["pid"])
        elif kind == "spawn_failed":
            future, _ = self._pending.pop(message["id"])
            if not future.done():
                future.set_exception(ForkServerError(f"the fork server could not fork a worker: {message['error']}"))
        elif kind == "exit":
            on_exit = self._workers.pop(message["pid"], None)
            if on_exit is not None:
                on_exit(message["code"])
        else:
            log.error("fork server sent a message of unknown type %r; ignored", kind)

    def _lost(self, reason: str) -> None:
        """Handle the death of the fork server: fail pending spawns, report every worker killed."""
        process = self._process
        pid = process.pid if process is not None else None
        status = process.poll() if process is not None else None
        workers = self._workers
        pending = self._pending
        self._workers = {}
        self._pending = {}
        self._close()
        log.error(
            "fork server pid %s exited (%s; exit status %s); %d workers lost; a new one starts on the next spawn",
            pid, reason, status, len(workers),
        )

        error = ForkServerError(f"the fork server exited: {reason}")
        for future, _ in pending.values():
            if not future.done():
                future.set_exception(error)
        # Its workers got SIGKILL as their parent-death signal. Killing their
        # groups also ends children of handlers, which that signal misses.
        for worker_pid, on_exit in workers.items():
            try:
                os.killpg(worker_pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            on_exit(-signal.SIGKILL)
        if process is not None and status is None:
            # Reap it in a thread, so no zombie stays and the loop does not block.
            self._loop.run_in_executor(None, process.wait)

    def _close(self) -> None:
        if self._socket is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._socket.fileno())
            self._socket.close()
            self._socket = None
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(ForkServerError("the fork server exited before it was ready"))
        self._process = None
