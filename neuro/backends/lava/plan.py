"""Plan the Lava network of a NIR graph: processes, parameters, delays and layouts.

No Lava process is created here; ``builder.py`` turns a ``NetworkPlan`` into processes.
A synaptic node whose only successor is a neuron, and which is that neuron's only
input, is planned together with the neuron so that the neuron's input gain can be
folded into the weights (see ``neurons.py``).  Any other synaptic node sends its
weighted sums on as graded messages.

Every value has a lag: the number of steps by which Lava's record of it trails the
graph's time base.  It is the sum of ``PROCESS_DELAY_STEPS`` over the processes on
the path from the input.

In fixed point the scales come from worst-case bounds (``calibration=None``) or from
a ``Calibration`` of observed synaptic input (see ``calibration.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import nir
import numpy as np
from lava.proc.conv.process import Conv
from lava.proc.dense.process import Dense
from lava.proc.io.source import RingBuffer
from lava.proc.lif.process import LIFReset

from neuro.backends.lava import fixed_point
from neuro.backends.lava.neurons import LavaMappingError, map_neuron
from neuro.backends.lava.synapses import (
    SynapseSpec, lava_conv_arguments, lava_conv_weight, output_bound, output_gains, scale_outputs, synapse_spec,
)
from neuro.graph import SPIKING_TYPES, SYNAPTIC_TYPES, GraphLayout, infer_shapes, layout

if TYPE_CHECKING:
    from neuro.backends.lava.calibration import Calibration

logger = logging.getLogger(__name__)

# Steps between a process receiving a message and sending its effect, read from the
# process models of lava-nc 0.10 and checked by tests/test_lava_backend.py:
# - Dense (lava/proc/dense/models.py, run_spk) first sends ``a_buff``, the sum it computed
#   in the previous step, then receives this step's input into a new ``a_buff``: 1 step.
# - Conv (lava/proc/conv/models.py, run_spk) does the same with ``a_buf``: 1 step.
# - LIF and LIFReset (lava/proc/lif/models.py) receive, update and send in one step: 0.
# - The source RingBuffer (lava/proc/io/source.py) sends data[..., t - 1] at step t: 0.
PROCESS_DELAY_STEPS: dict[type, int] = {Dense: 1, Conv: 1, LIFReset: 0, RingBuffer: 0}
LAVA_PROCESS_OF: dict[type, type] = {
    nir.Affine: Dense, nir.Linear: Dense, nir.Conv2d: Conv, nir.SumPool2d: Conv, nir.AvgPool2d: Conv,
    nir.LIF: LIFReset, nir.IF: LIFReset, nir.CubaLIF: LIFReset,
}
# With num_message_bits = 0, Dense and Conv cast their input to bool (binary spikes).
# With > 0 they use the values: Dense declares s_in as bool, but PyInPort.recv adds the
# received float arrays onto a zero array of that type, which NumPy upcasts to float.
GRADED_MESSAGE_BITS = 24


def to_lava_layout(array: np.ndarray) -> np.ndarray:
    """Reorder a NIR ``(C, H, W)`` array into Lava's ``(W, H, C)``; other ranks stay as they are."""
    return array.transpose(2, 1, 0) if array.ndim == 3 else array


def lava_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Return the Lava port shape of a value with NIR shape ``shape``."""
    return tuple(shape[::-1]) if len(shape) == 3 else tuple(shape)


@dataclass(frozen=True)
class ValueInfo:
    """Lag, layout and range of one node's output in the Lava network.

    ``scale`` is the integer units per NIR unit in fixed point (1 for spikes and in
    float), ``bound`` the largest possible ``|value|`` per element in NIR units.
    """

    shape: tuple[int, ...]
    lag: int
    graded: bool
    scale: float
    bound: np.ndarray


@dataclass
class SynapsePlan:
    """One Lava Dense or Conv process; ``weight`` is in Lava's layout (float, or integers in fixed point).

    ``spec`` is the NIR description of the node and ``nir_weight`` the same weights as
    ``weight`` in ``spec``'s NIR layout, for ``integer_model.emulate``.
    """

    name: str
    sources: tuple[str, ...]
    process: type
    weight: np.ndarray
    weight_exp: int
    num_message_bits: int
    input_shape: tuple[int, ...]
    conv_arguments: dict = field(default_factory=dict)
    spec: SynapseSpec | None = None
    nir_weight: np.ndarray | None = None


@dataclass
class NeuronPlan:
    """One Lava LIFReset process; parameters are scalars or arrays in Lava's layout.

    ``voltage_factor`` (NIR shape) converts Lava's recorded voltage back: NIR voltage =
    recorded / factor in float.  In fixed point it is 1 and voltages stay integers.
    """

    name: str
    sources: tuple[str, ...]
    shape: tuple[int, ...]
    du: float | np.ndarray
    dv: float | np.ndarray
    vth: float | np.ndarray
    bias_mant: float | np.ndarray
    bias_exp: int | np.ndarray
    current_bias: np.ndarray | None
    voltage_factor: np.ndarray
    lag: int
    reset_offset: int = 0


@dataclass
class FlattenPlan:
    """A reshape of ``source``'s output into ``output_shape`` (NIR C-order), done on the port."""

    name: str
    source: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]


@dataclass
class NetworkPlan:
    """Everything ``builder.py`` needs to create the processes of one graph."""

    fixed_point: bool
    input_name: str
    output_name: str
    output_source: str
    steps: list[SynapsePlan | NeuronPlan | FlattenPlan]
    values: dict[str, ValueInfo]
    spiking: list[str]
    period: int
    quantisation: dict[str, fixed_point.LayerQuantisation]
    notes: list[str]
    policy: str = "worst_case"

    @property
    def max_lag(self) -> int:
        return max(info.lag for info in self.values.values())


@dataclass
class _Context:
    graph: nir.NIRGraph
    graph_layout: GraphLayout
    shapes: dict[str, tuple[int, ...]]
    dt: float
    fixed_point: bool
    paired: dict[str, str]
    calibration: Calibration | None = None
    values: dict[str, ValueInfo] = field(default_factory=dict)
    steps: list = field(default_factory=list)
    quantisation: dict[str, fixed_point.LayerQuantisation] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def merged_input(self, name: str, sources: tuple[str, ...]) -> ValueInfo:
        """Return the value that the sum of ``sources`` brings to node ``name``."""
        infos = [self.values[source] for source in sources]
        lags = {source: info.lag for source, info in zip(sources, infos)}
        if len(set(lags.values())) > 1:
            raise LavaMappingError(
                f"node '{name}' adds inputs that Lava delays by different numbers of steps {lags}; "
                f"make every path into it pass the same number of synaptic nodes"
            )
        scales = {info.scale for info in infos}
        if len(scales) > 1:
            raise LavaMappingError(f"node '{name}' adds fixed-point inputs of different scales {sorted(scales)}")
        bound = sum(info.bound for info in infos)
        graded = len(infos) > 1 or any(info.graded for info in infos)
        return ValueInfo(infos[0].shape, infos[0].lag, graded, infos[0].scale, bound)


def _uniform_or_array(values: np.ndarray, integer: bool):
    """Return a scalar when all values agree, else the array in Lava's layout."""
    cast = int if integer else float
    flat = values.reshape(-1)
    if np.all(flat == flat[0]):
        return cast(flat[0])
    return to_lava_layout(values).astype(np.int64 if integer else np.float64)


def _synapse_plan(spec: SynapseSpec, sources: tuple[str, ...], weight: np.ndarray, weight_exp: int,
                  graded: bool) -> SynapsePlan:
    bits = GRADED_MESSAGE_BITS if graded else 0
    if spec.kind == "dense":
        return SynapsePlan(spec.node_name, sources, Dense, weight, weight_exp, bits, spec.input_shape,
                           spec=spec, nir_weight=weight)
    return SynapsePlan(
        spec.node_name, sources, Conv, lava_conv_weight(weight), weight_exp, bits,
        lava_shape(spec.input_shape), lava_conv_arguments(spec), spec=spec, nir_weight=weight,
    )


@dataclass
class _NeuronInput:
    """Input side of one neuron: its sources, the synapse planned with it, and its scaling."""

    sources: tuple[str, ...]
    incoming: ValueInfo
    spec: SynapseSpec | None
    weight: np.ndarray | None
    voltage_factor: np.ndarray
    synaptic_bias: np.ndarray
    lag: int


def _neuron_input(ctx: _Context, name: str, gain: np.ndarray) -> _NeuronInput:
    """Fold the neuron's input ``gain`` into its paired synapse, or into the voltage scale without one."""
    shape = ctx.shapes[name]
    synapse_name = ctx.paired.get(name)
    if synapse_name is not None:
        synapse = ctx.graph.nodes[synapse_name]
        sources = ctx.graph_layout.predecessors[synapse_name]
        incoming = ctx.merged_input(synapse_name, sources)
        spec = synapse_spec(synapse_name, synapse, incoming.shape)
        row_gain, voltage_factor = output_gains(spec, gain)
        lag = incoming.lag + PROCESS_DELAY_STEPS[LAVA_PROCESS_OF[type(synapse)]]
        return _NeuronInput(sources, incoming, spec, scale_outputs(spec, row_gain), voltage_factor, spec.bias, lag)

    sources = ctx.graph_layout.predecessors[name]
    incoming = ctx.merged_input(name, sources)
    if ctx.fixed_point:
        raise LavaMappingError(
            f"neuron '{name}' receives {list(sources)} without a synaptic node in between; lava-fixed needs "
            f"an Affine, Linear or Conv2d node in front of each neuron to scale its input, so insert one "
            f"(identity weights) or use lava-float"
        )
    if np.any(gain <= 0):
        raise LavaMappingError(
            f"neuron '{name}' receives {list(sources)} directly, which Lava can only scale through the "
            f"voltage; that needs an input gain (dt/tau * r) > 0, got minimum {gain.min():g}"
        )
    return _NeuronInput(sources, incoming, None, None, 1.0 / gain, np.zeros(shape), incoming.lag)


def _plan_neuron(ctx: _Context, name: str, node: nir.NIRNode) -> None:
    shape = ctx.shapes[name]
    params = map_neuron(name, node, shape, ctx.dt)
    feed = _neuron_input(ctx, name, params.gain)
    spec, weight, voltage_factor = feed.spec, feed.weight, feed.voltage_factor

    # Lava's float voltage is the NIR voltage times voltage_factor (see neurons.py for the mapping).
    bias_in_voltage = np.zeros(shape) if params.bias_into_current else params.gain * feed.synaptic_bias
    voltage_bias = voltage_factor * (params.leak_bias + bias_in_voltage)
    current_bias = voltage_factor * params.gain * feed.synaptic_bias if params.bias_into_current else np.zeros(shape)
    v_threshold = voltage_factor * params.v_threshold
    synapse_bound = output_bound(spec, weight, feed.incoming.bound) if spec is not None else feed.incoming.bound

    weight_exp, synapse_scale = 0, 1.0
    if ctx.fixed_point:
        # u adds its input every step and keeps (1 - du) of itself, so |u| stays below input / du.
        calibration, sized_bound, voltage_bound, options = ctx.calibration, synapse_bound, None, {}
        if calibration is not None:
            sized_bound = calibration.input_bound(spec, feed.incoming.bound, synapse_bound)
            voltage_bound = np.abs(voltage_factor) * calibration.voltage_bound(name, shape)
            options = calibration.quantisation_options()
        current_bound = (sized_bound + np.abs(current_bias)) / params.du
        report, weight, current_bias = fixed_point.quantise_layer(
            name, spec.node_name, weight, input_scale=feed.incoming.scale,
            input_bound=current_bound, v_threshold=v_threshold, du=params.du,
            dv=params.dv, voltage_bias=voltage_bias, current_bias=current_bias,
            allow_exponent=spec.kind == "dense", voltage_bound=voltage_bound, **options,
        )
        ctx.quantisation[name] = report
        ctx.notes.extend(report.notes)
        weight_exp, synapse_scale = report.weight_exp, report.scale
        du, dv = _uniform_or_array(report.du, True), _uniform_or_array(report.dv, True)
        vth, bias_mant = _uniform_or_array(report.vth, True), _uniform_or_array(report.bias_mant, True)
        bias_exp = _uniform_or_array(report.bias_exp, True)
        voltage_factor = np.ones(shape)
    else:
        du, dv = _uniform_or_array(params.du, False), _uniform_or_array(params.dv, False)
        vth, bias_mant = _uniform_or_array(v_threshold, False), _uniform_or_array(voltage_bias, False)
        bias_exp = 0
        voltage_factor = np.broadcast_to(voltage_factor, shape).copy()

    neuron_sources = feed.sources
    if spec is not None:
        ctx.steps.append(_synapse_plan(spec, feed.sources, weight, weight_exp, feed.incoming.graded))
        # Only this value's lag is read later; its scale includes the neuron's gain.
        ctx.values[spec.node_name] = ValueInfo(spec.output_shape, feed.lag, True, synapse_scale, synapse_bound)
        neuron_sources = (spec.node_name,)
    has_current = bool(np.any(current_bias != 0))
    ctx.steps.append(NeuronPlan(
        name=name, sources=neuron_sources, shape=lava_shape(shape), du=du, dv=dv, vth=vth,
        bias_mant=bias_mant, bias_exp=bias_exp,
        current_bias=to_lava_layout(np.asarray(current_bias)) if has_current else None,
        voltage_factor=voltage_factor, lag=feed.lag,
    ))
    ctx.values[name] = ValueInfo(shape, feed.lag, False, 1.0, np.ones(shape))


def _plan_synapse(ctx: _Context, name: str, node: nir.NIRNode) -> None:
    sources = ctx.graph_layout.predecessors[name]
    incoming = ctx.merged_input(name, sources)
    spec = synapse_spec(name, node, incoming.shape)
    if np.any(spec.bias != 0):
        raise LavaMappingError(
            f"synaptic node '{name}' has a bias but no neuron directly after it to add that bias to; "
            f"move the bias into the next neuron's v_leak or fold it into the next synaptic node"
        )
    bound = output_bound(spec, spec.weight, incoming.bound)
    weight, scale = spec.weight, 1.0
    if ctx.fixed_point:
        report, weight, scale = fixed_point.quantise_synapse(
            name, spec.weight, input_scale=incoming.scale, output_bound=bound
        )
        ctx.quantisation[name] = report
        ctx.notes.extend(report.notes)
    ctx.steps.append(_synapse_plan(spec, sources, weight, 0, incoming.graded))
    lag = incoming.lag + PROCESS_DELAY_STEPS[LAVA_PROCESS_OF[type(node)]]
    ctx.values[name] = ValueInfo(spec.output_shape, lag, True, scale, bound)
    successors = ", ".join(f"'{successor}'" for successor in ctx.graph_layout.successors[name])
    ctx.notes.append(
        f"Synaptic node '{name}' feeds {successors} without a neuron in between, so it sends graded "
        f"messages (num_message_bits={GRADED_MESSAGE_BITS}) instead of binary spikes."
    )


def _plan_flatten(ctx: _Context, name: str, node: nir.Flatten) -> None:
    sources = ctx.graph_layout.predecessors[name]
    if len(sources) != 1:
        raise LavaMappingError(f"Flatten '{name}' has {len(sources)} inputs; give it exactly one")
    incoming = ctx.merged_input(name, sources)
    output_shape = ctx.shapes[name]
    ctx.steps.append(FlattenPlan(name, sources[0], incoming.shape, output_shape))
    ctx.values[name] = ValueInfo(
        output_shape, incoming.lag, incoming.graded, incoming.scale, incoming.bound.reshape(output_shape)
    )


PLANNERS: dict[type, Callable[[_Context, str, nir.NIRNode], None]] = {
    nir.LIF: _plan_neuron, nir.IF: _plan_neuron, nir.CubaLIF: _plan_neuron,
    nir.Affine: _plan_synapse, nir.Linear: _plan_synapse, nir.Conv2d: _plan_synapse,
    nir.SumPool2d: _plan_synapse, nir.AvgPool2d: _plan_synapse, nir.Flatten: _plan_flatten,
}


def _paired_synapses(graph: nir.NIRGraph, graph_layout: GraphLayout) -> dict[str, str]:
    """Map each neuron to the synaptic node planned with it (its only input, feeding only it)."""
    paired = {}
    for name in graph_layout.computational_nodes():
        predecessors = graph_layout.predecessors[name]
        if not isinstance(graph.nodes[name], SPIKING_TYPES) or len(predecessors) != 1:
            continue
        source = predecessors[0]
        if isinstance(graph.nodes[source], SYNAPTIC_TYPES) and graph_layout.successors[source] == (name,):
            paired[name] = source
    return paired


def plan_network(graph: nir.NIRGraph, dt: float, num_steps: int, *, fixed_point: bool,
                 input_bound: np.ndarray, input_graded: bool,
                 calibration: Calibration | None = None) -> NetworkPlan:
    """Plan the processes for running ``graph`` for ``num_steps`` steps of ``dt`` seconds per sample.

    ``input_bound`` is the largest ``|input|`` per element (NIR input shape) and
    ``input_graded`` whether the input contains values other than 0 and 1.  In fixed
    point, ``calibration`` (from ``calibration.calibrate`` on this graph) sizes each
    neuron layer for its observed input instead of the worst case; it is ignored in
    float.  Raises ``LavaMappingError`` for parameters Lava cannot express, ValueError
    for a calibration of another graph and ``KeyError`` for a node type without a
    planner (``LavaBackend.check_supported`` reports those first).
    """
    graph_layout = layout(graph)
    shapes = infer_shapes(graph)
    calibration = calibration if fixed_point else None
    ctx = _Context(graph, graph_layout, shapes, dt, fixed_point, _paired_synapses(graph, graph_layout),
                   calibration)
    ctx.values[graph_layout.input_name] = ValueInfo(
        shapes[graph_layout.input_name], 0, input_graded, 1.0, np.asarray(input_bound, dtype=np.float64)
    )
    planned_with_neuron = set(ctx.paired.values())
    for name in graph_layout.computational_nodes():
        if name in planned_with_neuron:
            continue
        node = graph.nodes[name]
        PLANNERS[type(node)](ctx, name, node)

    output_sources = graph_layout.predecessors[graph_layout.output_name]
    if len(output_sources) != 1:
        raise LavaMappingError(
            f"the Output node '{graph_layout.output_name}' has inputs {list(output_sources)}; give it exactly one"
        )
    max_lag = max(info.lag for info in ctx.values.values())
    period = num_steps + max_lag
    for step in ctx.steps:
        if isinstance(step, NeuronPlan):
            # LIFReset zeroes u and v when time_step % period == offset, before that step's update;
            # time_step counts from 1, and a neuron's first aligned step is 1 + its lag.
            step.reset_offset = (1 + step.lag) % period
    spiking = [name for name in graph_layout.order if isinstance(graph.nodes[name], SPIKING_TYPES)]
    return NetworkPlan(
        fixed_point=fixed_point, input_name=graph_layout.input_name, output_name=graph_layout.output_name,
        output_source=output_sources[0], steps=ctx.steps, values=ctx.values, spiking=spiking,
        period=period, quantisation=ctx.quantisation, notes=ctx.notes,
        policy="calibrated" if calibration is not None else "worst_case",
    )
