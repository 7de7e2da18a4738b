"""Resource report on graphs small enough to count by hand, chip limits and their JSON override."""

from __future__ import annotations

import json

import nir
import numpy as np
import pytest

from hardware.resources import (
    CHIPS,
    ChipLimits,
    ChipLimitsError,
    ResourceError,
    load_chip_limits,
    resource_report,
)
from neuro.model import PulmoSNN, SNNConfig
from neuro.nir_io import model_to_nir

LIMIT_KEYS = ("neurons_per_core", "synaptic_memory_bytes_per_core", "fan_in_axons_per_core",
              "fan_out_axons_per_core", "cores_per_chip", "weight_bits")


def _lif(shape):
    ones = np.ones(shape)
    return nir.LIF(tau=ones * 1e-3, r=ones, v_leak=ones * 0, v_threshold=ones, v_reset=ones * 0)


def _small_graph() -> nir.NIRGraph:
    """Input (1, 4, 4) -> 3x3 conv, padding 1, 2 channels -> LIF -> flatten -> affine 32->3 -> LIF."""
    conv = nir.Conv2d(input_shape=(4, 4), weight=np.ones((2, 1, 3, 3)), stride=1, padding=1, dilation=1,
                      groups=1, bias=np.zeros(2))
    weight = np.ones((3, 32))
    weight[2, :8] = 0.0  # output 2 ignores the first 8 conv neurons
    nodes = {
        "input": nir.Input(input_type={"input": np.array([1, 4, 4])}),
        "conv": conv,
        "lif_a": _lif((2, 4, 4)),
        "flatten": nir.Flatten(input_type={"input": np.array([2, 4, 4])}, start_dim=0, end_dim=-1),
        "fc": nir.Affine(weight=weight, bias=np.zeros(3)),
        "lif_b": _lif((3,)),
        "output": nir.Output(output_type={"output": np.array([3])}),
    }
    chain = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(chain[:-1], chain[1:])))


def _tiny_chip(**changes) -> ChipLimits:
    values = dict(name="tiny", neurons_per_core=16, synaptic_memory_bytes_per_core=64, fan_in_axons_per_core=32,
                  fan_out_axons_per_core=64, cores_per_chip=8, weight_bits=8,
                  sources={key: "test" for key in LIMIT_KEYS}, confidence={key: "user" for key in LIMIT_KEYS})
    values.update(changes)
    return ChipLimits(**values)


def test_small_graph_counts_by_hand():
    report = resource_report(_small_graph(), chip=_tiny_chip(), weight_bits=8)
    conv, fc = report.layers
    # A 3x3 window with padding 1 on 4x4 covers 4 inputs at a corner, 6 at an edge, 9 inside:
    # 4 * 4 + 8 * 6 + 4 * 9 = 100 connections per output channel.
    assert (conv.node, conv.synapse) == ("lif_a", "conv")
    assert conv.neurons == 32
    assert conv.connections == 200
    assert conv.stored_weights == 18
    assert conv.max_fan_in_per_neuron == 9
    assert (fc.node, fc.synapse) == ("lif_b", "fc")
    assert fc.neurons == 3
    assert fc.connections == 3 * 32 - 8
    assert fc.stored_weights == 96
    assert fc.max_fan_in_per_neuron == 32
    # 16 neurons per core -> 4 index bits; 8 + 4 = 12 bits per connection.
    assert report.index_bits == 4
    assert conv.synaptic_memory_bytes == 200 * 12 // 8
    assert fc.synaptic_memory_bytes == 88 * 12 // 8


def test_small_graph_cores_by_limit():
    report = resource_report(_small_graph(), chip=_tiny_chip(), weight_bits=8)
    conv, fc = report.layers
    assert fc.cores_by == {"neurons": 1, "synaptic_memory": 3, "fan_in": 1, "fan_out": None}
    # fc's 3 cores hold one neuron each; conv neurons 0-7 reach 2 of them, the other 24 reach 3.
    assert conv.fan_out_axons == 8 * 2 + 24 * 3
    assert conv.cores_by == {"neurons": 2, "synaptic_memory": 5, "fan_in": 1, "fan_out": 2}
    assert conv.cores == 5
    assert fc.cores == 3
    # 5 cores hold blocks of 7 neurons. Block 2 spans conv rows 2-3 of channel 0 and rows 0-1
    # of channel 1, so it reads all 16 input pixels.
    assert conv.fan_in_axons_per_core == 16
    assert report.cores_needed == 8
    assert report.fits
    assert report.advice == []


def test_total_cores_over_chip_gives_advice():
    report = resource_report(_small_graph(), chip=_tiny_chip(cores_per_chip=4), weight_bits=8)
    assert not report.fits
    assert report.chips_needed == 2
    assert any("split the layers across 2 chips" in text for text in report.advice)
    assert any("lif_a (5 cores, set by synaptic memory)" in text for text in report.advice)


def test_neuron_fan_in_over_core_limit():
    report = resource_report(_small_graph(), chip=_tiny_chip(fan_in_axons_per_core=16), weight_bits=8)
    fc = report.layers[1]
    assert not fc.feasible
    assert not report.fits
    assert report.chips_needed is None
    assert any("receives 32" in text and "fc" in text for text in report.advice)


def test_fan_in_limit_splits_layer():
    # With at most 12 axons per core, lif_a must be split until every block reads <= 12 pixels.
    report = resource_report(_small_graph(), chip=_tiny_chip(fan_in_axons_per_core=12,
                                                             synaptic_memory_bytes_per_core=4096), weight_bits=8)
    conv = report.layers[0]
    assert conv.cores_by["fan_in"] >= 2
    assert conv.fan_in_axons_per_core <= 12


def test_fewer_weight_bits_need_less_memory():
    eight = resource_report(_small_graph(), chip=_tiny_chip(), weight_bits=8)
    two = resource_report(_small_graph(), chip=_tiny_chip(), weight_bits=2)
    assert two.layers[0].synaptic_memory_bytes == 200 * 6 // 8
    assert two.total_synaptic_memory_bytes < eight.total_synaptic_memory_bytes


def test_default_snn_on_loihi2():
    report = resource_report(model_to_nir(PulmoSNN(SNNConfig())), chip=CHIPS["loihi2"])
    names = [layer.node for layer in report.layers]
    assert names == ["lif1", "pool1_lif", "lif2", "pool2_lif", "lif3", "lif_out"]
    assert report.total_neurons == 8 * 32 * 32 + 8 * 16 * 16 + 16 * 16 * 16 + 16 * 8 * 8 + 64 + 2
    by_name = {layer.node: layer for layer in report.layers}
    assert by_name["lif3"].connections == 16 * 8 * 8 * 64
    assert by_name["pool1_lif"].connections == 8 * 16 * 16 * 4
    assert by_name["pool1_lif"].stored_weights == 0
    assert report.fits
    assert report.unchecked == ["fan_in_axons_per_core", "fan_out_axons_per_core"]


def test_large_input_does_not_fit_loihi1():
    # At 136 px, fc1 reads 16 x 17 x 17 = 4,624 axons per neuron, over Loihi's 4,096.
    report = resource_report(model_to_nir(PulmoSNN(SNNConfig(input_size=136))), chip=CHIPS["loihi1"])
    assert not report.fits
    by_name = {layer.node: layer for layer in report.layers}
    assert by_name["lif3"].max_fan_in_per_neuron == 16 * 17 * 17
    assert not by_name["lif3"].feasible
    assert report.advice


def test_report_dict_and_markdown():
    report = resource_report(_small_graph(), chip=_tiny_chip(), weight_bits=8)
    data = report.to_dict()
    assert data["totals"] == {"neurons": 35, "connections": 288, "stored_weights": 114,
                              "synaptic_memory_bytes": 300 + 132, "cores": 8}
    assert data["fits"] is True
    assert json.loads(json.dumps(data)) == data
    text = report.markdown()
    assert "| lif_a | conv | 32 | 200 | 18 |" in text
    assert "Fits on one tiny: yes." in text


def test_unsupported_node_names_type():
    graph = _small_graph()
    ones = np.ones((3,))
    graph.nodes["lif_b"] = nir.CubaLIF(tau_mem=ones, tau_syn=ones, r=ones, v_leak=ones * 0, v_threshold=ones,
                                       v_reset=ones * 0)
    with pytest.raises(NotImplementedError, match="CubaLIF"):
        resource_report(graph, chip=_tiny_chip())


def test_synapse_without_neuron_rejected():
    nodes = {"input": nir.Input(input_type={"input": np.array([4])}),
             "fc1": nir.Affine(weight=np.ones((4, 4)), bias=np.zeros(4)), "lif": _lif((4,)),
             "fc2": nir.Affine(weight=np.ones((2, 4)), bias=np.zeros(2)),
             "output": nir.Output(output_type={"output": np.array([2])})}
    chain = list(nodes)
    graph = nir.NIRGraph(nodes=nodes, edges=list(zip(chain[:-1], chain[1:])))
    with pytest.raises(ResourceError, match="fc2"):
        resource_report(graph, chip=_tiny_chip())


def test_weight_bits_out_of_range():
    with pytest.raises(ResourceError, match="1 to 8 bits"):
        resource_report(_small_graph(), chip=_tiny_chip(), weight_bits=9)


def test_builtin_chips_have_sources():
    assert CHIPS["loihi1"].neurons_per_core == 1024
    assert CHIPS["loihi1"].synaptic_memory_bytes_per_core == 128 * 1024
    assert CHIPS["loihi1"].fan_in_axons_per_core == 4096
    assert CHIPS["loihi2"].neurons_per_core == 2**20 // 128  # "1 M" neurons on 128 cores
    assert CHIPS["loihi2"].synaptic_memory_bytes_per_core == 128 * 1024
    assert CHIPS["loihi2"].confidence["synaptic_memory_bytes_per_core"] == "unresolved"
    assert CHIPS["loihi2"].confidence["neurons_per_core"] == "derived"
    for chip in CHIPS.values():
        assert set(chip.sources) >= set(LIMIT_KEYS)


def test_load_chip_limits_override(tmp_path):
    path = tmp_path / "chip.json"
    path.write_text(json.dumps({"name": "mine", "synaptic_memory_bytes_per_core": {"value": 196608, "source": "sheet"},
                                "fan_in_axons_per_core": 2048}), encoding="utf-8")
    chip = load_chip_limits(path)
    assert chip.name == "mine"
    assert chip.synaptic_memory_bytes_per_core == 196608
    assert chip.sources["synaptic_memory_bytes_per_core"] == "sheet"
    assert chip.confidence["synaptic_memory_bytes_per_core"] == "user"
    assert chip.fan_in_axons_per_core == 2048
    assert chip.neurons_per_core == CHIPS["loihi2"].neurons_per_core


@pytest.mark.parametrize("content, key", [
    ('{"neurons_per_core": 0}', "neurons_per_core"),
    ('{"cores": 4}', "cores"),
    ('{"weight_bits": 4, "weight_bits": 5}', "weight_bits"),
    ('{"cores_per_chip": {"source": "x"}}', "cores_per_chip"),
    ('{"neurons_per_core": "many"}', "neurons_per_core"),
])
def test_load_chip_limits_rejects(tmp_path, content, key):
    path = tmp_path / "chip.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ChipLimitsError) as caught:
        load_chip_limits(path)
    assert caught.value.key == key
    assert str(path) in str(caught.value)


def test_load_chip_limits_missing_file(tmp_path):
    with pytest.raises(ChipLimitsError, match="cannot read chip limits file"):
        load_chip_limits(tmp_path / "absent.json")
