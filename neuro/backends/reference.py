"""The project's reference simulator: NIR's meaning, forward Euler, float64.

Every other backend is compared with this one layer by layer.  The neuron equations
are those of ``neuro/neurons.py`` (LIF, IF) plus the current-based LIF::

    I = I + (dt / tau_syn) * (-I + w_in * S)
    v = v + (dt / tau_mem) * (v_leak - v + r * I)

then the same threshold and reset as LIF.  All state starts at zero.
"""

from __future__ import annotations

import nir
import numpy as np
import torch
import torch.nn.functional as F

from neuro.backends.base import Backend, BackendRun
from neuro.backends.stepper import NodeStep, flatten_with_batch, run_graph, stateless
from neuro.graph import infer_shapes

DTYPE = torch.float64


def _tensor(value, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=DTYPE)
    return tensor.expand(shape).clone() if shape is not None else tensor


def _pair(value) -> tuple[int, int]:
    array = np.asarray(value).reshape(-1)
    return (int(array[0]), int(array[0])) if array.size == 1 else (int(array[0]), int(array[1]))


def conv2d_function(node: nir.Conv2d):
    """Return x -> conv2d(x) with the node's weights, for batched (B, C, H, W) input."""
    weight, bias = _tensor(node.weight), _tensor(node.bias)
    padding = node.padding if isinstance(node.padding, str) else _pair(node.padding)
    stride, dilation = _pair(node.stride), _pair(node.dilation)
    groups = int(np.asarray(node.groups).reshape(-1)[0])
    return lambda x: F.conv2d(x, weight, bias, stride, padding, dilation, groups)


def sum_pool_function(node: nir.SumPool2d):
    """Return x -> window sums (NIR SumPool2d) for batched (B, C, H, W) input."""
    kernel, stride, padding = _pair(node.kernel_size), _pair(node.stride), _pair(node.padding)
    return lambda x: F.avg_pool2d(x, kernel, stride, padding, divisor_override=1)


def linear_step(node: nir.NIRNode) -> NodeStep:
    """Return the float64 step function of a stateless synaptic node (Affine, Linear, Conv2d, ...)."""
    if isinstance(node, nir.Affine):
        weight, bias = _tensor(node.weight), _tensor(node.bias)
        return stateless(lambda x: F.linear(x, weight, bias))
    if isinstance(node, nir.Linear):
        weight = _tensor(node.weight)
        return stateless(lambda x: F.linear(x, weight))
    if isinstance(node, nir.Conv2d):
        return stateless(conv2d_function(node))
    if isinstance(node, nir.SumPool2d):
        return stateless(sum_pool_function(node))
    if isinstance(node, nir.AvgPool2d):
        kernel, stride, padding = _pair(node.kernel_size), _pair(node.stride), _pair(node.padding)
        return stateless(lambda x: F.avg_pool2d(x, kernel, stride, padding))
    if isinstance(node, nir.Flatten):
        return stateless(flatten_with_batch(node))
    if isinstance(node, nir.Scale):
        scale = _tensor(node.scale)
        return stateless(lambda x: x * scale)
    raise TypeError(type(node).__name__)


def neuron_step(node: nir.NIRNode, shape: tuple[int, ...], dt: float) -> NodeStep:
    """Return the float64 forward-Euler step function of a neuron node for ``shape`` and ``dt`` (s)."""
    def reset(v, spikes, v_reset):
        return torch.where(spikes > 0, v_reset.expand_as(v), v)

    if isinstance(node, nir.LIF):
        tau, r, v_leak = _tensor(node.tau, shape), _tensor(node.r, shape), _tensor(node.v_leak, shape)
        v_th, v_reset = _tensor(node.v_threshold, shape), _tensor(node.v_reset, shape)

        def lif(x, v):
            v = torch.zeros_like(x) if v is None else v
            v = v + (dt / tau) * (v_leak - v + r * x)
            spikes = (v > v_th).to(DTYPE)
            return spikes, reset(v, spikes, v_reset)
        return lif

    if isinstance(node, nir.IF):
        r, v_th, v_reset = _tensor(node.r, shape), _tensor(node.v_threshold, shape), _tensor(node.v_reset, shape)

        def integrate_and_fire(x, v):
            v = torch.zeros_like(x) if v is None else v
            v = v + r * x
            spikes = (v > v_th).to(DTYPE)
            return spikes, reset(v, spikes, v_reset)
        return integrate_and_fire

    if isinstance(node, nir.CubaLIF):
        tau_syn, tau_mem = _tensor(node.tau_syn, shape), _tensor(node.tau_mem, shape)
        r, v_leak, w_in = _tensor(node.r, shape), _tensor(node.v_leak, shape), _tensor(node.w_in, shape)
        v_th, v_reset = _tensor(node.v_threshold, shape), _tensor(node.v_reset, shape)

        def cuba_lif(x, state):
            current, v = (torch.zeros_like(x), torch.zeros_like(x)) if state is None else state
            current = current + (dt / tau_syn) * (-current + w_in * x)
            v = v + (dt / tau_mem) * (v_leak - v + r * current)
            spikes = (v > v_th).to(DTYPE)
            return spikes, (current, reset(v, spikes, v_reset))
        return cuba_lif

    if isinstance(node, nir.LI):
        tau, r, v_leak = _tensor(node.tau, shape), _tensor(node.r, shape), _tensor(node.v_leak, shape)

        def leaky_integrator(x, v):
            v = torch.zeros_like(x) if v is None else v
            v = v + (dt / tau) * (v_leak - v + r * x)
            return v, v
        return leaky_integrator
    raise TypeError(type(node).__name__)


def neuron_voltage(state) -> torch.Tensor:
    """Return the membrane voltage held in a neuron step's state (a tensor, or (current, voltage))."""
    return state[1] if isinstance(state, tuple) else state


class ReferenceBackend(Backend):
    """NIR's meaning in float64 PyTorch; the yardstick for the other backends."""

    name = "reference"
    node_types = (nir.Affine, nir.Linear, nir.Conv2d, nir.SumPool2d, nir.AvgPool2d, nir.Flatten,
                  nir.Scale, nir.LIF, nir.IF, nir.CubaLIF, nir.LI)

    def run(self, graph: nir.NIRGraph, spikes: np.ndarray, dt: float, *,
            record_voltage: bool = False) -> BackendRun:
        self.check_supported(graph)
        shapes = infer_shapes(graph)
        steps: dict[str, NodeStep] = {}
        voltage_of = {}
        for name, node in graph.nodes.items():
            if isinstance(node, (nir.Input, nir.Output)):
                continue
            if isinstance(node, (nir.LIF, nir.IF, nir.CubaLIF, nir.LI)):
                steps[name] = neuron_step(node, shapes[name], dt)
                if record_voltage:
                    voltage_of[name] = neuron_voltage
            else:
                steps[name] = linear_step(node)
        return run_graph(self.name, graph, steps, spikes, voltage_of=voltage_of)
