"""Translate NIR neuron nodes into the parameters of Lava's LIF process.

Lava's floating-point LIF (``lava/proc/lif/models.py`` in lava-nc 0.10, class
``AbstractPyLifModelFloat``) updates, in this order::

    u = u * (1 - du) + a_in
    v = v * (1 - dv) + u + bias_mant
    spike where v > vth, then v = 0 where it spiked

The project's canonical equations (``neuro/backends/base.py``) are matched as follows,
with ``a = dt / tau`` and ``I = W x + b`` the output of the synaptic node in front:

* LIF: ``du = 1`` (u carries only this step's input), ``dv = a``, input gain
  ``k = a * r`` and ``bias_mant = k * b + a * v_leak``, so ``v`` is in NIR units.
* IF: ``du = 1``, ``dv = 0``, ``k = r`` and ``bias_mant = k * b``.
* CubaLIF: ``du = dt / tau_syn``, ``dv = dt / tau_mem``, ``k = (dt / tau_syn) * w_in *
  (dt / tau_mem) * r``.  Lava's ``u`` is then ``(dt / tau_mem) * r * I_syn``, and the
  synaptic bias ``b`` must enter ``u`` rather than ``v`` (see ``bias_into_current``).

The gain ``k`` is folded into the weights of the synaptic process in front of the
neuron, one factor per output row (Dense) or per output channel (Conv).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import nir
import numpy as np

from neuro.backends.base import BackendMappingError

logger = logging.getLogger(__name__)


class LavaMappingError(BackendMappingError):
    """A NIR node whose parameters the Lava backend cannot express."""


@dataclass(frozen=True)
class NeuronParameters:
    """Per-neuron Lava LIF parameters of one NIR neuron node, in the node's NIR shape.

    ``du`` and ``dv`` are the current and voltage decays per step, ``gain`` the factor
    ``k`` on the synaptic input ``W x + b``, ``v_threshold`` the threshold in NIR units
    and ``leak_bias`` the constant that ``v_leak`` adds to ``v`` every step.
    ``bias_into_current`` is True where a synaptic bias must be added to ``u`` each
    step (CubaLIF) instead of to ``v``.
    """

    node_name: str
    du: np.ndarray
    dv: np.ndarray
    gain: np.ndarray
    v_threshold: np.ndarray
    leak_bias: np.ndarray
    bias_into_current: bool


def _per_neuron(node_name: str, field_name: str, value, shape: tuple[int, ...]) -> np.ndarray:
    """Broadcast a NIR parameter to the neuron shape as float64."""
    array = np.asarray(value, dtype=np.float64)
    try:
        return np.broadcast_to(array, shape).astype(np.float64, copy=True)
    except ValueError:
        raise LavaMappingError(
            f"neuron '{node_name}': {field_name} has shape {array.shape}, which does not broadcast to "
            f"the neuron shape {shape}; store one value or one value per neuron"
        ) from None


def _check_finite(node_name: str, field_name: str, array: np.ndarray) -> None:
    if not np.all(np.isfinite(array)):
        raise LavaMappingError(f"neuron '{node_name}': {field_name} contains non-finite values; use finite numbers")


def _check_positive(node_name: str, field_name: str, array: np.ndarray) -> None:
    _check_finite(node_name, field_name, array)
    if np.any(array <= 0):
        raise LavaMappingError(
            f"neuron '{node_name}': {field_name} must be > 0 s, got minimum {array.min():g}"
        )


def _check_reset(node_name: str, node: nir.NIRNode, shape: tuple[int, ...]) -> None:
    """Reject a non-zero v_reset: Lava's LIF always resets v to 0."""
    if getattr(node, "v_reset", None) is None:
        return
    v_reset = _per_neuron(node_name, "v_reset", node.v_reset, shape)
    if np.any(v_reset != 0):
        raise LavaMappingError(
            f"neuron '{node_name}': v_reset is {np.unique(v_reset)[:4]}, but Lava's LIF process always "
            f"resets the voltage to 0; set v_reset to 0 (shift v_leak and v_threshold by -v_reset) "
            f"or run this graph on another backend"
        )


def map_neuron(node_name: str, node: nir.NIRNode, shape: tuple[int, ...], dt: float) -> NeuronParameters:
    """Return the Lava LIF parameters that reproduce NIR node ``node`` with step ``dt`` (s).

    Raises ``LavaMappingError`` for a non-zero ``v_reset``, a non-positive time constant
    or non-finite parameters, and ``TypeError`` for a node that is not LIF, IF or CubaLIF.
    """
    _check_reset(node_name, node, shape)
    zeros = np.zeros(shape)
    if isinstance(node, nir.LIF):
        tau = _per_neuron(node_name, "tau", node.tau, shape)
        _check_positive(node_name, "tau", tau)
        r = _per_neuron(node_name, "r", node.r, shape)
        v_leak = _per_neuron(node_name, "v_leak", node.v_leak, shape)
        decay = dt / tau
        du, dv, gain, leak_bias = np.ones(shape), decay, decay * r, decay * v_leak
        bias_into_current = False
    elif isinstance(node, nir.IF):
        r = _per_neuron(node_name, "r", node.r, shape)
        du, dv, gain, leak_bias = np.ones(shape), zeros, r, zeros
        bias_into_current = False
    elif isinstance(node, nir.CubaLIF):
        tau_syn = _per_neuron(node_name, "tau_syn", node.tau_syn, shape)
        tau_mem = _per_neuron(node_name, "tau_mem", node.tau_mem, shape)
        _check_positive(node_name, "tau_syn", tau_syn)
        _check_positive(node_name, "tau_mem", tau_mem)
        r = _per_neuron(node_name, "r", node.r, shape)
        w_in = _per_neuron(node_name, "w_in", node.w_in, shape)
        v_leak = _per_neuron(node_name, "v_leak", node.v_leak, shape)
        decay_syn, decay_mem = dt / tau_syn, dt / tau_mem
        du, dv = decay_syn, decay_mem
        gain = decay_syn * w_in * decay_mem * r
        leak_bias = decay_mem * v_leak
        bias_into_current = True
    else:
        raise TypeError(f"map_neuron expects a LIF, IF or CubaLIF node, got {type(node).__name__}")

    v_threshold = _per_neuron(node_name, "v_threshold", node.v_threshold, shape)
    for field_name, array in (("r", r), ("v_threshold", v_threshold), ("gain", gain), ("bias", leak_bias)):
        _check_finite(node_name, field_name, array)
    return NeuronParameters(
        node_name=node_name, du=du, dv=dv, gain=gain, v_threshold=v_threshold,
        leak_bias=leak_bias, bias_into_current=bias_into_current,
    )
