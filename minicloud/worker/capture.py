"""Capture of a worker's output, line by line, per invocation.

File descriptors 1 and 2 are redirected to pipes that a thread drains, so
print(), C extensions and child processes are all captured the same way.
The buffer is capped: past the cap, lines are counted and dropped, and the
batch is marked truncated, so a handler that prints without end costs
bounded memory, and the pipe keeps flowing at the speed of a read.
"""

from __future__ import annotations

import os
import select
import threading
import time

MAX_LINE_CHARS = 16 * 1024
MAX_BATCH_BYTES = 256 * 1024
PIPE_SIZE_BYTES = 1024 * 1024
PUMP_PAUSE_S = 0.02


class OutputBuffer:
    """Lines captured since the last `take()`, bounded by MAX_BATCH_BYTES."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lines: list[list] = []
        self._bytes = 0
        self._dropped = 0

    @property
    def is_full(self) -> bool:
        return self._bytes >= MAX_BATCH_BYTES

    def count_dropped(self, lines: int) -> None:
        with self._lock:
            self._dropped += lines

    def add(self, stream: str, text: str) -> None:
        if len(text) > MAX_LINE_CHARS:
            text = text[:MAX_LINE_CHARS] + " [line truncated]"
        with self._lock:
            if self._bytes + len(text) > MAX_BATCH_BYTES:
                self._dropped += 1
                self._bytes = MAX_BATCH_BYTES
                return
            self._bytes += len(text)
            self._lines.append([round(time.time(), 3), stream, text])

    def take(self) -> tuple[list[list], int]:
        """Return the lines captured so far and how many were dropped, and start a new batch."""
        with self._lock:
            lines, dropped = self._lines, self._dropped
            self._lines, self._bytes, self._dropped = [], 0, 0
        return lines, dropped


class DescriptorPump:
    """Redirects fds 1 and 2 to pipes and copies what arrives into an OutputBuffer."""

    def __init__(self, buffer: OutputBuffer) -> None:
        self._buffer = buffer
        self._pipes: dict[int, tuple[str, list[bytes]]] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        for target_fd, stream in ((1, "stdout"), (2, "stderr")):
            read_fd, write_fd = os.pipe()
            _enlarge_pipe(write_fd)
            os.set_blocking(read_fd, False)
            os.dup2(write_fd, target_fd)
            os.close(write_fd)
            self._pipes[read_fd] = (stream, [])
        thread = threading.Thread(target=self._run, name="output-pump", daemon=True)
        thread.start()

    def drain(self) -> None:
        """Copy whatever is waiting in the pipes now, so it counts for the current invocation."""
        for read_fd in self._pipes:
            self._read_available(read_fd)

    def _run(self) -> None:
        fds = list(self._pipes)
        while True:
            readable, _, _ = select.select(fds, [], [])
            for read_fd in readable:
                self._read_available(read_fd)
            # Waking up for every write would fight the handler for the GIL
            # and slow a busy printer tenfold; the large pipe absorbs the pause.
            time.sleep(PUMP_PAUSE_S)

    def _read_available(self, read_fd: int) -> None:
        stream, partial = self._pipes[read_fd]
        with self._lock:
            while True:
                try:
                    chunk = os.read(read_fd, 65536)
                except BlockingIOError:
                    return
                if not chunk:
                    return
                if self._buffer.is_full:
                    partial.clear()
                    self._buffer.count_dropped(chunk.count(b"\n"))
                    continue
                partial.append(chunk)
                data = b"".join(partial)
                *lines, rest = data.split(b"\n")
                partial[:] = [rest] if len(rest) <= MAX_LINE_CHARS else []
                if len(rest) > MAX_LINE_CHARS:
                    lines.append(rest)
                for line in lines:
                    self._buffer.add(stream, line.decode("utf-8", "replace"))


def _enlarge_pipe(fd: int) -> None:
    """Grow a pipe to 1 MiB where Linux allows it (the default is 64 KiB)."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE_BYTES)
    except OSError:
        pass  # Over /proc/sys/fs/pipe-max-size, or not Linux: keep the default.
