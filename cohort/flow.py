"""Volume-time and flow-time curves of one forced expiration.

Model
-----
The exhaled volume follows a two-compartment (two-exponential) volume-time curve,
which fits almost all healthy subjects where one exponential fits poorly (Steltner
et al., Med Biol Eng Comput). The drive of both compartments passes through a
first-order onset lag ``tau_rise``, so the flow starts at zero and peaks after about
0.05-0.15 s, in line with peak flow being reached within the first ~0.2 s::

    V(t) = FVC * (1 - a * B(t, tau_fast) - (1 - a) * B(t, tau_slow))      t >= 0
    Q(t) = dV/dt = FVC * (a * D(t, tau_fast) + (1 - a) * D(t, tau_slow))
    B(t, tau) = (tau * exp(-t / tau) - tau_rise * exp(-t / tau_rise)) / (tau - tau_rise)
    D(t, tau) = (exp(-t / tau) - exp(-t / tau_rise)) / (tau - tau_rise)

Symbols:

* ``t``: time since the start of the blow, s
* ``V``: exhaled volume, L; ``Q``: flow, L/s
* ``FVC``: forced vital capacity, the limit of ``V`` as t grows, L
* ``a``: fraction of FVC in the fast compartment
* ``tau_fast``, ``tau_slow``: compartment time constants, s

FEV1 = V(1 s) and PEF = max Q(t).

An obstructed subject has a larger, slower slow compartment, so less of the FVC
leaves in the first second and FEV1/FVC drops. The time to exhale (FET) is not a
parameter: the volume approaches FVC asymptotically.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq, minimize_scalar

logger = logging.getLogger(__name__)

# Peak flow lies well inside the first second for every time constant this module accepts.
_PEF_SEARCH_END_S = 1.0
_PEF_GRID_POINTS = 2001


def _settle(t: np.ndarray, tau: float, tau_rise: float) -> np.ndarray:
    """Fraction of a compartment not yet exhaled: B(t, tau) of the module docstring."""
    return (tau * np.exp(-t / tau) - tau_rise * np.exp(-t / tau_rise)) / (tau - tau_rise)


def _settle_rate(t: np.ndarray, tau: float, tau_rise: float) -> np.ndarray:
    """Normalised compartment flow D(t, tau) = -dB/dt, in 1/s."""
    return (np.exp(-t / tau) - np.exp(-t / tau_rise)) / (tau - tau_rise)


def _check_positive(name: str, value: float) -> None:
    if not np.isfinite(value) or value <= 0.0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


@dataclass(frozen=True)
class ForcedExpiration:
    """Parameters of one forced expiration, with the equations of the module docstring.

    Attributes:
        fvc: forced vital capacity, L.
        fast_fraction: fraction ``a`` of FVC in the fast compartment, in [0, 1].
        tau_fast: time constant of the fast compartment, s.
        tau_slow: time constant of the slow compartment, s, at least ``tau_fast``.
        tau_rise: onset lag of the flow, s, below ``tau_fast``.
    """

    fvc: float
    fast_fraction: float
    tau_fast: float
    tau_slow: float
    tau_rise: float

    def __post_init__(self) -> None:
        for name in ("fvc", "tau_fast", "tau_slow", "tau_rise"):
            _check_positive(name, getattr(self, name))
        if not 0.0 <= self.fast_fraction <= 1.0:
            raise ValueError(f"fast_fraction must be in [0, 1], got {self.fast_fraction!r}")
        if not self.tau_rise < self.tau_fast <= self.tau_slow:
            raise ValueError(
                "time constants must satisfy tau_rise < tau_fast <= tau_slow, got "
                f"tau_rise={self.tau_rise!r}, tau_fast={self.tau_fast!r}, tau_slow={self.tau_slow!r}"
            )

    def volume(self, t: np.ndarray | float) -> np.ndarray:
        """Return the exhaled volume V(t) in L at times ``t`` in s (0 before the blow)."""
        t = np.asarray(t, dtype=np.float64)
        elapsed = np.maximum(t, 0.0)
        remaining = self.fast_fraction * _settle(elapsed, self.tau_fast, self.tau_rise) + (
            1.0 - self.fast_fraction
        ) * _settle(elapsed, self.tau_slow, self.tau_rise)
        return np.where(t > 0.0, self.fvc * (1.0 - remaining), 0.0)

    def flow(self, t: np.ndarray | float) -> np.ndarray:
        """Return the expiratory flow Q(t) in L/s at times ``t`` in s (0 before the blow)."""
        t = np.asarray(t, dtype=np.float64)
        elapsed = np.maximum(t, 0.0)
        rate = self.fast_fraction * _settle_rate(elapsed, self.tau_fast, self.tau_rise) + (
            1.0 - self.fast_fraction
        ) * _settle_rate(elapsed, self.tau_slow, self.tau_rise)
        return np.where(t > 0.0, self.fvc * rate, 0.0)

    @property
    def fev1(self) -> float:
        """Forced expiratory volume in the first second, L."""
        return float(self.volume(1.0))

    @property
    def fev1_fvc(self) -> float:
        """FEV1/FVC ratio, dimensionless."""
        return self.fev1 / self.fvc

    @property
    def time_to_pef(self) -> float:
        """Time from the start of the blow to peak flow, s."""
        grid = np.linspace(0.0, _PEF_SEARCH_END_S, _PEF_GRID_POINTS)
        index = int(np.argmax(self.flow(grid)))
        low = grid[max(index - 1, 0)]
        high = grid[min(index + 1, grid.size - 1)]
        # The grid brackets the single maximum, which the bounded search refines to well below 1 ms.
        result = minimize_scalar(
            lambda t: -float(self.flow(t)), bounds=(low, high), method="bounded", options={"xatol": 1e-7}
        )
        return float(result.x)

    @property
    def pef(self) -> float:
        """Peak expiratory flow, L/s."""
        return float(self.flow(self.time_to_pef))


def _fast_fraction(fev1_fvc: float, tau_fast: float, tau_slow: float, tau_rise: float) -> float:
    """Solve V(1 s) / FVC = fev1_fvc for ``a``, exactly because V is linear in ``a``."""
    slow_left = float(_settle(np.float64(1.0), tau_slow, tau_rise))
    fast_left = float(_settle(np.float64(1.0), tau_fast, tau_rise))
    if np.isclose(slow_left, fast_left):
        return 1.0
    return (slow_left - (1.0 - fev1_fvc)) / (slow_left - fast_left)


def _tau_leaving_fraction(remaining_at_1s: float, tau_rise: float) -> float:
    """Return the compartment time constant whose B(1 s) equals ``remaining_at_1s``."""
    shortest, longest = tau_rise * 1.001, 1e3

    def mismatch(tau: float) -> float:
        return float(_settle(np.float64(1.0), tau, tau_rise)) - remaining_at_1s

    if mismatch(shortest) > 0.0 or mismatch(longest) < 0.0:
        raise ValueError(
            f"no time constant in [{shortest:.4f}, {longest:.0f}] s leaves {remaining_at_1s:.4f} of FVC "
            f"after 1 s with tau_rise={tau_rise:.4f} s. Use an FEV1/FVC further from 0 and 1."
        )
    return float(brentq(mismatch, shortest, longest))


def from_time_constants(
    *, fvc: float, fev1_fvc: float, tau_fast: float, tau_slow: float, tau_rise: float
) -> ForcedExpiration:
    """Build the curve with the given FVC, FEV1/FVC and time constants by solving for ``a``.

    Raises:
        ValueError: when no ``a`` in [0, 1] gives ``fev1_fvc``. The message gives the
            ratio range that these time constants can reach.
    """
    _check_positive("fvc", fvc)
    if not 0.0 < fev1_fvc < 1.0:
        raise ValueError(f"fev1_fvc must be in (0, 1), got {fev1_fvc!r}")
    for name, value in (("tau_fast", tau_fast), ("tau_slow", tau_slow), ("tau_rise", tau_rise)):
        _check_positive(name, value)

    fraction = _fast_fraction(fev1_fvc, tau_fast, tau_slow, tau_rise)
    # Round-off at the ends of the range (tau_fast or tau_slow equal to the one-compartment tau).
    if -1e-9 < fraction < 0.0 or 1.0 < fraction < 1.0 + 1e-9:
        fraction = min(max(fraction, 0.0), 1.0)
    if not 0.0 <= fraction <= 1.0:
        lowest = 1.0 - float(_settle(np.float64(1.0), tau_slow, tau_rise))
        highest = 1.0 - float(_settle(np.float64(1.0), tau_fast, tau_rise))
        raise ValueError(
            f"fev1_fvc={fev1_fvc:.3f} cannot be reached with tau_fast={tau_fast:.3f} s and "
            f"tau_slow={tau_slow:.3f} s, which allow [{lowest:.3f}, {highest:.3f}]. "
            "Use a shorter tau_fast for a higher ratio or a longer tau_slow for a lower one."
        )
    return ForcedExpiration(
        fvc=fvc, fast_fraction=fraction, tau_fast=tau_fast, tau_slow=tau_slow, tau_rise=tau_rise
    )


def single_compartment_tau(*, fev1_fvc: float, tau_rise: float) -> float:
    """Return the time constant of a one-compartment curve (``a = 1``) with this FEV1/FVC, in s.

    It bounds the two-compartment fit: ``tau_fast`` must not exceed it and ``tau_slow``
    must not fall below it.
    """
    if not 0.0 < fev1_fvc < 1.0:
        raise ValueError(f"fev1_fvc must be in (0, 1), got {fev1_fvc!r}")
    _check_positive("tau_rise", tau_rise)
    return _tau_leaving_fraction(1.0 - fev1_fvc, tau_rise)


def pef_range(
    *, fvc: float, fev1_fvc: float, tau_slow: float, tau_rise: float, tau_fast_bounds: tuple[float, float]
) -> tuple[float, float]:
    """Return the (lowest, highest) PEF in L/s reachable with ``tau_fast`` inside ``tau_fast_bounds``.

    PEF falls as ``tau_fast`` grows (checked numerically over the ranges the synthetic
    cohort uses, not proven), so the ends of the interval give the extremes.
    """
    short, long = tau_fast_bounds
    slowest = from_time_constants(fvc=fvc, fev1_fvc=fev1_fvc, tau_fast=long, tau_slow=tau_slow, tau_rise=tau_rise)
    fastest = from_time_constants(fvc=fvc, fev1_fvc=fev1_fvc, tau_fast=short, tau_slow=tau_slow, tau_rise=tau_rise)
    return slowest.pef, fastest.pef


def fit_forced_expiration(
    *, fvc: float, fev1: float, pef: float, tau_slow: float, tau_rise: float
) -> ForcedExpiration:
    """Derive the curve whose FVC, FEV1 and PEF equal the given values.

    ``tau_slow`` and ``tau_rise`` are chosen by the caller. ``a`` follows from
    FEV1/FVC for each ``tau_fast``, and ``tau_fast`` is found by root search on PEF.

    Args:
        fvc: forced vital capacity, L.
        fev1: forced expiratory volume in 1 s, L, below ``fvc``.
        pef: peak expiratory flow, L/s.
        tau_slow: slow time constant, s.
        tau_rise: onset lag, s.

    Raises:
        ValueError: when a value is out of range, or when no ``tau_fast`` reaches
            ``pef``. The message gives the reachable PEF range.
    """
    _check_positive("fvc", fvc)
    _check_positive("fev1", fev1)
    _check_positive("pef", pef)
    if fev1 >= fvc:
        raise ValueError(f"fev1 must be below fvc, got fev1={fev1!r} L and fvc={fvc!r} L")
    fev1_fvc = fev1 / fvc

    shortest = 2.0 * tau_rise
    longest = single_compartment_tau(fev1_fvc=fev1_fvc, tau_rise=tau_rise)
    if tau_slow < longest:
        raise ValueError(
            f"tau_slow={tau_slow:.3f} s is too short for fev1_fvc={fev1_fvc:.3f}, which needs "
            f"tau_slow >= {longest:.3f} s"
        )
    if longest <= shortest:
        raise ValueError(
            f"fev1_fvc={fev1_fvc:.3f} needs tau_fast <= {longest:.3f} s, which is not above "
            f"2 * tau_rise = {shortest:.3f} s. Use a shorter tau_rise."
        )
    low_pef, high_pef = pef_range(
        fvc=fvc, fev1_fvc=fev1_fvc, tau_slow=tau_slow, tau_rise=tau_rise, tau_fast_bounds=(shortest, longest)
    )
    if not low_pef <= pef <= high_pef:
        raise ValueError(
            f"pef={pef:.3f} L/s is outside the range [{low_pef:.3f}, {high_pef:.3f}] L/s that "
            f"fvc={fvc:.3f} L, fev1={fev1:.3f} L, tau_slow={tau_slow:.3f} s and tau_rise={tau_rise:.3f} s allow"
        )

    def pef_error(tau_fast: float) -> float:
        curve = from_time_constants(
            fvc=fvc, fev1_fvc=fev1_fvc, tau_fast=tau_fast, tau_slow=tau_slow, tau_rise=tau_rise
        )
        return curve.pef - pef

    if np.isclose(pef, low_pef):
        tau_fast = longest
    elif np.isclose(pef, high_pef):
        tau_fast = shortest
    else:
        tau_fast = float(brentq(pef_error, shortest, longest, xtol=1e-9))
    logger.debug("fitted tau_fast=%.4f s for fvc=%.3f L fev1=%.3f L pef=%.3f L/s", tau_fast, fvc, fev1, pef)
    return from_time_constants(fvc=fvc, fev1_fvc=fev1_fvc, tau_fast=tau_fast, tau_slow=tau_slow, tau_rise=tau_rise)
