"""Verification of a whole cohort store: ``check_store(path)`` lists every problem found."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import h5py
import numpy as np

from cohort.folds import normalize_subject_id
from cohort.recording import MODALITIES
from cohort.store import open_store_file
from cohort.store_format import (
    CLIP_FIELDS,
    CYCLE_DTYPE,
    StoreError,
    SubjectInfo,
    read_attr,
    read_dataset,
    read_group,
    read_text,
)

logger = logging.getLogger(__name__)


def _all_finite(dataset: h5py.Dataset) -> bool:
    """Scan a float dataset one chunk row at a time, so memory stays at one chunk."""
    if dataset.dtype.kind != "f" or dataset.shape[0] == 0:
        return True
    step = dataset.chunks[0] if dataset.chunks else 1
    return all(np.isfinite(dataset[start:start + step]).all() for start in range(0, dataset.shape[0], step))


def _check_recording(group: h5py.Group, path: Path) -> list[str]:
    where = f"{group.name} in {path}"
    problems = []
    if read_attr(group, "complete", path, kind="i") != 1:
        return [f"{where} is incomplete; ingest it again"]
    fps = read_attr(group, "fps", path, kind="f")
    if not (np.isfinite(fps) and fps > 0):
        problems.append(f"{where}: fps = {fps} is invalid; it must be positive")
    modality = read_text(group, "modality", path)
    if modality not in MODALITIES:
        return [*problems, f"{where}: modality {modality!r} is invalid; expected one of {MODALITIES}"]
    thermal = modality == "thermal"
    read_text(group, "source", path)
    read_text(group, "notes", path)

    frames = read_dataset(group, "frames", path, ndim=3 if thermal else 4)
    clips = read_dataset(group, "clips", path, ndim=4 if thermal else 5)
    expected_dtype = np.float32 if thermal else np.uint8
    for name, dataset in (("frames", frames), ("clips", clips)):
        if dataset.dtype != expected_dtype:
            problems.append(f"{where}: {name} dtype {dataset.dtype} is invalid for {modality}; expected {expected_dtype.__name__}")
        if not thermal and dataset.shape[-1] != 3:
            problems.append(f"{where}: RGB {name} shape {dataset.shape} does not end in 3 channels")
        if not _all_finite(dataset):
            problems.append(f"{where}: {name} contain NaN or infinite values")
    if frames.shape[0] == 0:
        problems.append(f"{where}: frames are empty")

    cycles = read_dataset(group, "cycles", path, ndim=1, compound=CYCLE_DTYPE)[()]
    bad_cycles = ~((cycles["start"] >= 0) & (cycles["start"] < cycles["end"]) & (cycles["end"] <= frames.shape[0])
                   & (cycles["quality"] >= 0) & (cycles["quality"] <= 1))
    if bad_cycles.any():
        problems.append(f"{where}: cycles {np.flatnonzero(bad_cycles).tolist()} lie outside the {frames.shape[0]} frames")

    count = clips.shape[0]
    table = {}
    for field in CLIP_FIELDS:
        table[field] = read_dataset(group, field, path, ndim=1)[()]
        if table[field].shape != (count,):
            problems.append(f"{where}: {field} has {table[field].shape[0]} entries for {count} clips")
    if problems:
        return problems
    clip_cycle = table["clip_cycle"]
    if count and (clip_cycle.min() < 0 or clip_cycle.max() >= len(cycles) or len(np.unique(clip_cycle)) != count):
        problems.append(f"{where}: clip_cycle {clip_cycle.tolist()} does not map {count} clips to distinct rows of {len(cycles)} cycles")
    for field in ("clip_pef", "clip_fev1_fvc"):
        if not np.isfinite(table[field]).all() or (table[field] <= 0).any():
            problems.append(f"{where}: {field} holds NaN, infinite or non-positive values")
    if not np.isin(table["clip_label"], (0, 1)).all():
        problems.append(f"{where}: clip_label holds values other than 0 and 1: {np.unique(table['clip_label']).tolist()}")
    return problems


def check_store(path: str | os.PathLike) -> list[str]:
    """Verify a cohort store and return one message per problem; an empty list means sound.

    Checks cover the format version, required groups, datasets and attributes, dtypes
    and ranks.  Cycles must lie within the frames, each clip must map to its own cycle,
    and per-clip arrays must have one entry per clip.  Labels must be 0 or 1, frames,
    clips and targets free of NaN and infinity, and subject ids normalised and unique.  A file that cannot be
    opened yields a single problem.  Frames and clips are read one chunk at a time.
    """
    path = Path(path)
    try:
        handle = open_store_file(path, "r")
    except (StoreError, FileNotFoundError) as error:
        return [str(error)]

    problems: list[str] = []
    clip_shapes: dict[tuple[str, tuple[int, ...]], list[str]] = {}
    with handle:
        subjects = read_group(handle, "subjects", path)
        seen: dict[str, str] = {}
        for name in subjects:
            try:
                normalised = normalize_subject_id(name)
            except ValueError as error:
                problems.append(f"subject group {name!r} in {path}: {error}")
                continue
            if normalised != name:
                problems.append(f"subject group {name!r} in {path} is not normalised; expected {normalised!r}")
            if normalised in seen:
                problems.append(f"subject groups {seen[normalised]!r} and {name!r} in {path} are the same subject {normalised!r}")
            seen[normalised] = name
            try:
                subject = read_group(subjects, name, path)
                SubjectInfo.read(read_group(subject, "metadata", path), path)
                recordings = read_group(subject, "recordings", path)
            except StoreError as error:
                problems.append(str(error))
                continue
            for recording in recordings:
                try:
                    group = read_group(recordings, recording, path)
                    problems.extend(_check_recording(group, path))
                    if "clips" in group:
                        modality = read_text(group, "modality", path)
                        clip_shapes.setdefault((modality, tuple(group["clips"].shape[1:])), []).append(group.name)
                except StoreError as error:
                    problems.append(str(error))
                except OSError as error:  # h5py raises OSError when a chunk fails to decompress
                    problems.append(f"{recordings.name}/{recording} in {path} could not be read ({error}); "
                                    "the file is damaged, so restore it or ingest that recording again")
    for modality in {modality for modality, _ in clip_shapes}:
        shapes = {shape: names for (kind, shape), names in clip_shapes.items() if kind == modality}
        if len(shapes) > 1:
            listing = "; ".join(f"{shape} in {len(names)} recordings (first {names[0]})" for shape, names in shapes.items())
            problems.append(f"{modality} clips in {path} differ in shape: {listing}; a dataset needs one clip shape, "
                            "so ingest them again with the same --frames and --size")
    logger.info("checked %s: %d problems", path, len(problems))
    return problems
