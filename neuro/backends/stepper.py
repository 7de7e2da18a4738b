"""Step a NIR graph through time with one PyTorch callable per node.

The reference, snnTorch and Norse backends differ only in which callable runs each
node; this module owns the loop they share.  A callable takes ``(x, state)`` and
returns ``(y, state)``; stateless nodes ignore and return ``None`` as state.
"""

from __future__ import annotations

from typing import Callable

import nir
import numpy as np
import torch

from neuro.backends.base import Backend, BackendRun, group_notes
from neuro.graph import SPIKING_TYPES, infer_shapes, layout

NodeStep = Callable[[torch.Tensor, object], tuple[torch.Tensor, object]]


def stateless(function: Callable[[torch.Tensor], torch.Tensor]) -> NodeStep:
    """Wrap a state-free function as a ``NodeStep``."""

    def step(x: torch.Tensor, state: object) -> tuple[torch.Tensor, object]:
        return function(x), None

    return step


def flatten_with_batch(node: nir.Flatten) -> Callable[[torch.Tensor], torch.Tensor]:
    """Return a flatten over NIR's dimensions of a batched tensor.

    NIR counts dimensions without the batch, so NIR dimension ``d >= 0`` is dimension
    ``d + 1`` of the batched tensor; negative dimensions count from the end either way.
    """
    start = int(node.start_dim)
    end = int(node.end_dim)
    start = start + 1 if start >= 0 else start
    end = end + 1 if end >= 0 else end
    return lambda x: torch.flatten(x, start, end)


def run_graph(
    backend_name: str,
    graph: nir.NIRGraph,
    steps: dict[str, NodeStep],
    spikes: np.ndarray,
    *,
    dtype: torch.dtype = torch.float64,
    voltage_of: dict[str, Callable[[object], torch.Tensor]] | None = None,
    notes: list[str] | None = None,
) -> BackendRun:
    """Run ``graph`` over input ``spikes`` (T, B, *shape); record every spiking node."""
    graph_layout = layout(graph)
    order = graph_layout.computational_nodes()
    spiking = [name for name in order if isinstance(graph.nodes[name], SPIKING_TYPES)]
    voltage_of = voltage_of or {}
    inputs = torch.as_tensor(np.asarray(spikes), dtype=dtype)

    states: dict[str, object] = {name: None for name in order}
    records: dict[str, list[torch.Tensor]] = {name: [] for name in spiking}
    voltages: dict[str, list[torch.Tensor]] = {name: [] for name in voltage_of}
    outputs: list[torch.Tensor] = []
    with torch.no_grad():
        for x_t in inputs:
            values = {graph_layout.input_name: x_t}
            for name in order:
                x = sum(values[p] for p in graph_layout.predecessors[name])
                values[name], states[name] = steps[name](x, states[name])
                if name in records:
                    records[name].append(values[name].to(dtype))
                if name in voltages:
                    voltages[name].append(voltage_of[name](states[name]).to(dtype))
            output_inputs = graph_layout.predecessors[graph_layout.output_name]
            outputs.append(sum(values[p] for p in output_inputs))

    def stack(items: list[torch.Tensor]) -> np.ndarray:
        return torch.stack(items).cpu().numpy()

    return BackendRun(
        backend=backend_name,
        spikes={name: stack(values) for name, values in records.items()},
        output=stack(outputs),
        voltages={name: stack(values) for name, values in voltages.items()},
        delays={name: 0 for name in graph.nodes},
        notes=list(notes or []),
    )


def float64_tensor(value, shape: tuple[int, ...]) -> torch.Tensor:
    """Return a NIR parameter as a float64 tensor broadcast to a layer's ``shape``."""
    return torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=torch.float64).expand(shape).clone()


class SteppedBackend(Backend):
    """A backend that runs each node as a PyTorch step callable through ``run_graph``.

    Subclasses implement ``build_node``; ``voltage_of`` returns, for a step callable of a
    neuron, a function that reads the membrane from its state (None for other nodes).
    """

    def build_node(self, name: str, node: nir.NIRNode, shape: tuple[int, ...],
                   dt: float) -> tuple[NodeStep, str | None]:
        """Return the step callable of one node and the correction made to NIR's meaning, if any."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_node()")

    def build(self, graph: nir.NIRGraph, dt: float) -> tuple[dict[str, NodeStep], list[str]]:
        """Return one step callable per node and the corrections made, for step ``dt`` (s)."""
        self.check_supported(graph)
        shapes = infer_shapes(graph)
        steps: dict[str, NodeStep] = {}
        notes: list[tuple[str, str]] = []
        for name, node in graph.nodes.items():
            if isinstance(node, (nir.Input, nir.Output)):
                continue
            steps[name], note = self.build_node(name, node, shapes[name], dt)
            if note:
                notes.append((name, note))
        return steps, group_notes(notes)

    def voltage_of(self, step: NodeStep):
        return None

    def run(self, graph: nir.NIRGraph, spikes: np.ndarray, dt: float, *,
            record_voltage: bool = False) -> BackendRun:
        steps, notes = self.build(graph, dt)
        voltage_of = {}
        if record_voltage:
            readers = {name: self.voltage_of(step) for name, step in steps.items()}
            voltage_of = {name: reader for name, reader in readers.items() if reader is not None}
        return run_graph(self.name, graph, steps, spikes, voltage_of=voltage_of, notes=notes)
