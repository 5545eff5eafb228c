"""The fork server (zygote): one process per cloud that forks every worker.

It imports the worker runtime once, so a cold start costs a fork() and
the import of the function's own module, not a Python start-up.

    controller --spawn (JSON + the worker's pipe end, SCM_RIGHTS)--> zygote: fork()
    controller <------------------ spawned {"pid"} | spawn_failed {"error"} ----'
    controller <------------------ exit {"pid", "code"} (SIGCHLD, waitpid) -----'

The control channel is a SOCK_SEQPACKET socket pair, so every message
is one JSON object with no framing. The zygote ends with the controller:
on EOF of the control socket, or on SIGTERM (its parent-death signal), it
sends SIGKILL to every worker's process group and exits.

Usage (by minicloud.forkserver only): python -m minicloud.worker.zygote CONTROL_FD PARENT_PID
"""

from __future__ import annotations

import ctypes
import json
import os
import selectors
import signal
import socket
import sys
import traceback
from multiprocessing.connection import Connection
from typing import Any

# Imported here, once, so that every fork starts with the runtime loaded.
from minicloud.worker import runtime

# The largest control message: a spawn request carries the worker's whole
# environment, so a function's [env] must fit in it.
MAX_MESSAGE_BYTES = 256 * 1024
_PR_SET_PDEATHSIG = 1


class Zygote:
    """The fork server's state: its control socket and the workers it forked and has not reaped."""

    def __init__(self, control: socket.socket) -> None:
        self._control = control
        self._workers: set[int] = set()
        self._signals_in, self._signals_out = socket.socketpair()
        self._signals_in.setblocking(False)
        self._signals_out.setblocking(False)
        self._selector = selectors.DefaultSelector()

    def run(self) -> None:
        """Serve spawn requests and report exits until the controller goes away."""
        # Python runs signal handlers in the main thread only between
        # bytecodes, so the handlers do nothing and the wake-up fd carries
        # the signal numbers into the select loop.
        signal.set_wakeup_fd(self._signals_out.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(signum, _ignore_signal)
        # Ctrl+C in a terminal reaches the whole process group. The cloud
        # drains its workers on SIGINT, so the zygote must outlive it.
        signal.signal(signal.SIGINT, signal.SIG_IGN)

        self._selector.register(self._control, selectors.EVENT_READ)
        self._selector.register(self._signals_in, selectors.EVENT_READ)
        self._send({"t": "ready", "pid": os.getpid()})
        while True:
            for key, _ in self._selector.select():
                if key.fileobj is self._control:
                    if not self._serve_request():
                        self._stop("the control socket closed")
                        return
                elif not self._handle_signals():
                    self._stop("SIGTERM")
                    return

    def _serve_request(self) -> bool:
        """Fork one worker for one spawn request; return False at EOF."""
        try:
            data, fds, _, _ = socket.recv_fds(self._control, MAX_MESSAGE_BYTES, 1)
        except ConnectionError:
            return False
        if not data:
            return False

        request = json.loads(data)
        if not fds:
            self._send({"t": "spawn_failed", "id": request["id"], "error": "the request carried no pipe end"})
            return True
        pipe_fd = fds[0]
        zygote_pid = os.getpid()
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(pipe_fd)
            self._send({"t": "spawn_failed", "id": request["id"], "error": f"fork() failed: {exc}"})
            return True
        if pid == 0:
            self._run_worker(pipe_fd, request["spec"], zygote_pid)

        # Make the group here too, so that killpg() works as soon as the
        # controller receives the pid, even before the worker has run a line.
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass  # The worker made it itself already, or has exited.
        os.close(pipe_fd)
        self._workers.add(pid)
        # Sent before this loop reaps anything, so the controller always
        # learns a pid before its exit.
        self._send({"t": "spawned", "id": request["id"], "pid": pid})
        return True

    def _run_worker(self, pipe_fd: int, spec: dict[str, Any], zygote_pid: int) -> None:
        """Become the worker, in the forked child; never returns."""
        status = 1
        try:
            signal.set_wakeup_fd(-1)
            for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, signal.SIG_DFL)
            self._selector.close()
            self._control.close()
            self._signals_in.close()
            self._signals_out.close()
            runtime.main(Connection(pipe_fd), spec, zygote_pid)
            status = 0
        except BaseException:  # noqa: BLE001 - the child must never return into the zygote's loop
            traceback.print_exc()
        finally:
            os._exit(status)

    def _handle_signals(self) -> bool:
        """Reap exited workers; return False on SIGTERM."""
        try:
            received = self._signals_in.recv(4096)
        except BlockingIOError:
            received = b""
        self._reap()
        return signal.SIGTERM not in received

    def _reap(self) -> None:
        while self._workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self._workers.clear()
                return
            if pid == 0:
                return
            self._workers.discard(pid)
            self._send({"t": "exit", "pid": pid, "code": os.waitstatus_to_exitcode(status)})

    def _send(self, message: dict[str, Any]) -> None:
        try:
            self._control.send(json.dumps(message).encode())
        except OSError:
            pass  # The controller is gone, so the loop reads EOF next and stops.

    def _stop(self, reason: str) -> None:
        """Kill every worker's process group, reap the workers, and return."""
        if self._workers:
            print(f"minicloud fork server: {reason}; killing {len(self._workers)} workers", file=sys.stderr, flush=True)
        for pid in self._workers:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for pid in list(self._workers):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self._workers.clear()


def _ignore_signal(signum: int, frame: object) -> None:
    pass


def _die_with_parent(parent_pid: int) -> None:
    """Get SIGTERM when the controller's process exits, and exit now if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # Not Linux: EOF on the control socket still ends the zygote.
    if os.getppid() != parent_pid:
        sys.exit(0)


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 64
    control_fd, parent_pid = int(sys.argv[1]), int(sys.argv[2])
    # SIGTERM must be handled before the parent-death signal is armed, or an
    # early death of the controller would end the zygote without cleanup.
    signal.signal(signal.SIGTERM, _ignore_signal)
    _die_with_parent(parent_pid)
    control = socket.socket(fileno=control_fd)
    Zygote(control).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
