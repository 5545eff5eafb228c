"""CPU time per invocation, to the millisecond, and the energy computed from it."""

from __future__ import annotations

import time

import pytest

from cloudtest import SAMPLE_FUNCTIONS, wait_until, write_function
from minicloud.energy import EnergyModel

# Burns CPU in a child process, which the handler waits for, or leaves
# running ("wait": false) so that it is still alive when the handler returns.
CHILD_BURNER = """
import subprocess, sys, time

BURN = "import time\\nend = time.process_time() + {seconds}\\nwhile time.process_time() < end: pass\\n"

def handler(event, context):
    child = subprocess.Popen([sys.executable, "-c", BURN.format(seconds=event["cpu_ms"] / 1000)])
    if event.get("wait", True):
        child.wait()
    else:
        time.sleep(event["sleep_s"])
    return {"child": child.pid}
"""


@pytest.fixture
def cloud(start_cloud, tmp_path):
    write_function(tmp_path, "child-burner", CHILD_BURNER, "timeout_s = 20\n")
    return start_cloud(SAMPLE_FUNCTIONS, tmp_path)


@pytest.mark.timeout(60)
def test_cpu_of_200ms_burn_within_5_percent(cloud):
    with cloud.client() as client:
        client.invoke("cpu-burn", {"cpu_ms": 1})  # the cold start
        reports = [client.invoke("cpu-burn", {"cpu_ms": 200}).report for _ in range(5)]
    for report in reports:
        assert 190 <= report["cpu_ms"] <= 210, report


@pytest.mark.timeout(60)
def test_cpu_of_3ms_burn_is_precise(cloud):
    with cloud.client() as client:
        client.invoke("cpu-burn", {"cpu_ms": 1})
        reports = [client.invoke("cpu-burn", {"cpu_ms": 3}).report for _ in range(10)]
    for report in reports:
        assert 2 <= report["cpu_ms"] <= 6, report


@pytest.mark.timeout(60)
def test_cpu_of_waited_child_is_counted(cloud):
    with cloud.client() as client:
        report = client.invoke("child-burner", {"cpu_ms": 300}).report
    assert report["cpu_ms"] >= 270


@pytest.mark.timeout(60)
def test_cpu_of_running_child_is_counted_once(cloud):
    with cloud.client() as client:
        # The child burns 300 ms and exits while the handler sleeps without waiting for it.
        first = client.invoke("child-burner", {"cpu_ms": 300, "wait": False, "sleep_s": 1.5}).report
        second = client.invoke("cpu-burn", {"cpu_ms": 1}).report
        third = client.invoke("child-burner", {"cpu_ms": 10}).report
    assert first["cpu_ms"] >= 270
    assert second["cpu_ms"] < 50
    # The first child is reaped during the third invocation: its CPU must not be charged again.
    assert third["cpu_ms"] < 200


@pytest.mark.timeout(60)
def test_energy_matches_model(cloud):
    model = EnergyModel()
    with cloud.client() as client:
        report = client.invoke("cpu-burn", {"cpu_ms": 50}).report
    expected = model.invocation_joules(
        cpu_s=report["cpu_ms"] / 1000, wall_s=report["duration_ms"] / 1000, memory_mb=report["memory_mb"]
    )
    assert report["energy_j"] == pytest.approx(expected, rel=1e-3)


@pytest.mark.timeout(90)
def test_precise_cpu_agrees_with_psutil(cloud):
    samples = []
    with cloud.client() as client:
        for _ in range(20):
            client.invoke("cpu-burn", {"cpu_ms": 100})
            samples.append(_worker(client)["cpu_ms"])
        time.sleep(2.5)  # the meter samples psutil about once a second
        worker = wait_until(lambda: _worker(client).get("cpu_ms_psutil") and _worker(client), timeout=10, message="a psutil sample")

    assert samples == sorted(samples)  # cumulative CPU never goes down
    precise = worker["init_cpu_ms"] + worker["cpu_ms"]
    measured = worker["cpu_ms_psutil"]
    assert measured == pytest.approx(precise, rel=0.05), worker


def _worker(client) -> dict:
    (worker,) = client.ls()["functions"]["cpu-burn"]["workers"]
    return worker


@pytest.mark.timeout(60)
def test_energy_options_apply_to_reports(start_cloud, tmp_path):
    config = tmp_path / "cloud.toml"
    config.write_text("[energy]\nwatts_per_gb = 1.0\n")
    cloud = start_cloud(SAMPLE_FUNCTIONS, extra_args=["--config", str(config), "--pue", "1.135"])
    model = EnergyModel(pue=1.135, watts_per_gb=1.0)
    with cloud.client() as client:
        report = client.invoke("cpu-burn", {"cpu_ms": 20}).report
        state = client.energy()
    expected = model.invocation_joules(
        cpu_s=report["cpu_ms"] / 1000, wall_s=report["duration_ms"] / 1000, memory_mb=report["memory_mb"]
    )
    assert report["energy_j"] == pytest.approx(expected, rel=1e-3)
    assert state["model"]["pue"] == 1.135
    assert state["model"]["watts_per_gb"] == 1.0
