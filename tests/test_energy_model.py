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


def test_config_file_and_overrides(tmp_path):
    from minicloud.energy import load_energy_model

    config = tmp_path / "cloud.toml"
    config.write_text("[energy]\npue = 1.135\nbaseline_vcpus = 8\n")
    model = load_energy_model(config, {"watts_per_gb": 0.5})
    assert model.pue == 1.135
    assert model.baseline_vcpus == 8
    assert model.watts_per_gb == 0.5
    assert model.idle_watts_per_vcpu == 0.74  # untouched default


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[energy]\npue = 0.9\n", "below 1.0"),
        ("[energy]\nwatts = 3\n", "unknown key 'watts'"),
        ("[energy]\nmax_watts_per_vcpu = 0.5\n", "below idle_watts_per_vcpu"),
        ("[energy]\npue = 'high'\n", "expected a number"),
        ("[energy\n", "invalid TOML"),
    ],
)
def test_invalid_energy_config(tmp_path, text, words):
    from minicloud.energy import load_energy_model

    config = tmp_path / "cloud.toml"
    config.write_text(text)
    with pytest.raises(ValueError) as raised:
        load_energy_model(config)
    assert str(config) in str(raised.value)
    assert words in str(raised.value)


def _fake_powercap(root, domains):
    """Write a powercap tree: {folder: (name, energy_uj, max_energy_range_uj)}."""
    for folder, (name, energy, max_range) in domains.items():
        path = root / folder
        path.mkdir(parents=True)
        (path / "name").write_text(name + "\n")
        (path / "energy_uj").write_text(f"{energy}\n")
        (path / "max_energy_range_uj").write_text(f"{max_range}\n")


def test_rapl_sums_packages_and_handles_wrap(tmp_path):
    from minicloud.rapl import RaplReader

    _fake_powercap(tmp_path, {
        "intel-rapl:0": ("package-0", 999_000_000, 1_000_000_000),
        "intel-rapl:0:0": ("core", 5_000_000, 1_000_000_000),  # part of package 0: not added again
        "intel-rapl:1": ("package-1", 10_000_000, 1_000_000_000),
        "intel-rapl:2": ("psys", 0, 1_000_000_000),  # not a package
    })
    reader = RaplReader(tmp_path)
    assert reader.available
    assert [domain.name for domain in reader.domains] == ["package-0", "package-1"]

    # package-0 wraps: 1,000 J range, from 999 J to 2 J is 3 J; package-1 goes up 4 J.
    (tmp_path / "intel-rapl:0" / "energy_uj").write_text("2000000\n")
    (tmp_path / "intel-rapl:1" / "energy_uj").write_text("14000000\n")
    (tmp_path / "intel-rapl:0:0" / "energy_uj").write_text("900000000\n")
    assert reader.read_joules() == pytest.approx(7.0)
    assert reader.read_joules() == 0.0


def test_rapl_absent_or_unreadable(tmp_path):
    from minicloud.rapl import RaplReader

    missing = RaplReader(tmp_path / "nothing")
    assert not missing.available
    assert "does not exist" in missing.unavailable_reason

    _fake_powercap(tmp_path / "tree", {"intel-rapl:0": ("package-0", 1, 10)})
    (tmp_path / "tree" / "intel-rapl:0" / "energy_uj").unlink()
    unreadable = RaplReader(tmp_path / "tree")
    assert not unreadable.available
    assert "intel-rapl:0" in unreadable.unavailable_reason


def test_meter_attributes_measured_energy(tmp_path):
    from minicloud.meter import EnergyMeter
    from minicloud.rapl import RaplReader

    _fake_powercap(tmp_path, {"intel-rapl:0": ("package-0", 0, 10**12)})
    meter = EnergyMeter(EnergyModel(), live_workers=dict, rapl=RaplReader(tmp_path))
    (tmp_path / "intel-rapl:0" / "energy_uj").write_text("5000000\n")
    meter.sample()
    state = meter.state({})
    assert state["measured"]["joules"] == pytest.approx(5.0)
    assert state["measured"]["source"] == "RAPL package counters"
    assert state["watts"] > 0  # the cloud's own process is never free
