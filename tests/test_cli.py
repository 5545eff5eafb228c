"""The minicloud command line: output and exit codes against a real cloud."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from cloudtest import free_port, write_function


def run_cli(*arguments: str, stdin: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "minicloud", *arguments],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def cloud(start_cloud, tmp_path):
    from cloudtest import SAMPLE_FUNCTIONS

    write_function(tmp_path, "fails", "def handler(event, context):\n    raise KeyError('missing')\n")
    return start_cloud(SAMPLE_FUNCTIONS, tmp_path)


@pytest.mark.timeout(90)
def test_invoke_prints_result_and_report(cloud):
    done = run_cli("invoke", "hello", '{"name": "cli"}', "--report", "--broker", cloud.url)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["message"] == "hello, cli!"
    report = json.loads(done.stderr)
    assert report["function"] == "hello"
    assert report["start"] in ("cold", "warm")


@pytest.mark.timeout(90)
def test_invoke_reads_event_from_stdin(cloud):
    done = run_cli("invoke", "hello", "-", "--broker", cloud.url, stdin='{"name": "pipe"}')
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["message"] == "hello, pipe!"


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("arguments", "status", "error_type"),
    [
        (["invoke", "fails"], 1, "KeyError"),
        (["invoke", "nope"], 2, "FunctionNotFound"),
        (["invoke", "hello", "{not json"], 2, "InvalidRequest"),
    ],
)
def test_invoke_exit_codes(cloud, arguments, status, error_type):
    done = run_cli(*arguments, "--broker", cloud.url)
    assert done.returncode == status, done.stderr
    assert json.loads(done.stderr)["type"] == error_type
    assert done.stdout == ""


@pytest.mark.timeout(30)
def test_unreachable_broker_fails_fast():
    url = f"mqtt://127.0.0.1:{free_port()}"
    started = time.monotonic()
    done = run_cli("invoke", "hello", "--broker", url)
    elapsed = time.monotonic() - started
    assert done.returncode == 2
    assert url in done.stderr
    assert elapsed < 8  # 5 s to give up, plus the interpreter's start


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "arguments",
    [["frobnicate"], ["invoke"], ["scale", "hello", "--min", "many"], ["invoke", "hello", "--broker", "http://x"]],
)
def test_bad_usage_exits_64(arguments):
    done = run_cli(*arguments)
    assert done.returncode == 64
    assert "error" in done.stderr or "invalid" in done.stderr


@pytest.mark.timeout(90)
def test_ls_scale_deploy_logs(cloud, tmp_path):
    listing = run_cli("ls", "--json", "--broker", cloud.url)
    assert listing.returncode == 0, listing.stderr
    assert {"hello", "cpu-burn", "sleep-io"} <= set(json.loads(listing.stdout)["functions"])

    table = run_cli("ls", "--broker", cloud.url)
    assert table.stdout.splitlines()[0].split()[:2] == ["FUNCTION", "STARTING"]

    scaled = run_cli("scale", "hello", "--min", "1", "--max", "4", "--broker", cloud.url)
    assert scaled.returncode == 0, scaled.stderr
    assert "min_warm=1 max_concurrency=4" in scaled.stdout

    bad_scale = run_cli("scale", "hello", "--min", "5", "--max", "2", "--broker", cloud.url)
    assert bad_scale.returncode == 2
    assert "InvalidRequest" in bad_scale.stderr

    folder = write_function(tmp_path / "new", "added", "def handler(event, context):\n    print('hi from added')\n    return 7\n")
    deployed = run_cli("deploy", str(folder), "--broker", cloud.url)
    assert deployed.returncode == 0, deployed.stderr
    assert "added created" in deployed.stdout
    assert run_cli("invoke", "added", "--broker", cloud.url).stdout.strip() == "7"

    logs = run_cli("logs", "added", "--broker", cloud.url)
    assert "hi from added" in logs.stdout

    broken = write_function(tmp_path / "broken", "broken", "def handler(event, context):\n    return 1\n", "memory_mb = 'lots'\n")
    rejected = run_cli("deploy", str(broken), "--broker", cloud.url)
    assert rejected.returncode == 2
    assert "memory_mb" in rejected.stderr
    assert "function.toml" in rejected.stderr
    # The cloud and its other functions keep working.
    assert run_cli("invoke", "added", "--broker", cloud.url).returncode == 0


@pytest.mark.timeout(90)
def test_energy_report(cloud):
    run_cli("invoke", "cpu-burn", '{"cpu_ms": 50}', "--broker", cloud.url)
    done = run_cli("energy", "--json", "--broker", cloud.url)
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout)
    assert state["by_function"]["cpu-burn"]["invocations"] == 1
    assert state["by_function"]["cpu-burn"]["cpu_ms"] >= 45
    assert state["baseline"]["joules"] > 0
    text = run_cli("energy", "--broker", cloud.url)
    assert "always-on" in text.stdout


@pytest.mark.timeout(60)
def test_up_stops_when_stdin_closes():
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "minicloud", "up", "--port", str(port), "--exit-on-stdin-eof"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        for line in process.stderr:
            if line.startswith("minicloud ready"):
                break
        invoked = run_cli("invoke", "hello", "--broker", f"mqtt://127.0.0.1:{port}")
        assert invoked.returncode == 0, invoked.stderr
        process.stdin.close()  # as when the parent, such as the TUI, dies
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)


@pytest.mark.timeout(30)
def test_tui_without_terminal_exits():
    done = run_cli("tui", "--broker", f"mqtt://127.0.0.1:{free_port()}", stdin="")
    assert done.returncode == 2
    assert "needs a terminal" in done.stderr


@pytest.mark.timeout(30)
@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::"])
def test_up_refuses_open_embedded_broker(host):
    done = run_cli("up", "--host", host, "--port", str(free_port()))
    assert done.returncode == 64
    assert f"refusing to bind the embedded broker to {host}" in done.stderr
    assert "--auth FILE" in done.stderr


@pytest.mark.timeout(30)
def test_up_checks_its_security_files_before_starting(tmp_path):
    broken = tmp_path / "passwords"
    broken.write_text("alice:plain-text-password\n")
    done = run_cli("up", "--port", str(free_port()), "--auth", str(broken))
    assert done.returncode == 64
    assert f"{broken} line 1" in done.stderr
    assert "plain-text passwords are not accepted" in done.stderr

    acl = tmp_path / "acl"
    acl.write_text("topic read minicloud/#\nallow everything\n")
    passwords = tmp_path / "good-passwords"
    assert run_cli("passwd", str(passwords), "alice", "--password-stdin", stdin="pw-1\n").returncode == 0
    done = run_cli("up", "--port", str(free_port()), "--auth", str(passwords), "--acl", str(acl))
    assert done.returncode == 64
    assert f"{acl} line 2: unknown keyword 'allow'" in done.stderr

    done = run_cli("up", "--port", str(free_port()), "--acl", str(acl))
    assert done.returncode == 64
    assert "--acl needs --auth" in done.stderr

    done = run_cli("up", "--broker", "mqtt://127.0.0.1:1", "--auth", str(passwords))
    assert done.returncode == 64
    assert "password_file and acl_file in mosquitto.conf" in done.stderr


@pytest.mark.timeout(30)
def test_passwd_and_acl_commands(tmp_path):
    passwords = tmp_path / "passwords"
    assert run_cli("passwd", str(passwords), "alice", "--password-stdin", stdin="first\n").returncode == 0
    assert run_cli("passwd", str(passwords), "alice", "--password-stdin", stdin="second\n").returncode == 0
    assert passwords.stat().st_mode & 0o777 == 0o600
    lines = passwords.read_text().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("alice:$7$101$")
    assert "first" not in passwords.read_text()
    assert "second" not in passwords.read_text()

    done = run_cli("acl", "--namespace", "lab", "--admin", "alice")
    assert done.returncode == 0
    assert "pattern read lab/replies/%u/#" in done.stdout
    assert "user alice\ntopic write lab/control/+" in done.stdout
