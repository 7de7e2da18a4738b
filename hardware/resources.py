"""Resource report of a NIR graph on a neuromorphic chip: neurons, synapses, memory and cores.

A *layer* here is one neuron node (LIF) together with the synaptic node that feeds it
(Conv2d, SumPool2d, Affine or Linear, with any Flatten around it), as a chip maps them
onto the same cores.  For each layer the report counts:

- neurons: elements of the LIF node;
- connections: nonzero synapses after expanding convolutions and pooling windows to
  one synapse per (input element, output neuron) pair;
- stored weights: the synaptic node's parameters (0 for pooling, whose weights are all 1);
- synaptic memory: ``connections x (weight_bits + index_bits) / 8`` bytes, with
  ``index_bits = ceil(log2(neurons_per_core))`` to address the target neuron in its core.
  This storage model keeps every connection as an explicit entry and shares no weights;
  a chip that stores convolution kernels once needs less.  It is an estimate, not the
  chip's exact encoding, and it leaves out per-axon routing tables;
- fan-in axons: distinct input elements that reach the neurons of one core, when the
  layer's neurons are split into equal contiguous blocks in (C, H, W) order;
- fan-out axons: for each neuron, the number of cores of the next layer it reaches,
  summed over the layer.

Each layer gets its own cores (no two layers share a core), and the cores it needs are
the maximum over the limits.  The Input node is fed from off the chip, so its fan-out
is not checked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import nir
import numpy as np
import torch

from hardware.chip_limits import CHIPS, LIMIT_FIELDS, ChipLimits, ChipLimitsError, load_chip_limits
from hardware.counting import linear_map
from neuro.graph import GraphStructureError, infer_shapes, layout

__all__ = ["CHIPS", "ChipLimits", "ChipLimitsError", "LayerResources", "ResourceError", "ResourceReport",
           "load_chip_limits", "resource_report"]

SUPPORTED_TYPES = (nir.Input, nir.Output, nir.Flatten, nir.Conv2d, nir.SumPool2d, nir.Affine, nir.Linear, nir.LIF)
_SYNAPTIC = (nir.Conv2d, nir.SumPool2d, nir.Affine, nir.Linear)
LIMITS = ("neurons", "synaptic_memory", "fan_in", "fan_out")
# Blocks whose input masks one backward pass computes; bounds the memory of a pass.
_CHUNKS_PER_PASS = 32


class ResourceError(ValueError):
    """A graph or option that a resource report cannot be computed for."""


@dataclass
class LayerResources:
    """Resources of one layer (a neuron node and its incoming synapses); see the module docstring.

    ``cores_by`` maps each limit in ``LIMITS`` to the cores it alone requires (None when the
    chip's limit is unknown, or for fan-out of the last layer).  ``feasible`` is False when
    no number of cores satisfies a limit, for example one neuron with more fan-in axons
    than a core accepts.
    """

    node: str
    synapse: str | None
    neurons: int
    connections: int
    stored_weights: int
    synaptic_memory_bytes: int
    max_fan_in_per_neuron: int
    fan_in_axons_per_core: int = 0
    fan_out_axons: int = 0
    cores_by: dict[str, int | None] = field(default_factory=dict)
    feasible: bool = True
    problems: list[str] = field(default_factory=list)

    @property
    def cores(self) -> int:
        return max((value for value in self.cores_by.values() if value is not None), default=1)

    def binding_limit(self) -> str:
        """Return the limit that sets ``cores`` (the first one in ``LIMITS`` order on a tie)."""
        return max(LIMITS, key=lambda name: (self.cores_by.get(name) or 0, -LIMITS.index(name)))


@dataclass
class ResourceReport:
    """Resources of a whole graph on one chip, with whether it fits and what to change if not."""

    chip: ChipLimits
    weight_bits: int
    index_bits: int
    layers: list[LayerResources]
    fits: bool
    advice: list[str]
    storage_model: str
    unchecked: list[str]

    @property
    def total_neurons(self) -> int:
        return sum(layer.neurons for layer in self.layers)

    @property
    def total_connections(self) -> int:
        return sum(layer.connections for layer in self.layers)

    @property
    def total_stored_weights(self) -> int:
        return sum(layer.stored_weights for layer in self.layers)

    @property
    def total_synaptic_memory_bytes(self) -> int:
        return sum(layer.synaptic_memory_bytes for layer in self.layers)

    @property
    def cores_needed(self) -> int:
        return sum(layer.cores for layer in self.layers)

    @property
    def chips_needed(self) -> int | None:
        """Chips needed at this core count; None when some layer fits no number of cores."""
        if not all(layer.feasible for layer in self.layers):
            return None
        return max(1, math.ceil(self.cores_needed / self.chip.cores_per_chip))

    def to_dict(self) -> dict:
        return {
            "chip": self.chip.to_dict(),
            "weight_bits": self.weight_bits,
            "index_bits": self.index_bits,
            "storage_model": self.storage_model,
            "layers": [{
                "node": layer.node, "synapse": layer.synapse, "neurons": layer.neurons,
                "connections": layer.connections, "stored_weights": layer.stored_weights,
                "synaptic_memory_bytes": layer.synaptic_memory_bytes,
                "max_fan_in_per_neuron": layer.max_fan_in_per_neuron,
                "fan_in_axons_per_core": layer.fan_in_axons_per_core, "fan_out_axons": layer.fan_out_axons,
                "cores_by": dict(layer.cores_by), "cores": layer.cores, "feasible": layer.feasible,
                "problems": list(layer.problems),
            } for layer in self.layers],
            "totals": {
                "neurons": self.total_neurons, "connections": self.total_connections,
                "stored_weights": self.total_stored_weights,
                "synaptic_memory_bytes": self.total_synaptic_memory_bytes, "cores": self.cores_needed,
            },
            "cores_per_chip": self.chip.cores_per_chip,
            "chips_needed": self.chips_needed,
            "fits": self.fits,
            "advice": list(self.advice),
            "unchecked_limits": list(self.unchecked),
        }

    def markdown(self) -> str:
        """Render the report as Markdown: limits with sources, a per-layer table, totals and advice."""
        chip = self.chip
        lines = [f"## Resources on {chip.name}", "",
                 f"Weights of {self.weight_bits} bits; storage model: {self.storage_model}", "",
                 "| limit | value | source | confidence |", "|---|---|---|---|"]
        for key in LIMIT_FIELDS:
            value = getattr(chip, key)
            lines.append(f"| {key} | {'unknown' if value is None else value} | "
                         f"{chip.sources[key].replace('|', '/')} | {chip.confidence[key]} |")
        lines += ["", "| layer | synapse | neurons | connections | stored weights | synaptic memory (KiB) | "
                      "max fan-in per neuron | fan-in axons per core | fan-out axons | cores (neurons / memory / "
                      "fan-in / fan-out) | cores |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]

        def cell(value: int | None) -> str:
            return "-" if value is None else str(value)

        for layer in self.layers:
            by = " / ".join(cell(layer.cores_by.get(name)) for name in LIMITS)
            cores = str(layer.cores) if layer.feasible else f"{layer.cores} (does not fit)"
            lines.append(f"| {layer.node} | {layer.synapse or '-'} | {layer.neurons} | {layer.connections} | "
                         f"{layer.stored_weights} | {layer.synaptic_memory_bytes / 1024:.1f} | "
                         f"{layer.max_fan_in_per_neuron} | {layer.fan_in_axons_per_core} | {layer.fan_out_axons} | "
                         f"{by} | {cores} |")
        chips = self.chips_needed
        lines += ["", f"Totals: {self.total_neurons} neurons, {self.total_connections} connections, "
                      f"{self.total_stored_weights} stored weights, "
                      f"{self.total_synaptic_memory_bytes / 1024:.1f} KiB synaptic memory, "
                      f"{self.cores_needed} of {chip.cores_per_chip} cores"
                      + (f", {chips} chip(s)." if chips is not None else ", no number of chips suffices."),
                  "", f"Fits on one {chip.name}: {'yes' if self.fits else 'no'}."]
        if self.unchecked:
            lines.append(f"Not checked (limit unknown): {', '.join(self.unchecked)}.")
        lines += [f"- {note}" for note in chip.notes]
        if self.advice:
            lines += ["", "What would have to change:"] + [f"- {text}" for text in self.advice]
        return "\n".join(lines)


def _check_types(graph: nir.NIRGraph) -> None:
    for name, node in graph.nodes.items():
        if not isinstance(node, SUPPORTED_TYPES):
            supported = ", ".join(t.__name__ for t in SUPPORTED_TYPES)
            raise NotImplementedError(f"resource_report does not support node {name!r} of type "
                                      f"{type(node).__name__}; supported types are {supported}")


def _single_predecessor(graph_layout, name: str) -> str:
    predecessors = graph_layout.predecessors[name]
    if len(predecessors) != 1:
        raise ResourceError(f"node {name!r} has {len(predecessors)} inputs {list(predecessors)}; the resource "
                            "report supports chains where each node has one input")
    return predecessors[0]


def _incoming(graph: nir.NIRGraph, graph_layout, neuron: str) -> tuple[str | None, str, list[str]]:
    """Return the synaptic node (or None), the source node, and the nodes between the source and the neuron."""
    path: list[str] = []
    synapse = None
    current = _single_predecessor(graph_layout, neuron)
    while True:
        node = graph.nodes[current]
        if isinstance(node, nir.Flatten):
            path.insert(0, current)
        elif isinstance(node, _SYNAPTIC):
            if synapse is not None:
                raise ResourceError(f"synaptic node {current!r} feeds synaptic node {synapse!r} with no neuron "
                                    "between them; merge the two into one weight matrix first")
            synapse = current
            path.insert(0, current)
        else:
            return synapse, current, path
        current = _single_predecessor(graph_layout, current)


def _masked_map(graph: nir.NIRGraph, path: list[str]):
    """Return x (B, *source) -> (B, neurons) with every nonzero weight set to 1 along ``path``."""
    maps = [linear_map(graph.nodes[name]) for name in path]

    def apply(x: torch.Tensor) -> torch.Tensor:
        for step in maps:
            x = step(x)
        return x.reshape(x.shape[0], -1)

    return apply


def _chunk_bounds(neurons: int, cores: int) -> list[tuple[int, int]]:
    size = math.ceil(neurons / cores)
    return [(start, min(start + size, neurons)) for start in range(0, neurons, size)]


def _axons_per_chunk(connectivity, source_shape: tuple[int, ...], neurons: int, cores: int) -> list[np.ndarray]:
    """Return, per block of neurons, a boolean mask over source elements that reach the block.

    One backward pass handles up to ``_CHUNKS_PER_PASS`` blocks: each batch row carries one
    block's selector, and the gradient's nonzero entries are the block's input axons.
    """
    bounds = _chunk_bounds(neurons, cores)
    masks: list[np.ndarray] = []
    for first in range(0, len(bounds), _CHUNKS_PER_PASS):
        group = bounds[first:first + _CHUNKS_PER_PASS]
        x = torch.zeros((len(group), *source_shape), dtype=torch.float64, requires_grad=True)
        y = connectivity(x)
        selector = torch.zeros_like(y)
        for row, (start, stop) in enumerate(group):
            selector[row, start:stop] = 1.0
        (gradient,) = torch.autograd.grad(y, x, grad_outputs=selector)
        masks.extend(gradient.reshape(len(group), -1).numpy() != 0)
    return masks


def _ceil_div(amount: int, limit: int | None) -> int | None:
    return None if limit is None else max(1, math.ceil(amount / limit))


def _widest(masks: list[np.ndarray]) -> int:
    return max(int(mask.sum()) for mask in masks)


def _fit_fan_in(connectivity, source_shape, layer: LayerResources,
                limit: int | None) -> tuple[list[np.ndarray], int]:
    """Set the cores the fan-in limit needs and return the block masks at the layer's core count.

    NOTE: the blocks are contiguous in (C, H, W) order and the count grows in steps, so the
    result can exceed the minimum.  Spatial tiles over all channels would often need fewer cores.
    """
    others = max(value for key, value in layer.cores_by.items() if key != "fan_in" and value is not None)
    if limit is not None and layer.max_fan_in_per_neuron > limit:
        layer.feasible = False
        layer.problems.append(f"one neuron receives {layer.max_fan_in_per_neuron} axons, more than the "
                              f"{limit} a core accepts")
        limit = None
    if limit is None:
        masks = _axons_per_chunk(connectivity, source_shape, layer.neurons, others)
        layer.fan_in_axons_per_core = _widest(masks)
        return masks, others

    fan_in_cores = 1
    masks = _axons_per_chunk(connectivity, source_shape, layer.neurons, fan_in_cores)
    while _widest(masks) > limit:
        fan_in_cores = min(layer.neurons, max(fan_in_cores + 1, math.ceil(fan_in_cores * _widest(masks) / limit)))
        masks = _axons_per_chunk(connectivity, source_shape, layer.neurons, fan_in_cores)
    cores = fan_in_cores
    if others > cores:
        # Blocks shift when the count changes, so check the fan-in again at the final count.
        cores = others
        masks = _axons_per_chunk(connectivity, source_shape, layer.neurons, cores)
        while _widest(masks) > limit:
            cores = min(layer.neurons, max(cores + 1, math.ceil(cores * _widest(masks) / limit)))
            fan_in_cores = cores
            masks = _axons_per_chunk(connectivity, source_shape, layer.neurons, cores)
    layer.cores_by["fan_in"] = fan_in_cores
    layer.fan_in_axons_per_core = _widest(masks)
    return masks, cores


@dataclass
class _Wiring:
    """Wiring of one layer: its source node, the nodes in between, and per-core masks over the source."""

    source: str
    path: list[str]
    connectivity: object
    source_shape: tuple[int, ...]
    masks: list[np.ndarray]
    cores: int


def _layer(graph, graph_layout, shapes, neuron: str, chip: ChipLimits, bits_per_connection: int):
    synapse, source, path = _incoming(graph, graph_layout, neuron)
    neurons = int(np.prod(shapes[neuron]))
    source_shape = shapes[source]
    connectivity = _masked_map(graph, path)
    with torch.no_grad():
        fan_in = connectivity(torch.ones((1, *source_shape), dtype=torch.float64))[0]
    if fan_in.numel() != neurons:
        raise ResourceError(f"node {neuron!r} has {neurons} neurons but its input path {path} gives "
                            f"{fan_in.numel()} values")
    connections = int(fan_in.sum().round())
    stored = 0
    if synapse is not None and isinstance(graph.nodes[synapse], (nir.Conv2d, nir.Affine, nir.Linear)):
        stored = int(np.asarray(graph.nodes[synapse].weight).size)
    memory = math.ceil(connections * bits_per_connection / 8)
    layer = LayerResources(node=neuron, synapse=synapse, neurons=neurons, connections=connections,
                           stored_weights=stored, synaptic_memory_bytes=memory,
                           max_fan_in_per_neuron=int(fan_in.max().round()) if neurons else 0)
    layer.cores_by = {"neurons": _ceil_div(neurons, chip.neurons_per_core),
                      "synaptic_memory": _ceil_div(memory, chip.synaptic_memory_bytes_per_core),
                      "fan_in": None, "fan_out": None}
    masks, cores = _fit_fan_in(connectivity, source_shape, layer, chip.fan_in_axons_per_core)
    return layer, _Wiring(source=source, path=path, connectivity=connectivity, source_shape=source_shape,
                          masks=masks, cores=cores)


def _advice(report_layers: list[LayerResources], chip: ChipLimits, weight_bits: int, fits: bool) -> list[str]:
    advice: list[str] = []
    for layer in report_layers:
        if not layer.feasible:
            advice.append(f"{layer.node}: each neuron may receive at most {chip.fan_in_axons_per_core} axons, but one "
                          f"receives {layer.max_fan_in_per_neuron}. Reduce the input of {layer.synapse}: fewer "
                          "channels or a smaller feature map before it (one more pooling stage), or split its sum "
                          "over several cores with multi-compartment neurons (not modelled here).")
    cores = sum(layer.cores for layer in report_layers)
    if cores > chip.cores_per_chip:
        largest = sorted(report_layers, key=lambda layer: layer.cores, reverse=True)[:3]
        listed = ", ".join(f"{layer.node} ({layer.cores} cores, set by {layer.binding_limit().replace('_', ' ')})"
                           for layer in largest)
        advice.append(f"The network needs {cores} cores and one {chip.name} has {chip.cores_per_chip}: split "
                      f"the layers across {math.ceil(cores / chip.cores_per_chip)} chips, or shrink the largest "
                      f"layers: {listed}. Fewer channels or a smaller input size reduce them.")
        if any(layer.binding_limit() == "synaptic_memory" for layer in largest) and weight_bits > 1:
            advice.append(f"Synaptic memory sets the core count of a large layer: fewer weight bits (now "
                          f"{weight_bits}) or a chip that shares convolution weights would reduce it.")
    if not fits and not advice:
        advice.append("The network does not fit; see the per-layer problems.")
    return advice


def resource_report(graph: nir.NIRGraph, *, chip: ChipLimits | None = None, weight_bits: int = 8) -> ResourceReport:
    """Compute the resources ``graph`` needs on ``chip`` (default: ``CHIPS["loihi2"]``).

    ``weight_bits`` is the width of one stored weight, 1 to ``chip.weight_bits``.  Raises
    ``ResourceError`` for an invalid option or a graph that is not a chain of the
    supported nodes, and ``NotImplementedError`` naming any other node type.
    """
    chip = CHIPS["loihi2"] if chip is None else chip
    if not isinstance(chip, ChipLimits):
        raise ResourceError(f"chip = {chip!r} is invalid; pass a ChipLimits, e.g. CHIPS['loihi2']")
    if isinstance(weight_bits, bool) or not isinstance(weight_bits, int) or not 1 <= weight_bits <= chip.weight_bits:
        raise ResourceError(f"weight_bits = {weight_bits!r} is invalid; {chip.name} stores weights of 1 to "
                            f"{chip.weight_bits} bits")
    _check_types(graph)
    try:
        shapes = infer_shapes(graph)
        graph_layout = layout(graph)
    except GraphStructureError as error:
        raise ResourceError(f"the graph's structure is invalid: {error}") from None

    index_bits = max(1, math.ceil(math.log2(chip.neurons_per_core)))
    bits = weight_bits + index_bits
    neuron_nodes = [name for name in graph_layout.order if isinstance(graph.nodes[name], nir.LIF)]
    if not neuron_nodes:
        raise ResourceError("the graph has no LIF node, so nothing would run on neuron cores")
    layers: dict[str, LayerResources] = {}
    wiring: dict[str, _Wiring] = {}
    for name in neuron_nodes:
        layers[name], wiring[name] = _layer(graph, graph_layout, shapes, name, chip, bits)
    used = {node for item in wiring.values() for node in item.path}
    stray = [name for name in graph_layout.order if isinstance(graph.nodes[name], _SYNAPTIC) and name not in used]
    if stray:
        raise ResourceError(f"synaptic node(s) {stray} feed no LIF node, so no neuron core would hold their "
                            "synapses; end the graph with a LIF layer")

    # A neuron sends one output axon per core of the next layer that it reaches.  Walking
    # from the output backwards, each layer's core count is final before its sources use it.
    for name in reversed(neuron_nodes):
        item = wiring[name]
        if item.cores != layers[name].cores:
            item.cores = layers[name].cores
            item.masks = _axons_per_chunk(item.connectivity, item.source_shape, layers[name].neurons, item.cores)
            layers[name].fan_in_axons_per_core = max(int(mask.sum()) for mask in item.masks)
        if item.source in layers:
            source_layer = layers[item.source]
            source_layer.fan_out_axons += int(np.sum(item.masks, axis=0).sum())
            source_layer.cores_by["fan_out"] = _ceil_div(source_layer.fan_out_axons, chip.fan_out_axons_per_core)

    ordered = list(layers.values())
    unchecked = [key for key in LIMIT_FIELDS if getattr(chip, key) is None]
    cores = sum(layer.cores for layer in ordered)
    fits = all(layer.feasible for layer in ordered) and cores <= chip.cores_per_chip
    storage = (f"one entry per connection of {weight_bits} weight bits + {index_bits} bits addressing the "
               f"target among {chip.neurons_per_core} neurons of a core, no shared convolution weights")
    return ResourceReport(chip=chip, weight_bits=weight_bits, index_bits=index_bits, layers=ordered, fits=fits,
                          advice=_advice(ordered, chip, weight_bits, fits), storage_model=storage,
                          unchecked=unchecked)
