"""Find a cloud at the broker address, or start one as a child process and stop it on exit."""

from __future__ import annotations

import asyncio
import ipaddress
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
from minicloud.errors import BrokerRefusedError, BusError

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
    return await connection_failure(broker_url, timeout) is None


async def connection_failure(broker_url: str, timeout: float = PROBE_TIMEOUT_S) -> BusError | None:
    """Return why no connection to the URL opens within `timeout` seconds, or None when one does."""
    try:
        async with connect(broker_url, timeout=timeout):
            return None
    except BusError as exc:
        return exc
    # paho raises ValueError for port 0, which parse_broker_url accepts.
    except ValueError as exc:
        return BusError(str(exc))


def can_start_embedded(broker_url: str) -> bool:
    """Return whether an embedded cloud could serve this URL: plain MQTT, on this host, with no user.

    An embedded cloud has no passwords and no TLS, so for any other URL it
    would be a different, open cloud from the one the user asked for.
    """
    url = parse_broker_url(broker_url)
    if url.tls or url.username:
        return False
    if url.host == "localhost":
        return True
    try:
        return ipaddress.ip_address(url.host).is_loopback
    except ValueError:
        return False


class EmbeddedCloud:
    """A `minicloud up` child process on the host and port of the broker URL."""

    def __init__(self, broker_url: str, namespace: str, *, log_path: Path | None = None) -> None:
        self.broker_url = broker_url
        self.namespace = namespace
        self.log_path = log_path or default_log_path()
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        # Set when no cloud accepted a connection and none could be started here.
        self.waiting_note = ""

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
        failure = await connection_failure(self.broker_url)
        if failure is None:
            return
        if isinstance(failure, BrokerRefusedError):
            # A broker accepts connections there, so no embedded cloud could listen on it either.
            raise EmbeddedCloudError(str(failure))
        if not can_start_embedded(self.broker_url):
            log.info("no cloud accepts connections at %s, and an embedded cloud serves only plain mqtt:// on this host: waiting", parse_broker_url(self.broker_url))
            self.waiting_note = (
                f"no cloud answers at {parse_broker_url(self.broker_url)} yet; waiting for it "
                "(an embedded cloud starts only for a mqtt:// URL on this host with no user name)"
            )
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
