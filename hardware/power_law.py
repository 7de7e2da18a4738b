"""Power-law fits of cost against work, and where an energy ratio crosses 1.

A cost is fitted as ``cost = a * work ** b`` by least squares on the logarithms, so the
exponent ``b`` gives the growth: 1 is linear in the work, 2 quadratic, 0 constant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# A crossover further than this factor beyond the largest measured value is not extrapolated.
EXTRAPOLATION_LIMIT = 100.0
# Minimum number of distinct input sizes a power law is fitted to.
MIN_FIT_POINTS = 3


@dataclass(frozen=True)
class PowerLawFit:
    """``cost = a * work ** exponent``, fitted by least squares on log(cost) against log(work).

    ``r_squared`` is the coefficient of determination in log space.  ``reason`` gives the
    cause when ``exponent`` is None.
    """

    exponent: float | None
    coefficient: float | None
    r_squared: float | None
    points: int
    reason: str = ""

    def to_dict(self) -> dict:
        return {"exponent": self.exponent, "coefficient": self.coefficient, "r_squared": self.r_squared,
                "points": self.points, "reason": self.reason}


def fit_power_law(work, cost) -> PowerLawFit:
    """Fit ``cost = a * work ** b`` with ``numpy.polyfit`` of degree 1 in log-log space.

    Needs at least ``MIN_FIT_POINTS`` distinct positive ``work`` values and positive
    costs, because a line through two points fits them exactly and shows no trend.
    Otherwise the fit is empty and ``reason`` gives the cause.
    """
    work = np.asarray(work, dtype=np.float64)
    cost = np.asarray(cost, dtype=np.float64)
    if work.shape != cost.shape or work.ndim != 1:
        raise ValueError(f"work and cost must be 1-D arrays of the same length, got {work.shape} and {cost.shape}")
    if np.any(work <= 0) or np.any(cost <= 0) or not np.all(np.isfinite(cost)):
        return PowerLawFit(None, None, None, len(work), "a work or cost value is zero, negative or not finite")
    distinct = len(np.unique(work))
    if distinct < 2:
        return PowerLawFit(None, None, None, len(work), "the input size does not change along this axis")
    if distinct < MIN_FIT_POINTS:
        return PowerLawFit(None, None, None, len(work),
                           f"only {distinct} input sizes were measured; a trend needs at least {MIN_FIT_POINTS}")
    log_work, log_cost = np.log(work), np.log(cost)
    slope, intercept = np.polyfit(log_work, log_cost, 1)
    residual = log_cost - (slope * log_work + intercept)
    total = np.sum((log_cost - log_cost.mean()) ** 2)
    r_squared = 1.0 - float(np.sum(residual ** 2)) / float(total) if total > 0 else 1.0
    return PowerLawFit(float(slope), float(math.exp(intercept)), r_squared, len(work))


@dataclass(frozen=True)
class Crossover:
    """Point along one axis (``axis_value``) where SNN energy reaches CNN energy, if any.

    ``kind`` is one of:

    - "within": between two measured points, interpolated in log-log space;
    - "extrapolated": from a power-law fit of the ratio, at most ``EXTRAPOLATION_LIMIT``
      times beyond the largest measured value;
    - "already": the SNN costs at least as much at the first point;
    - "none": the ratio does not grow, or reaches 1 only further out.  ``axis_value`` is
      then that far estimate, if there is one.
    """

    axis: str
    ratio: str
    kind: str
    axis_value: float | None
    ratio_exponent: float | None
    text: str

    def to_dict(self) -> dict:
        return {"axis": self.axis, "ratio": self.ratio, "kind": self.kind, "axis_value": self.axis_value,
                "ratio_exponent": self.ratio_exponent, "text": self.text}


def find_crossover(axis: str, axis_values, ratios, *, ratio_name: str = "loihi_to_cnn_fp32") -> Crossover:
    """Find where ``ratios`` (SNN energy / CNN energy) reaches 1 along ``axis_values`` (sorted ascending)."""
    x = np.asarray(axis_values, dtype=np.float64)
    r = np.asarray(ratios, dtype=np.float64)

    if r[0] >= 1.0:
        return Crossover(axis, ratio_name, "already", float(x[0]), None,
                         f"the SNN is not cheaper even at {axis} = {x[0]:g} (ratio {r[0]:.3g})")
    for index in range(1, len(x)):
        if r[index] >= 1.0:
            x0, x1 = np.log(x[index - 1]), np.log(x[index])
            y0, y1 = np.log(r[index - 1]), np.log(r[index])
            value = float(np.exp(x0 + (0.0 - y0) * (x1 - x0) / (y1 - y0)))
            return Crossover(axis, ratio_name, "within", value, None,
                             f"the SNN stops being cheaper at {axis} of about {value:.3g} (interpolated)")

    fit = fit_power_law(x, r)
    if fit.exponent is None:
        return Crossover(axis, ratio_name, "none", None, None,
                         f"the SNN is cheaper at every measured {axis}; no trend is fitted ({fit.reason}), so "
                         "nothing is said beyond the measured range")
    if fit.exponent <= 0:
        return Crossover(axis, ratio_name, "none", None, fit.exponent,
                         f"the ratio does not grow with {axis} (exponent {fit.exponent:.3f}), so the SNN stays "
                         "cheaper along this axis")
    value = float((1.0 / fit.coefficient) ** (1.0 / fit.exponent))
    factor = value / x[-1]
    trend = f"ratio ~ {axis}^{fit.exponent:.2f} (R^2 {fit.r_squared:.3f})"
    if factor > EXTRAPOLATION_LIMIT:
        return Crossover(axis, ratio_name, "none", value, fit.exponent,
                         f"the SNN stays cheaper over the measured range; the {trend} would reach 1 only at "
                         f"{axis} of about {value:.3g}, {factor:.3g} times the largest value measured, too far "
                         "to extrapolate")
    return Crossover(axis, ratio_name, "extrapolated", value, fit.exponent,
                     f"the SNN stays cheaper over the measured range; extrapolating the {trend}, it would reach "
                     f"the CNN at {axis} of about {value:.3g}, {factor:.3g} times the largest value measured")
