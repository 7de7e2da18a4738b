"""Seeded generator of synthetic thermal clips of a person blowing into a mask.

A clip is one forced expiration filmed by a thermal camera: ``n_frames`` frames of
``size`` x ``size`` pixels, float32 temperatures in degC, shaped
``(frames, height, width)``. The frames are not normalised, so a consumer maps its own
temperature window to its input range.

Each clip starts with a short rest, then the subject blows. The flow follows the
two-compartment forced-expiration curve of ``cohort.flow``, derived from the
subject's FVC, FEV1 and PEF. That flow warms the mask as described in
``cohort.thermal``, and the camera adds NETD noise, background drift and head sway.

Sampling is uniform unless stated. Ranges come from the literature where a source is
named and are estimates otherwise:

* FEV1/FVC: 0.72-0.90 for normal subjects and 0.35-0.69 for obstructed ones. Healthy
  never-smokers average 0.817 +/- 0.051 and COPD patients 0.563 +/- 0.116 (Thorax
  cohort table). ``abnormal`` is FEV1/FVC < 0.70, the fixed-ratio criterion.
* FVC 2.5-5.5 L (estimate for adults). PEF is drawn from the range that the flow
  model reaches with a fast time constant of 0.25-0.6 s (estimate). 400 clips of
  seed 3 spanned 1.5-12.5 L/s.
* Blow-to-blow variation within a subject: PEF coefficient of variation 4.6 %
  (Chest 1995;107:156), FVC 2 % (estimate, similar to the ATS/ERS repeatability limit of 0.150 L),
  FEV1/FVC standard deviation 0.01 (estimate), kept on the subject's side of 0.70.
* Thermal scene: room 22-24 degC, facial skin 33.5-34.5 degC (estimate), exhaled air
  31-35 degC (Popov et al., Respir Med 2007), condensation heating 0-2 K (estimate),
  mask warming tau 0.2-0.5 s and cooling tau 5-10 s (estimates), camera NETD 50 mK
  (FLIR Lepton datasheet: < 50 mK), background drift up to 0.02 K/s and head sway up
  to 1.5 px (estimates).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from cohort.flow import ForcedExpiration, fit_forced_expiration, pef_range, single_compartment_tau
from cohort.thermal import (
    FaceLayout,
    MaskHeating,
    ThermalScene,
    head_motion,
    mask_temperature_rise,
    render_thermal_frames,
)

logger = logging.getLogger(__name__)

# FLIR Lepton cores run at 8.7 Hz. Keeping every second frame gives 30 frames over 6.9 s,
# which show about one second of rest and the first ~6 s of the blow (the shortest
# usual forced expiratory time).
DEFAULT_FPS_HZ = 8.7 / 2
ABNORMAL_FEV1_FVC = 0.70
NORMAL_FEV1_FVC_RANGE = (0.72, 0.90)
ABNORMAL_FEV1_FVC_RANGE = (0.35, 0.69)
FVC_RANGE_L = (2.5, 5.5)
TAU_FAST_RANGE_S = (0.25, 0.6)
TAU_SLOW_RANGE_S = (1.0, 4.0)
TAU_RISE_RANGE_S = (0.02, 0.05)
PEF_BLOW_CV = 0.046
FVC_BLOW_CV = 0.02
FEV1_FVC_BLOW_SD = 0.01
# The blow starts after this fraction of the clip: 0.7-1.2 s at the default rate.
ONSET_FRACTION_RANGE = (0.10, 0.18)


@dataclass(frozen=True)
class ClipSpec:
    """Shape and camera of the generated clips.

    Attributes:
        n_frames: frames per clip, at least 2.
        size: height and width of a frame in pixels, at least 16.
        fps: frame rate in Hz. The clip lasts ``n_frames / fps`` seconds.
        netd_k: camera noise (NETD), standard deviation per pixel, K.
    """

    n_frames: int = 30
    size: int = 224
    fps: float = DEFAULT_FPS_HZ
    netd_k: float = 0.05

    def __post_init__(self) -> None:
        if isinstance(self.n_frames, bool) or not isinstance(self.n_frames, int) or self.n_frames < 2:
            raise ValueError(f"n_frames must be an integer >= 2, got {self.n_frames!r}")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 16:
            raise ValueError(f"size must be an integer >= 16, got {self.size!r}")
        if not math.isfinite(self.fps) or not 0.0 < self.fps <= 1000.0:
            raise ValueError(f"fps must be in (0, 1000] Hz, got {self.fps!r}")
        if not math.isfinite(self.netd_k) or not 0.0 <= self.netd_k <= 1.0:
            raise ValueError(f"netd_k must be in [0, 1] K, got {self.netd_k!r}")

    @property
    def duration_s(self) -> float:
        """Length of a clip, s."""
        return self.n_frames / self.fps

    def frame_times(self) -> np.ndarray:
        """Return the time of each frame in s, starting at 0."""
        return np.arange(self.n_frames, dtype=np.float64) / self.fps


@dataclass(frozen=True)
class BreathingClip:
    """One synthetic clip and its ground truth.

    Attributes:
        frames: temperatures in degC, float32 ``(frames, height, width)``.
        subject_id: index of the subject, shared by the clips of one subject.
        fev1: forced expiratory volume in 1 s, L.
        fvc: forced vital capacity, L.
        fev1_fvc: FEV1/FVC ratio.
        pef: peak expiratory flow, L/s.
        abnormal: True when ``fev1_fvc < 0.70``.
        fps: frame rate, Hz.
        blow_onset_s: time of the start of the blow from the first frame, s.
        mask_rise_k: true mask temperature above rest per frame, K, float32 ``(frames,)``.
        flow_curve: the forced-expiration curve of this blow, whose time 0 is ``blow_onset_s``.
    """

    frames: np.ndarray
    subject_id: int
    fev1: float
    fvc: float
    fev1_fvc: float
    pef: float
    abnormal: bool
    fps: float
    blow_onset_s: float
    mask_rise_k: np.ndarray
    flow_curve: ForcedExpiration


@dataclass(frozen=True)
class ClipBatch:
    """Clips stacked for training: ``frames`` is float32 ``(N, frames, height, width)`` in degC.

    ``labels`` is int64 ``(N,)``, 1 for abnormal (FEV1/FVC < 0.70) and 0 otherwise.
    ``pef`` (L/s), ``fev1_fvc``, ``fev1`` (L) and ``fvc`` (L) are float32 ``(N,)``.
    """

    frames: np.ndarray
    labels: np.ndarray
    pef: np.ndarray
    fev1_fvc: np.ndarray
    fev1: np.ndarray
    fvc: np.ndarray
    subject_ids: np.ndarray
    fps: float


@dataclass(frozen=True)
class _Subject:
    """Per-subject draws that every clip of the subject shares."""

    subject_id: int
    abnormal: bool
    fvc: float
    fev1_fvc: float
    pef: float
    tau_slow: float
    tau_rise: float
    scene: ThermalScene
    heating: MaskHeating
    sway_px: float


def _ratio_range(abnormal: bool) -> tuple[float, float]:
    return ABNORMAL_FEV1_FVC_RANGE if abnormal else NORMAL_FEV1_FVC_RANGE


def _reachable_pef(fvc: float, fev1_fvc: float, tau_slow: float, tau_rise: float) -> tuple[float, float]:
    longest = min(TAU_FAST_RANGE_S[1], single_compartment_tau(fev1_fvc=fev1_fvc, tau_rise=tau_rise))
    return pef_range(
        fvc=fvc,
        fev1_fvc=fev1_fvc,
        tau_slow=tau_slow,
        tau_rise=tau_rise,
        tau_fast_bounds=(TAU_FAST_RANGE_S[0], longest),
    )


def _draw_subject(subject_id: int, abnormal: bool, netd_k: float, rng: np.random.Generator) -> _Subject:
    fvc = rng.uniform(*FVC_RANGE_L)
    fev1_fvc = rng.uniform(*_ratio_range(abnormal))
    tau_rise = rng.uniform(*TAU_RISE_RANGE_S)
    # tau_slow must exceed the one-compartment tau of the ratio, or the ratio is out of reach.
    shortest_slow = max(TAU_SLOW_RANGE_S[0], single_compartment_tau(fev1_fvc=fev1_fvc, tau_rise=tau_rise) + 0.2)
    tau_slow = rng.uniform(shortest_slow, max(TAU_SLOW_RANGE_S[1], shortest_slow + 0.5))
    pef = rng.uniform(*_reachable_pef(fvc, fev1_fvc, tau_slow, tau_rise))

    ambient_c = rng.uniform(22.0, 24.0)
    skin_c = rng.uniform(33.5, 34.5)
    mask_rest_c = ambient_c + rng.uniform(0.3, 0.6) * (skin_c - ambient_c)
    exhaled_c = rng.uniform(31.0, 35.0)
    condensation_k = rng.uniform(0.0, 2.0)
    heating = MaskHeating(
        excess_k=exhaled_c + condensation_k - mask_rest_c,
        tau_warm=rng.uniform(0.2, 0.5),
        tau_cool=rng.uniform(5.0, 10.0),
    )
    scene = ThermalScene(ambient_c=ambient_c, skin_c=skin_c, mask_rest_c=mask_rest_c, netd_k=netd_k)
    return _Subject(
        subject_id=subject_id,
        abnormal=abnormal,
        fvc=fvc,
        fev1_fvc=fev1_fvc,
        pef=pef,
        tau_slow=tau_slow,
        tau_rise=tau_rise,
        scene=scene,
        heating=heating,
        sway_px=rng.uniform(0.5, 1.5),
    )


def _draw_blow(subject: _Subject, rng: np.random.Generator) -> ForcedExpiration:
    """Draw one blow of ``subject`` with blow-to-blow variation and fit its flow curve."""
    fvc = subject.fvc * (1.0 + FVC_BLOW_CV * rng.standard_normal())
    low_ratio, high_ratio = _ratio_range(subject.abnormal)
    fev1_fvc = float(np.clip(subject.fev1_fvc + FEV1_FVC_BLOW_SD * rng.standard_normal(), low_ratio, high_ratio))
    low_pef, high_pef = _reachable_pef(fvc, fev1_fvc, subject.tau_slow, subject.tau_rise)
    pef = float(np.clip(subject.pef * (1.0 + PEF_BLOW_CV * rng.standard_normal()), low_pef, high_pef))
    return fit_forced_expiration(
        fvc=fvc, fev1=fev1_fvc * fvc, pef=pef, tau_slow=subject.tau_slow, tau_rise=subject.tau_rise
    )


def _render_blow(
    subject: _Subject, curve: ForcedExpiration, spec: ClipSpec, layout: FaceLayout, rng: np.random.Generator
) -> BreathingClip:
    times = spec.frame_times()
    onset_s = rng.uniform(*ONSET_FRACTION_RANGE) * spec.duration_s
    rise_k = mask_temperature_rise(lambda t: curve.flow(t - onset_s), times, subject.heating)
    scene = ThermalScene(
        ambient_c=subject.scene.ambient_c,
        skin_c=subject.scene.skin_c,
        mask_rest_c=subject.scene.mask_rest_c,
        ambient_drift_k_per_s=rng.uniform(-0.02, 0.02),
        background_gradient_k=rng.uniform(-0.3, 0.3),
        netd_k=subject.scene.netd_k,
    )
    frames = render_thermal_frames(
        size=spec.size,
        times_s=times,
        mask_rise_k=rise_k,
        scene=scene,
        layout=layout,
        head_offsets_px=head_motion(times, subject.sway_px, rng),
        rng=rng,
    )
    fev1_fvc = curve.fev1_fvc
    return BreathingClip(
        frames=frames,
        subject_id=subject.subject_id,
        fev1=curve.fev1,
        fvc=curve.fvc,
        fev1_fvc=fev1_fvc,
        pef=curve.pef,
        abnormal=fev1_fvc < ABNORMAL_FEV1_FVC,
        fps=spec.fps,
        blow_onset_s=float(onset_s),
        mask_rise_k=rise_k.astype(np.float32),
        flow_curve=curve,
    )


def generate_clips(
    n_clips: int,
    *,
    seed: int,
    spec: ClipSpec | None = None,
    clips_per_subject: int = 2,
    abnormal_fraction: float = 0.5,
    layout: FaceLayout | None = None,
) -> list[BreathingClip]:
    """Generate ``n_clips`` synthetic clips, the same ones for the same arguments.

    Subjects get ``clips_per_subject`` consecutive clips each (the last subject may get
    fewer). ``round(n_subjects * abnormal_fraction)`` subjects are obstructed, chosen at
    random. All randomness comes from ``numpy.random.default_rng(seed)``.

    Args:
        n_clips: number of clips, at least 1.
        seed: seed of the random generator.
        spec: frame count, frame size, frame rate and noise, ``ClipSpec()`` when None.
        clips_per_subject: blows per subject, at least 1.
        abnormal_fraction: fraction of obstructed subjects, in [0, 1].
        layout: face and mask geometry, ``FaceLayout()`` when None.

    Raises:
        ValueError: naming the argument that is out of range.
    """
    if isinstance(n_clips, bool) or not isinstance(n_clips, int) or n_clips < 1:
        raise ValueError(f"n_clips must be an integer >= 1, got {n_clips!r}")
    if isinstance(clips_per_subject, bool) or not isinstance(clips_per_subject, int) or clips_per_subject < 1:
        raise ValueError(f"clips_per_subject must be an integer >= 1, got {clips_per_subject!r}")
    if not 0.0 <= abnormal_fraction <= 1.0:
        raise ValueError(f"abnormal_fraction must be in [0, 1], got {abnormal_fraction!r}")
    spec = ClipSpec() if spec is None else spec
    layout = FaceLayout() if layout is None else layout
    rng = np.random.default_rng(seed)

    n_subjects = math.ceil(n_clips / clips_per_subject)
    n_abnormal = math.floor(n_subjects * abnormal_fraction + 0.5)
    abnormal_flags = np.zeros(n_subjects, dtype=bool)
    abnormal_flags[:n_abnormal] = True
    rng.shuffle(abnormal_flags)

    clips: list[BreathingClip] = []
    for subject_id, abnormal in enumerate(abnormal_flags):
        subject = _draw_subject(subject_id, bool(abnormal), spec.netd_k, rng)
        for _ in range(min(clips_per_subject, n_clips - len(clips))):
            curve = _draw_blow(subject, rng)
            clips.append(_render_blow(subject, curve, spec, layout, rng))
    logger.debug("generated %d clips of %d subjects (%d obstructed), seed %s", len(clips), n_subjects, n_abnormal, seed)
    return clips


def stack_clips(clips: list[BreathingClip]) -> ClipBatch:
    """Stack clips of equal shape and frame rate into a ``ClipBatch``."""
    if not clips:
        raise ValueError("clips must contain at least one clip, got an empty list")
    shape = clips[0].frames.shape
    fps = clips[0].fps
    for index, clip in enumerate(clips):
        if clip.frames.shape != shape or clip.fps != fps:
            raise ValueError(
                f"clip {index} has shape {clip.frames.shape} at {clip.fps} Hz, but clip 0 has "
                f"{shape} at {fps} Hz. Generate all clips with one ClipSpec."
            )
    return ClipBatch(
        frames=np.stack([clip.frames for clip in clips]),
        labels=np.array([int(clip.abnormal) for clip in clips], dtype=np.int64),
        pef=np.array([clip.pef for clip in clips], dtype=np.float32),
        fev1_fvc=np.array([clip.fev1_fvc for clip in clips], dtype=np.float32),
        fev1=np.array([clip.fev1 for clip in clips], dtype=np.float32),
        fvc=np.array([clip.fvc for clip in clips], dtype=np.float32),
        subject_ids=np.array([clip.subject_id for clip in clips], dtype=np.int64),
        fps=fps,
    )
