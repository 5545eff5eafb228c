"""Start and stop the processes a benchmark needs: clouds, Mosquitto, an MQTT echo server.

Every process listens on 127.0.0.1 on a port found by binding port 0. A
`Processes` set stops each one by its PID (SIGTERM, then SIGKILL after a
grace period), and then kills any descendant it had, such as a cloud's
workers, that outlived it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

NOOP = "def handler(event, context):\n    return None\n"
MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
STOP_GRACE_S = 10.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_function(root: Path, name: str, **settings: int | float) -> None:
    """Write a no-op function folder `root/name` with the given function.toml keys."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "main.py").write_text(NOOP)
    lines = ['handler = "main.handler"'] + [f"{key} = {value}" for key, value in settings.items()]
    (folder / "function.toml").write_text("\n".join(lines) + "\n")


class Processes:
    """The processes one benchmark run started; `stop_all()` stops every one, newest first."""

    def __init__(self) -> None:
        self._started: list[subprocess.Popen] = []

    def add(self, process: subprocess.Popen) -> subprocess.Popen:
        self._started.append(process)
        return process

    def stop(self, process: subprocess.Popen) -> None:
        if process in self._started:
            self._started.remove(process)
        stop_process(process)

    def stop_all(self) -> None:
        while self._started:
            stop_process(self._started.pop())


def stop_process(process: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """Send SIGTERM to the process, SIGKILL after `grace_s`, then SIGKILL any descendant left over."""
    try:
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            print(f"process {process.pid} did not stop within {grace_s:g} s of SIGTERM; sending SIGKILL", file=sys.stderr)
            process.kill()
            process.wait()
    _, alive = psutil.wait_procs(descendants, timeout=2)
    for child in alive:
        print(f"descendant {child.pid} of process {process.pid} is still running; sending SIGKILL", file=sys.stderr)
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


def start_cloud(
    processes: Processes, functions: Path, log_path: Path, *,
    port: int | None = None, broker_url: str | None = None, namespace: str = "minicloud",
) -> subprocess.Popen:
    """Run `minicloud up` with its own broker on `port`, or on `broker_url`; return once it is ready.

    The cloud's stderr goes to `log_path`, a file rather than a pipe, which would block the cloud once full.
    Two clouds on one broker need different namespaces.
    """
    command = [sys.executable, "-m", "minicloud", "up", "--functions", str(functions), "--log-level", "WARNING", "--namespace", namespace]
    command += ["--broker", broker_url] if broker_url else ["--port", str(port)]
    with log_path.open("w") as log:
        process = processes.add(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any(line.startswith("minicloud ready") for line in log_path.read_text().splitlines()):
            return process
        if process.poll() is not None:
            break
        time.sleep(0.02)
    processes.stop(process)
    raise RuntimeError(f"the cloud did not become ready within 30 s; its log {log_path}:\n{log_path.read_text()[-2000:]}")


def start_mosquitto(processes: Processes, folder: Path, *, tcp_nodelay: bool = False) -> str:
    """Run Mosquitto on a free port of 127.0.0.1 and return its URL.

    `tcp_nodelay` adds `set_tcp_nodelay true` to its config. Mosquitto 2.0.11
    leaves Nagle's algorithm on by default, and then a reply can wait for a
    delayed ACK of about 40 ms on Linux.
    """
    if MOSQUITTO is None:
        raise RuntimeError("mosquitto is not installed")
    port = free_port()
    config = folder / "mosquitto.conf"
    settings = f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
    if tcp_nodelay:
        settings += "set_tcp_nodelay true\n"
    config.write_text(settings)
    log_path = folder / "mosquitto.log"
    with log_path.open("w") as log:
        process = processes.add(subprocess.Popen([MOSQUITTO, "-c", str(config)], stdout=log, stderr=log, stdin=subprocess.DEVNULL))
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return f"mqtt://127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                processes.stop(process)
                raise RuntimeError(f"mosquitto did not start on port {port}: {log_path.read_text()[-2000:]}") from None
            time.sleep(0.05)


def start_echo(processes: Processes, url: str, prefix: str) -> subprocess.Popen:
    """Run `benchmarks.echo`, a plain MQTT client in its own process that replies to every request."""
    process = processes.add(subprocess.Popen(
        [sys.executable, "-m", "benchmarks.echo", url, prefix],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ))
    line = process.stdout.readline()
    if line.strip() != "ready":
        processes.stop(process)
        raise RuntimeError(f"the echo server did not start on {url}: it printed {line!r}")
    return process
