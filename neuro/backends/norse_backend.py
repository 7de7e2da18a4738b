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

from neuro.backends.reference import sum_pool_function
from neuro.backends.stepper import NodeStep, SteppedBackend, flatten_with_batch, float64_tensor, stateless

DTYPE = torch.float64


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


class NorseBackend(SteppedBackend):
    """NIR graph on Norse ``LIFBoxCell`` / ``IAFCell`` neurons and Norse's linear layers."""

    name = "norse"
    node_types = (nir.Affine, nir.Linear, nir.Conv2d, nir.SumPool2d, nir.Flatten, nir.LIF, nir.IF)

    def build_node(self, name: str, node: nir.NIRNode, shape: tuple[int, ...],
                   dt: float) -> tuple[NodeStep, str | None]:
        padded_pool = isinstance(node, nir.SumPool2d) and np.any(np.asarray(node.padding) != 0)
        if isinstance(node, (nir.Affine, nir.Linear, nir.Conv2d, nir.SumPool2d)) and not padded_pool:
            return stateless(norse_import._import_norse_module(node, dt=dt).to(DTYPE)), None
        if padded_pool:
            return stateless(sum_pool_function(node)), (
                "padded SumPool2d summed by the adapter; Norse's LPPool2d drops padding.")
        if isinstance(node, nir.Flatten):
            return stateless(flatten_with_batch(node)), (
                "Flatten start_dim shifted by one for the batch dimension "
                "(Norse's importer passes NIR's start_dim unchanged).")
        r = float64_tensor(node.r, shape)
        if isinstance(node, nir.LIF):
            parameters = LIFBoxParameters(
                tau_mem_inv=1.0 / float64_tensor(node.tau, shape), v_leak=float64_tensor(node.v_leak, shape),
                v_th=float64_tensor(node.v_threshold, shape), v_reset=float64_tensor(node.v_reset, shape),
            )
            return _CellAdapter(LIFBoxCell(parameters, dt=dt), r, LIFBoxFeedForwardState), (
                "LIF input multiplied by r and membrane started at 0; Norse's importer ignores r and "
                "starts at v_leak.")
        parameters = IAFParameters(v_th=float64_tensor(node.v_threshold, shape),  # IF
                                   v_reset=float64_tensor(node.v_reset, shape))
        return _CellAdapter(IAFCell(parameters, dt=dt), r, IAFFeedForwardState), (
            "IF input multiplied by r and membrane started at 0; Norse's importer ignores r and starts at v_reset.")

    def voltage_of(self, step: NodeStep):
        return (lambda state: state.v) if isinstance(step, _CellAdapter) else None
