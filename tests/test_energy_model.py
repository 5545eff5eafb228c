"""The energy model against hand-computed values."""

from __future__ import annotations

import pytest

from minicloud.energy import EnergyModel


def test_one_cpu_second_at_one_vcpu_without_memory():
    model = EnergyModel(watts_per_gb=0.0)
    # 1 vCPU (1769 MB) busy for 1 s: 0.74 W idle share + (3.5 - 0.74) W of work = 3.5 J.
    assert model.invocation_joules(cpu_s=1.0, wall_s=1.0, memory_mb=1769) == pytest.approx(3.5)


def test_memory_and_idle_share():
    model = EnergyModel()
    # 128 MB waiting 2 s with no CPU: 2 * 0.74 * 128/1769 + 2 * 0.125 * 0.392.
    expected = 2 * 0.74 * 128 / 1769 + 2 * (128 / 1024) * 0.392
    assert model.invocation_joules(cpu_s=0.0, wall_s=2.0, memory_mb=128) == pytest.approx(expected)


def test_pue_scales_everything():
    local = EnergyModel()
    aws = EnergyModel(pue=1.135)
    joules = local.invocation_joules(cpu_s=0.2, wall_s=0.3, memory_mb=512)
    assert aws.invocation_joules(cpu_s=0.2, wall_s=0.3, memory_mb=512) == pytest.approx(joules * 1.135)


def test_dedicated_server_baseline():
    model = EnergyModel(baseline_vcpus=2, baseline_memory_gb=4.0)
    # 2 vCPUs idle for 10 s, 1 s of CPU work, 4 GB for 10 s.
    expected = 2 * 0.74 * 10 + 1.0 * (3.5 - 0.74) + 4 * 0.392 * 10
    assert model.dedicated_joules(cpu_s=1.0, wall_s=10.0) == pytest.approx(expected)
