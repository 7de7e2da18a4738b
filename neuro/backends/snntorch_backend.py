"""Run a NIR graph on snnTorch 1.0, keeping NIR's meaning.

snnTorch's importer (``snntorch.import_nir``) maps each node with
``_nir_to_snntorch_module``.  Where that mapping keeps NIR's meaning (Affine, Linear,
Conv2d) this backend uses it as it is.  Where it does not, the adapter builds the node
itself and records the correction in ``BackendRun.notes``:

- LIF: snnTorch hard-codes ``dt = 1e-4`` s, requires ``v_leak = 0``, and folds ``r`` into a
  rescaled threshold.  The adapter builds ``snn.Leaky`` with per-neuron
  ``beta = 1 - dt / tau`` for the ``dt`` of the run and the true ``v_threshold``, and feeds
  it ``(dt / tau) * (v_leak + r * I)``, which is NIR's forward-Euler step exactly.
- IF: snnTorch imports it as a *leaky* neuron with ``beta = 0.9``; the adapter uses
  ``beta = 1`` and input ``r * I``.
- Flatten: snnTorch passes NIR's ``start_dim`` to ``torch.nn.Flatten`` unchanged, which
  counts the batch dimension; the adapter shifts it by one.
- SumPool2d: not imported by snnTorch; the adapter sums windows itself.
- Reset: ``reset_mechanism="zero"`` with ``reset_delay=False`` equals NIR's reset only when
  ``v_reset = 0``; other values cannot be expressed and raise ``UnsupportedNodeError``.
"""

from __future__ import annotations

import logging

import nir
import numpy as np
import snntorch as snn
import torch
from snntorch import import_nir as snntorch_import

from neuro.backends.base import UnsupportedNodeError
from neuro.backends.reference import sum_pool_function
from neuro.backends.stepper import NodeStep, SteppedBackend, flatten_with_batch, float64_tensor, stateless

logger = logging.getLogger(__name__)

DTYPE = torch.float64


class _LeakyAdapter:
    """``snn.Leaky`` fed with NIR's forward-Euler input term."""

    def __init__(self, beta: torch.Tensor, threshold: torch.Tensor, input_scale: torch.Tensor,
                 input_offset: torch.Tensor):
        self.neuron = snn.Leaky(beta=beta, threshold=threshold, reset_mechanism="zero",
                                reset_delay=False, init_hidden=False).to(DTYPE)
        self.input_scale = input_scale
        self.input_offset = input_offset

    def __call__(self, x: torch.Tensor, mem: torch.Tensor | None):
        if mem is None:
            mem = torch.zeros_like(x)
        spikes, mem = self.neuron(self.input_offset + self.input_scale * x, mem)
        return spikes.to(DTYPE), mem


def _check_reset(backend: str, name: str, node: nir.NIRNode) -> None:
    if not np.allclose(np.asarray(node.v_reset, dtype=np.float64), 0.0):
        raise UnsupportedNodeError(
            backend, name, node,
            supported=["LIF/IF with v_reset = 0 (snnTorch resets to zero only)"],
        )


class SnnTorchBackend(SteppedBackend):
    """NIR graph on snnTorch ``Leaky`` neurons and the library's own linear layers."""

    name = "snntorch"
    node_types = (nir.Affine, nir.Linear, nir.Conv2d, nir.SumPool2d, nir.Flatten, nir.LIF, nir.IF)

    def build_node(self, name: str, node: nir.NIRNode, shape: tuple[int, ...],
                   dt: float) -> tuple[NodeStep, str | None]:
        if isinstance(node, (nir.Affine, nir.Linear, nir.Conv2d)):
            return stateless(snntorch_import._nir_to_snntorch_module(node).to(DTYPE)), None
        if isinstance(node, nir.Flatten):
            return stateless(flatten_with_batch(node)), (
                "Flatten start_dim shifted by one for the batch dimension "
                "(snnTorch's importer passes NIR's start_dim unchanged).")
        if isinstance(node, nir.SumPool2d):
            return stateless(sum_pool_function(node)), (
                "SumPool2d is not imported by snnTorch; window sums computed by the adapter.")
        _check_reset(self.name, name, node)
        if isinstance(node, nir.LIF):
            tau = float64_tensor(node.tau, shape)
            neuron = _LeakyAdapter(
                beta=1.0 - dt / tau, threshold=float64_tensor(node.v_threshold, shape),
                input_scale=(dt / tau) * float64_tensor(node.r, shape),
                input_offset=(dt / tau) * float64_tensor(node.v_leak, shape),
            )
            return neuron, (f"LIF built with beta = 1 - dt/tau for dt = {dt:g} s and input "
                            "(dt/tau)(v_leak + r I); snnTorch's importer assumes dt = 1e-4 s and rescales "
                            "the threshold instead of applying r.")
        neuron = _LeakyAdapter(  # IF, the only other type in node_types
            beta=torch.ones(shape, dtype=DTYPE), threshold=float64_tensor(node.v_threshold, shape),
            input_scale=float64_tensor(node.r, shape), input_offset=torch.zeros(shape, dtype=DTYPE),
        )
        return neuron, "IF built as Leaky with beta = 1; snnTorch's importer gives it beta = 0.9."

    def voltage_of(self, step: NodeStep):
        return (lambda mem: mem) if isinstance(step, _LeakyAdapter) else None
