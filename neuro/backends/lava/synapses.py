"""NIR synaptic nodes as weight tensors, and their conversion to Lava's layouts.

Layouts (lava-nc 0.10, ``lava/proc/conv/process.py`` and ``lava/proc/conv/utils.py``):

* NIR and PyTorch store an image as ``(C, H, W)`` and a Conv2d kernel as
  ``(C_out, C_in / groups, kH, kW)``, applied as a cross-correlation.
* Lava's ``Conv`` process takes ``(X, Y, C) = (W, H, C)`` tensors and a kernel shaped
  ``(C_out, kW, kH, C_in / groups)``, applied as a true convolution
  (``scipy.signal.convolve2d``), so the kernel is also flipped in both spatial axes.
  Its stride, padding and dilation pairs are given in ``(X, Y)`` order.
* Lava's ``Dense`` process takes a ``(N_out, N_in)`` matrix over flat vectors.

Pooling nodes become a ``Conv`` with one all-ones (SumPool2d) or ``1 / (kH * kW)``
(AvgPool2d) kernel per channel and ``groups`` equal to the channel count.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import nir
import numpy as np
import torch
import torch.nn.functional as F

from neuro.backends.lava.neurons import LavaMappingError
from neuro.graph import node_output_shape

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SynapseSpec:
    """One NIR synaptic node in NIR terms, before any Lava-specific change.

    ``kind`` is ``"dense"`` (``weight`` is ``(N_out, N_in)`` over C-order flat indices)
    or ``"conv"`` (``weight`` is ``(C_out, C_in / groups, kH, kW)``, cross-correlation).
    ``bias`` has the NIR output shape and is zero where the node has none.  ``stride``,
    ``padding`` and ``dilation`` are ``(H, W)`` pairs, used by ``"conv"`` only.
    """

    node_name: str
    kind: str
    weight: np.ndarray
    bias: np.ndarray
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1


def _pair(value) -> tuple[int, int]:
    array = np.asarray(value).reshape(-1)
    if array.size == 1:
        return int(array[0]), int(array[0])
    return int(array[0]), int(array[1])


def _dense_spec(name: str, node: nir.NIRNode, input_shape: tuple[int, ...]) -> SynapseSpec:
    weight = np.asarray(node.weight, dtype=np.float64)
    output_shape = node_output_shape(node, input_shape)
    bias = np.zeros(output_shape)
    if isinstance(node, nir.Affine):
        bias = np.broadcast_to(np.asarray(node.bias, dtype=np.float64), output_shape).copy()
    return SynapseSpec(name, "dense", weight, bias, input_shape, output_shape)


def _conv_padding(name: str, node: nir.Conv2d, kernel: tuple[int, int], dilation: tuple[int, int],
                  stride: tuple[int, int]) -> tuple[int, int]:
    if not isinstance(node.padding, str):
        return _pair(node.padding)
    if node.padding == "valid":
        return (0, 0)
    # "same": PyTorch pads d * (k - 1) in total and puts the odd element on the far side;
    # Lava's Conv pads both sides equally, so only an even total is expressible.
    totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
    if any(total % 2 for total in totals) or stride != (1, 1):
        raise LavaMappingError(
            f"Conv2d '{name}': padding='same' with kernel {kernel}, dilation {dilation} and stride {stride} "
            f"needs uneven padding, which Lava's Conv process cannot express; use an odd kernel, stride 1 "
            f"or explicit integer padding"
        )
    return (totals[0] // 2, totals[1] // 2)


def _conv_spec(name: str, node: nir.Conv2d, input_shape: tuple[int, ...]) -> SynapseSpec:
    weight = np.asarray(node.weight, dtype=np.float64)
    output_shape = node_output_shape(node, input_shape)
    stride, dilation = _pair(node.stride), _pair(node.dilation)
    padding = _conv_padding(name, node, tuple(weight.shape[2:]), dilation, stride)
    bias_per_channel = np.broadcast_to(np.asarray(node.bias, dtype=np.float64).reshape(-1), (output_shape[0],))
    bias = np.broadcast_to(bias_per_channel[:, None, None], output_shape).copy()
    groups = int(np.asarray(node.groups).reshape(-1)[0])
    return SynapseSpec(name, "conv", weight, bias, input_shape, output_shape, stride, padding, dilation, groups)


def _pool_spec(name: str, node: nir.NIRNode, input_shape: tuple[int, ...]) -> SynapseSpec:
    kernel = _pair(node.kernel_size)
    output_shape = node_output_shape(node, input_shape)
    channels = input_shape[0]
    value = 1.0 if isinstance(node, nir.SumPool2d) else 1.0 / (kernel[0] * kernel[1])
    weight = np.full((channels, 1, *kernel), value)
    return SynapseSpec(
        name, "conv", weight, np.zeros(output_shape), input_shape, output_shape,
        stride=_pair(node.stride), padding=_pair(node.padding), groups=channels,
    )


SPEC_BUILDERS = {
    nir.Affine: _dense_spec,
    nir.Linear: _dense_spec,
    nir.Conv2d: _conv_spec,
    nir.SumPool2d: _pool_spec,
    nir.AvgPool2d: _pool_spec,
}


def synapse_spec(name: str, node: nir.NIRNode, input_shape: tuple[int, ...]) -> SynapseSpec:
    """Describe NIR synaptic node ``node`` receiving ``input_shape`` as a ``SynapseSpec``."""
    builder = SPEC_BUILDERS.get(type(node))
    if builder is None:
        raise TypeError(f"node '{name}' of type {type(node).__name__} is not a synaptic node")
    spec = builder(name, node, input_shape)
    if not np.all(np.isfinite(spec.weight)) or not np.all(np.isfinite(spec.bias)):
        raise LavaMappingError(f"synaptic node '{name}' has non-finite weights or bias; use finite numbers")
    return spec


def scale_outputs(spec: SynapseSpec, row_gain: np.ndarray) -> np.ndarray:
    """Return the weights with output row (dense) or output channel (conv) ``i`` times ``row_gain[i]``."""
    if spec.kind == "dense":
        return spec.weight * row_gain[:, None]
    return spec.weight * row_gain[:, None, None, None]


def output_gains(spec: SynapseSpec, gain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split per-neuron input gains ``gain`` (NIR output shape) into weight and voltage factors.

    Returns ``(row_gain, voltage_factor)``: the synapse multiplies output row or channel
    ``i`` by ``row_gain[i]``, and Lava's voltage is the NIR voltage times
    ``voltage_factor`` (1 where the weights carry the whole gain).  A Dense process can
    carry any per-neuron gain.  A Conv process shares one gain per channel, so where
    the gain varies inside a channel the remainder goes into the voltage scale, which
    needs non-zero gains of one sign within that channel.
    """
    if spec.kind == "dense":
        return gain.reshape(-1).copy(), np.ones(spec.output_shape)
    channels = gain.reshape(gain.shape[0], -1)
    row_gain = channels[:, 0].copy()
    if np.all(channels == row_gain[:, None]):
        return row_gain, np.ones(spec.output_shape)
    for channel, values in enumerate(channels):
        if np.any(values == 0) or (np.any(values > 0) and np.any(values < 0)):
            raise LavaMappingError(
                f"the neuron after Conv '{spec.node_name}' has input gains (dt/tau * r) that vary inside "
                f"channel {channel} and include zero or both signs; Lava's Conv shares one gain per channel, "
                f"so give the neurons of each channel equal tau and r"
            )
    row_gain = channels[np.arange(channels.shape[0]), np.abs(channels).argmax(axis=1)]
    voltage_factor = row_gain[:, None, None] / gain
    return row_gain, voltage_factor


def lava_conv_weight(weight: np.ndarray) -> np.ndarray:
    """Convert a PyTorch/NIR kernel ``(C_out, C_in/g, kH, kW)`` into Lava's ``(C_out, kW, kH, C_in/g)``.

    The spatial flip turns PyTorch's cross-correlation into Lava's convolution.
    """
    return np.ascontiguousarray(weight.transpose(0, 3, 2, 1)[:, ::-1, ::-1, :])


def lava_conv_arguments(spec: SynapseSpec) -> dict:
    """Return the stride, padding, dilation and groups keyword arguments of Lava's Conv, in (X, Y) order."""
    return {
        "stride": spec.stride[::-1],
        "padding": spec.padding[::-1],
        "dilation": spec.dilation[::-1],
        "groups": spec.groups,
    }


def apply_nir(spec: SynapseSpec, weight: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Apply ``weight`` (in ``spec``'s layout) to NIR-shaped ``values`` without bias, in float64."""
    if spec.kind == "dense":
        return weight @ values.reshape(-1)
    output = F.conv2d(
        torch.as_tensor(values, dtype=torch.float64)[None],
        torch.as_tensor(weight, dtype=torch.float64),
        stride=spec.stride, padding=spec.padding, dilation=spec.dilation, groups=spec.groups,
    )
    return output[0].numpy()


def output_bound(spec: SynapseSpec, weight: np.ndarray, input_bound: np.ndarray) -> np.ndarray:
    """Return the largest possible ``|weight * x|`` per output for ``|x| <= input_bound`` element-wise."""
    return apply_nir(spec, np.abs(weight), np.abs(input_bound)).reshape(spec.output_shape)
