"""Calibration of the fixed-point scales from the synaptic input that a few clips produce.

The ``worst_case`` policy (``plan_network(..., calibration=None)``) sizes each layer so
that its current ``u`` cannot wrap even if every input spikes at once, which leaves few
integer levels for the voltage and the weights.  The ``calibrated`` policy runs the
float64 reference simulator (``neuro/backends/reference.py``) on calibration input.
It records each synaptic node's output ``|W x|`` (NIR units, without its bias) and
each neuron's most negative voltage.  Each layer is then sized for ``headroom`` times
the chosen percentile of ``|W x|`` and ``headroom`` times that voltage.  Input
stronger than the calibration input can then wrap ``u`` or saturate ``v``;
``integer_model.emulate`` (run by ``LavaBackend`` in fixed point) detects and reports it.

Only synaptic nodes planned together with a neuron use the calibrated bound.  A
synaptic node that sends graded values on without a neuron keeps the worst-case
bound, because its integer output range is the Conv/Dense register and not ``u``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import nir
import numpy as np
import torch

from neuro.backends.lava.synapses import SynapseSpec, output_bound, synapse_spec
from neuro.backends.reference import ReferenceBackend, linear_step, neuron_step, neuron_voltage
from neuro.backends.stepper import NodeStep, run_graph
from neuro.graph import SPIKING_TYPES, SYNAPTIC_TYPES, infer_shapes, layout

logger = logging.getLogger(__name__)

POLICIES = ("worst_case", "calibrated")
NEURON_TYPES = (nir.LIF, nir.IF, nir.CubaLIF, nir.LI)


@dataclass(frozen=True)
class CalibrationConfig:
    """Settings that turn observed synaptic input into a layer's bound.

    ``percentile`` (in (0, 100]) of ``|W x|`` over every (step, sample, neuron) entry of
    a layer, times ``headroom`` (>= 1), is the largest input the layer is sized for.
    ``fill_weight_grid`` lowers the scale of Dense layers to the point where their
    largest weight uses the whole 8-bit grid, which halves the weight rounding error
    at most and costs at most one bit of voltage resolution.  ``per_row_scales`` gives
    each output row (Dense) or channel (Conv) its own scale, stored as per-neuron
    thresholds and biases, so that each row's largest weight fills the grid.  Where
    it is set, ``fill_weight_grid`` has no effect.  ``balanced_rounding`` rounds the
    weights of each row so that their errors sum to less than half a grid step.
    """

    percentile: float = 100.0
    headroom: float = 1.25
    fill_weight_grid: bool = True
    per_row_scales: bool = True
    balanced_rounding: bool = True

    def __post_init__(self) -> None:
        if not (isinstance(self.percentile, (int, float)) and 0 < self.percentile <= 100):
            raise ValueError(f"CalibrationConfig.percentile = {self.percentile!r} is invalid; it must be in (0, 100]")
        if not (isinstance(self.headroom, (int, float)) and math.isfinite(self.headroom) and self.headroom >= 1):
            raise ValueError(f"CalibrationConfig.headroom = {self.headroom!r} is invalid; it must be a finite "
                             f"number >= 1")


@dataclass
class Calibration:
    """Observed synaptic input of one graph on calibration input.

    ``peak[name]`` is the largest ``|W x|`` per output element of synaptic node
    ``name`` (NIR output shape); ``level[name]`` the configured percentile over all of
    that node's entries.  ``voltage_floor[name]`` is the largest ``-v`` (>= 0, NIR
    units, per neuron) that spiking node ``name`` reached.  ``samples`` and ``steps``
    describe the calibration input, ``dt`` its time step in seconds.
    """

    config: CalibrationConfig
    samples: int
    steps: int
    dt: float
    peak: dict[str, np.ndarray] = field(default_factory=dict)
    level: dict[str, float] = field(default_factory=dict)
    voltage_floor: dict[str, np.ndarray] = field(default_factory=dict)

    def synaptic_bound(self, name: str, output_shape: tuple[int, ...]) -> np.ndarray:
        """Return the bound on ``|W x|`` (NIR units) that node ``name`` is sized for.

        Raises ValueError when the calibration has no record of ``name`` or a record of
        another shape, that is, when it was made on another graph.
        """
        if name not in self.peak:
            raise ValueError(f"the calibration has no record of synaptic node '{name}'; calibrate on this graph")
        peak = self.peak[name]
        if peak.shape != tuple(output_shape):
            raise ValueError(f"the calibration recorded node '{name}' with shape {peak.shape}, but the graph "
                             f"gives {tuple(output_shape)}; calibrate on this graph")
        return self.config.headroom * np.minimum(peak, self.level[name])

    def input_bound(self, spec: SynapseSpec, incoming_bound: np.ndarray, worst_bound: np.ndarray) -> np.ndarray:
        """Return the bound on a neuron's weighted input (Lava units) that its layer is sized for.

        ``worst_bound`` is the worst case for inputs up to ``incoming_bound``.  Each
        element is multiplied by observed / worst case in NIR units, capped at 1, so the
        neuron's input gain folded into the Lava weights cancels out.
        """
        observed = self.synaptic_bound(spec.node_name, spec.output_shape)
        worst = output_bound(spec, spec.weight, incoming_bound)
        ratio = np.divide(observed, worst, out=np.zeros_like(worst), where=worst > 0)
        return worst_bound * np.minimum(ratio, 1.0)

    def quantisation_options(self) -> dict[str, bool]:
        """Return the keyword arguments of ``fixed_point.quantise_layer`` that this configuration sets."""
        return {"fill_weight_grid": self.config.fill_weight_grid, "per_row": self.config.per_row_scales,
                "balanced_rounding": self.config.balanced_rounding}

    def voltage_bound(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """Return the bound on ``-v`` (NIR units) that neuron ``name`` is sized for; ValueError as above."""
        if name not in self.voltage_floor or self.voltage_floor[name].shape != tuple(shape):
            raise ValueError(f"the calibration has no voltage record of neuron '{name}' with shape {tuple(shape)}; "
                             f"calibrate on this graph")
        return self.config.headroom * self.voltage_floor[name]

    def summary(self) -> str:
        """Return one line per synaptic node for reports."""
        lines = [f"calibrated on {self.samples} samples x {self.steps} steps, percentile "
                 f"{self.config.percentile:g}, headroom {self.config.headroom:g}"]
        lines += [f"{name}: max |W x| {float(self.peak[name].max()):.4g}, level {self.level[name]:.4g}"
                  for name in self.peak]
        return "\n".join(lines)


class _VoltageRecorder:
    """Wraps a neuron's step and accumulates its most negative voltage."""

    def __init__(self, step: NodeStep):
        self.step = step
        self.floor: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, state: object) -> tuple[torch.Tensor, object]:
        output, state = self.step(x, state)
        below = (-neuron_voltage(state)).clamp(min=0).amax(dim=0)
        self.floor = below if self.floor is None else torch.maximum(self.floor, below)
        return output, state


class _Recorder:
    """Wraps a synaptic node's step and accumulates ``|W x|`` statistics."""

    def __init__(self, step: NodeStep, bias: np.ndarray, keep_values: bool):
        self.step = step
        self.bias = torch.as_tensor(bias, dtype=torch.float64)
        self.peak: torch.Tensor | None = None
        self.values: list[np.ndarray] = [] if keep_values else None

    def __call__(self, x: torch.Tensor, state: object) -> tuple[torch.Tensor, object]:
        output, state = self.step(x, state)
        magnitude = (output - self.bias).abs()
        batch_peak = magnitude.amax(dim=0)
        self.peak = batch_peak if self.peak is None else torch.maximum(self.peak, batch_peak)
        if self.values is not None:
            self.values.append(magnitude.to(torch.float32).reshape(-1).numpy())
        return output, state


def calibrate(graph: nir.NIRGraph, spikes: np.ndarray, dt: float,
              config: CalibrationConfig | None = None) -> Calibration:
    """Run the float64 reference on ``spikes`` ``(T, B, *input_shape)`` and record every synaptic input.

    ``dt`` is the time step in seconds.  Raises ``UnsupportedNodeError`` for a node the
    reference cannot run and ValueError for empty or non-finite input.
    """
    config = config or CalibrationConfig()
    data = np.asarray(spikes, dtype=np.float64)
    if data.ndim < 3 or data.shape[0] < 1 or data.shape[1] < 1:
        raise ValueError(f"calibration input has shape {data.shape}; expected (T, B, *input_shape) with T, B >= 1")
    if not np.all(np.isfinite(data)):
        raise ValueError("calibration input contains non-finite values")
    ReferenceBackend().check_supported(graph)

    shapes = infer_shapes(graph)
    graph_layout = layout(graph)
    keep_values = config.percentile < 100
    recorders: dict[str, _Recorder] = {}
    voltage_recorders: dict[str, _VoltageRecorder] = {}
    steps: dict[str, NodeStep] = {}
    for name, node in graph.nodes.items():
        if isinstance(node, (nir.Input, nir.Output)):
            continue
        if isinstance(node, NEURON_TYPES):
            steps[name] = neuron_step(node, shapes[name], dt)
            if isinstance(node, SPIKING_TYPES):
                voltage_recorders[name] = _VoltageRecorder(steps[name])
                steps[name] = voltage_recorders[name]
            continue
        steps[name] = linear_step(node)
        if isinstance(node, SYNAPTIC_TYPES):
            incoming = shapes[graph_layout.predecessors[name][0]]
            bias = synapse_spec(name, node, incoming).bias
            recorders[name] = _Recorder(steps[name], bias, keep_values)
            steps[name] = recorders[name]

    run_graph("calibration", graph, steps, data)
    calibration = Calibration(config=config, samples=data.shape[1], steps=data.shape[0], dt=float(dt))
    for name, recorder in recorders.items():
        peak = recorder.peak.numpy().reshape(shapes[name])
        calibration.peak[name] = peak
        if keep_values:
            calibration.level[name] = float(np.percentile(np.concatenate(recorder.values), config.percentile))
        else:
            calibration.level[name] = float(peak.max())
    for name, recorder in voltage_recorders.items():
        calibration.voltage_floor[name] = recorder.floor.numpy().reshape(shapes[name])
    logger.info("calibration: %s", calibration.summary().replace("\n", "; "))
    return calibration
