"""Scoring of detected breathing cycles against ground-truth cycles.

Matching rule: a detected and a true cycle may match when their start frames differ by
at most ``tolerance_frames``. Pairs are taken greedily in order of increasing start
distance (ties broken by the earlier detected cycle, then the earlier true cycle), and
each cycle is matched at most once. This greedy order is optimal whenever no cycle
sits within the tolerance of two others, which holds for blows seconds apart.

Empty cases: precision is 1.0 when nothing was detected, and recall is 1.0 when there is
no true cycle. F1 is 0.0 when precision and recall are both 0. Boundary errors are NaN
when nothing matched.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from cohort.recording import Cycle, Recording
from cohort.synthetic import BreathingClip

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmentationScore:
    """Detection scores; the boundary errors are mean absolute frame differences over matched pairs."""

    precision: float
    recall: float
    f1: float
    true_positives: int
    false_positives: int
    false_negatives: int
    mean_start_error_frames: float
    mean_end_error_frames: float


def match_cycles(detected: list[Cycle], truth: list[Cycle], *, tolerance_frames: int) -> list[tuple[int, int]]:
    """Return matched (detected index, true index) pairs under the module's matching rule."""
    if isinstance(tolerance_frames, bool) or not isinstance(tolerance_frames, int) or tolerance_frames < 0:
        raise ValueError(f"tolerance_frames = {tolerance_frames!r} is invalid; it must be an integer >= 0")
    candidates = sorted(
        (abs(found.start - true.start), found_index, true_index)
        for found_index, found in enumerate(detected)
        for true_index, true in enumerate(truth)
        if abs(found.start - true.start) <= tolerance_frames
    )
    used_detected: set[int] = set()
    used_truth: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for _, found_index, true_index in candidates:
        if found_index in used_detected or true_index in used_truth:
            continue
        used_detected.add(found_index)
        used_truth.add(true_index)
        pairs.append((found_index, true_index))
    return sorted(pairs)


def score_segmentation(detected: list[Cycle], truth: list[Cycle], *, tolerance_frames: int) -> SegmentationScore:
    """Score ``detected`` against ``truth`` (see the module docstring for the rule)."""
    pairs = match_cycles(detected, truth, tolerance_frames=tolerance_frames)
    true_positives = len(pairs)
    false_positives = len(detected) - true_positives
    false_negatives = len(truth) - true_positives
    precision = true_positives / len(detected) if detected else 1.0
    recall = true_positives / len(truth) if truth else 1.0
    f1 = 2.0 * precision * recall / (precision + recall) if precision + recall > 0.0 else 0.0
    if pairs:
        start_error = sum(abs(detected[d].start - truth[t].start) for d, t in pairs) / len(pairs)
        end_error = sum(abs(detected[d].end - truth[t].end) for d, t in pairs) / len(pairs)
    else:
        start_error = end_error = math.nan
    return SegmentationScore(
        precision=precision,
        recall=recall,
        f1=f1,
        true_positives=true_positives,
        false_positives=false_positives,
        false_negatives=false_negatives,
        mean_start_error_frames=float(start_error),
        mean_end_error_frames=float(end_error),
    )


def _flow_stop_s(clip: BreathingClip, end_fraction: float) -> float:
    """Time after onset at which the flow, past its peak, first falls below ``end_fraction`` of PEF, s."""
    times = np.arange(0.0, clip.frames.shape[0] / clip.fps, 0.005)
    flow = clip.flow_curve.flow(times)
    peak = int(np.argmax(flow))
    below = np.flatnonzero(flow[peak:] < end_fraction * flow[peak])
    return float(times[peak + below[0]]) if below.size else math.inf


def concatenate_clips(
    clips: list[BreathingClip],
    *,
    rest_frames: int = 0,
    height: int | None = None,
    end_fraction: float = 0.05,
    netd_k: float = 0.05,
    seed: int = 0,
) -> tuple[Recording, list[Cycle]]:
    """Join synthetic clips into one thermal recording and return it with its true cycles.

    After each clip come ``rest_frames`` frames of rest: the mean of the clip's frames
    before its onset plus fresh Gaussian noise of ``netd_k`` K, so the mask drops back to
    rest at once. A true cycle starts at the first frame at or after ``blow_onset_s``. It
    ends (exclusive) at the first frame at or after the time when the flow, past its peak,
    falls below ``end_fraction`` of PEF, or at the clip's end if that comes first. This is
    the rule of ``cohort.simulator``. ``height`` crops the rows symmetrically (for example
    640 x 640 clips to 640 x 512). All clips must share one frame rate and size.
    """
    if not clips:
        raise ValueError("clips must contain at least one clip, got an empty list")
    if isinstance(rest_frames, bool) or not isinstance(rest_frames, int) or rest_frames < 0:
        raise ValueError(f"rest_frames = {rest_frames!r} is invalid; it must be an integer >= 0")
    if not 0.0 < end_fraction < 1.0:
        raise ValueError(f"end_fraction = {end_fraction!r} is invalid; it must be in (0, 1)")
    fps = clips[0].fps
    size = clips[0].frames.shape[1]
    height = size if height is None else height
    if not 1 <= height <= size:
        raise ValueError(f"height = {height!r} is invalid; it must be in [1, {size}]")
    top = (size - height) // 2
    rng = np.random.default_rng(seed)

    parts: list[np.ndarray] = []
    truth: list[Cycle] = []
    offset = 0
    for index, clip in enumerate(clips):
        if clip.fps != fps or clip.frames.shape[1:] != clips[0].frames.shape[1:]:
            raise ValueError(f"clip {index} differs from clip 0 in frame rate or size; generate all with one ClipSpec")
        frames = clip.frames[:, top : top + height]
        onset = math.ceil(clip.blow_onset_s * fps - 1e-9)
        stop_s = clip.blow_onset_s + _flow_stop_s(clip, end_fraction)
        end = min(frames.shape[0], math.ceil(stop_s * fps - 1e-9)) if math.isfinite(stop_s) else frames.shape[0]
        truth.append(Cycle(offset + onset, offset + max(end, onset + 1)))
        parts.append(frames)
        offset += frames.shape[0]
        if rest_frames:
            rest = frames[: max(onset, 1)].mean(axis=0)
            noise = rng.standard_normal((rest_frames,) + rest.shape, dtype=np.float32)
            parts.append(rest[None] + np.float32(netd_k) * noise)
            offset += rest_frames
    recording = Recording(np.concatenate(parts), fps=fps, modality="thermal", subject_id="concatenated")
    return recording, truth
