"""Energy study: power-law fits, crossovers, the sweep configuration and a quick run of the benchmark."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from hardware.counting import count_run
from hardware.energy import load_energy_table
from hardware.energy_study import StudyConfig, StudyPoint, price, snn_workload, study_clips
from hardware.power_law import find_crossover, fit_power_law
from neuro.backends import create_backend

ROOT = Path(__file__).resolve().parents[1]


def _benchmark():
    spec = importlib.util.spec_from_file_location("energy_study_cli", ROOT / "benchmarks" / "energy_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("exponent, coefficient", [(1.0, 2.0), (1.5, 3.0), (2.0, 0.25), (0.5, 10.0)])
def test_fit_recovers_exact_power_law(exponent, coefficient):
    work = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    fit = fit_power_law(work, coefficient * work ** exponent)
    assert fit.exponent == pytest.approx(exponent, abs=1e-9)
    assert fit.coefficient == pytest.approx(coefficient, rel=1e-9)
    assert fit.r_squared == pytest.approx(1.0, abs=1e-12)
    assert fit.points == 5


def test_fit_with_noise_is_close():
    rng = np.random.default_rng(0)
    work = np.geomspace(1e3, 1e6, 8)
    cost = 5.0 * work ** 1.2 * np.exp(rng.normal(0.0, 0.05, work.size))
    fit = fit_power_law(work, cost)
    assert fit.exponent == pytest.approx(1.2, abs=0.05)
    assert 0.99 < fit.r_squared < 1.0


def test_fit_constant_work_has_no_exponent():
    fit = fit_power_law([100, 100, 100], [1.0, 2.0, 3.0])
    assert fit.exponent is None
    assert "does not change" in fit.reason


def test_fit_zero_cost_has_no_exponent():
    fit = fit_power_law([1, 2, 4], [0.0, 1.0, 2.0])
    assert fit.exponent is None
    assert "zero" in fit.reason


def test_crossover_within_range_interpolates():
    # ratio = 0.5 * x reaches 1 at x = 2, between the measured 1 and 4.
    crossover = find_crossover("frames", [1, 4], [0.5, 2.0])
    assert crossover.kind == "within"
    assert crossover.axis_value == pytest.approx(2.0)


def test_crossover_extrapolated_from_fit():
    # ratio = 0.1 * x reaches 1 at x = 10, beyond the measured 1..4.
    crossover = find_crossover("steps_per_frame", [1, 2, 4], [0.1, 0.2, 0.4])
    assert crossover.kind == "extrapolated"
    assert crossover.axis_value == pytest.approx(10.0)
    assert crossover.ratio_exponent == pytest.approx(1.0)


def test_crossover_too_far_is_not_extrapolated():
    x = np.array([8.0, 16.0, 32.0])
    crossover = find_crossover("frames", x, 1e-3 * x ** 0.05)
    assert crossover.kind == "none"
    assert crossover.axis_value > 100 * 32


def test_crossover_none_when_ratio_falls():
    crossover = find_crossover("resolution", [32, 64, 128], [0.3, 0.2, 0.1])
    assert crossover.kind == "none"
    assert crossover.axis_value is None


def test_crossover_already_at_first_point():
    crossover = find_crossover("frames", [8, 16], [1.5, 3.0])
    assert crossover.kind == "already"


def test_config_points_share_base():
    config = StudyConfig()
    points = config.points()
    assert len(points) == 12
    assert len({point.key for point in points}) == 10
    base = StudyPoint("frames", 16, (64, 112), 1)
    assert sum(point.key == base.key for point in points) == 3


@pytest.mark.parametrize("changes, field", [
    ({"base_frames": 12}, "base_frames"),
    ({"resolutions": ((30, 56), (64, 112))}, "resolutions"),
    ({"frames": (8, 8, 16)}, "frames"),
    ({"clips": 0}, "clips"),
    ({"backend": "lava-fixed"}, "backend"),
])
def test_config_rejects_invalid(changes, field):
    with pytest.raises(ValueError, match=f"StudyConfig.{field}"):
        StudyConfig(**changes)


def test_cli_rejects_bad_options(tmp_path, capsys):
    cli = _benchmark()
    assert cli.main(["--resolutions", "60:56,64:112", "--out", str(tmp_path)]) == 2
    assert "multiple of 8" in capsys.readouterr().err
    assert cli.main(["--resolutions", "64x112", "--out", str(tmp_path)]) == 2
    assert "SNN:X3D" in capsys.readouterr().err
    assert cli.main(["--energy-table", str(tmp_path / "absent.json"), "--out", str(tmp_path)]) == 2
    assert "absent.json" in capsys.readouterr().err
    assert cli.main(["--help"]) == 0


@pytest.mark.slow
def test_quick_run_outputs_and_counts(tmp_path, capsys):
    out = tmp_path / "study"
    assert _benchmark().main(["--quick", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "snn_synaptic_operations" in printed
    for name in ("results.json", "results.md", "energy_vs_input.png", "latency_vs_input.png"):
        assert (out / name).stat().st_size > 0, name
    data = json.loads((out / "results.json").read_text())
    assert set(data) >= {"config", "points", "fits", "crossovers", "energy_table", "notes", "run_details"}
    assert set(data["fits"]) == {"frames", "resolution", "steps_per_frame"}
    assert len(data["points"]) == 6

    frames = sorted((row for row in data["points"] if row["axis"] == "frames"), key=lambda row: row["frames"])
    operations = [row["snn"]["synaptic_operations_per_clip"] for row in frames]
    assert operations == sorted(operations)
    assert operations[0] < operations[-1]
    macs = [row["cnn"]["macs_per_clip"] for row in frames]
    assert macs[0] < macs[-1]
    steps = [row for row in data["points"] if row["axis"] == "steps_per_frame"]
    assert len({row["cnn"]["macs_per_clip"] for row in steps}) == 1

    # Recount the base point with count_run and price it by hand.
    base = frames[0]
    config = StudyConfig(**{key: tuple(map(tuple, value)) if key == "resolutions" else
                            tuple(value) if isinstance(value, list) else value
                            for key, value in data["config"].items()})
    point = StudyPoint("frames", base["frames"], (base["snn_resolution"], base["x3d_resolution"]),
                       base["steps_per_frame"])
    clips = study_clips(config.clips, [point.frames], seed=config.seed)[point.frames]
    graph, spikes = snn_workload(point, clips, config)
    counts = count_run(graph, spikes, create_backend("reference").run(graph, spikes, config.dt).spikes)
    assert base["snn"]["synaptic_operations_per_clip"] == counts.per_sample(counts.total_synaptic_operations)
    assert base["snn"]["spikes_per_clip"] == counts.per_sample(counts.total_spikes)
    table = load_energy_table()
    loihi = (counts.per_sample(counts.total_synaptic_operations) * table["loihi_sop_pj"].value
             + counts.per_sample(counts.total_neuron_updates) * table["loihi_neuron_update_active_pj"].value)
    assert math.isclose(base["energy"]["snn_loihi_pj"], loihi, rel_tol=1e-12)
    cnn = base["cnn"]["macs_per_clip"] * table["cmos45_fp32_mac_pj"].value
    assert math.isclose(base["energy"]["cnn_45nm_fp32_pj"], cnn, rel_tol=1e-12)


def test_price_uses_user_table(tmp_path):
    path = tmp_path / "energy.json"
    path.write_text(json.dumps({"loihi_sop_pj": {"value": 10.0, "source": "my chip"}}), encoding="utf-8")
    snn = {"synaptic_operations_per_clip": 1000.0, "neuron_updates_per_clip": 100.0}
    cnn = {"macs_per_clip": 50.0}
    energy = price(snn, cnn, load_energy_table(path))
    assert energy["snn_loihi_pj"] == pytest.approx(1000 * 10.0 + 100 * 81.0)
    assert energy["cnn_45nm_fp32_pj"] == pytest.approx(50 * 4.6)
    assert energy["loihi_to_cnn_fp32"] == pytest.approx((1000 * 10.0 + 100 * 81.0) / (50 * 4.6))
    assert "loihi_sop_pj" in energy["caveats"]


def test_two_points_give_no_trend():
    fit = fit_power_law([10.0, 20.0], [1.0, 4.0])
    assert fit.exponent is None
    assert fit.reason == "only 2 input sizes were measured; a trend needs at least 3"
    crossover = find_crossover("frames", [10.0, 20.0], [0.1, 0.4])
    assert crossover.kind == "none"
    assert crossover.axis_value is None
    assert "no trend is fitted" in crossover.text
