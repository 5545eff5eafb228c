"""The quick benchmark as a CI guard: it fails only on a gross regression of a figure."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cloudtest import REPO

# The benchmarks package lives beside the tests and is not installed.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.report import Row, at_most, guard_failures  # noqa: E402

# The quick run took 30 s on two idle cores for both brokers. The timeout
# leaves room for a loaded CI machine.
QUICK_RUN_TIMEOUT_S = 150


@pytest.mark.slow
@pytest.mark.timeout(QUICK_RUN_TIMEOUT_S + 30)
def test_quick_benchmark_within_guard():
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--guard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=QUICK_RUN_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    output = f"stdout:\n{run.stdout}\nstderr:\n{run.stderr[-4000:]}"
    assert run.returncode == 0, output
    assert "guard: every figure is within its guard limit" in run.stdout, output
    assert "raw MQTT request/reply, QoS 0" in run.stdout, output


def test_guard_failures_name_figure_value_and_limit():
    rows = [
        Row("embedded amqtt", "cold start, no-op", "p50 200 ms", at_most(15, "ms p50"), 200.0, at_most(150, "ms p50")),
        Row("embedded amqtt", "warm / raw QoS 1, p50", "1.4", at_most(1.5, ""), 1.4, at_most(5, "")),
        Row("embedded amqtt", "throughput, 2 workers", "300 invokes/s"),
    ]
    failures = guard_failures(rows)
    assert failures == ["embedded amqtt: cold start, no-op is 200.00, past the guard limit <= 150 ms p50"]
