"""Run a NIR graph on Norse 1.1, keeping NIR's meaning.

Norse's importer (``norse.torch.from_nir``) maps each node with ``_import_norse_module``.
This backend uses that mapping where it keeps NIR's meaning (Affine, Linear, Conv2d,
and SumPool2d without padding) and corrects the rest, recording each correction in
``BackendRun.notes``:

- LIF: Norse builds ``LIFBoxCell`` but ignores ``r`` (it logs a warning) and starts the
  membrane at ``v_leak``.  The adapter builds ``LIFBoxCell`` with float64 parameters,
  feeds it ``r * I`` and starts it at 0, as the other backends do.  The step itself,
  ``v + dt * (1/tau) * (v_leak - v + r I)`` with reset to ``v_reset``, is NIR's.
- IF: ``IAFCell`` ignores ``r`` and starts at ``v_reset``; corrected the same way.
- Flatten: Norse passes NIR's ``start_dim`` to ``torch.nn.Flatten`` unchanged, which counts
  the batch dimension; the adapter shifts it by one.
- SumPool2d with padding: Norse's ``LPPool2d`` drops the padding (it logs a warning); the
  adapter sums padded windows itself.
"""

from __future__ import annotations

import nir
import numpy as np
import torch
from norse.torch.functional.iaf import IAFFeedForwardState, IAFParameters
from norse.torch.functional.lif_box import LIFBoxFeedForwardState, LIFBoxParameters
from norse.torch.module.iaf import IAFCell
from norse.torch.module.lif_box import LIFBoxCell
from norse.torch.utils import import_nir as norse_import

from neuro.backends.base import Backend, BackendRun, group_notes
from neuro.backends.reference import sum_pool_function
from neuro.backends.stepper import NodeStep, flatten_with_batch, run_graph, stateless
from neuro.graph import infer_shapes

DTYPE = torch.float64


def _tensor(value, shape) -> torch.Tensor:
    return torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=DTYPE).expand(shape).clone()


class _CellAdapter:
    """A Norse cell fed with ``r * I`` and started from a zero membrane."""

    def __init__(self, cell: torch.nn.Module, r: torch.Tensor, state_type):
        self.cell = cell
        self.r = r
        self.state_type = state_type

    def __call__(self, x: torch.Tensor, state):
        if state is None:
            state = self.state_type(v=torch.zeros_like(x))
        spikes, state = self.cell(self.r * x, state)
        return spikes.to(DTYPE), state


class NorseBackend(Backend):
    """NIR graph on Norse ``LIFBoxCell`` / ``IAFCell`` neurons and Norse's linear layers."""

    name = "norse"
    node_types = (nir.Affine, nir.Linear, nir.Conv2d, nir.SumPool2d, nir.Flatten, nir.LIF, nir.IF)

    def build(self, graph: nir.NIRGraph, dt: float) -> tuple[dict[str, NodeStep], list[str]]:
        """Return one step callable per node and the corrections made, for step ``dt`` (s)."""
        self.check_supported(graph)
        shapes = infer_shapes(graph)
        steps: dict[str, NodeStep] = {}
        notes: list[tuple[str, str]] = []
        for name, node in graph.nodes.items():
            if isinstance(node, (nir.Input, nir.Output)):
                continue
            shape = shapes[name]
            padded_pool = isinstance(node, nir.SumPool2d) and np.any(np.asarray(node.padding) != 0)
            if isinstance(node, (nir.Affine, nir.Linear, nir.Conv2d)) or (
                    isinstance(node, nir.SumPool2d) and not padded_pool):
                module = norse_import._import_norse_module(node, dt=dt).to(DTYPE)
                steps[name] = stateless(module)
            elif isinstance(node, nir.SumPool2d):
                steps[name] = stateless(sum_pool_function(node))
                notes.append((name, "padded SumPool2d summed by the adapter; Norse's LPPool2d drops padding."))
            elif isinstance(node, nir.Flatten):
                steps[name] = stateless(flatten_with_batch(node))
                notes.append((name, "Flatten start_dim shifted by one for the batch dimension "
                             "(Norse's importer passes NIR's start_dim unchanged)."))
            elif isinstance(node, nir.LIF):
                parameters = LIFBoxParameters(
                    tau_mem_inv=1.0 / _tensor(node.tau, shape), v_leak=_tensor(node.v_leak, shape),
                    v_th=_tensor(node.v_threshold, shape), v_reset=_tensor(node.v_reset, shape),
                )
                steps[name] = _CellAdapter(LIFBoxCell(parameters, dt=dt), _tensor(node.r, shape),
                                           LIFBoxFeedForwardState)
                notes.append((name, "LIF input multiplied by r and membrane started at 0; Norse's "
                             "importer ignores r and starts at v_leak."))
            elif isinstance(node, nir.IF):
                parameters = IAFParameters(v_th=_tensor(node.v_threshold, shape),
                                           v_reset=_tensor(node.v_reset, shape))
                steps[name] = _CellAdapter(IAFCell(parameters, dt=dt), _tensor(node.r, shape),
                                           IAFFeedForwardState)
                notes.append((name, "IF input multiplied by r and membrane started at 0; Norse's "
                             "importer ignores r and starts at v_reset."))
        return steps, group_notes(notes)

    def run(self, graph: nir.NIRGraph, spikes: np.ndarray, dt: float, *,
            record_voltage: bool = False) -> BackendRun:
        steps, notes = self.build(graph, dt)
        voltage_of = {}
        if record_voltage:
            voltage_of = {name: (lambda state: state.v) for name, step in steps.items()
                          if isinstance(step, _CellAdapter)}
        return run_graph(self.name, graph, steps, spikes, voltage_of=voltage_of, notes=notes)
