"""The netx HDF5 export, loaded by lava-dl's own loader and run against the project's Lava fixed-point run."""

from __future__ import annotations

import h5py
import nir
import numpy as np
import pytest

from hardware.netx_export import NETX_BIAS_EXP, NetxExportError, export_netx, netx_compatible_plan, plan_fixed_point

DT = 1e-3


def _lif(shape, tau=5e-3, v_threshold=1.0):
    return nir.LIF(tau=np.full(shape, tau), r=np.full(shape, tau / DT), v_leak=np.zeros(shape),
                   v_threshold=np.full(shape, v_threshold), v_reset=np.zeros(shape))


def _conv_graph(seed: int = 0, bias: float = 0.0) -> nir.NIRGraph:
    """Input (1, 12, 12) -> Conv2d 1->3, 3x3, stride 1, padding 1 -> LIF -> SumPool2d 2x2 -> LIF (3, 6, 6)."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(0, 0.6, (3, 1, 3, 3)).astype(np.float32)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([1, 12, 12])}),
        "conv": nir.Conv2d(input_shape=(12, 12), weight=weight, stride=(1, 1), padding=(1, 1), dilation=(1, 1),
                           groups=1, bias=np.full(3, bias, dtype=np.float32)),
        "lif": _lif((3, 12, 12)),
        "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "pool_lif": _lif((3, 6, 6), tau=DT, v_threshold=0.5),
        "output": nir.Output(output_type={"output": np.array([3, 6, 6])}),
    }
    names = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(names[:-1], names[1:])), metadata={"dt": DT})


def _spikes(shape, steps=6, batch=2, seed=1, rate=0.4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((steps, batch, *shape)) < rate).astype(np.float64)


def _run_project_plan(plan, spikes: np.ndarray) -> dict[str, np.ndarray]:
    """Run ``plan`` with the project's Lava builder on the same back-to-back timeline as netx."""
    from neuro.backends.lava.builder import build_network, run_network
    from neuro.backends.lava.plan import to_lava_layout

    steps, batch = spikes.shape[:2]
    timeline = np.zeros((plan.period * batch, *spikes.shape[2:]))
    for index in range(batch):
        timeline[index * plan.period:index * plan.period + steps] = spikes[:, index]
    lava_input = np.moveaxis(np.stack([to_lava_layout(frame) for frame in timeline]), 0, -1)
    records = run_network(build_network(plan, lava_input, record_voltage=False))
    return {name: (record.reshape(batch, plan.period, *record.shape[1:]).swapaxes(0, 1) != 0).astype(np.float64)
            for name, record in records.spikes.items()}


@pytest.fixture(scope="module")
def snn_runs(small_snn, small_spikes, tmp_path_factory):
    """Export the small PulmoSNN and run it on netx, on its netx-compatible plan and on lava-fixed."""
    from hardware.netx_run import run_netx
    from neuro.backends.lava import LavaBackend

    _, graph = small_snn
    spikes = small_spikes[:8, :2]
    path = tmp_path_factory.mktemp("netx") / "snn.net"
    export = export_netx(graph, path, dt=DT, num_steps=spikes.shape[0])
    netx = run_netx(path, spikes, reset_interval=export.reset_interval, reset_offset=export.reset_offset)
    project = _run_project_plan(export.netx_plan, spikes)
    lava_fixed = LavaBackend(fixed_point=True).run(graph, spikes, DT)
    return export, netx, project, lava_fixed


@pytest.mark.slow
def test_snn_netx_equals_netx_plan_every_layer(snn_runs):
    export, netx, project, _ = snn_runs
    assert list(netx) == export.layers
    for name in export.layers:
        assert netx[name].shape == project[name].shape, name
        assert np.array_equal(netx[name], project[name]), name
    assert sum(float(netx[name].sum()) for name in export.layers) > 0


@pytest.mark.slow
def test_snn_netx_against_lava_fixed(snn_runs):
    export, netx, _, lava_fixed = snn_runs
    adjusted = {adjustment.layer for adjustment in export.adjustments}
    # The small SNN's Dense layers are planned with weight exponents, which netx cannot store.
    assert adjusted == {"lif3", "lif_out"}
    for name in export.layers:
        reference = lava_fixed.raw_spikes[name]
        assert netx[name].shape == reference.shape, name
        if name in adjusted:
            agreement = float(np.mean(netx[name] == reference))
            assert agreement >= 0.9, (name, agreement)
        else:
            assert np.array_equal(netx[name], reference), name


@pytest.mark.slow
def test_snn_netx_lags_match_lava_fixed(snn_runs):
    export, _, _, lava_fixed = snn_runs
    assert export.lags == {name: lava_fixed.delays[name] for name in export.layers}
    assert export.reset_interval == 8 + max(export.lags.values())
    assert export.reset_offset == 1


@pytest.mark.slow
def test_conv_network_bit_exact_with_lava_fixed(tmp_path):
    from hardware.netx_run import run_netx
    from neuro.backends.lava import LavaBackend

    graph = _conv_graph()
    spikes = _spikes((1, 12, 12))
    export = export_netx(graph, tmp_path / "conv.net", dt=DT, num_steps=spikes.shape[0])
    assert export.exact
    netx = run_netx(export.path, spikes, reset_interval=export.reset_interval, reset_offset=export.reset_offset)
    lava_fixed = LavaBackend(fixed_point=True).run(graph, spikes, DT)
    for name in ("lif", "pool_lif"):
        assert np.array_equal(netx[name], lava_fixed.raw_spikes[name]), name
    assert netx["lif"].sum() > 0
    assert netx["pool_lif"].sum() > 0


def test_file_layout_matches_netx_reader(tmp_path):
    graph = _conv_graph()
    export = export_netx(graph, tmp_path / "conv.net", dt=DT, num_steps=6)
    conv_plan = export.netx_plan.steps[0]
    with h5py.File(export.path, "r") as handle:
        layers = handle["layer"]
        assert sorted(layers, key=int) == ["0", "1", "2"]
        assert layers["0/type"][0] == b"input"
        assert layers["0/shape"][()].tolist() == [1, 12, 12]
        assert layers["1/type"][0] == b"conv"
        assert layers["1/shape"][()].tolist() == [3, 12, 12]
        assert layers["1/stride"][()].tolist() == [1, 1]
        assert layers["1/padding"][()].tolist() == [1, 1]
        assert int(layers["1/groups"][()]) == 1
        assert layers["2/shape"][()].tolist() == [3, 6, 6]
        assert int(layers["2/groups"][()]) == 3
        assert layers["1/neuron/type"][0] == b"CUBA"
        assert int(layers["1/neuron/iDecay"][()]) == 4096
        assert int(layers["1/neuron/vDecay"][()]) == round(4096 * DT / 5e-3)
        stored = layers["1/weight"][()]
    # netx 0.6 (hdf5.py, create_conv) turns the stored kernel into Lava's layout like this:
    lava_kernel = stored[:, :, ::-1, ::-1].transpose((0, 3, 2, 1))
    assert np.array_equal(lava_kernel, conv_plan.weight)
    original = np.asarray(graph.nodes["conv"].weight)
    assert np.array_equal(np.sign(stored), np.sign(np.round(original / np.abs(original).max() * 127)))


def test_bias_rounded_to_netx_exponent(tmp_path):
    export = export_netx(_conv_graph(bias=0.013), tmp_path / "bias.net", dt=DT, num_steps=6)
    planned = next(step for step in export.plan.steps if step.name == "lif")
    written = next(step for step in export.netx_plan.steps if step.name == "lif")
    planned_bias = int(planned.bias_mant) * 2 ** int(planned.bias_exp)
    assert written.bias_exp == NETX_BIAS_EXP
    assert int(written.bias_mant) == round(planned_bias / 64)
    adjustment = next(item for item in export.adjustments if item.layer == "lif")
    assert adjustment.bias_error == abs(round(planned_bias / 64) * 64 - planned_bias)
    assert adjustment.weight_exp == 0
    with h5py.File(export.path, "r") as handle:
        assert np.all(handle["layer/1/bias"][()] == int(written.bias_mant))


def test_weight_exponent_moves_into_threshold(small_snn, tmp_path):
    _, graph = small_snn
    plan = plan_fixed_point(graph, DT, 8)
    adjusted, _, adjustments = netx_compatible_plan(plan)
    for before, after in zip(plan.steps, adjusted.steps):
        if hasattr(before, "weight_exp"):
            assert after.weight_exp == 0
            assert np.array_equal(after.weight, before.weight)
    by_layer = {item.layer: item for item in adjustments}
    for name, synapse in (("lif3", "fc1"), ("lif_out", "fc2")):
        exponent = next(step.weight_exp for step in plan.steps if step.name == synapse)
        vth = next(step.vth for step in plan.steps if step.name == name)
        assert by_layer[name].weight_exp == exponent
        assert by_layer[name].vth_after == round(vth / 2**exponent)


def test_unsupported_node_named(tmp_path):
    nodes = {
        "input": nir.Input(input_type={"input": np.array([4])}),
        "affine": nir.Affine(weight=np.eye(4, dtype=np.float32), bias=np.zeros(4, dtype=np.float32)),
        "li": nir.LI(tau=np.full(4, 5e-3), r=np.ones(4), v_leak=np.zeros(4)),
        "output": nir.Output(output_type={"output": np.array([4])}),
    }
    graph = nir.NIRGraph(nodes=nodes, edges=[("input", "affine"), ("affine", "li"), ("li", "output")])
    path = tmp_path / "li.net"
    with pytest.raises(NotImplementedError, match="'li' is a LI"):
        export_netx(graph, path, dt=DT, num_steps=4)
    assert not path.exists()


def test_graded_synapse_chain_rejected(tmp_path):
    graph = _conv_graph()
    nodes = dict(graph.nodes)
    nodes.pop("lif")
    edges = [("input", "conv"), ("conv", "pool"), ("pool", "pool_lif"), ("pool_lif", "output")]
    with pytest.raises(NotImplementedError, match="without a neuron"):
        export_netx(nir.NIRGraph(nodes=nodes, edges=edges), tmp_path / "graded.net", dt=DT, num_steps=4)


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    import hardware.netx_export as netx_export

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(netx_export, "_write_neuron", fail)
    with pytest.raises(OSError, match="disk full"):
        export_netx(_conv_graph(), tmp_path / "conv.net", dt=DT, num_steps=4)
    assert list(tmp_path.iterdir()) == []


def test_zero_weights_rejected(tmp_path):
    graph = _conv_graph()
    graph.nodes["conv"].weight = np.zeros_like(graph.nodes["conv"].weight)
    with pytest.raises(NetxExportError, match="only zero weights"):
        export_netx(graph, tmp_path / "zero.net", dt=DT, num_steps=4)


@pytest.mark.slow
def test_calibrated_plan_passed_through(tmp_path):
    from hardware.netx_run import run_netx
    from neuro.backends.lava import LavaBackend
    from neuro.backends.lava.calibration import calibrate

    graph = _conv_graph(seed=2)
    spikes = _spikes((1, 12, 12), seed=3)
    calibration = calibrate(graph, spikes, DT)
    export = export_netx(graph, tmp_path / "calibrated.net", dt=DT, num_steps=spikes.shape[0],
                         calibration=calibration)
    worst_case = plan_fixed_point(graph, DT, spikes.shape[0])
    calibrated_vth = next(step.vth for step in export.plan.steps if step.name == "lif")
    worst_case_vth = next(step.vth for step in worst_case.steps if step.name == "lif")
    assert not np.array_equal(calibrated_vth, worst_case_vth)

    netx = run_netx(export.path, spikes, reset_interval=export.reset_interval, reset_offset=export.reset_offset)
    lava_fixed = LavaBackend(fixed_point=True, calibration=calibration).run(graph, spikes, DT)
    for name in ("lif", "pool_lif"):
        assert np.array_equal(netx[name], lava_fixed.raw_spikes[name]), name


@pytest.mark.slow
def test_calibrated_export_netx_loads(small_snn, tmp_path, monkeypatch):
    """A calibrated ``export_snn`` writes a netx file that netx loads and runs like its netx-compatible plan."""
    from hardware.export import ExportSource, calibrate_source, export_snn
    from hardware.netx_run import run_netx

    monkeypatch.setenv("PULMOFUSION_CACHE", str(tmp_path / "cohort-cache"))
    _, graph = small_snn
    source = ExportSource(graph, DT, "small PulmoSNN")
    calibration = calibrate_source(source, clips=2, num_steps=8)
    result = export_snn(tmp_path / "out", source, num_steps=8, calibration=calibration)
    assert result.netx.plan.policy == "calibrated"
    assert result.quantisation["policy"] == "calibrated"

    spikes = calibration.spikes
    export = result.netx
    netx = run_netx(result.files["network.net"], spikes, reset_interval=export.reset_interval,
                    reset_offset=export.reset_offset)
    project = _run_project_plan(export.netx_plan, spikes)
    assert list(netx) == export.layers
    for name in export.layers:
        assert np.array_equal(netx[name], project[name]), name
    assert netx["lif1"].sum() > 0
