"""Write a NIR graph as a lava-dl netx HDF5 network, the integer network of ``lava-fixed``.

The integer parameters come from ``plan_network(..., fixed_point=True)``, the plan that
the project's ``lava-fixed`` backend runs.  Each planned synapse and the neuron after it
become one netx block: a Conv2d or pooling Conv becomes a ``conv`` block, an Affine or
Linear Dense becomes a ``dense`` block, and a Flatten between them becomes a
``flatten`` entry.  Pooling is already a grouped Conv with one constant kernel per
channel in the plan, so it is a ``conv`` block too (netx 0.6 cannot load its ``pool``
blocks).

File layout read by lava-dl 0.6 (``lava/lib/dl/netx/hdf5.py`` and ``utils.py``)::

    layer/0     type "input", shape (C, H, W)
    layer/i     type "conv": shape (C, H, W) of the output, weight (C_out, C_in/groups,
                kH, kW) applied as PyTorch's cross-correlation, stride, padding and
                dilation as (H, W), groups, neuron/*, optional bias
                type "flatten": the next dense block reads the (C, H, W) values C-order
                type "dense": shape (N,), weight (N_out, N_in), neuron/*, optional bias
    neuron/     type "CUBA", iDecay, vDecay, vThMant, refDelay, gradedSpike

This exporter also stores each block's neuron name as the attribute ``name`` of its
group, and the ``Network`` arguments ``reset_interval`` and ``reset_offset`` as root
attributes; netx reads neither.

netx reverses ``shape``, ``stride``, ``padding`` and ``dilation`` into Lava's (X, Y, C)
order, flips and transposes the kernel, and builds a ``LIFReset`` (a ``LIF`` when no
``reset_interval`` is given) with ``du = iDecay - 1``, ``dv = vDecay``, ``vth =
vThMant``, ``bias_mant = bias`` and ``bias_exp = 6``.
Per-neuron ``iDecay``, ``vDecay``, ``vThMant`` and ``bias`` arrays are passed through
unchanged, so they are stored in Lava's (X, Y, C) layout.

Two differences from the plan cannot be avoided with netx 0.6's loader:

* It ignores any weight exponent: ``create_dense`` derives one from the stored weights
  that leaves their effective value unchanged.  A Dense synapse planned with
  ``weight_exp = e`` is therefore written with exponent 0 and its neuron's threshold
  and bias divided by ``2**e``.  Voltages are then ``2**-e`` of the plan's, up to the
  rounding of the threshold and of each voltage decay, so spikes can differ.
* It fixes ``bias_exp`` at 6, so a bias is stored as ``round(bias / 64)`` in the
  plan's integer voltage units.

Both are listed in ``NetxExport.adjustments``; ``netx_plan`` is the plan with them
applied, which the project's Lava builder runs bit-exactly like netx.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import nir
import numpy as np

from cohort.files import atomic_write
from neuro.graph import input_shape

if TYPE_CHECKING:
    from neuro.backends.lava.plan import NetworkPlan

logger = logging.getLogger(__name__)

# netx 0.6 builds every CUBA neuron with this bias exponent (hdf5.py, get_neuron_params).
NETX_BIAS_EXP = 6
# Lava's LIFReset models: 17-bit unsigned threshold, 13-bit signed bias mantissa.
VTH_MAX = 2**17 - 1
BIAS_MANTISSA_MAX = 4095


class NetxExportError(ValueError):
    """A network that the netx HDF5 format (as lava-dl 0.6 loads it) cannot hold."""


@dataclass(frozen=True)
class NetxAdjustment:
    """A change to one neuron layer that netx's loader forces, with its size.

    ``weight_exp`` is the planned exponent that was removed.  ``vth_before`` and
    ``vth_after`` are the largest threshold before and after the change.
    ``bias_error`` is the largest bias rounding error in the plan's integer voltage
    units (64 per threshold unit).
    """

    layer: str
    weight_exp: int
    vth_before: int
    vth_after: int
    bias_error: float

    def sentence(self) -> str:
        parts = []
        if self.weight_exp:
            parts.append(f"weight exponent {self.weight_exp} removed, threshold {self.vth_before} -> "
                         f"{self.vth_after} (scaled by 2**{-self.weight_exp})")
        if self.bias_error:
            parts.append(f"bias rounded to netx's bias_exp 6, largest error {self.bias_error:g}/64 of a "
                         f"threshold unit")
        return f"layer '{self.layer}': " + "; ".join(parts)


@dataclass
class NetxExport:
    """Result of ``export_netx``.

    ``reset_interval`` and ``reset_offset`` are the arguments to pass to
    ``lava.lib.dl.netx.hdf5.Network``, so that every neuron zeroes its state at its
    first aligned step of each sample as ``lava-fixed`` does.  ``layers`` names the
    neuron of each block in order, and ``lags`` gives each block's delay in steps
    behind the input.  ``plan`` is ``lava-fixed``'s plan and ``netx_plan`` the plan
    that the file stores.
    """

    path: Path
    plan: NetworkPlan
    netx_plan: NetworkPlan
    layers: list[str]
    lags: dict[str, int]
    reset_interval: int
    reset_offset: int
    input_shape: tuple[int, ...]
    adjustments: list[NetxAdjustment] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        """True when the netx network is the same integer network as ``lava-fixed``'s plan."""
        return not self.adjustments


def plan_fixed_point(graph: nir.NIRGraph, dt: float, num_steps: int, *, calibration=None):
    """Return ``lava-fixed``'s plan of ``graph`` for binary input spikes.

    ``calibration`` is passed on to ``plan_network`` when it accepts that keyword;
    passing one to a ``plan_network`` without it raises TypeError.
    """
    from neuro.backends.lava.plan import plan_network

    extra = {}
    if calibration is not None:
        if "calibration" not in inspect.signature(plan_network).parameters:
            raise TypeError("this version of plan_network takes no calibration; omit it")
        extra["calibration"] = calibration
    shape = input_shape(graph)
    return plan_network(graph, float(dt), int(num_steps), fixed_point=True,
                        input_bound=np.ones(shape), input_graded=False, **extra)


def _blocks(plan) -> list[tuple]:
    """Group the plan's steps into netx entries: ("flatten", step) or ("block", synapse, neuron)."""
    from neuro.backends.lava.plan import FlattenPlan, NeuronPlan, SynapsePlan

    entries, pending = [], None
    previous = plan.input_name
    for step in plan.steps:
        if isinstance(step, FlattenPlan):
            if pending is not None or step.source != previous or len(step.input_shape) != 3:
                raise NotImplementedError(
                    f"netx export: Flatten '{step.name}' must follow a neuron layer of shape (C, H, W); "
                    f"netx only flattens a conv block's output into the next dense block"
                )
            entries.append(("flatten", step))
            previous = step.name
        elif isinstance(step, SynapsePlan):
            if pending is not None:
                raise NotImplementedError(
                    f"netx export: synaptic node '{pending.name}' feeds another synaptic node without a neuron "
                    f"in between (graded messages); netx blocks are a synapse followed by neurons"
                )
            if step.sources != (previous,):
                raise NotImplementedError(
                    f"netx export: node '{step.name}' receives {list(step.sources)}; netx networks are a "
                    f"single chain of blocks, so each node needs exactly the previous one as input"
                )
            pending = step
        elif isinstance(step, NeuronPlan):
            if pending is None or step.sources != (pending.name,):
                raise NotImplementedError(
                    f"netx export: neuron '{step.name}' has no synaptic node of its own in front; netx "
                    f"blocks are a Conv or Dense synapse followed by neurons"
                )
            entries.append(("block", pending, step))
            pending, previous = None, step.name
    if pending is not None:
        raise NotImplementedError(f"netx export: synaptic node '{pending.name}' ends the network without a neuron")
    if previous != plan.output_source:
        raise NotImplementedError(f"netx export: the output comes from '{plan.output_source}', not the last block")
    return entries


def _check_supported_nodes(graph: nir.NIRGraph) -> None:
    supported = (nir.Input, nir.Output, nir.Conv2d, nir.SumPool2d, nir.AvgPool2d, nir.Affine, nir.Linear,
                 nir.Flatten, nir.LIF, nir.IF, nir.CubaLIF)
    for name, node in graph.nodes.items():
        if not isinstance(node, supported):
            raise NotImplementedError(
                f"netx export: node '{name}' is a {type(node).__name__}, which the netx exporter cannot express; "
                f"supported types are {', '.join(t.__name__ for t in supported)}"
            )


def _adjust_neuron(synapse, neuron) -> tuple:
    """Return the synapse and neuron with netx's exponent and bias rules applied, and the adjustment."""
    factor = 2.0 ** (-synapse.weight_exp)
    vth = np.asarray(neuron.vth, dtype=np.int64)
    new_vth = np.rint(vth * factor).astype(np.int64)
    if np.any(new_vth < 1) or np.any(new_vth > VTH_MAX):
        raise NetxExportError(
            f"neuron '{neuron.name}': removing weight exponent {synapse.weight_exp} (netx ignores exponents) "
            f"gives thresholds {int(new_vth.min())}..{int(new_vth.max())}, outside 1..{VTH_MAX}; "
            f"lower the layer's weight magnitude relative to its threshold"
        )
    mantissa = np.asarray(neuron.bias_mant, dtype=np.float64)
    exponent = np.asarray(neuron.bias_exp, dtype=np.float64)
    bias = mantissa * 2.0 ** exponent * factor
    new_bias = np.rint(bias / 2**NETX_BIAS_EXP).astype(np.int64)
    if np.any(np.abs(new_bias) > BIAS_MANTISSA_MAX):
        raise NetxExportError(
            f"neuron '{neuron.name}': its bias needs a mantissa of {int(np.abs(new_bias).max())} at netx's fixed "
            f"bias_exp {NETX_BIAS_EXP}, above Lava's 13-bit limit {BIAS_MANTISSA_MAX}; lower the bias"
        )
    bias_error = float(np.max(np.abs(new_bias * 2**NETX_BIAS_EXP - bias)))

    # The plan stores a parameter shared by all neurons as a Python int, else as an array.
    new_neuron = dataclasses.replace(
        neuron, vth=int(new_vth) if new_vth.ndim == 0 else new_vth,
        bias_mant=int(new_bias) if new_bias.ndim == 0 else new_bias, bias_exp=NETX_BIAS_EXP,
    )
    new_synapse = dataclasses.replace(synapse, weight_exp=0)
    adjustment = None
    if synapse.weight_exp or bias_error:
        adjustment = NetxAdjustment(neuron.name, synapse.weight_exp, int(vth.max()), int(new_vth.max()), bias_error)
    return new_synapse, new_neuron, adjustment


def netx_compatible_plan(plan) -> tuple[object, list, list[NetxAdjustment]]:
    """Return ``plan`` with netx's loader rules applied, its netx entries and the adjustments made.

    Raises NotImplementedError for a structure netx blocks cannot express (graded
    messages, merges, a neuron without its own synapse, a CubaLIF synaptic bias) and
    NetxExportError for parameters outside netx's ranges.
    """
    if not plan.fixed_point:
        raise ValueError("netx export needs a fixed-point plan (plan_network(..., fixed_point=True))")
    entries = []
    steps, adjustments = [], []
    for entry in _blocks(plan):
        if entry[0] == "flatten":
            steps.append(entry[1])
            entries.append(entry)
            continue
        _, synapse, neuron = entry
        if synapse.num_message_bits:
            raise NotImplementedError(
                f"netx export: '{synapse.name}' receives graded values, but netx blocks here take binary spikes; "
                f"put a neuron layer in front of it"
            )
        if neuron.current_bias is not None:
            raise NotImplementedError(
                f"netx export: neuron '{neuron.name}' adds a bias to its current u (a CubaLIF with a synaptic "
                f"bias), which netx's CUBA block cannot express; fold the bias into v_leak"
            )
        if not np.any(synapse.weight):
            raise NetxExportError(f"synaptic node '{synapse.name}' has only zero weights, which netx cannot load")
        new_synapse, new_neuron, adjustment = _adjust_neuron(synapse, neuron)
        if adjustment is not None:
            adjustments.append(adjustment)
        steps += [new_synapse, new_neuron]
        entries.append(("block", new_synapse, new_neuron))
    return dataclasses.replace(plan, steps=steps), entries, adjustments


def _reset_arguments(plan, entries) -> tuple[int, int]:
    """Return netx's (reset_interval, reset_offset) that reproduce the plan's reset offsets.

    netx gives block ``i`` (counting from 0) the offset ``reset_offset + 1 + i``.
    """
    neurons = [entry[2] for entry in entries if entry[0] == "block"]
    offset = (neurons[0].reset_offset - 1) % plan.period
    for index, neuron in enumerate(neurons):
        if (offset + 1 + index) % plan.period != neuron.reset_offset:
            raise NotImplementedError(
                f"netx export: neuron '{neuron.name}' resets at offset {neuron.reset_offset}, but netx resets "
                f"block {index} at {(offset + 1 + index) % plan.period}; netx needs one synapse per block"
            )
    return plan.period, offset


def _string(handle: h5py.Group, key: str, value: str) -> None:
    handle.create_dataset(key, (1,), "S10", [value.encode("ascii")])


def _write_neuron(handle: h5py.Group, neuron) -> None:
    _string(handle, "neuron/type", "CUBA")
    handle.create_dataset("neuron/iDecay", data=np.asarray(neuron.du, dtype=np.int64) + 1)
    handle.create_dataset("neuron/vDecay", data=np.asarray(neuron.dv, dtype=np.int64))
    handle.create_dataset("neuron/vThMant", data=np.asarray(neuron.vth, dtype=np.int64))
    handle.create_dataset("neuron/refDelay", data=1)
    handle.create_dataset("neuron/gradedSpike", data=False)
    if np.any(np.asarray(neuron.bias_mant) != 0):
        handle.create_dataset("bias", data=np.broadcast_to(np.asarray(neuron.bias_mant, np.int64), neuron.shape))


def _write_block(handle: h5py.Group, synapse, neuron) -> None:
    from lava.proc.conv.process import Conv

    if synapse.process is Conv:
        _string(handle, "type", "conv")
        handle.create_dataset("shape", data=np.array(neuron.shape[::-1]))
        # Inverse of netx's weight[:, :, ::-1, ::-1].transpose(0, 3, 2, 1): back to PyTorch's layout.
        kernel = synapse.weight[:, ::-1, ::-1, :].transpose(0, 3, 2, 1)
        handle.create_dataset("weight", data=np.ascontiguousarray(kernel).astype(np.int64))
        for key in ("stride", "padding", "dilation"):
            handle.create_dataset(key, data=np.array(synapse.conv_arguments[key][::-1]))
        handle.create_dataset("groups", data=int(synapse.conv_arguments["groups"]))
    else:
        _string(handle, "type", "dense")
        handle.create_dataset("shape", data=np.array(neuron.shape))
        handle.create_dataset("weight", data=np.asarray(synapse.weight).astype(np.int64))
    _write_neuron(handle, neuron)


def write_netx(path: str | os.PathLike, plan, entries, *, reset_interval: int, reset_offset: int) -> Path:
    """Write the netx entries of a netx-compatible plan to ``path`` atomically."""
    first_synapse = next(entry[1] for entry in entries if entry[0] == "block")
    lava_input_shape = tuple(first_synapse.input_shape)

    def write(temporary: str) -> None:
        with h5py.File(temporary, "w") as handle:
            handle.attrs["producer"] = "pulmofusion"
            handle.attrs["reset_interval"] = reset_interval
            handle.attrs["reset_offset"] = reset_offset
            layers = handle.create_group("layer")
            group = layers.create_group("0")
            _string(group, "type", "input")
            group.create_dataset("shape", data=np.array(lava_input_shape[::-1]))
            for index, entry in enumerate(entries, start=1):
                group = layers.create_group(str(index))
                if entry[0] == "flatten":
                    _string(group, "type", "flatten")
                    group.create_dataset("shape", data=np.array(entry[1].output_shape))
                else:
                    group.attrs["name"] = entry[2].name
                    _write_block(group, entry[1], entry[2])

    return atomic_write(path, write)


def export_netx(graph: nir.NIRGraph, path: str | os.PathLike, *, dt: float, num_steps: int,
                calibration=None) -> NetxExport:
    """Write ``graph`` as a netx HDF5 network for samples of ``num_steps`` binary input steps of ``dt`` s.

    Raises NotImplementedError naming the node or structure that netx cannot express,
    ``LavaMappingError`` for parameters Lava cannot express, and NetxExportError for
    values outside netx's ranges.  Nothing is left at ``path`` on failure.
    """
    _check_supported_nodes(graph)
    plan = plan_fixed_point(graph, dt, num_steps, calibration=calibration)
    adjusted, entries, adjustments = netx_compatible_plan(plan)
    reset_interval, reset_offset = _reset_arguments(adjusted, entries)
    written = write_netx(path, adjusted, entries, reset_interval=reset_interval, reset_offset=reset_offset)
    for adjustment in adjustments:
        logger.info("netx export: %s", adjustment.sentence())
    layers = [entry[2].name for entry in entries if entry[0] == "block"]
    return NetxExport(
        path=written, plan=plan, netx_plan=adjusted, layers=layers,
        lags={name: entry[2].lag for name, entry in zip(layers, (e for e in entries if e[0] == "block"))},
        reset_interval=reset_interval, reset_offset=reset_offset,
        input_shape=tuple(input_shape(graph)), adjustments=adjustments,
    )
