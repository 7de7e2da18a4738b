"""Rendering of one simulated session as a thermal and an RGB recording.

Both cameras are assumed co-located with the same pixel grid, so one head-motion track
moves the face in both. Geometry follows ``cohort.thermal.FaceLayout``, with x as a
fraction of the frame width and y as a fraction of the frame height.

Thermal: ``cohort.thermal``'s mask heating equation, extended by a second heating term
for inhaled room air, so that inhalation cools the mask as exhalation warms it::

    d theta / dt = (Q_out / Q_ref) (excess - theta) / tau_warm
                 + (Q_in / Q_ref) (inhaled_excess - theta) / tau_warm - theta / tau_cool

``Q_out`` and ``Q_in`` are the expiratory and inspiratory parts of the flow (both >= 0)
and ``inhaled_excess`` is the room temperature minus the resting mask temperature (K).

RGB: a flat-shaded face with eyes, cheeks and a mask on a wall. The mask bulges with the
flow: its semi-axes grow by ``MASK_BULGE_PER_REFERENCE_FLOW`` of their size at the
reference flow (estimate). The cheeks puff during expiration, and the mask brightens as
it bulges towards the light. While air flows out,
the fabric flutters: the mask brightness changes from frame to frame by a Gaussian
factor with standard deviation ``MASK_FLUTTER_PER_REFERENCE_FLOW`` times the relative
flow (estimate). Pixel noise has a
standard deviation of ``RGB_NOISE_DN`` (estimate for a webcam).
"""

from __future__ import annotations

import logging
import math

import numpy as np
from scipy.special import expit

from cohort.sim_session import SessionTimeline
from cohort.thermal import FaceLayout, MaskHeating, ThermalScene, relax_from_zero

logger = logging.getLogger(__name__)

MASK_BULGE_PER_REFERENCE_FLOW = 0.08
MASK_SHADING_PER_REFERENCE_FLOW = 0.15
MASK_FLUTTER_PER_REFERENCE_FLOW = 0.03
RGB_NOISE_DN = 2.0
_CHUNK_FRAMES = 16
_EDGE_REACH = 10.0
_NOISE_BANK_FRAMES = 8
_WALL_TOP = np.array([190.0, 190.0, 200.0], dtype=np.float32)
_WALL_BOTTOM = np.array([150.0, 150.0, 160.0], dtype=np.float32)
_SKIN = np.array([205.0, 160.0, 130.0], dtype=np.float32)
_CHEEK = np.array([215.0, 145.0, 125.0], dtype=np.float32)
_EYE = np.array([60.0, 40.0, 30.0], dtype=np.float32)
_MASK = np.array([150.0, 190.0, 220.0], dtype=np.float32)
_EYE_CENTERS = ((0.40, 0.38), (0.60, 0.38))
_EYE_SEMI_AXES = (0.04, 0.02)
_CHEEK_CENTERS = ((0.35, 0.55), (0.65, 0.55))
_CHEEK_SEMI_AXES = (0.06, 0.05)


def mask_rise_with_inhalation(
    timeline: SessionTimeline,
    times_s: np.ndarray,
    heating: MaskHeating,
    inhaled_excess_k: float,
    *,
    step_s: float = 0.01,
) -> np.ndarray:
    """Integrate the heating equation of the module docstring; return ``theta`` in K at ``times_s``.

    The mask starts at rest at ``times_s[0]``. Each step uses the exact solution for the
    flow held at its mid-step value, as ``cohort.thermal.mask_temperature_rise`` does.
    """
    n_steps = max(int(math.ceil((times_s[-1] - times_s[0]) / step_s)), 1)
    grid = times_s[0] + step_s * np.arange(n_steps + 1)
    flow = timeline.flow(grid[:-1] + 0.5 * step_s)
    scale = 1.0 / (heating.reference_flow * heating.tau_warm)
    out_rate = np.maximum(flow, 0.0) * scale
    in_rate = np.maximum(-flow, 0.0) * scale
    decay_rate = out_rate + in_rate + 1.0 / heating.tau_cool
    theta_eq = (out_rate * heating.excess_k + in_rate * inhaled_excess_k) / decay_rate
    theta = relax_from_zero(theta_eq, np.exp(-decay_rate * step_s))
    return np.interp(times_s, grid, theta)


def soft_ellipse(
    height: int, width: int, centers_px: np.ndarray, semi_axes_px: np.ndarray, edge_px: float
) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Return soft ellipse weights in [0, 1] and the window of the frame they cover.

    ``centers_px`` and ``semi_axes_px`` are ``(frames, 2)`` in (x, y) pixels, so the
    ellipse may move and change size per frame. The edge is the logistic profile of
    ``cohort.thermal.ellipse_weight``. The weights are float32 ``(frames, rows, cols)``
    for the window ``(row slice, column slice)``, which spans every frame's ellipse plus
    ``_EDGE_REACH`` edge widths along both axes, where the weight is below 5e-5.
    """
    centers_px = np.asarray(centers_px, dtype=np.float32)
    semi_axes_px = np.asarray(semi_axes_px, dtype=np.float32)
    # Distance in edge widths along each axis is (radius - 1) * sqrt(a_x a_y) / edge_px.
    aspect = np.sqrt(semi_axes_px / semi_axes_px[:, ::-1])
    reach = semi_axes_px + np.float32(_EDGE_REACH * edge_px) * aspect
    low = np.floor(np.min(centers_px - reach, axis=0)).astype(int)
    high = np.ceil(np.max(centers_px + reach, axis=0)).astype(int) + 1
    columns = slice(int(np.clip(low[0], 0, width)), int(np.clip(high[0], 0, width)))
    rows = slice(int(np.clip(low[1], 0, height)), int(np.clip(high[1], 0, height)))
    x = np.arange(columns.start, columns.stop, dtype=np.float32)
    y = np.arange(rows.start, rows.stop, dtype=np.float32)
    dx = (x[None, None, :] - centers_px[:, 0, None, None]) / semi_axes_px[:, 0, None, None]
    dy = (y[None, :, None] - centers_px[:, 1, None, None]) / semi_axes_px[:, 1, None, None]
    radius = np.sqrt(dx * dx + dy * dy)
    mean_axis = np.sqrt(semi_axes_px[:, 0] * semi_axes_px[:, 1])[:, None, None]
    weight = expit(-(radius - np.float32(1.0)) * mean_axis / np.float32(edge_px)).astype(np.float32, copy=False)
    return weight, (rows, columns)


def _fixed(pair: tuple[float, float], n_frames: int, width: int, height: int) -> np.ndarray:
    return np.tile(np.array([pair[0] * width, pair[1] * height], dtype=np.float32), (n_frames, 1))


def _paint(image: np.ndarray, ellipse: tuple[np.ndarray, tuple[slice, slice]], color) -> None:
    """Blend ``color`` (a scalar, (frames,), (3,) or (frames, 3)) into ``image`` inside the ellipse."""
    weight, (rows, columns) = ellipse
    window = image[:, rows, columns]
    color = np.asarray(color, dtype=np.float32)
    if image.ndim == 4:
        weight = weight[..., None]
        color = color.reshape(-1, 1, 1, 3) if color.ndim == 2 else color
    elif color.ndim == 1:
        color = color[:, None, None]
    window += weight * (color - window)


def render_thermal(
    *,
    width: int,
    height: int,
    times_s: np.ndarray,
    mask_rise_k: np.ndarray,
    scene: ThermalScene,
    layout: FaceLayout,
    head_offsets_px: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Render thermal frames in degC, float32 ``(frames, height, width)``, chunk by chunk.

    The scene is that of ``cohort.thermal.render_thermal_frames`` on a rectangular frame:
    drifting background with a vertical gradient, face at skin temperature, mask at
    ``mask_rest_c + mask_rise_k`` and Gaussian noise of ``netd_k`` per pixel.
    """
    n_frames = times_s.size
    frames = np.empty((n_frames, height, width), dtype=np.float32)
    row_fraction = (np.arange(height, dtype=np.float32) + 0.5) / height
    gradient = np.float32(scene.background_gradient_k) * (np.float32(0.5) - row_fraction)
    for first in range(0, n_frames, _CHUNK_FRAMES):
        part = slice(first, min(first + _CHUNK_FRAMES, n_frames))
        count = part.stop - part.start
        offsets = head_offsets_px[part].astype(np.float32)
        drift = np.float32(scene.ambient_drift_k_per_s) * times_s[part].astype(np.float32)
        chunk = frames[part]
        chunk[:] = np.float32(scene.ambient_c) + gradient[None, :, None] + drift[:, None, None]
        face = soft_ellipse(height, width, _fixed(layout.face_center, count, width, height) + offsets,
                            _fixed(layout.face_semi_axes, count, width, height), layout.edge_px)
        _paint(chunk, face, scene.skin_c)
        mask = soft_ellipse(height, width, _fixed(layout.mask_center, count, width, height) + offsets,
                            _fixed(layout.mask_semi_axes, count, width, height), layout.edge_px)
        _paint(chunk, mask, np.float32(scene.mask_rest_c) + mask_rise_k[part].astype(np.float32))
        if scene.netd_k > 0.0:
            chunk += np.float32(scene.netd_k) * rng.standard_normal(chunk.shape, dtype=np.float32)
    return frames


def render_rgb(
    *,
    width: int,
    height: int,
    relative_flow: np.ndarray,
    layout: FaceLayout,
    head_offsets_px: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Render RGB frames, uint8 ``(frames, height, width, 3)``.

    ``relative_flow`` is the signed flow per frame divided by the reference flow. It sets
    the mask bulge, shading and flutter and the cheek puff (see the module docstring).
    """
    n_frames = relative_flow.size
    frames = np.empty((n_frames, height, width, 3), dtype=np.uint8)
    row_fraction = ((np.arange(height, dtype=np.float32) + 0.5) / height)[:, None]
    wall = (_WALL_TOP + row_fraction * (_WALL_BOTTOM - _WALL_TOP))[:, None, :]
    # Noise comes from a small bank of frames, each reused at a random circular shift,
    # which costs far less than fresh Gaussian noise for every pixel of every frame.
    noise_bank = np.float32(RGB_NOISE_DN) * rng.standard_normal((_NOISE_BANK_FRAMES, height, width, 3), dtype=np.float32)
    for first in range(0, n_frames, _CHUNK_FRAMES):
        part = slice(first, min(first + _CHUNK_FRAMES, n_frames))
        count = part.stop - part.start
        offsets = head_offsets_px[part].astype(np.float32)
        flow = np.clip(relative_flow[part], -0.5, 1.5).astype(np.float32)
        image = np.broadcast_to(wall, (count, height, width, 3)).astype(np.float32)

        face = soft_ellipse(height, width, _fixed(layout.face_center, count, width, height) + offsets,
                            _fixed(layout.face_semi_axes, count, width, height), layout.edge_px)
        _paint(image, face, _SKIN)
        puff = 1.0 + 0.5 * MASK_BULGE_PER_REFERENCE_FLOW * np.maximum(flow, 0.0)
        for center in _CHEEK_CENTERS:
            axes = _fixed(_CHEEK_SEMI_AXES, count, width, height) * puff[:, None]
            weight, window = soft_ellipse(height, width, _fixed(center, count, width, height) + offsets, axes,
                                          2.0 * layout.edge_px)
            _paint(image, (0.6 * weight, window), _CHEEK)
        for center in _EYE_CENTERS:
            eye = soft_ellipse(height, width, _fixed(center, count, width, height) + offsets,
                               _fixed(_EYE_SEMI_AXES, count, width, height), layout.edge_px)
            _paint(image, eye, _EYE)

        bulge = 1.0 + MASK_BULGE_PER_REFERENCE_FLOW * flow
        mask_axes = _fixed(layout.mask_semi_axes, count, width, height) * np.stack([bulge, 0.6 * bulge + 0.4], axis=1)
        mask = soft_ellipse(height, width, _fixed(layout.mask_center, count, width, height) + offsets,
                            mask_axes, layout.edge_px)
        flutter = MASK_FLUTTER_PER_REFERENCE_FLOW * np.maximum(flow, 0.0) * rng.standard_normal(count)
        shade = (1.0 + MASK_SHADING_PER_REFERENCE_FLOW * flow + flutter.astype(np.float32))[:, None] * _MASK[None, :]
        _paint(image, mask, np.minimum(shade, 255.0))

        for k in range(count):
            bank_index = int(rng.integers(_NOISE_BANK_FRAMES))
            shift = (int(rng.integers(height)), int(rng.integers(width)))
            image[k] += np.roll(noise_bank[bank_index], shift, axis=(0, 1))
        np.rint(image, out=image)
        np.clip(image, 0.0, 255.0, out=image)
        frames[part] = image.astype(np.uint8)
    return frames
