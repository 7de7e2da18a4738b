"""Tests of the Lava backend (lava-nc 0.10 CPU simulation, float and fixed point).

Each Lava run compiles and starts one OS process per Lava process, so every test keeps
its graphs and time spans small.
"""

from __future__ import annotations

import subprocess
import sys

import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from nir_traces import REFERENCE_DIR, REFERENCE_DT, reference_trace, spike_steps

from neuro.backends.base import UnsupportedNodeError
from neuro.backends.lava import LavaBackend, LavaMappingError
from neuro.backends.lava.builder import FLOAT_TAG
from neuro.backends.lava.plan import PROCESS_DELAY_STEPS

DT = 1e-3


def _graph(nodes: dict[str, nir.NIRNode], input_shape: tuple[int, ...], output_shape: tuple[int, ...],
           type_check: bool = True) -> nir.NIRGraph:
    """Chain ``nodes`` in insertion order between an Input and an Output node."""
    all_nodes = {"input": nir.Input(input_type={"input": np.array(input_shape)}), **nodes,
                 "output": nir.Output(output_type={"output": np.array(output_shape)})}
    names = list(all_nodes)
    return nir.NIRGraph(nodes=all_nodes, edges=list(zip(names[:-1], names[1:])), type_check=type_check)


def _spikes(rng: np.random.Generator, shape: tuple[int, ...], rate: float) -> np.ndarray:
    return (rng.random(shape) < rate).astype(np.float64)


def _lif(shape, tau, r=1.0, v_leak=0.0, v_threshold=1.0) -> nir.LIF:
    def full(value):
        return np.broadcast_to(np.asarray(value, dtype=np.float64), shape).copy()
    return nir.LIF(tau=full(tau), r=full(r), v_leak=full(v_leak), v_threshold=full(v_threshold),
                   v_reset=np.zeros(shape))


# ---------------------------------------------------------------- NumPy reference


def _conv2d(x: np.ndarray, weight: np.ndarray, bias, stride, padding) -> np.ndarray:
    """Cross-correlation of x (B, C, H, W) with weight (O, C, kH, kW), as PyTorch defines it."""
    x = np.pad(x, ((0, 0), (0, 0), (padding[0], padding[0]), (padding[1], padding[1])))
    windows = np.lib.stride_tricks.sliding_window_view(x, weight.shape[2:], axis=(2, 3))
    windows = windows[:, :, ::stride[0], ::stride[1]]
    return np.einsum("bchwij,ocij->bohw", windows, weight) + np.asarray(bias).reshape(1, -1, 1, 1)


def _sum_pool(x: np.ndarray, k: int) -> np.ndarray:
    b, c, h, w = x.shape
    return x.reshape(b, c, h // k, k, w // k, k).sum(axis=(3, 5))


def _lif_step(v, current, node: nir.LIF, dt):
    v = v + (dt / node.tau) * (node.v_leak - v + node.r * current)
    spikes = (v > node.v_threshold).astype(np.float64)
    return spikes, np.where(spikes > 0, 0.0, v)


# ---------------------------------------------------------------- published reference trace


@pytest.fixture(scope="module")
def reference_lif():
    path = REFERENCE_DIR / "lif_norse.nir"
    if not path.is_file():
        pytest.skip(f"published NIR reference graph not found at {path}")
    graph = nir.read(path)
    inputs = reference_trace("exact")[:, 0].reshape(1000, 1, 1)
    return graph, inputs


def test_reference_lif_float_spike_steps(reference_lif):
    graph, inputs = reference_lif
    run = LavaBackend(fixed_point=False).run(graph, inputs, REFERENCE_DT, record_voltage=True)
    neuron = "1"

    assert run.delays[neuron] == 1
    assert spike_steps(run.raw_spikes[neuron][:1000]) == spike_steps(reference_trace("lava_cpu_float")[:, 2])
    assert spike_steps(run.raw_spikes[neuron][:1000]) == [461, 511, 711, 761]
    assert spike_steps(run.spikes[neuron]) == spike_steps(reference_trace("exact")[:, 2])
    assert spike_steps(run.spikes[neuron]) == [460, 510, 710, 760]
    # The published float trace stores float32 voltages after the reset.
    published_voltage = reference_trace("lava_cpu_float")[:, 1]
    np.testing.assert_allclose(run.raw_voltages[neuron][:1000, 0, 0], published_voltage, atol=1e-6)


def test_reference_lif_fixed_spike_steps(reference_lif):
    graph, inputs = reference_lif
    backend = LavaBackend(fixed_point=True)
    run = backend.run(graph, inputs, REFERENCE_DT)
    neuron = "1"
    raw_steps = spike_steps(run.raw_spikes[neuron][:1000])

    assert raw_steps == spike_steps(reference_trace("lava_cpu_fixed")[:, 2])
    assert raw_steps == spike_steps(reference_trace("lava_loihi_fixed")[:, 2])
    assert spike_steps(run.spikes[neuron]) == [460, 510, 710, 760]
    report = backend.last_quantisation[neuron]
    assert report.dv.item() == round(REFERENCE_DT / 0.0025 * 4096)
    assert report.clipped_weights == 0
    assert report.clipped_thresholds == 0


# ---------------------------------------------------------------- delays and layouts


def _measure_delay(build_process, shape: tuple[int, ...] = (1, 1, 1)) -> int:
    """Send one impulse through a single Lava process; return the step at which it comes out."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.extractor import Extractor, PyLoihiExtractorModel
    from lava.proc.io.source import RingBuffer

    steps = 4
    data = np.zeros((*shape, steps))
    data[..., 0] = 1.0
    source = RingBuffer(data=data)
    process, in_port, out_port = build_process()
    extractor = Extractor(shape=shape, buffer_size=steps)
    if in_port is None:
        source.s_out.connect(extractor.in_port)
    else:
        source.s_out.connect(in_port)
        out_port.connect(extractor.in_port)
    config = Loihi2SimCfg(select_tag=FLOAT_TAG, exception_proc_model_map={Extractor: PyLoihiExtractorModel})
    try:
        source.run(condition=RunSteps(num_steps=steps), run_cfg=config)
        received = [float(extractor.receive().sum()) for _ in range(steps)]
    finally:
        source.stop()
    return received.index(1.0)


def test_process_delays_match_lava():
    from lava.proc.conv.process import Conv
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer
    from lava.proc.lif.process import LIFReset

    def dense():
        process = Dense(weights=np.ones((1, 1)))
        return process, process.s_in, process.a_out

    def conv():
        process = Conv(weight=np.ones((1, 1, 1, 1)), input_shape=(1, 1, 1))
        return process, process.s_in, process.a_out

    def lif():
        process = LIFReset(shape=(1, 1, 1), du=1.0, dv=0.0, vth=0.5, reset_interval=100)
        return process, process.a_in, process.s_out

    measured = {
        Dense: _measure_delay(dense, (1,)), Conv: _measure_delay(conv), LIFReset: _measure_delay(lif),
        RingBuffer: _measure_delay(lambda: (None, None, None)),
    }
    assert measured == PROCESS_DELAY_STEPS


def test_conv_layout_matches_torch():
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(6, 2, 3, 5))
    conv = nir.Conv2d(input_shape=None, weight=weight, stride=(2, 1), padding=(1, 2), dilation=(1, 2),
                      groups=2, bias=np.zeros(6))
    # nir 1.0.8's own type check takes C_in / groups as the input channels and ignores dilation.
    graph = _graph({"conv": conv}, (4, 9, 12), (6, 5, 8), type_check=False)
    spikes = _spikes(rng, (3, 2, 4, 9, 12), 0.4)

    run = LavaBackend().run(graph, spikes, DT)

    expected = F.conv2d(torch.as_tensor(spikes.reshape(6, 4, 9, 12)), torch.as_tensor(weight),
                        stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2).numpy().reshape(3, 2, 6, 5, 8)
    assert run.delays["conv"] == 1
    np.testing.assert_allclose(run.output, expected, atol=1e-12)


def test_flatten_matches_pytorch_order():
    rng = np.random.default_rng(2)
    weight = rng.normal(size=(5, 24))
    nodes = {
        "neuron": nir.IF(r=np.ones((2, 3, 4)), v_threshold=np.full((2, 3, 4), 0.5), v_reset=np.zeros((2, 3, 4))),
        "flatten": nir.Flatten(input_type={"input": np.array([2, 3, 4])}, start_dim=0, end_dim=-1),
        "linear": nir.Linear(weight=weight),
    }
    graph = _graph(nodes, (2, 3, 4), (5,))
    spikes = _spikes(rng, (4, 2, 2, 3, 4), 0.5)

    run = LavaBackend().run(graph, spikes, DT)

    flat = torch.flatten(torch.as_tensor(spikes), start_dim=2).numpy()
    np.testing.assert_array_equal(run.spikes["neuron"], spikes)
    np.testing.assert_allclose(run.output, flat @ weight.T, atol=1e-12)


def test_sum_pool_sums_windows():
    rng = np.random.default_rng(3)
    pool = nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))
    graph = _graph({"pool": pool}, (3, 6, 8), (3, 3, 4))
    spikes = _spikes(rng, (3, 2, 3, 6, 8), 0.5)

    run = LavaBackend().run(graph, spikes, DT)

    expected = _sum_pool(spikes.reshape(6, 3, 6, 8), 2).reshape(3, 2, 3, 3, 4)
    np.testing.assert_array_equal(run.output, expected)


# ---------------------------------------------------------------- whole networks against NumPy


def _small_network(rng: np.random.Generator) -> tuple[nir.NIRGraph, dict]:
    """conv -> LIF -> SumPool -> LIF (max pooling) -> flatten -> Affine -> LIF, with biases and leaks."""
    params = {
        "conv_w": rng.normal(0.0, 0.6, size=(4, 2, 3, 3)), "conv_b": rng.normal(0.0, 0.1, size=4),
        "fc_w": rng.normal(0.0, 0.5, size=(6, 64)), "fc_b": rng.normal(0.0, 0.1, size=6),
    }
    nodes = {
        "conv": nir.Conv2d(input_shape=(8, 8), weight=params["conv_w"], stride=1, padding=1, dilation=1,
                           groups=1, bias=params["conv_b"]),
        "lif1": _lif((4, 8, 8), tau=4 * DT, r=2.0, v_leak=0.05, v_threshold=0.8),
        "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "pool_lif": _lif((4, 4, 4), tau=DT, r=1.0, v_threshold=0.5),
        "flatten": nir.Flatten(input_type={"input": np.array([4, 4, 4])}, start_dim=0, end_dim=-1),
        "fc": nir.Affine(weight=params["fc_w"], bias=params["fc_b"]),
        # Per-neuron time constants and thresholds.
        "lif2": _lif((6,), tau=np.linspace(2, 7, 6) * DT, r=1.5, v_threshold=np.linspace(0.3, 0.8, 6)),
    }
    return _graph(nodes, (2, 8, 8), (6,)), nodes


def _small_network_numpy(nodes: dict, spikes: np.ndarray) -> dict[str, np.ndarray]:
    """The canonical forward-Euler equations, layer by layer, in float64."""
    batch = spikes.shape[1]
    v = {"lif1": np.zeros((batch, 4, 8, 8)), "pool_lif": np.zeros((batch, 4, 4, 4)), "lif2": np.zeros((batch, 6))}
    out = {name: [] for name in v}
    conv, fc = nodes["conv"], nodes["fc"]
    for x in spikes:
        s1, v["lif1"] = _lif_step(v["lif1"], _conv2d(x, conv.weight, conv.bias, (1, 1), (1, 1)), nodes["lif1"], DT)
        s2, v["pool_lif"] = _lif_step(v["pool_lif"], _sum_pool(s1, 2), nodes["pool_lif"], DT)
        s3, v["lif2"] = _lif_step(v["lif2"], s2.reshape(batch, -1) @ fc.weight.T + fc.bias, nodes["lif2"], DT)
        for name, record in zip(out, (s1, s2, s3)):
            out[name].append(record)
    return {name: np.stack(records) for name, records in out.items()}


@pytest.fixture(scope="module")
def small_network_run():
    rng = np.random.default_rng(4)
    graph, nodes = _small_network(rng)
    spikes = _spikes(rng, (12, 3, 2, 8, 8), 0.3)
    backend = LavaBackend()
    return graph, nodes, spikes, backend.run(graph, spikes, DT)


def test_small_network_matches_numpy(small_network_run):
    graph, nodes, spikes, run = small_network_run
    expected = _small_network_numpy(nodes, spikes)

    assert run.delays == {"conv": 1, "lif1": 1, "pool": 2, "pool_lif": 2, "flatten": 2, "fc": 3, "lif2": 3,
                          "output": 3}
    for name, record in expected.items():
        assert record.sum() > 0, f"layer {name} never spikes, so the test would not test it"
        np.testing.assert_array_equal(run.spikes[name], record, err_msg=f"layer {name}")
    np.testing.assert_array_equal(run.output, expected["lif2"])


def test_batch_samples_run_independently(small_network_run):
    graph, _, spikes, run = small_network_run
    single = LavaBackend().run(graph, spikes[:, 1:2], DT)

    for name in run.spikes:
        np.testing.assert_array_equal(single.spikes[name][:, 0], run.spikes[name][:, 1], err_msg=name)


def test_chunked_batch_equals_one_run(small_network_run):
    graph, _, spikes, run = small_network_run
    chunked = LavaBackend(max_record_bytes=1).run(graph, spikes, DT)

    for name in run.spikes:
        np.testing.assert_array_equal(chunked.spikes[name], run.spikes[name], err_msg=name)


def test_cuba_lif_and_if_match_numpy():
    rng = np.random.default_rng(5)
    w1, b1 = rng.normal(0.0, 1.0, size=(5, 4)), rng.normal(0.2, 0.1, size=5)
    w2 = rng.normal(0.8, 0.5, size=(3, 5))
    tau_syn, tau_mem = np.linspace(2, 4, 5) * DT, np.full(5, 5 * DT)
    cuba = nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=np.full(5, 2.0), v_leak=np.full(5, 0.1),
                       v_threshold=np.full(5, 0.3), v_reset=np.zeros(5), w_in=np.full(5, 1.5))
    neuron_if = nir.IF(r=np.array([0.5, 1.0, 2.0]), v_threshold=np.full(3, 1.0), v_reset=np.zeros(3))
    graph = _graph({"fc1": nir.Affine(weight=w1, bias=b1), "cuba": cuba, "fc2": nir.Linear(weight=w2),
                    "if": neuron_if}, (4,), (3,))
    spikes = _spikes(rng, (15, 2, 4), 0.4)

    run = LavaBackend().run(graph, spikes, DT, record_voltage=True)

    current, v_cuba, v_if = np.zeros((2, 5)), np.zeros((2, 5)), np.zeros((2, 3))
    expected_cuba, expected_if, expected_v = [], [], []
    for x in spikes:
        current = current + (DT / tau_syn) * (-current + 1.5 * (x @ w1.T + b1))
        v_cuba = v_cuba + (DT / tau_mem) * (0.1 - v_cuba + 2.0 * current)
        s_cuba = (v_cuba > 0.3).astype(np.float64)
        v_cuba = np.where(s_cuba > 0, 0.0, v_cuba)
        v_if = v_if + neuron_if.r * (s_cuba @ w2.T)
        s_if = (v_if > 1.0).astype(np.float64)
        v_if = np.where(s_if > 0, 0.0, v_if)
        expected_cuba.append(s_cuba)
        expected_if.append(s_if)
        expected_v.append(v_cuba)
    assert np.sum(expected_if) > 0
    np.testing.assert_array_equal(run.spikes["cuba"], np.stack(expected_cuba))
    np.testing.assert_array_equal(run.spikes["if"], np.stack(expected_if))
    np.testing.assert_allclose(run.voltages["cuba"], np.stack(expected_v), atol=1e-12)


def test_graded_chain_matches_numpy():
    rng = np.random.default_rng(6)
    weight = rng.normal(0.0, 0.5, size=(3, 2, 3, 3))
    nodes = {
        "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "conv": nir.Conv2d(input_shape=(4, 4), weight=weight, stride=1, padding=1, dilation=1, groups=1,
                           bias=np.zeros(3)),
        "lif": _lif((3, 4, 4), tau=3 * DT, v_threshold=0.4),
    }
    graph = _graph(nodes, (2, 8, 8), (3, 4, 4))
    spikes = _spikes(rng, (10, 2, 2, 8, 8), 0.3)

    run = LavaBackend().run(graph, spikes, DT)

    v, expected = np.zeros((2, 3, 4, 4)), []
    for x in spikes:
        current = _conv2d(_sum_pool(x, 2), weight, np.zeros(3), (1, 1), (1, 1))
        s, v = _lif_step(v, current, nodes["lif"], DT)
        expected.append(s)
    assert run.delays["lif"] == 2
    assert any("graded" in note for note in run.notes)
    np.testing.assert_array_equal(run.spikes["lif"], np.stack(expected))


def test_gains_carried_by_voltage_scale_match_numpy():
    rng = np.random.default_rng(7)
    weight = rng.normal(0.0, 0.8, size=(2, 1, 3, 3))
    # tau varies inside each channel, so Lava's per-channel Conv weights cannot carry dt/tau * r.
    # The neuron fed straight from the input has no synaptic process to carry its gain at all.
    tau = (2.0 + rng.random((2, 6, 6)) * 4.0) * DT
    nodes = {
        "direct": _lif((1, 6, 6), tau=3 * DT, r=2.5, v_threshold=0.6),
        "conv": nir.Conv2d(input_shape=(6, 6), weight=weight, stride=1, padding=1, dilation=1, groups=1,
                           bias=np.array([0.05, -0.05])),
        "varied": _lif((2, 6, 6), tau=tau, r=1.5, v_threshold=0.5),
    }
    graph = _graph(nodes, (1, 6, 6), (2, 6, 6))
    spikes = _spikes(rng, (10, 2, 1, 6, 6), 0.5)

    run = LavaBackend().run(graph, spikes, DT, record_voltage=True)

    v_direct, v_varied = np.zeros((2, 1, 6, 6)), np.zeros((2, 2, 6, 6))
    expected = {"direct": [], "varied": []}
    voltages = {"direct": [], "varied": []}
    for x in spikes:
        s_direct, v_direct = _lif_step(v_direct, x, nodes["direct"], DT)
        current = _conv2d(s_direct, weight, nodes["conv"].bias, (1, 1), (1, 1))
        s_varied, v_varied = _lif_step(v_varied, current, nodes["varied"], DT)
        for name, s, v in (("direct", s_direct, v_direct), ("varied", s_varied, v_varied)):
            expected[name].append(s)
            voltages[name].append(v)
    for name in expected:
        assert np.sum(expected[name]) > 0, f"layer {name} never spikes"
        np.testing.assert_array_equal(run.spikes[name], np.stack(expected[name]), err_msg=name)
        np.testing.assert_allclose(run.voltages[name], np.stack(voltages[name]), atol=1e-12, err_msg=name)


def test_graded_input_reaches_dense():
    rng = np.random.default_rng(8)
    weight = rng.normal(size=(3, 4))
    graph = _graph({"linear": nir.Linear(weight=weight)}, (4,), (3,))
    values = rng.random((5, 2, 4)) * 3.0

    run = LavaBackend().run(graph, values, DT)

    np.testing.assert_allclose(run.output, values @ weight.T, atol=1e-12)


# ---------------------------------------------------------------- fixed point


def test_fixed_point_reports_quantisation(small_network_run):
    graph, _, spikes, float_run = small_network_run
    backend = LavaBackend(fixed_point=True)

    run = backend.run(graph, spikes, DT)

    assert run.backend == "lava-fixed"
    assert set(backend.last_quantisation) == {"lif1", "pool_lif", "lif2"}
    conv_layer = backend.last_quantisation["lif1"]
    assert conv_layer.weight_exp == 0
    assert conv_layer.weight_range[0] >= -256
    assert conv_layer.weight_range[1] <= 255
    # The memoryless pooling neuron needs dv = 4096, one above Lava's 12-bit range.
    assert backend.last_quantisation["pool_lif"].clipped_decays == 4 * 4 * 4
    assert any("pool_lif" in note and "4095" in note for note in run.notes)
    for name in float_run.spikes:
        agreement = np.mean(run.spikes[name] == float_run.spikes[name])
        assert agreement > 0.9, f"layer {name}: fixed point agrees with float on only {agreement:.1%}"


def test_fixed_point_rejects_fractional_input(small_network_run):
    graph, _, spikes, _ = small_network_run

    with pytest.raises(ValueError, match="integers"):
        LavaBackend(fixed_point=True).run(graph, spikes * 0.5, DT)


# ---------------------------------------------------------------- rejected graphs


@pytest.mark.parametrize("node", [nir.Delay(delay=np.array([1.0])), nir.Threshold(threshold=np.array([0.5]))])
def test_unsupported_node_names_node_and_backend(node):
    graph = _graph({"odd": node}, (1,), (1,))

    with pytest.raises(UnsupportedNodeError) as raised:
        LavaBackend().run(graph, np.zeros((2, 1, 1)), DT)

    assert "'odd'" in str(raised.value)
    assert "lava-float" in str(raised.value)
    assert raised.value.node_type == type(node).__name__


def test_nonzero_v_reset_is_rejected():
    neuron = nir.LIF(tau=np.array([0.01]), r=np.array([1.0]), v_leak=np.array([0.0]),
                     v_threshold=np.array([1.0]), v_reset=np.array([0.2]))
    graph = _graph({"fc": nir.Linear(weight=np.ones((1, 1))), "neuron": neuron}, (1,), (1,))

    with pytest.raises(LavaMappingError, match="v_reset"):
        LavaBackend().run(graph, np.zeros((2, 1, 1)), DT)


def test_wrong_input_shape_is_rejected(small_network_run):
    graph = small_network_run[0]

    with pytest.raises(ValueError, match=r"expected \(T, B, 2, 8, 8\)"):
        LavaBackend().run(graph, np.zeros((3, 1, 2, 8)), DT)


def test_import_after_start_method_fixed():
    # tqdm's progress-bar lock fixes the multiprocessing start method; lava-nc then
    # fails on import unless the backend's import guard handles it.
    code = ("import multiprocessing as mp, tqdm; tqdm.tqdm.get_lock(); "
            "assert mp.get_start_method(allow_none=True) == 'fork'; "
            "import neuro.backends.lava; print('imported')")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "imported"


def test_fixed_point_emulator_reproduces_lava(small_network_run):
    graph, _, spikes, _ = small_network_run

    run = LavaBackend(fixed_point=True).run(graph, spikes, DT)

    assert run.policy == "worst_case"
    assert run.emulator_mismatch == 0
    assert run.overflow.total == 0
    assert {(event.layer, event.kind) for event in run.overflow.events} >= {
        ("lif1", "u wrap"), ("lif1", "v saturation"), ("conv", "synapse wrap"), ("lif2", "u wrap")}
    assert any(note.startswith("No u wrap") for note in run.notes)


def test_float_run_has_no_overflow_report(small_network_run):
    _, _, _, float_run = small_network_run

    assert float_run.overflow is None
    assert float_run.policy is None
