"""Workload of the backend comparison (graph and input) and its timed, counted runs."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import nir
import numpy as np

from hardware.counting import RunCounts, count_run
from hardware.measure import LatencyMeasurement, measure_latency, measure_peak_memory
from neuro.agreement import LayerAgreement, compare_runs
from neuro.backends.base import Backend, BackendRun
from neuro.encoding import THERMAL_WINDOW_C, RateEncoder
from neuro.graph import input_shape, unstable_neurons
from neuro.nir_io import model_to_nir, read_graph

logger = logging.getLogger(__name__)

DEFAULT_DT = 1e-3


class WorkloadError(ValueError):
    """Options that do not fit the graph or the input."""


@dataclass
class Workload:
    """A graph, its input spikes (T, B, *shape) and, for simulated clips, frames and labels."""

    graph: nir.NIRGraph
    dt: float
    spikes: np.ndarray
    description: str
    graph_path: Path | None = None
    clips: np.ndarray | None = None
    labels: np.ndarray | None = None
    trained: bool = False
    notes: list[str] = field(default_factory=list)


# Clip window: 1 s of rest before the detected onset and 5.9 s after it, the span of the
# 30-frame training clips at the Lepton's halved rate (30 frames / 4.35 Hz = 6.9 s).
CLIP_WINDOW_S = 6.9
CLIP_PRE_ONSET_S = 1.0
CLIP_SIZE_PX = 224
CLIP_FRAMES = 30


def simulated_clips(n_clips: int, *, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Cut ``n_clips`` thermal clips out of the cached simulated cohort, the toolkit's default data.

    Subjects are simulated (and cached) until their segmented blows give enough clips.
    Returns clips (N, 30, 224, 224) in degC, labels (1 = FEV1/FVC < 0.70 for the subject)
    and a sentence naming the source.
    """
    from cohort.segmentation import cut_clips, segment
    from cohort.simulator import default_cohort

    n_subjects = max(2, math.ceil(n_clips / 3))
    while True:
        cohort = default_cohort(n_subjects=n_subjects, seed=seed)
        clips, labels = [], []
        for session in cohort.sessions:
            cycles = segment(session.thermal).cycles
            cut = cut_clips(session.thermal, cycles, n_frames=CLIP_FRAMES, size=CLIP_SIZE_PX,
                            pre_onset_s=CLIP_PRE_ONSET_S, window_s=CLIP_WINDOW_S)
            clips.extend(cut)
            labels.extend([int(session.subject.fev1_fvc < 0.70)] * len(cut))
            if len(clips) >= n_clips:
                source = (f"segmented from {len(cohort.subjects)} simulated subjects' thermal sessions, "
                          f"cohort seed {seed}")
                return np.stack(clips[:n_clips]), np.array(labels[:n_clips]), source
        if n_subjects >= 4 * n_clips:
            raise WorkloadError(f"segmentation found only {len(clips)} clips in {n_subjects} simulated subjects")
        n_subjects *= 2


def encode_thermal_clips(clips: np.ndarray, *, size: int, steps: int | None, seed: int) -> np.ndarray:
    """Rate-code thermal clips ``(B, F, H, W)`` in degC into float64 spikes ``(T, B, 1, size, size)``.

    ``steps`` defaults to one step per frame.  With more steps than frames each frame
    lasts ``ceil(steps / F)`` steps, and the code is cut to ``steps``.
    """
    frames = clips.shape[1]
    steps = frames if steps is None else steps
    encoder = RateEncoder(size=size, steps_per_frame=max(1, math.ceil(steps / frames)),
                          value_range=THERMAL_WINDOW_C, seed=seed)
    return encoder.encode(clips)[:steps].astype(np.float64)


def _default_workload(args) -> Workload:
    from neuro.checkpoint import load_snn
    from neuro.model import PulmoSNN, SNNConfig

    model = load_snn(args.checkpoint) if args.checkpoint else PulmoSNN(SNNConfig(seed=args.seed))
    config = model.config
    dt = args.dt if args.dt is not None else config.dt
    notes = []
    if args.dt is not None and not math.isclose(args.dt, config.dt):
        notes.append(f"--dt {args.dt:g} s differs from the {config.dt:g} s the SNN was built for, so its pooling "
                     "neurons (tau = the built dt) are no longer memoryless: with dt < tau they leak, with dt > tau "
                     "forward Euler overshoots")

    if args.checkpoint:
        notes.append("accuracy is measured on the default simulated clips below, which may share subjects with the "
                     "cohort the checkpoint was trained on and differ from its training clips in length and size; "
                     "benchmarks/train_models.py gives held-out accuracy on every backend")
    clips, labels, source_text = simulated_clips(args.clips, seed=args.seed)
    frames = clips.shape[1]
    spikes = encode_thermal_clips(clips, size=config.input_size, steps=args.steps, seed=args.seed)
    steps = spikes.shape[0]
    source = f"checkpoint {args.checkpoint}" if args.checkpoint else f"untrained, seed {args.seed}"
    description = (f"PulmoFusion SNN ({source}) on {args.clips} thermal clips of {frames} frames "
                   f"{clips.shape[2]}x{clips.shape[3]} ({source_text}), rate-coded to {steps} steps of "
                   f"{config.input_size}x{config.input_size} spikes")
    return Workload(graph=model_to_nir(model), dt=dt, spikes=spikes, description=description,
                    clips=clips, labels=labels, trained=args.checkpoint is not None, notes=notes)


def _file_workload(args) -> Workload:
    from neuro.spike_input import load_spikes

    graph, metadata = read_graph(args.graph)
    spikes = load_spikes(args.input, input_shape(graph))
    if args.steps is not None:
        if args.steps > spikes.shape[0]:
            raise WorkloadError(f"--steps {args.steps} exceeds the {spikes.shape[0]} steps in {args.input}; "
                                "lower --steps or give a longer input")
        spikes = spikes[:args.steps]
    stored_dt = metadata.get("dt")
    notes = []
    if args.dt is not None:
        dt = args.dt
    elif stored_dt is not None:
        dt = float(stored_dt)
    else:
        dt = DEFAULT_DT
        notes.append(f"{args.graph} does not store dt and --dt was not given; used {DEFAULT_DT:g} s")
        logger.info(notes[-1])
    unstable = unstable_neurons(graph, dt)
    if unstable:
        notes.append(f"dt / tau exceeds 1 in {unstable}: forward Euler overshoots there instead of decaying, "
                     "so the run is not a faithful simulation of those neurons")
    description = f"{args.graph} on {args.input}: {spikes.shape[0]} steps, batch {spikes.shape[1]}"
    return Workload(graph=graph, dt=dt, spikes=spikes, description=description, graph_path=args.graph,
                    notes=notes)


def prepare_workload(args) -> Workload:
    """Build the workload from command-line options (see ``benchmarks/compare_backends.py``)."""
    return _file_workload(args) if args.graph is not None else _default_workload(args)


@dataclass
class BackendMeasurement:
    """One backend's run with its counts, agreement with the reference, timing and memory."""

    name: str
    run: BackendRun
    counts: RunCounts
    latency: LatencyMeasurement
    peak_memory_bytes: int
    memory_increase_bytes: int
    agreement: list[LayerAgreement] | None
    output_agreement: float | None
    classes: np.ndarray


def run_backend(backend: Backend, workload: Workload, *, repeats: int,
                reference: BackendRun | None) -> BackendMeasurement:
    """Run ``backend`` once for memory and results, then ``repeats`` times for latency."""

    def once() -> BackendRun:
        return backend.run(workload.graph, workload.spikes, workload.dt)

    # The memory run comes first and doubles as the warm-up of the timed repeats.
    memory = measure_peak_memory(once)
    run = memory.result
    latency = measure_latency(once, repeats=repeats, warmup=0)
    agreement = compare_runs(reference, run) if reference is not None else None
    output_agreement = None
    if reference is not None:
        output_agreement = float(np.mean(reference.output == run.output))
    output_spikes = run.output.reshape(run.output.shape[0], run.output.shape[1], -1)
    classes = output_spikes.sum(axis=0).argmax(axis=-1)
    return BackendMeasurement(
        name=backend.name, run=run, counts=count_run(workload.graph, workload.spikes, run.spikes),
        latency=latency, peak_memory_bytes=memory.peak_bytes, memory_increase_bytes=memory.increase_bytes,
        agreement=agreement, output_agreement=output_agreement, classes=classes,
    )


@dataclass
class CnnMeasurement:
    """The X3D-S CNN on the workload's clips, one clip per forward pass."""

    parameters: int
    macs_per_clip: int
    input_shape: tuple[int, ...]
    latency: LatencyMeasurement
    peak_memory_bytes: int
    memory_increase_bytes: int
    uncounted_operators: dict[str, int]


def count_macs(model, example) -> tuple[int, dict[str, int]]:
    """Count multiply-accumulates of one forward pass with fvcore.

    fvcore's ``FlopCountAnalysis`` counts one fused multiply-add as one "flop" for
    convolutions and matrix products, so its total is a MAC count.  Operators it has no
    rule for (element-wise activations, normalisation) are returned with their counts
    of occurrences, not silently dropped.
    """
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(model, example)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    total = int(analysis.total())
    return total, dict(analysis.unsupported_ops())


def run_cnn(workload: Workload, *, repeats: int) -> CnnMeasurement:
    """Build X3D-S (untrained), count its MACs on one clip and time one clip per repeat.

    The CNN's cost does not depend on the clip's content, so each repeat times the next
    clip of the workload (cycling) rather than all of them.
    """
    import torch

    from cnn.x3d import build_x3d_s

    clips = workload.clips
    torch.manual_seed(0)
    model = build_x3d_s(num_outputs=2, in_channels=1).eval()
    low, high = THERMAL_WINDOW_C
    frames = torch.as_tensor((clips - low) / (high - low), dtype=torch.float32).unsqueeze(1)  # (B, 1, F, H, W)
    example = frames[:1]
    with torch.no_grad():
        macs, uncounted = count_macs(model, (example,))

        next_clip = iter(range(10**9))

        def forward_one():
            index = next(next_clip) % frames.shape[0]
            return model(frames[index:index + 1])

        memory = measure_peak_memory(forward_one)
        latency = measure_latency(forward_one, repeats=repeats, warmup=0)
    return CnnMeasurement(
        parameters=sum(p.numel() for p in model.parameters()), macs_per_clip=macs,
        input_shape=tuple(example.shape), latency=latency, peak_memory_bytes=memory.peak_bytes,
        memory_increase_bytes=memory.increase_bytes, uncounted_operators=uncounted,
    )
