"""Command line of the cohort package: ``python -m cohort simulate | ingest | segment | check``.

- ``simulate`` renders a simulated cohort into a folder as a researcher's data would
  arrive: one thermal recording per subject (``<id>_thermal.h5``, float32 degC with the
  frame rate as an attribute), one RGB video (``<id>_rgb.mp4``), ``metadata.csv``, and ``truth.json`` with every blow's true
  frame boundaries and spirometry.
- ``ingest`` reads a metadata CSV and a folder of recordings, segments each recording
  into breathing cycles, cuts 30-frame clips and adds them to an HDF5 cohort store.  A
  recording belongs to the subject named by its file name up to the first underscore.
  An interrupted ingest resumes where it stopped.  ``--skip-failed`` leaves out
  recordings that cannot be read or segmented and lists them at the end.
  ``--cycles-from thermal`` cuts RGB videos at the cycle times of the same subject's
  thermal recording already in the store, for cameras that started together.
- ``segment`` segments one recording, prints its cycles and rejected candidates, and
  writes a PNG of the breathing signal.  With ``--truth`` it also scores the result.
- ``check`` verifies a store.

Exit codes: 0 success, 1 ``check`` found problems, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
from pathlib import Path

from cohort.files import atomic_write

logger = logging.getLogger(__name__)

RECORDING_SUFFIXES = (".npy", ".h5", ".hdf5", ".mp4", ".avi", ".mov")


class _OneLineErrorParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr and exit code 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message}; see --help\n")


def _add_reader_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--conversion", help="conversion of raw thermal counts to degC: centikelvin, "
                                             "lepton_tlinear_0.01K, lepton_tlinear_0.1K or celsius (default: none; "
                                             "integer arrays then fail, 16-bit frame folders use centikelvin)")
    parser.add_argument("--dataset", help="dataset name inside an .h5 recording (default: its only 3-D dataset)")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrorParser(prog="python -m cohort", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineErrorParser)

    simulate = commands.add_parser("simulate", help="render a simulated cohort into a folder")
    simulate.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    simulate.add_argument("--subjects", type=int, default=12, help="number of subjects (default: 12)")
    simulate.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    simulate.add_argument("--width", type=int, default=160, help="frame width in pixels (default: 160)")
    simulate.add_argument("--height", type=int, default=128, help="frame height in pixels (default: 128)")
    simulate.add_argument("--fps", type=float, default=8.7, help="camera frame rate in Hz (default: 8.7)")
    simulate.add_argument("--no-rgb", action="store_true", help="render the thermal recordings only")

    ingest = commands.add_parser("ingest", help="segment recordings and add their clips to an HDF5 store")
    ingest.add_argument("--metadata", type=Path, required=True, help="metadata CSV (see cohort/metadata.py)")
    ingest.add_argument("--recordings", type=Path, required=True,
                        help=f"folder of recordings named <subject id>_<name> ({', '.join(RECORDING_SUFFIXES)}, "
                             "or a folder of 16-bit PNG/TIFF frames with an fps.txt)")
    ingest.add_argument("--store", type=Path, required=True, help="HDF5 store to create or extend")
    ingest.add_argument("--modality", choices=("thermal", "rgb"), default="thermal",
                        help="which recordings to ingest (default: thermal)")
    ingest.add_argument("--fps", type=float, help="frame rate in Hz, for recordings that do not store one")
    _add_reader_options(ingest)
    ingest.add_argument("--frames", type=int, default=30, help="frames per clip (default: 30)")
    ingest.add_argument("--size", type=int, default=224, help="clip height and width in pixels (default: 224)")
    ingest.add_argument("--window", type=float, metavar="SECONDS",
                        help="clip duration in seconds from 1 s before each onset, the same for every cycle "
                             "(default: from 1 s before the onset to the cycle's end, so durations vary)")
    ingest.add_argument("--skip-failed", action="store_true",
                        help="leave out a recording that cannot be read or segmented, and list each one with its "
                             "error at the end (default: stop at the first such error)")
    ingest.add_argument("--cycles-from", choices=("thermal",),
                        help="with --modality rgb: cut each video at the cycle times (seconds from the first frame) "
                             "of the same subject's thermal recording in --store instead of segmenting the video; "
                             "both cameras must have started together")

    segment = commands.add_parser("segment", help="segment one recording into breathing cycles")
    segment.add_argument("recording", type=Path, help="recording file or frame folder")
    segment.add_argument("--fps", type=float, help="frame rate in Hz, for inputs without one")
    _add_reader_options(segment)
    segment.add_argument("--plot", type=Path, help="PNG of the signal with the cycles (default: <recording>.png)")
    segment.add_argument("--truth", type=Path, help="truth.json from 'simulate', to score the cycles")
    segment.add_argument("--tolerance", type=int, default=2, help="onset tolerance in frames for scoring (default: 2)")

    check = commands.add_parser("check", help="verify an HDF5 cohort store")
    check.add_argument("store", type=Path, help="HDF5 store")
    for sub in (simulate, ingest, segment, check):
        sub.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    return parser


def _write_video(path: Path, frames, fps: float) -> None:
    """Write RGB frames (F, H, W, 3) as an MP4 video, atomically."""
    import cv2

    def write(temporary: str) -> None:
        height, width = frames.shape[1:3]
        # OpenCV picks the container from the suffix, so the temporary name keeps ".mp4".
        target = temporary + ".mp4"
        writer = cv2.VideoWriter(target, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
        if not writer.isOpened():
            raise OSError(f"OpenCV could not open a video writer for {path}")
        try:
            for frame in frames:
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        finally:
            writer.release()
        Path(target).replace(temporary)

    atomic_write(path, write)


def _simulate(args) -> int:
    from tqdm import tqdm

    from cohort.simulator import simulate_cohort, write_metadata_csv

    if args.subjects < 1:
        raise ValueError(f"--subjects must be at least 1, got {args.subjects}")
    modalities = ("thermal",) if args.no_rgb else ("thermal", "rgb")
    cohort = simulate_cohort(args.subjects, seed=args.seed, fps=args.fps, size=(args.width, args.height),
                             modalities=modalities)
    args.out.mkdir(parents=True, exist_ok=True)
    truth = {"seed": args.seed, "fps": args.fps, "cycle_convention": "frames [start, end) of each recording",
             "sessions": {}}
    for session in tqdm(cohort.sessions, total=len(cohort.subjects), desc="simulate", unit="subject", file=sys.stderr):
        subject_id = session.subject.subject_id
        atomic_write(args.out / f"{subject_id}_thermal.h5",
                     lambda temporary, recording=session.thermal: _save_thermal_h5(temporary, recording))
        if session.rgb is not None:
            _write_video(args.out / f"{subject_id}_rgb.mp4", session.rgb.frames, session.rgb.fps)
        truth["sessions"][subject_id] = [
            {"start": cycle.start, "end": cycle.end, "fev1": blow.fev1, "fvc": blow.fvc,
             "fev1_fvc": blow.fev1_fvc, "pef": blow.pef}
            for cycle, blow in zip(session.cycles, session.spirometry)
        ]
    write_metadata_csv(cohort, args.out / "metadata.csv")
    text = json.dumps(truth, indent=2) + "\n"
    atomic_write(args.out / "truth.json", lambda temporary: Path(temporary).write_text(text))
    blows = sum(len(cycles) for cycles in truth["sessions"].values())
    obstructed = sum(subject.fev1_fvc < 0.70 for subject in cohort.subjects)
    print(f"simulated {len(cohort.subjects)} subjects ({obstructed} with FEV1/FVC < 0.70), {blows} blows, "
          f"into {args.out}")
    return 0


def _save_thermal_h5(path: str, recording) -> None:
    """Write thermal frames as an HDF5 dataset with the frame rate and unit as attributes."""
    import h5py

    with h5py.File(path, "w") as handle:
        dataset = handle.create_dataset("temperature_c", data=recording.frames, chunks=(1, *recording.frames.shape[1:]),
                                        compression="gzip", compression_opts=1)
        dataset.attrs["fps"] = float(recording.fps)
        dataset.attrs["units"] = "degC"


def _is_store(path: Path) -> bool:
    """Return True for an HDF5 file that is a cohort store, not a recording."""
    if path.suffix.lower() not in (".h5", ".hdf5") or not path.is_file():
        return False
    import h5py

    from cohort.store_format import FORMAT_NAME

    try:
        with h5py.File(path, "r") as handle:
            value = handle.attrs.get("format")
    except OSError:
        return False
    text = value.decode() if isinstance(value, bytes) else str(value)
    return text == FORMAT_NAME


def _recording_files(folder: Path, modality: str, store: Path) -> list[tuple[str, str, Path]]:
    """Return (subject id, recording name, path) for every recording in ``folder`` of ``modality``.

    The store itself and any hidden file (temporary files start with a dot) are skipped.
    """
    if not folder.is_dir():
        raise ValueError(f"--recordings {folder} is not a folder; pass the folder that contains the recordings")
    found = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.resolve() == store.resolve() or _is_store(path):
            continue
        is_frame_folder = path.is_dir()
        if not is_frame_folder and path.suffix.lower() not in RECORDING_SUFFIXES:
            continue
        is_video = path.suffix.lower() in (".mp4", ".avi", ".mov")
        if (modality == "rgb") != is_video:
            continue
        stem = path.name if is_frame_folder else path.stem
        subject_id, _, name = stem.partition("_")
        found.append((subject_id, name or modality, path))
    if not found:
        raise ValueError(f"no {modality} recordings found in {folder}; expected files named <subject id>_<name> "
                         f"with suffix {', '.join(RECORDING_SUFFIXES)}")
    return found


def _ingest(args) -> int:
    from cohort.folds import normalize_subject_id
    from cohort.metadata import match_recordings, read_metadata
    from cohort.readers import read_recording
    from cohort.segmentation import cut_clips, segment
    from cohort.store_ingest import Processed, ingest, stored_cycles, transfer_cycles

    for option, value in (("--frames", args.frames), ("--size", args.size)):
        if value < 1:
            raise ValueError(f"{option} must be at least 1, got {value}")
    if args.cycles_from is not None and args.modality != "rgb":
        raise ValueError(f"--cycles-from {args.cycles_from} applies to --modality rgb only; "
                         f"segment {args.modality} recordings on their own")
    if args.cycles_from is not None and not args.store.is_file():
        raise ValueError(f"--cycles-from {args.cycles_from}: store {args.store} not found; ingest the "
                         f"{args.cycles_from} recordings into it first")
    if args.fps is not None and not args.fps > 0:
        raise ValueError(f"--fps must be a positive number of frames per second, got {args.fps}")
    if args.window is not None and not (math.isfinite(args.window) and args.window > 0):
        raise ValueError(f"--window must be a positive number of seconds, got {args.window}")
    # Subject ids compare the way the store keeps them: trimmed and upper case.
    subjects = {}
    for subject in read_metadata(args.metadata):
        key = normalize_subject_id(subject.subject_id)
        if key in subjects:
            raise ValueError(f"{args.metadata} lists subject {key!r} twice (ids are compared trimmed and "
                             "upper case); merge or rename the rows")
        subjects[key] = subject
    files = [(normalize_subject_id(subject_id), name, path)
             for subject_id, name, path in _recording_files(args.recordings, args.modality, args.store)]
    match = match_recordings([subject_id for subject_id, _, _ in files],
                             [dataclasses.replace(subject, subject_id=key) for key, subject in subjects.items()])
    if match.recordings_without_metadata:
        raise ValueError(f"{args.metadata} has no row for recordings of subjects "
                         f"{sorted(match.recordings_without_metadata)}; add their rows or move those recordings out")
    for subject_id in sorted(match.subjects_without_recording):
        logger.warning("subject %s in %s has no %s recording in %s", subject_id, args.metadata, args.modality,
                       args.recordings)

    references = {}
    if args.cycles_from is not None:
        references = stored_cycles(args.store, [subject_id for subject_id, _, _ in files], modality=args.cycles_from)
        without = sorted({subject_id for subject_id, _, _ in files} - set(references))
        if without and not args.skip_failed:
            raise ValueError(f"--cycles-from {args.cycles_from}: subjects {without[:10]} have no {args.cycles_from} "
                             f"recording in {args.store}; ingest those first, or pass --skip-failed to leave them out")

    def process(recording):
        if args.cycles_from is not None:
            return process_with_stored_cycles(recording)
        result = segment(recording)
        for rejected in result.rejected:
            logger.info("%s: rejected frames %d-%d (%s: %s)", recording.source, rejected.start, rejected.end,
                        rejected.reason, rejected.detail)
        if not result.cycles:
            raise ValueError(f"{recording.source}: no breathing cycle found ({'; '.join(result.notes) or 'see -v'})")
        cycles = result.cycles
        return Processed(cycles=cycles, clips=cut_clips(recording, cycles, n_frames=args.frames, size=args.size, window_s=args.window))

    def process_with_stored_cycles(recording):
        reference = references.get(recording.subject_id)
        if reference is None:
            raise ValueError(f"{recording.source}: subject {recording.subject_id} has no {args.cycles_from} "
                             f"recording in {args.store} to take cycles from")
        if not reference.cycles:
            raise ValueError(f"{recording.source}: the {args.cycles_from} recording {reference.name!r} of subject "
                             f"{recording.subject_id} in {args.store} has no cycles")
        cycles = transfer_cycles(reference, recording)
        recording.notes.append(f"cycles from the {args.cycles_from} recording {reference.name!r} at "
                               f"{reference.fps:g} Hz, converted through time from the first frame")
        return Processed(cycles=cycles, clips=cut_clips(recording, cycles, n_frames=args.frames, size=args.size, window_s=args.window))

    items = [(subject_id, name, lambda path=path, subject_id=subject_id:
              read_recording(path, modality=args.modality, subject_id=subject_id, fps=args.fps,
                                            counts_to_celsius=args.conversion, dataset=args.dataset))
             for subject_id, name, path in files]
    created = not args.store.exists()
    try:
        report = ingest(args.store, items, process=process,
                        subjects={subject_id: subjects[subject_id] for subject_id, _, _ in files},
                        skip_failed=args.skip_failed)
    except BaseException:
        _remove_if_empty(args.store, created)
        raise
    if not report.added:
        _remove_if_empty(args.store, created)
    paths = {(subject_id, name): path for subject_id, name, path in files}
    for failure in report.failed:
        path = str(paths[(failure.subject_id, failure.name)])
        # Reader and segmentation errors already start with the file name.
        message = failure.reason if failure.reason.startswith(path) else f"{path}: {failure.reason}"
        print(f"failed: {message}")
    summary = f"{args.store}: added {len(report.added)} recordings, skipped {len(report.skipped)} already stored"
    if args.skip_failed:
        summary += f", {len(report.failed)} failed and left out"
    print(summary)
    if match.subjects_without_recording:
        print(f"subjects without a {args.modality} recording: {', '.join(sorted(match.subjects_without_recording))}")
    return 0


def _remove_if_empty(store: Path, created: bool) -> None:
    """Delete a store this run created when the run failed before committing any recording."""
    from cohort.store import CohortStore

    if not created or not store.exists():
        return
    try:
        with CohortStore.open(store, "r") as opened:
            empty = not opened.subject_ids()
    except (ValueError, OSError):
        return
    if empty:
        store.unlink()
        logger.info("removed %s: the failed ingest had not stored any recording", store)


def _segment(args) -> int:
    from cohort.readers import read_recording
    from cohort.recording import Cycle
    from cohort.scoring import score_segmentation
    from cohort.segmentation import plot_signal, segment

    recording = read_recording(args.recording, fps=args.fps, counts_to_celsius=args.conversion,
                               dataset=args.dataset)
    result = segment(recording)
    print(f"{args.recording}: {recording.n_frames} frames at {recording.fps:g} Hz, {len(result.cycles)} cycles")
    for index, cycle in enumerate(result.cycles):
        print(f"  cycle {index}: frames {cycle.start}-{cycle.end} ({cycle.length / recording.fps:.1f} s), "
              f"quality {cycle.quality:.2f}")
    for rejected in result.rejected:
        print(f"  rejected frames {rejected.start}-{rejected.end}: {rejected.reason} ({rejected.detail})")
    for note in result.notes:
        print(f"  note: {note}")
    plot = args.plot or args.recording.with_suffix(".png")
    plot_signal(result, plot)
    print(f"  signal plot: {plot}")
    if args.truth:
        sessions = json.loads(args.truth.read_text())["sessions"]
        subject_id = recording.subject_id.partition("_")[0]
        if subject_id not in sessions:
            raise ValueError(f"{args.truth} has no session for subject {subject_id!r}")
        truth = [Cycle(item["start"], item["end"]) for item in sessions[subject_id]]
        score = score_segmentation(result.cycles, truth, tolerance_frames=args.tolerance)
        print(f"  score at +/-{args.tolerance} frames: precision {score.precision:.2f}, recall {score.recall:.2f}, "
              f"F1 {score.f1:.2f}, mean onset error {score.mean_start_error_frames:.2f} frames")
    return 0


def _check(args) -> int:
    from cohort.store_check import check_store

    if not args.store.is_file():
        raise ValueError(f"store {args.store} not found; check the path")

    problems = check_store(args.store)
    for problem in problems:
        print(problem if str(args.store) in problem else f"{args.store}: {problem}")
    if not problems:
        print(f"{args.store}: no problems found")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_request:
        return int(exit_request.code or 0)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    command = {"simulate": _simulate, "ingest": _ingest, "segment": _segment, "check": _check}[args.command]
    try:
        return command(args)
    except (ValueError, OSError) as error:  # every reader, validator and store error derives from these
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: recordings committed before the interruption are kept; run the command again to "
              "resume", file=sys.stderr)
        return 130
