"""Tests of the fixed-point calibration, the integer emulator and the overflow report.

Lava runs start one OS process per Lava process, so only four tests run Lava.  The
others check the plan and the integer emulator, which those four show to be bit-exact.
"""

from __future__ import annotations

import nir
import numpy as np
import pytest

from neuro.agreement import compare_runs
from neuro.backends.lava import LavaBackend
from neuro.backends.lava.calibration import CalibrationConfig, calibrate
from neuro.backends.lava.fixed_point import ACTIVATION_SHIFT, VTH_MAX, WeightGrid, balance_rows, quantise_to_grid
from neuro.backends.lava.integer_model import STATE_LIMIT, emulate
from neuro.backends.lava.plan import SynapsePlan, plan_network
from neuro.backends.reference import ReferenceBackend

DT = 1e-3


def _lif(shape, tau, r=1.0, v_leak=0.0, v_threshold=1.0) -> nir.LIF:
    def full(value):
        return np.broadcast_to(np.asarray(value, dtype=np.float64), shape).copy()
    return nir.LIF(tau=full(tau), r=full(r), v_leak=full(v_leak), v_threshold=full(v_threshold),
                   v_reset=np.zeros(shape))


def _graph(nodes: dict[str, nir.NIRNode], input_shape, output_shape) -> nir.NIRGraph:
    all_nodes = {"input": nir.Input(input_type={"input": np.array(input_shape)}), **nodes,
                 "output": nir.Output(output_type={"output": np.array(output_shape)})}
    names = list(all_nodes)
    return nir.NIRGraph(nodes=all_nodes, edges=list(zip(names[:-1], names[1:])))


def _spikes(rng: np.random.Generator, shape, rate: float) -> np.ndarray:
    return (rng.random(shape) < rate).astype(np.float64)


@pytest.fixture(scope="module")
def conv_network() -> nir.NIRGraph:
    """Conv -> LIF -> SumPool -> LIF -> Dense -> LIF, with biases and per-neuron thresholds."""
    rng = np.random.default_rng(11)
    nodes = {
        "conv": nir.Conv2d(input_shape=(8, 8), weight=rng.normal(0.0, 0.6, size=(4, 2, 3, 3)), stride=1, padding=1,
                           dilation=1, groups=1, bias=rng.normal(0.05, 0.02, size=4)),
        "lif1": _lif((4, 8, 8), tau=4 * DT, r=2.0, v_leak=0.05, v_threshold=0.8),
        "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "pool_lif": _lif((4, 4, 4), tau=DT, r=1.0, v_threshold=0.5),
        "flatten": nir.Flatten(input_type={"input": np.array([4, 4, 4])}, start_dim=0, end_dim=-1),
        "fc": nir.Affine(weight=rng.normal(0.0, 0.5, size=(6, 64)), bias=rng.normal(0.0, 0.05, size=6)),
        "lif2": _lif((6,), tau=np.linspace(2, 7, 6) * DT, r=1.5, v_threshold=np.linspace(0.3, 0.8, 6)),
    }
    return _graph(nodes, (2, 8, 8), (6,))


@pytest.fixture(scope="module")
def dense_network() -> nir.NIRGraph:
    """Two Dense -> LIF layers.  The first has 40 inputs, so its worst-case and typical input differ widely."""
    rng = np.random.default_rng(12)
    nodes = {
        "fc1": nir.Linear(weight=rng.normal(0.1, 0.4, size=(16, 40))),
        "lif1": _lif((16,), tau=5 * DT, r=5.0, v_threshold=1.0),
        "fc2": nir.Linear(weight=rng.normal(0.0, 0.6, size=(3, 16))),
        "lif2": _lif((3,), tau=5 * DT, r=5.0, v_threshold=1.0),
    }
    return _graph(nodes, (40,), (3,))


def _plan(graph, spikes, calibration=None):
    return plan_network(graph, DT, spikes.shape[0], fixed_point=True, input_bound=np.ones(spikes.shape[2:]),
                        input_graded=False, calibration=calibration)


def _aligned(plan, run, name, steps):
    lag = plan.values[name].lag
    return run.raw_spikes[name][lag:lag + steps]


# ---------------------------------------------------------------- configuration and calibration


@pytest.mark.parametrize(("field", "value"), [("percentile", 0.0), ("percentile", 101.0), ("headroom", 0.5),
                                              ("headroom", float("inf"))])
def test_calibration_config_rejects_out_of_range(field, value):
    with pytest.raises(ValueError, match=f"CalibrationConfig.{field}"):
        CalibrationConfig(**{field: value})


def test_calibrate_records_synaptic_peaks(dense_network):
    rng = np.random.default_rng(1)
    spikes = _spikes(rng, (20, 3, 40), 0.2)
    weight = dense_network.nodes["fc1"].weight

    calibration = calibrate(dense_network, spikes, DT)

    expected = np.abs(spikes @ weight.T).max(axis=(0, 1))
    np.testing.assert_allclose(calibration.peak["fc1"], expected, rtol=1e-12)
    assert calibration.level["fc1"] == pytest.approx(expected.max())
    assert set(calibration.peak) == {"fc1", "fc2"}
    assert np.all(calibration.voltage_floor["lif1"] >= 0)
    assert calibration.voltage_floor["lif1"].max() > 0


def test_percentile_level_is_below_peak(dense_network):
    spikes = _spikes(np.random.default_rng(2), (20, 3, 40), 0.2)

    calibration = calibrate(dense_network, spikes, DT, CalibrationConfig(percentile=90.0))

    values = np.abs(spikes @ dense_network.nodes["fc1"].weight.T).reshape(-1)
    assert calibration.level["fc1"] == pytest.approx(np.percentile(values.astype(np.float32), 90.0), rel=1e-5)
    assert calibration.level["fc1"] < calibration.peak["fc1"].max()


def test_calibration_of_other_graph_is_rejected(dense_network, conv_network):
    spikes = _spikes(np.random.default_rng(3), (5, 2, 2, 8, 8), 0.3)
    calibration = calibrate(conv_network, spikes, DT)

    with pytest.raises(ValueError, match="calibrate on this graph"):
        _plan(dense_network, np.zeros((5, 1, 40)), calibration)
    with pytest.raises(ValueError, match="fixed_point=True"):
        LavaBackend(False, calibration=calibration)


def test_calibrated_rows_fill_weight_grid(conv_network):
    spikes = _spikes(np.random.default_rng(4), (10, 2, 2, 8, 8), 0.3)

    plan = _plan(conv_network, spikes, calibrate(conv_network, spikes, DT))

    for step in plan.steps:
        if isinstance(step, SynapsePlan) and step.name in ("conv", "fc"):
            rows = np.abs(step.nir_weight.reshape(step.nir_weight.shape[0], -1)).max(axis=1)
            np.testing.assert_array_equal(rows, np.full(rows.shape, 254), err_msg=step.name)
    report = plan.quantisation["lif1"]
    assert report.row_scales.shape == (4,)
    assert np.all(report.vth >= 1)
    assert np.all(report.vth <= VTH_MAX)
    # Per-channel scales give per-channel thresholds: 0.8 times each channel's scale.
    np.testing.assert_array_equal(report.vth[:, 0, 0], np.round(0.8 * report.row_scales))


def test_balanced_rounding_bounds_row_error():
    rng = np.random.default_rng(13)
    grid = WeightGrid(-256, 254, 2)
    values = rng.uniform(-250, 250, size=(5, 300))
    rounded, _ = quantise_to_grid(values, grid)

    balanced = balance_rows(values, rounded, grid)

    assert np.abs((rounded - values).sum(axis=1)).max() > grid.step, "plain rounding should leave a large sum"
    assert np.all(np.abs((balanced - values).sum(axis=1)) <= grid.step / 2)
    assert np.all(np.abs(balanced - values) <= grid.step)
    assert np.all(balanced % 2 == 0)
    assert balanced.min() >= grid.low
    assert balanced.max() <= grid.high


# ---------------------------------------------------------------- emulator and overflow


def test_first_layer_wrap_count_matches_formula(dense_network):
    rng = np.random.default_rng(5)
    weak, strong = _spikes(rng, (15, 4, 40), 0.05), _spikes(rng, (15, 4, 40), 0.9)
    plan = _plan(dense_network, strong, calibrate(dense_network, weak, DT, CalibrationConfig(headroom=1.0)))
    synapse = next(step for step in plan.steps if isinstance(step, SynapsePlan) and step.name == "fc1")

    run = emulate(plan, strong)

    # lif1 has du = 4095 + 1: u is this step's input shifted by 6 bits, wrapped into 24 bits.
    activation = (strong.astype(np.int64) @ synapse.nir_weight.T) << synapse.weight_exp << ACTIVATION_SHIFT
    expected = int(np.count_nonzero((activation > STATE_LIMIT) | (activation <= -STATE_LIMIT)))
    assert expected > 0, "the strong input should overflow the weakly calibrated layer"
    assert run.overflow.count("lif1", "u wrap") == expected
    event = next(e for e in run.overflow.events if e.layer == "lif1" and e.kind == "u wrap")
    first = np.argwhere((activation > STATE_LIMIT) | (activation <= -STATE_LIMIT))[0]
    assert event.first == tuple(int(i) for i in first)
    assert event.peak > 1.0


def test_worst_case_never_overflows(dense_network, conv_network):
    rng = np.random.default_rng(6)
    cases = ((dense_network, _spikes(rng, (15, 4, 40), 0.95)), (conv_network, _spikes(rng, (12, 3, 2, 8, 8), 0.95)))

    for graph, spikes in cases:
        report = emulate(_plan(graph, spikes), spikes).overflow
        assert report.total == 0, [event.summary() for event in report.occurred()]
        assert {event.kind for event in report.events} >= {"u wrap", "v saturation"}


def test_calibrated_agreement_not_below_worst_case(conv_network):
    rng = np.random.default_rng(7)
    calibration_spikes, spikes = _spikes(rng, (12, 4, 2, 8, 8), 0.3), _spikes(rng, (12, 6, 2, 8, 8), 0.3)
    reference = ReferenceBackend().run(conv_network, spikes, DT)
    calibration = calibrate(conv_network, calibration_spikes, DT)

    differing = {}
    for policy, plan in (("worst_case", _plan(conv_network, spikes)),
                         ("calibrated", _plan(conv_network, spikes, calibration))):
        run = emulate(plan, spikes)
        assert run.overflow.total == 0
        differing[policy] = {name: int(np.count_nonzero(_aligned(plan, run, name, 12) != reference.spikes[name]))
                             for name in plan.spiking}

    # Measured with these seeds (lif1 has 12 * 6 * 256 = 18432 entries, pool_lif 4608, lif2 432).
    assert differing["worst_case"] == {"lif1": 49, "pool_lif": 28, "lif2": 20}
    assert differing["calibrated"] == {"lif1": 15, "pool_lif": 7, "lif2": 8}


# ---------------------------------------------------------------- against Lava


def test_emulator_matches_lava_with_overflow(dense_network):
    rng = np.random.default_rng(8)
    weak, strong = _spikes(rng, (15, 4, 40), 0.05), _spikes(rng, (15, 4, 40), 0.9)
    calibration = calibrate(dense_network, weak, DT, CalibrationConfig(headroom=1.0))
    backend = LavaBackend(True, calibration=calibration)

    with pytest.warns(RuntimeWarning, match="wrap/saturation events"):
        run = backend.run(dense_network, strong, DT)

    assert run.policy == "calibrated"
    assert run.emulator_mismatch == 0
    expected = emulate(backend.last_plan, strong)
    assert run.overflow.total == expected.overflow.total > 0
    assert run.overflow.count("lif1", "u wrap") > 0
    assert any(note.startswith("Overflow: lif1") for note in run.notes)


def test_emulator_matches_lava_calibrated_conv(conv_network):
    rng = np.random.default_rng(9)
    spikes = _spikes(rng, (10, 3, 2, 8, 8), 0.3)
    calibration = calibrate(conv_network, _spikes(rng, (10, 3, 2, 8, 8), 0.3), DT)
    float_run = LavaBackend(False).run(conv_network, spikes, DT)

    run = LavaBackend(True, calibration=calibration).run(conv_network, spikes, DT)

    assert run.emulator_mismatch == 0
    for layer in compare_runs(float_run, run):
        assert layer.agreement > 0.95, f"{layer.layer}: {layer.agreement:.2%}"


def test_emulator_matches_lava_graded_chain():
    rng = np.random.default_rng(10)
    nodes = {
        "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "conv": nir.Conv2d(input_shape=(4, 4), weight=rng.normal(0.0, 0.5, size=(3, 2, 3, 3)), stride=1, padding=1,
                           dilation=1, groups=1, bias=np.zeros(3)),
        "lif": _lif((3, 4, 4), tau=3 * DT, v_threshold=0.4),
    }
    graph = _graph(nodes, (2, 8, 8), (3, 4, 4))
    spikes = _spikes(rng, (10, 2, 2, 8, 8), 0.3)

    run = LavaBackend(True, calibration=calibrate(graph, spikes, DT)).run(graph, spikes, DT)

    assert run.emulator_mismatch == 0
    assert run.spikes["lif"].sum() > 0
    assert run.overflow.total == 0


# ---------------------------------------------------------------- benchmark command line


def _benchmark_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "fixed_point.py"
    spec = importlib.util.spec_from_file_location("fixed_point_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_help_and_bad_options(tmp_path, capsys):
    benchmark = _benchmark_module()

    assert benchmark.main(["--help"]) == 0
    assert "--calibration-clips" in capsys.readouterr().out
    assert benchmark.main(["--clips", "0", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "error: --clips must be at least 1, got 0"
    assert benchmark.main(["--headroom", "0.5", "--out", str(tmp_path), "--clips", "1"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: CalibrationConfig.headroom = 0.5 is invalid")
    assert "\n" not in error
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert benchmark.main(["--out", str(blocker)]) == 2
    assert "is an existing file" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.tmp"))


def test_benchmark_bad_checkpoint_leaves_no_folder(tmp_path, capsys):
    import torch

    benchmark = _benchmark_module()
    checkpoint = tmp_path / "plain.pt"
    torch.save({"a": 1}, checkpoint)
    out = tmp_path / "out"
    assert benchmark.main(["--checkpoint", str(checkpoint), "--out", str(out)]) == 2
    assert str(checkpoint) in capsys.readouterr().err
    assert not out.exists()
