"""Count what an SNN run did: spikes, synaptic operations, neuron updates, sparsity.

Definitions (per run, summed over time steps and samples):

- spikes of a layer: the number of 1s it emitted;
- neuron updates: neurons x time steps x samples, because a clock-driven simulator (and
  Loihi's neuron cores) update every neuron in every step;
- activation sparsity of a layer: 1 - spikes / neuron updates;
- synaptic operations (SOPs) of a synaptic node (Affine, Linear, Conv2d, pooling): for each
  nonzero input element, its fan-out, i.e. the number of nonzero weights leaving it.  For
  binary spike input this is "spike x fan-out", one accumulate each.  The input of the
  network counts too, since the first layer's synapses process it.

A synaptic node whose input is graded (values other than 0 and 1, e.g. a foreign graph
fed with analog input) performs multiply-accumulates, not accumulates: ``graded_input``
marks it, and ``RunCounts.graded_operations`` sums those separately.  A synaptic node
that follows another synaptic node (no neuron between) is counted only when the
upstream values are known, and the report lists it otherwise.

NeuroBench 2.3's ``SynapticOperations`` uses the same definition for the Linear and
Conv layers it hooks, but it does not hook pooling layers, so its total leaves out the
pooling terms counted here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nir
import numpy as np
import torch

from neuro.backends.reference import conv2d_function, sum_pool_function
from neuro.graph import SPIKING_TYPES, SYNAPTIC_TYPES, infer_shapes, layout


@dataclass
class LayerCounts:
    """Counts of one node; ``kind`` is "neuron" or "synapse"."""

    name: str
    node_type: str
    kind: str
    neurons: int = 0
    spikes: int = 0
    neuron_updates: int = 0
    synaptic_operations: int = 0
    fan_out_total: int = 0
    source: str = ""
    graded_input: bool = False

    @property
    def sparsity(self) -> float | None:
        if self.kind != "neuron" or self.neuron_updates == 0:
            return None
        return 1.0 - self.spikes / self.neuron_updates


@dataclass
class RunCounts:
    """Per-layer counts and totals of one run over ``samples`` clips of ``steps`` steps."""

    layers: list[LayerCounts]
    steps: int
    samples: int
    uncounted: list[str] = field(default_factory=list)

    @property
    def total_spikes(self) -> int:
        return sum(layer.spikes for layer in self.layers if layer.kind == "neuron")

    @property
    def total_synaptic_operations(self) -> int:
        return sum(layer.synaptic_operations for layer in self.layers if layer.kind == "synapse")

    @property
    def graded_operations(self) -> int:
        """Synaptic operations whose input was graded: multiply-accumulates, not accumulates."""
        return sum(layer.synaptic_operations for layer in self.layers
                   if layer.kind == "synapse" and layer.graded_input)

    @property
    def total_neuron_updates(self) -> int:
        return sum(layer.neuron_updates for layer in self.layers if layer.kind == "neuron")

    @property
    def sparsity(self) -> float:
        updates = self.total_neuron_updates
        return 1.0 - self.total_spikes / updates if updates else 0.0

    def per_sample(self, value: int | float) -> float:
        return value / max(self.samples, 1)


def linear_map(node: nir.NIRNode):
    """Return the node's linear map with every nonzero weight replaced by 1."""
    if isinstance(node, (nir.Affine, nir.Linear)):
        weight = torch.as_tensor((np.asarray(node.weight) != 0).astype(np.float64))
        return lambda x: x @ weight.T
    if isinstance(node, nir.Conv2d):
        masked = nir.Conv2d(input_shape=None, weight=(np.asarray(node.weight) != 0).astype(np.float64),
                            stride=node.stride, padding=node.padding, dilation=node.dilation,
                            groups=node.groups, bias=np.zeros(np.asarray(node.weight).shape[0]))
        return conv2d_function(masked)
    if isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
        return sum_pool_function(node)
    if isinstance(node, nir.Conv1d):
        raise NotImplementedError("synaptic-operation counting for Conv1d is not implemented")
    if isinstance(node, nir.Flatten):
        start, end = int(node.start_dim), int(node.end_dim)
        return lambda x: torch.flatten(x, start + 1 if start >= 0 else start, end + 1 if end >= 0 else end)
    raise TypeError(type(node).__name__)


def fan_out(graph: nir.NIRGraph, node_name: str, source_shape: tuple[int, ...], path: list[str]) -> np.ndarray:
    """Return the fan-out of every element of the source tensor into synaptic node ``node_name``.

    ``path`` lists the shape-only nodes (Flatten) between the source and the node.  The
    fan-out is the gradient of the sum of the masked map's output: each nonzero weight
    that reads an element adds one.
    """
    x = torch.zeros((1, *source_shape), dtype=torch.float64, requires_grad=True)
    y = x
    for name in [*path, node_name]:
        y = linear_map(graph.nodes[name])(y)
    y.sum().backward()
    return x.grad[0].numpy().round().astype(np.int64)


def _source_of(graph: nir.NIRGraph, graph_layout, name: str) -> tuple[str, list[str]]:
    """Walk upstream through Flatten nodes; return the first other node and the path walked."""
    path: list[str] = []
    current = name
    while True:
        predecessors = graph_layout.predecessors[current]
        if len(predecessors) != 1:
            return "", path
        upstream = predecessors[0]
        if isinstance(graph.nodes[upstream], nir.Flatten):
            path.insert(0, upstream)
            current = upstream
            continue
        return upstream, path


def count_run(graph: nir.NIRGraph, input_spikes: np.ndarray, spikes: dict[str, np.ndarray]) -> RunCounts:
    """Count spikes, updates and synaptic operations of one run.

    ``input_spikes`` is the network input (T, B, *shape); ``spikes`` maps each spiking
    node to its records (T, B, *shape), as in ``BackendRun.spikes``.
    """
    shapes = infer_shapes(graph)
    graph_layout = layout(graph)
    steps, samples = int(input_spikes.shape[0]), int(input_spikes.shape[1])
    known = {graph_layout.input_name: np.asarray(input_spikes), **spikes}
    layers: list[LayerCounts] = []
    uncounted: list[str] = []
    for name in graph_layout.computational_nodes():
        node = graph.nodes[name]
        if isinstance(node, SPIKING_TYPES):
            record = spikes[name]
            neurons = int(np.prod(shapes[name]))
            layers.append(LayerCounts(
                name=name, node_type=type(node).__name__, kind="neuron", neurons=neurons,
                spikes=int(np.count_nonzero(record)), neuron_updates=neurons * steps * samples,
            ))
        elif isinstance(node, SYNAPTIC_TYPES):
            source, path = _source_of(graph, graph_layout, name)
            if source not in known:
                uncounted.append(f"{name}: input comes from {source or 'several nodes'}, whose values are not "
                                 "recorded; its synaptic operations are not counted")
                continue
            fan = fan_out(graph, name, shapes[source], path)
            values = known[source]
            activity = (values != 0).sum(axis=(0, 1))
            layers.append(LayerCounts(
                name=name, node_type=type(node).__name__, kind="synapse",
                synaptic_operations=int((activity * fan).sum()), fan_out_total=int(fan.sum()),
                source=source, graded_input=bool(np.any((values != 0) & (values != 1))),
            ))
    return RunCounts(layers=layers, steps=steps, samples=samples, uncounted=uncounted)
