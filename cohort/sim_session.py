"""Blows of one simulated session and the signed flow at the mask over the whole session.

A session is, per blow: tidal breathing at rest, a maximal inhalation, a short pause and
a forced expiration that the subject stops at the forced expiratory time (FET). After the
last blow the subject breathes at rest again. Flow is positive out of the mouth, in L/s.

These numbers are estimates, because no source gave them. Tidal breathing is a sinusoid
of 0.2-0.3 Hz with peak flow 0.3-0.5 L/s. The maximal inhalation takes in the blow's FVC
over 1.0-2.0 s as a half-sine. A pause of 0.2-0.6 s precedes the blow.

Blow-to-blow variation: PEF coefficient of variation 4.6 % (Chest 1995;107:156), FVC
2 % and FEV1/FVC standard deviation 0.01 (estimates). The blow ends where the volume
exhaled over the last second first falls below 0.025 L (the ATS/ERS 2019 end-of-test
plateau), plus 0-1 s, within 6-15 s.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from cohort.flow import ForcedExpiration, fit_forced_expiration, pef_range, single_compartment_tau

logger = logging.getLogger(__name__)

PEF_BLOW_CV = 0.046
FVC_BLOW_CV = 0.02
FEV1_FVC_BLOW_SD = 0.01
FEV1_FVC_BLOW_RANGE = (0.30, 0.92)
TAU_FAST_RANGE_S = (0.2, 0.6)
TAU_RISE_RANGE_S = (0.02, 0.05)
PLATEAU_VOLUME_L = 0.025
FET_RANGE_S = (6.0, 15.0)
INHALE_RANGE_S = (1.0, 2.0)
PAUSE_RANGE_S = (0.2, 0.6)
FINAL_REST_RANGE_S = (2.0, 4.0)
_GRID_STEP_S = 0.001


@dataclass(frozen=True)
class BlowTruth:
    """Ground truth of one blow, as a spirometer would report it.

    Attributes:
        onset_s: start of the forced expiration from the first frame, s.
        fet_s: forced expiratory time, s. The flow is 0 after it.
        stop_s: time after onset where the cycle ends (flow below the cycle-end
            fraction of PEF after the peak, or the FET if that comes first), s.
        fev1: volume exhaled in the first second, L.
        fvc: volume exhaled by the FET, L (just below ``curve.fvc``, the asymptote).
        fev1_fvc: ``fev1 / fvc``.
        pef: peak expiratory flow, L/s.
        curve: the flow curve, whose time 0 is ``onset_s``.
    """

    onset_s: float
    fet_s: float
    stop_s: float
    fev1: float
    fvc: float
    fev1_fvc: float
    pef: float
    curve: ForcedExpiration


@dataclass(frozen=True)
class Inhalation:
    """A maximal inhalation of ``volume_l`` L as a half-sine of flow from ``start_s`` over ``duration_s``."""

    start_s: float
    duration_s: float
    volume_l: float


@dataclass(frozen=True)
class SessionTimeline:
    """Everything that sets the flow of one session; ``flow`` evaluates it.

    Tidal flow is ``tidal_peak_l_s * sin(2 pi tidal_hz t + tidal_phase)`` whenever no
    inhalation or blow is running.
    """

    duration_s: float
    blows: tuple[BlowTruth, ...]
    inhalations: tuple[Inhalation, ...]
    tidal_hz: float
    tidal_peak_l_s: float
    tidal_phase: float

    def flow(self, times_s: np.ndarray | float) -> np.ndarray:
        """Return the signed flow at the mouth in L/s (positive out) at ``times_s``."""
        times_s = np.asarray(times_s, dtype=np.float64)
        flow = self.tidal_peak_l_s * np.sin(2.0 * math.pi * self.tidal_hz * times_s + self.tidal_phase)
        for breath in self.inhalations:
            inside = (times_s >= breath.start_s) & (times_s < breath.start_s + breath.duration_s)
            peak = breath.volume_l * math.pi / (2.0 * breath.duration_s)
            phase = math.pi * (times_s - breath.start_s) / breath.duration_s
            flow = np.where(inside, -peak * np.sin(phase), flow)
        for blow in self.blows:
            inside = (times_s >= blow.onset_s) & (times_s < blow.onset_s + blow.fet_s)
            flow = np.where(inside, blow.curve.flow(times_s - blow.onset_s), flow)
        return flow

    def rest_mask(self, times_s: np.ndarray) -> np.ndarray:
        """Return True where only tidal breathing runs (no inhalation, pause or blow)."""
        times_s = np.asarray(times_s, dtype=np.float64)
        rest = np.ones(times_s.shape, dtype=bool)
        for breath, blow in zip(self.inhalations, self.blows):
            rest &= (times_s < breath.start_s) | (times_s >= blow.onset_s + blow.fet_s)
        return rest


def _reachable_pef(fvc: float, fev1_fvc: float, tau_slow: float, tau_rise: float) -> tuple[float, float]:
    longest = min(TAU_FAST_RANGE_S[1], single_compartment_tau(fev1_fvc=fev1_fvc, tau_rise=tau_rise))
    return pef_range(
        fvc=fvc, fev1_fvc=fev1_fvc, tau_slow=tau_slow, tau_rise=tau_rise, tau_fast_bounds=(TAU_FAST_RANGE_S[0], longest)
    )


def draw_curve(
    *, fvc: float, fev1_fvc: float, pef: float, tau_slow: float, rng: np.random.Generator
) -> ForcedExpiration:
    """Draw one blow around a subject's FVC, FEV1/FVC and PEF and fit its flow curve.

    The PEF is clipped into the range that the flow model reaches with a fast time
    constant of 0.2-0.6 s (estimate). A subject whose drawn PEF is out of reach thus
    blows the nearest reachable PEF, and the clipping is logged at DEBUG level.
    """
    tau_rise = rng.uniform(*TAU_RISE_RANGE_S)
    blow_fvc = fvc * (1.0 + FVC_BLOW_CV * rng.standard_normal())
    blow_ratio = float(np.clip(fev1_fvc + FEV1_FVC_BLOW_SD * rng.standard_normal(), *FEV1_FVC_BLOW_RANGE))
    # The slow compartment must be slower than one compartment holding the whole FVC.
    blow_tau_slow = max(tau_slow, 1.1 * single_compartment_tau(fev1_fvc=blow_ratio, tau_rise=tau_rise))
    low_pef, high_pef = _reachable_pef(blow_fvc, blow_ratio, blow_tau_slow, tau_rise)
    wanted_pef = pef * (1.0 + PEF_BLOW_CV * rng.standard_normal())
    blow_pef = float(np.clip(wanted_pef, low_pef * 1.001, high_pef * 0.999))
    if blow_pef != wanted_pef:
        logger.debug("PEF %.2f L/s clipped to %.2f L/s, the reachable range is [%.2f, %.2f] L/s",
                     wanted_pef, blow_pef, low_pef, high_pef)
    return fit_forced_expiration(
        fvc=blow_fvc, fev1=blow_ratio * blow_fvc, pef=blow_pef, tau_slow=blow_tau_slow, tau_rise=tau_rise
    )


def forced_expiratory_time(curve: ForcedExpiration, rng: np.random.Generator) -> float:
    """Return when the subject stops blowing: the ATS/ERS plateau time plus 0-1 s, within 6-15 s."""
    grid = np.arange(1.0, FET_RANGE_S[1] + _GRID_STEP_S, 0.01)
    last_second = curve.volume(grid) - curve.volume(grid - 1.0)
    below = np.flatnonzero(last_second < PLATEAU_VOLUME_L)
    plateau_s = float(grid[below[0]]) if below.size else FET_RANGE_S[1]
    return float(np.clip(plateau_s + rng.uniform(0.0, 1.0), *FET_RANGE_S))


def cycle_stop_s(curve: ForcedExpiration, fet_s: float, end_fraction: float) -> float:
    """Return the time after onset where flow, past its peak, first falls below ``end_fraction * PEF``.

    Returns ``fet_s`` when the flow stays above that level until the subject stops.
    """
    grid = np.arange(0.0, fet_s, _GRID_STEP_S)
    flow = curve.flow(grid)
    peak_index = int(np.argmax(flow))
    below = np.flatnonzero(flow[peak_index:] < end_fraction * flow[peak_index])
    return float(grid[peak_index + below[0]]) if below.size else fet_s


def draw_timeline(
    *,
    fvc: float,
    fev1_fvc: float,
    pef: float,
    tau_slow: float,
    n_blows: int,
    rest_range_s: tuple[float, float],
    end_fraction: float,
    rng: np.random.Generator,
) -> SessionTimeline:
    """Draw the rest periods, inhalations and blows of one session."""
    blows = []
    inhalations = []
    clock_s = 0.0
    for _ in range(n_blows):
        curve = draw_curve(fvc=fvc, fev1_fvc=fev1_fvc, pef=pef, tau_slow=tau_slow, rng=rng)
        clock_s += rng.uniform(*rest_range_s)
        inhale_s = rng.uniform(*INHALE_RANGE_S)
        inhalations.append(Inhalation(start_s=clock_s, duration_s=inhale_s, volume_l=curve.fvc))
        clock_s += inhale_s + rng.uniform(*PAUSE_RANGE_S)
        fet_s = forced_expiratory_time(curve, rng)
        fvc_at_fet = float(curve.volume(fet_s))
        fev1 = curve.fev1
        blows.append(
            BlowTruth(
                onset_s=clock_s,
                fet_s=fet_s,
                stop_s=cycle_stop_s(curve, fet_s, end_fraction),
                fev1=fev1,
                fvc=fvc_at_fet,
                fev1_fvc=fev1 / fvc_at_fet,
                pef=curve.pef,
                curve=curve,
            )
        )
        clock_s += fet_s
    clock_s += rng.uniform(*FINAL_REST_RANGE_S)
    return SessionTimeline(
        duration_s=clock_s,
        blows=tuple(blows),
        inhalations=tuple(inhalations),
        tidal_hz=rng.uniform(0.2, 0.3),
        tidal_peak_l_s=rng.uniform(0.3, 0.5),
        tidal_phase=rng.uniform(0.0, 2.0 * math.pi),
    )
