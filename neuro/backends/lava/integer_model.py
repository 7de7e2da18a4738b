"""Exact integer emulator of a fixed-point ``NetworkPlan`` that flags wrap-around and saturation.

It repeats the integer arithmetic of lava-nc 0.10's ``fixed_pt`` process models
(rules listed in ``fixed_point.py``) step by step on a whole batch at once.  Records
are on Lava's own time base: row ``i`` is Lava's time step ``i + 1`` of the sample.
The tests check that it produces the same spikes as ``LavaBackend(fixed_point=True)``
bit for bit.  Lava itself keeps no trace of these events:

* ``u`` wrap: the LIF adds ``a_in << 6`` to its 24-bit current ``u`` and maps a sum
  above ``2**23`` or at or below ``-2**23`` back by ``2**24`` (``lif/models.py``,
  ``subthr_dynamics``).
* ``v`` saturation: the LIF clips its 24-bit voltage to ``+-(2**23 - 1)``.  Only the
  lower limit counts as an event, because a voltage clipped at the upper limit is
  above every 17-bit threshold (``vth << 6 < 2**23``), spikes and is reset to 0, so
  the clipping changes nothing.
* synapse wrap: Conv reduces its summed input modulo ``2**24`` into the signed 24-bit
  range (``conv/utils.py``, ``signed_clamp``).

Events are counted on each layer's aligned window (its ``T`` recorded steps), where
they change what the run records.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from neuro.backends.lava.fixed_point import ACTIVATION_SHIFT, DECAY_UNITY, U_MAX
from neuro.backends.lava.plan import FlattenPlan, NetworkPlan, NeuronPlan, SynapsePlan, to_lava_layout

logger = logging.getLogger(__name__)

STATE_LIMIT = 2**23
DECAY_SHIFT = 12
CURRENT_DECAY_OFFSET = 1
SYNAPSE_BITS = 24
NEURON_EVENT_KINDS = ("u wrap", "v saturation")
EVENT_KINDS = (*NEURON_EVENT_KINDS, "synapse wrap")


@dataclass
class OverflowEvents:
    """Wrap-around or saturation events of one kind in one layer.

    ``count`` is the number of (step, sample, neuron) entries affected out of
    ``entries``; ``first`` the earliest as (aligned step, sample, flat neuron index);
    ``peak`` the largest magnitude before wrapping or clipping (for ``v``: of negative
    values), as a fraction of the 24-bit limit ``2**23`` (above 1 means out of range).
    """

    layer: str
    kind: str
    count: int
    entries: int
    first: tuple[int, int, int] | None
    peak: float

    def summary(self) -> str:
        """Return one line for logs and reports."""
        where = f", first at (step, sample, neuron) {self.first}" if self.first is not None else ""
        return (f"{self.layer}: {self.count} {self.kind} events in {self.entries} entries "
                f"(peak {self.peak:.3g} of the 24-bit range{where})")


@dataclass
class OverflowReport:
    """Overflow events of every layer of one run, one entry per layer and kind that can overflow."""

    events: list[OverflowEvents] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(event.count for event in self.events)

    def count(self, layer: str, kind: str) -> int:
        """Return the number of ``kind`` events in ``layer`` (0 when the layer has none)."""
        return sum(event.count for event in self.events if event.layer == layer and event.kind == kind)

    def occurred(self) -> list[OverflowEvents]:
        """Return the entries with at least one event."""
        return [event for event in self.events if event.count]


@dataclass
class IntegerRun:
    """Records of one emulated run, ``(period, B, *NIR shape)`` each, and its overflow report."""

    raw_spikes: dict[str, np.ndarray]
    raw_voltages: dict[str, np.ndarray]
    overflow: OverflowReport


def _decay(state: np.ndarray, decay_constant: np.ndarray) -> np.ndarray:
    """Multiply by ``(4096 - decay_constant) / 4096``, truncating towards zero as Lava does."""
    product = state * (DECAY_UNITY - decay_constant)
    return np.sign(product) * (np.abs(product) >> DECAY_SHIFT)


def _nir_array(value, shape: tuple[int, ...]) -> np.ndarray:
    """Return a NeuronPlan parameter (scalar or Lava layout) as int64 in NIR ``shape``."""
    array = np.asarray(value)
    if array.ndim == 0:
        return np.full(shape, int(array), dtype=np.int64)
    return np.asarray(to_lava_layout(array), dtype=np.int64).reshape(shape)


class _Tracker:
    """Counts events of one layer and kind over its aligned window."""

    def __init__(self, layer: str, kind: str, lag: int, steps: int, batch: int, size: int):
        self.layer, self.kind, self.lag, self.steps = layer, kind, lag, steps
        self.entries = steps * batch * size
        self.count = 0
        self.first: tuple[int, int, int] | None = None
        self.peak = 0.0

    def add(self, row: int, flags: np.ndarray, magnitude: np.ndarray) -> None:
        step = row - self.lag
        if not 0 <= step < self.steps:
            return
        self.peak = max(self.peak, float(magnitude.max()) / STATE_LIMIT) if magnitude.size else self.peak
        flat = flags.reshape(flags.shape[0], -1)
        hits = int(flat.sum())
        if hits and self.first is None:
            sample, neuron = np.argwhere(flat)[0]
            self.first = (step, int(sample), int(neuron))
        self.count += hits

    def events(self) -> OverflowEvents:
        return OverflowEvents(self.layer, self.kind, self.count, self.entries, self.first, self.peak)


class _Neuron:
    """Integer state and parameters of one LIFReset layer, batched, in NIR layout."""

    def __init__(self, step: NeuronPlan, shape: tuple[int, ...], batch: int):
        self.step = step
        self.du = _nir_array(step.du, shape) + CURRENT_DECAY_OFFSET
        self.dv = _nir_array(step.dv, shape)
        self.vth = _nir_array(step.vth, shape) << ACTIVATION_SHIFT
        self.bias = _nir_array(step.bias_mant, shape) << _nir_array(step.bias_exp, shape)
        self.current_bias = None if step.current_bias is None else _nir_array(step.current_bias, shape)
        self.u = np.zeros((batch, *shape), dtype=np.int64)
        self.v = np.zeros((batch, *shape), dtype=np.int64)

    def update(self, activation: np.ndarray, reset: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Advance one step; return spikes, the u sum before wrapping, wrap flags and v before clipping."""
        if reset:
            self.u[:] = 0
            self.v[:] = 0
        if self.current_bias is not None:
            activation = activation + self.current_bias
        current = _decay(self.u, self.du) + (activation << ACTIVATION_SHIFT)
        wrapped = np.where(current > STATE_LIMIT, current - 2 * STATE_LIMIT, current)
        wrapped = np.where(wrapped <= -STATE_LIMIT, current + 2 * STATE_LIMIT, wrapped)
        self.u = wrapped
        voltage = _decay(self.v, self.dv) + self.u + self.bias
        self.v = np.clip(voltage, -U_MAX, U_MAX)
        spikes = self.v > self.vth
        self.v[spikes] = 0
        return spikes, current, wrapped != current, voltage


def _synapse_output(step: SynapsePlan, values: np.ndarray, batch: int) -> np.ndarray:
    """Return the integer sums of one Dense or Conv process for a batch of NIR-shaped inputs."""
    spec = step.spec
    if step.num_message_bits == 0:
        values = (values != 0).astype(np.int64)
    else:
        values = np.rint(values).astype(np.int64)
    if spec.kind == "dense":
        sums = values.reshape(batch, -1) @ step.nir_weight.T
        exponent = step.weight_exp
        return sums << exponent if exponent > 0 else sums >> -exponent
    # Float64 represents these integer sums exactly (|sum| < 2**53).
    output = F.conv2d(
        torch.as_tensor(values, dtype=torch.float64), torch.as_tensor(step.nir_weight, dtype=torch.float64),
        stride=spec.stride, padding=spec.padding, dilation=spec.dilation, groups=spec.groups,
    )
    return np.rint(output.numpy()).astype(np.int64)


def emulate(plan: NetworkPlan, data: np.ndarray, *, record_voltage: bool = False) -> IntegerRun:
    """Run a fixed-point ``plan`` on integer input ``data`` shaped ``(T, B, *input NIR shape)``.

    Every sample runs ``plan.period`` steps from a zero state, as in ``LavaBackend``.
    Raises ValueError for a float plan or a plan without NIR-layout weights.
    """
    if not plan.fixed_point:
        raise ValueError("emulate needs a fixed-point plan; plan the network with fixed_point=True")
    num_steps, batch = data.shape[:2]
    values_info = plan.values
    neurons: dict[str, _Neuron] = {}
    buffers: dict[str, np.ndarray] = {}
    trackers: dict[tuple[str, str], _Tracker] = {}
    for step in plan.steps:
        if isinstance(step, SynapsePlan):
            if step.spec is None or step.nir_weight is None:
                raise ValueError(f"synapse '{step.name}' has no NIR-layout weights; plan it with plan_network")
            shape = step.spec.output_shape
            buffers[step.name] = np.zeros((batch, *shape), dtype=np.int64)
            if step.spec.kind == "conv":
                trackers[step.name, "synapse wrap"] = _Tracker(
                    step.name, "synapse wrap", values_info[step.name].lag, num_steps, batch, int(np.prod(shape)))
        elif isinstance(step, NeuronPlan):
            shape = values_info[step.name].shape
            neurons[step.name] = _Neuron(step, shape, batch)
            for kind in NEURON_EVENT_KINDS:
                trackers[step.name, kind] = _Tracker(step.name, kind, step.lag, num_steps, batch,
                                                     int(np.prod(shape)))

    spike_rows: dict[str, list[np.ndarray]] = {name: [] for name in plan.spiking}
    voltage_rows: dict[str, list[np.ndarray]] = {name: [] for name in neurons} if record_voltage else {}
    zeros = np.zeros((batch, *data.shape[2:]))
    for row in range(plan.period):
        time_step = row + 1
        values = {plan.input_name: data[row] if row < num_steps else zeros}
        for step in plan.steps:
            if isinstance(step, FlattenPlan):
                values[step.name] = values[step.source].reshape(batch, *step.output_shape)
                continue
            incoming = sum(values[source] for source in step.sources)
            if isinstance(step, SynapsePlan):
                values[step.name] = buffers[step.name]
                sums = _synapse_output(step, incoming, batch)
                if step.spec.kind == "conv":
                    limit = 2 ** (SYNAPSE_BITS - 1)
                    wrapped = (sums + limit) % (2 * limit) - limit
                    trackers[step.name, "synapse wrap"].add(row, wrapped != sums, np.abs(sums))
                    sums = wrapped
                buffers[step.name] = sums
                continue
            neuron = neurons[step.name]
            reset = time_step % plan.period == step.reset_offset % plan.period
            spikes, current, wrap_flags, voltage = neuron.update(np.asarray(incoming, dtype=np.int64), reset)
            trackers[step.name, "u wrap"].add(row, wrap_flags, np.abs(current))
            trackers[step.name, "v saturation"].add(row, voltage < -U_MAX, np.maximum(-voltage, 0))
            values[step.name] = spikes.astype(np.int64)
            if step.name in spike_rows:
                spike_rows[step.name].append(spikes)
            if record_voltage:
                voltage_rows[step.name].append(neuron.v.copy())

    report = OverflowReport([tracker.events() for tracker in trackers.values()])
    for event in report.occurred():
        logger.debug("overflow: %s", event.summary())
    return IntegerRun(
        raw_spikes={name: np.stack(rows).astype(np.float64) for name, rows in spike_rows.items()},
        raw_voltages={name: np.stack(rows) for name, rows in voltage_rows.items()},
        overflow=report,
    )
