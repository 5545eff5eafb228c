"""The fork server (zygote): one process per cloud that forks every worker.

It imports the worker runtime once, so a cold start costs a fork() and
the import of the function's own module, not a Python start-up.

    controller --spawn (JSON + the worker's pipe end, SCM_RIGHTS)--> zygote
    controller <------------------ spawned {"pid"} | spawn_failed {"error"} ----'
    controller <------------------ exit {"pid", "code"} (SIGCHLD, waitpid) -----'

The zygote keeps one spare worker: a child forked ahead of time that has
already done the part of a worker's start that needs no function (process
group, parent-death signal, output capture) and waits on a socket of its
own. The reply to a spawn request carries the spare's pid, and then the
request goes to the spare, which loads the function. A new spare is
forked 20 ms later, so that the fork does not slow the worker's start.
Without a spare, as in a burst of spawns, the zygote forks a worker
directly.

The control channel is a SOCK_SEQPACKET socket pair, so every message
is one JSON object with no framing. The zygote ends with the controller:
on EOF of the control socket, or on SIGTERM (its parent-death signal), it
sends SIGKILL to every child's process group and exits.

Usage (by minicloud.forkserver only): python -m minicloud.worker.zygote CONTROL_FD PARENT_PID
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

# Imported here, once, so that every fork starts with the runtime loaded.
from minicloud.worker import runtime

# The largest control message: a spawn request carries the worker's whole
# environment, so a function's [env] must fit in it.
MAX_MESSAGE_BYTES = 256 * 1024
# Process name (comm) of the spare worker until it becomes a worker.
SPARE_NAME = b"minicloud-spare"
_PR_SET_PDEATHSIG = 1
# How long after a spawn the next spare worker is forked.
SPARE_DELAY_S = 0.02


class Zygote:
    """The fork server's state: its control socket, its spare worker, and the children it has not reaped."""

    def __init__(self, control: socket.socket) -> None:
        self._control = control
        self._children: set[int] = set()
        # The spare worker's pid and the socket its spawn request goes to.
        self._spare: tuple[int, socket.socket] | None = None
        # When to fork the next spare (time.monotonic()), or None.
        self._spare_due: float | None = None
        self._signals_in, self._signals_out = socket.socketpair()
        self._signals_in.setblocking(False)
        self._signals_out.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._name = _process_name()

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

        # Objects that exist now are never collected, so the collector in a
        # worker does not touch (and copy) the pages they share with the zygote.
        gc.freeze()
        self._selector.register(self._control, selectors.EVENT_READ)
        self._selector.register(self._signals_in, selectors.EVENT_READ)
        self._fork_spare()
        self._send({"t": "ready", "pid": os.getpid()})
        while True:
            timeout = None
            if self._spare_due is not None:
                timeout = max(0.0, self._spare_due - time.monotonic())
            ready = self._selector.select(timeout)
            if self._spare_due is not None and time.monotonic() >= self._spare_due:
                self._spare_due = None
                self._fork_spare()
            for key, _ in ready:
                if key.fileobj is self._control:
                    if not self._serve_request():
                        self._stop("the control socket closed")
                        return
                elif not self._handle_signals():
                    self._stop("SIGTERM")
                    return

    def _serve_request(self) -> bool:
        """Start one worker for one spawn request; return False at EOF."""
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
        try:
            spare = self._take_live_spare()
            if spare is not None:
                pid, spare_socket = spare
                # Replied before the hand-over: the spare, once woken, tends to
                # take this CPU for the milliseconds of its start (measured:
                # 2 to 3.6 ms of the reply's delay on a 2-core machine).
                self._send({"t": "spawned", "id": request["id"], "pid": pid})
                self._hand_over(pid, spare_socket, request["spec"], pipe_fd)
            else:
                pid = self._fork_worker(request["spec"], pipe_fd)
                # Sent before this loop reaps anything, so the controller always
                # learns a pid before its exit.
                self._send({"t": "spawned", "id": request["id"], "pid": pid})
        except OSError as exc:
            self._send({"t": "spawn_failed", "id": request["id"], "error": f"fork() failed: {exc}"})
        finally:
            os.close(pipe_fd)
        # The next spare is forked a little later, so that its fork and set-up
        # do not compete for the CPU with the worker that just started.
        self._spare_due = time.monotonic() + SPARE_DELAY_S
        return True

    def _take_live_spare(self) -> tuple[int, socket.socket] | None:
        """Take the spare worker, or return None when there is none or it has exited."""
        if self._spare is None:
            return None
        pid, spare_socket = self._spare
        self._spare = None
        try:
            exited_pid, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            exited_pid = pid
        if exited_pid == pid:
            # Killed from outside and not reaped yet. The controller never saw this pid.
            self._children.discard(pid)
            spare_socket.close()
            return None
        return pid, spare_socket

    def _hand_over(self, pid: int, spare_socket: socket.socket, spec: dict[str, Any], pipe_fd: int) -> None:
        """Send the spec and pipe end to the spare worker, which then becomes the worker."""
        try:
            socket.send_fds(spare_socket, [json.dumps(spec).encode()], [pipe_fd])
        except OSError as exc:
            # It died since the check: its exit, reported as the worker's, shows as a crash at start.
            print(f"minicloud fork server: handing a spawn to the spare worker pid {pid} failed: {exc}", file=sys.stderr, flush=True)
        finally:
            spare_socket.close()

    def _fork_worker(self, spec: dict[str, Any], pipe_fd: int) -> int:
        zygote_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            self._become_worker(zygote_pid, lambda: (spec, pipe_fd))
        self._adopt(pid)
        return pid

    def _fork_spare(self) -> None:
        if self._spare is not None:
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        zygote_pid = os.getpid()
        # The spare gets its name from the fork, so it never shows as a worker.
        runtime.set_process_name(SPARE_NAME)
        try:
            pid = os.fork()
        except OSError as exc:
            ours.close()
            theirs.close()
            print(f"minicloud fork server: forking a spare worker failed: {exc}", file=sys.stderr, flush=True)
            return
        finally:
            if os.getpid() == zygote_pid:
                runtime.set_process_name(self._name)
        if pid == 0:
            ours.close()
            self._become_worker(zygote_pid, lambda: self._wait_for_spec(theirs))
        theirs.close()
        self._adopt(pid)
        self._spare = (pid, ours)

    def _wait_for_spec(self, spare_socket: socket.socket) -> tuple[dict[str, Any], int]:
        """Wait, in the spare worker, for its spec and pipe end; exit if the zygote closes the socket."""
        data, fds, _, _ = socket.recv_fds(spare_socket, MAX_MESSAGE_BYTES, 1)
        spare_socket.close()
        if not data or not fds:
            os._exit(0)
        runtime.set_process_name(self._name)
        return json.loads(data), fds[0]

    def _adopt(self, pid: int) -> None:
        # Make the group here too, so that killpg() works as soon as the
        # controller receives the pid, even before the child has run a line.
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass  # The child made it itself already, or has exited.
        self._children.add(pid)

    def _become_worker(self, zygote_pid: int, receive_spec: Any) -> None:
        """Run a worker in the forked child: prepare, get the spec from `receive_spec()`, run; never returns."""
        status = 1
        try:
            signal.set_wakeup_fd(-1)
            for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, signal.SIG_DFL)
            self._selector.close()
            self._control.close()
            self._signals_in.close()
            self._signals_out.close()
            if self._spare is not None:
                self._spare[1].close()
            preparation = runtime.prepare(zygote_pid)
            spec, pipe_fd = receive_spec()
            runtime.main(Connection(pipe_fd), spec, preparation)
            status = 0
        except BaseException:  # noqa: BLE001 - the child must never return into the zygote's loop
            traceback.print_exc()
        finally:
            os._exit(status)

    def _handle_signals(self) -> bool:
        """Reap exited children; return False on SIGTERM."""
        try:
            received = self._signals_in.recv(4096)
        except BlockingIOError:
            received = b""
        self._reap()
        return signal.SIGTERM not in received

    def _reap(self) -> None:
        while self._children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self._children.clear()
                return
            if pid == 0:
                return
            self._children.discard(pid)
            if self._spare is not None and self._spare[0] == pid:
                # Killed from outside. The next spawn forks a worker and a new spare.
                self._spare[1].close()
                self._spare = None
                continue
            self._send({"t": "exit", "pid": pid, "code": os.waitstatus_to_exitcode(status)})

    def _send(self, message: dict[str, Any]) -> None:
        try:
            self._control.send(json.dumps(message).encode())
        except OSError:
            pass  # The controller is gone, so the loop reads EOF next and stops.

    def _stop(self, reason: str) -> None:
        """Kill every child's process group, reap the children, and return."""
        workers = len(self._children) - (self._spare is not None)
        if workers:
            print(f"minicloud fork server: {reason}; killing {workers} workers", file=sys.stderr, flush=True)
        for pid in self._children:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for pid in list(self._children):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self._children.clear()


def _process_name() -> bytes:
    """Return this process's name as /proc/self/comm shows it, or b"python" where there is no /proc."""
    try:
        with open("/proc/self/comm", "rb") as comm:
            return comm.read().strip()
    except OSError:
        return b"python"


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
