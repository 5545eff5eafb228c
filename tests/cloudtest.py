"""Helpers for tests that run real clouds: `minicloud up` as a child process on a free port."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
from minicloud import protocol
from minicloud.client import Client

REPO = Path(__file__).resolve().parent.parent
SAMPLE_FUNCTIONS = REPO / "sample_functions"
READY_TIMEOUT_S = 30.0
MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
# Room for the topic and the packet header above the largest payload.
MOSQUITTO_MAX_PACKET_SIZE = protocol.MAX_PAYLOAD_BYTES + 64 * 1024


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_function(root: Path, name: str, code: str, manifest: str = "", *, handler: str = "main.handler") -> Path:
    """Create a function folder with main.py and a function.toml; return the folder."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "main.py").write_text(textwrap.dedent(code))
    (folder / "function.toml").write_text(f'handler = "{handler}"\n' + textwrap.dedent(manifest))
    return folder


class CloudProcess:
    """A `minicloud up` child process with an embedded broker on a free port."""

    def __init__(
        self,
        function_dirs: list[Path],
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        broker_url: str | None = None,
    ) -> None:
        self.port = free_port()
        self.url = broker_url or f"mqtt://127.0.0.1:{self.port}"
        arguments = [sys.executable, "-m", "minicloud", "up"]
        arguments += ["--broker", broker_url] if broker_url else ["--port", str(self.port)]
        for directory in function_dirs:
            arguments += ["--functions", str(directory)]
        arguments += extra_args or []
        self.log_lines: list[str] = []
        self._ready = threading.Event()
        self.process = subprocess.Popen(
            arguments,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
            cwd=REPO,
        )
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        if not self._ready.wait(READY_TIMEOUT_S):
            self.stop()
            raise RuntimeError("minicloud up did not print 'minicloud ready':\n" + self.log_text())

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read_log(self) -> None:
        for line in self.process.stderr:
            self.log_lines.append(line.rstrip("\n"))
            if line.startswith("minicloud ready"):
                self._ready.set()
        self._ready.set()

    def log_text(self) -> str:
        return "\n".join(self.log_lines)

    def client(self) -> Client:
        return Client(self.url)

    def fork_server_pid(self) -> int | None:
        """Return the pid of the cloud's fork server (a child running minicloud.worker.zygote), or None."""
        try:
            children = psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return None
        for child in children:
            try:
                if "minicloud.worker.zygote" in child.cmdline() and alive(child):
                    return child.pid
            except psutil.Error:
                continue
        return None

    def worker_pids(self) -> set[int]:
        """Pids of the worker processes: the children of the cloud's fork server, its spare worker left out."""
        pid = self.fork_server_pid()
        if pid is None:
            return set()
        try:
            children = psutil.Process(pid).children()
        except psutil.NoSuchProcess:
            return set()
        return {child.pid for child in children if alive(child) and not is_spare(child)}

    def spare_pid(self) -> int | None:
        """Return the pid of the fork server's spare worker, or None."""
        pid = self.fork_server_pid()
        if pid is None:
            return None
        try:
            children = psutil.Process(pid).children()
        except psutil.NoSuchProcess:
            return None
        spares = [child.pid for child in children if alive(child) and is_spare(child)]
        return spares[0] if spares else None

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 40.0) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(5)


def is_spare(process: psutil.Process) -> bool:
    """Return whether the process is a fork server's spare worker, which names itself minicloud-spare."""
    try:
        return process.name() == "minicloud-spare"
    except psutil.Error:
        return False


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def pid_alive(pid: int) -> bool:
    """Return whether a process with this pid runs; a zombie counts as gone."""
    try:
        return alive(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return False


def wait_until(condition: Any, timeout: float, interval: float = 0.05, message: str = "condition") -> Any:
    """Poll `condition` until it returns a true value; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def require_mosquitto() -> None:
    """Skip the test when Mosquitto is not installed, or fail it in CI, which installs it."""
    if MOSQUITTO is None or shutil.which("mosquitto_passwd") is None:
        if os.environ.get("CI"):
            pytest.fail("mosquitto is not installed; .ci/run installs it with apt-get")
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")


@contextlib.contextmanager
def running_mosquitto(config: Path, settings: str, port: int | None = None) -> Iterator[int]:
    """Run mosquitto on `port` (default: a free one) with `settings` added to its config; yield the port."""
    port = port or free_port()
    config.write_text(f"listener {port} 127.0.0.1\npersistence false\nset_tcp_nodelay true\n{settings}")
    process = subprocess.Popen([MOSQUITTO, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    process.kill()
                    raise RuntimeError(f"mosquitto did not start: {process.stderr.read().decode()}") from None
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(10)


def secured_mosquitto_settings(password_file: Path, acl_file: Path | None = None) -> str:
    """Mosquitto settings as docs/deploy.md gives them: passwords, an optional ACL, a packet size limit."""
    # Run as root, mosquitto drops to its own user, who cannot read pytest's
    # private temporary folders; "user root" keeps it able to read the files.
    keep_user = "user root\n" if os.geteuid() == 0 else ""
    acl = f"acl_file {acl_file}\n" if acl_file else ""
    return f"allow_anonymous false\npassword_file {password_file}\n{acl}max_packet_size {MOSQUITTO_MAX_PACKET_SIZE}\n{keep_user}"
