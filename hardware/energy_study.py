"""Energy study: how the SNN's and the X3D-S CNN's costs grow with clip length, resolution and time steps.

The sweep varies one axis at a time around a base point:

- ``frames``: clip length in frames.  Every clip spans the same 6.9 s window
  (``hardware.workload.CLIP_WINDOW_S``), so more frames means a higher frame rate.
- ``resolution``: a pair (SNN input size, X3D input size) in pixels.  Both networks see
  the same clips, each resized to its own input size; the pairs are set by the caller.
- ``steps_per_frame``: SNN time steps per frame.  The CNN does not depend on it.

At each point the SNN (untrained, seeded) runs on rate-coded clips and is counted with
``hardware.counting.count_run``; the CNN's multiply-accumulates are counted with fvcore.
Both are timed on the CPU and measured for peak memory, and both are priced with
``hardware.energy.estimate_energy``.  All figures are per clip.

The cost growth is fitted as ``cost = a * work ** b`` by least squares in log-log space,
where *work* is the number of input elements a network receives per clip (SNN: time
steps x input pixels; CNN: frames x input pixels).
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from hardware.counting import count_run
from hardware.energy import EnergyConstant, estimate_energy
from hardware.measure import measure_latency, measure_peak_memory
from hardware.power_law import Crossover, PowerLawFit, find_crossover, fit_power_law
from hardware.workload import CLIP_PRE_ONSET_S, CLIP_SIZE_PX, CLIP_WINDOW_S, THERMAL_WINDOW_C, count_macs

logger = logging.getLogger(__name__)

AXES = ("frames", "resolution", "steps_per_frame")
MB = 1024 * 1024


@dataclass(frozen=True)
class StudyConfig:
    """Axes and base point of the sweep.

    ``resolutions`` lists (SNN input size, X3D input size) pairs in pixels; the SNN size
    must be a multiple of 8.  The base point must lie on every axis.
    """

    frames: tuple[int, ...] = (8, 16, 30, 60)
    resolutions: tuple[tuple[int, int], ...] = ((32, 56), (64, 112), (128, 160), (224, 224))
    steps_per_frame: tuple[int, ...] = (1, 2, 4, 8)
    base_frames: int = 16
    base_resolution: tuple[int, int] = (64, 112)
    base_steps_per_frame: int = 1
    clips: int = 4
    repeats: int = 5
    seed: int = 0
    backend: str = "reference"
    dt: float = 1e-3

    def __post_init__(self) -> None:
        def positive_ints(name: str, values) -> None:
            if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
                raise ValueError(f"StudyConfig.{name} = {values!r} is invalid; it must be integers >= 1")
            if len(set(values)) != len(values):
                raise ValueError(f"StudyConfig.{name} = {values!r} is invalid; values must not repeat")

        positive_ints("frames", self.frames)
        positive_ints("steps_per_frame", self.steps_per_frame)
        positive_ints("resolution SNN sizes", [pair[0] for pair in self.resolutions])
        positive_ints("resolution X3D sizes", [pair[1] for pair in self.resolutions])
        for snn_size, _ in self.resolutions:
            if snn_size < 8 or snn_size % 8:
                raise ValueError(f"StudyConfig.resolutions SNN size {snn_size} is invalid; it must be a multiple "
                                 "of 8, at least 8")
        for name, value, axis in (("base_frames", self.base_frames, self.frames),
                                  ("base_resolution", tuple(self.base_resolution), self.resolutions),
                                  ("base_steps_per_frame", self.base_steps_per_frame, self.steps_per_frame)):
            if value not in axis:
                raise ValueError(f"StudyConfig.{name} = {value!r} is invalid; it must be one of {list(axis)}")
        for name, value in (("clips", self.clips), ("repeats", self.repeats)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"StudyConfig.{name} = {value!r} is invalid; it must be an integer >= 1")
        if self.backend not in ("reference", "snntorch"):
            raise ValueError(f"StudyConfig.backend = {self.backend!r} is invalid; choose reference or snntorch")
        if not (math.isfinite(self.dt) and self.dt > 0):
            raise ValueError(f"StudyConfig.dt = {self.dt!r} is invalid; it must be a finite number of seconds > 0")

    def points(self) -> list["StudyPoint"]:
        """Return the sweep's points in order, each axis in turn; the base point appears on every axis."""
        points = []
        for frames in self.frames:
            points.append(StudyPoint("frames", frames, tuple(self.base_resolution), self.base_steps_per_frame))
        for pair in self.resolutions:
            points.append(StudyPoint("resolution", self.base_frames, tuple(pair), self.base_steps_per_frame))
        for steps in self.steps_per_frame:
            points.append(StudyPoint("steps_per_frame", self.base_frames, tuple(self.base_resolution), steps))
        return points


@dataclass(frozen=True)
class StudyPoint:
    """One point of the sweep: the axis it belongs to and the full set of inputs."""

    axis: str
    frames: int
    resolution: tuple[int, int]
    steps_per_frame: int

    @property
    def key(self) -> tuple[int, tuple[int, int], int]:
        return (self.frames, self.resolution, self.steps_per_frame)

    @property
    def axis_value(self) -> int:
        """Value of the swept variable: frames, SNN input size or steps per frame."""
        return {"frames": self.frames, "resolution": self.resolution[0],
                "steps_per_frame": self.steps_per_frame}[self.axis]

    @property
    def snn_steps(self) -> int:
        return self.frames * self.steps_per_frame

    @property
    def snn_input_elements(self) -> int:
        return self.snn_steps * self.resolution[0] ** 2

    @property
    def cnn_input_elements(self) -> int:
        return self.frames * self.resolution[1] ** 2


def study_clips(n_clips: int, frame_counts, *, seed: int) -> dict[int, np.ndarray]:
    """Cut ``n_clips`` thermal clips (degC, 224 x 224) per frame count from the simulated cohort.

    Every clip starts 1 s before a detected blow onset and lasts 6.9 s, resampled by
    nearest frame to the frame count, as ``hardware.workload.simulated_clips`` does for 30.
    """
    from cohort.segmentation import cut_clips, segment
    from cohort.simulator import default_cohort

    n_subjects = max(2, math.ceil(n_clips / 3))
    while True:
        cohort = default_cohort(n_subjects=n_subjects, seed=seed)
        cut: dict[int, list[np.ndarray]] = {count: [] for count in frame_counts}
        for session in cohort.sessions:
            cycles = segment(session.thermal).cycles
            for count in frame_counts:
                cut[count].extend(cut_clips(session.thermal, cycles, n_frames=count, size=CLIP_SIZE_PX,
                                            pre_onset_s=CLIP_PRE_ONSET_S, window_s=CLIP_WINDOW_S))
            if all(len(clips) >= n_clips for clips in cut.values()):
                return {count: np.stack(clips[:n_clips]) for count, clips in cut.items()}
        if n_subjects >= 4 * n_clips:
            raise ValueError(f"segmentation found too few clips in {n_subjects} simulated subjects")
        n_subjects *= 2


def snn_workload(point: StudyPoint, clips: np.ndarray, config: StudyConfig):
    """Return the untrained SNN's NIR graph and the rate-coded input spikes (T, B, 1, size, size) of a point."""
    from neuro.encoding import RateEncoder
    from neuro.model import PulmoSNN, SNNConfig
    from neuro.nir_io import model_to_nir

    model = PulmoSNN(SNNConfig(input_size=point.resolution[0], seed=config.seed, dt=config.dt))
    encoder = RateEncoder(size=point.resolution[0], steps_per_frame=point.steps_per_frame,
                          value_range=THERMAL_WINDOW_C, seed=config.seed)
    return model_to_nir(model), encoder.encode(clips).astype(np.float64)


def _measure(fn: Callable[[], object], repeats: int) -> tuple[object, dict]:
    """Run ``fn`` once for peak memory, then ``repeats`` times for latency; return its result and the figures."""
    memory = measure_peak_memory(fn)
    latency = measure_latency(fn, repeats=repeats, warmup=0)
    return memory.result, {"latency_median_s": latency.median_s, "latency_min_s": latency.min_s,
                           "latency_iqr_s": latency.iqr_s, "peak_memory_mb": memory.peak_bytes / MB,
                           "memory_increase_mb": memory.increase_bytes / MB}


def measure_snn(point: StudyPoint, clips: np.ndarray, config: StudyConfig, backend) -> dict:
    """Run, count, time and measure the SNN at one point; figures per clip."""
    graph, spikes = snn_workload(point, clips, config)
    run, figures = _measure(lambda: backend.run(graph, spikes, config.dt), config.repeats)
    counts = count_run(graph, spikes, run.spikes)
    samples = spikes.shape[1]
    return {
        "steps": int(spikes.shape[0]),
        "input_elements": point.snn_input_elements,
        "input_spikes_per_clip": float(np.count_nonzero(spikes)) / samples,
        "spikes_per_clip": counts.per_sample(counts.total_spikes),
        "synaptic_operations_per_clip": counts.per_sample(counts.total_synaptic_operations),
        "neuron_updates_per_clip": counts.per_sample(counts.total_neuron_updates),
        "latency_per_clip_s": figures["latency_min_s"] / samples,
        "latency_median_per_clip_s": figures["latency_median_s"] / samples,
        "latency_iqr_per_clip_s": figures["latency_iqr_s"] / samples,
        "peak_memory_mb": figures["peak_memory_mb"],
        "memory_increase_mb": figures["memory_increase_mb"],
    }


def measure_cnn(point: StudyPoint, clips: np.ndarray, model, repeats: int) -> dict:
    """Count X3D-S MACs on one clip at the point's X3D size, and time one clip per forward pass."""
    import torch

    low, high = THERMAL_WINDOW_C
    size = point.resolution[1]
    frames = torch.as_tensor((clips[:1] - low) / (high - low), dtype=torch.float32).unsqueeze(1)
    frames = torch.nn.functional.interpolate(frames, size=(point.frames, size, size), mode="area")
    with torch.no_grad():
        macs, uncounted = count_macs(model, (frames,))
        _, figures = _measure(lambda: model(frames), repeats)
    return {
        "input_shape": list(frames.shape),
        "input_elements": point.cnn_input_elements,
        "macs_per_clip": float(macs),
        "latency_per_clip_s": figures["latency_min_s"],
        "latency_median_per_clip_s": figures["latency_median_s"],
        "latency_iqr_per_clip_s": figures["latency_iqr_s"],
        "peak_memory_mb": figures["peak_memory_mb"],
        "memory_increase_mb": figures["memory_increase_mb"],
        "operators_not_counted": uncounted,
    }


def price(snn: dict, cnn: dict, table: dict[str, EnergyConstant]) -> dict:
    """Return the energy figures (pJ per clip) and SNN-to-CNN ratios of one point."""
    estimate = estimate_energy(table, synaptic_operations=snn["synaptic_operations_per_clip"],
                               neuron_updates=snn["neuron_updates_per_clip"], macs=cnn["macs_per_clip"])
    return {
        "snn_loihi_pj": estimate.loihi_total.picojoules,
        "snn_45nm_fp32_pj": estimate.snn_45nm_fp32.picojoules,
        "snn_45nm_int8_pj": estimate.snn_45nm_int8.picojoules,
        "cnn_45nm_fp32_pj": estimate.cnn_45nm_fp32.picojoules,
        "cnn_45nm_int8_pj": estimate.cnn_45nm_int8.picojoules,
        "loihi_to_cnn_fp32": estimate.loihi_to_cnn_fp32,
        "snn_to_cnn_fp32": estimate.snn_to_cnn_fp32,
        "snn_to_cnn_int8": estimate.snn_to_cnn_int8,
        "loihi_to_cnn_int8": (estimate.loihi_total.picojoules / estimate.cnn_45nm_int8.picojoules
                              if estimate.cnn_45nm_int8.picojoules > 0 else None),
        "caveats": estimate.caveats,
    }


# Costs fitted against work: (network, key in that network's record or in "energy").
FITTED_COSTS = {
    "snn_spikes": ("snn", "spikes_per_clip"),
    "snn_synaptic_operations": ("snn", "synaptic_operations_per_clip"),
    "snn_loihi_energy": ("energy", "snn_loihi_pj"),
    "snn_45nm_energy": ("energy", "snn_45nm_fp32_pj"),
    "snn_latency": ("snn", "latency_per_clip_s"),
    "cnn_macs": ("cnn", "macs_per_clip"),
    "cnn_45nm_energy": ("energy", "cnn_45nm_fp32_pj"),
    "cnn_latency": ("cnn", "latency_per_clip_s"),
}


def fit_costs(points: list[dict]) -> dict[str, dict[str, PowerLawFit]]:
    """Fit every cost in ``FITTED_COSTS`` against its network's input elements, per axis."""
    fits: dict[str, dict[str, PowerLawFit]] = {}
    for axis in AXES:
        rows = [row for row in points if row["axis"] == axis]
        fits[axis] = {}
        for cost, (section, key) in FITTED_COSTS.items():
            network = "snn" if cost.startswith("snn") else "cnn"
            work = [row[network]["input_elements"] for row in rows]
            fits[axis][cost] = fit_power_law(work, [row[section][key] for row in rows])
    return fits


def crossovers(points: list[dict]) -> list[Crossover]:
    """Return the crossover along each axis of Loihi against the fp32 and int8 CNN, and of the 45 nm fp32 SNN."""
    found = []
    for axis in AXES:
        rows = sorted((row for row in points if row["axis"] == axis), key=lambda row: row["axis_value"])
        for ratio in ("loihi_to_cnn_fp32", "loihi_to_cnn_int8", "snn_to_cnn_fp32"):
            found.append(find_crossover(axis, [row["axis_value"] for row in rows],
                                        [row["energy"][ratio] for row in rows], ratio_name=ratio))
    return found


@dataclass
class StudyResult:
    """Measured points, fits and crossovers of one sweep."""

    config: StudyConfig
    points: list[dict]
    fits: dict[str, dict[str, PowerLawFit]]
    crossovers: list[Crossover]
    energy_table: dict[str, EnergyConstant]
    notes: list[str] = field(default_factory=list)
    run_details: dict = field(default_factory=dict)


def run_study(config: StudyConfig, table: dict[str, EnergyConstant], *, progress: bool = True) -> StudyResult:
    """Measure every point of ``config`` (shared points once) and fit the costs."""
    import torch
    from tqdm import tqdm

    from cnn.x3d import build_x3d_s
    from neuro.backends import create_backend

    backend = create_backend(config.backend)
    clips = study_clips(config.clips, sorted(set(config.frames) | {config.base_frames}), seed=config.seed)
    torch.manual_seed(config.seed)
    cnn_model = build_x3d_s(num_outputs=2, in_channels=1).eval()

    measured: dict[tuple, tuple[dict, dict]] = {}
    rows: list[dict] = []
    for point in tqdm(config.points(), desc="energy study", unit="point", disable=not progress, file=sys.stderr):
        if point.key not in measured:
            logger.info("measuring frames %d, resolution %s, steps per frame %d", *point.key)
            snn = measure_snn(point, clips[point.frames], config, backend)
            cnn = measure_cnn(point, clips[point.frames], cnn_model, config.repeats)
            measured[point.key] = (snn, cnn)
        snn, cnn = measured[point.key]
        rows.append({"axis": point.axis, "axis_value": point.axis_value, "frames": point.frames,
                     "snn_resolution": point.resolution[0], "x3d_resolution": point.resolution[1],
                     "steps_per_frame": point.steps_per_frame, "snn": snn, "cnn": cnn,
                     "energy": price(snn, cnn, table)})
    notes = [
        "The SNN is untrained (weights seeded by --seed): its spike counts, and with them its synaptic operations "
        "and energy, depend on these random weights and would change after training.",
        "Energy is arithmetic only and leaves out memory traffic; see the caveats of each point.",
        "SNN latency is the simulator's wall time on the CPU, not a neuromorphic chip's; CNN latency is PyTorch "
        "on the CPU. Both are the minimum over the timed repeats (medians are in results.json), because the "
        "minimum is the figure least disturbed by other processes.",
        "Peak memory is the resident memory of the whole process, so it includes the libraries loaded. Its rise "
        "during a call is a lower bound, because the allocator reuses memory that earlier points freed.",
    ]
    notes.append(f"PyTorch ran with {torch.get_num_threads()} intra-op thread(s).")
    load = os.getloadavg()[0]
    cpus = os.cpu_count() or 1
    if load > cpus:
        notes.append(f"The 1-minute load average was {load:.1f} on {cpus} CPUs at the end of the sweep, so other "
                     "processes competed for the CPU and the latencies are noisy.")
    return StudyResult(config=config, points=rows, fits=fit_costs(rows), crossovers=crossovers(rows),
                       energy_table=table, notes=notes)
