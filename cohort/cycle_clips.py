"""Fixed-size clips cut from segmented cycles, and a plot of the breathing signal.

``cut_clips`` turns each cycle of a recording into the fixed-shape input that the
classifiers take. ``plot_signal`` draws the breathing signal of a ``segment`` result.
Both are re-exported by ``cohort.segmentation``.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from cohort.recording import Cycle, Recording

if TYPE_CHECKING:
    from cohort.segmentation import SegmentationResult

logger = logging.getLogger(__name__)


def cut_clips(
    recording: Recording,
    cycles: list[Cycle],
    *,
    n_frames: int = 30,
    size: int = 224,
    pre_onset_s: float = 1.0,
    window_s: float | None = None,
    center: tuple[int, int] | None = None,
) -> np.ndarray:
    """Cut each cycle into ``n_frames`` frames of ``size`` x ``size`` pixels.

    The window starts ``pre_onset_s`` before the onset (rest, clipped at frame 0). It ends
    at the cycle's end, or lasts ``window_s`` seconds when that is given (clipped at the
    recording's end), which matches clips of fixed duration such as ``cohort.synthetic``'s
    6.9 s. The window is resampled in time by nearest frame. Each frame is cropped to the
    largest square centred on ``center`` (x, y in pixels, the frame centre when None) that
    fits the frame, then resized with ``cv2.INTER_AREA``. Returns float32
    ``(cycles, n_frames, size, size)`` for thermal, uint8 ``(cycles, n_frames, size, size, 3)`` for RGB.
    """
    if isinstance(n_frames, bool) or not isinstance(n_frames, int) or n_frames < 1:
        raise ValueError(f"n_frames = {n_frames!r} is invalid; it must be an integer >= 1")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size = {size!r} is invalid; it must be an integer >= 1")
    if not math.isfinite(pre_onset_s) or pre_onset_s < 0.0:
        raise ValueError(f"pre_onset_s = {pre_onset_s!r} is invalid; it must be a finite number >= 0 s")
    if window_s is not None and not (math.isfinite(window_s) and window_s > 0.0):
        raise ValueError(f"window_s = {window_s!r} is invalid; it must be None or a finite number > 0 s")
    height, width = recording.frames.shape[1:3]
    side = min(height, width)
    center_x, center_y = (width // 2, height // 2) if center is None else center
    left = int(np.clip(center_x - side // 2, 0, width - side))
    top = int(np.clip(center_y - side // 2, 0, height - side))

    thermal = recording.modality == "thermal"
    shape = (len(cycles), n_frames, size, size) + (() if thermal else (3,))
    clips = np.empty(shape, dtype=np.float32 if thermal else np.uint8)
    for index, cycle in enumerate(cycles):
        if cycle.end > recording.n_frames:
            raise ValueError(
                f"cycle {index} ends at frame {cycle.end}, past the recording's {recording.n_frames} frames; "
                "segment this recording again"
            )
        first = max(0, cycle.start - round(pre_onset_s * recording.fps))
        last = cycle.end - 1
        if window_s is not None:
            last = min(recording.n_frames, first + max(1, round(window_s * recording.fps))) - 1
        picks = np.rint(np.linspace(first, last, n_frames)).astype(int)
        for slot, frame_index in enumerate(picks):
            crop = recording.frames[frame_index, top : top + side, left : left + side]
            clips[index, slot] = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    return clips


def plot_signal(result: "SegmentationResult", path: str | os.PathLike) -> Path:
    """Write a PNG of the signal with accepted cycles (green) and rejected candidates (red, with reasons)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    times = np.arange(result.signal.size) / result.fps
    figure, axes = plt.subplots(figsize=(10, 3.5))
    axes.plot(times, result.signal, color="black", linewidth=0.8)
    for cycle in result.cycles:
        axes.axvspan(cycle.start / result.fps, cycle.end / result.fps, color="tab:green", alpha=0.25)
        axes.text(cycle.start / result.fps, result.signal.max(), f"q={cycle.quality:.2f}", fontsize=7, va="top")
    for candidate in result.rejected:
        axes.axvspan(candidate.start / result.fps, candidate.end / result.fps, color="tab:red", alpha=0.2, hatch="//")
        axes.text(candidate.start / result.fps, result.signal.min(), candidate.reason, fontsize=7, color="tab:red")
    axes.set_xlabel("time (s)")
    axes.set_ylabel(result.signal_units)
    axes.set_title(f"{len(result.cycles)} cycles, {len(result.rejected)} rejected ({result.modality})")
    figure.tight_layout()

    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        figure.savefig(temporary, format="png", dpi=100)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    finally:
        plt.close(figure)
    return path
