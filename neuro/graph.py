"""Structure of a feed-forward NIR graph: order, shapes, neurons and synaptic layers.

Every backend walks a graph the same way, so the walking lives here once.
"""

from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np

# Node types that hold neuron state and emit spikes.
SPIKING_TYPES: tuple[type, ...] = (nir.LIF, nir.IF, nir.CubaLIF)
# Node types that hold state but emit a graded value (leaky integrators).
INTEGRATOR_TYPES: tuple[type, ...] = (nir.LI, nir.CubaLI, nir.I)
# Node types whose output is a weighted sum of their input: synapses on a chip.
SYNAPTIC_TYPES: tuple[type, ...] = (nir.Affine, nir.Linear, nir.Conv2d, nir.Conv1d, nir.SumPool2d, nir.AvgPool2d)


class GraphStructureError(ValueError):
    """A graph whose edges do not form one feed-forward chain of nodes that fit together."""


@dataclass(frozen=True)
class GraphLayout:
    """Topological view of a graph: node order, the single input and output, and edges."""

    order: tuple[str, ...]
    input_name: str
    output_name: str
    predecessors: dict[str, tuple[str, ...]]
    successors: dict[str, tuple[str, ...]]

    def computational_nodes(self) -> list[str]:
        """Node names in execution order, without the Input and Output nodes."""
        return [name for name in self.order if name not in (self.input_name, self.output_name)]


def layout(graph: nir.NIRGraph) -> GraphLayout:
    """Sort the nodes of ``graph`` topologically and check it has one Input and one Output."""
    inputs = [name for name, node in graph.nodes.items() if isinstance(node, nir.Input)]
    outputs = [name for name, node in graph.nodes.items() if isinstance(node, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise GraphStructureError(
            f"the graph must have exactly one Input and one Output node, found inputs {inputs} "
            f"and outputs {outputs}"
        )

    predecessors: dict[str, list[str]] = {name: [] for name in graph.nodes}
    successors: dict[str, list[str]] = {name: [] for name in graph.nodes}
    for source, target in graph.edges:
        for end in (source, target):
            if end not in graph.nodes:
                raise GraphStructureError(f"edge ({source!r}, {target!r}) names unknown node {end!r}")
        predecessors[target].append(source)
        successors[source].append(target)

    # Kahn's algorithm; a node left over sits on a cycle.
    remaining = {name: len(preds) for name, preds in predecessors.items()}
    ready = [name for name, count in remaining.items() if count == 0]
    order: list[str] = []
    while ready:
        name = ready.pop(0)
        order.append(name)
        for target in successors[name]:
            remaining[target] -= 1
            if remaining[target] == 0:
                ready.append(target)
    if len(order) != len(graph.nodes):
        blocked = sorted(set(graph.nodes) - set(order))
        raise GraphStructureError(
            f"the graph has a cycle; nodes {blocked} lie on it or after it. Only feed-forward graphs are supported"
        )
    unreachable = [name for name in order if name != inputs[0] and not predecessors[name]]
    if unreachable:
        raise GraphStructureError(f"nodes {unreachable} have no incoming edge; connect them or remove them")

    return GraphLayout(
        order=tuple(order),
        input_name=inputs[0],
        output_name=outputs[0],
        predecessors={k: tuple(v) for k, v in predecessors.items()},
        successors={k: tuple(v) for k, v in successors.items()},
    )


def port_shape(node: nir.NIRNode, port: str) -> tuple[int, ...] | None:
    """Return the shape of a node's ``input`` or ``output`` port, or None where NIR leaves it unset."""
    types = node.input_type if port == "input" else node.output_type
    if not types:
        return None
    value = next(iter(types.values()))
    if value is None:
        return None
    shape = np.asarray(value).reshape(-1)
    if shape.size == 0:
        return None
    return tuple(int(x) for x in shape)


def input_shape(graph: nir.NIRGraph) -> tuple[int, ...]:
    """Return the shape of one time step of the graph's input, without batch."""
    name = layout(graph).input_name
    shape = port_shape(graph.nodes[name], "input")
    if shape is None:
        raise GraphStructureError(f"the Input node {name!r} has no shape; set input_type when writing the graph")
    return shape


def spiking_nodes(graph: nir.NIRGraph) -> list[str]:
    """Return the names of the spiking nodes in execution order."""
    return [name for name in layout(graph).order if isinstance(graph.nodes[name], SPIKING_TYPES)]


def _pair(value) -> tuple[int, int]:
    array = np.asarray(value).reshape(-1)
    if array.size == 1:
        return int(array[0]), int(array[0])
    return int(array[0]), int(array[1])


def _conv2d_output(node: nir.Conv2d, shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) != 3:
        raise GraphStructureError(f"Conv2d expects a (C, H, W) input, got {shape}")
    if np.asarray(node.weight).ndim != 4:
        raise GraphStructureError(f"Conv2d weight has shape {np.asarray(node.weight).shape}; it must be "
                                  "(C_out, C_in / groups, kH, kW)")
    channels_out, channels_in_per_group, kh, kw = node.weight.shape
    groups = int(np.asarray(node.groups).reshape(-1)[0])
    if groups < 1 or min(_pair(node.stride)) < 1 or min(_pair(node.dilation)) < 1:
        raise GraphStructureError(f"Conv2d stride {node.stride}, dilation {node.dilation} and groups {node.groups} "
                                  "must all be at least 1")
    if np.asarray(node.bias).shape not in ((), (channels_out,)):
        raise GraphStructureError(f"Conv2d bias has shape {np.asarray(node.bias).shape}; it must be ({channels_out},)")
    if shape[0] != channels_in_per_group * groups:
        raise GraphStructureError(
            f"Conv2d weight expects {channels_in_per_group * groups} input channels, the input has {shape[0]}"
        )
    if isinstance(node.padding, str):
        if node.padding == "same":
            padding = ((kh - 1) // 2, (kw - 1) // 2)
        else:
            padding = (0, 0)
    else:
        padding = _pair(node.padding)
    stride, dilation = _pair(node.stride), _pair(node.dilation)
    spatial = []
    for size, k, s, p, d in zip(shape[1:], (kh, kw), stride, padding, dilation):
        spatial.append((size + 2 * p - d * (k - 1) - 1) // s + 1)
    if min(spatial) < 1:
        raise GraphStructureError(f"Conv2d on input {shape} gives an empty output {spatial}")
    return (channels_out, *spatial)


def _pool_output(node, shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) != 3:
        raise GraphStructureError(f"{type(node).__name__} expects a (C, H, W) input, got {shape}")
    kernel, stride, padding = _pair(node.kernel_size), _pair(node.stride), _pair(node.padding)
    if min(kernel) < 1 or min(stride) < 1 or min(padding) < 0:
        raise GraphStructureError(f"{type(node).__name__} kernel {kernel} and stride {stride} must be at least 1 "
                                  f"and padding {padding} at least 0")
    spatial = [(size + 2 * p - k) // s + 1 for size, k, s, p in zip(shape[1:], kernel, stride, padding)]
    if min(spatial) < 1:
        raise GraphStructureError(f"{type(node).__name__} on input {shape} gives an empty output {spatial}")
    return (shape[0], *spatial)


def _flatten_output(node: nir.Flatten, shape: tuple[int, ...]) -> tuple[int, ...]:
    rank = len(shape)
    start = int(node.start_dim) % rank if rank else 0
    end = int(node.end_dim) % rank if rank else 0
    if start > end:
        raise GraphStructureError(f"Flatten start_dim {node.start_dim} is after end_dim {node.end_dim}")
    return (*shape[:start], int(np.prod(shape[start:end + 1])), *shape[end + 1:])


def node_output_shape(node: nir.NIRNode, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Return the output shape of ``node`` for an input of ``shape`` (no batch dimension)."""
    if isinstance(node, (nir.Affine, nir.Linear)):
        weight = np.asarray(node.weight)
        if weight.ndim != 2 or shape != (weight.shape[1],):
            raise GraphStructureError(f"weight {weight.shape} does not take input of shape {shape}")
        if isinstance(node, nir.Affine) and np.asarray(node.bias).shape not in ((), (weight.shape[0],)):
            raise GraphStructureError(
                f"bias has shape {np.asarray(node.bias).shape}; it must have one value per output ({weight.shape[0]},)"
            )
        return (weight.shape[0],)
    if isinstance(node, nir.Conv2d):
        return _conv2d_output(node, shape)
    if isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
        return _pool_output(node, shape)
    if isinstance(node, nir.Flatten):
        return _flatten_output(node, shape)
    # Element-wise nodes (neurons, Scale, Threshold, Delay, ...) keep the shape.
    declared = port_shape(node, "input")
    if declared is not None and declared != shape:
        raise GraphStructureError(f"node is declared for input {declared} but receives {shape}")
    return shape


def infer_shapes(graph: nir.NIRGraph) -> dict[str, tuple[int, ...]]:
    """Propagate the Input shape through the graph; return each node's output shape.

    Raises ``GraphStructureError`` naming the node where shapes do not fit together,
    including a shape declared in the file that disagrees with the propagated one.
    """
    graph_layout = layout(graph)
    shapes: dict[str, tuple[int, ...]] = {graph_layout.input_name: input_shape(graph)}
    for name in graph_layout.order[1:]:
        incoming = {shapes[p] for p in graph_layout.predecessors[name]}
        if len(incoming) != 1:
            raise GraphStructureError(f"node {name!r} receives inputs of different shapes {sorted(incoming)}")
        shape = incoming.pop()
        try:
            out = node_output_shape(graph.nodes[name], shape)
        except GraphStructureError as error:
            raise GraphStructureError(f"node {name!r} ({type(graph.nodes[name]).__name__}): {error}") from None
        declared = port_shape(graph.nodes[name], "output")
        if declared is not None and declared != out and not isinstance(graph.nodes[name], nir.Output):
            raise GraphStructureError(
                f"node {name!r} declares output shape {declared} but computes {out} from its input {shape}"
            )
        if isinstance(graph.nodes[name], nir.Output) and declared is not None and \
                int(np.prod(declared)) != int(np.prod(out)):
            raise GraphStructureError(f"Output node {name!r} declares shape {declared} but receives {out}")
        shapes[name] = out
    return shapes


def unstable_neurons(graph: nir.NIRGraph, dt: float) -> list[str]:
    """Return the LIF/CubaLIF/LI nodes whose ``dt / tau`` exceeds 1 somewhere.

    Forward Euler overshoots there instead of decaying (``dt / tau = 1`` is the memoryless
    limit), and backends that round differently can disagree.
    """
    names = []
    for name, node in graph.nodes.items():
        taus = [getattr(node, attribute) for attribute in ("tau", "tau_mem", "tau_syn") if hasattr(node, attribute)]
        if any(np.max(dt / np.asarray(tau, dtype=np.float64)) > 1.0 + 1e-12 for tau in taus):
            names.append(name)
    return names
