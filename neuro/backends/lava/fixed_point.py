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

Bit widths used here, all from those lava-nc 0.10 files (Loihi 2 style core):

============================  =========================================================
weights                       8 bits incl. sign (even values for mixed signs), times
                              ``2**weight_exp`` (Dense only), ``dense/models.py``
                              and ``utils/weightutils.py``
du, dv (decay constants)      12-bit unsigned, ``lif/models.py``
vth (threshold)               17-bit unsigned, compared with ``v`` after ``<< 6``
bias                          13-bit signed mantissa, 3-bit exponent 0..7
u, v (current, voltage)       24-bit signed; ``u`` wraps, ``v`` saturates
synaptic input                shifted left by 6 bits (``act_shift``) into ``u``
Conv output                   24-bit signed, wraps (``conv/utils.py``, ``signed_clamp``)
============================  =========================================================

A layer's integer voltage is ``v_int = 64 * scale * v_lava``.  The scale is the largest
that keeps every threshold within 17 bits and the bound on one step's input within
``u``'s 24 bits.  ``plan.py`` passes the worst-case bound (every input at its maximum,
so ``u`` can never wrap) or a calibrated one (``calibration.py``), with which input
stronger than the calibration input can wrap ``u``; ``integer_model.py`` reports that.
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
    ``row_scales`` holds one scale per output row or channel when the layer has them,
    and ``scale`` is then their minimum.
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
    row_scales: np.ndarray | None = None

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


def balance_rows(values: np.ndarray, integers: np.ndarray, grid: WeightGrid) -> np.ndarray:
    """Move single weights of each row by one grid step until the row's summed rounding error is below half a step.

    ``values`` are the exact weights in grid units and ``integers`` their rounded values,
    rows first.  Rounding each weight to the nearest level leaves a summed error per
    row that grows with the row length, and a rate-coded input adds that sum to the
    neuron's input every step.  The weights moved are those whose error after the
    move is smallest, so no weight ends up more than one step from its exact value.
    """
    rows = integers.reshape(integers.shape[0], -1).copy()
    targets = values.reshape(rows.shape)
    for row, target in zip(rows, targets):
        total = float(np.sum(row - target))
        moves = int(np.round(abs(total) / grid.step))
        if moves == 0:
            continue
        moved = row - int(np.sign(total)) * grid.step
        cost = np.where((moved >= grid.low) & (moved <= grid.high), np.abs(moved - target), np.inf)
        chosen = np.argsort(cost, kind="stable")[:moves]
        chosen = chosen[np.isfinite(cost[chosen])]
        row[chosen] = moved[chosen]
    return rows.reshape(integers.shape)


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


def _row_max(values: np.ndarray | None, rows: int) -> np.ndarray:
    """Return the largest value per output row of a NIR-shaped neuron array (zeros for None)."""
    if values is None:
        return np.zeros(rows)
    return np.asarray(values, dtype=np.float64).reshape(rows, -1).max(axis=1)


def _row_limits(rows: int, v_threshold: np.ndarray, input_bound: np.ndarray,
                voltage_bound: np.ndarray | None) -> np.ndarray:
    """Return the largest scale per row that keeps vth in 17 bits and the bounded u and -v in 24 bits."""
    limit = VTH_MAX / _row_max(v_threshold, rows)
    for bound in (_row_max(input_bound, rows), _row_max(voltage_bound, rows)):
        limit = np.where(bound > 0, np.minimum(limit, INPUT_MAX / np.where(bound > 0, bound, 1.0)), limit)
    return limit


def _row_scales(magnitudes: np.ndarray, limit: np.ndarray, grid: WeightGrid,
                allow_exponent: bool) -> tuple[int, np.ndarray]:
    """Pick one weight exponent and a scale per row so that each row's largest weight fills the grid.

    The exponent is the largest at which every row's filling scale stays within its
    limit.  A row whose limit is lower keeps that limit and leaves part of the grid unused.
    """
    weight_exp = 0
    used = magnitudes > 0
    if allow_exponent and np.any(used):
        weight_exp = math.floor(float(np.min(np.log2(limit[used] * magnitudes[used] / grid.magnitude))))
        weight_exp = int(np.clip(weight_exp, *WEIGHT_EXPONENT_RANGE))
    filling = grid.magnitude * 2.0**weight_exp / np.where(used, magnitudes, 1.0)
    return weight_exp, np.where(used, np.minimum(limit, filling), limit)


def _fill_grid(magnitude: float, scale: float, weight_exp: int, grid: WeightGrid) -> tuple[int, float]:
    """Lower ``scale`` and ``weight_exp`` so that the largest weight maps onto the end of the grid."""
    if magnitude == 0:
        return weight_exp, scale
    exponent = weight_exp
    while grid.magnitude * 2.0**exponent / magnitude > scale and exponent > WEIGHT_EXPONENT_RANGE[0]:
        exponent -= 1
    filled = grid.magnitude * 2.0**exponent / magnitude
    return (exponent, filled) if filled <= scale else (weight_exp, scale)


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
    voltage_bound: np.ndarray | None = None,
    fill_weight_grid: bool = False,
    per_row: bool = False,
    balanced_rounding: bool = False,
) -> tuple[LayerQuantisation, np.ndarray, np.ndarray]:
    """Quantise a synapse and the LIF neurons it feeds.

    ``weight`` is the float weight tensor with the neurons' gains folded in, acting on
    inputs that arrive as integers ``input_scale`` times their NIR value.
    ``input_bound`` is the largest ``|u|`` each neuron can reach (Lava's float units,
    including ``current_bias``).  ``v_threshold``, ``voltage_bias`` (added to v
    per step) and ``current_bias`` (added to u per step) are in Lava's float voltage
    units, in NIR shape.  ``voltage_bound`` (same units, optional) is the largest
    ``-v`` to keep above the 24-bit floor, where ``v`` would saturate.
    ``fill_weight_grid`` lowers the scale (by less than 2) so that the largest weight
    of a Dense layer lands on the end of the 8-bit grid.  ``per_row`` gives each
    output row (Dense) or channel (Conv) its own scale, so that each row's largest
    weight fills the grid, and stores its thresholds and biases per neuron.
    ``balanced_rounding`` rounds each row so that its rounding errors sum to less
    than half a grid step (see ``balance_rows``).  Returns
    the report, the integer weights and the integer current bias (in input units,
    before the 6-bit shift).
    """
    if np.any(v_threshold <= 0):
        raise LavaMappingError(
            f"neuron '{node_name}': lava-fixed needs thresholds > 0 (Loihi stores an unsigned vth), "
            f"got minimum {v_threshold.min():g}; use positive thresholds or lava-float"
        )
    grid = WeightGrid.for_weights(weight)
    rows = weight.shape[0]
    limit = _row_limits(rows, v_threshold, input_bound, voltage_bound)
    if per_row:
        magnitudes = np.abs(weight.reshape(rows, -1)).max(axis=1) / input_scale
        weight_exp, row_scale = _row_scales(magnitudes, limit, grid, allow_exponent)
    else:
        scale = float(limit.min())
        magnitude = float(np.max(np.abs(weight))) / input_scale
        weight_exp, scale = _weight_exponent(magnitude, scale, grid, allow_exponent)
        if fill_weight_grid and allow_exponent:
            weight_exp, scale = _fill_grid(magnitude, scale, weight_exp, grid)
        row_scale = np.full(rows, scale)
    # Shrink each scale slightly so that the largest threshold it applies to is an exact integer.
    row_threshold = _row_max(v_threshold, rows) if per_row else np.full(rows, float(np.max(v_threshold)))
    row_scale = np.where(row_scale * row_threshold >= 1, np.floor(row_scale * row_threshold) / row_threshold,
                         row_scale)
    scale = row_scale.reshape((rows,) + (1,) * (np.ndim(v_threshold) - 1))

    unit = input_scale * 2.0**weight_exp / row_scale.reshape((rows,) + (1,) * (weight.ndim - 1))
    weights, clipped_weights = quantise_to_grid(weight / unit, grid)
    if balanced_rounding:
        weights = balance_rows(weight / unit, weights, grid)
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
        node_name=node_name, synapse_name=synapse_name, scale=float(row_scale.min()), weight_exp=weight_exp,
        weight_range=(int(weights.min()), int(weights.max())), vth=vth, du=du_register, dv=dv_register,
        bias_mant=bias_mant, bias_exp=bias_exp, clipped_weights=clipped_weights,
        clipped_thresholds=clipped_thresholds, clipped_decays=clipped_du + clipped_dv,
        clipped_biases=clipped_biases, weight_error=weight_error,
        row_scales=row_scale if per_row else None,
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
