"""Spike, synaptic-operation and sparsity counts on graphs small enough to count by hand."""

from __future__ import annotations

import nir
import numpy as np

from hardware.counting import count_run, fan_out


def _graph(nodes: dict, chain: list[str]) -> nir.NIRGraph:
    return nir.NIRGraph(nodes=nodes, edges=list(zip(chain[:-1], chain[1:])))


def _lif(shape):
    ones = np.ones(shape)
    return nir.LIF(tau=ones * 1e-3, r=ones, v_leak=ones * 0, v_threshold=ones * 0.5, v_reset=ones * 0)


def test_affine_fan_out_skips_zero_weights():
    weight = np.array([[1.0, 0.0, 2.0], [0.5, 0.0, 0.0]])
    graph = _graph({"input": nir.Input(input_type={"input": np.array([3])}),
                    "fc": nir.Affine(weight=weight, bias=np.zeros(2)),
                    "output": nir.Output(output_type={"output": np.array([2])})}, ["input", "fc", "output"])
    assert fan_out(graph, "fc", (3,), []).tolist() == [2, 0, 1]


def test_conv_fan_out_at_border_and_centre():
    conv = nir.Conv2d(input_shape=(4, 4), weight=np.ones((2, 1, 3, 3)), stride=1, padding=1, dilation=1,
                      groups=1, bias=np.zeros(2))
    graph = _graph({"input": nir.Input(input_type={"input": np.array([1, 4, 4])}), "conv": conv,
                    "output": nir.Output(output_type={"output": np.array([2, 4, 4])})}, ["input", "conv", "output"])
    fan = fan_out(graph, "conv", (1, 4, 4), [])
    # A corner pixel feeds 2x2 output positions per channel, an inner one 3x3.
    assert fan[0, 0, 0] == 2 * 4
    assert fan[0, 1, 1] == 2 * 9


def test_synaptic_operations_are_spikes_times_fan_out():
    weight = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])  # input 0 fans out to 2, input 1 to 2
    graph = _graph({"input": nir.Input(input_type={"input": np.array([2])}),
                    "fc": nir.Affine(weight=weight, bias=np.zeros(3)), "lif": _lif((3,)),
                    "output": nir.Output(output_type={"output": np.array([3])})},
                   ["input", "fc", "lif", "output"])
    inputs = np.zeros((4, 2, 2))
    inputs[0, 0, 0] = 1
    inputs[1, 0, 1] = 1
    inputs[1, 1, 0] = 1
    lif_spikes = np.zeros((4, 2, 3))
    lif_spikes[0, 0, :2] = 1
    counts = count_run(graph, inputs, {"lif": lif_spikes})
    by_name = {layer.name: layer for layer in counts.layers}
    assert by_name["fc"].synaptic_operations == 3 * 2
    assert by_name["lif"].spikes == 2
    assert by_name["lif"].neuron_updates == 3 * 4 * 2
    assert by_name["lif"].sparsity == 1 - 2 / 24
    assert counts.per_sample(counts.total_synaptic_operations) == 3.0


def test_flatten_between_neurons_and_affine(small_snn):
    _, graph = small_snn
    fc1 = graph.nodes["fc1"]
    fan = fan_out(graph, "fc1", (8, 4, 4), ["flatten"])
    assert fan.shape == (8, 4, 4)
    assert fan.reshape(-1).tolist() == (np.asarray(fc1.weight) != 0).sum(axis=0).tolist()


def test_graded_input_marked():
    graph = _graph({"input": nir.Input(input_type={"input": np.array([2])}),
                    "fc": nir.Affine(weight=np.ones((1, 2)), bias=np.zeros(1)), "lif": _lif((1,)),
                    "output": nir.Output(output_type={"output": np.array([1])})}, ["input", "fc", "lif", "output"])
    binary = count_run(graph, np.ones((2, 1, 2)), {"lif": np.zeros((2, 1, 1))})
    graded = count_run(graph, np.full((2, 1, 2), 0.3), {"lif": np.zeros((2, 1, 1))})
    assert binary.graded_operations == 0
    assert graded.graded_operations == 4
    assert graded.layers[0].graded_input
