"""Resumable ingestion of recordings into a cohort store.

Items are committed in batches of ``commit_every``.  Each batch is one atomic edit of
the store (see ``cohort.store``), so an exception or a kill leaves the store as it was
after the last finished batch.  A later call with the same items skips every recording
already stored and processes only the rest.

With ``skip_failed=True`` a recording whose loading or processing raises ValueError or
OSError (unreadable file, no breathing cycle found) is left out and reported in
``IngestReport.failed``; the others are still stored.  Errors while writing the store
always stop the call.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cohort.folds import normalize_subject_id
from cohort.recording import Cycle, Recording
from cohort.store import CohortStore
from cohort.store_format import SubjectInfo, check_recording_name

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestItem:
    """One recording to ingest: its subject, its name in the store and a loader."""

    subject_id: str
    name: str
    load: Callable[[], Recording]

    def __post_init__(self) -> None:
        object.__setattr__(self, "subject_id", normalize_subject_id(self.subject_id))
        object.__setattr__(self, "name", check_recording_name(self.name))
        if not callable(self.load):
            raise ValueError(f"IngestItem.load = {self.load!r} is invalid; it must be a callable returning a Recording")


@dataclass(frozen=True)
class Processed:
    """Result of ``process`` for one recording, with the fields of ``CohortStore.add_recording``."""

    cycles: Sequence[Cycle]
    clips: np.ndarray
    clip_cycle: Sequence[int] | None = None
    clip_targets: Mapping[str, object] | None = None
    clip_label: Sequence[int] | None = None


@dataclass(frozen=True)
class IngestFailure:
    """A recording left out by ``ingest(..., skip_failed=True)``, with the error that stopped it."""

    subject_id: str
    name: str
    reason: str


@dataclass(frozen=True)
class IngestReport:
    """Recordings (subject id, name) added by this call, those skipped as already stored,
    and those left out because loading or processing failed (only with ``skip_failed``)."""

    added: tuple[tuple[str, str], ...]
    skipped: tuple[tuple[str, str], ...]
    failed: tuple[IngestFailure, ...] = ()


def _same_subject(stored: SubjectInfo, given: SubjectInfo) -> bool:
    """Compare two subjects field by field, treating NaN (not recorded) as equal to NaN."""
    for name in SubjectInfo.__dataclass_fields__:
        a, b = getattr(stored, name), getattr(given, name)
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            continue
        if a != b:
            return False
    return True


def _as_items(items: Iterable[IngestItem | tuple[str, str, Callable[[], Recording]]]) -> list[IngestItem]:
    result = []
    seen = set()
    for item in items:
        item = item if isinstance(item, IngestItem) else IngestItem(*item)
        key = (item.subject_id, item.name)
        if key in seen:
            raise ValueError(f"recording {item.name!r} of subject {item.subject_id!r} is listed twice; give each a unique name")
        seen.add(key)
        result.append(item)
    return result


def ingest(
    store_path: str | os.PathLike,
    items: Iterable[IngestItem | tuple[str, str, Callable[[], Recording]]],
    *,
    process: Callable[[Recording], Processed | tuple[Sequence[Cycle], np.ndarray]],
    subjects: Mapping[str, SubjectInfo | Mapping[str, object] | object] | None = None,
    commit_every: int = 8,
    progress: bool = True,
    skip_failed: bool = False,
) -> IngestReport:
    """Load, process and store each item that is not in the store yet.

    ``items`` contains ``IngestItem`` objects or ``(subject_id, name, load)`` tuples.
    ``process`` turns a loaded recording into ``Processed`` or ``(cycles, clips)``.
    ``subjects`` maps subject ids to metadata for subjects not yet in the store.  It is
    checked before any loading, so a missing or conflicting subject fails before work.  The
    store is created if ``store_path`` does not exist.  Each commit copies the store
    file once, so a larger ``commit_every`` is faster but loses more work on failure.
    ``skip_failed`` leaves out a recording whose ``load`` or ``process`` raises
    ValueError or OSError, logs a warning and lists it in ``IngestReport.failed``;
    without it the first such error stops the call.
    """
    if isinstance(commit_every, bool) or not isinstance(commit_every, int) or commit_every < 1:
        raise ValueError(f"commit_every = {commit_every!r} is invalid; it must be a positive integer")
    store_path = Path(store_path)
    items = _as_items(items)
    metadata = {normalize_subject_id(key): SubjectInfo.from_values(value) for key, value in (subjects or {}).items()}

    if not store_path.exists():
        CohortStore.create(store_path).commit()
    with CohortStore.open(store_path, "r") as store:
        stored_subjects = set(store.subject_ids())
        finished = {(item.subject_id, item.name) for item in items if item.subject_id in stored_subjects
                    and store.has_recording(item.subject_id, item.name)}
        for subject_id in sorted(stored_subjects & set(metadata)):
            if not _same_subject(store.read_subject(subject_id), metadata[subject_id]):
                raise ValueError(
                    f"subject {subject_id!r} is in {store_path} with metadata {store.read_subject(subject_id)}, "
                    f"which differs from the metadata passed in subjects; fix one of them"
                )

    missing = sorted({item.subject_id for item in items} - stored_subjects - set(metadata))
    if missing:
        raise ValueError(
            f"subjects {missing[:10]} are neither in {store_path} nor in subjects; pass their metadata as "
            "subjects={id: SubjectInfo(...)}"
        )
    pending = [item for item in items if (item.subject_id, item.name) not in finished]
    skipped = tuple(sorted(finished))
    logger.info("ingesting %d recordings into %s (%d already stored)", len(pending), store_path, len(skipped))

    added: list[tuple[str, str]] = []
    failed: list[IngestFailure] = []
    with tqdm(total=len(items), initial=len(skipped), desc="ingest", unit="recording", disable=not progress) as bar:
        for first in range(0, len(pending), commit_every):
            batch = pending[first:first + commit_every]
            batch_added = []
            with CohortStore.open(store_path, "a") as store:
                for item in batch:
                    try:
                        try:
                            recording = item.load()
                            if not isinstance(recording, Recording):
                                raise TypeError(f"loader of {item.subject_id}/{item.name} returned {type(recording).__name__}, not a Recording")
                            result = process(recording)
                        except (ValueError, OSError) as error:
                            if not skip_failed:
                                raise
                            failed.append(IngestFailure(item.subject_id, item.name, str(error)))
                            logger.warning("skipping %s/%s: %s", item.subject_id, item.name, error)
                            bar.update(1)
                            continue
                        result = result if isinstance(result, Processed) else Processed(*result)
                        # The subject is added only with its first stored recording, so a
                        # skipped recording leaves no subject without recordings behind.
                        if item.subject_id not in stored_subjects:
                            store.add_subject(item.subject_id, metadata[item.subject_id])
                            stored_subjects.add(item.subject_id)
                        store.add_recording(
                            item.subject_id, item.name, recording, result.cycles, result.clips,
                            clip_cycle=result.clip_cycle, clip_targets=result.clip_targets,
                            clip_label=result.clip_label,
                        )
                    except BaseException as error:
                        logger.info(
                            "ingest of %s/%s failed (%s: %s); discarding this batch of %d, %d committed before",
                            item.subject_id, item.name, type(error).__name__, error, len(batch), len(added),
                        )
                        raise
                    batch_added.append((item.subject_id, item.name))
                    bar.update(1)
            added.extend(batch_added)
    logger.info("ingest into %s finished: %d added, %d skipped as stored, %d failed and left out", store_path,
                len(added), len(skipped), len(failed))
    return IngestReport(added=tuple(added), skipped=skipped, failed=tuple(failed))


@dataclass(frozen=True)
class StoredCycles:
    """The cycles of one recording already in a store, on that recording's frame clock."""

    name: str
    fps: float
    cycles: tuple[Cycle, ...]


def stored_cycles(store_path: str | os.PathLike, subject_ids: Iterable[str], *, modality: str = "thermal") -> dict[str, StoredCycles]:
    """Return the cycles of each subject's ``modality`` recording in the store.

    Subjects without such a recording are absent from the result.  A subject with more
    than one raises ValueError, because it is unclear which one to follow.
    """
    store_path = Path(store_path)
    if not store_path.is_file():
        raise ValueError(f"store {store_path} not found; ingest the {modality} recordings into it first")
    found = {}
    with CohortStore.open(store_path, "r") as store:
        stored = set(store.subject_ids())
        for subject_id in sorted({normalize_subject_id(subject_id) for subject_id in subject_ids} & stored):
            names = [name for name in store.recording_names(subject_id)
                     if store.recording_attrs(subject_id, name)["modality"] == modality]
            if len(names) > 1:
                raise ValueError(f"subject {subject_id!r} has {len(names)} {modality} recordings in {store_path} "
                                 f"({', '.join(names)}); keep one per subject to take cycles from")
            if names:
                fps = float(store.recording_attrs(subject_id, names[0])["fps"])
                found[subject_id] = StoredCycles(names[0], fps, tuple(store.read_cycles(subject_id, names[0])))
    return found


def transfer_cycles(source: StoredCycles, recording: Recording) -> list[Cycle]:
    """Convert ``source`` cycles to the frame clock of ``recording``, a recording that started at the same time.

    A boundary at frame k of the source lies at k / source.fps seconds, so it becomes
    frame ``round(k / source.fps * recording.fps)``.  Each cycle keeps its quality and
    at least one frame.  A cycle that starts at or after the recording's last frame raises
    ValueError, because the two recordings then do not cover the same session.
    """
    scale = recording.fps / source.fps
    cycles = []
    for index, cycle in enumerate(source.cycles):
        start = int(round(cycle.start * scale))
        end = min(max(int(round(cycle.end * scale)), start + 1), recording.n_frames)
        if start >= recording.n_frames:
            raise ValueError(
                f"{recording.source or recording.subject_id}: cycle {index} of the {source.name} recording starts at "
                f"{cycle.start / source.fps:.2f} s, after the end of this recording ({recording.duration_s:.2f} s); "
                "the two recordings do not start together, so segment this one on its own"
            )
        cycles.append(Cycle(start, end, cycle.quality))
    return cycles
