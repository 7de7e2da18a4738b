"""Calibration input for the fixed-point scales: simulated thermal clips rate-coded into spikes.

``python -m hardware export --calibration-clips`` draws its clips as
``benchmarks/fixed_point.py`` does: ``hardware.workload.simulated_clips`` cuts them from
the cached simulated cohort, and ``RateEncoder`` rate-codes them over ``THERMAL_WINDOW_C``.

NOTE: the benchmark draws its calibration clips together with its comparison clips,
so the cohort size and the encoder's random stream differ, and its spikes for a seed are
not the export's spikes for that seed.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass

import numpy as np

from hardware.workload import WorkloadError, encode_thermal_clips, simulated_clips
from neuro.backends.lava.calibration import CalibrationConfig

logger = logging.getLogger(__name__)


@dataclass
class CalibrationSpikes:
    """Spikes ``(T, B, 1, size, size)`` of ``B`` simulated clips and a sentence naming their source."""

    spikes: np.ndarray
    description: str


def add_calibration_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--percentile`` and ``--headroom`` (the ``CalibrationConfig`` fields) to ``parser``."""
    defaults = CalibrationConfig()
    parser.add_argument("--percentile", type=float, default=defaults.percentile,
                        help=f"percentile of |W x| a layer is sized for, in (0, 100] (default: {defaults.percentile:g})")
    parser.add_argument("--headroom", type=float, default=defaults.headroom,
                        help=f"factor >= 1 on the calibrated bounds (default: {defaults.headroom:g})")


def simulated_calibration_spikes(n_clips: int, *, input_shape: tuple[int, ...], steps: int | None,
                                 seed: int) -> CalibrationSpikes:
    """Cut ``n_clips`` simulated thermal clips (cohort seed ``seed``) and rate-code them for ``input_shape``.

    ``input_shape`` is the graph's NIR input shape and must be ``(1, size, size)``, the
    one-channel square image that ``RateEncoder`` produces.  Raises WorkloadError for
    another shape or for ``n_clips < 1``.
    """
    shape = tuple(int(extent) for extent in input_shape)
    if len(shape) != 3 or shape[0] != 1 or shape[1] != shape[2]:
        raise WorkloadError(f"calibration clips are rate-coded into (1, size, size) frames, but the graph's input "
                            f"shape is {shape}; calibrate such a graph with calibrate() on your own input")
    if n_clips < 1:
        raise WorkloadError(f"the number of calibration clips must be at least 1, got {n_clips}")
    clips, _, source = simulated_clips(n_clips, seed=seed)
    spikes = encode_thermal_clips(clips, size=shape[1], steps=steps, seed=seed)
    description = (f"{n_clips} thermal clips ({source}) rate-coded to {spikes.shape[0]} steps of "
                   f"{shape[1]}x{shape[2]} spikes, encoder seed {seed}")
    logger.info("calibration input: %s", description)
    return CalibrationSpikes(spikes=spikes, description=description)
