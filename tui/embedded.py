"""Find a cloud at the broker address, or start one as a child process and stop it on exit."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from minicloud.bus import connect, parse_broker_url
from minicloud.errors import BusError

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.0
START_DEADLINE_S = 30.0
POLL_INTERVAL_S = 0.25
# The cloud drains in-flight invocations for up to 30 s after SIGTERM.
STOP_TIMEOUT_S = 35.0


def default_log_path() -> Path:
    """Return ~/.cache/minicloud/embedded.log, or a file in the temp folder when ~/.cache is not writable."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "minicloud"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        if os.access(cache, os.W_OK):
            return cache / "embedded.log"
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / f"minicloud-embedded-{os.getpid()}.log"


class EmbeddedCloudError(RuntimeError):
    """The embedded cloud did not start; the message names the log file."""


async def broker_answers(broker_url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Return whether an MQTT broker accepts a connection at the URL within `timeout` seconds."""
    try:
        async with connect(broker_url, timeout=timeout):
            return True
    # paho raises ValueError for port 0, which parse_broker_url accepts.
    except (BusError, ValueError):
        return False


class EmbeddedCloud:
    """A `minicloud up` child process on the host and port of the broker URL."""

    def __init__(self, broker_url: str, namespace: str, *, log_path: Path | None = None) -> None:
        self.broker_url = broker_url
        self.namespace = namespace
        self.log_path = log_path or default_log_path()
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def started(self) -> bool:
        return self.process is not None

    def command(self) -> list[str]:
        url = parse_broker_url(self.broker_url)
        return [
            sys.executable, "-m", "minicloud", "up", "--host", url.host, "--port", str(url.port),
            "--namespace", self.namespace, "--exit-on-stdin-eof",
        ]

    async def ensure(self, progress: Callable[[str], None]) -> None:
        """Attach to a running broker, or start the cloud and wait until its broker accepts connections.

        Raises EmbeddedCloudError when the child exits or the deadline passes.
        """
        progress(f"looking for a cloud at {self.broker_url}")
        if await broker_answers(self.broker_url):
            return
        self.start()
        await self.wait_ready(progress)

    def start(self) -> None:
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            self.command(),
            # This process keeps the write end and never writes: when it ends,
            # even by SIGKILL, the child reads EOF and stops itself.
            stdin=subprocess.PIPE,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            # A new session keeps terminal signals away from the child; stop() ends it.
            start_new_session=True,
        )
        log.info("started the embedded cloud (pid %d), log in %s", self.process.pid, self.log_path)

    async def wait_ready(self, progress: Callable[[str], None], deadline_s: float = START_DEADLINE_S) -> None:
        assert self.process is not None
        started = time.monotonic()
        while True:
            elapsed = time.monotonic() - started
            progress(f"starting an embedded cloud on {self.broker_url} (pid {self.process.pid}, {elapsed:.0f} s)")
            if self.process.poll() is not None:
                raise EmbeddedCloudError(
                    f"the embedded cloud exited with status {self.process.returncode}; see {self.log_path}"
                )
            if await broker_answers(self.broker_url, timeout=1.0):
                return
            if elapsed > deadline_s:
                raise EmbeddedCloudError(
                    f"the embedded cloud did not accept connections on {self.broker_url} within {deadline_s:g} s; see {self.log_path}"
                )
            await asyncio.sleep(POLL_INTERVAL_S)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """Send SIGTERM, wait up to `timeout_s` seconds, then SIGKILL; return the exit status."""
        process, self.process = self.process, None
        if process is None:
            return None
        try:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    log.warning("the embedded cloud (pid %d) did not stop within %g s; killing it", process.pid, timeout_s)
                    process.kill()
                    process.wait()
            log.info("the embedded cloud (pid %d) stopped with status %s", process.pid, process.returncode)
            return process.returncode
        finally:
            if process.stdin is not None:
                process.stdin.close()
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
