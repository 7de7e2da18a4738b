"""Heating of a breathing mask by exhaled air, and rendering of thermal frames.

All temperatures are in degrees Celsius, temperature differences in kelvin, times in
seconds and flows in L/s. Frames are float32 arrays shaped ``(frames, height, width)``.

Mask heating
------------
Exhaled air at the mouth is about 31-35 degC (median 34.8 degC in controls, Popov et
al., Respir Med 2007). It is warmer than a mask at rest, and condensation adds heat. The
mask temperature above rest, ``theta``, follows a first-order balance whose heating
term grows with the flow ``Q(t)``::

    d theta / dt = (Q(t) / Q_ref) * (excess - theta) / tau_warm - theta / tau_cool

``excess`` is the exhaled-air temperature plus condensation heating minus the resting
mask temperature (K), and ``Q_ref`` is the flow at which the heating term alone has
time constant ``tau_warm``. Estimates for a thin fabric mask are a warming tau of 0.2-0.5 s, a
cooling tau of 5-10 s and a rise of 2-8 K per blow. A rigid mask warms
less (0.5-2 K) and more slowly. Both ranges are estimates, not measurements.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

logger = logging.getLogger(__name__)

# Estimate of a typical adult PEF, used as the flow Q_ref of the heating equation.
# Hankinson 1999 gives ~10 L/s for a 175 cm man and ~7 L/s for a 162 cm woman.
DEFAULT_REFERENCE_FLOW_L_S = 8.0


@dataclass(frozen=True)
class MaskHeating:
    """Thermal parameters of the mask, used in the equation of the module docstring.

    Attributes:
        excess_k: exhaled-air temperature plus condensation heating, minus the
            resting mask temperature, K. Positive values warm the mask.
        tau_warm: time constant of the heating term at ``reference_flow``, s.
        tau_cool: cooling time constant towards the resting temperature, s.
        reference_flow: flow ``Q_ref`` at which the heating term has time constant ``tau_warm``, L/s.
    """

    excess_k: float
    tau_warm: float
    tau_cool: float
    reference_flow: float = DEFAULT_REFERENCE_FLOW_L_S

    def __post_init__(self) -> None:
        if not math.isfinite(self.excess_k):
            raise ValueError(f"excess_k must be finite, got {self.excess_k!r}")
        for name in ("tau_warm", "tau_cool", "reference_flow"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0.0:
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def mask_temperature_rise(
    flow: Callable[[np.ndarray], np.ndarray],
    times_s: np.ndarray,
    heating: MaskHeating,
    *,
    step_s: float = 0.01,
) -> np.ndarray:
    """Integrate the mask heating equation and return ``theta`` in K at ``times_s``.

    The mask starts at rest (``theta = 0``) at ``times_s[0]``. Each step of ``step_s``
    uses the exact solution for a flow held at its mid-step value. The update is
    therefore stable for any step, which only sets how finely the flow is sampled.

    Args:
        flow: expiratory flow in L/s as a function of time in s (vectorised).
        times_s: increasing sample times, s.
        heating: mask parameters.
        step_s: integration step, s.
    """
    times_s = np.asarray(times_s, dtype=np.float64)
    if times_s.ndim != 1 or times_s.size == 0:
        raise ValueError(f"times_s must be a non-empty 1-D array, got shape {times_s.shape}")
    if np.any(np.diff(times_s) <= 0.0):
        raise ValueError("times_s must be strictly increasing")
    if not math.isfinite(step_s) or step_s <= 0.0:
        raise ValueError(f"step_s must be a finite number > 0, got {step_s!r}")

    n_steps = max(int(math.ceil((times_s[-1] - times_s[0]) / step_s)), 1)
    grid = times_s[0] + step_s * np.arange(n_steps + 1)
    midpoint_flow = np.asarray(flow(grid[:-1] + 0.5 * step_s), dtype=np.float64)

    # Per step: theta relaxes towards theta_eq with rate `decay_rate`.
    warm_rate = midpoint_flow / (heating.reference_flow * heating.tau_warm)
    decay_rate = warm_rate + 1.0 / heating.tau_cool
    theta_eq = warm_rate * heating.excess_k / decay_rate
    theta = relax_from_zero(theta_eq, np.exp(-decay_rate * step_s))
    return np.interp(times_s, grid, theta)


def relax_from_zero(theta_eq: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Integrate first-order relaxation from 0: ``theta[k+1] = eq[k] + (theta[k] - eq[k]) * keep[k]``.

    ``keep[k]`` is ``exp(-rate[k] * step)``; the result has one more entry than the inputs.
    """
    theta = np.empty(len(theta_eq) + 1)
    theta[0] = 0.0
    for k in range(len(theta_eq)):
        theta[k + 1] = theta_eq[k] + (theta[k] - theta_eq[k]) * keep[k]
    return theta


@dataclass(frozen=True)
class FaceLayout:
    """Face and mask ellipses as fractions of the frame side, in (x, y) order with y downwards.

    Attributes:
        face_center: centre of the face ellipse.
        face_semi_axes: horizontal and vertical semi-axes of the face.
        mask_center: centre of the mask (over mouth and nose).
        mask_semi_axes: horizontal and vertical semi-axes of the mask.
        edge_px: width of the soft edge of both ellipses, pixels.
    """

    face_center: tuple[float, float] = (0.50, 0.45)
    face_semi_axes: tuple[float, float] = (0.27, 0.36)
    mask_center: tuple[float, float] = (0.50, 0.64)
    mask_semi_axes: tuple[float, float] = (0.15, 0.10)
    edge_px: float = 1.5

    def __post_init__(self) -> None:
        for name in ("face_center", "face_semi_axes", "mask_center", "mask_semi_axes"):
            pair = getattr(self, name)
            if len(pair) != 2 or not all(0.0 < value < 1.0 for value in pair):
                raise ValueError(f"{name} must be two fractions in (0, 1), got {pair!r}")
        if not math.isfinite(self.edge_px) or self.edge_px <= 0.0:
            raise ValueError(f"edge_px must be a finite number > 0, got {self.edge_px!r}")


@dataclass(frozen=True)
class ThermalScene:
    """Temperatures and sensor properties of one recording.

    Attributes:
        ambient_c: background (room) temperature at the start of the clip, degC.
        skin_c: facial skin temperature, degC.
        mask_rest_c: mask temperature before the blow, degC.
        ambient_drift_k_per_s: linear drift of the background temperature, K/s.
        background_gradient_k: background temperature at the top edge minus the bottom edge, K.
        netd_k: noise-equivalent temperature difference of the camera, the standard
            deviation of the per-pixel Gaussian noise, K.
    """

    ambient_c: float
    skin_c: float
    mask_rest_c: float
    ambient_drift_k_per_s: float = 0.0
    background_gradient_k: float = 0.0
    netd_k: float = 0.05

    def __post_init__(self) -> None:
        for name in ("ambient_c", "skin_c", "mask_rest_c", "ambient_drift_k_per_s", "background_gradient_k"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
        if not math.isfinite(self.netd_k) or self.netd_k < 0.0:
            raise ValueError(f"netd_k must be a finite number >= 0, got {self.netd_k!r}")


def ellipse_weight(
    size: int, centers_px: np.ndarray, semi_axes_px: tuple[float, float], edge_px: float
) -> np.ndarray:
    """Return a soft ellipse mask per frame, ``(frames, size, size)`` float32 in [0, 1].

    ``centers_px`` is ``(frames, 2)`` of (x, y) pixel coordinates. Across the edge the
    weight falls from 1 to 0 along a logistic curve with scale ``edge_px`` pixels (from
    0.9 to 0.1 over about 4.4 ``edge_px``), so sub-pixel motion changes the image.
    """
    centers_px = np.asarray(centers_px, dtype=np.float32)
    pixel = np.arange(size, dtype=np.float32)
    semi_x, semi_y = semi_axes_px
    dx = (pixel[None, None, :] - centers_px[:, 0, None, None]) / np.float32(semi_x)
    dy = (pixel[None, :, None] - centers_px[:, 1, None, None]) / np.float32(semi_y)
    radius = np.sqrt(dx * dx + dy * dy)
    # (radius - 1) times the mean semi-axis approximates the distance to the edge in pixels.
    distance_px = (radius - np.float32(1.0)) * np.float32(math.sqrt(semi_x * semi_y))
    return expit(-distance_px / np.float32(edge_px)).astype(np.float32, copy=False)


def head_motion(
    times_s: np.ndarray, amplitude_px: float, rng: np.random.Generator
) -> np.ndarray:
    """Return smooth head sway, ``(frames, 2)`` (x, y) offsets in pixels, at most ``amplitude_px`` per axis.

    Each axis is a sinusoid of random frequency in 0.1-0.5 Hz (an estimate of slow sway
    while seated) with random phase, horizontal amplitude ``amplitude_px`` and vertical
    amplitude half of it.
    """
    times_s = np.asarray(times_s, dtype=np.float64)
    frequency_hz = rng.uniform(0.1, 0.5, size=2)
    phase = rng.uniform(0.0, 2.0 * math.pi, size=2)
    scale = np.array([amplitude_px, 0.5 * amplitude_px])
    return scale * np.sin(2.0 * math.pi * frequency_hz * times_s[:, None] + phase)


def render_thermal_frames(
    *,
    size: int,
    times_s: np.ndarray,
    mask_rise_k: np.ndarray,
    scene: ThermalScene,
    layout: FaceLayout,
    head_offsets_px: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Render a face with a breathing mask on a room background, in degC.

    Returns float32 ``(len(times_s), size, size)``. The background has a vertical
    gradient and drifts linearly in time. The face is at ``skin_c``, and the mask is at
    ``mask_rest_c + mask_rise_k[frame]``. Face and mask move together by
    ``head_offsets_px``. Every pixel gets independent Gaussian noise with standard
    deviation ``netd_k``.
    """
    times_s = np.asarray(times_s, dtype=np.float32)
    mask_rise_k = np.asarray(mask_rise_k, dtype=np.float32)
    n_frames = times_s.size
    if mask_rise_k.shape != (n_frames,):
        raise ValueError(f"mask_rise_k must have shape ({n_frames},), got {mask_rise_k.shape}")
    if head_offsets_px.shape != (n_frames, 2):
        raise ValueError(f"head_offsets_px must have shape ({n_frames}, 2), got {head_offsets_px.shape}")

    # Background: (frames, size, 1), broadcast over columns below.
    row_fraction = (np.arange(size, dtype=np.float32) + 0.5) / size
    gradient = np.float32(scene.background_gradient_k) * (np.float32(0.5) - row_fraction)
    drift = np.float32(scene.ambient_drift_k_per_s) * times_s
    background = np.float32(scene.ambient_c) + gradient[None, :, None] + drift[:, None, None]

    offsets = np.asarray(head_offsets_px, dtype=np.float32)
    face_centers = np.array(layout.face_center, dtype=np.float32) * size + offsets
    mask_centers = np.array(layout.mask_center, dtype=np.float32) * size + offsets
    face_axes = (layout.face_semi_axes[0] * size, layout.face_semi_axes[1] * size)
    mask_axes = (layout.mask_semi_axes[0] * size, layout.mask_semi_axes[1] * size)
    face = ellipse_weight(size, face_centers, face_axes, layout.edge_px)
    mask = ellipse_weight(size, mask_centers, mask_axes, layout.edge_px)

    frames = background + face * (np.float32(scene.skin_c) - background)
    mask_c = (np.float32(scene.mask_rest_c) + mask_rise_k)[:, None, None]
    frames += mask * (mask_c - frames)

    if scene.netd_k > 0.0:
        noise = rng.standard_normal(frames.shape, dtype=np.float32)
        frames += np.float32(scene.netd_k) * noise
    return frames.astype(np.float32, copy=False)
