"""Cross-check of hardware.counting against NeuroBench 2.3.0's workload metrics.

What NeuroBench 2.3.0 counts (read from its installed source):

- ``SynapticOperations`` registers a forward pre-hook on every ``torch.nn.Linear``,
  ``Conv1d``, ``Conv2d``, ``Conv3d``, ``RNNBase`` and ``RNNCellBase`` submodule
  (``neurobench/blocks/layer.py``), so it also counts the first layer, which reads the
  network input.  Pooling, flatten and functional calls are not hooked, so our
  ``SumPool2d`` nodes are invisible to it.
- For each hooked call, ``single_layer_MACs`` sets every nonzero input and every nonzero
  weight to 1, zeroes the bias and sums the layer's output: nonzero inputs x nonzero
  fan-out, the same definition as ``hardware.counting``.  The call counts as ACs when
  every input value is 0, 1 or -1, and as MACs otherwise.
- ``Dense`` repeats this with every input and weight set to 1, zero weights included.
- All three are divided by the number of samples (``data[0].size(0)``), ours are totals.
- ``ActivationSparsity`` is zeros over outputs of every ``snn.SpikingNeuron``.

The network handed to NeuroBench contains the same torch layers and the same ``snn.Leaky``
neurons as ``SnnTorchBackend`` and must produce identical spikes, which is checked first.
"""

from __future__ import annotations

import nir
import numpy as np
import pytest
import torch
from neurobench.benchmarks import Benchmark
from neurobench.metrics.utils.layers import single_layer_MACs
from neurobench.metrics.workload import ActivationSparsity, SynapticOperations
from neurobench.models import SNNTorchModel
from snntorch import import_nir as snntorch_import

from hardware.counting import RunCounts, count_run
from neuro.backends.snntorch_backend import DTYPE, SnnTorchBackend
from neuro.graph import SPIKING_TYPES, layout
from neuro.model import PulmoSNN, SNNConfig
from neuro.nir_io import model_to_nir

CONFIG = SNNConfig(input_size=32, conv_channels=(4, 8), hidden=16)
STEPS = 20
BATCH = 3
SPIKE_PROBABILITY = 0.3
# Layers NeuroBench hooks in this graph.  pool1 and pool2 are SumPool2d, which it does not hook.
HOOKED = ("conv1", "conv2", "fc1", "fc2")
POOL_SOURCES = {"pool1": "lif1", "pool2": "lif2"}


class GraphStepNet(torch.nn.Module):
    """One time step of a NIR graph per call, as NeuroBench's ``SNNTorchModel`` drives it.

    Affine, Linear and Conv2d nodes become torch layers made by snnTorch's importer, as in
    ``SnnTorchBackend.build``; every other node runs the backend's own step.  ``forward``
    returns ``(output spikes, None)`` because ``SNNTorchModel`` unpacks two values.
    """

    def __init__(self, graph: nir.NIRGraph, dt: float):
        super().__init__()
        steps, _ = SnnTorchBackend().build(graph, dt)
        graph_layout = layout(graph)
        self.order = graph_layout.computational_nodes()
        self.predecessors = graph_layout.predecessors
        self.input_name = graph_layout.input_name
        self.output_sources = graph_layout.predecessors[graph_layout.output_name]
        self.spiking = [name for name in self.order if isinstance(graph.nodes[name], SPIKING_TYPES)]
        self.steps = steps
        self.synapses = torch.nn.ModuleDict()
        self.neurons = torch.nn.ModuleDict()
        for name in self.order:
            node = graph.nodes[name]
            if isinstance(node, (nir.Affine, nir.Linear, nir.Conv2d)):
                self.synapses[name] = snntorch_import._nir_to_snntorch_module(node).to(DTYPE)
            elif name in self.spiking:
                # The backend's LIF step wraps an snn.Leaky; registering it lets NeuroBench hook it.
                self.neurons[name] = steps[name].neuron
        self.requires_grad_(False)
        self.reset()

    def reset(self) -> None:
        self.states: dict[str, object] = {name: None for name in self.order}
        self.records: dict[str, list[torch.Tensor]] = {name: [] for name in self.spiking}

    def forward(self, x: torch.Tensor):
        values = {self.input_name: x.to(DTYPE)}
        for name in self.order:
            node_input = sum(values[p] for p in self.predecessors[name])
            if name in self.synapses:
                values[name] = self.synapses[name](node_input)
            else:
                values[name], self.states[name] = self.steps[name](node_input, self.states[name])
            if name in self.records:
                self.records[name].append(values[name].detach().clone())
        return sum(values[p] for p in self.output_sources), None

    def recorded_spikes(self) -> dict[str, np.ndarray]:
        return {name: torch.stack(items).numpy() for name, items in self.records.items()}


def make_graph(prune: bool = False) -> nir.NIRGraph:
    model = PulmoSNN(CONFIG)
    if prune:
        with torch.no_grad():
            for layer in (model.conv2, model.fc1):
                flat = layer.weight.view(-1)
                flat[::2] = 0.0
    return model_to_nir(model)


def spike_input(seed: int, steps: int = STEPS, batch: int = BATCH) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (steps, batch, CONFIG.in_channels, CONFIG.input_size, CONFIG.input_size)
    return (rng.random(shape) < SPIKE_PROBABILITY).astype(np.float64)


def run_neurobench(graph: nir.NIRGraph, inputs: np.ndarray):
    """Run NeuroBench on ``inputs`` (T, B, ...); return the net, per-layer counts and metrics."""
    net = GraphStepNet(graph, CONFIG.dt)
    model = SNNTorchModel(net)
    model.register_hooks()
    data = torch.as_tensor(inputs).transpose(0, 1)  # NeuroBench's layout is (batch, time, ...)
    labels = torch.zeros(data.shape[0], dtype=torch.long)
    preds = model(data)

    names = {id(layer): name for name, layer in net.synapses.items()}
    per_layer: dict[str, dict[str, int]] = {}
    for hook in model.connection_hooks:
        name = names[id(hook.layer)]
        layer_counts = per_layer.setdefault(name, {"AC": 0, "MAC": 0, "calls": 0})
        for hook_input in hook.inputs:
            operations, spiking = single_layer_MACs(hook_input[0], hook.layer)
            layer_counts["AC" if spiking else "MAC"] += operations
            layer_counts["calls"] += 1

    synaptic_operations = SynapticOperations()(model, preds, (data, labels))
    sparsity = ActivationSparsity()(model, preds, (data, labels))
    model.cleanup_hooks()
    return net, per_layer, synaptic_operations, sparsity


def ours_by_name(counts: RunCounts) -> dict[str, int]:
    return {layer.name: layer.synaptic_operations for layer in counts.layers if layer.kind == "synapse"}


def spikes_by_name(counts: RunCounts) -> dict[str, int]:
    return {layer.name: layer.spikes for layer in counts.layers if layer.kind == "neuron"}


@pytest.fixture(scope="module")
def binary_run():
    graph = make_graph()
    inputs = spike_input(seed=1)
    backend_run = SnnTorchBackend().run(graph, inputs, CONFIG.dt)
    counts = count_run(graph, inputs, backend_run.spikes)
    net, per_layer, synaptic_operations, sparsity = run_neurobench(graph, inputs)
    return graph, backend_run, counts, net, per_layer, synaptic_operations, sparsity


def test_module_spikes_match_backend(binary_run):
    _, backend_run, counts, net, *_ = binary_run
    recorded = net.recorded_spikes()
    assert set(recorded) == set(backend_run.spikes)
    for name, spikes in backend_run.spikes.items():
        assert np.array_equal(recorded[name], spikes), name
    # Every layer spiked, so no count below is trivially zero.
    for name, spikes in spikes_by_name(counts).items():
        assert spikes > 0, name


def test_neurobench_hooks_linear_and_conv_only(binary_run):
    *_, per_layer, _, _ = binary_run
    assert set(per_layer) == set(HOOKED)
    for name in HOOKED:
        assert per_layer[name]["calls"] == STEPS, name


def test_counts_equal_per_layer(binary_run):
    _, _, counts, _, per_layer, _, _ = binary_run
    ours = ours_by_name(counts)
    for name in HOOKED:
        # Binary spikes reach every hooked layer, the network input included, so all are ACs.
        assert per_layer[name]["MAC"] == 0, name
        assert ours[name] == per_layer[name]["AC"], name


def test_totals_match_per_sample(binary_run):
    _, _, counts, _, per_layer, synaptic_operations, _ = binary_run
    ours = ours_by_name(counts)
    hooked_total = sum(ours[name] for name in HOOKED)
    # NeuroBench reports per sample: its AC total divided by the batch size.
    assert synaptic_operations["Effective_ACs"] == hooked_total / BATCH
    assert synaptic_operations["Effective_MACs"] == 0


def test_pooling_is_the_only_difference(binary_run):
    _, _, counts, _, _, synaptic_operations, _ = binary_run
    ours = ours_by_name(counts)
    spikes = spikes_by_name(counts)
    # Each 2x2 window tiles the map without overlap, so every spike into a SumPool2d has
    # fan-out 1 and the pool's count equals the spikes of the layer before it.
    for pool, source in POOL_SOURCES.items():
        assert ours[pool] == spikes[source], pool
    hooked_total = sum(ours[name] for name in HOOKED)
    assert counts.total_synaptic_operations == hooked_total + sum(ours[pool] for pool in POOL_SOURCES)
    assert counts.total_synaptic_operations - sum(spikes[s] for s in POOL_SOURCES.values()) \
        == synaptic_operations["Effective_ACs"] * BATCH


def test_dense_equals_fan_out(binary_run):
    graph, _, counts, _, _, synaptic_operations, _ = binary_run
    for name in HOOKED:
        assert np.count_nonzero(graph.nodes[name].weight) == graph.nodes[name].weight.size, name
    fan_out_total = {layer.name: layer.fan_out_total for layer in counts.layers if layer.kind == "synapse"}
    # With no zero weight, Dense per sample is the sum of every input element's fan-out, once per step.
    assert synaptic_operations["Dense"] == STEPS * sum(fan_out_total[name] for name in HOOKED)


def test_activation_sparsity_equal(binary_run):
    *_, counts, _, _, _, sparsity = binary_run
    updates, spikes = counts.total_neuron_updates, counts.total_spikes
    assert sparsity == (updates - spikes) / updates
    assert counts.sparsity == pytest.approx(sparsity, rel=1e-12)


def test_pruned_weights_skipped_by_both():
    graph = make_graph(prune=True)
    inputs = spike_input(seed=2)
    backend_run = SnnTorchBackend().run(graph, inputs, CONFIG.dt)
    counts = count_run(graph, inputs, backend_run.spikes)
    net, per_layer, synaptic_operations, _ = run_neurobench(graph, inputs)
    for name, spikes in backend_run.spikes.items():
        assert np.array_equal(net.recorded_spikes()[name], spikes), name

    ours = ours_by_name(counts)
    for name in HOOKED:
        assert ours[name] == per_layer[name]["AC"], name

    # Dense counts zero weights as well, but ours skips them.  The unpruned graph has the same
    # structure and no zero weight, so its fan-out is the dense fan-out.
    dense_graph = make_graph(prune=False)
    dense_counts = count_run(dense_graph, inputs, SnnTorchBackend().run(dense_graph, inputs, CONFIG.dt).spikes)
    dense_fan_out = {layer.name: layer.fan_out_total for layer in dense_counts.layers if layer.kind == "synapse"}
    sparse_fan_out = {layer.name: layer.fan_out_total for layer in counts.layers if layer.kind == "synapse"}
    assert synaptic_operations["Dense"] == STEPS * sum(dense_fan_out[name] for name in HOOKED)
    assert sparse_fan_out["fc1"] < dense_fan_out["fc1"]


def test_graded_input_counts_as_macs():
    graph = make_graph()
    rng = np.random.default_rng(3)
    steps = 5
    shape = (steps, BATCH, CONFIG.in_channels, CONFIG.input_size, CONFIG.input_size)
    # Signed graded values, as direct coding of frame differences would give; NeuroBench
    # and ours both count any nonzero value, negative ones included.
    inputs = rng.uniform(-1.0, 1.0, shape)
    inputs[np.abs(inputs) < 0.5] = 0.0
    backend_run = SnnTorchBackend().run(graph, inputs, CONFIG.dt)
    counts = count_run(graph, inputs, backend_run.spikes)
    _, per_layer, synaptic_operations, _ = run_neurobench(graph, inputs)

    ours = ours_by_name(counts)
    # Same number, different label: NeuroBench files conv1's graded input under MACs.
    assert per_layer["conv1"]["AC"] == 0
    assert ours["conv1"] == per_layer["conv1"]["MAC"]
    for name in HOOKED[1:]:
        assert per_layer[name]["MAC"] == 0, name
        assert ours[name] == per_layer[name]["AC"], name
    assert synaptic_operations["Effective_MACs"] == ours["conv1"] / BATCH


def test_benchmark_run_two_batches():
    graph = make_graph()
    batches = [spike_input(seed=4), spike_input(seed=5)]
    total = 0
    for inputs in batches:
        backend_run = SnnTorchBackend().run(graph, inputs, CONFIG.dt)
        ours = ours_by_name(count_run(graph, inputs, backend_run.spikes))
        total += sum(ours[name] for name in HOOKED)

    data = torch.cat([torch.as_tensor(inputs).transpose(0, 1) for inputs in batches])
    dataset = torch.utils.data.TensorDataset(data, torch.zeros(data.shape[0], dtype=torch.long))
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=False)
    benchmark = Benchmark(SNNTorchModel(GraphStepNet(graph, CONFIG.dt)), loader, [], [],
                          [[], [SynapticOperations]])
    results = benchmark.run(quiet=True)
    # Benchmark.run turns a failing metric into 0.0, so a nonzero value is checked first.
    assert results["SynapticOperations"]["Effective_ACs"] > 0
    assert results["SynapticOperations"]["Effective_ACs"] == total / data.shape[0]
    assert results["SynapticOperations"]["Effective_MACs"] == 0
