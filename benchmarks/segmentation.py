"""Time and score breathing-cycle segmentation on simulated 640 x 512 thermal recordings.

Simulated recordings (``simulate_recordings``) are written as ``.npy`` files first. The
timed part reads each file back (``np.load``), segments it and cuts its cycles into
30-frame 224 x 224 clips. Throughput is frames read per second of that whole chain, so a
recording's frames count once. The files were just written, so they are read from the
operating system's page cache, not from the disk.

Results: a summary on stdout, ``results.json`` and ``signal.png`` (the first
recording's breathing signal with its cycles) in ``--out``. Exit code 2 means bad input.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cohort.recording import Cycle, Recording
from cohort.scoring import score_segmentation
from cohort.segmentation import SegmentConfig, cut_clips, plot_signal, segment
from cohort.simulator import simulate_cohort

logger = logging.getLogger("benchmarks.segmentation")

WIDTH_PX = 640
HEIGHT_PX = 512
TOLERANCE_FRAMES = 2


def simulate_recordings(
    *, n_recordings: int, blows: int, fps: float, rest_s: float, seed: int
) -> list[tuple[Recording, list[Cycle]]]:
    """Return simulated 640 x 512 thermal sessions of ``cohort.simulator`` and their true cycles.

    Each recording is one subject's session: tidal breathing, a maximal inhalation and a
    forced blow, ``blows`` times, with ``rest_s`` to ``rest_s + 2`` s of rest between blows.
    """
    cohort = simulate_cohort(n_recordings, seed=seed, fps=fps, size=(WIDTH_PX, HEIGHT_PX),
                             blows_per_session=(blows, blows), modalities=("thermal",),
                             rest_s=(rest_s, rest_s + 2.0))
    recordings = []
    for session in cohort.sessions:
        recordings.append((session.thermal, list(session.cycles)))
    return recordings


def _ingest(path: Path, fps: float, config: SegmentConfig, mmap: bool) -> tuple[dict[str, float], object, int]:
    """Read, segment and cut one recording; return the stage times in s, the result and the clip count.

    With ``mmap`` the file is memory-mapped, so its pages are read during segmentation
    (which touches every frame) and the decode time only covers the header.
    """
    times: dict[str, float] = {}
    start = time.perf_counter()
    frames = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    times["decode_s"] = time.perf_counter() - start

    start = time.perf_counter()
    recording = Recording(frames, fps=fps, modality="thermal", subject_id=path.stem, source=path)
    result = segment(recording, config)
    times["segment_s"] = time.perf_counter() - start

    start = time.perf_counter()
    x, y, width, height = result.region_box
    clips = cut_clips(recording, result.cycles, n_frames=30, size=224, center=(x + width // 2, y + height // 2))
    times["cut_s"] = time.perf_counter() - start
    return times, result, int(clips.shape[0])


def _write_json(path: Path, payload: dict) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(payload, stream, indent=2)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python benchmarks/segmentation.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--recordings", type=int, default=2, help="simulated recordings (default: 2)")
    parser.add_argument("--blows", type=int, default=3, help="blows per recording (default: 3)")
    parser.add_argument("--fps", type=float, default=15.0, help="frame rate of the recordings, Hz (default: 15)")
    parser.add_argument("--rest-s", type=float, default=3.0,
                        help="shortest rest between blows, s; the longest is 2 s more (default: 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first recording (default: 0)")
    parser.add_argument("--mmap", action="store_true",
                        help="memory-map the .npy files instead of reading them into memory first")
    parser.add_argument("--out", type=Path, default=Path("results/segmentation"),
                        help="output folder, created if missing (default: results/segmentation)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    return parser


def _check_args(args: argparse.Namespace) -> None:
    for option, value, low in (("--recordings", args.recordings, 1), ("--blows", args.blows, 1)):
        if value < low:
            raise ValueError(f"{option} must be at least {low}, got {value}")
    if not (math.isfinite(args.fps) and 0 < args.fps <= 240):
        raise ValueError(f"--fps must be a number in (0, 240] Hz, got {args.fps}")
    if not (math.isfinite(args.rest_s) and 1 <= args.rest_s <= 58):
        raise ValueError(f"--rest-s must be a number of seconds in [1, 58], got {args.rest_s}")
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} is an existing file, not a folder; choose a folder path")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        _check_args(args)
        args.out.mkdir(parents=True, exist_ok=True)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    config = SegmentConfig()
    start = time.perf_counter()
    recordings = simulate_recordings(n_recordings=args.recordings, blows=args.blows, fps=args.fps,
                                     rest_s=args.rest_s, seed=args.seed)
    generate_s = time.perf_counter() - start

    totals = {"decode_s": 0.0, "segment_s": 0.0, "cut_s": 0.0}
    detected: list[Cycle] = []
    truth: list[Cycle] = []
    n_frames = n_clips = n_rejected = offset = 0
    with tempfile.TemporaryDirectory(prefix="segmentation-bench-") as folder:
        paths = []
        for index, (recording, _) in enumerate(recordings):
            paths.append(Path(folder) / f"recording{index}.npy")
            np.save(paths[-1], recording.frames, allow_pickle=False)
        for index, (path, (recording, true_cycles)) in enumerate(zip(paths, recordings)):
            times, result, clips = _ingest(path, args.fps, config, args.mmap)
            for key, value in times.items():
                totals[key] += value
            # Shift each recording's cycles so one score covers all recordings.
            detected += [Cycle(c.start + offset, c.end + offset, c.quality) for c in result.cycles]
            truth += [Cycle(c.start + offset, c.end + offset) for c in true_cycles]
            offset += recording.n_frames
            n_frames += recording.n_frames
            n_clips += clips
            n_rejected += len(result.rejected)
            if index == 0:
                plot_signal(result, args.out / "signal.png")
    del recordings

    score = score_segmentation(detected, truth, tolerance_frames=TOLERANCE_FRAMES)
    total_s = sum(totals.values())
    payload = {
        "frame_size": [WIDTH_PX, HEIGHT_PX],
        "fps_recording_hz": args.fps,
        "recordings": args.recordings,
        "frames": n_frames,
        "clips_cut": n_clips,
        "rejected_candidates": n_rejected,
        "tolerance_frames": TOLERANCE_FRAMES,
        # Boundary errors are NaN when nothing matched; JSON has no NaN, so they become null.
        "score": {key: None if isinstance(value, float) and math.isnan(value) else value
                  for key, value in vars(score).items()},
        "stage_seconds": totals,
        "throughput_fps": n_frames / total_s,
        "read_mode": "mmap" if args.mmap else "np.load into memory",
        "generation_s": generate_s,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }
    _write_json(args.out / "results.json", payload)

    print(f"{n_frames} frames of {WIDTH_PX}x{HEIGHT_PX} at {args.fps:g} Hz in {args.recordings} recordings")
    print(f"cycles: precision {score.precision:.3f}, recall {score.recall:.3f}, F1 {score.f1:.3f} "
          f"at +-{TOLERANCE_FRAMES} frames; {score.true_positives} TP, {score.false_positives} FP, "
          f"{score.false_negatives} FN, {n_rejected} rejected")
    print(f"boundary error: start {score.mean_start_error_frames:.2f} frames, end {score.mean_end_error_frames:.2f} frames")
    stages = ", ".join(f"{key[:-2]} {value:.2f} s" for key, value in totals.items())
    print(f"throughput: {payload['throughput_fps']:.0f} frames/s (decode + segment + cut; {stages})")
    print(f"wrote {args.out / 'results.json'} and {args.out / 'signal.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
