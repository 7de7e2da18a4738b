"""Quantisation of one neuron layer for Lava's bit-accurate (``fixed_pt``) process models.

Integer rules of lava-nc 0.10 (``lava/proc/lif/models.py``, ``lava/proc/dense/models.py``,
``lava/proc/conv/models.py``, ``lava/utils/weightutils.py``):

* Dense weights are clipped to 8 bits plus sign and, for mixed signs, truncated to even
  values, so a weight is ``2 * m`` with ``m`` in [-128, 127] (mixed signs), [0, 255]
  (all >= 0) or [-255, 0] (all <= 0).  The summed input is shifted by ``weight_exp``.
* Lava's Conv model ignores ``weight_exp`` and does not clip its weights.  This module
  therefore uses exponent 0 and the same 8-bit grid for Conv, within Loihi's range.
* The LIF adds its input, shifted left by 6 bits, to the 24-bit current ``u``, which
  wraps around on overflow.  It decays ``u`` and ``v`` by ``(4096 - d) / 4096`` with
  12-bit ``du`` and ``dv``, where ``du`` gets one extra unit so that ``du = 4095``
  empties ``u`` each step.  It adds ``bias_mant << bias_exp`` (13-bit signed mantissa,
  exponent 0..7) to the 24-bit voltage, which saturates, and spikes where
  ``v > vth << 6`` with a 17-bit ``vth``.

A layer's integer voltage is ``v_int = 64 * scale * v_lava``.  The scale is the largest
that keeps every threshold within 17 bits and the worst-case input of one step within
``u``'s 24 bits, so ``u`` can never wrap.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from neuro.backends.lava.neurons import LavaMappingError

logger = logging.getLogger(__name__)

ACTIVATION_SHIFT = 6
DECAY_UNITY = 4096
DECAY_MAX = 4095
VTH_MAX = 2**17 - 1
U_MAX = 2**23 - 1
INPUT_MAX = U_MAX >> ACTIVATION_SHIFT
BIAS_MANTISSA_MAX = 4095
BIAS_EXPONENT_MAX = 7
# NOTE: the range of Loihi's signed 4-bit weight exponent as far as known here; Lava
# 0.10's CPU model accepts any integer.
WEIGHT_EXPONENT_RANGE = (-8, 7)
GRADED_MAX = U_MAX


@dataclass
class LayerQuantisation:
    """Quantisation report of one neuron layer (or of a synaptic node without a neuron).

    ``scale`` is the integer units of the layer's weighted input per unit in Lava's float
    model (``v_int = 64 * scale * v``); ``weight_exp`` the shared base-2 weight exponent;
    ``vth``, ``du``, ``dv``, ``bias_mant`` and ``bias_exp`` the integer LIF parameters
    (arrays in NIR shape, or None for a synaptic node without a neuron).  The ``clipped_*``
    counts are values that fell outside their integer range and were clipped.
    ``weight_error`` is the largest weight rounding error relative to the largest weight.
    """

    node_name: str
    synapse_name: str | None
    scale: float
    weight_exp: int
    weight_range: tuple[int, int]
    vth: np.ndarray | None = None
    du: np.ndarray | None = None
    dv: np.ndarray | None = None
    bias_mant: np.ndarray | None = None
    bias_exp: np.ndarray | None = None
    clipped_weights: int = 0
    clipped_thresholds: int = 0
    clipped_decays: int = 0
    clipped_biases: int = 0
    weight_error: float = 0.0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """Return a one-line description for logs and reports."""
        parts = [f"{self.node_name}: scale {self.scale:.6g}, weight_exp {self.weight_exp}",
                 f"weights {self.weight_range}, weight error {self.weight_error:.2%}"]
        if self.vth is not None:
            parts.append(f"vth {_span(self.vth)}, du {_span(self.du)}, dv {_span(self.dv)}")
        clipped = {
            "weights": self.clipped_weights, "thresholds": self.clipped_thresholds,
            "decays": self.clipped_decays, "biases": self.clipped_biases,
        }
        if any(clipped.values()):
            parts.append("clipped " + ", ".join(f"{count} {what}" for what, count in clipped.items() if count))
        return "; ".join(parts)


def _span(values: np.ndarray) -> str:
    low, high = int(np.min(values)), int(np.max(values))
    return str(low) if low == high else f"{low}..{high}"


@dataclass(frozen=True)
class WeightGrid:
    """Integer weight range that Lava's Dense keeps unchanged for one sign pattern."""

    low: int
    high: int
    step: int

    @classmethod
    def for_weights(cls, weight: np.ndarray) -> "WeightGrid":
        if np.all(weight >= 0):
            return cls(0, 255, 1)
        if np.all(weight <= 0):
            return cls(-255, 0, 1)
        return cls(-256, 254, 2)

    @property
    def magnitude(self) -> int:
        return min(abs(self.low), abs(self.high)) if self.low < 0 < self.high else max(abs(self.low), self.high)


def quantise_to_grid(values: np.ndarray, grid: WeightGrid) -> tuple[np.ndarray, int]:
    """Round ``values`` onto ``grid``; return the integers and how many had to be clipped."""
    rounded = np.round(values / grid.step) * grid.step
    clipped = int(np.count_nonzero((rounded < grid.low) | (rounded > grid.high)))
    return np.clip(rounded, grid.low, grid.high).astype(np.int64), clipped


def quantise_decay(decay: np.ndarray, offset: int) -> tuple[np.ndarray, int]:
    """Return the 12-bit register value for a decay fraction per step and the clipped count.

    Lava decays by ``(register + offset) / 4096``: ``offset`` is 1 for ``du``, 0 for ``dv``.
    """
    register = np.round(decay * DECAY_UNITY) - offset
    clipped = int(np.count_nonzero((register < 0) | (register > DECAY_MAX)))
    return np.clip(register, 0, DECAY_MAX).astype(np.int64), clipped


def quantise_bias(bias: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Split integer-unit biases into 13-bit mantissas and 3-bit exponents; return the clipped count."""
    needed = np.ceil(np.log2(np.maximum(np.abs(bias), 1.0) / (BIAS_MANTISSA_MAX + 0.5)))
    exponent = np.clip(needed, 0, BIAS_EXPONENT_MAX).astype(np.int64)
    mantissa = np.round(bias / 2.0**exponent)
    clipped = int(np.count_nonzero(np.abs(mantissa) > BIAS_MANTISSA_MAX))
    mantissa = np.clip(mantissa, -BIAS_MANTISSA_MAX, BIAS_MANTISSA_MAX).astype(np.int64)
    return mantissa, exponent, clipped


def _weight_exponent(magnitude: float, scale: float, grid: WeightGrid, allow_exponent: bool) -> tuple[int, float]:
    """Pick the weight exponent for weights of largest ``magnitude``; lower ``scale`` if it cannot fit."""
    if magnitude == 0:
        return 0, scale
    exponent = math.ceil(math.log2(magnitude * scale / grid.magnitude))
    low, high = WEIGHT_EXPONENT_RANGE if allow_exponent else (0, 0)
    if exponent > high:
        exponent = high
        scale = grid.magnitude * 2.0**high / magnitude
    return max(exponent, low), scale


def quantise_layer(
    node_name: str,
    synapse_name: str,
    weight: np.ndarray,
    *,
    input_scale: float,
    input_bound: np.ndarray,
    v_threshold: np.ndarray,
    du: np.ndarray,
    dv: np.ndarray,
    voltage_bias: np.ndarray,
    current_bias: np.ndarray,
    allow_exponent: bool,
) -> tuple[LayerQuantisation, np.ndarray, np.ndarray]:
    """Quantise a synapse and the LIF neurons it feeds.

    ``weight`` is the float weight tensor with the neurons' gains folded in, acting on
    inputs that arrive as integers ``input_scale`` times their NIR value.
    ``input_bound`` is the largest ``|u|`` each neuron can reach (Lava's float units,
    including ``current_bias``).  ``v_threshold``, ``voltage_bias`` (added to v
    per step) and ``current_bias`` (added to u per step) are in Lava's float voltage
    units, in NIR shape.  Returns the report, the integer weights and the integer
    current bias (in input units, before the 6-bit shift).
    """
    if np.any(v_threshold <= 0):
        raise LavaMappingError(
            f"neuron '{node_name}': lava-fixed needs thresholds > 0 (Loihi stores an unsigned vth), "
            f"got minimum {v_threshold.min():g}; use positive thresholds or lava-float"
        )
    grid = WeightGrid.for_weights(weight)
    scale = VTH_MAX / float(np.max(v_threshold))
    largest_input = float(np.max(input_bound))
    if largest_input > 0:
        scale = min(scale, INPUT_MAX / largest_input)
    weight_exp, scale = _weight_exponent(float(np.max(np.abs(weight))) / input_scale, scale, grid, allow_exponent)
    # Shrink the scale slightly so that the largest threshold is an exact integer.
    largest_threshold = float(np.max(v_threshold))
    if scale * largest_threshold >= 1:
        scale = math.floor(scale * largest_threshold) / largest_threshold

    unit = input_scale * 2.0**weight_exp / scale
    weights, clipped_weights = quantise_to_grid(weight / unit, grid)
    largest_weight = float(np.max(np.abs(weight)))
    weight_error = float(np.max(np.abs(weights * unit - weight))) / largest_weight if largest_weight else 0.0

    vth = np.round(v_threshold * scale)
    clipped_thresholds = int(np.count_nonzero((vth < 1) | (vth > VTH_MAX)))
    vth = np.clip(vth, 1, VTH_MAX).astype(np.int64)
    du_register, clipped_du = quantise_decay(du, offset=1)
    dv_register, clipped_dv = quantise_decay(dv, offset=0)
    bias_mant, bias_exp, clipped_biases = quantise_bias(voltage_bias * scale * 2**ACTIVATION_SHIFT)
    current = np.round(current_bias * scale).astype(np.int64)

    report = LayerQuantisation(
        node_name=node_name, synapse_name=synapse_name, scale=scale, weight_exp=weight_exp,
        weight_range=(int(weights.min()), int(weights.max())), vth=vth, du=du_register, dv=dv_register,
        bias_mant=bias_mant, bias_exp=bias_exp, clipped_weights=clipped_weights,
        clipped_thresholds=clipped_thresholds, clipped_decays=clipped_du + clipped_dv,
        clipped_biases=clipped_biases, weight_error=weight_error,
    )
    if clipped_dv and np.any(dv * DECAY_UNITY > DECAY_MAX):
        report.notes.append(
            f"neuron '{node_name}': voltage decay dt/tau = {float(np.max(dv)):g} needs dv = "
            f"{float(np.max(dv)) * DECAY_UNITY:.0f}, above Lava's 12-bit maximum 4095, so v decays by "
            f"4095/4096 per step instead of {float(np.max(dv)):g}"
        )
    if clipped_du:
        report.notes.append(f"neuron '{node_name}': {clipped_du} current decays (du) fell outside 12 bits and were clipped")
    if clipped_weights or clipped_thresholds or clipped_biases:
        report.notes.append(
            f"neuron '{node_name}': clipped {clipped_weights} weights, {clipped_thresholds} thresholds and "
            f"{clipped_biases} biases to their integer ranges"
        )
    logger.debug("quantised %s", report.summary())
    return report, weights, current


def quantise_synapse(
    synapse_name: str, weight: np.ndarray, *, input_scale: float, output_bound: np.ndarray
) -> tuple[LayerQuantisation, np.ndarray, float]:
    """Quantise a synaptic node whose graded output goes on without a neuron in between.

    ``output_bound`` is the largest ``|W x|`` per output in NIR units.  Integer weights
    that fit the grid stay exact (scale 1).  Returns the report, the integer weights and
    the scale of the output values (integer units per NIR unit).
    """
    grid = WeightGrid.for_weights(weight)
    largest = float(np.max(np.abs(weight)))
    exact = bool(np.all(np.round(weight / grid.step) * grid.step == weight)) and \
        grid.low <= weight.min() and weight.max() <= grid.high
    scale = 1.0 if exact or largest == 0 else grid.magnitude / largest
    largest_output = float(np.max(output_bound)) * input_scale * scale
    if largest_output > GRADED_MAX:
        scale *= GRADED_MAX / largest_output
    weights, clipped = quantise_to_grid(weight * scale, grid)
    weight_error = float(np.max(np.abs(weights / scale - weight))) / largest if largest else 0.0
    report = LayerQuantisation(
        node_name=synapse_name, synapse_name=synapse_name, scale=scale, weight_exp=0,
        weight_range=(int(weights.min()), int(weights.max())), clipped_weights=clipped, weight_error=weight_error,
    )
    if clipped:
        report.notes.append(f"synapse '{synapse_name}': clipped {clipped} weights to 8 bits")
    return report, weights, input_scale * scale
