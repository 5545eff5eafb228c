"""Capture of a worker's output, line by line, per invocation.

Two paths feed one buffer. `sys.stdout` and `sys.stderr` are replaced by
writers that append lines directly, which is exact and fast for print().
File descriptors 1 and 2 are redirected to pipes that a thread drains, so
output from C code and from child processes is captured too. The buffer is
capped: past the cap, lines are counted and dropped, and the batch is
marked truncated, so a handler that prints without end costs bounded memory.
"""

from __future__ import annotations

import io
import os
import select
import threading
import time

MAX_LINE_CHARS = 16 * 1024
MAX_BATCH_BYTES = 256 * 1024


class OutputBuffer:
    """Lines captured since the last `take()`, bounded by MAX_BATCH_BYTES."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lines: list[list] = []
        self._bytes = 0
        self._dropped = 0

    def add(self, stream: str, text: str) -> None:
        if len(text) > MAX_LINE_CHARS:
            text = text[:MAX_LINE_CHARS] + " [line truncated]"
        with self._lock:
            if self._bytes + len(text) > MAX_BATCH_BYTES:
                self._dropped += 1
                return
            self._bytes += len(text)
            self._lines.append([round(time.time(), 3), stream, text])

    def take(self) -> tuple[list[list], int]:
        """Return the lines captured so far and how many were dropped, and start a new batch."""
        with self._lock:
            lines, dropped = self._lines, self._dropped
            self._lines, self._bytes, self._dropped = [], 0, 0
        return lines, dropped


class LineWriter(io.TextIOBase):
    """A text stream that sends each complete line to an OutputBuffer."""

    def __init__(self, buffer: OutputBuffer, stream: str) -> None:
        self._buffer = buffer
        self._stream = stream
        self._partial = ""

    @property
    def name(self) -> str:
        return f"<{self._stream}>"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        pending = self._partial + text
        *lines, self._partial = pending.split("\n")
        for line in lines:
            self._buffer.add(self._stream, line)
        # An endless line without a newline must not grow without bound either.
        if len(self._partial) > MAX_LINE_CHARS:
            self._buffer.add(self._stream, self._partial)
            self._partial = ""
        return len(text)

    def flush(self) -> None:
        if self._partial:
            self._buffer.add(self._stream, self._partial)
            self._partial = ""


class DescriptorPump:
    """Redirects fds 1 and 2 to pipes and copies what arrives into an OutputBuffer."""

    def __init__(self, buffer: OutputBuffer) -> None:
        self._buffer = buffer
        self._pipes: dict[int, tuple[str, list[bytes]]] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        for target_fd, stream in ((1, "stdout"), (2, "stderr")):
            read_fd, write_fd = os.pipe()
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
                partial.append(chunk)
                data = b"".join(partial)
                *lines, rest = data.split(b"\n")
                partial[:] = [rest] if len(rest) <= MAX_LINE_CHARS else []
                if len(rest) > MAX_LINE_CHARS:
                    lines.append(rest)
                for line in lines:
                    self._buffer.add(stream, line.decode("utf-8", "replace"))
