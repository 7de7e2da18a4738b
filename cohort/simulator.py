"""Seeded physiological cohort simulator: subjects, sessions of several blows, ground truth.

``simulate_cohort`` draws an adult clinic population (``cohort.sim_population``), a
session of several forced expirations per subject (``cohort.sim_session``) and renders
each session as one continuous thermal and one RGB recording (``cohort.sim_render``).
Subjects and blows are drawn at once. Frames are rendered only when a session is read
from ``SimulatedCohort.sessions``, so a large cohort costs memory only for the sessions
that the caller keeps.

Ground-truth cycles: for a blow with onset at ``t0`` s, ``Cycle.start`` is the first
frame whose time ``k / fps`` is >= ``t0``, and ``Cycle.end`` (exclusive) is the first
frame whose time is >= ``t0 + stop``. ``stop`` is when the flow, after its peak, first
falls below ``cycle_end_fraction * PEF``, or the forced expiratory time if that comes
first. The subject's reported spirometry follows ATS/ERS 2019: the largest FEV1, the
largest FVC and the largest PEF over the session's blows, and FEV1/FVC from those two.

All randomness comes from ``numpy.random.default_rng([seed, subject_index, stream])``,
so a subject's data do not depend on how many subjects are drawn or in which order the
sessions are read.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cohort.files import atomic_write
from cohort.recording import MODALITIES, Cycle, Recording
from cohort.sim_population import FIXED_RATIO_THRESHOLD, ReferenceValues, draw_physiology
from cohort.sim_render import mask_rise_with_inhalation, render_rgb, render_thermal
from cohort.sim_session import BlowTruth, SessionTimeline, draw_timeline
from cohort.thermal import FaceLayout, MaskHeating, ThermalScene, head_motion

logger = logging.getLogger(__name__)

LEPTON_FPS_HZ = 8.7
METADATA_COLUMNS = ("subject_id", "age", "sex", "height", "weight", "smoking", "pack_years",
                    "fev1", "fvc", "fev1_fvc", "pef")
_STREAM_PHYSIOLOGY = 0
_STREAM_TIMELINE = 1
_STREAM_RENDER = 2


def _invalid(name: str, value: object, allowed: str) -> ValueError:
    return ValueError(f"SimulationParameters.{name} = {value!r} is invalid; allowed: {allowed}")


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass(frozen=True)
class SimulationParameters:
    """Everything that determines a simulated cohort, checked in one place.

    Attributes:
        n_subjects: number of subjects, 1-10000.
        seed: seed of every random draw, an integer >= 0.
        fps: frame rate of both cameras, Hz, in (0, 240].
        size: frame (width, height) in pixels, each 32-4096.
        blows_per_session: (min, max) blows per session, drawn uniformly, 1 <= min <= max <= 10.
        modalities: recordings to render, a non-empty subset of ("thermal", "rgb").
        rest_s: (min, max) tidal breathing before each inhalation, s, 1-60.
        cycle_end_fraction: fraction of PEF below which a cycle ends, in (0, 0.5].
        netd_k: thermal noise standard deviation per pixel, K, 0-1.
    """

    n_subjects: int = 60
    seed: int = 0
    fps: float = LEPTON_FPS_HZ
    size: tuple[int, int] = (160, 128)
    blows_per_session: tuple[int, int] = (3, 5)
    modalities: tuple[str, ...] = MODALITIES
    rest_s: tuple[float, float] = (3.0, 6.0)
    cycle_end_fraction: float = 0.05
    netd_k: float = 0.05

    def __post_init__(self) -> None:
        if not _is_int(self.n_subjects) or not 1 <= self.n_subjects <= 10000:
            raise _invalid("n_subjects", self.n_subjects, "an integer 1-10000")
        if not _is_int(self.seed) or self.seed < 0:
            raise _invalid("seed", self.seed, "an integer >= 0")
        if not (isinstance(self.fps, (int, float)) and math.isfinite(self.fps) and 0.0 < self.fps <= 240.0):
            raise _invalid("fps", self.fps, "a number in (0, 240] Hz")
        if len(self.size) != 2 or not all(_is_int(v) and 32 <= v <= 4096 for v in self.size):
            raise _invalid("size", self.size, "(width, height), integers 32-4096 pixels")
        low, high = self.blows_per_session
        if not (_is_int(low) and _is_int(high) and 1 <= low <= high <= 10):
            raise _invalid("blows_per_session", self.blows_per_session, "(min, max) integers with 1 <= min <= max <= 10")
        if not self.modalities or not set(self.modalities) <= set(MODALITIES) or len(set(self.modalities)) != len(self.modalities):
            raise _invalid("modalities", self.modalities, f"a non-empty subset of {MODALITIES} without repeats")
        if len(self.rest_s) != 2 or not 1.0 <= self.rest_s[0] <= self.rest_s[1] <= 60.0:
            raise _invalid("rest_s", self.rest_s, "(min, max) seconds with 1 <= min <= max <= 60")
        if not (math.isfinite(self.cycle_end_fraction) and 0.0 < self.cycle_end_fraction <= 0.5):
            raise _invalid("cycle_end_fraction", self.cycle_end_fraction, "a fraction in (0, 0.5]")
        if not (math.isfinite(self.netd_k) and 0.0 <= self.netd_k <= 1.0):
            raise _invalid("netd_k", self.netd_k, "0-1 K")

    def to_json(self) -> dict:
        """Return the parameters as plain JSON types (tuples become lists)."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


@dataclass(frozen=True)
class SimulatedSubject:
    """One simulated subject: metadata CSV fields, the disease model's label and reference values.

    ``fev1``, ``fvc``, ``fev1_fvc`` (ratio) and ``pef`` (L/s) are what a spirometer would
    report for the session (see the module docstring). ``obstructed`` is the disease
    model's label; ``fev1_fvc < 0.70`` (the fixed-ratio criterion) can differ from it
    for old subjects whose normal ratio is below 0.70.
    """

    subject_id: str
    age: float
    sex: str
    height_cm: float
    weight_kg: float
    smoking: str
    pack_years: float
    fev1: float
    fvc: float
    fev1_fvc: float
    pef: float
    obstructed: bool
    reference: ReferenceValues


@dataclass(frozen=True)
class SimulatedSession:
    """One rendered session and its ground truth.

    ``thermal`` and ``rgb`` are None for a modality that was not rendered. ``cycles[i]``
    and ``spirometry[i]`` belong to the same blow. ``mask_rise_k`` is the true mask
    temperature above rest per frame, K, and ``timeline.flow(t)`` the true flow, L/s.
    """

    subject: SimulatedSubject
    thermal: Recording | None
    rgb: Recording | None
    cycles: tuple[Cycle, ...]
    spirometry: tuple[BlowTruth, ...]
    timeline: SessionTimeline
    mask_rise_k: np.ndarray


class SessionSequence(Sequence):
    """Read-only sequence of sessions that renders (or loads) a session when it is indexed.

    Each access calls the loader again; keep the returned session to reuse its frames.
    """

    def __init__(self, count: int, loader: Callable[[int], SimulatedSession]) -> None:
        self._count = count
        self._loader = loader

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index):  # noqa: ANN001 - int or slice, as Sequence defines it
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._count))]
        if not -self._count <= index < self._count:
            raise IndexError(f"session index {index} is out of range for {self._count} sessions")
        return self._loader(index % self._count)

    def __iter__(self) -> Iterator[SimulatedSession]:
        for index in range(self._count):
            yield self._loader(index)


@dataclass(frozen=True)
class SimulatedCohort:
    """Subjects, their lazily rendered sessions, the seed and all parameters."""

    subjects: tuple[SimulatedSubject, ...]
    sessions: SessionSequence
    seed: int
    parameters: SimulationParameters

    @property
    def fixed_ratio_obstructed_fraction(self) -> float:
        """Fraction of subjects with reported FEV1/FVC < 0.70."""
        return sum(s.fev1_fvc < FIXED_RATIO_THRESHOLD for s in self.subjects) / len(self.subjects)


@dataclass(frozen=True)
class _SubjectPlan:
    subject: SimulatedSubject
    timeline: SessionTimeline


def _plan_subject(index: int, parameters: SimulationParameters) -> _SubjectPlan:
    physiology = draw_physiology(np.random.default_rng([parameters.seed, index, _STREAM_PHYSIOLOGY]))
    rng = np.random.default_rng([parameters.seed, index, _STREAM_TIMELINE])
    tau_slow = rng.uniform(1.0, 4.0)
    n_blows = int(rng.integers(parameters.blows_per_session[0], parameters.blows_per_session[1] + 1))
    timeline = draw_timeline(
        fvc=physiology.fvc,
        fev1_fvc=physiology.fev1_fvc,
        pef=physiology.pef,
        tau_slow=tau_slow,
        n_blows=n_blows,
        rest_range_s=parameters.rest_s,
        end_fraction=parameters.cycle_end_fraction,
        rng=rng,
    )
    best_fev1 = max(blow.fev1 for blow in timeline.blows)
    best_fvc = max(blow.fvc for blow in timeline.blows)
    subject = SimulatedSubject(
        subject_id=f"SIM{index + 1:04d}",
        age=physiology.age,
        sex=physiology.sex,
        height_cm=physiology.height_cm,
        weight_kg=physiology.weight_kg,
        smoking=physiology.smoking,
        pack_years=physiology.pack_years,
        fev1=best_fev1,
        fvc=best_fvc,
        fev1_fvc=best_fev1 / best_fvc,
        pef=max(blow.pef for blow in timeline.blows),
        obstructed=physiology.obstructed,
        reference=physiology.reference,
    )
    return _SubjectPlan(subject=subject, timeline=timeline)


def truth_cycles(timeline: SessionTimeline, fps: float, n_frames: int) -> tuple[Cycle, ...]:
    """Convert the blows of ``timeline`` to frame cycles as defined in the module docstring."""
    cycles = []
    for blow in timeline.blows:
        start = int(math.ceil(blow.onset_s * fps - 1e-9))
        end = min(int(math.ceil((blow.onset_s + blow.stop_s) * fps - 1e-9)), n_frames)
        cycles.append(Cycle(start=start, end=max(end, start + 1)))
    return tuple(cycles)


def render_session(
    plan: _SubjectPlan, index: int, parameters: SimulationParameters, *, frames: bool = True
) -> SimulatedSession:
    """Render the recordings of one planned subject (only its truth when ``frames`` is False).

    Scene draws are estimates unless a source is named. Room 22-24 degC, skin
    33.5-34.5 degC, resting mask 30-60 % of the way from room to skin. Exhaled air
    31-35 degC (Popov et al., Respir Med 2007) plus 0-2 K condensation heating. Warming
    tau 0.2-0.5 s, cooling tau 5-10 s. Room drift up to 0.01 K/s, background gradient
    up to 0.3 K, head sway 0.5-1.5 px per 160 px of frame width.
    """
    rng = np.random.default_rng([parameters.seed, index, _STREAM_RENDER])
    width, height = parameters.size
    timeline = plan.timeline
    n_frames = max(int(timeline.duration_s * parameters.fps), 1)
    times_s = np.arange(n_frames, dtype=np.float64) / parameters.fps

    ambient_c = rng.uniform(22.0, 24.0)
    skin_c = rng.uniform(33.5, 34.5)
    mask_rest_c = ambient_c + rng.uniform(0.3, 0.6) * (skin_c - ambient_c)
    heating = MaskHeating(
        excess_k=rng.uniform(31.0, 35.0) + rng.uniform(0.0, 2.0) - mask_rest_c,
        tau_warm=rng.uniform(0.2, 0.5),
        tau_cool=rng.uniform(5.0, 10.0),
    )
    scene = ThermalScene(
        ambient_c=ambient_c,
        skin_c=skin_c,
        mask_rest_c=mask_rest_c,
        ambient_drift_k_per_s=rng.uniform(-0.01, 0.01),
        background_gradient_k=rng.uniform(-0.3, 0.3),
        netd_k=parameters.netd_k,
    )
    layout = FaceLayout()
    offsets = head_motion(times_s, rng.uniform(0.5, 1.5) * width / 160.0, rng)
    rise_k = mask_rise_with_inhalation(timeline, times_s, heating, ambient_c - mask_rest_c).astype(np.float32)
    subject_id = plan.subject.subject_id
    notes = [f"simulated by cohort.simulator, seed {parameters.seed}, subject index {index}"]

    thermal = None
    if frames and "thermal" in parameters.modalities:
        pixels = render_thermal(width=width, height=height, times_s=times_s, mask_rise_k=rise_k, scene=scene,
                                layout=layout, head_offsets_px=offsets, rng=rng)
        thermal = Recording(frames=pixels, fps=parameters.fps, modality="thermal", subject_id=subject_id, notes=list(notes))
    rgb = None
    if frames and "rgb" in parameters.modalities:
        relative_flow = timeline.flow(times_s) / heating.reference_flow
        pixels = render_rgb(width=width, height=height, relative_flow=relative_flow, layout=layout,
                            head_offsets_px=offsets, rng=rng)
        rgb = Recording(frames=pixels, fps=parameters.fps, modality="rgb", subject_id=subject_id, notes=list(notes))
    return SimulatedSession(
        subject=plan.subject,
        thermal=thermal,
        rgb=rgb,
        cycles=truth_cycles(timeline, parameters.fps, n_frames),
        spirometry=timeline.blows,
        timeline=timeline,
        mask_rise_k=rise_k,
    )


def plan_cohort(parameters: SimulationParameters) -> tuple[_SubjectPlan, ...]:
    """Draw every subject and session timeline, without rendering any frame."""
    return tuple(_plan_subject(index, parameters) for index in range(parameters.n_subjects))


def simulate_cohort(
    n_subjects: int = 60,
    *,
    seed: int = 0,
    fps: float = LEPTON_FPS_HZ,
    size: tuple[int, int] = (160, 128),
    blows_per_session: tuple[int, int] = (3, 5),
    modalities: tuple[str, ...] = MODALITIES,
    rest_s: tuple[float, float] = (3.0, 6.0),
    cycle_end_fraction: float = 0.05,
    netd_k: float = 0.05,
) -> SimulatedCohort:
    """Simulate a cohort; the same arguments give the same cohort.

    ``size`` is (width, height) in pixels. See ``SimulationParameters`` for the allowed
    ranges; a value outside them raises ValueError naming the field.
    """
    parameters = SimulationParameters(
        n_subjects=n_subjects, seed=seed, fps=fps, size=tuple(size), blows_per_session=tuple(blows_per_session),
        modalities=tuple(modalities), rest_s=tuple(rest_s), cycle_end_fraction=cycle_end_fraction, netd_k=netd_k,
    )
    return cohort_from_parameters(parameters)


def cohort_from_parameters(
    parameters: SimulationParameters,
    *,
    loader: Callable[[int], SimulatedSession] | None = None,
    plans: tuple[_SubjectPlan, ...] | None = None,
) -> SimulatedCohort:
    """Build a cohort from checked parameters; ``loader`` replaces rendering (used by the cache)."""
    if plans is None:
        plans = plan_cohort(parameters)
    if loader is None:
        def loader(index: int) -> SimulatedSession:
            return render_session(plans[index], index, parameters)

    subjects = tuple(plan.subject for plan in plans)
    obstructed = sum(s.fev1_fvc < FIXED_RATIO_THRESHOLD for s in subjects)
    logger.info("planned %d subjects (seed %d): %d with FEV1/FVC < 0.70",
                len(subjects), parameters.seed, obstructed)
    return SimulatedCohort(subjects=subjects, sessions=SessionSequence(len(plans), loader),
                           seed=parameters.seed, parameters=parameters)


def write_metadata_csv(cohort: SimulatedCohort, path: str | Path) -> Path:
    """Write the subjects' metadata CSV atomically and return its path.

    Columns: ``METADATA_COLUMNS``. Volumes are in L, PEF in L/s, height in cm and weight
    in kg. ``pack_years`` is empty for never-smokers, as the metadata reader requires.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write_rows(temporary: str) -> None:
        with open(temporary, "w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream)
            writer.writerow(METADATA_COLUMNS)
            for s in cohort.subjects:
                pack_years = "" if s.smoking == "never" else f"{s.pack_years:.1f}"
                writer.writerow([s.subject_id, f"{s.age:.1f}", s.sex, f"{s.height_cm:.1f}", f"{s.weight_kg:.1f}",
                                 s.smoking, pack_years, f"{s.fev1:.3f}", f"{s.fvc:.3f}", f"{s.fev1_fvc:.4f}",
                                 f"{s.pef:.3f}"])

    atomic_write(path, write_rows)
    logger.info("wrote metadata of %d subjects to %s", len(cohort.subjects), path)
    return path


def default_cohort(
    cache_dir: str | Path | None = None,
    *,
    n_subjects: int = 12,
    seed: int = 0,
    parameters: SimulationParameters | None = None,
) -> SimulatedCohort:
    """Return the cached default cohort; see ``cohort.sim_cache.default_cohort``."""
    from cohort.sim_cache import default_cohort as cached_cohort  # sim_cache imports this module

    return cached_cohort(cache_dir, n_subjects=n_subjects, seed=seed, parameters=parameters)
