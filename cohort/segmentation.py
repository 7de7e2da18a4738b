"""Automatic segmentation of a continuous recording into breathing cycles (blows).

Pipeline, all on a downsampled copy of the frames (block means from ``cv2.INTER_AREA``,
long side at most ``SegmentConfig.roi_side_px``)::

    frames -> downsample -> per-pixel traces -> signal region -> 1-D signal -> cycles

Traces and signal:

* thermal: a pixel's trace is its temperature. The signal is the mean temperature of the
  region per frame, in degC. The mask integrates the flow: it warms during the blow and
  cools slowly afterwards.
* RGB: a pixel's trace is its absolute grey-level deviation from its median over the
  recording (the rest image, since blows fill a minority of frames). The signal is the
  mean of that deviation over the region, in grey levels (0-255). It follows the flow:
  it rises when the mask bulges or the chest moves and falls back at rest.

The region is one of the five largest connected components of the pixels whose trace
standard deviation reaches ``roi_fraction`` of the 99.5th percentile, after a 3x3
morphological opening. Head sway makes face edges about as variable as the warming
mask, so the component whose mean trace has the largest summed onset-level rises (in
noise sigmas) is chosen.

Onset: the frame-to-frame difference of the smoothed signal exceeds ``onset_threshold``
noise sigmas. From its largest difference the rise is followed back while differences
exceed both ``continue_threshold`` sigmas and ``onset_fraction`` of that largest one (so
a slow recovery after an inhalation is not counted). The onset is then re-found the same
way on the unsmoothed signal, because a centred average starts rising early. The noise
sigma is a median-absolute-deviation estimate over the whole recording.

End: thermal cycles end one frame after the warming peak, the maximum before the signal
drops by ``peak_drop_fraction`` of its rise. In the heating model of ``cohort.thermal``
the peak comes when the flow has fallen to about ``Q_ref * tau_warm / tau_cool`` (a few
percent of PEF), so it only roughly marks the end of the flow. RGB cycles end at the first frame after the peak where the signal is
back within ``return_fraction`` of its rise above the baseline. A cycle never reaches past
the next onset. A new rise counts as a new blow only after the signal has dropped by
``split_drop_fraction`` of the rise, and otherwise continues the current blow.

Every candidate becomes a ``Cycle`` or a ``RejectedCandidate`` with a reason. Quality in
[0, 1] is the product of an SNR term ``1 - exp(-rise_snr / quality_snr_scale)`` and a
shape term: the net rise from onset to peak over the summed absolute frame-to-frame
changes, which is 1 for a monotonic rise.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from cohort.cycle_clips import cut_clips, plot_signal
from cohort.recording import Cycle, Recording

__all__ = ["REJECTION_REASONS", "RejectedCandidate", "SegmentConfig", "SegmentationResult", "cut_clips",
           "plot_signal", "segment"]

logger = logging.getLogger(__name__)

TOO_SHORT = "too_short"
TOO_LONG = "too_long"
TOO_FLAT = "too_flat"
TRUNCATED_START = "truncated_start"
TRUNCATED_END = "truncated_end"
INHALATION = "inhalation"
TOO_SMALL = "too_small"
REJECTION_REASONS = (TOO_SHORT, TOO_LONG, TOO_FLAT, TRUNCATED_START, TRUNCATED_END, INHALATION, TOO_SMALL)

SIGNAL_UNITS = {"thermal": "degC (region mean)", "rgb": "grey levels (region mean |deviation from rest|)"}
_MAD_TO_SIGMA = 1.4826
_FRACTIONS = ("onset_fraction", "peak_drop_fraction", "return_fraction", "split_drop_fraction", "roi_fraction")


@dataclass(frozen=True)
class SegmentConfig:
    """Settings of ``segment``. Thresholds in sigmas are relative to the recording's own noise.

    Attributes:
        min_cycle_s: shortest accepted cycle, s.
        max_cycle_s: longest accepted cycle, s.
        onset_threshold: frame-to-frame rise that starts a candidate, in noise sigmas.
        continue_threshold: rise that extends an onset backwards, in noise sigmas.
        onset_fraction: rise, as a fraction of the blow's largest one, that extends an onset backwards.
        min_rise_snr: smallest accepted rise (peak minus baseline) over the signal noise sigma.
        smoothing_s: width of the centred moving average applied to the signal, s.
        baseline_s: rest before the onset whose median is the cycle's baseline, s.
        peak_drop_fraction: share of the rise the signal must lose after a peak to confirm it.
        return_fraction: RGB only, level above baseline (share of the rise) that ends a cycle.
        split_drop_fraction: share of the rise the signal must lose before a new rise is a new blow.
        roi_side_px: long side of the downsampled copy used for the region and the signal, px.
        roi_fraction: share of the 99.5th percentile of trace deviation that puts a pixel in the region.
        quality_snr_scale: rise SNR at which the SNR term of the quality is 1 - 1/e.
    """

    min_cycle_s: float = 0.5
    max_cycle_s: float = 20.0
    onset_threshold: float = 5.0
    continue_threshold: float = 2.0
    onset_fraction: float = 0.25
    min_rise_snr: float = 20.0
    smoothing_s: float = 0.2
    baseline_s: float = 0.5
    peak_drop_fraction: float = 0.1
    return_fraction: float = 0.1
    split_drop_fraction: float = 0.1
    roi_side_px: int = 80
    roi_fraction: float = 0.5
    quality_snr_scale: float = 50.0
    inhalation_gap_s: float = 2.0
    min_relative_rise: float = 0.4

    def __post_init__(self) -> None:
        for name in ("min_cycle_s", "max_cycle_s", "onset_threshold", "continue_threshold", "min_rise_snr",
                     "smoothing_s", "baseline_s", "quality_snr_scale", *_FRACTIONS):
            value = getattr(self, name)
            allowed = "(0, 1)" if name in _FRACTIONS else ">= 0"
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"SegmentConfig.{name} = {value!r} is invalid; allowed: a number {allowed}")
            if value < 0.0 or (name in _FRACTIONS and not 0.0 < value < 1.0):
                raise ValueError(f"SegmentConfig.{name} = {value!r} is out of range; allowed: {allowed}")
        if isinstance(self.roi_side_px, bool) or not isinstance(self.roi_side_px, int) or self.roi_side_px < 8:
            raise ValueError(f"SegmentConfig.roi_side_px = {self.roi_side_px!r} is invalid; allowed: an integer >= 8")
        if self.max_cycle_s <= self.min_cycle_s:
            raise ValueError(f"SegmentConfig.max_cycle_s = {self.max_cycle_s} is invalid; "
                             f"allowed: above min_cycle_s = {self.min_cycle_s}")
        if not 0.0 < self.continue_threshold <= self.onset_threshold:
            raise ValueError(f"SegmentConfig.continue_threshold = {self.continue_threshold} is invalid; "
                             f"allowed: (0, onset_threshold = {self.onset_threshold}]")
        if self.quality_snr_scale == 0.0:
            raise ValueError("SegmentConfig.quality_snr_scale = 0 is invalid; allowed: a number > 0")


@dataclass(frozen=True)
class RejectedCandidate:
    """A candidate cycle that was not accepted: frames [start, end), ``reason`` from ``REJECTION_REASONS``."""

    start: int
    end: int
    reason: str
    detail: str
    rise: float
    rise_snr: float


@dataclass(frozen=True)
class SegmentationResult:
    """Output of ``segment``.

    Attributes:
        fps: frame rate of the recording, Hz.
        modality: "thermal" or "rgb".
        signal: breathing signal per frame (smoothed), float64 ``(frames,)``, in ``signal_units``.
        signal_units: unit of ``signal`` (see the module docstring).
        region: signal region at full frame size, bool ``(height, width)``.
        region_box: bounding box of ``region`` as (x, y, width, height) in pixels.
        cycles: accepted cycles in frame order.
        rejected: rejected candidates in frame order.
        noise_sigma: noise standard deviation of ``signal`` (estimate), same unit.
        config: the settings used.
        notes: sentences about anything the caller should know (for example why nothing was found).
    """

    fps: float
    modality: str
    signal: np.ndarray
    signal_units: str
    region: np.ndarray
    region_box: tuple[int, int, int, int]
    cycles: list[Cycle]
    rejected: list[RejectedCandidate]
    noise_sigma: float
    config: SegmentConfig
    notes: list[str] = field(default_factory=list)


def _pixel_traces(recording: Recording, side_px: int) -> tuple[np.ndarray, int]:
    """Return float32 per-pixel traces ``(frames, h, w)`` of the downsampled frames and the factor.

    Thermal traces are temperatures. RGB traces are signed grey-level deviations from
    each pixel's median over the recording.
    """
    height, width = recording.frames.shape[1:3]
    factor = max(1, math.ceil(max(height, width) / side_px))
    small_size = (max(1, width // factor), max(1, height // factor))
    small = np.empty((recording.n_frames, small_size[1], small_size[0]), dtype=np.float32)
    for index, frame in enumerate(recording.frames):
        if factor > 1:
            frame = cv2.resize(frame, small_size, interpolation=cv2.INTER_AREA)
        if recording.modality == "rgb":
            frame = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
        small[index] = frame
    if recording.modality == "rgb":
        # The absolute deviation cannot tell inhalation from a blow; _split_inhalations
        # pairs them by timing instead.
        small -= np.median(small, axis=0)
    return small, factor


def _region_scores(activity: np.ndarray, modality: str) -> list[np.ndarray]:
    """Return per-pixel maps whose high regions are candidates for the signal region.

    Both modalities use the standard deviation over time.  Thermal adds a warming
    asymmetry: a blow warms the mask within a fraction of a second and it cools over
    seconds, while head motion sweeps the warm face edge back and forth with symmetric
    steps.  The 99th percentile of warming steps minus that of cooling steps therefore
    finds the mask when motion dominates the standard deviation.
    """
    scores = [activity.std(axis=0)]
    if modality == "thermal" and activity.shape[0] >= 3:
        steps = np.diff(activity, axis=0)
        scores.append(np.percentile(steps, 99, axis=0) - np.percentile(-steps, 99, axis=0))
    return scores


def _region_candidates(variability: np.ndarray, fraction: float, max_count: int = 5) -> list[np.ndarray]:
    """Return the largest connected components of high variability, largest first."""
    reference = float(np.percentile(variability, 99.5))
    if reference <= 0.0:
        return [np.ones(variability.shape, dtype=bool)]
    candidate = (variability >= fraction * reference).astype(np.uint8)
    opened = cv2.morphologyEx(candidate, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    if not opened.any():
        opened = candidate
    _, labels, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    order = 1 + np.argsort(-stats[1:, cv2.CC_STAT_AREA], kind="stable")
    return [labels == label for label in order[:max_count]]


def _smooth(signal: np.ndarray, window: int) -> np.ndarray:
    if window <= 1:
        return signal
    half = window // 2
    padded = np.pad(signal, (half, half), mode="edge")
    return np.convolve(padded, np.ones(2 * half + 1) / (2 * half + 1), mode="valid")


def _difference_sigma(values: np.ndarray, floor: float) -> float:
    """Estimate the noise sigma of the frame-to-frame differences (median absolute deviation)."""
    differences = np.diff(values)
    if differences.size == 0:
        return floor
    deviation = float(np.median(np.abs(differences - np.median(differences))))
    return max(_MAD_TO_SIGMA * deviation, floor)


def _onset_strength(raw: np.ndarray, window: int, threshold: float) -> float:
    """Sum of the frame-to-frame rises above ``threshold`` noise sigmas, in sigmas."""
    smoothed = _smooth(raw, window)
    in_sigmas = np.diff(smoothed) / _difference_sigma(smoothed, 1e-12)
    return float(in_sigmas[in_sigmas > threshold].sum())


def _walk_back(differences: np.ndarray, largest: int, low: int, sigma: float, config: SegmentConfig) -> int:
    """Return the first frame of the rise whose largest difference is ``differences[largest]``."""
    keep_above = max(config.continue_threshold * sigma, config.onset_fraction * differences[largest])
    index = largest
    while index > low and differences[index - 1] > keep_above:
        index -= 1
    # differences[j] = signal[j + 1] - signal[j], so frame j + 1 is the first warmer frame.
    return index + 1


def _rise_onsets(differences: np.ndarray, sigma: float, config: SegmentConfig) -> list[int]:
    """Return the onset of each run of rises above ``continue_threshold`` that contains an onset-level rise."""
    above = differences > config.continue_threshold * sigma
    edges = np.diff(np.concatenate(([0], above.astype(np.int8), [0])))
    onsets = []
    for first, stop in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
        largest = int(first) + int(np.argmax(differences[first:stop]))
        if differences[largest] > config.onset_threshold * sigma:
            onsets.append(_walk_back(differences, largest, int(first), sigma, config))
    return onsets


def _refine_onset(raw: np.ndarray, onset: int, half: int, raw_sigma: float, config: SegmentConfig) -> int:
    """Re-find an onset on the unsmoothed signal within ``half`` frames before to ``2 half`` after it."""
    differences = np.diff(raw)
    low = max(0, onset - half - 1)
    high = min(differences.size, onset + 2 * half + 1)
    if onset == 0 or high <= low:
        return onset
    largest = low + int(np.argmax(differences[low:high]))
    if differences[largest] <= config.onset_threshold * raw_sigma:
        return onset
    return _walk_back(differences, largest, low, raw_sigma, config)


def _group_blows(signal: np.ndarray, onsets: list[int], baseline_n: int, split: float) -> list[int]:
    """Drop onsets that continue the previous blow (no drop of ``split`` of its rise before them)."""
    blow_onsets: list[int] = []
    for onset in onsets:
        if blow_onsets and onset > blow_onsets[-1]:
            previous = blow_onsets[-1]
            base = float(np.median(signal[max(0, previous - baseline_n) : previous])) if previous else signal[0]
            peak = float(signal[previous:onset].max())
            if peak - float(signal[onset - 1]) < split * max(peak - base, 0.0):
                continue
        if not blow_onsets or onset > blow_onsets[-1]:
            blow_onsets.append(onset)
    return blow_onsets


def _peak_and_end(
    signal: np.ndarray, onset: int, stop: int, base: float, sigma: float, modality: str, config: SegmentConfig
) -> tuple[int, int, bool]:
    """Return the peak, the end (exclusive) and whether the end was seen before ``stop``."""
    part = signal[onset:stop]
    running_max = np.maximum.accumulate(part)
    needed = np.maximum(config.peak_drop_fraction * (running_max - base), config.onset_threshold * sigma)
    fell = np.flatnonzero(part < running_max - needed)
    peak = onset + int(np.argmax(part[: fell[0]] if fell.size else part))
    if modality == "thermal":
        # NOTE: against cohort.simulator's flow-based truth, mean ends per session were 1 to 44 frames
        # off at 8.7 Hz, because a broad warming peak only roughly marks the end of flow.
        return peak, peak + 1, bool(fell.size)
    back = np.flatnonzero(signal[peak + 1 : stop] <= base + config.return_fraction * (signal[peak] - base))
    if back.size:
        return peak, peak + 1 + int(back[0]), True
    return peak, stop, False


def _judge(
    signal: np.ndarray, onset: int, limit: int | None, sigma: float, fps: float, modality: str, config: SegmentConfig
) -> Cycle | RejectedCandidate:
    """Find the peak and end of the blow starting at ``onset`` and accept or reject it."""
    stop = signal.size if limit is None else limit
    baseline_n = max(1, round(config.baseline_s * fps))
    base = float(np.median(signal[max(0, onset - baseline_n) : onset])) if onset > 0 else float(signal[0])
    peak, end, seen = _peak_and_end(signal, onset, stop, base, sigma, modality, config)
    end = min(end, stop)
    rise = float(signal[peak]) - base
    rise_snr = rise / sigma
    length_s = (end - onset) / fps

    def reject(reason: str, detail: str) -> RejectedCandidate:
        return RejectedCandidate(onset, max(end, onset + 1), reason, detail, rise, rise_snr)

    if onset == 0:
        return reject(TRUNCATED_START, "the rise starts at frame 0, so the rest before it was not recorded")
    if not seen and limit is None:
        return reject(TRUNCATED_END, "the recording ended before the end of the cycle could be seen")
    if rise_snr < config.min_rise_snr:
        return reject(TOO_FLAT, f"rise {rise:.4g} is {rise_snr:.1f} noise sigmas, below min_rise_snr {config.min_rise_snr}")
    if length_s < config.min_cycle_s:
        return reject(TOO_SHORT, f"cycle lasts {length_s:.2f} s, below min_cycle_s {config.min_cycle_s} s")
    if length_s > config.max_cycle_s:
        return reject(TOO_LONG, f"cycle lasts {length_s:.2f} s, above max_cycle_s {config.max_cycle_s} s")

    path = float(np.abs(np.diff(signal[max(onset - 1, 0) : peak + 1])).sum())
    shape = min(1.0, max(rise, 0.0) / path) if path > 0.0 else 0.0
    snr_term = 1.0 - math.exp(-rise_snr / config.quality_snr_scale)
    return Cycle(onset, end, quality=float(np.clip(snr_term * shape, 0.0, 1.0)))


def _cycle_rise(signal: np.ndarray, cycle: Cycle, fps: float, config: SegmentConfig) -> float:
    baseline_n = max(1, round(config.baseline_s * fps))
    base = float(np.median(signal[max(0, cycle.start - baseline_n) : cycle.start])) if cycle.start > 0 else 0.0
    return float(signal[cycle.start : cycle.end].max()) - base


def _drop_small_rises(
    cycles: list[Cycle], signal: np.ndarray, sigma: float, fps: float, config: SegmentConfig
) -> tuple[list[Cycle], list[RejectedCandidate]]:
    """Reject thermal cycles whose warming is small beside the recording's largest.

    Tidal breaths warm the mask too, but a forced expiration moves several litres at
    several litres per second and warms it far more, so within one session a rise below
    ``min_relative_rise`` of the largest is taken as a tidal breath.
    """
    rises = [_cycle_rise(signal, cycle, fps, config) for cycle in cycles]
    largest = max(rises)
    kept: list[Cycle] = []
    small: list[RejectedCandidate] = []
    for cycle, rise in zip(cycles, rises):
        if largest > 0 and rise < config.min_relative_rise * largest:
            small.append(RejectedCandidate(
                start=cycle.start, end=cycle.end, reason=TOO_SMALL,
                detail=f"rise {rise:.3g} is {100 * rise / largest:.0f} % of the largest cycle's {largest:.3g}, below "
                       f"min_relative_rise {config.min_relative_rise}; taken as a tidal breath",
                rise=rise, rise_snr=rise / sigma if sigma > 0 else float("inf"),
            ))
        else:
            kept.append(cycle)
    return kept, small


def _split_inhalations(
    cycles: list[Cycle], signal: np.ndarray, sigma: float, fps: float, config: SegmentConfig
) -> tuple[list[Cycle], list[RejectedCandidate]]:
    """Separate the preparatory inhalation from each blow in an RGB signal.

    The RGB signal measures motion, and the maximal inhalation before a forced
    expiration moves the face as much as the blow.  Subjects are coached to blow right
    after the inhalation, with a pause of about 2 s at most (an estimate, the default
    ``inhalation_gap_s``).  So a cycle followed by another within that gap is taken as the
    inhalation of the pair, and the second one as its blow.  Pairs are formed from the
    start of the recording.
    """
    kept: list[Cycle] = []
    inhalations: list[RejectedCandidate] = []
    gap_frames = config.inhalation_gap_s * fps
    index = 0
    while index < len(cycles):
        cycle = cycles[index]
        following = cycles[index + 1] if index + 1 < len(cycles) else None
        if following is not None and following.start - cycle.end <= gap_frames:
            rise = float(np.ptp(signal[cycle.start:cycle.end]))
            inhalations.append(RejectedCandidate(
                start=cycle.start, end=cycle.end, reason=INHALATION,
                detail=f"followed by a cycle {(following.start - cycle.end) / fps:.1f} s later, within "
                       f"inhalation_gap_s {config.inhalation_gap_s}; taken as the inhalation before that blow",
                rise=rise, rise_snr=rise / sigma if sigma > 0 else float("inf"),
            ))
            kept.append(following)
            index += 2
            continue
        kept.append(cycle)
        index += 1
    return kept, inhalations


def segment(recording: Recording, config: SegmentConfig = SegmentConfig()) -> SegmentationResult:
    """Find the signal region, the breathing signal and the cycles of ``recording``."""
    traces, factor = _pixel_traces(recording, config.roi_side_px)
    activity = traces if recording.modality == "thermal" else np.abs(traces)
    window = max(1, round(config.smoothing_s * recording.fps))
    best_strength = -1.0
    candidates = []
    for score in _region_scores(activity, recording.modality):
        candidates += _region_candidates(score, config.roi_fraction)
    for component in candidates:
        trial = activity[:, component].mean(axis=1, dtype=np.float64)
        strength = _onset_strength(trial, window, config.onset_threshold)
        if strength > best_strength:
            best_strength, small_region, raw = strength, component, trial
    signal = _smooth(raw, window)

    floor = 1e-9 * (abs(float(np.median(signal))) + 1.0)
    sigma = _difference_sigma(signal, floor)
    signal_sigma = sigma / math.sqrt(2.0)
    raw_sigma = _difference_sigma(raw, floor)
    baseline_n = max(1, round(config.baseline_s * recording.fps))
    refined = [_refine_onset(raw, onset, window // 2, raw_sigma, config)
               for onset in _rise_onsets(np.diff(signal), sigma, config)]
    onsets = _group_blows(signal, refined, baseline_n, config.split_drop_fraction)

    cycles: list[Cycle] = []
    rejected: list[RejectedCandidate] = []
    for index, onset in enumerate(onsets):
        limit = onsets[index + 1] if index + 1 < len(onsets) else None
        outcome = _judge(signal, onset, limit, signal_sigma, recording.fps, recording.modality, config)
        (cycles if isinstance(outcome, Cycle) else rejected).append(outcome)

    if recording.modality == "thermal" and config.min_relative_rise > 0 and cycles:
        cycles, small = _drop_small_rises(cycles, signal, signal_sigma, recording.fps, config)
        rejected = sorted(rejected + small, key=lambda candidate: candidate.start)

    if recording.modality == "rgb" and config.inhalation_gap_s > 0:
        cycles, inhalations = _split_inhalations(cycles, signal, signal_sigma, recording.fps, config)
        rejected = sorted(rejected + inhalations, key=lambda candidate: candidate.start)

    notes: list[str] = []
    if not onsets:
        largest = float(np.diff(signal).max()) if signal.size > 1 else 0.0
        notes.append(f"no candidate: the largest frame-to-frame rise {largest:.4g} is {largest / sigma:.1f} "
                     f"noise sigmas, below onset_threshold {config.onset_threshold}")
    for candidate in rejected:
        logger.info("rejected frames [%d, %d): %s (%s)", candidate.start, candidate.end, candidate.reason, candidate.detail)

    region = np.zeros(recording.frames.shape[1:3], dtype=bool)
    block = np.repeat(np.repeat(small_region, factor, axis=0), factor, axis=1)
    region[: block.shape[0], : block.shape[1]] = block[: region.shape[0], : region.shape[1]]
    rows, columns = np.nonzero(region)
    box = (int(columns.min()), int(rows.min()), int(np.ptp(columns)) + 1, int(np.ptp(rows)) + 1)
    return SegmentationResult(
        fps=recording.fps, modality=recording.modality, signal=signal, signal_units=SIGNAL_UNITS[recording.modality],
        region=region, region_box=box, cycles=cycles, rejected=rejected, noise_sigma=signal_sigma, config=config,
        notes=notes,
    )
